"""Functional tests of _states/redis_node.py against a real redis-server.

``service.restart`` is a real restart of the test's redis-server (same binary, same
config files); CONFIG GET and INFO server tell what the running process uses.
"""

import grp
import hashlib
import os
import pwd
import stat

import pytest
from conftest import PASSWORD, redis_quote

USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def directives(path):
    """The non-comment, non-blank lines of a Redis config file."""
    lines = path.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
def included(tmp_path, config_state):
    """config_included for a main file and a Salt file in tmp_path, owned by the test's user."""

    def run(name=tmp_path / "etc" / "redis.conf", include=tmp_path / "etc" / "salt.conf", settings=None):
        settings = {"maxclients": 1000, "save": "900 1 300 10"} if settings is None else settings
        return config_state.config_included(str(name), str(include), settings, user=USER, group=GROUP)

    return run


def test_config_included_creates_missing_file(tmp_path, included, no_password):
    main = tmp_path / "etc" / "redis.conf"

    ret = included()

    assert ret["result"] is True
    assert ret["changes"] == {
        "include": str(tmp_path / "etc" / "salt.conf"),
        "action": "created; stated before the include: maxclients, save, requirepass",
    }
    # Stated as CONFIG REWRITE would write them, so that it rewrites them in place.
    assert directives(main) == [
        "maxclients 1000",
        "save 900 1",
        "save 300 10",
        f"requirepass {redis_quote(PASSWORD)}",
        f"include {tmp_path / 'etc' / 'salt.conf'}",
    ]
    assert stat.S_IMODE(main.stat().st_mode) == 0o640
    assert os.listdir(main.parent) == ["redis.conf"]
    no_password(ret)


def test_config_included_removes_only_stale_password_lines(tmp_path, included, no_password):
    main = tmp_path / "etc" / "redis.conf"
    main.parent.mkdir()
    old_digest = hashlib.sha256(b"old secret").hexdigest()
    current_digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    main.write_text(
        f'requirepass "old secret"\nmaxclients 5\nrequirepass {redis_quote(PASSWORD)}\n'
        f"include {tmp_path / 'etc' / 'salt.conf'}\n"
        f"user default on #{old_digest} ~* &* +@all\nuser default on #{current_digest} ~* &* +@all\n"
    )

    ret = included(settings={"maxclients": 1000})

    assert ret["changes"]["action"] == "2 stale password line(s) removed"
    assert directives(main) == [
        "maxclients 5",
        f"requirepass {redis_quote(PASSWORD)}",
        f"include {tmp_path / 'etc' / 'salt.conf'}",
        f"user default on #{current_digest} ~* &* +@all",
    ]
    no_password(ret)


def test_config_included_keeps_the_previous_passwords_line_during_a_rotation(tmp_path, included, config_state):
    main = tmp_path / "etc" / "redis.conf"
    main.parent.mkdir()
    previous_digest = hashlib.sha256(b"old secret").hexdigest()
    line = f"user default on #{previous_digest} ~* &* +@all"
    main.write_text(f"maxclients 5\ninclude {tmp_path / 'etc' / 'salt.conf'}\n{line}\n")
    config_state.__pillar__["redis"]["previous_password"] = "old secret"

    included(settings={"maxclients": 1000})

    assert line in directives(main)


def test_config_included_second_run_changes_nothing(tmp_path, included):
    included()
    before = (tmp_path / "etc" / "redis.conf").read_text()

    ret = included()

    assert ret["result"] is True
    assert ret["changes"] == {}
    assert (tmp_path / "etc" / "redis.conf").read_text() == before


def test_config_included_test_mode_leaves_file_alone(tmp_path, included, config_state):
    main = tmp_path / "etc" / "redis.conf"
    main.parent.mkdir()
    main.write_text(f"include {tmp_path / 'etc' / 'salt.conf'}\nmaxclients 5\n")
    config_state.__opts__["test"] = True

    ret = included(settings={"maxclients": 1000})

    assert ret["result"] is None
    assert ret["changes"]["action"] == (
        "include moved to the last line; stated before the include: requirepass"
    )
    assert main.read_text() == f"include {tmp_path / 'etc' / 'salt.conf'}\nmaxclients 5\n"


def test_config_included_accepts_unmanaged_lines_after_the_include(tmp_path, included):
    """A directive Salt does not manage may follow the include: it cannot beat Salt's settings."""
    included(settings={"maxclients": 1000})
    main = tmp_path / "etc" / "redis.conf"
    main.write_text(main.read_text() + "replica-priority 42\n")
    before = main.read_text()

    ret = included(settings={"maxclients": 1000})

    assert ret["changes"] == {}
    assert main.read_text() == before


def test_salt_settings_win_after_config_rewrite(fresh_redis_server, redis_node_state, no_password):
    server = fresh_redis_server
    server.client().config_set("maxclients", 77)
    server.client().config_rewrite()
    assert directives(server.main_conf)[-1] != f"include {server.salt_conf}", "Redis appended after the include"

    ret = redis_node_state.config_included(
        str(server.main_conf), str(server.salt_conf), dict(server.settings), user=USER, group=GROUP
    )
    text = server.main_conf.read_text()

    assert ret["changes"]["action"] == "include moved to the last line; stated before the include: daemonize"
    assert directives(server.main_conf)[-1] == f"include {server.salt_conf}"
    assert text.count(f"include {server.salt_conf}") == 1
    assert "# Generated by CONFIG REWRITE" in text and "maxclients 77" in text
    assert redis_node_state.__salt__["service.restart"]("redis-server") is True
    assert server.config("maxclients") == "1000"
    no_password(ret)


def test_a_second_config_rewrite_moves_nothing(fresh_redis_server, redis_node_state):
    """Once every managed directive is stated in the main file, CONFIG REWRITE rewrites those
    lines in place: the include stays last and Salt has nothing to do."""
    server = fresh_redis_server
    settings = dict(server.settings, save="900 1 300 10")
    args = (str(server.main_conf), str(server.salt_conf), settings)
    server.client().config_set("save", "900 1 300 10")
    redis_node_state.config_included(*args, user=USER, group=GROUP)

    server.client().config_set("maxclients", 77)
    server.client().config_rewrite()
    ret = redis_node_state.config_included(*args, user=USER, group=GROUP)

    # (Redis writes the file 0644 minus its umask: Debian's unit has UMask=007, this test 022.)
    assert "action" not in ret["changes"], ret["changes"]
    lines = directives(server.main_conf)
    after_include = {line.split()[0] for line in lines[lines.index(f"include {server.salt_conf}") + 1 :]}
    assert "maxclients 77" in lines
    # What Salt does not manage (masterauth: the replication login, Redis's to keep).
    assert after_include <= {"user", "latency-tracking-info-percentiles", "masterauth", "primaryauth"}


def test_settings_applied_nothing_to_do(fresh_redis_server, redis_node_state, no_password):
    pid = fresh_redis_server.info()["process_id"]

    ret = redis_node_state.settings_applied("node", dict(fresh_redis_server.settings), "redis-server")

    assert ret["result"] is True
    assert ret["changes"] == {}
    assert fresh_redis_server.info()["process_id"] == pid
    no_password(ret)


def test_settings_applied_live_without_restart(fresh_redis_server, redis_node_state, no_password):
    run_id = fresh_redis_server.info()["run_id"]
    settings = dict(fresh_redis_server.settings, maxclients=2500)

    ret = redis_node_state.settings_applied("node", settings, "redis-server")

    assert ret["result"] is True
    assert ret["changes"] == {"maxclients": {"old": "1000", "new": "2500"}}
    assert fresh_redis_server.config("maxclients") == "2500"
    assert fresh_redis_server.info()["run_id"] == run_id
    no_password(ret)


def test_settings_applied_fails_when_redis_refuses(fresh_redis_server, redis_node_state, no_password):
    settings = dict(fresh_redis_server.settings, **{"maxmemory-policy": "bogus"})

    ret = redis_node_state.settings_applied("node", settings, "redis-server")

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "maxmemory-policy" in ret["comment"]
    assert fresh_redis_server.config("maxmemory-policy") == "noeviction"
    no_password(ret)


def test_settings_applied_test_mode_changes_nothing(fresh_redis_server, redis_node_state, no_password):
    redis_node_state.__opts__["test"] = True
    settings = dict(fresh_redis_server.settings, maxclients=2500)

    ret = redis_node_state.settings_applied("node", settings, "redis-server")

    assert ret["result"] is None
    assert ret["changes"] == {"maxclients": {"old": "1000", "new": "2500"}}
    assert fresh_redis_server.config("maxclients") == "1000"
    no_password(ret)


def test_settings_applied_restarts_for_logfile(fresh_redis_server, redis_node_state, no_password):
    server = fresh_redis_server
    run_id = server.info()["run_id"]
    new_log = server.dir / "redis-new.log"
    server.settings["logfile"] = str(new_log)
    server.write_salt_conf()  # what file.managed does before this state runs

    ret = redis_node_state.settings_applied("node", dict(server.settings), "redis-server")

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {
        "restarted": "redis-server",
        "reason": "changed: logfile",
        "logfile": {"old": str(server.dir / "redis.log"), "new": str(new_log)},
    }
    assert server.info()["run_id"] != run_id
    assert server.config("logfile") == str(new_log)
    assert new_log.exists()
    no_password(ret)


def test_a_failed_restart_that_systemd_repeats_counts_once_the_server_answers(fresh_redis_server, redis_node_state):
    server = fresh_redis_server
    server.settings["logfile"] = str(server.dir / "redis-new.log")
    server.write_salt_conf()

    def restart_reported_failed(service):
        server.restart(service)  # the unit's Restart= started it again
        return False

    redis_node_state.__salt__["service.restart"] = restart_reported_failed
    ret = redis_node_state.settings_applied("node", dict(server.settings), "redis-server")

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["reason"] == (
        "changed: logfile; its first start failed and systemd started it again; its journal: "
        "Starting redis-server.service | redis-server.service: Failed with result 'exit-code'."
    )
    assert server.config("logfile") == server.settings["logfile"]


def test_a_failed_restart_says_what_the_unit_logged(fresh_redis_server, redis_node_state):
    server = fresh_redis_server
    server.settings["logfile"] = str(server.dir / "redis-new.log")
    server.write_salt_conf()

    def restart_failed(service):
        server.stop()
        return False

    redis_node_state.__salt__["service.restart"] = restart_failed
    ret = redis_node_state.settings_applied("node", dict(server.settings), "redis-server", timeout=1)

    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == (
        "redis-server could not be restarted (restart for: changed: logfile); its journal: "
        "Starting redis-server.service | redis-server.service: Failed with result 'exit-code'."
    )


def test_settings_applied_test_mode_reports_restart(fresh_redis_server, redis_node_state, tmp_path, no_password):
    redis_node_state.__opts__["test"] = True
    run_id = fresh_redis_server.info()["run_id"]
    settings = dict(fresh_redis_server.settings, dir=str(tmp_path))

    ret = redis_node_state.settings_applied("node", settings, "redis-server")

    assert ret["result"] is None
    assert ret["changes"] == {
        "restarted": "redis-server",
        "reason": "changed: dir",
        "dir": {"old": str(fresh_redis_server.dir), "new": str(tmp_path)},
    }
    assert fresh_redis_server.config("dir") == str(fresh_redis_server.dir)
    assert fresh_redis_server.info()["run_id"] == run_id
    no_password(ret)


def test_settings_applied_restarts_for_new_password(
    fresh_redis_server, redis_node_state, wrong_password, no_password
):
    """Password rotation: pillar and salt.conf carry a new password the running server lacks."""
    server, new_password = fresh_redis_server, wrong_password
    run_id = server.info()["run_id"]
    server.password = new_password
    server.write_salt_conf()
    redis_node_state.__pillar__["redis"]["password"] = new_password

    ret = redis_node_state.settings_applied("node", dict(server.settings), "redis-server")

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["restarted"] == "redis-server"
    assert "authentication" in ret["changes"]["reason"].lower()
    assert server.info()["run_id"] != run_id
    no_password(ret)


def test_new_password_works_after_config_rewrite(
    fresh_redis_server, redis_node_state, wrong_password, no_password
):
    """CONFIG REWRITE (also run by Sentinel) writes the password into the main file; a password
    rotated in salt.conf must still win once the include is last again and Redis restarted."""
    server, new_password = fresh_redis_server, wrong_password
    server.client().config_rewrite()
    # What `state.apply redis` runs, in its order: the new salt.conf, then config_included.
    server.password = new_password
    server.write_salt_conf()
    redis_node_state.__pillar__["redis"]["password"] = new_password
    included = redis_node_state.config_included(
        str(server.main_conf), str(server.salt_conf), dict(server.settings), user=USER, group=GROUP
    )
    assert "2 stale password line(s) removed" in included["changes"]["action"]  # requirepass, user default

    ret = redis_node_state.settings_applied("node", dict(server.settings), "redis-server", timeout=2)

    assert ret["result"] is True, ret["comment"]
    assert server.client().ping() is True
    no_password(ret)


FAILED_PILLAR = {"error": "/etc/salt/my_multihead_cluster.yaml: mode: expected auto, cluster or sentinel"}


def test_settings_applied_with_a_failed_deployment_pillar_changes_nothing(fresh_redis_server, redis_node_state):
    """No password in pillar must not look like "the server refuses our password": no restart."""
    run_id = fresh_redis_server.info()["run_id"]
    redis_node_state.__pillar__["redis"] = dict(FAILED_PILLAR, role="none", mode="none")

    ret = redis_node_state.settings_applied("node", dict(fresh_redis_server.settings), "redis-server")

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert ret["comment"] == f"the Redis deployment's pillar failed: {FAILED_PILLAR['error']}; nothing changed"
    assert fresh_redis_server.info()["run_id"] == run_id


def test_config_included_with_a_failed_deployment_pillar_changes_nothing(tmp_path, included, config_state):
    """Without the password from pillar every password line would look stale: touch nothing."""
    included()
    main = tmp_path / "etc" / "redis.conf"
    before = main.read_text()
    config_state.__pillar__["redis"] = dict(FAILED_PILLAR, role="none", mode="none")

    ret = included(settings={"maxclients": 2000})

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "deployment's pillar failed" in ret["comment"]
    assert main.read_text() == before


def test_settings_applied_leaves_the_replication_login_alone(
    fresh_redis_server, redis_node_state, wrong_password, no_password
):
    server = fresh_redis_server
    run_id = server.info()["run_id"]
    server.client().config_set("masterauth", wrong_password)  # e.g. an operator's CONFIG SET

    ret = redis_node_state.settings_applied("node", dict(server.settings, maxclients=1200), "redis-server")

    assert ret["result"] is True, ret["comment"]
    # masterauth is the replication login's, set by logins_converged: settings_applied leaves it.
    assert ret["changes"] == {"maxclients": {"old": "1000", "new": "1200"}}
    assert server.config("masterauth") == wrong_password
    assert server.info()["run_id"] == run_id
    no_password(ret)
