"""The replica planner (_utils/redis_cluster_shape.py): which node replicates which master,
and which slot-less nodes become masters, from the nodes' live roles."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("redis_cluster_shape", ROOT / "_utils" / "redis_cluster_shape.py")
shape = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shape)


def master(name, slots=5461):
    return {"id": name, "address": f"10.0.0.{name[1:]}:6379", "role": "master", "master": None, "slots": slots}


def replica(name, of):
    return {"id": name, "address": f"10.0.0.{name[1:]}:6379", "role": "replica", "master": of, "slots": 0}


def bare(name):
    return master(name, slots=0)


def planned(pairs):
    return {f"10.0.0.{r[1:]}:6379": f"10.0.0.{m[1:]}:6379" for r, m in pairs.items()}


def replicates(result):
    return {move["node"]: (move["master"], move["why"]) for move in result["replicate"]}


def test_bare_planned_replicas_each_replicate_their_planned_master():
    nodes = [master("n1"), master("n2"), master("n3"), bare("n4"), bare("n5"), bare("n6")]
    result = shape.moves(nodes, 1, planned({"n4": "n1", "n5": "n2", "n6": "n3"}))
    assert replicates(result) == {"n4": ("n1", "short"), "n5": ("n2", "short"), "n6": ("n3", "short")}
    assert result["new_masters"] == []


def test_two_replicas_per_master_from_nine_bare_nodes():
    nodes = [master("n1"), master("n2"), master("n3")] + [bare(f"n{i}") for i in range(4, 10)]
    plan = {"n4": "n1", "n5": "n2", "n6": "n3", "n7": "n1", "n8": "n2", "n9": "n3"}
    result = shape.moves(nodes, 2, planned(plan))
    assert replicates(result) == {node: (plan[node], "short") for node in plan}


def test_the_planned_shape_needs_nothing():
    nodes = [master("n1"), master("n2"), replica("n3", "n1"), replica("n4", "n2")]
    assert shape.moves(nodes, 1) == {"replicate": [], "new_masters": []}


def test_replicas_piled_on_one_master_are_spread_without_touching_a_master():
    nodes = [master("n1"), master("n2"), master("n3"), replica("n4", "n1"), replica("n5", "n1"), replica("n6", "n3")]
    result = shape.moves(nodes, 1, planned({"n4": "n1", "n5": "n2", "n6": "n3"}))
    # n5 is n2's in the plan: it is the spare on n1 and goes home.
    assert replicates(result) == {"n5": ("n2", "short")}


def test_a_failover_is_not_undone():
    # n4 took over from n1 (now its replica): roles stay, nothing moves.
    nodes = [replica("n1", "n4"), master("n2"), master("n3"), master("n4"), replica("n5", "n2"), replica("n6", "n3")]
    assert shape.moves(nodes, 1, planned({"n4": "n1", "n5": "n2", "n6": "n3"})) == {"replicate": [], "new_masters": []}


def test_growth_by_two_with_one_replica_each_makes_one_new_master_with_its_replica():
    nodes = [master("n1"), master("n2"), master("n3"), replica("n4", "n1"), replica("n5", "n2"), replica("n6", "n3"),
             bare("n7"), bare("n8")]
    result = shape.moves(nodes, 1)
    assert result["new_masters"] == ["n7"]
    assert replicates(result) == {"n8": ("n7", "group")}


def test_a_lone_extra_node_waits_as_a_spare_replica():
    nodes = [master("n1"), master("n2"), master("n3"), replica("n4", "n1"), replica("n5", "n2"), replica("n6", "n3"),
             bare("n7")]
    result = shape.moves(nodes, 1)
    assert result["new_masters"] == [] and list(replicates(result).values()) == [(replicates(result)["n7"][0], "spare")]
    # And once it replicates, the shape holds: no endless moving.
    nodes[-1] = replica("n7", replicates(result)["n7"][0])
    assert shape.moves(nodes, 1) == {"replicate": [], "new_masters": []}


def test_a_spare_and_a_newcomer_form_a_new_group():
    nodes = [master("n1"), master("n2"), replica("n3", "n1"), replica("n4", "n2"), replica("n5", "n1"), bare("n6")]
    result = shape.moves(nodes, 1)
    assert result["new_masters"] == ["n6"] and replicates(result) == {"n5": ("n6", "group")}


def test_without_replicas_every_newcomer_becomes_a_master():
    nodes = [master("n1"), bare("n2"), bare("n3")]
    assert shape.moves(nodes, 0) == {"replicate": [], "new_masters": ["n2", "n3"]}


def test_a_slotless_master_with_its_replica_waits_for_its_rebalance():
    nodes = [master("n1"), replica("n2", "n1"), bare("n3"), replica("n4", "n3")]
    assert shape.moves(nodes, 1) == {"replicate": [], "new_masters": ["n3"]}


def test_a_replica_prefers_a_master_on_another_host():
    nodes = [master("n1"), master("n2"), {**bare("n3"), "address": "10.0.0.1:6380"}]
    assert replicates(shape.moves(nodes, 1))["n3"][0] == "n2"


def test_the_plans_master_wins_over_address_order():
    nodes = [master("n1"), master("n2"), master("n3"), bare("n4"), bare("n5"), bare("n6")]
    result = shape.moves(nodes, 1, planned({"n4": "n3", "n5": "n2", "n6": "n1"}))
    assert replicates(result) == {"n4": ("n3", "short"), "n5": ("n2", "short"), "n6": ("n1", "short")}
