"""`salt-run redis_deployment.replace_hosts` (a lab of its own): a 3-node Redis 7.0 cluster on
Debian 12 hosts moves onto three bare Debian 13 hosts running Valkey 8.1 while a cluster client
writes: every acknowledged key is there afterwards, the old hosts' Redis is stopped and
disabled, a second run changes nothing, and once the YAML drops the old hosts the apply changes
nothing. Moving back (Valkey 8.1 -> Redis 7.0 on a Debian 12 host) is refused before anything
changes."""

import shutil

import pytest
import yaml
from support.cluster import ClusterWriter, slots_served
from support.lab import (
    REDIS_PORT,
    boot_hosts,
    booted_cli,
    host_output,
    host_run,
    lab_of_its_own,
    master_of_its_own,
    redis_client,
    wait_for_minions,
)
from support.states import states_with_changes
from support.waits import wait_until

pytestmark = pytest.mark.integration

SUBNET = "10.213.39"
PASSWORD = "replace's pass #3"  # Valkey 8.1 refuses `"` and `\` (tests/unit/test_deployment_server.py)
# Each group of hosts: addresses, distribution, server.
OLD = {"old1": f"{SUBNET}.11", "old2": f"{SUBNET}.12", "old3": f"{SUBNET}.13"}
NEW = {"new1": f"{SUBNET}.21", "new2": f"{SUBNET}.22", "new3": f"{SUBNET}.23"}
BACK = {"back1": f"{SUBNET}.31"}  # a Debian 12 host that would take Valkey's slots back
GROUPS = {"old": (OLD, "debian12", "redis"), "new": (NEW, "debian13", "valkey"), "back": (BACK, "debian12", "redis")}


def deployment(*groups, server="redis"):
    """The YAML listing ``groups`` (names of GROUPS); hosts whose server is not ``server``
    keep theirs in server_by_host."""
    controllers, by_host = [], {}
    for group in groups:
        hosts, os_name, own = GROUPS[group]
        for host, ip in hosts.items():
            controllers.append({"hostname": host, "ip_address": ip, "services": {"redis": True},
                                "lab": {"os": os_name}})
            if own != server:
                by_host[host] = own
    settings = {"password": "${REDIS_PASSWORD}", "host_baseline": "report", "server": server}
    if by_host:
        settings["server_by_host"] = by_host
    return {"cache": {"redis": settings}, "nodes": {"controllers": controllers}}


def replace(master, old, new):
    replaced = master.salt_run_cli(timeout=1800).run(
        "redis_deployment.replace_hosts", f"old={','.join(old)}", f"new={','.join(new)}")
    print("\n".join((replaced.data or {}).get("progress") or [replaced.stdout]))  # shown when it fails
    return replaced


@pytest.fixture(scope="module")
def replacement_lab(tmp_path_factory):
    if shutil.which("debootstrap") is None:
        pytest.fail("integration prerequisite missing: the debootstrap command (run `make setup` as root)")
    with lab_of_its_own(tmp_path_factory, "rrepl", deployment("old")) as own_lab:
        yield own_lab


@pytest.fixture(scope="module")
def replacement_master(salt_factories, replacement_lab):
    with master_of_its_own(salt_factories, replacement_lab, "repl-master", password=PASSWORD) as master:
        yield master


@pytest.fixture(scope="module")
def cli(replacement_master, replacement_lab):
    return booted_cli(replacement_master, replacement_lab, OLD)


def node(address):
    return redis_client(address, REDIS_PORT, password=PASSWORD)


def test_a_redis_7_cluster_moves_onto_debian_13_valkey_hosts_under_writes(cli, replacement_lab, replacement_master):
    lab, _, config = replacement_lab
    formed = cli.run("state.apply", "redis", minion_tgt="*")
    assert formed.returncode == 0, formed.stdout
    config.write_text(yaml.safe_dump(deployment("old", "new", server="valkey")))
    boot_hosts(lab, replacement_master, config)
    wait_for_minions(cli, list(NEW))
    writer = ClusterWriter("repl", hosts=list(OLD), addresses=OLD | NEW, password=PASSWORD, pause=0.002)
    writer.start()
    try:
        wait_until(lambda: writer.written >= 200, 30, "200 writes acknowledged")
        replaced = replace(replacement_master, OLD, NEW)
        wait_until(lambda: writer.written >= 200 + 100, 30, "writes go on after the replacement")
    finally:
        writer.finish()
    assert replaced.returncode == 0, replaced.stdout
    assert replaced.data["ok"] is True, replaced.data
    assert "now remove old1, old2, old3 from" in replaced.data["comment"]
    assert PASSWORD not in replaced.stdout

    for host, address in NEW.items():
        info = node(address).info("server")
        assert info["server_name"] == "valkey", (host, info)
    assert sum(slots_served(node(a)) for a in NEW.values()) == 16384
    for host in OLD:
        assert host_output(lab, host, "systemctl", "is-active", "redis-server").strip() == "inactive"
        assert host_output(lab, host, "systemctl", "is-enabled", "redis-server").strip() == "disabled"
    cluster = node(NEW["new1"]).execute_command("CLUSTER", "INFO")
    assert "cluster_state:ok" in cluster and "cluster_known_nodes:3" in cluster, cluster
    assert writer.errors == []
    assert writer.read_back("new2") == writer.acknowledged_keys()

    again = replace(replacement_master, OLD, NEW)
    assert again.returncode == 0 and "nothing to move" in again.data["comment"], again.stdout
    # The YAML still lists the old hosts: a state run refuses to take one back.
    refused = cli.run("state.apply", "redis", minion_tgt="old1")
    assert refused.returncode != 0
    assert any("taken out of the deployment by replace_hosts" in (s.get("comment") or "")
               for s in refused.data.values()), refused.stdout

    config.write_text(yaml.safe_dump(deployment("new", server="valkey")))
    settled = cli.run("state.apply", "redis", minion_tgt="new*")
    assert settled.returncode == 0, settled.stdout
    quiet = cli.run("state.apply", "redis", minion_tgt="new*")
    assert quiet.returncode == 0, quiet.stdout
    assert states_with_changes(quiet) == []


def test_moving_back_onto_an_older_redis_is_refused_before_anything_changes(
        cli, replacement_lab, replacement_master):
    lab, _, config = replacement_lab
    config.write_text(yaml.safe_dump(deployment("new", "back", server="valkey")))
    boot_hosts(lab, replacement_master, config)
    wait_for_minions(cli, list(BACK))
    before = {a: slots_served(node(a)) for a in NEW.values()}

    refused = replace(replacement_master, ["new1"], BACK)

    assert refused.returncode != 0
    comment = refused.data["comment"]
    assert comment.startswith("nothing changed: ") and "slots would move from new1 (valkey 8.1." in comment
    assert "to back1 (redis 7.0." in comment and "cannot load it" in comment, comment
    assert {a: slots_served(node(a)) for a in NEW.values()} == before
    # No state ran there: Salt's config for its server was never written.
    assert host_run(lab, "back1", "test", "-e", "/etc/redis-salt/redis-server.conf").returncode != 0
