"""
`salt '*' state.apply redis` on a real master and real minions in lab hosts: what an
operator checks after the first run, on the second run, under test=True and with a
broken my_multihead_cluster.yaml.
"""

import grp
import json
import stat
from pathlib import Path

import pytest
import redis
import yaml
from support.lab import (
    PLAIN_HOST,
    REDIS_HOSTS,
    assert_no_password,
    deployment,
    host_file,
    host_processes,
    host_run,
    main_pid,
    node_client,
    ps_output,
)
from support.states import changed_ids, failed_comments, failed_states, state_by_id

pytestmark = pytest.mark.integration


def run_ids():
    return {host: node_client(host).info("server")["run_id"] for host in REDIS_HOSTS}


def apply_with_pillar(salt_cli, pillar_root, overrides, target="it1"):
    """`state.apply redis` on `target` with ordinary pillar `overrides`, then the pillar as it was."""
    pillar_file = pillar_root / "redis.sls"
    original = pillar_file.read_text()
    pillar_file.write_text(yaml.safe_dump(overrides))
    try:
        return salt_cli.run("state.apply", "redis", minion_tgt=target)
    finally:
        pillar_file.write_text(original)


def test_first_apply_succeeds_everywhere(first_apply):
    assert first_apply.returncode == 0, first_apply.stdout
    assert set(first_apply.data) == {*REDIS_HOSTS, PLAIN_HOST[0]}
    for minion, states in first_apply.data.items():
        assert failed_states(states) == [], minion


def test_every_redis_host_answers_with_the_password_only(first_apply):
    for host in REDIS_HOSTS:
        assert node_client(host).ping() is True
        with pytest.raises(redis.AuthenticationError):
            node_client(host, password=None).ping()
        with pytest.raises(redis.AuthenticationError):
            node_client(host, password="wrong").ping()


def test_config_matches_cluster_mode_and_memory_plan(first_apply, salt_cli):
    mem_total = salt_cli.run("grains.get", "mem_total", minion_tgt="it1").data
    for host, ip in REDIS_HOSTS.items():
        client = node_client(host)
        assert client.config_get("cluster-enabled") == {"cluster-enabled": "yes"}
        assert client.config_get("bind")["bind"].split() == [ip, "127.0.0.1"]
        assert int(client.config_get("maxmemory")["maxmemory"]) == mem_total * 1024 * 1024 // 4
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("save")["save"] == "900 1 300 10 60 10000"


def test_pillar_shows_the_computed_shape(first_apply, salt_run_cli):
    shapes = {host: salt_run_cli.run("pillar.show_pillar", host).data["redis"] for host in REDIS_HOSTS}
    assert {s["mode"] for s in shapes.values()} == {"cluster"}
    assert {s["role"] for s in shapes.values()} == {"cluster-node"}
    assert [shapes[h]["slots"] for h in REDIS_HOSTS] == [[[0, 5460]], [[5461, 10922]], [[10923, 16383]]]
    assert shapes["it2"]["initial_master"]["hostname"] == "it1"
    assert_no_password(json.dumps(shapes), "pillar.show_pillar")
    assert [p["ip"] for p in shapes["it3"]["peers"]] == list(REDIS_HOSTS.values())


def test_non_redis_controller_is_untouched(first_apply, lab_hosts):
    plain = PLAIN_HOST[0]
    assert changed_ids(first_apply.data[plain]) == []
    assert sorted(p.name for p in host_file(lab_hosts[0], plain, "/etc/redis").iterdir()) == [
        "redis.conf",
        "sentinel.conf",
    ]
    assert not any("redis" in command for command in host_processes(lab_hosts[0], plain))


def test_password_is_not_in_ps_returns_logs_or_world_readable_files(
    first_apply, lab_hosts, salt_master, salt_minions
):
    assert_no_password(ps_output(), "ps")
    assert_no_password(first_apply.stdout + first_apply.stderr, "the job's output")
    assert_no_password(json.dumps(first_apply.data), "the job's return")
    logs = [Path(salt_master.config["log_file"])]
    logs += [host_file(lab_hosts[0], host, "/var/log/salt/minion") for host in salt_minions]
    logs += [host_file(lab_hosts[0], host, "/var/log/redis/redis-server.log") for host in REDIS_HOSTS]
    for log in logs:
        assert_no_password(log.read_text(errors="replace"), log)
    for host in salt_minions:
        journal = host_run(lab_hosts[0], host, "journalctl", "--no-pager", "-o", "cat")
        assert journal.returncode == 0 and journal.stdout, journal.stderr
        assert_no_password(journal.stdout, f"{host}'s journal")
    for host in REDIS_HOSTS:
        for path in ("/etc/redis-salt/redis-server.conf", "/etc/redis/redis.conf"):
            mode = host_file(lab_hosts[0], host, path).stat().st_mode
            assert not mode & stat.S_IROTH, f"{host}:{path} is world-readable"


def test_second_apply_changes_nothing_and_restarts_nothing(first_apply, salt_cli, lab_hosts):
    before = run_ids()
    pids = {host: main_pid(lab_hosts[0], host) for host in REDIS_HOSTS}
    second = salt_cli.run("state.apply", "redis", minion_tgt="*")
    assert second.returncode == 0
    for minion, states in second.data.items():
        assert changed_ids(states) == [], minion
    assert run_ids() == before
    assert {host: main_pid(lab_hosts[0], host) for host in REDIS_HOSTS} == pids
    assert 0 not in pids.values()


def test_salt_writes_its_settings_only_where_redis_cannot(first_apply, lab_hosts):
    """/etc/redis is the redis user's (CONFIG REWRITE); Salt's own file is root's, readable by redis."""
    for host in REDIS_HOSTS:
        directory = host_file(lab_hosts[0], host, "/etc/redis-salt").stat()
        settings = host_file(lab_hosts[0], host, "/etc/redis-salt/redis-server.conf").stat()
        redis_gid = grp.getgrnam("redis").gr_gid
        assert (directory.st_uid, directory.st_gid, stat.S_IMODE(directory.st_mode)) == (0, redis_gid, 0o750)
        assert (settings.st_uid, settings.st_gid, stat.S_IMODE(settings.st_mode)) == (0, redis_gid, 0o640)
        main = host_file(lab_hosts[0], host, "/etc/redis/redis.conf").read_text()
        assert "include /etc/redis-salt/redis-server.conf" in main


def test_sub_states_change_nothing_on_a_minion_without_redis(first_apply, salt_cli, lab_hosts):
    plain = PLAIN_HOST[0]
    for sls in ("redis.install", "redis.config", "redis.service"):
        applied = salt_cli.run("state.apply", sls, minion_tgt=plain)
        assert applied.returncode == 0, applied.stdout
        assert [v["__id__"] for v in applied.data.values()] == ["redis-nothing-to-do-on-this-minion"], sls
    assert not host_file(lab_hosts[0], plain, "/etc/redis-salt").exists()


def test_systemd_runs_redis_as_debian_ships_it(first_apply, lab_hosts):
    """The unit's command line decides daemonize/supervised; systemd owns /run/redis."""
    for host in REDIS_HOSTS:
        client = node_client(host)
        assert client.config_get("daemonize") == {"daemonize": "no"}
        assert client.config_get("supervised") == {"supervised": "systemd"}
        run_dir = host_file(lab_hosts[0], host, "/run/redis").stat()
        assert stat.S_IMODE(run_dir.st_mode) == 0o2755
        log_dir = host_file(lab_hosts[0], host, "/var/log/redis").stat()
        assert (stat.S_IMODE(log_dir.st_mode), log_dir.st_gid) == (0o2750, grp.getgrnam("adm").gr_gid)
        settings = host_file(lab_hosts[0], host, "/etc/redis-salt/redis-server.conf").read_text()
        assert "daemonize" not in settings and "pidfile" not in settings


def test_test_mode_on_a_converged_deployment_reports_nothing(first_apply, salt_cli):
    dry = salt_cli.run("state.apply", "redis", "test=True", minion_tgt="*")

    assert dry.returncode == 0
    for minion, states in dry.data.items():
        pending = [v["__id__"] for v in states.values() if v["result"] is not True or v["changes"]]
        assert pending == [], minion


def test_test_mode_reports_a_pillar_change_and_changes_nothing(
    first_apply, salt_cli, deployment_file, lab_hosts, restore_deployment
):
    settings_file = host_file(lab_hosts[0], "it1", "/etc/redis-salt/redis-server.conf")
    content_before = settings_file.read_text()
    deployment_file.write_text(yaml.safe_dump(deployment(maxclients=12000)))

    dry = salt_cli.run("state.apply", "redis", "test=True", minion_tgt="it1")

    states = dry.data
    pending = {v["__id__"]: v for v in states.values() if v["result"] is None}
    assert "redis-salt-settings-file" in pending
    assert node_client("it1").config_get("maxclients") == {"maxclients": "10000"}
    assert settings_file.read_text() == content_before


def test_live_setting_change_is_applied_without_restart(
    first_apply, salt_cli, deployment_file, restore_deployment
):
    before, original = run_ids(), deployment_file.read_text()
    deployment_file.write_text(yaml.safe_dump(deployment(maxclients=12000)))

    applied = salt_cli.run("state.apply", "redis", minion_tgt="it*")

    assert applied.returncode == 0
    live = state_by_id(applied, "it1", "redis-server-runs-the-managed-settings")
    assert live["changes"] == {"maxclients": {"old": "10000", "new": "12000"}}
    assert {h: node_client(h).config_get("maxclients")["maxclients"] for h in REDIS_HOSTS} == dict.fromkeys(
        REDIS_HOSTS, "12000"
    )
    assert run_ids() == before
    deployment_file.write_text(original)
    back = salt_cli.run("state.apply", "redis", minion_tgt="it*")  # the next tests start converged
    assert back.returncode == 0
    assert node_client("it3").config_get("maxclients") == {"maxclients": "10000"}


def test_bad_yaml_fails_with_a_readable_error_and_changes_no_host(
    first_apply, salt_cli, deployment_file, lab_hosts, restore_deployment
):
    before = run_ids()
    settings_file = host_file(lab_hosts[0], "it2", "/etc/redis-salt/redis-server.conf")
    mtime = settings_file.stat().st_mtime_ns
    broken = deployment()
    broken["nodes"]["controllers"][1]["ip_address"] = REDIS_HOSTS["it1"]
    deployment_file.write_text(yaml.safe_dump(broken))

    result = salt_cli.run("state.apply", "redis", minion_tgt="*")

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert str(deployment_file) in output
    assert "nodes.controllers[1].ip_address" in output
    assert "duplicate ip_address" in output
    assert "Traceback" not in output
    assert settings_file.stat().st_mtime_ns == mtime
    assert run_ids() == before


@pytest.mark.parametrize(("redis_settings", "message"), [
    ({"maxmemroy_percent": 50}, "cache.redis.maxmemroy_percent: unknown key; did you mean maxmemory_percent?"),
    ({"backup": {"dir": "/var/lib/redis/backups"}},
     "cache.redis.backup.dir: expected a directory outside Redis's data and configuration directories"),
], ids=["typo", "backup-dir-in-data-dir"])
def test_a_mistyped_key_or_a_backup_dir_among_live_files_stops_every_redis_state_first(
    first_apply, salt_cli, deployment_file, lab_hosts, restore_deployment, redis_settings, message
):
    before = run_ids()
    settings_file = host_file(lab_hosts[0], "it2", "/etc/redis-salt/redis-server.conf")
    mtime = settings_file.stat().st_mtime_ns
    deployment_file.write_text(yaml.safe_dump(deployment(**redis_settings)))

    result = salt_cli.run("state.apply", "redis", minion_tgt="*")

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{deployment_file}: {message}" in output
    assert "Traceback" not in output
    for host in REDIS_HOSTS:
        assert changed_ids(result.data[host]) == []
    assert settings_file.stat().st_mtime_ns == mtime
    assert run_ids() == before


def test_a_formed_cluster_is_not_switched_to_sentinel_mode(
    first_apply, salt_cli, deployment_file, lab_hosts, restore_deployment
):
    """3 controllers shrank to 2 in spirit (`mode: sentinel`): refused before any file changes."""
    before = run_ids()
    settings = host_file(lab_hosts[0], "it2", "/etc/redis-salt/redis-server.conf")
    content = settings.read_text()
    deployment_file.write_text(yaml.safe_dump(deployment(mode="sentinel")))

    switched = salt_cli.run("state.apply", "redis", minion_tgt="it*")

    assert switched.returncode != 0
    failed = failed_comments(switched.data["it2"])
    assert "redis-deployment-shape-kept" in failed
    assert "formed Redis Cluster" in failed["redis-deployment-shape-kept"]
    assert "`mode: cluster`" in failed["redis-deployment-shape-kept"]
    assert changed_ids(switched.data["it2"]) == []
    assert settings.read_text() == content
    assert run_ids() == before
    assert node_client("it2").config_get("cluster-enabled") == {"cluster-enabled": "yes"}


def test_a_formed_clusters_port_is_not_moved(first_apply, salt_cli, pillar_root, lab_hosts):
    before = run_ids()

    moved = apply_with_pillar(salt_cli, pillar_root, {"redis": {"port": 6390}})

    assert moved.returncode != 0
    failed = failed_comments(moved.data)
    assert "the deployment now asks for port 6390" in failed["redis-deployment-shape-kept"]
    assert run_ids() == before
    assert "port 6379" in host_file(lab_hosts[0], "it1", "/etc/redis-salt/redis-server.conf").read_text()


def test_ordinary_pillar_overrides_the_computed_pillar(first_apply, salt_cli, pillar_root):
    overrides = {"redis": {"maxclients": 11000, "maxmemory_policy": "noeviction"}}
    applied = apply_with_pillar(salt_cli, pillar_root, overrides)

    assert applied.returncode == 0
    client = node_client("it1")
    assert client.config_get("maxclients") == {"maxclients": "11000"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert salt_cli.run("state.apply", "redis", minion_tgt="it1").returncode == 0
    assert node_client("it1").config_get("maxclients") == {"maxclients": "10000"}


def test_config_rewrite_and_restart_change_nothing(first_apply, salt_cli, lab_hosts):
    """CONFIG REWRITE (Sentinel runs it on every failover), then a restart: Redis's own lines
    stay, the schedule is not doubled, and the next apply has nothing to do."""
    main_file = host_file(lab_hosts[0], "it3", "/etc/redis/redis.conf")
    node_client("it3").config_rewrite()
    host_run(lab_hosts[0], "it3", "systemctl", "restart", "redis-server", check=True)
    pid = main_pid(lab_hosts[0], "it3")
    text = main_file.read_text()
    assert "# Generated by CONFIG REWRITE" in text
    assert node_client("it3").config_get("save") == {"save": "900 1 300 10 60 10000"}

    applied = salt_cli.run("state.apply", "redis", minion_tgt="it3")

    assert applied.returncode == 0
    assert changed_ids(applied.data) == []
    assert main_file.read_text() == text
    assert main_pid(lab_hosts[0], "it3") == pid
    assert not main_file.stat().st_mode & stat.S_IROTH


def test_settings_redis_appended_after_the_include_never_win(first_apply, salt_cli, lab_hosts):
    """A managed setting Redis wrote after the include (an old CONFIG REWRITE) would win at the
    next restart: the include goes last again, Redis's line is kept above it."""
    main_file = host_file(lab_hosts[0], "it2", "/etc/redis/redis.conf")
    main_file.write_text(main_file.read_text() + "maxclients 77\nreplica-priority 42\n")

    applied = salt_cli.run("state.apply", "redis", minion_tgt="it2")

    assert applied.returncode == 0
    assert changed_ids(applied.data) == ["redis-main-config-includes-salt-settings"]
    directives = [line.split()[0] for line in main_file.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert directives[-1] == "include"
    assert "replica-priority 42" in main_file.read_text()
    host_run(lab_hosts[0], "it2", "systemctl", "restart", "redis-server", check=True)
    assert node_client("it2").config_get("maxclients") == {"maxclients": "10000"}
    assert node_client("it2").config_get("replica-priority") == {"replica-priority": "42"}


def test_a_config_redis_would_refuse_never_replaces_the_running_one(first_apply, salt_cli, pillar_root, lab_hosts):
    settings_file = host_file(lab_hosts[0], "it1", "/etc/redis-salt/redis-server.conf")
    content = settings_file.read_text()
    run_id = node_client("it1").info("server")["run_id"]

    # Pillar overrides skip the YAML's validation: redis-server's own check must catch it.
    applied = apply_with_pillar(salt_cli, pillar_root, {"redis": {"maxmemory_policy": "keep-everything"}})

    assert applied.returncode != 0
    failed = failed_comments(applied.data)
    assert "keep-everything" in failed["redis-salt-settings-file"]
    assert_no_password(json.dumps(applied.data), "the job's return")
    assert settings_file.read_text() == content
    assert node_client("it1").info("server")["run_id"] == run_id
    assert node_client("it1").config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
