"""
Growing and shrinking the running cluster: a fourth host joins and gets slots while a
client writes, then `salt-run redis_cluster.remove_node` takes it out again, no key lost.
(Cluster mode with replicas, from bare hosts, has a lab of its own: test_cluster_shapes.py.)
"""

import time

import pytest
import yaml
from lab.hosts import read_hosts
from lab.saltconf import minion_settings
from support.cluster import ClusterWriter, cluster_info, cluster_ok
from support.events import master_events
from support.lab import (
    PLAIN_HOST,
    REDIS_HOSTS,
    SPARE_HOSTS,
    assert_no_password,
    host_output,
    node_client,
    role,
    wait_for_minions,
)
from support.states import state_by_id, states_with_changes
from support.waits import wait_until

pytestmark = pytest.mark.integration

REPLICAS = SPARE_HOSTS
ALL_REDIS = {**REDIS_HOSTS, **REPLICAS}


def write_deployment(deployment_file, extra, **redis_settings):
    """The session's controllers plus ``extra`` ({host: services.redis}) from REPLICAS."""
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}} for h, ip in REDIS_HOSTS.items()]
    controllers.append({"hostname": PLAIN_HOST[0], "ip_address": PLAIN_HOST[1], "services": {"redis": False}})
    controllers += [{"hostname": h, "ip_address": REPLICAS[h], "services": {"redis": on}} for h, on in extra.items()]
    deployment_file.write_text(yaml.safe_dump({
        "cache": {"redis": {"password": "${REDIS_PASSWORD}", "host_baseline": "report", **redis_settings}},
        "nodes": {"controllers": controllers},
    }))


def test_a_fourth_host_joins_under_a_writing_client_and_remove_node_takes_it_out(
    first_apply, salt_master, salt_cli, salt_run_cli, lab_hosts, deployment_file, event_listener
):
    lab = lab_hosts[0]
    assert first_apply.returncode == 0
    write_deployment(deployment_file, {"it5": True})
    ports = {"master_port": salt_master.config["ret_port"], "publish_port": salt_master.config["publish_port"]}
    lab.ensure_hosts(read_hosts(deployment_file), lambda name, bridge: minion_settings(name, bridge, **ports))
    wait_for_minions(salt_cli, ["it5"])
    fired_after = time.time()
    writer = ClusterWriter("grow")
    writer.start()

    grown = salt_cli.run("state.apply", "redis", minion_tgt="*")
    writer.finish()

    assert grown.returncode == 0, grown.stdout
    formed = {host: state_by_id(grown, host, "redis-cluster-formed") for host in ("it1", "it5")}
    assert formed["it1"]["comment"].startswith("grew the cluster of it1, it2, it3, it5"), formed["it1"]["comment"]
    # it1 reports the change; it5 may find itself met already when its own state runs.
    # it5's own state either waited for it1's growth or, once the rebalance had given it slots
    # (between two slot moves nothing is open), found the cluster healthy already: both are right.
    assert formed["it5"]["result"] is True, formed["it5"]
    assert "cluster formed by it1" in formed["it5"]["comment"] or formed["it5"]["comment"].startswith(
        "cluster ok: 4 nodes"), formed["it5"]
    assert writer.errors == [] and writer.written > 50
    assert role("it5") == "master"
    owned = sum(last - first + 1 for first, last in redis_view_slots("it5"))
    assert 4096 - 200 <= owned <= 4096 + 200
    events = master_events(event_listener, salt_master, "redis/cluster/*", fired_after, count=2, timeout=60)
    assert [tag for tag, _ in events] == ["redis/cluster/node-added", "redis/cluster/rebalanced"]
    assert events[0][1]["host"] == "it5" and events[1][1]["slots_moved_to"] == {"it5": owned}
    assert writer.read_back("it2") == writer.acknowledged_keys()

    # The YAML drops it5: a state run refuses on every staying node and names the runner.
    write_deployment(deployment_file, {"it5": False})
    refused = salt_cli.run("state.apply", "redis", minion_tgt="it[1-3]")
    assert refused.returncode != 0
    for host in REDIS_HOSTS:
        state = state_by_id(refused, host, "redis-cluster-formed")
        assert state["result"] is False
        assert f"salt-run redis_cluster.remove_node node={REPLICAS['it5']}" in state["comment"]
    assert "cluster_known_nodes:4" in cluster_info("it1")

    removed = salt_run_cli.run("redis_cluster.remove_node", "node=it5")

    assert removed.returncode == 0, removed.stdout
    assert_no_password(removed.stdout, "the runner's output")
    assert removed.data, removed.stdout
    # (Earlier tests' keys are in the cluster too.)
    assert removed.data["keys_before"] == removed.data["keys_after"] >= writer.written
    assert "it5: redis-server stopped and disabled" in removed.data["actions"]
    wait_until(lambda: cluster_ok(REDIS_HOSTS), 30, "cluster ok on 3 nodes")
    assert "cluster_known_nodes:3" in cluster_info("it1")
    assert host_output(lab, "it5", "systemctl", "is-active", "redis-server") == "inactive"
    assert writer.read_back("it2") == writer.acknowledged_keys()
    again = salt_cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    twice = salt_run_cli.run("redis_cluster.remove_node", "node=it5")
    assert twice.returncode == 0 and "nothing to do" in twice.data["comment"]


def redis_view_slots(host):
    """The slot ranges ``host`` serves, from its own CLUSTER NODES line."""
    line = next(line for line in node_client(host).execute_command("CLUSTER", "NODES").splitlines() if "myself" in line)
    ranges = []
    for item in line.split()[8:]:
        if not item.startswith("["):
            first, _, last = item.partition("-")
            ranges.append((int(first), int(last or first)))
    return ranges
