"""
Minion ids that are FQDNs: controller `it8` of the YAML is the minion `it8.lab.example`
(its id's first label), for the pillar and for every runner. Such a host joins the running
cluster, `redis.orchestrate` targets it by that id, `salt-run redis_cluster.remove_node`
takes it out by that id, a second one (`it9.lab.example`) by its IP, every key written
before kept and no "unclosed ..." warning printed; a name that is neither a controller nor
a member exits 1.

Runs on the session lab as earlier tests left it (three masters, or six nodes with
replicas after test_replicas.py): the YAML only gains these two hosts, and is restored
after; their minions are switched off and their keys deleted at the end.
"""

import pytest
import yaml
from lab.hosts import read_hosts
from lab.saltconf import minion_settings
from support.cluster import cluster_client, wait_cluster_ok
from support.lab import SUBNET, assert_no_password, host_output, node_client, wait_for_minions
from support.states import state_by_id

pytestmark = pytest.mark.integration

FQDN_HOSTS = {"it8": f"{SUBNET}.18", "it9": f"{SUBNET}.19"}


def minion_id(host):
    return f"{host}.lab.example"


def write_with(deployment_file, original, enabled):
    """The YAML the test started with, plus the hosts of ``enabled`` ({host: services.redis})."""
    document = yaml.safe_load(original)
    document["nodes"]["controllers"] += [{"hostname": host, "ip_address": FQDN_HOSTS[host], "services": {"redis": on}}
                                         for host, on in enabled.items()]
    deployment_file.write_text(yaml.safe_dump(document))


def members():
    """The ``ip:port`` of every node the cluster knows (as it2, always a member, sees them)."""
    lines = node_client("it2").execute_command("CLUSTER", "NODES").splitlines()
    return {line.split()[1].split("@")[0] for line in lines}


def run_clean(salt_run_cli, *args):
    """``salt-run ARGS`` whose output holds neither the password nor a Salt "unclosed ..." warning."""
    result = salt_run_cli.run(*args)
    output = result.stdout + result.stderr
    assert_no_password(output, f"salt-run {' '.join(args)}")
    assert "unclosed" not in output, output
    return result


@pytest.fixture
def fqdn_lab(first_apply, salt_master, lab_hosts, deployment_file, restore_deployment):
    """``boot(host)``: the host booted with minion id ``<host>.lab.example`` (the YAML must
    list it). At the end: those minions off, their keys deleted (the YAML is restored)."""
    assert first_apply.returncode == 0
    lab = lab_hosts[0]
    ports = {"master_port": salt_master.config["ret_port"], "publish_port": salt_master.config["publish_port"]}

    def settings(name, bridge):
        extra = {"id": minion_id(name)} if name in FQDN_HOSTS else {}
        return {**minion_settings(name, bridge, **ports), **extra}

    booted = []

    def boot(host):
        lab.ensure_hosts(read_hosts(deployment_file), settings)
        booted.append(host)

    yield boot
    for host in booted:
        lab.kill(host)
        salt_master.salt_key_cli().run("-d", minion_id(host), "-y")


def test_fqdn_minions_join_are_orchestrated_and_removed_by_id_and_by_ip(
    fqdn_lab, salt_cli, salt_run_cli, lab_hosts, deployment_file
):
    lab = lab_hosts[0]
    original = deployment_file.read_text()
    staying = [c["hostname"] for c in yaml.safe_load(original)["nodes"]["controllers"]
               if (c.get("services") or {}).get("redis")]
    wait_cluster_ok(staying)
    writer = cluster_client()
    keys = {f"fqdn:{n}": str(n) for n in range(300)}
    for key, value in keys.items():
        writer.set(key, value)
    writer.close()

    def keys_kept():
        reader = cluster_client(["it2"])
        try:
            return dict(zip(keys, reader.mget_nonatomic(list(keys)))) == keys
        finally:
            reader.close()

    for host, removed_by, enabled in (("it8", minion_id("it8"), {}), ("it9", FQDN_HOSTS["it9"], {"it8": False})):
        write_with(deployment_file, original, {**enabled, host: True})
        fqdn_lab(host)
        wait_for_minions(salt_cli, [minion_id(host)])

        grown = salt_cli.run("state.apply", "redis", minion_tgt="*")

        assert grown.returncode == 0, grown.stdout
        assert state_by_id(grown, minion_id(host), "redis-cluster-formed")["result"] is True
        assert f"{FQDN_HOSTS[host]}:6379" in members()
        if host == "it8":
            # redis.orchestrate targets the controller by its minion's real id.
            shown = run_clean(salt_run_cli, "state.orchestrate_show_sls", "redis.orchestrate")
            assert shown.returncode == 0, shown.stdout
            assert minion_id("it8") in shown.stdout and "redis-every-node-has-its-minion" not in shown.stdout

        write_with(deployment_file, original, {**enabled, host: False})
        removed = run_clean(salt_run_cli, "redis_cluster.remove_node", f"node={removed_by}")

        assert removed.returncode == 0, removed.stdout
        assert removed.data["retcode"] == 0
        assert removed.data["keys_before"] == removed.data["keys_after"] >= len(keys)
        assert f"{minion_id(host)}: redis-server stopped and disabled" in removed.data["actions"]
        wait_cluster_ok(staying)
        assert f"{FQDN_HOSTS[host]}:6379" not in members()
        assert host_output(lab, host, "systemctl", "is-active", "redis-server") == "inactive"
        assert keys_kept()

    again = run_clean(salt_run_cli, "redis_cluster.remove_node", f"node={minion_id('it9')}")
    assert again.returncode == 0 and "nothing to do" in again.data["comment"], again.stdout


def test_remove_node_of_an_unknown_name_exits_1(first_apply, salt_run_cli):
    assert first_apply.returncode == 0
    result = run_clean(salt_run_cli, "redis_cluster.remove_node", "node=nosuchhost")
    assert result.returncode == 1, result.stdout
    assert result.data["retcode"] == 1
    assert result.data["comment"].startswith("nosuchhost is neither a controller of "), result.data["comment"]
    assert "nor a member of the cluster (expected the address of one: " in result.data["comment"]
