"""
Growing and shrinking the running cluster: a fourth host joins and gets slots while a
client writes, then `salt-run redis_cluster.remove_node` takes it out again, no key lost.
Then cluster mode with replicas (`replicas_per_master: 1`): three more bare hosts join the
running cluster as the plan's replicas; a master's host loses power, its replica takes
over with no acknowledged write lost; the old master comes back as a replica, and the
next apply changes nothing (Salt never moves roles back to the plan). Runs last: it
grows the session's lab to 7 hosts.
"""

import time

import pytest
import yaml
from lab.hosts import read_hosts
from lab.saltconf import minion_settings
from support.cluster import ClusterWriter, cluster_client, cluster_info, cluster_ok
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
        "cache": {"redis": {"password": "${REDIS_PASSWORD}", **redis_settings}},
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
    assert formed["it5"]["result"] is True and "cluster formed by it1" in formed["it5"]["comment"]
    assert writer.errors == [] and writer.written > 50
    assert role("it5") == "master"
    owned = sum(last - first + 1 for first, last in redis_view_slots("it5"))
    assert 4096 - 200 <= owned <= 4096 + 200
    events = master_events(event_listener, salt_master, "redis/cluster/*", fired_after, count=2, timeout=60)
    assert [tag for tag, _ in events] == ["redis/cluster/node-added", "redis/cluster/rebalanced"]
    assert events[0][1]["host"] == "it5" and events[1][1]["slots_moved_to"] == {"it5": owned}
    assert writer.read_back("it2") == writer.acknowledged()

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
    assert writer.read_back("it2") == writer.acknowledged()
    again = salt_cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    twice = salt_run_cli.run("redis_cluster.remove_node", "node=it5")
    assert twice.returncode == 0 and "nothing to do" in twice.data["comment"]

    # The replicas stage below starts from bare hosts again.
    salt_master.salt_key_cli().run("-d", "it5", "-y")
    lab.rebuild("it5", lambda name, bridge: minion_settings(name, bridge, **ports))


def redis_view_slots(host):
    """The slot ranges ``host`` serves, from its own CLUSTER NODES line."""
    line = next(line for line in node_client(host).execute_command("CLUSTER", "NODES").splitlines() if "myself" in line)
    ranges = []
    for item in line.split()[8:]:
        if not item.startswith("["):
            first, _, last = item.partition("-")
            ranges.append((int(first), int(last or first)))
    return ranges


@pytest.fixture(scope="module")
def six_node_cluster(first_apply, salt_master, salt_cli, lab_hosts, deployment_file):
    lab, _, _ = lab_hosts
    write_deployment(deployment_file, dict.fromkeys(REPLICAS, True), replicas_per_master=1,
                     cluster_node_timeout_ms=2000)
    ports = {"master_port": salt_master.config["ret_port"], "publish_port": salt_master.config["publish_port"]}
    lab.ensure_hosts(read_hosts(deployment_file), lambda name, bridge: minion_settings(name, bridge, **ports))
    wait_for_minions(salt_cli, list(REPLICAS))
    applied = salt_cli.run("state.apply", "redis", minion_tgt="*")
    return applied


def test_bare_hosts_join_the_running_cluster_as_the_plans_replicas(six_node_cluster):
    assert six_node_cluster.returncode == 0, six_node_cluster.stdout
    wait_until(lambda: cluster_ok(ALL_REDIS), 30, "cluster ok on 6 nodes")
    for replica, master in zip(REPLICAS, REDIS_HOSTS):
        replication = node_client(replica).info("replication")
        assert replication["role"] == "slave"
        assert replication["master_host"] == REDIS_HOSTS[master]
        # The first full sync takes a moment after CLUSTER REPLICATE.
        wait_until(lambda: node_client(replica).info("replication")["master_link_status"] == "up", 30,
                   f"{replica}'s link to {master} up")
    assert "cluster_known_nodes:6" in cluster_info("it1")


def test_a_dead_masters_replica_takes_over_and_nothing_is_reverted(six_node_cluster, lab_hosts, salt_cli):
    lab = lab_hosts[0]
    writer = cluster_client(decode_responses=False)
    acknowledged = []
    for number in range(300):
        key = f"order:{number}"
        writer.set(key, number)
        if key_slot_owner(writer, key) == REDIS_HOSTS["it1"]:
            # WAIT 1: the replica has it before the power cut.
            writer.get_redis_connection(writer.get_node_from_key(key)).execute_command("WAIT", 1, 2000)
            acknowledged.append(key)
    writer.close()
    assert acknowledged

    lab.kill("it1")
    wait_until(lambda: role("it5") == "master", 60, "it5 promoted")
    wait_until(lambda: cluster_ok([h for h in ALL_REDIS if h != "it1"]), 60, "cluster ok without it1")
    reader = cluster_client(["it2"], decode_responses=False)
    assert [reader.get(key) for key in acknowledged] == [str(k.split(":")[1]).encode() for k in acknowledged]
    reader.close()

    lab.boot("it1")
    wait_for_minions(salt_cli, ["it1"])
    wait_until(lambda: role("it1") == "slave" and node_client("it1").info("replication")["master_host"]
               == ALL_REDIS["it5"], 60, "it1 back as a replica of it5")
    wait_until(lambda: cluster_ok(ALL_REDIS), 30, "cluster ok on 6 nodes")

    again = salt_cli.run("state.apply", "redis", minion_tgt="*")

    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    assert role("it1") == "slave" and role("it5") == "master"


def key_slot_owner(cluster, key):
    return cluster.get_node_from_key(key).host
