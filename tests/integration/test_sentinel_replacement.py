"""`salt-run redis_deployment.replace_hosts` in Sentinel mode (a lab of its own): a Redis 7.0
pair and its witness on Debian 12 move onto a Valkey 8.1 pair and witness on Debian 13 while
a Sentinel client writes, each write counted only once the replica confirmed it (WAIT 1):
every confirmed write is on the new master afterwards, the Sentinels name a new host, the old
hosts' server and Sentinel are stopped and disabled, a second run changes nothing, a state run
that still finds an old host refuses it, and once the YAML drops the old hosts the apply
settles and the next one changes nothing."""

import shutil
import time

import pytest
import yaml
from support.lab import (
    SENTINEL_PORT,
    boot_hosts,
    booted_cli,
    host_output,
    lab_of_its_own,
    master_of_its_own,
    wait_for_minions,
)
from support.sentinel import PairView, WaitWriter
from support.states import states_with_changes
from support.waits import wait_until

pytestmark = pytest.mark.integration

SUBNET = "10.213.41"
PASSWORD = "sentinel's move #4"  # Valkey 8.1 refuses `"` and `\` (tests/unit/test_deployment_server.py)
OLD = {"old1": f"{SUBNET}.11", "old2": f"{SUBNET}.12"}
OLD_WITNESS = ("oldw", f"{SUBNET}.13")
NEW = {"new1": f"{SUBNET}.21", "new2": f"{SUBNET}.22"}
NEW_WITNESS = ("neww", f"{SUBNET}.23")
OLD_ALL = {**OLD, OLD_WITNESS[0]: OLD_WITNESS[1]}
NEW_ALL = {**NEW, NEW_WITNESS[0]: NEW_WITNESS[1]}


def deployment(old=True, new=False):
    controllers, witnesses = [], []
    for hosts, witness, lab in ((OLD, OLD_WITNESS, {}), (NEW, NEW_WITNESS, {"lab": {"os": "debian13"}})):
        if (old, new)[hosts is NEW]:
            controllers += [dict({"hostname": h, "ip_address": ip, "services": {"redis": True}}, **lab)
                            for h, ip in hosts.items()]
            controllers.append(dict({"hostname": witness[0], "ip_address": witness[1],
                                     "services": {"redis": False}}, **lab))
            witnesses.append(witness[0])
    settings = {"password": "${REDIS_PASSWORD}", "host_baseline": "report", "mode": "sentinel",
                "sentinel": {"down_after_ms": 2000, "failover_timeout_ms": 10000, "witnesses": witnesses}}
    if new:
        settings["server"] = "valkey"
        if old:
            settings["server_by_host"] = {h: "redis" for h in OLD_ALL}
    return {"cache": {"redis": settings}, "nodes": {"controllers": controllers}}


@pytest.fixture(scope="module")
def pair_lab(tmp_path_factory):
    if shutil.which("debootstrap") is None:
        pytest.fail("integration prerequisite missing: the debootstrap command (run `make setup` as root)")
    with lab_of_its_own(tmp_path_factory, "rsrep", deployment()) as own_lab:
        yield own_lab


@pytest.fixture(scope="module")
def pair_master(salt_factories, pair_lab):
    with master_of_its_own(salt_factories, pair_lab, "srep-master", password=PASSWORD) as master:
        yield master


@pytest.fixture(scope="module")
def cli(pair_master, pair_lab):
    return booted_cli(pair_master, pair_lab, OLD_ALL)


def test_a_redis_7_pair_moves_onto_debian_13_valkey_hosts_keeping_every_confirmed_write(cli, pair_lab, pair_master):
    lab, _, config = pair_lab
    formed = cli.run("state.apply", "redis", minion_tgt="*")
    assert formed.returncode == 0, formed.stdout
    before = PairView(OLD, OLD_ALL, PASSWORD)
    wait_until(lambda: before.sentinels_agree_on("old1"), 60, "the old Sentinels agree on old1")

    config.write_text(yaml.safe_dump(deployment(new=True)))
    boot_hosts(lab, pair_master, config)
    wait_for_minions(cli, list(NEW_ALL))
    writer = WaitWriter([(ip, SENTINEL_PORT) for ip in {**OLD_ALL, **NEW_ALL}.values()], PASSWORD, "srep")
    writer.start()
    try:
        wait_until(lambda: len(writer.acknowledged) >= 100, 30, "100 writes confirmed by a replica")
        started = time.monotonic()
        replaced = pair_master.salt_run_cli(timeout=1800).run(
            "redis_deployment.replace_hosts", "old=old1,old2,oldw", "new=new1,new2,neww")
        seconds = time.monotonic() - started
        count = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) >= count + 50, 60,
                   lambda: f"confirmed writes go on after the replacement: {writer.errors}")
    finally:
        writer.finish()
    # Shown when the test fails (and with -s: docs' runbook quotes it).
    print(f"wall time {seconds:.1f}s, confirmed writes {len(writer.acknowledged)}, longest stall "
          f"{writer.longest_stall():.2f}s\n" + "\n".join((replaced.data or {}).get("progress") or [])
          + "\n" + str((replaced.data or {}).get("comment")))
    assert replaced.returncode == 0, replaced.stdout
    assert replaced.data["ok"] is True, replaced.data
    assert "now remove old1, old2, oldw from" in replaced.data["comment"]
    # The runner's own failover, before any old host stopped (not the Sentinels' after the old master died).
    assert replaced.data["failover"]["new_master"] in NEW, replaced.data
    assert PASSWORD not in replaced.stdout

    after = PairView(NEW, NEW_ALL, PASSWORD)
    master = after.current_master()
    assert after.server(master).info("server")["server_name"] == "valkey"
    wait_until(lambda: after.sentinels_agree_on(master), 30, f"the new Sentinels name {master} and know each other")
    assert writer.errors == []
    assert writer.missing(after.server(master)) == [], "writes a replica confirmed were lost"
    for host in OLD_ALL:
        units = ["redis-sentinel"] + (["redis-server"] if host in OLD else [])
        for unit in units:
            assert host_output(lab, host, "systemctl", "is-active", unit).strip() == "inactive", (host, unit)
            assert host_output(lab, host, "systemctl", "is-enabled", unit).strip() == "disabled", (host, unit)

    again = pair_master.salt_run_cli(timeout=600).run(
        "redis_deployment.replace_hosts", "old=old1,old2,oldw", "new=new1,new2,neww")
    assert again.returncode == 0 and "nothing to move" in again.data["comment"], again.stdout
    # The YAML still lists the old hosts: a state run refuses to start them again.
    refused = cli.run("state.apply", "redis", minion_tgt="old2")
    assert refused.returncode != 0
    assert any("taken out of the deployment by replace_hosts" in (s.get("comment") or "")
               for s in refused.data.values()), refused.stdout
    for unit in ("redis-server", "redis-sentinel"):
        assert host_output(lab, "old2", "systemctl", "is-active", unit).strip() == "inactive", refused.stdout

    config.write_text(yaml.safe_dump(deployment(old=False, new=True)))
    settled = cli.run("state.apply", "redis", minion_tgt="new*")
    assert settled.returncode == 0, settled.stdout
    quiet = cli.run("state.apply", "redis", minion_tgt="new*")
    assert quiet.returncode == 0, quiet.stdout
    assert states_with_changes(quiet) == [], [(m, s["__id__"], s["comment"]) for m, states in quiet.data.items()
                                              for s in states.values() if s["changes"]]
    assert after.current_master() == master
