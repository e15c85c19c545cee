"""_utils/redis_servers.py ``upgrade_plan``: which nodes ``salt-run redis_deployment.upgrade``
upgrades, and the refusals it makes before anything changes (a version not offered, a
downgrade, servers that would not load each other's RDB format afterwards)."""

import pytest
from salt.exceptions import SaltInvocationError
from support.loaders import load_file, load_runner, ROOT

servers = load_file("utils_redis_servers_upgrade", ROOT / "_utils" / "redis_servers.py")

OLD, NEW = "5:8.0.2-3+deb13u3", "5:8.0.2-3+deb13u3+upgrade1"


def node(name, installed=OLD, target=NEW, cmp=1, version="8.0.2", server="redis", selected=True, witness=False,
         unavailable=None):
    return {"name": name, "server": server, "installed": installed, "target": target, "cmp": cmp,
            "version": version, "selected": selected, "witness": witness, "unavailable": unavailable}


def test_the_server_version_in_a_package_version():
    assert servers.upstream("5:8.0.2-3+deb13u3+upgrade1") == "8.0.2"
    assert servers.upstream("8.1.1+dfsg1-3+deb13u3") == "8.1.1"
    assert servers.upstream("5:7.0.15-1~deb12u10") == "7.0.15"
    assert servers.upstream(None) == ""


def test_every_node_with_a_newer_version_is_upgraded_witness_included():
    plan = servers.upgrade_plan([node("a"), node("b"), node("w", witness=True, version=None)])
    assert plan == {"upgrade": ["a", "b", "w"], "refused": []}


def test_nodes_left_out_or_already_newest_are_not_upgraded():
    plan = servers.upgrade_plan([node("a", selected=False), node("b", installed=NEW, cmp=0)])
    assert plan == {"upgrade": [], "refused": []}


def test_a_downgrade_is_refused_naming_node_and_both_versions():
    plan = servers.upgrade_plan([node("a", installed=NEW, target=OLD, cmp=-1), node("b")])
    assert plan["upgrade"] == []
    assert plan["refused"] == [f"a: {OLD} is older than the installed {NEW}: a downgrade; an older server may not "
                               "load what the newer one wrote (restore a backup onto a rebuilt node instead)"]


def test_a_version_not_offered_is_refused():
    plan = servers.upgrade_plan([node("a", unavailable="redis-server 9 is not offered"), node("b")])
    assert plan == {"upgrade": [], "refused": ["a: redis-server 9 is not offered"]}


def test_a_newer_format_on_some_nodes_only_is_refused():
    # a would go to Redis 8.0 (RDB 12) while b stays at 7.0 (RDB 10): after any failover to a,
    # b could not load what its master sends.
    plan = servers.upgrade_plan([node("a", installed="5:7.0.15-1", target="5:8.0.2-3", version="7.0.15"),
                                 node("b", installed="5:7.0.15-1", target="5:8.0.2-3", version="7.0.15",
                                      selected=False)])
    assert plan["upgrade"] == []
    assert len(plan["refused"]) == 1
    assert plan["refused"][0].startswith("after the upgrade, data would move from a (redis 8.0.2 (RDB 12)) to b "
                                         "(redis 7.0.15 (RDB 10)), cannot load it: every server must load")


def test_targets_that_part_ways_are_refused_even_when_each_is_an_upgrade():
    # Valkey 8.1 (RDB 11) and Redis 8.0 (RDB 12): Redis loads 11, Valkey does not load 12.
    plan = servers.upgrade_plan([node("a", server="valkey", installed="8.0.1-1", target="8.1.1-1", version="8.0.1"),
                                 node("b", installed="5:7.0.15-1", target="5:8.0.2-3", version="7.0.15")])
    assert plan["upgrade"] == []
    assert any("from b (redis 8.0.2 (RDB 12)) to a (valkey 8.1.1 (RDB 11))" in why for why in plan["refused"])


def test_every_node_to_the_same_newer_format_together_is_allowed():
    plan = servers.upgrade_plan([node("a", installed="5:7.0.15-1", target="5:8.0.2-3", version="7.0.15"),
                                 node("b", installed="5:7.0.15-1", target="5:8.0.2-3", version="7.0.15")])
    assert plan == {"upgrade": ["a", "b"], "refused": []}


def test_the_witness_format_does_not_matter():
    plan = servers.upgrade_plan([node("a"), node("b"), node("w", witness=True, version=None, target="5:9.9.9-1")])
    assert plan["refused"] == [] and "w" in plan["upgrade"]


def test_the_runner_refuses_a_version_that_is_no_package_version_before_reading_anything():
    runner = load_runner("redis_deployment")
    runner.__opts__ = {}  # shape() would need the master's: it must not be reached
    for bad in ("1.0; rm -rf /", "latest", "", "5:8.0 2"):
        with pytest.raises(SaltInvocationError, match="version: expected a package version such as"):
            runner.upgrade(version=bad)
