"""The applications' ACL users (_states/redis_acl_users.py, _utils/redis_acl_users.py) on real
servers of every supported build and a real redis-sentinel (Redis 7.0): created from pillar
``redis:acl_users`` (hashes only), checked by Redis before anything changes, a second run and a
dry run changing nothing, removed when the YAML drops them (only those Salt created), kept
across a restart."""

import hashlib
import json
import os
import shutil
import stat

import pytest
import redis
from conftest import PASSWORD, SERVERS, RedisServer, assert_no_password, load_module, redis_quote
from redis.backoff import NoBackoff
from redis.retry import Retry

pytest.register_assert_rewrite("sentinel_fixtures")  # before its import below
from sentinel_fixtures import MASTER_NAME, SentinelProcess, sentinel_client  # noqa: E402

APP_PASSWORD = 'app "s3cret" pass\\word'
REPORTS_PASSWORD = "reports-password"
# Server commands an application user must never run, whatever its key rules (DEBUG: see refused).
ADMIN_COMMANDS = (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("DEBUG", "SLEEP", "0"),
                  ("SHUTDOWN",), ("ACL", "LIST"))


def sha256(password):
    return hashlib.sha256(password.encode()).hexdigest()


def acl_user(name, password, rules):
    """One entry of pillar redis:acl_users, as the ext_pillar gives it."""
    return {"name": name, "password_sha256": sha256(password), "rules": rules.split()}


APP = acl_user("app", APP_PASSWORD, "~app:* +@read +@write -@dangerous")
REPORTS = acl_user("reports", REPORTS_PASSWORD, "~* +@read -@dangerous")


class Minion:
    """A node's minion for the state: its pillar (the users given), opts, cache directory."""

    def __init__(self, cachedir, port, sentinel_port=26379):
        self.cachedir, self.port, self.sentinel_port = cachedir, port, sentinel_port
        self.state = load_module("redis_acl_users_state", "_states/redis_acl_users.py")

    def apply(self, users, test=False, sentinel=False):
        self.state.__pillar__ = {"redis": {"role": "master", "mode": "sentinel", "port": self.port,
                                           "sentinel_port": self.sentinel_port, "password": PASSWORD,
                                           "acl_users": users}}
        self.state.__opts__ = {"test": test, "cachedir": str(self.cachedir)}
        ret = self.state.present("application users", sentinel=sentinel)
        assert_no_password(ret)
        for secret in (APP_PASSWORD, REPORTS_PASSWORD, sha256(APP_PASSWORD), sha256(REPORTS_PASSWORD)):
            assert secret not in str(ret), "a return shows an application user's password or its hash"
        return ret

    def record(self, on="server"):
        path = self.cachedir / "redis_acl_users" / f"{on}-{self.sentinel_port if on == 'sentinel' else self.port}.json"
        return json.loads(path.read_text()), stat.S_IMODE(path.stat().st_mode) if path.exists() else None

    def has_record(self):
        return (self.cachedir / "redis_acl_users").exists()


def login(port, user, password):
    return redis.Redis(port=port, username=user, password=password, decode_responses=True, socket_timeout=5,
                       retry=Retry(NoBackoff(), 0))


def refused(server, client, user, *command):
    """``command`` run as ``user`` (``client``) gets NOPERM. Redis 7 refuses DEBUG to every client
    before ACLs (enable-debug-command no), so there ACL DRYRUN asks the ACLs instead."""
    if command[0] == "DEBUG" and not server.build.version.startswith("6."):
        verdict = server.client().execute_command("ACL", "DRYRUN", user, *command)
        return verdict != "OK" and "no permissions" in verdict
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)
    return True


def acl_list(client):
    return sorted(client.execute_command("ACL", "LIST"))


@pytest.fixture
def minion(fresh_redis_server, tmp_path):
    return Minion(tmp_path / "cache", fresh_redis_server.port)


def test_users_are_created_a_second_run_and_a_dry_run_change_nothing_and_a_restart_keeps_them(
        fresh_redis_server, minion):
    server = fresh_redis_server
    before = acl_list(server.client())

    dry = minion.apply([APP, REPORTS], test=True)
    after_dry = acl_list(server.client()), minion.has_record()
    created = minion.apply([APP, REPORTS])
    again = minion.apply([APP, REPORTS])

    assert dry["result"] is None and dry["changes"] == {"created": ["app", "reports"]}, dry
    assert after_dry == (before, False)
    assert created["result"] is True and created["changes"] == {"created": ["app", "reports"]}, created
    assert "saved in its own file" in created["comment"]
    assert again == {"name": "application users", "result": True, "changes": {},
                     "comment": f"The application ACL users on the local Redis server (port {server.port}) "
                                "are as wanted (app, reports)"}
    assert minion.record() == ({"users": ["app", "reports"], "unsaved": False}, 0o600)
    app = login(server.port, "app", APP_PASSWORD)
    assert app.set("app:1", "v") is True and app.get("app:1") == "v"
    for command in (("GET", "other:1"), *ADMIN_COMMANDS):
        assert refused(server, app, "app", *command), command
    reports = login(server.port, "reports", REPORTS_PASSWORD)
    assert reports.get("app:1") == "v"
    with pytest.raises(redis.exceptions.NoPermissionError):
        reports.set("app:1", "w")
    # Redis's own file holds the hash, never the password; a restart keeps both users.
    text = server.main_conf.read_text()
    assert "user app on" in text and sha256(APP_PASSWORD) in text and APP_PASSWORD not in text
    server.restart()
    assert login(server.port, "app", APP_PASSWORD).get("app:1") == "v"
    assert minion.apply([APP, REPORTS])["changes"] == {}


def test_a_rule_redis_refuses_fails_the_state_and_changes_nothing(fresh_redis_server, minion):
    server = fresh_redis_server
    minion.apply([APP])
    before, text = acl_list(server.client()), server.main_conf.read_text()
    changed_app = acl_user("app", "another password", "~* +@all")
    bad = acl_user("bad", "x", "~* +@read +@nosuchcategory")
    worse = acl_user("worse", "y", "+nosuchcommand")

    dry = minion.apply([changed_app, bad, worse], test=True)
    refused = minion.apply([changed_app, bad, worse])

    for ret in (dry, refused):
        assert ret["result"] is False and ret["changes"] == {}, ret
        assert ret["comment"].startswith("Redis refuses the rules of ACL user(s) bad: Error in ACL SETUSER modifier "
                                         "'+@nosuchcategory'"), ret["comment"]
        assert "; worse: Error in ACL SETUSER modifier '+nosuchcommand'" in ret["comment"], ret["comment"]
        assert ret["comment"].endswith(f"nothing changed on the local Redis server (port {server.port})")
    assert acl_list(server.client()) == before and server.main_conf.read_text() == text
    assert minion.record()[0] == {"users": ["app"], "unsaved": False}
    assert login(server.port, "app", APP_PASSWORD).get("app:none") is None


def test_a_changed_password_rules_or_flag_updates_the_user(server, tmp_path):
    minion = Minion(tmp_path / "cache", server.port)
    minion.apply([APP])

    updated = minion.apply([acl_user("app", "new password", "~app:* ~shared:* +@read")])
    switched_off = minion.apply([acl_user("app", "new password", "~app:* ~shared:* +@read off")])

    assert updated["changes"] == {"updated": {"app": "password, rules"}}, updated
    assert switched_off["changes"] == {"updated": {"app": "switched off"}}, switched_off
    with pytest.raises(redis.AuthenticationError):
        login(server.port, "app", "new password").ping()
    minion.apply([acl_user("app", "new password", "~app:* ~shared:* +@read")])
    with pytest.raises(redis.AuthenticationError):
        login(server.port, "app", APP_PASSWORD).ping()
    assert login(server.port, "app", "new password").get("shared:1") is None
    with pytest.raises(redis.exceptions.NoPermissionError):
        login(server.port, "app", "new password").set("app:1", "v")


def test_only_users_salt_created_are_removed_with_their_entry(server, tmp_path):
    minion = Minion(tmp_path / "cache", server.port)
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "ops", "on", f"#{sha256('ops')}", "~*", "+@all")
    admin.execute_command("ACL", "SETUSER", "salt-tool", "on", f"#{sha256('tool')}", "+ping")
    old = acl_user("old", "old password", "~old:* +@read")
    ops = acl_user("ops", "ops", "~* +@read")

    first = minion.apply([APP, old, ops])
    # A run killed between creating and deleting its temporary users left one behind.
    admin.execute_command("ACL", "SETUSER", "salt-check-0123456789abcdef", "off", "+@all")
    second = minion.apply([APP])
    emptied = minion.apply([])
    nothing = minion.apply([])

    assert first["changes"] == {"created": ["app", "old"], "updated": {"ops": "rules"}}, first
    assert second["changes"] == {"removed": ["old", "salt-check-0123456789abcdef"]}, second
    assert emptied["changes"] == {"removed": ["app"]}, emptied
    assert nothing["changes"] == {} and nothing["comment"].startswith("No application ACL users wanted"), nothing
    assert minion.record()[0] == {"users": [], "unsaved": False}
    assert sorted(admin.acl_users()) == ["default", "ops", "salt-tool"]
    server.restart()
    assert sorted(server.client().acl_users()) == ["default", "ops", "salt-tool"]


def test_a_change_redis_could_not_save_is_saved_by_the_next_run(server, tmp_path):
    minion = Minion(tmp_path / "cache", server.port)
    saved_conf = server.dir / "redis.conf.saved"
    shutil.copy(server.main_conf, saved_conf)
    os.unlink(server.main_conf)
    server.main_conf.mkdir()  # CONFIG REWRITE cannot write a directory

    unsaved = minion.apply([APP])
    record = minion.record()[0]
    server.main_conf.rmdir()
    shutil.copy(saved_conf, server.main_conf)
    saved = minion.apply([APP])
    again = minion.apply([APP])

    assert unsaved["result"] is False and unsaved["changes"] == {"created": ["app"]}, unsaved
    assert "live only: not persisted: ResponseError" in unsaved["comment"], unsaved["comment"]
    assert record == {"users": ["app"], "unsaved": True}
    assert saved["result"] is True and saved["changes"] == {"saved": "the users a previous run changed"}, saved
    assert again["changes"] == {}
    server.restart()
    assert login(server.port, "app", APP_PASSWORD).get("app:none") is None


def test_a_server_with_an_aclfile_keeps_the_users_there(tmp_path):
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, SERVERS["redis-7.0"])
    aclfile = directory / "users.acl"
    aclfile.write_text(f"user default on #{sha256(PASSWORD)} ~* &* +@all\n")
    server.settings["aclfile"] = str(aclfile)
    server.write_salt_conf()
    server.salt_conf.write_text("".join(line + "\n" for line in server.salt_conf.read_text().splitlines()
                                        if not line.startswith("requirepass")))
    server.start()
    try:
        minion = Minion(tmp_path / "cache", server.port)
        created = minion.apply([APP])
        server.restart()
        again = minion.apply([APP])
        assert created["changes"] == {"created": ["app"]} and again["changes"] == {}, (created, again)
        assert "user app on" in aclfile.read_text() and "user app" not in server.main_conf.read_text()
        assert login(server.port, "app", APP_PASSWORD).get("app:none") is None
    finally:
        server.stop()


# ---------------------------------------------------------------- a Sentinel


@pytest.fixture
def sentinel(tmp_path):
    """A real redis-sentinel started from the package's file, which asks for the deployment's password."""
    process = SentinelProcess(tmp_path / "sentinel")
    process.dir.mkdir()
    process.write_package_conf()
    with open(process.conf, "a") as handle:
        handle.write(f"requirepass {redis_quote(PASSWORD)}\n")
    process.start()
    yield process
    process.stop()


def test_on_a_sentinel_users_find_the_master_and_run_nothing_else(sentinel, tmp_path):
    minion = Minion(tmp_path / "cache", 6379, sentinel_port=sentinel.port)
    # Rules naming data commands (+get) that a Sentinel does not know: not sent to it.
    app = acl_user("app", APP_PASSWORD, "~app:* +get +set")
    before = acl_list(sentinel.client())

    dry = minion.apply([app, REPORTS], test=True, sentinel=True)
    after_dry = acl_list(sentinel.client())
    created = minion.apply([app, REPORTS], sentinel=True)
    again = minion.apply([app, REPORTS], sentinel=True)

    assert dry["result"] is None and dry["changes"] == {"created": ["app", "reports"]}, dry
    assert after_dry == before
    assert created["result"] is True and created["changes"] == {"created": ["app", "reports"]}, created
    assert again["changes"] == {} and again["result"] is True, again
    assert minion.record("sentinel")[0] == {"users": ["app", "reports"], "unsaved": False}
    client = sentinel_client(sentinel.port, password=None)
    client.execute_command("AUTH", "app", APP_PASSWORD)
    assert client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
    assert client.execute_command("SENTINEL", "MASTERS") and client.ping()
    for command in (("SENTINEL", "SET", MASTER_NAME, "quorum", "1"), ("SENTINEL", "FLUSHCONFIG"), ("ACL", "LIST"),
                    ("SENTINEL", "REMOVE", MASTER_NAME), ("SHUTDOWN",), ("PUBLISH", "x", "y")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    assert "user app on" in sentinel.conf.read_text() and APP_PASSWORD not in sentinel.conf.read_text()

    sentinel.restart()
    kept = minion.apply([app, REPORTS], sentinel=True)
    removed = minion.apply([REPORTS], sentinel=True)
    sentinel.restart()

    assert kept["changes"] == {}, kept
    assert removed["changes"] == {"removed": ["app"]}, removed
    assert sorted(sentinel.client().acl_users()) == ["default", "reports"]
