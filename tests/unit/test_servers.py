"""_utils/redis_servers.py: which RDB format each server writes and which it loads (the
one-way doors between Redis 7.0, Redis 8.0, Valkey 8.1 and Valkey 9, as measured here)."""

import pytest

from support.loaders import load_file, ROOT

servers = load_file("utils_redis_servers", ROOT / "_utils" / "redis_servers.py")

REDIS_70, REDIS_80 = ("redis", "7.0.15"), ("redis", "8.0.2")
VALKEY_81, VALKEY_9 = ("valkey", "8.1.1"), ("valkey", "9.1.2")


@pytest.mark.parametrize("source, target, moves", [
    # FACTS.md (MIGRATE between a Redis 7.0, a Valkey 8.1 and a Redis 8.0 node).
    (REDIS_70, REDIS_80, True),
    (REDIS_70, VALKEY_81, True),
    (VALKEY_81, REDIS_80, True),
    (VALKEY_81, REDIS_70, False),
    (REDIS_80, REDIS_70, False),
    (REDIS_80, VALKEY_81, False),
    # Valkey 9 writes VALKEY080: no Redis loads it; it loads Redis's formats up to 11 only.
    (VALKEY_9, REDIS_80, False),
    (REDIS_70, VALKEY_9, True),
    (REDIS_80, VALKEY_9, False),
    (VALKEY_81, VALKEY_9, True),
    (REDIS_70, REDIS_70, True),
])
def test_data_moves_only_towards_a_server_that_loads_its_format(source, target, moves):
    source_node = dict(servers.node(*source), name="a")
    target_node = dict(servers.node(*target), name="b")
    refused = servers.move_refused(source_node, target_node, "slot 42's keys")
    assert (refused is None) is moves, refused
    if not moves:
        assert refused.startswith(f"slot 42's keys would move from a ({source[0]} {source[1]} (RDB ")
        assert "b (" in refused and "cannot load it" in refused


def test_an_unknown_version_is_refused_as_unknown():
    refused = servers.move_refused(dict(servers.node(*REDIS_70), name="a"),
                                   dict(servers.node("redis", "9.9.0"), name="b"))
    assert "does not know" in refused


def test_the_formats_measured_here():
    assert [servers.rdb_format(*n) for n in (REDIS_70, REDIS_80, VALKEY_81, VALKEY_9)] == [10, 12, 11, 80]
    assert servers.rdb_format("redis", "6.2.14") == 9


def test_a_live_server_is_known_by_its_own_name_and_version():
    valkey = {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.1.1"}
    assert servers.running(valkey) == ("valkey", "8.1.1")
    assert servers.running({"redis_version": "7.0.15"}) == ("redis", "7.0.15")


@pytest.mark.parametrize("first, second, refused", [
    (("redis", "8.0.2"), ("valkey", "8.1.1"), True),
    (("valkey", "9.1.2"), ("redis", "8.2.0"), True),
    (("redis", "7.0.15"), ("valkey", "8.1.1"), False),
    (("redis", "8.0.2"), ("valkey", "7.2.4"), False),
    (("redis", "8.0.2"), ("redis", "7.0.15"), False),
    (("redis", None), ("valkey", "8.1.1"), False),
])
def test_redis_8_and_valkey_8_never_share_a_cluster(first, second, refused):
    why = servers.bus_refused(dict(servers.node(*first), name="a"), dict(servers.node(*second), name="b"))
    assert bool(why) is refused, why
    if refused:
        assert why.startswith("a (") and "must never share a cluster" in why and "secret" in why
