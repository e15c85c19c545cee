"""The slot mover's plan (_utils/redis_slots.py): the moves ``redis-cli --cluster rebalance``
would make, computed from the slots' current owners. The moves themselves run against real
servers in tests/functional (growth, shrink, host replacement under a writing client) and
in the lab."""

import importlib.util
from pathlib import Path

import pytest
from salt.exceptions import CommandExecutionError

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("redis_slots", ROOT / "_utils" / "redis_slots.py")
slots_mod = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(slots_mod)


def masters(*counts):
    """Masters m0, m1... holding consecutive slots, ``counts`` of them each."""
    result, start = [], 0
    for number, count in enumerate(counts):
        result.append({"id": f"m{number}", "slots": list(range(start, start + count))})
        start += count
    return result


def after(layout, moves):
    """Each master's slots once ``moves`` ran; every move takes slots its source holds."""
    owned = {m["id"]: set(m["slots"]) for m in layout}
    for source, target, slots in moves:
        assert set(slots) <= owned[source], (source, slots[:3])
        owned[source] -= set(slots)
        owned[target] = owned.get(target, set()) | set(slots)
    return owned


def test_a_cluster_formed_as_planned_is_left_alone():
    assert slots_mod.plan(masters(5461, 5462, 5461)) == []
    assert slots_mod.plan(masters(5461, 5462, 5461, 0), use_empty=False) == []


def test_newcomers_get_an_even_share_from_the_masters_above_theirs():
    layout = masters(5461, 5462, 5461, 0, 0, 0)
    moves = slots_mod.plan(layout, use_empty=True)
    owned = after(layout, moves)
    counts = sorted(len(s) for s in owned.values())
    assert sum(counts) == 16384 and counts[-1] - counts[0] <= 1, counts
    # Only what the newcomers get moves, and no slot twice.
    assert {target for _, target, _ in moves} == {"m3", "m4", "m5"}
    assert sum(len(slots) for _, _, slots in moves) == sum(len(owned[m]) for m in ("m3", "m4", "m5"))


def test_a_master_at_weight_0_gives_every_slot_and_takes_none():
    layout = masters(4096, 4096, 4096, 4096)
    moves = slots_mod.plan(layout, weights={"m0": 0, "m1": 0})
    owned = after(layout, moves)
    assert owned["m0"] == owned["m1"] == set()
    assert sorted(len(owned[m]) for m in ("m2", "m3")) == [8192, 8192]
    assert all(source in ("m0", "m1") for source, _, _ in moves)


def test_within_two_percent_of_its_share_nothing_moves():
    assert slots_mod.plan(masters(4050, 4150, 4134, 4050)) == []
    assert slots_mod.plan(masters(3900, 4300, 4184, 4000)) != []


def test_nobody_left_to_serve_the_slots_is_refused():
    with pytest.raises(CommandExecutionError, match="weight 0"):
        slots_mod.plan(masters(8192, 8192), weights={"m0": 0, "m1": 0})
