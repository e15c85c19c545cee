"""Cluster host replacement in a lab of its own (`salt-run redis_deployment.replace_hosts`),
as test_cluster_replacement*.py run it: the YAML of groups of hosts, the runner's call, the
module's fixtures, and the move of a formed cluster onto new hosts under a writing client
with what must hold afterwards.

``groups``: ``{group name: (hosts {name: IP}, lab.os, server)}``."""

import shutil
import time

import pytest
import yaml

from support.cluster import ClusterWriter, slots_served
from support.lab import (
    REDIS_PORT,
    boot_hosts,
    booted_cli,
    host_output,
    lab_of_its_own,
    master_of_its_own,
    pillar_versions,
    redis_client,
    wait_for_minions,
)
from support.states import states_with_changes
from support.waits import wait_until

SERVICES = {"redis": "redis-server", "valkey": "valkey-server"}


def deployment(groups, *names, server="redis"):
    """The YAML listing the groups ``names``; hosts whose server is not ``server`` keep theirs
    in server_by_host."""
    controllers, by_host = [], {}
    for group in names:
        hosts, os_name, own = groups[group]
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
    """``salt-run redis_deployment.replace_hosts old=... new=...``; its progress (or output) is
    printed, with its wall time."""
    started = time.monotonic()
    replaced = master.salt_run_cli(timeout=1800).run(
        "redis_deployment.replace_hosts", f"old={','.join(old)}", f"new={','.join(new)}")
    print("\n".join((replaced.data or {}).get("progress") or [replaced.stdout]))  # shown when it fails
    print(f"replace_hosts took {time.monotonic() - started:.1f}s")
    return replaced


def lab_fixtures(lab_name, master_id, groups, first, password):
    """The module fixtures ``replacement_lab`` (a lab named ``lab_name`` listing the group
    ``first``), ``replacement_master`` and ``cli`` (``first``'s hosts booted, their minions
    answering): assign them to module names of the same names."""

    @pytest.fixture(scope="module", name="replacement_lab")
    def replacement_lab(tmp_path_factory):
        if shutil.which("debootstrap") is None:
            pytest.fail("integration prerequisite missing: the debootstrap command (run `make setup` as root)")
        with lab_of_its_own(tmp_path_factory, lab_name, deployment(groups, first, server=groups[first][2])) as own:
            yield own

    @pytest.fixture(scope="module", name="replacement_master")
    def replacement_master(salt_factories, replacement_lab):  # pylint: disable=redefined-outer-name
        with master_of_its_own(salt_factories, replacement_lab, master_id, password=password) as master:
            yield master

    @pytest.fixture(scope="module", name="cli")
    def cli(replacement_master, replacement_lab):  # pylint: disable=redefined-outer-name
        return booted_cli(replacement_master, replacement_lab, groups[first][0])

    return replacement_lab, replacement_master, cli


def running_server(address, password):
    """``(server, version)`` the server at ``address`` says it is (Valkey's own version, not
    the redis_version it reports for clients)."""
    info = redis_client(address, REDIS_PORT, password=password).info("server")
    server = info.get("server_name", "redis")
    return server, info.get(f"{server}_version", info["redis_version"])


def move_under_writes(cli, own_lab, master, groups, password, old="old", new="new", refused_back=True):
    """The cluster formed on the group ``old`` (one apply), the group ``new`` listed and booted,
    then ``replace_hosts`` while a cluster client writes: the run succeeds; the new hosts hold
    every slot and every acknowledged key, with no client error; the old hosts' server is
    stopped and disabled; a second run has nothing to move; (``refused_back``: one more apply)
    a state run refuses an old host still in the YAML; and once the YAML drops the old hosts,
    one apply settles and the next changes nothing. Returns the run's result."""
    lab, _, config = own_lab
    (old_hosts, _, old_server), (new_hosts, _, server) = groups[old], groups[new]
    formed = cli.run("state.apply", "redis", minion_tgt="*")
    assert formed.returncode == 0, formed.stdout
    servers = {host: running_server(address, password)[1] for host, address in old_hosts.items()}
    config.write_text(yaml.safe_dump(deployment(groups, old, new, server=server)))
    boot_hosts(lab, master, config)
    wait_for_minions(cli, list(new_hosts))
    writer = ClusterWriter("repl", hosts=list(old_hosts), addresses=old_hosts | new_hosts, password=password,
                           pause=0.002)
    writer.start()
    try:
        wait_until(lambda: writer.written >= 200, 30, "200 writes acknowledged")
        replaced = replace(master, old_hosts, new_hosts)
        wait_until(lambda: writer.written >= 200 + 100, 30, "writes go on after the replacement")
    finally:
        writer.finish()
    assert replaced.returncode == 0, replaced.stdout
    assert replaced.data["ok"] is True, replaced.data
    assert f"now remove {', '.join(old_hosts)} from" in replaced.data["comment"]
    assert password not in replaced.stdout

    assert sum(slots_served(redis_client(a, REDIS_PORT, password=password)) for a in new_hosts.values()) == 16384
    for host in old_hosts:
        assert host_output(lab, host, "systemctl", "is-active", SERVICES[old_server]).strip() == "inactive"
        assert host_output(lab, host, "systemctl", "is-enabled", SERVICES[old_server]).strip() == "disabled"
    first = next(iter(new_hosts))
    cluster = redis_client(new_hosts[first], REDIS_PORT, password=password).execute_command("CLUSTER", "INFO")
    assert "cluster_state:ok" in cluster and f"cluster_known_nodes:{len(new_hosts)}" in cluster, cluster
    assert writer.errors == []
    assert writer.read_back(first) == writer.acknowledged_keys()

    again = replace(master, old_hosts, new_hosts)
    assert again.returncode == 0 and "nothing to move" in again.data["comment"], again.stdout
    servers.update({host: running_server(address, password)[1] for host, address in new_hosts.items()})
    shown = pillar_versions(cli, first)
    assert shown == servers, f"pillar redis:versions {shown}, the servers say {servers}"

    if refused_back:  # The YAML still lists the old hosts: a state run refuses to take one back.
        refused = cli.run("state.apply", "redis", minion_tgt=next(iter(old_hosts)))
        assert refused.returncode != 0
        assert any("taken out of the deployment by replace_hosts" in (s.get("comment") or "")
                   for s in refused.data.values()), refused.stdout

    config.write_text(yaml.safe_dump(deployment(groups, new, server=server)))
    targets = ",".join(new_hosts)
    settled = cli.run("-L", "state.apply", "redis", minion_tgt=targets)
    assert settled.returncode == 0, settled.stdout
    quiet = cli.run("-L", "state.apply", "redis", minion_tgt=targets)
    assert quiet.returncode == 0, quiet.stdout
    assert states_with_changes(quiet) == []
    return replaced


def refused_move(cli, own_lab, master, groups, password, old, new, listed=("new",), server="redis"):
    """The group ``new`` listed beside the groups ``listed`` (YAML server ``server``) and
    booted, then ``replace_hosts old=old new=<new's hosts>``: it must fail saying nothing
    changed, with every listed host's slots as they were. Returns its comment."""
    lab, _, config = own_lab
    config.write_text(yaml.safe_dump(deployment(groups, *listed, new, server=server)))
    boot_hosts(lab, master, config)
    new_hosts = groups[new][0]
    wait_for_minions(cli, list(new_hosts))
    addresses = [a for group in listed for a in groups[group][0].values()]

    def slots():
        return {a: slots_served(redis_client(a, REDIS_PORT, password=password)) for a in addresses}

    before = slots()
    refused = replace(master, old, new_hosts)
    assert refused.returncode != 0, refused.stdout
    assert refused.data["comment"].startswith("nothing changed: "), refused.data["comment"]
    assert slots() == before
    return refused.data["comment"]
