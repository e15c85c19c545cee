"""The Sentinel-mode states and execution functions (_states/redis_sentinel.py,
_modules/redis_sentinel.py) against real redis-server and redis-sentinel processes (Redis
7.0) on 127.0.0.1: two Redis hosts (alpha, the initial master, and beta) and a witness
(gamma), each with a Sentinel that starts with the package's file.

The session's deployment (sentinel_fixtures.deployment) is shared; a test that changes it
leaves it converged (every Sentinel agrees, the replica's link is up).
"""

import os
import stat
import subprocess

import pytest
import redis
from conftest import PASSWORD, SERVERS, WRONG_PASSWORD, RedisServer, assert_no_password, free_port, redis_quote
pytest.register_assert_rewrite("sentinel_fixtures")  # before its import below
from sentinel_fixtures import MASTER_NAME, Minion, SentinelProcess, all_rets, changes_of, wait_for  # noqa: E402

# The session's deployment fixture, one for every test_sentinel*.py file.
pytest_plugins = ["sentinel_fixtures"]

MARKER = "# Managed by Salt: redis_sentinel.monitored (redis formula)"


def test_a_dry_run_on_bare_hosts_says_what_it_would_do_and_changes_nothing(deployment):
    dry = deployment.runs["dry"]
    alpha_user, alpha_replication, alpha_sentinel = dry["alpha"]
    beta_user, beta_replication, beta_sentinel = dry["beta"]
    (gamma_sentinel,) = dry["gamma"]

    assert alpha_user["result"] is None and alpha_user["changes"]["acl_user"]["changed"] == "missing"
    assert alpha_replication["result"] is True and not alpha_replication["changes"]
    assert "this node is the live master" in alpha_replication["comment"]
    assert beta_replication["result"] is None
    assert beta_replication["changes"]["replicaof"]["new"].startswith("replica of alpha")
    for ret in (alpha_sentinel, beta_sentinel, gamma_sentinel):
        assert ret["result"] is None, ret["comment"]
        assert ret["changes"]["restarted"] == "redis-sentinel"
        assert "took over the package's file" in ret["changes"]["file"]["action"]
    assert deployment.after_dry_run == {
        "files_untouched": True,
        "restarts": 0,
        "beta_role": "master",
        "acl_users": [["default"], ["default"]],
    }
    assert_no_password(dry)


def test_the_first_apply_takes_over_the_package_sentinels_and_replicates(deployment):
    first = deployment.runs["first"]
    assert deployment.minions[0].state.MARKER == MARKER
    for ret in all_rets(first):
        assert ret["result"] is True, ret
    beta_replication = first["beta"][1]
    assert beta_replication["changes"]["replicaof"] == {
        "old": "master (0 replicas connected)",
        "new": f"replica of alpha (127.0.0.1:{deployment.servers[0].port})",
    }
    for sentinel, (*_, ret) in zip(deployment.sentinels, first.values()):
        assert sentinel.restarts == 1
        assert set(ret["changes"]) >= {"file", "restarted", "auth"}
        assert ret["changes"]["auth"] == "salt-sentinel / <hidden>"
        backup = sentinel.conf.with_name("sentinel.conf.dpkg-salt-orig")
        assert backup.read_text() == sentinel.package_text
        assert stat.S_IMODE(backup.stat().st_mode) == 0o640
        text = sentinel.conf.read_text()
        assert MARKER in text.splitlines()
        assert f"sentinel auth-user {MASTER_NAME} salt-sentinel" in text  # set at run time, persisted by Sentinel
        assert stat.S_IMODE(sentinel.conf.stat().st_mode) == 0o640
    info = deployment.servers[1].client().info("replication")
    assert info["role"] == "slave" and info["master_link_status"] == "up"
    assert_no_password(first)


def test_a_second_apply_changes_nothing(deployment):
    for ret in all_rets(deployment.runs["second"]):
        assert ret["result"] is True and not ret["changes"], ret
    assert [s.restarts for s in deployment.sentinels[:3]] == [1, 1, 1]
    assert_no_password(deployment.runs["second"])


def test_every_sentinel_agrees_knows_the_others_and_requires_the_password(deployment):
    master, replica = deployment.wait_converged()
    ports = [s.port for s in deployment.sentinels[:3]]
    for sentinel in deployment.sentinels[:3]:
        assert sentinel.master_address() == f"127.0.0.1:{master.port}"
        assert sentinel.known_sentinels() == sorted(str(p) for p in ports if p != sentinel.port)
        with pytest.raises(redis.AuthenticationError):
            sentinel.client(password=None).execute_command("SENTINEL", "MASTERS")
    for server in deployment.servers:
        # Our other internal users too once the health script's or the rotation tests ran on these servers.
        internal = {"salt-monitor", "salt-replication"}
        assert set(server.client().execute_command("ACL", "USERS")) - internal == {"default", "salt-sentinel"}


def test_a_dry_run_on_the_converged_deployment_changes_nothing(deployment):
    applied = deployment.apply_all(test=True)
    for ret in all_rets(applied):
        assert ret["result"] is True and not ret["changes"], ret


def test_a_changed_down_after_goes_to_the_running_sentinel_without_restart(deployment):
    identities = [s.identity() for s in deployment.sentinels[:3]]
    try:
        for minion in deployment.minions:
            minion.overrides = {"sentinel": {"down_after_ms": 1500}}
        applied = deployment.apply_all()
        for minion in deployment.minions:
            *_, ret = applied[minion.hostname]
            assert ret["result"] is True, ret["comment"]
            assert ret["changes"] == {"down-after-milliseconds": {"old": "1000", "new": "1500"}}
        for sentinel, identity in zip(deployment.sentinels[:3], identities):
            assert sentinel.master()["down-after-milliseconds"] == "1500"
            assert sentinel.identity() == identity and sentinel.restarts == 1
            text = sentinel.conf.read_text()
            # Sentinel rewrote its file itself, and kept our marker (a comment line).
            assert f"sentinel down-after-milliseconds {MASTER_NAME} 1500" in text
            assert "# Generated by CONFIG REWRITE" in text and MARKER in text.splitlines()
        assert not any(changes_of(all_rets(deployment.apply_all())))
    finally:
        for minion in deployment.minions:
            minion.overrides = {}
        deployment.apply_all()
    assert all(s.master()["down-after-milliseconds"] == "1000" for s in deployment.sentinels[:3])


def test_a_failover_is_not_reverted_and_a_restarted_sentinel_still_starts(deployment):
    master, replica = deployment.wait_converged()
    new_address = f"127.0.0.1:{replica.port}"
    deployment.sentinels[2].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
    wait_for(lambda: all(s.master_address() == new_address for s in deployment.sentinels[:3]), 20, interval=0.1,
             message="the Sentinels switch to the new master")

    # At once, before the Sentinels convert the old master (their next INFO, up to 10 s later).
    applied = deployment.apply_all()

    new_name = next(m for m in deployment.minions if m.server is replica).hostname
    old_name = next(m for m in deployment.minions if m.server is master).hostname
    for ret in all_rets(applied):
        assert ret["result"] is True, ret
    assert not changes_of(applied[new_name]), "the new master was changed"
    old_changes = changes_of(applied[old_name])
    assert old_changes in ([], [{"replicaof": {"old": "master (0 replicas connected)",
                                               "new": f"replica of {new_name} ({new_address})"}}])
    assert not changes_of(applied["gamma"])
    deployment.wait_converged()
    assert replica.client().info("replication")["role"] == "master"
    assert master.client().info("replication")["master_port"] == replica.port
    assert not changes_of(all_rets(deployment.apply_all()))
    # Sentinel rewrote its file at the failover (its login included, unquoted): it starts from it.
    witness = deployment.sentinels[2]
    witness.restart()
    witness.restarts -= 1  # not the state's doing
    assert witness.master_address() == new_address
    deployment.wait_converged()


def test_an_old_master_back_as_master_follows_the_live_master(deployment):
    master, replica = deployment.wait_converged()
    minion = next(m for m in deployment.minions if m.server is master)
    master.stop()
    wait_for(lambda: all(s.master_address() == f"127.0.0.1:{replica.port}" for s in deployment.sentinels[:3]),
             30, interval=0.2, message="the Sentinels fail over")
    master.start()

    user, replication, sentinel = minion.apply()

    assert replication["result"] is True, replication["comment"]
    # Its own Sentinels may convert it first; either way it now follows the live master.
    if replication["changes"]:
        other = next(m for m in deployment.minions if m.server is replica).hostname
        assert replication["changes"]["replicaof"]["new"] == f"replica of {other} (127.0.0.1:{replica.port})"
    new_master, _ = deployment.wait_converged(timeout=30)
    assert new_master is replica
    assert master.client().info("replication")["master_port"] == replica.port
    assert not changes_of(all_rets(deployment.apply_all()))


def test_a_stale_sentinel_is_forgotten_and_a_live_stranger_is_only_reported(deployment):
    master, _ = deployment.wait_converged()
    stranger = deployment.add_sentinel("delta", package=False)
    try:
        delta = Minion("delta", "sentinel-only", deployment, stranger)
        delta.overrides = {"sentinel": {"hosts": deployment.sentinel_hosts() + [
            {"hostname": "delta", "ip": "127.0.0.1", "port": stranger.port}]}}
        delta.refresh_pillar()
        created = delta.monitored()
        assert created["result"] is True, created["comment"]
        assert created["changes"]["file"]["action"] == "created" and stranger.restarts == 1
        wait_for(lambda: all(len(s.known_sentinels()) == 3 for s in deployment.sentinels[:3]), 20,
                 message="the three Sentinels discover the stranger")

        alive = deployment.minions[0].monitored()
        assert alive["result"] is True and not alive["changes"], alive
        assert f"outside the deployment still answer and monitor {MASTER_NAME}: 127.0.0.1:{stranger.port}" \
            in alive["comment"]

        stranger.stop()
        for minion in deployment.minions:
            ret = minion.monitored()
            assert ret["result"] is True, ret["comment"]
            assert ret["changes"]["reset"]["forgot"] == [f"127.0.0.1:{stranger.port}"]
            assert len(minion.sentinel.known_sentinels()) == 2
        deployment.wait_converged()
        assert not changes_of(all_rets(deployment.apply_all()))
    finally:
        stranger.stop()
        deployment.sentinels.remove(stranger)


def test_a_renamed_master_is_monitored_under_its_new_name_at_the_same_address(deployment):
    master, _ = deployment.wait_converged()
    gamma = deployment.minions[2]
    address = f"127.0.0.1:{master.port}"
    try:
        gamma.overrides = {"master_name": "renamed"}
        gamma.refresh_pillar()
        ret = gamma.monitored(name="renamed")
        assert ret["result"] is True, ret["comment"]
        assert ret["changes"]["monitor"] == {"old": MASTER_NAME, "new": f"renamed at {address} (the address "
                                             f"{MASTER_NAME} had)"}
        masters = gamma.sentinel.client().execute_command("SENTINEL", "MASTERS")
        assert [dict(zip(m[::2], m[1::2]))["name"] for m in masters] == ["renamed"]
        assert gamma.sentinel.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "renamed") == [
            "127.0.0.1", str(master.port)]
        again = gamma.monitored(name="renamed")
        assert again["result"] is True and not again["changes"], again
    finally:
        gamma.overrides = {}
        gamma.refresh_pillar()
        back = gamma.monitored()
    assert back["result"] is True and back["changes"]["monitor"]["old"] == "renamed", back
    assert gamma.sentinel.restarts == 1
    deployment.wait_converged()


def test_a_world_readable_sentinel_file_gets_its_mode_back(deployment):
    gamma = deployment.minions[2]
    os.chmod(gamma.sentinel.conf, 0o644)

    ret = gamma.monitored()

    assert ret["result"] is True and ret["changes"] == {"mode": {"old": "0644", "new": "0640"}}, ret
    assert stat.S_IMODE(gamma.sentinel.conf.stat().st_mode) == 0o640
    assert not gamma.monitored()["changes"]


def test_a_changed_password_fails_and_says_how_to_give_it_to_the_sentinel(deployment):
    gamma = deployment.minions[2]
    try:
        gamma.overrides = {"password": WRONG_PASSWORD}
        gamma.refresh_pillar()
        ret = gamma.monitored()
        gamma.overrides = {"role": "none"}
        gamma.refresh_pillar()
        elsewhere = gamma.monitored()
    finally:
        gamma.overrides = {}
        gamma.refresh_pillar()
    assert ret["result"] is False and not ret["changes"]
    assert f"remove {gamma.sentinel.conf} and apply again" in ret["comment"]
    assert gamma.sentinel.restarts == 1
    assert elsewhere == {"name": MASTER_NAME, "result": True, "changes": {},
                         "comment": "this minion runs no Sentinel of the deployment (role none)"}
    assert_no_password([ret, elsewhere])


def test_two_sentinels_without_a_witness_warn_loudly(deployment):
    alpha = deployment.minions[0]
    try:
        alpha.overrides = {"sentinel": {"hosts": deployment.sentinel_hosts()[:2], "witnesses": [], "quorum": 2}}
        alpha.refresh_pillar()
        ret = alpha.monitored(test=True)
        status = alpha.mod.status()
    finally:
        alpha.overrides = {}
        alpha.refresh_pillar()
    assert ret["result"] is True and not ret["changes"], ret
    assert "WARNING: 2 Sentinel(s), quorum 2" in ret["comment"] and "NO automatic failover" in ret["comment"]
    assert status["host_death_fails_over"] is False
    assert any("NO automatic failover" in warning for warning in status["warnings"])


def test_status_shows_the_sentinel_view(deployment):
    master, _ = deployment.wait_converged()
    gamma = deployment.minions[2]

    status = gamma.mod.status()

    assert status["master"] == f"127.0.0.1:{master.port}"
    assert status["master_host"] == ("alpha" if master is deployment.servers[0] else "beta")
    assert (status["agreeing"], status["reachable"], status["expected"], status["quorum"]) == (3, 3, 3, 2)
    assert status["host_death_fails_over"] is True
    assert status["warnings"] == [] and status["flags"] == ["master"]
    assert status["ckquorum"].startswith("OK 3 usable Sentinels")
    assert all(view["known_sentinels"] == 2 for view in status["sentinels"].values())
    live = gamma.mod.live_master()
    assert (live["source"], live["address"]) == ("sentinels", status["master"])
    assert_no_password([status, live])


def test_a_symlinked_sentinel_file_is_refused(deployment, tmp_path):
    target = tmp_path / "elsewhere.conf"
    target.write_text("port 1\n")
    link = tmp_path / "sentinel.conf"
    link.symlink_to(target)
    gamma = deployment.minions[2]

    ret = gamma.monitored(config_file=str(link))

    assert ret["result"] is False and "symbolic link" in ret["comment"] and not ret["changes"]
    assert target.read_text() == "port 1\n" and gamma.sentinel.restarts == 1


def test_no_password_on_any_command_line(deployment):
    arguments = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert_no_password(arguments)
    for process in deployment.sentinels + deployment.servers:
        with open(f"/proc/{process.process.pid}/cmdline", "rb") as handle:
            assert_no_password(handle.read().decode(errors="replace"))


@pytest.fixture
def bare_pair(tmp_path_factory):
    """Two Redis servers and no Sentinel at all (the pillar's Sentinels do not listen)."""
    build = SERVERS["redis-7.0"]
    build.require()
    servers = []
    try:
        for hostname in ("alpha", "beta"):
            server = RedisServer(tmp_path_factory.mktemp(f"bare-{hostname}"), build)
            servers.append(server)
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


class _NoSentinel:
    def __init__(self):
        self.port = free_port()

    def restart(self, service=None):
        pytest.fail("no Sentinel to restart here", pytrace=False)


class _BareDeployment:
    def __init__(self, servers):
        self.servers, self.minions = servers, []
        self.sentinels = [_NoSentinel() for _ in range(3)]
        for sentinel, name in zip(self.sentinels, ("alpha", "beta", "gamma")):
            sentinel.hostname = name
        self.minions = [Minion("alpha", "master", self, self.sentinels[0], servers[0]),
                        Minion("beta", "replica", self, self.sentinels[1], servers[1])]

    def peers(self):
        return [{"hostname": name, "minion_id": name, "ip": "127.0.0.1", "port": server.port}
                for name, server in zip(("alpha", "beta"), self.servers)]

    def sentinel_hosts(self):
        return [{"hostname": s.hostname, "ip": "127.0.0.1", "port": s.port} for s in self.sentinels]


def test_without_sentinels_the_roles_decide_the_live_master(bare_pair):
    alpha, beta = bare_pair
    bare = _BareDeployment(bare_pair)
    mod = bare.minions[1].mod

    live = mod.live_master()
    assert (live["master"], live["source"]) == ("alpha", "initial_master")
    assert all("ConnectionError" in answer for answer in live["sentinels"].values())

    beta.client().set("kept", "1")
    assert (mod.live_master()["master"], mod.live_master()["source"]) == ("beta", "keys")

    alpha.client().set("also", "1")
    refused = mod.live_master()
    assert refused["master"] is None and "would wipe its keys" in refused["comment"]
    ret = bare.minions[0].state.replicating(MASTER_NAME)
    assert ret["result"] is False and not ret["changes"] and "nothing changed" in ret["comment"]
    assert alpha.client().info("replication")["role"] == "master"

    alpha.client().flushall()
    ret = bare.minions[0].state.replicating(MASTER_NAME)
    assert ret["result"] is True and ret["changes"]["replicaof"]["new"].startswith("replica of beta"), ret
    live = mod.live_master()
    assert (live["master"], live["source"]) == ("beta", "roles")
    assert alpha.client().get("kept") == "1"
    assert "replicaof" in (alpha.dir / "redis.conf").read_text()  # Redis's own file, not Salt's
    assert "replicaof" not in alpha.salt_conf.read_text()
    assert_no_password([live, ret])


def test_the_sentinel_user_can_do_what_sentinel_needs_and_no_more(deployment):
    server = deployment.servers[0]
    password = deployment.minions[0].mod._auth_password()
    client = server.client(password=None)
    client.execute_command("AUTH", "salt-sentinel", password)
    assert client.execute_command("ROLE")[0] in ("master", "slave")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("anything")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command("CONFIG", "SET", "maxclients", "10")
    assert os.path.exists(server.main_conf) and "user salt-sentinel" in server.main_conf.read_text()


def test_why_sentinels_log_in_with_a_hex_password(tmp_path):
    """Redis 7.0's Sentinel writes `sentinel auth-pass` unquoted when it rewrites its file: with
    a password holding spaces or quotes it then refuses to start. (If this ever fails, Sentinel
    quotes it now, and the derived hex password is no longer needed.)"""
    sentinel = SentinelProcess(tmp_path)
    sentinel.conf.write_text(
        f"port {sentinel.port}\nbind 127.0.0.1\ndir {tmp_path}\nlogfile {tmp_path / 'sentinel.log'}\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {free_port()} 1\n"
        f"sentinel auth-pass {MASTER_NAME} {redis_quote(PASSWORD)}\n"
    )
    sentinel.start()
    sentinel.stop()  # it has rewritten its file at start
    assert f"sentinel auth-pass {MASTER_NAME} {PASSWORD}" in sentinel.conf.read_text()
    sentinel.spawn()
    assert sentinel.process.wait(timeout=10) != 0
    assert "Unbalanced quotes" in (tmp_path / "stderr.log").read_text()
