"""A two-phase password rotation of the Sentinels (real redis-sentinel processes, Redis 7.0):
in phase 1 every Sentinel accepts the old and the new password, logs in to the others as
salt-sentinel and to the servers with the new derived secret once they accept it; in phase 2
the old password is refused; no Sentinel restarts and they still see each other and the pair.
A forced change (``force_password_change``) gets there in one step, no restart either.
"""

import concurrent.futures

import pytest
import redis
from conftest import PASSWORD, assert_no_password, give_opts, load_node_module

pytest.register_assert_rewrite("sentinel_fixtures")  # before its import below
from sentinel_fixtures import MASTER_NAME, all_rets, sentinel_client, wait_for  # noqa: E402

pytest_plugins = ["sentinel_fixtures"]

NEW_PASSWORD = "sentinel 'rotated' \\ pw"


def accepts(sentinel, password):
    try:
        return sentinel_client(sentinel.port, password=password).ping()
    except redis.AuthenticationError:
        return False


def rotate(deployment, **overrides):
    """``state.apply`` with the new pillar on every host at once, as Salt runs it: a node waits
    (bounded) for the others to accept its new login."""
    for minion in deployment.minions:
        minion.overrides = dict(overrides)
        minion.refresh_pillar()
    with concurrent.futures.ThreadPoolExecutor(len(deployment.minions)) as pool:
        applied = {m.hostname: pool.submit(apply_host, m) for m in deployment.minions}
    return {hostname: future.result() for hostname, future in applied.items()}


def apply_host(minion):
    """The host's part of the apply: its server's own logins first (service.sls), then the
    Sentinel side."""
    if minion.server:
        node = load_node_module(minion.mod.__pillar__)
        give_opts(node, {"cachedir": str(minion.server.dir / "minion-cache")})
        if minion.mod.__pillar__["redis"].get("force_password_change") and not server_accepts(minion):
            # redis_node.password_accepted's part (config.sls, before anything else).
            assert node.forced_password_change()["changed"]
        assert node.logins(wait=10)
    # sentinel.sls: the Sentinel's password gate before monitored.
    gate = minion.state.password_accepted(MASTER_NAME, config_file=str(minion.sentinel.conf))
    return [gate, *minion.apply(), minion.state.logins_converged(MASTER_NAME)]


def server_accepts(minion):
    """Whether the host's server lets the pillar's password in."""
    password = minion.mod.__pillar__["redis"]["password"]
    try:
        return redis.Redis(port=minion.server.port, password=password, socket_timeout=5).ping()
    except redis.AuthenticationError:
        return False


def run_ids(deployment, password):
    return [sentinel_client(s.port, password=password).info("server")["run_id"] for s in deployment.sentinels[:3]]


def sees_everyone(sentinel, password):
    client = sentinel_client(sentinel.port, password=password)
    master = dict(zip(*[iter(client.execute_command("SENTINEL", "MASTER", MASTER_NAME))] * 2))
    peers = client.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
    flags = [dict(zip(*[iter(peer)] * 2))["flags"] for peer in peers]
    return (master["flags"] == "master" and int(master["num-other-sentinels"]) == 2
            and all("disconnected" not in f and "s_down" not in f for f in flags))


def test_the_sentinels_accept_both_passwords_in_phase_1_and_only_the_new_one_after_phase_2(deployment):
    sentinels = deployment.sentinels[:3]
    before = run_ids(deployment, PASSWORD)
    try:
        phase1 = rotate(deployment, password=NEW_PASSWORD, previous_password=PASSWORD)
        assert all(ret["result"] is True for ret in all_rets(phase1)), all_rets(phase1)
        for sentinel in sentinels:
            assert accepts(sentinel, PASSWORD) and accepts(sentinel, NEW_PASSWORD)
            login = sentinel_client(sentinel.port).execute_command("SENTINEL", "CONFIG", "GET", "sentinel-user")
            assert login[1] == "salt-sentinel"
        assert run_ids(deployment, NEW_PASSWORD) == before
        again = rotate(deployment, password=NEW_PASSWORD, previous_password=PASSWORD)
        assert [r["changes"] for r in all_rets(again) if r["changes"]] == []

        phase2 = rotate(deployment, password=NEW_PASSWORD)
        assert all(ret["result"] is True for ret in all_rets(phase2)), all_rets(phase2)
        for sentinel in sentinels:
            assert not accepts(sentinel, PASSWORD) and accepts(sentinel, NEW_PASSWORD)
        assert run_ids(deployment, NEW_PASSWORD) == before
        # Sentinel-to-Sentinel and Sentinel-to-server logins hold: hello messages still flow.
        wait_for(lambda: all(sees_everyone(s, NEW_PASSWORD) for s in sentinels), 20,
                 message="every Sentinel sees the master and the two others")
        assert_no_password([phase1, phase2])
        assert NEW_PASSWORD not in str([phase1, phase2])
    finally:
        rotate(deployment, previous_password=NEW_PASSWORD)
        rotate(deployment)
        deployment.wait_converged()
    assert all(accepts(s, PASSWORD) and not accepts(s, NEW_PASSWORD) for s in sentinels)


def test_a_forced_change_reaches_every_server_and_sentinel_in_one_step(deployment):
    sentinels = deployment.sentinels[:3]
    before = run_ids(deployment, PASSWORD)
    servers_before = [server.client().info("server")["run_id"] for server in deployment.servers]
    try:
        rotate(deployment)  # an earlier apply: each host records the password its nodes accept
        forced = rotate(deployment, password=NEW_PASSWORD, force_password_change=True)
        assert all(ret["result"] is True for ret in all_rets(forced)), all_rets(forced)
        gates = [ret for ret in all_rets(forced) if ret["changes"].get("password")]
        assert len(gates) == 3 and all("Downtime: every client still using the old password" in ret["comment"]
                                       for ret in gates)
        for sentinel in sentinels:
            assert not accepts(sentinel, PASSWORD) and accepts(sentinel, NEW_PASSWORD)
        for server in deployment.servers:
            server.password = NEW_PASSWORD
            assert server.client().info("server")["run_id"] == servers_before.pop(0)
        assert run_ids(deployment, NEW_PASSWORD) == before
        wait_for(lambda: all(sees_everyone(s, NEW_PASSWORD) for s in sentinels), 20,
                 message="every Sentinel sees the master and the two others")
        again = rotate(deployment, password=NEW_PASSWORD, force_password_change=True)
        assert [r["changes"] for r in all_rets(again) if r["changes"]] == [], (forced, again)
        assert_no_password(forced)
        assert NEW_PASSWORD not in str(forced)
    finally:
        rotate(deployment, password=PASSWORD, force_password_change=True)
        for server in deployment.servers:
            server.password = PASSWORD
        rotate(deployment)
        deployment.wait_converged()
    assert all(accepts(s, PASSWORD) and not accepts(s, NEW_PASSWORD) for s in sentinels)


class PeerApplied:
    """The connect factories alpha's Sentinel asks its peers through, seeing each question
    (``(username, password)``) before it reaches the real Sentinel. ``beta`` converges its own
    ``salt-sentinel`` user (its apply's step, ``redis_acl.converge``) right before alpha asks it
    the old login the second time; ``gamma`` right before alpha asks it the new login the
    second time after that."""

    def __init__(self, deployment, connector, old, new):
        self.connector, self.old, self.new = connector, old, new
        self.ports = {s.port: s for s in deployment.sentinels[1:3]}
        self.beta, self.gamma = deployment.sentinels[1:3]
        self.asked_old = self.asked_new_since = 0
        self.applied = []

    def apply(self, sentinel):
        client = sentinel.client()  # the peer's own apply logs in with the password it accepts
        outcome = self.converge(client, [NEW_PASSWORD], "salt-sentinel", on="sentinel")
        assert outcome["changed"] and outcome["persisted"]
        self.applied.append(sentinel.hostname)

    def __call__(self, host, port, *args, **kwargs):
        connect = self.connector(host, port, *args, **kwargs)
        sentinel = self.ports.get(int(port))
        if sentinel is None:
            return connect

        def asked(username, password):
            if sentinel is self.beta and password == self.old and "beta" not in self.applied:
                self.asked_old += 1
                if self.asked_old == 2:
                    self.apply(self.beta)
            if sentinel is self.gamma and password == self.new and "beta" in self.applied:
                self.asked_new_since += 1
                if self.asked_new_since == 2:
                    self.apply(self.gamma)
            return connect(username, password)

        return asked


def test_a_peer_applied_between_two_questions_does_not_end_the_wait_for_another(deployment):
    """Salt's concurrent apply of a forced change: alpha's Sentinel waits for the other two to
    accept its new login (they refuse it, the old one works). Beta's apply lands between the
    two questions of one round (the new login? refused; the old one? refused: beta switched in
    between). That is beta accepting the new login, not a login that works nowhere: alpha
    keeps waiting for gamma, moves to the new login once gamma takes it, and says so in that
    apply; the next apply has nothing to do."""
    rotate(deployment)  # an earlier apply: each host records the password its nodes accept
    alpha = deployment.minions[0]
    alpha.overrides = {"password": NEW_PASSWORD, "force_password_change": True}
    alpha.refresh_pillar()
    gate = alpha.state.password_accepted(MASTER_NAME, config_file=str(alpha.sentinel.conf))
    assert gate["changes"] == {"password": "changed in one step (force_password_change)"}, gate
    derived = alpha.mod.__utils__["redis_acl.derived_password"]
    old, new = derived(PASSWORD, "salt-sentinel"), derived(NEW_PASSWORD, "salt-sentinel")
    connector = alpha.mod.__utils__["redis_common.connector"]
    peers = PeerApplied(deployment, connector, old, new)
    peers.converge = alpha.mod.__utils__["redis_acl.converge"]
    alpha.mod.__utils__["redis_common.connector"] = peers
    try:
        forced = alpha.mod.sentinel_logins()
        assert forced["changes"].get("peer_login") == "salt-sentinel / <hidden>", forced
        assert "waiting" not in forced["comment"], forced
        assert peers.applied == ["beta", "gamma"], peers.applied
        login = alpha.sentinel.client(NEW_PASSWORD).execute_command("SENTINEL", "CONFIG", "GET", "sentinel-pass")
        assert login[1] == new
        alpha.mod.__utils__["redis_common.connector"] = connector
        assert alpha.mod.sentinel_logins()["changes"] == {}
        assert NEW_PASSWORD not in str(forced) and new not in str(forced)
    finally:
        alpha.mod.__utils__["redis_common.connector"] = connector
        rotate(deployment, password=PASSWORD, force_password_change=True)
        rotate(deployment)
        deployment.wait_converged()
    assert all(accepts(s, PASSWORD) and not accepts(s, NEW_PASSWORD) for s in deployment.sentinels[:3])
