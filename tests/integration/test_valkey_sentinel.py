"""
`cache.redis.server: valkey` in Sentinel mode on three bare Debian 13 hosts (a lab of its
own, its own salt-master): two Valkey 8.1 servers and a witness that runs valkey-sentinel only.
One `salt '*' state.apply redis` forms the pair and its three Sentinels; the next apply changes
nothing. A dead master host (`lab kill`) fails over with every write the replica confirmed
(WAIT 1) kept; the old master boots back as a replica and the next apply changes nothing. A
backup set restores every key.
"""

import shutil

import pytest
from support.lab import (
    REDIS_PORT,
    SENTINEL_PORT,
    booted_cli,
    host_output,
    lab_of_its_own,
    master_of_its_own,
    password_forms,
    redis_client,
)
from support.pair_drills import backup_set_restores_every_key, dead_master_host_fails_over
from support.sentinel import PairView, WaitWriter
from support.states import states_with_changes
from support.waits import wait_until

pytestmark = pytest.mark.integration

SUBNET = "10.213.35"
SERVERS = {"vs1": f"{SUBNET}.11", "vs2": f"{SUBNET}.12"}
WITNESS = ("vs3", f"{SUBNET}.13")
ALL = {**SERVERS, WITNESS[0]: WITNESS[1]}
# Valkey 8.1 refuses `"` and `\` in a password (see test_valkey_cluster.py).
PASSWORD = "valkey's sentinel #8"


def deployment():
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}, "lab": {"os": "debian13"}}
                   for h, ip in SERVERS.items()]
    controllers.append({"hostname": WITNESS[0], "ip_address": WITNESS[1], "services": {"redis": False},
                        "lab": {"os": "debian13"}})
    cache_redis = {"password": "${REDIS_PASSWORD}", "host_baseline": "report", "server": "valkey",
                   "sentinel": {"down_after_ms": 2000, "failover_timeout_ms": 10000, "witnesses": [WITNESS[0]]}}
    return {"cache": {"redis": cache_redis}, "nodes": {"controllers": controllers}}


@pytest.fixture(scope="module")
def valkey_lab(tmp_path_factory):
    if shutil.which("debootstrap") is None:
        pytest.fail("integration prerequisite missing: the debootstrap command (run `make setup` as root)")
    with lab_of_its_own(tmp_path_factory, "rvks", deployment()) as own_lab:
        yield own_lab


@pytest.fixture(scope="module")
def valkey_master(salt_factories, valkey_lab):
    with master_of_its_own(salt_factories, valkey_lab, "vks-master", password=PASSWORD) as master:
        yield master


@pytest.fixture(scope="module")
def cli(valkey_master, valkey_lab):
    return booted_cli(valkey_master, valkey_lab, ALL)


@pytest.fixture(scope="module")
def first_apply(cli):
    return cli.run("state.apply", "redis", minion_tgt="*")


def server(host):
    return redis_client(SERVERS[host], REDIS_PORT, password=PASSWORD)


def sentinel(host):
    return redis_client(ALL[host], SENTINEL_PORT, password=PASSWORD)


def current_master():
    return next(h for h in SERVERS if server(h).info("replication")["role"] == "master")


def sentinels_agree_on(host):
    return all(sentinel(h).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[0] == SERVERS[host]
               and len(sentinel(h).execute_command("SENTINEL", "SENTINELS", "mymaster")) == 2 for h in ALL)


def test_bare_debian_13_hosts_form_a_valkey_sentinel_pair_with_a_witness(first_apply, cli, valkey_lab):
    lab = valkey_lab[0]
    assert first_apply.returncode == 0, first_apply.stdout
    assert not any(form in first_apply.stdout for form in password_forms(PASSWORD))
    for host in SERVERS:
        assert server(host).info("server")["server_name"] == "valkey"
    assert current_master() == "vs1"
    wait_until(lambda: server("vs2").info("replication")["master_link_status"] == "up", 30, "vs2 replicating")
    wait_until(lambda: sentinels_agree_on("vs1"), 30, "the three Sentinels agree on vs1 and know each other")
    # The witness runs Valkey's Sentinel only.
    assert host_output(lab, "vs3", "systemctl", "is-active", "valkey-sentinel").strip() == "active"
    assert host_output(lab, "vs3", "systemctl", "is-active", "valkey-server").strip() != "active"
    assert "sentinel monitor mymaster" in host_output(lab, "vs3", "cat", "/etc/valkey/sentinel.conf")

    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == [], [(m, s["__id__"], s["comment"]) for m, states in again.data.items()
                                              for s in states.values() if s["changes"]]


def test_a_dead_master_host_fails_over_keeping_every_confirmed_write(first_apply, cli, valkey_lab):
    dead_master_host_fails_over(valkey_lab[0], cli, PairView(SERVERS, ALL, PASSWORD), "vks")


def test_a_rolling_restart_fails_the_valkey_master_over_first_and_loses_no_confirmed_write(
        first_apply, cli, valkey_master):
    old = current_master()
    runs = {h: server(h).info("server")["run_id"] for h in SERVERS}
    writer = WaitWriter([(ip, SENTINEL_PORT) for ip in ALL.values()], PASSWORD, "vksroll")
    writer.start()
    wait_until(lambda: len(writer.acknowledged) > 50, 30, "the writer writes")

    rolled = valkey_master.salt_run_cli(timeout=600).run("redis_deployment.rolling_restart")

    count = len(writer.acknowledged)
    wait_until(lambda: len(writer.acknowledged) > count + 20, 30, lambda: f"the writer writes on: {writer.errors}")
    writer.finish()
    assert rolled.returncode == 0, rolled.stdout
    new = current_master()
    assert new != old
    assert all(server(h).info("server")["run_id"] != runs[h] for h in SERVERS), "every server restarted"
    assert writer.errors == [] and writer.missing(server(new)) == []
    assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []


def test_a_backup_set_restores_every_key(first_apply, cli, valkey_master):
    backup_set_restores_every_key(valkey_master, PairView(SERVERS, ALL, PASSWORD), "vks")
