"""Forming a Redis Cluster with the redis_cluster module and state, against three real
cluster-enabled servers on 127.0.0.1 (each supported server build in turn)."""

import time

import pytest
from cluster_support import cluster_info, node_modules
from conftest import cluster_nodes

pytestmark = pytest.mark.usefixtures("server_build")


@pytest.fixture
def three_nodes(tmp_path_factory, server_build):
    with cluster_nodes(tmp_path_factory, server_build, 3) as servers:
        yield servers


def test_the_initial_master_forms_a_healthy_cluster_once(three_nodes):
    (first, first_state, events), *_ = node_modules(three_nodes)

    ret = first_state.formed("cluster", timeout=30)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["formed"]["actions"][:2] == ["n0 met n1", "n0 met n2"]
    for server in three_nodes:
        info = cluster_info(server)
        assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info and "cluster_known_nodes:3" in info
    assert [tag for tag, _ in events] == ["redis/cluster/formed"]
    assert sorted(events[0][1]["nodes"]) == ["n0", "n1", "n2"]
    assert first.cluster_view()["slots"] == [[0, 5460]]

    again = first_state.formed("cluster", timeout=30)
    assert again["changes"] == {} and again["result"] is True
    assert again["comment"].startswith("cluster ok: 3 nodes")


def test_a_dry_run_says_who_forms_and_who_joins_and_changes_nothing(three_nodes):
    (_, first_state, _), (_, second_state, _), _ = node_modules(three_nodes)
    first_state.__opts__["test"] = second_state.__opts__["test"] = True

    planned = first_state.formed("cluster")
    joining = second_state.formed("cluster")

    assert planned["result"] is None
    assert planned["comment"] == (
        "n0 would form the cluster of n0, n1, n2: slots n0 0-5460; n1 5461-10922; n2 10923-16383"
    )
    assert joining == {"name": "cluster", "result": None, "changes": {"would_join": "n0"},
                       "comment": "n1 would join the cluster that n0 forms"}
    assert all("cluster_known_nodes:1" in cluster_info(server) for server in three_nodes)


def test_a_node_that_holds_keys_without_slots_is_refused(three_nodes):
    (_, first_state, _), *_ = node_modules(three_nodes)
    # A node that ran standalone with data, then restarted with cluster-enabled: keys, no slots.
    node = three_nodes[2]
    node.settings["cluster-enabled"] = "no"
    node.write_salt_conf()
    node.restart()
    node.client().set("session:1", "x")
    node.client().save()
    node.settings["cluster-enabled"] = "yes"
    node.write_salt_conf()
    node.restart()
    assert node.client().dbsize() == 1

    ret = first_state.formed("cluster", timeout=10)

    assert ret["result"] is False
    assert "n2 (127.0.0.1:" in ret["comment"] and "holds 1 keys but the cluster is not formed" in ret["comment"]
    assert ret["changes"] == {}
    assert all("cluster_known_nodes:1" in cluster_info(server) for server in three_nodes)
    assert node.client().dbsize() == 1


def test_slots_assigned_against_the_plan_are_refused_with_the_repair(three_nodes):
    (_, first_state, _), *_ = node_modules(three_nodes)
    # The plan gives slots 1-3 to n0: n1 holding them is not a formation of ours.
    three_nodes[1].client().execute_command("CLUSTER", "ADDSLOTS", 1, 2, 3)

    ret = first_state.formed("cluster", timeout=10)

    assert ret["result"] is False
    assert "3 of 16384 assigned" in ret["comment"] and "redis-cli --cluster fix" in ret["comment"]
    assert all("cluster_known_nodes:1" in cluster_info(server) for server in three_nodes)


def test_a_formation_cut_short_is_completed_by_the_next_apply(three_nodes):
    (_, first_state, _), *_ = node_modules(three_nodes)
    # As a formation killed after n0's ADDSLOTSRANGE and part of n1's left it.
    three_nodes[0].client().execute_command("CLUSTER", "ADDSLOTS", *range(0, 5461))
    three_nodes[1].client().execute_command("CLUSTER", "ADDSLOTS", *range(5461, 6001))

    ret = first_state.formed("cluster", timeout=30)

    assert ret["result"] is True, ret["comment"]
    assert "n1 got slots 6001-10922" in ret["comment"] and "n2 got slots 10923-16383" in ret["comment"]
    assert "EMPTY" not in ret["comment"]
    for server in three_nodes:
        assert "cluster_state:ok" in cluster_info(server) and "cluster_slots_assigned:16384" in cluster_info(server)


def test_a_peer_that_never_answers_is_named(three_nodes):
    (_, first_state, _), *_ = node_modules(three_nodes)
    three_nodes[1].stop()

    ret = first_state.formed("cluster", timeout=2)

    assert ret["result"] is False
    assert f"n1 (127.0.0.1:{three_nodes[1].port})" in ret["comment"]
    assert "did not answer" in ret["comment"]


def test_a_node_rebuilt_bare_at_its_address_takes_the_dead_ones_place(three_nodes):
    (first, first_state, _), *_ = node_modules(three_nodes)
    assert first_state.formed("cluster", timeout=30)["result"] is True
    dead = three_nodes[1].client().execute_command("CLUSTER", "MYID")
    # The host died for good and came back bare: same address, empty data directory.
    three_nodes[1].stop()
    (three_nodes[1].dir / "nodes.conf").unlink()
    three_nodes[1].start()
    assert "cluster_known_nodes:1" in cluster_info(three_nodes[1])
    deadline = time.monotonic() + 20  # the others notice (cluster-node-timeout 2 s)
    while not {"fail", "noaddr"} & set(old_entry(three_nodes[0], dead)):
        assert time.monotonic() < deadline, old_entry(three_nodes[0], dead)
        time.sleep(0.2)

    ret = first_state.formed("cluster", timeout=30)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["formed"]["actions"][0].startswith(f"forgot the dead node {dead[:8]}")
    assert "n1 got slots 5461-10922" in ret["changes"]["formed"]["actions"]
    assert "EMPTY" in ret["comment"] and "restore them from a backup set" in ret["comment"]
    for server in three_nodes:
        info = cluster_info(server)
        assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info
    nodes = three_nodes[0].client().execute_command("CLUSTER", "NODES")
    assert dead not in nodes


def old_entry(server, node_id):
    """The flags `server` shows for `node_id`."""
    for line in server.client().execute_command("CLUSTER", "NODES").splitlines():
        if line.startswith(node_id):
            return line.split()[2].split(",")
    return []


def test_every_newcomer_meets_the_other_newcomers_itself_not_through_gossip(three_nodes):
    """What the initial master's MEETs alone leave to gossip (a few random peers a second),
    each node it met does at once: right after the call, n1 lists n2 and n2 lists n1."""
    (first, _, _), *_ = node_modules(three_nodes)
    module = first.form_cluster.__globals__
    clients = module["_node_clients"]({f"n{i}": f"127.0.0.1:{s.port}" for i, s in enumerate(three_nodes)})
    plan = {"initial_master": "n0", "nodes": {h: f"127.0.0.1:{c.connection_pool.connection_kwargs['port']}"
                                              for h, c in clients.items()}}
    for host in ("n1", "n2"):
        ip, port = plan["nodes"][host].rsplit(":", 1)
        module["_cluster_command"](clients["n0"], "MEET", ip, int(port))

    module["_newcomers_meet_everyone"](plan, clients, ["n1", "n2"])

    listed = {h: clients[h].execute_command("CLUSTER", "NODES") for h in ("n1", "n2")}
    assert f":{three_nodes[2].port}@" in listed["n1"], listed["n1"]
    assert f":{three_nodes[1].port}@" in listed["n2"], listed["n2"]
