"""
Cluster mode with replicas (`replicas_per_master: 1`): three more bare hosts join the
running cluster as the plan's replicas; a master's host loses power, its replica takes
over with no acknowledged write lost; the old master comes back as a replica, and the
next apply changes nothing (Salt never moves roles back to the plan). Runs last: it
grows the session's lab to 7 hosts.
"""

import time

import pytest
import redis
import yaml
from conftest import PASSWORD, PLAIN_HOST, REDIS_HOSTS, SUBNET, minion_settings, read_hosts, wait_for_minions
from redis.cluster import ClusterNode, RedisCluster

pytestmark = pytest.mark.integration

REPLICAS = {"it5": f"{SUBNET}.15", "it6": f"{SUBNET}.16", "it7": f"{SUBNET}.17"}
ALL_REDIS = {**REDIS_HOSTS, **REPLICAS}


def client(host):
    return redis.Redis(host=ALL_REDIS[host], port=6379, password=PASSWORD, socket_timeout=5, decode_responses=True)


def role(host):
    return client(host).info("replication")["role"]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.5)


def cluster_ok(hosts):
    return all("cluster_state:ok" in client(h).execute_command("CLUSTER", "INFO") for h in hosts)


@pytest.fixture(scope="module")
def six_node_cluster(first_apply, salt_master, salt_cli, lab_hosts, deployment_file):
    lab, _, _ = lab_hosts
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}} for h, ip in REDIS_HOSTS.items()]
    controllers.append({"hostname": PLAIN_HOST[0], "ip_address": PLAIN_HOST[1], "services": {"redis": False}})
    controllers += [{"hostname": h, "ip_address": ip, "services": {"redis": True}} for h, ip in REPLICAS.items()]
    deployment_file.write_text(yaml.safe_dump({
        "cache": {"redis": {"password": "${REDIS_PASSWORD}", "replicas_per_master": 1,
                            "cluster_node_timeout_ms": 2000}},
        "nodes": {"controllers": controllers},
    }))
    ports = {"master_port": salt_master.config["ret_port"], "publish_port": salt_master.config["publish_port"]}
    lab.ensure_hosts(read_hosts(deployment_file), lambda name, bridge: minion_settings(name, bridge, **ports))
    wait_for_minions(salt_cli, list(REPLICAS))
    applied = salt_cli.run("state.apply", "redis", minion_tgt="*")
    return applied


def test_bare_hosts_join_the_running_cluster_as_the_plans_replicas(six_node_cluster):
    assert six_node_cluster.returncode == 0, six_node_cluster.stdout
    wait_until(lambda: cluster_ok(ALL_REDIS), 30, "cluster ok on 6 nodes")
    for replica, master in zip(REPLICAS, REDIS_HOSTS):
        replication = client(replica).info("replication")
        assert replication["role"] == "slave"
        assert replication["master_host"] == REDIS_HOSTS[master]
        # The first full sync takes a moment after CLUSTER REPLICATE.
        wait_until(lambda: client(replica).info("replication")["master_link_status"] == "up", 30,
                   f"{replica}'s link to {master} up")
    assert "cluster_known_nodes:6" in client("it1").execute_command("CLUSTER", "INFO")


def test_a_dead_masters_replica_takes_over_and_nothing_is_reverted(six_node_cluster, lab_hosts, salt_cli):
    lab = lab_hosts[0]
    writer = RedisCluster(startup_nodes=[ClusterNode(ip, 6379) for ip in REDIS_HOSTS.values()],
                          password=PASSWORD, socket_timeout=5)
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
    reader = RedisCluster(startup_nodes=[ClusterNode(ALL_REDIS["it2"], 6379)], password=PASSWORD, socket_timeout=5)
    assert [reader.get(key) for key in acknowledged] == [str(k.split(":")[1]).encode() for k in acknowledged]
    reader.close()

    lab.boot("it1")
    wait_for_minions(salt_cli, ["it1"])
    wait_until(lambda: role("it1") == "slave" and client("it1").info("replication")["master_host"]
               == ALL_REDIS["it5"], 60, "it1 back as a replica of it5")
    wait_until(lambda: cluster_ok(ALL_REDIS), 30, "cluster ok on 6 nodes")

    again = salt_cli.run("state.apply", "redis", minion_tgt="*")

    assert again.returncode == 0, again.stdout
    assert [v["__id__"] for states in again.data.values() for v in states.values() if v["changes"]] == []
    assert role("it1") == "slave" and role("it5") == "master"


def key_slot_owner(cluster, key):
    return cluster.get_node_from_key(key).host
