"""A two-phase password rotation on real servers (issue 18, item 1).

Phase 1 (pillar ``password`` new, ``previous_password`` the one in use): every server
accepts both, live, no restart, whichever node is applied first; a replica logs in to its
master as ``salt-replication`` with the new secret once the master accepts it. Phase 2
(``previous_password`` removed): the old password is refused, the new one accepted, still no
restart. A change without ``previous_password`` on a formed deployment is refused before
anything changes.
"""

import pytest
from cluster_support import accepts, wired_state
from conftest import RedisServer, load_module
from support.waits import wait_until

pytestmark = pytest.mark.usefixtures("server_build")

NEW_PASSWORD = 'new "rotated" \\ pw'


def rotate(mods, previous):
    for mod in mods:
        mod.__pillar__["redis"].update(password=NEW_PASSWORD, previous_password=previous)


def test_both_phases_on_a_formed_cluster_restart_nothing_and_refuse_no_client(formed_cluster, tmp_path, no_password):
    servers, mods = formed_cluster
    old = servers[0].password
    run_ids = [s.info()["run_id"] for s in servers]
    states = [wired_state(mod, tmp_path / f"cache{i}") for i, mod in enumerate(mods)]

    rotate(mods, previous=old)
    # Node 1 first, then the others: a node not applied yet still accepts the old password,
    # and the tools of an applied node still reach it.
    for state in (states[1], states[0], states[2]):
        gate = state.password_accepted("node", port=state.__pillar__["redis"]["port"])
        assert gate["result"] is True, gate["comment"]
        ret = state.logins_converged("node", port=state.__pillar__["redis"]["port"])
        assert ret["result"] is True, ret["comment"]
        assert ret["changes"]["default_user"] == "password"
        assert "phase 1" in ret["comment"]
        no_password(ret)
    for server in servers:
        assert accepts(server, old) and accepts(server, NEW_PASSWORD)
    again = [state.logins_converged("node", port=state.__pillar__["redis"]["port"]) for state in states]
    assert [ret["changes"] for ret in again] == [{}, {}, {}]

    rotate(mods, previous=None)
    for mod in mods:
        del mod.__pillar__["redis"]["previous_password"]
    for state in states:
        ret = state.logins_converged("node", port=state.__pillar__["redis"]["port"])
        assert ret["result"] is True and ret["changes"]["default_user"] == "password", ret["comment"]
    for server in servers:
        assert not accepts(server, old)
        assert accepts(server, NEW_PASSWORD)
    for server, run_id in zip(servers, run_ids):
        server.password = NEW_PASSWORD
        assert server.info()["run_id"] == run_id
        assert server.client().info("cluster")["cluster_enabled"] == 1


def test_a_password_change_without_the_previous_one_is_refused_before_anything_changes(formed_cluster, tmp_path):
    servers, mods = formed_cluster
    state = wired_state(mods[1], tmp_path / "cache")
    mods[1].__pillar__["redis"]["password"] = NEW_PASSWORD

    gate = state.password_accepted("node", port=servers[1].port, settings=dict(servers[1].settings))

    assert gate["result"] is False, gate["comment"]
    assert "belongs to a formed deployment" in gate["comment"]
    assert "cache.redis.previous_password to the one in use" in gate["comment"]
    assert NEW_PASSWORD not in str(gate)
    assert accepts(servers[1], servers[1].password) and not accepts(servers[1], NEW_PASSWORD)


def test_a_replica_moves_to_the_replication_user_once_its_master_accepts_it(
    tmp_path_factory, server_build, tmp_path
):
    master = RedisServer(tmp_path_factory.mktemp("master"), server_build)
    replica = RedisServer(tmp_path_factory.mktemp("replica"), server_build)
    try:
        master.start()
        replica.start()
        master.client().set("before", "1")
        master.client().config_set("repl-diskless-sync-delay", 0)
        replica.client().replicaof("127.0.0.1", master.port)
        replica.client().config_set("masterauth", master.password)
        mods = [load_module(f"rotation_cluster_{n}", "_modules/redis_cluster.py") for n in range(2)]
        for mod, server in zip(mods, (master, replica)):
            mod.__pillar__ = {"redis": {"role": "master", "mode": "sentinel", "port": server.port,
                                        "password": server.password}}
            mod.__opts__ = {"cachedir": str(tmp_path / f"c{server.port}")}
        states = [wired_state(mod, tmp_path / f"s{n}") for n, mod in enumerate(mods)]
        # The replica first, its master not applied yet: it keeps the login in use (waits briefly).
        first = states[1].logins_converged("replica", port=replica.port, wait=1)
        assert first["result"] is True, first["comment"]
        assert "waiting for 127.0.0.1" in first["comment"]
        assert replica.config("masteruser") == ""
        assert states[0].logins_converged("master", port=master.port)["result"] is True
        second = states[1].logins_converged("replica", port=replica.port)
        assert second["changes"]["replication_login"] == "replication login set to salt-replication"
        assert replica.config("masteruser") == "salt-replication"
        # The link reconnects with the new login and keeps replicating.
        replica.client().execute_command("CLIENT", "KILL", "TYPE", "master")
        master.client().client_kill_filter(_type="slave")
        master.client().set("after", "2")
        wait_until(lambda: replica.client().get("after") == "2", 30, "the replica has the write made after")
    finally:
        replica.stop()
        master.stop()
