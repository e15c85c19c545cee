"""A failover the Sentinels made is never undone by Salt, whatever the Sentinels that answer
at the moment of an apply say (_modules/redis_sentinel.py ``live_master``,
_states/redis_sentinel.py ``replicating``): real redis-server and redis-sentinel processes
on 127.0.0.1, the session's Sentinel deployment (alpha, beta, witness gamma).

Each test starts from the converged deployment and leaves it converged.
"""

import pytest
from conftest import assert_no_password, free_port

pytest.register_assert_rewrite("sentinel_fixtures")  # before its import below
from sentinel_fixtures import MASTER_NAME, all_rets, changes_of, wait_for  # noqa: E402

pytest_plugins = ["sentinel_fixtures"]


def minion_of(deployment, server):
    return next(m for m in deployment.minions if m.server is server)


def acknowledged(server, key, value):
    """``key`` written on ``server`` and, when it has a replica, copied to it (WAIT 1)."""
    client = server.client()
    client.set(key, value)
    if int(client.info("replication")["connected_slaves"]):
        assert client.execute_command("WAIT", 1, 5000) == 1, f"{key}: no replica acknowledged it"


def replicates(server, master):
    info = server.client().info("replication")
    return info["role"] == "slave" and info["master_port"] == master.port and info["master_link_status"] == "up"


def test_an_old_master_back_with_its_stale_sentinel_while_the_witness_is_gone_is_not_followed(deployment):
    """alpha's host dies; beta and the witness fail over to beta; a key is written on beta; the
    witness becomes unreachable; alpha boots as a master (its keys, its stale Sentinel). An
    apply on either server hears one Sentinel name alpha and one name beta: nothing is
    demoted by Salt, and the key written after the failover is kept."""
    old_master, new_master = deployment.wait_converged()
    old, new = minion_of(deployment, old_master), minion_of(deployment, new_master)
    witness = deployment.minions[2]
    acknowledged(old_master, "a:before-failover", "1")

    old.sentinel.stop()  # the host dies: its Redis and its Sentinel
    old_master.stop()
    promoted = f"127.0.0.1:{new_master.port}"
    wait_for(lambda: all(s.master_address() == promoted for s in (new.sentinel, witness.sentinel)), 40, interval=0.2,
             message="beta's Sentinel and the witness fail over")
    new_master.client().set("a:after-failover", "kept")
    witness.sentinel.stop()
    old_master.start()  # appendonly: back as a master, with its keys
    old.sentinel.start()  # its file still names the old master, at the old config epoch
    assert old_master.client().info("replication")["role"] == "master"
    assert old_master.client().get("a:before-failover") == "1"

    try:
        _, new_replication, _ = new.apply()
        assert new_replication["result"] is True, new_replication["comment"]
        assert not new_replication["changes"], new_replication
        assert new_master.client().info("replication")["role"] == "master"
        assert new_master.client().get("a:after-failover") == "kept"

        _, old_replication, _ = old.apply()
        assert not old_replication["changes"], old_replication  # Salt never REPLICAOFs a master holding keys
        # The Sentinels convert the old master themselves.
        wait_for(lambda: replicates(old_master, new_master), 60, interval=0.3,
                 message="the Sentinels make the old master a replica of the new one")
        assert new_master.client().get("a:after-failover") == "kept"
        assert new_master.client().get("a:before-failover") == "1"
        wait_for(lambda: old_master.client().get("a:after-failover") == "kept", 10,
                 message="the old master copies the new master's keys")
        assert_no_password([new_replication, old_replication])
    finally:
        if witness.sentinel.process.poll() is not None:
            witness.sentinel.start()
    deployment.wait_converged(timeout=40)
    applied = deployment.apply_all()
    assert all(ret["result"] is True for ret in all_rets(applied)), all_rets(applied)
    assert not changes_of(all_rets(applied))
    assert minion_of(deployment, new_master).mod.live_master()["master"] == new.hostname


def test_an_apply_at_the_moment_of_a_promotion_never_demotes_the_new_master(deployment):
    """SENTINEL FAILOVER; the new master takes a write the instant it is promoted, and an apply
    on it runs then, while the Sentinels still name the old master (the leader has not seen
    the promotion yet, the others have not heard the new epoch): it changes nothing."""
    old_master, new_master = deployment.wait_converged()
    new = minion_of(deployment, new_master)
    acknowledged(old_master, "b:before-failover", "1")

    deployment.sentinels[2].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
    wait_for(lambda: new_master.client().info("replication")["role"] == "master", 20, interval=0.005,
             message="the replica is promoted")
    new_master.client().set("b:after-promotion", "kept")
    _, replication, _ = new.apply()

    assert replication["result"] is True, replication["comment"]
    assert not replication["changes"], replication
    assert new_master.client().info("replication")["role"] == "master"
    assert new_master.client().get("b:after-promotion") == "kept"
    master, replica = deployment.wait_converged(timeout=40)
    assert (master, replica) == (new_master, old_master)
    assert old_master.client().get("b:after-promotion") == "kept"
    assert not changes_of(all_rets(deployment.apply_all()))


def test_with_only_one_sentinel_answering_nothing_changes_and_the_state_says_why(deployment):
    master, replica = deployment.wait_converged()
    on_master, on_replica = minion_of(deployment, master), minion_of(deployment, replica)
    gone = [on_replica.sentinel, deployment.minions[2].sentinel]
    for sentinel in gone:
        sentinel.stop()
    try:
        live = on_replica.mod.live_master()
        assert live["master"] is None and live["candidate"] == on_master.hostname
        assert "1 of the 3 Sentinels" in live["comment"] and "a majority is 2" in live["comment"], live["comment"]
        for minion in (on_master, on_replica):
            minion.refresh_pillar()
            minion.state.__opts__ = {"test": False}
            ret = minion.state.replicating(MASTER_NAME, timeout=2)
            assert ret["result"] is True and not ret["changes"], ret
            assert "latest decision" in ret["comment"], ret["comment"]
        assert master.client().info("replication")["role"] == "master"
        assert replicates(replica, master)
        assert on_master.mod.status()["decided"] is False
    finally:
        for sentinel in gone:
            sentinel.start()
    deployment.wait_converged(timeout=40)
    assert not changes_of(all_rets(deployment.apply_all()))


def test_replication_health_is_waited_for_and_a_broken_link_is_named(deployment):
    """The check `redis.orchestrate` ends with in Sentinel mode."""
    master, replica = deployment.wait_converged()
    on_replica = minion_of(deployment, replica)
    mod = on_replica.mod
    mod.__context__.clear()

    healthy = mod.wait_replication_healthy(timeout=10)
    assert healthy["healthy"] is True, healthy["comment"]
    assert "retcode" not in mod.__context__

    replica.client().execute_command("REPLICAOF", "127.0.0.1", free_port())  # a stray address
    try:
        broken = mod.wait_replication_healthy(timeout=1)
        assert broken["healthy"] is False and mod.__context__["retcode"] == 1
        assert f"{on_replica.hostname} does not replicate" in broken["comment"], broken["comment"]
    finally:
        on_replica.apply()  # Salt points it back at the live master
    deployment.wait_converged()
    mod.__context__.clear()
    assert mod.wait_replication_healthy(timeout=20)["healthy"] is True
