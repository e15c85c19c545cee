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
