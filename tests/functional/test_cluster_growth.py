"""Growing a formed Redis Cluster by one node while a client writes, and refusing to tear a
node out by a state run, against four real cluster-enabled servers on 127.0.0.1 (Debian's
Redis 7.0, whose redis-cli moves the slots)."""

import threading
import time

import pytest
import redis
from cluster_support import ClusterWriter, cluster_info, node_modules
from conftest import SERVERS, cluster_nodes
from support.waits import wait_until

SLOTS_FOR_4 = {"n0": [[0, 4095]], "n1": [[4096, 8191]], "n2": [[8192, 12287]], "n3": [[12288, 16383]]}
SLOTS_FOR_3 = {"n0": [[0, 5460]], "n1": [[5461, 10922]], "n2": [[10923, 16383]]}


@pytest.fixture
def four_nodes(tmp_path_factory):
    build = SERVERS["redis-7.0"]
    build.require()
    with cluster_nodes(tmp_path_factory, build, 4) as servers:
        yield servers


def test_a_new_node_joins_and_gets_slots_while_a_client_writes(four_nodes):
    first_three = four_nodes[:3]
    (_, former, _), *_ = node_modules(first_three, SLOTS_FOR_3)
    assert former.formed("cluster", timeout=30)["result"] is True
    writer = ClusterWriter(four_nodes[0])
    writer.start()

    nodes = node_modules(four_nodes, SLOTS_FOR_4)
    (_, first_state, events), _, _, (newcomer, newcomer_state, _) = nodes
    first_state.__opts__["test"] = True
    planned = first_state.formed("cluster")
    assert planned["result"] is None and planned["changes"] == {"would_add": ["n3"]}, planned
    assert "cluster_known_nodes:3" in cluster_info(four_nodes[0])

    first_state.__opts__["test"] = False
    grown = first_state.formed("cluster", timeout=60)
    joined = newcomer_state.formed("cluster", timeout=30)
    writer.finish()

    assert grown["result"] is True, grown["comment"]
    assert grown["comment"].startswith("grew the cluster of n0, n1, n2, n3"), grown["comment"]
    # (Run after n0 finished, the newcomer finds itself in the healthy cluster already.)
    assert joined["result"] is True and joined["comment"].startswith("cluster ok: 4 nodes"), joined
    assert writer.errors == [] and writer.written > 100
    view = newcomer.cluster_view()
    assert view["healthy"] and view["role"] == "master"
    owned = sum(last - first + 1 for first, last in view["slots"])
    assert 4096 - 200 <= owned <= 4096 + 200, view["slots"]
    assert [tag for tag, _ in events] == ["redis/cluster/node-added", "redis/cluster/rebalanced"]
    assert events[0][1]["host"] == "n3" and events[0][1]["role"] == "master"
    assert events[1][1] == {"slots_moved_to": {"n3": owned}}
    everyone = redis.RedisCluster(host="127.0.0.1", port=four_nodes[1].port, password=four_nodes[1].password,
                                  decode_responses=True)
    values = everyone.mget_nonatomic([f"grow:{n}" for n in range(writer.written)])
    assert values == [str(n) for n in range(writer.written)]
    for server in four_nodes:
        assert "cluster_state:ok" in cluster_info(server)

    again = first_state.formed("cluster", timeout=30)
    assert again["result"] is True and again["changes"] == {}, again

    # The YAML drops n3 again: no state run tears it out, each names the runner that does.
    for _, state, _ in node_modules(first_three, SLOTS_FOR_3):
        refused = state.formed("cluster", timeout=10)
        assert refused["result"] is False and refused["changes"] == {}
        assert f"127.0.0.1:{four_nodes[3].port}" in refused["comment"]
        assert "salt-run redis_cluster.remove_node node=127.0.0.1" in refused["comment"]
    assert "cluster_known_nodes:4" in cluster_info(four_nodes[0])

    # What `salt-run redis_cluster.remove_node` has a staying node do: every key stays.
    first_mod = node_modules(first_three, SLOTS_FOR_3)[0][0]
    removed = first_mod.remove_member(f"127.0.0.1:{four_nodes[3].port}", timeout=60)
    assert removed["removed"] is True, removed
    assert removed["keys_before"] == removed["keys_after"] == writer.written
    assert removed["actions"][0].startswith(f"moved {owned} slots off 127.0.0.1:{four_nodes[3].port}")
    for server in first_three:
        assert "cluster_known_nodes:3" in cluster_info(server) and "cluster_state:ok" in cluster_info(server)
    assert four_nodes[3].client().dbsize() == 0
    staying = redis.RedisCluster(host="127.0.0.1", port=four_nodes[1].port, password=four_nodes[1].password,
                                 decode_responses=True)
    assert staying.mget_nonatomic([f"grow:{n}" for n in range(writer.written)]) == values
    for _, state, _ in node_modules(first_three, SLOTS_FOR_3):
        assert state.formed("cluster", timeout=10)["result"] is True
    again = first_mod.remove_member(f"127.0.0.1:{four_nodes[3].port}")
    assert again["removed"] is False and "nothing to do" in again["comment"]


def test_a_node_waiting_for_the_grown_cluster_waits_as_long_as_slots_move(four_nodes):
    """The initial master's rebalance onto new masters has its own budget: a node waiting
    for the healthy cluster (``formed`` on any other node) gives up only once no slot has
    moved for its timeout."""
    first_three = four_nodes[:3]
    (_, former, _), *_ = node_modules(first_three, SLOTS_FOR_3)
    assert former.formed("cluster", timeout=30)["result"] is True
    clients = [server.client() for server in four_nodes]
    ids = [client.execute_command("CLUSTER", "MYID") for client in clients]
    # n3 joins as a master without slots: not healthy until it serves some.
    clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", four_nodes[3].port)
    waiter = node_modules(four_nodes, SLOTS_FOR_4)[1][0]
    wait_until(lambda: waiter.cluster_view()["known_nodes"] == 4, 10, "n1 knows n3")

    started = time.monotonic()
    stalled = waiter.wait_cluster_healthy(timeout=1)
    assert stalled["healthy"] is False and time.monotonic() - started < 10, stalled
    assert stalled["comment"].endswith("1 replica moves or rebalances pending (replicas_per_master 0); "
                                       "no slot moved in the last 1s"), stalled

    def move(slot, source, target):  # an empty slot, as redis-cli moves one
        clients[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        clients[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        for client in clients:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])

    def rebalance():  # slow: one slot every 0.5 s between the old masters, then one onto n3
        for slot in range(8):
            move(slot, 0, 1)
            time.sleep(0.5)
        move(8, 0, 3)

    mover = threading.Thread(target=rebalance)
    started = time.monotonic()
    mover.start()
    try:
        waited = waiter.wait_cluster_healthy(timeout=2)
    finally:
        mover.join()
    assert waited == {"healthy": True, "comment": "cluster ok"}
    assert time.monotonic() - started >= 4
