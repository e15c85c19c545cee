"""
TLS-only Redis Cluster from bare hosts, on a lab of its own (three Redis hosts, its own
salt-master): with `cache.redis.tls: {issue: true}` one `salt '*' state.apply redis` has the
master's CA issue each host its certificate and forms a cluster that speaks TLS only, its
bus too; the plain port refuses; `redis-cli --tls` answers; health, the Nagios script and a
backup set and the exporter work over TLS; the host's key is root's and the redis group's, and never in any
output. A renewed certificate is served without a restart (new serial, same run_id). TLS
dropped and set again switches the formed cluster live both ways, under a client writing.
"""

import os
import shutil

import pytest
import redis
import yaml
from redis.cluster import ClusterNode, RedisCluster
from support.lab import (
    PASSWORD,
    REDIS_PORT,
    assert_no_password,
    boot_hosts,
    host_file,
    host_output,
    host_run,
    lab_of_its_own,
    master_of_its_own,
    wait_for_minions,
)
from support.leaks import Secrets, Watch, deployment_secrets, everything_seen, report
from support.loaders import utils_dunder
from support.metrics import scrape
from support.states import state_by_id, states_with_changes
from support.tls import BothWaysWriter, certificates, file_serial, served_serial
from support.waits import wait_until

listens_as = utils_dunder(["redis_common"])["redis_common.listens_as"]

pytestmark = pytest.mark.integration

SUBNET = "10.213.19"
HOSTS = {f"tl{n}": f"{SUBNET}.{10 + n}" for n in range(1, 4)}
CA_FILE = "/etc/redis-tls/ca.crt"


def deployment(tls=True, **settings):
    tls_settings = {"tls": {"issue": True}} if tls else {}
    return {
        "cache": {"redis": {"password": "${REDIS_PASSWORD}", "host_baseline": "report", **tls_settings, **settings}},
        "nodes": {"controllers": [{"hostname": h, "ip_address": ip, "services": {"redis": True}}
                                  for h, ip in HOSTS.items()]},
    }


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory):
    with lab_of_its_own(tmp_path_factory, "rtls", deployment()) as own_lab:
        yield own_lab


@pytest.fixture(scope="module")
def tls_master(salt_factories, tls_lab):
    with master_of_its_own(salt_factories, tls_lab, "tl-master") as master:
        yield master


@pytest.fixture(scope="module")
def cli(tls_master, tls_lab):
    lab, _, config = tls_lab
    boot_hosts(lab, tls_master, config)
    salt_cli = tls_master.salt_cli(timeout=600)
    wait_for_minions(salt_cli, list(HOSTS))
    return salt_cli


@pytest.fixture(scope="module")
def first_apply(cli):
    return cli.run("state.apply", "redis", minion_tgt="*")


@pytest.fixture(scope="module")
def ca_file(first_apply, tls_lab, tmp_path_factory):
    """The deployment CA's certificate, as the hosts hold it."""
    copy = tmp_path_factory.mktemp("ca") / "ca.crt"
    shutil.copyfile(host_file(tls_lab[0], "tl1", CA_FILE), copy)
    return str(copy)


def tls_client(host, ca_file, **options):
    return redis.Redis(host=HOSTS[host], port=REDIS_PORT, password=PASSWORD, socket_timeout=5, decode_responses=True,
                       ssl=True, ssl_ca_certs=ca_file, **options)


def test_bare_hosts_form_a_tls_only_cluster_with_certificates_salt_issued(first_apply, cli, tls_lab, ca_file):
    lab = tls_lab[0]
    assert first_apply.returncode == 0, first_apply.stdout
    assert_no_password(first_apply.stdout, "the first apply's output")
    assert "PRIVATE KEY" not in first_apply.stdout
    for host in HOSTS:
        # The certificate names the host's address: hostname checking on.
        client = tls_client(host, ca_file, ssl_check_hostname=True)
        wait_until(lambda client=client: client.cluster("INFO")["cluster_state"] == "ok", 60, f"{host} cluster ok")
        assert int(client.cluster("INFO")["cluster_slots_assigned"]) == 16384
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=HOSTS[host], port=REDIS_PORT, password=PASSWORD, socket_timeout=3).ping()
        assert host_output(lab, host, "stat", "-c", "%a %U:%G", "/etc/redis-tls/redis.key") == "640 root:redis"
        pong = host_run(lab, host, "redis-cli", "--no-auth-warning", "--tls", "--cacert", CA_FILE, "-h", HOSTS[host],
                        "ping", auth=True)
        assert pong.stdout.strip() == "PONG", pong.stdout + pong.stderr
    # The cluster bus speaks TLS: the nodes agree through it, and a cluster client works.
    cluster = RedisCluster(startup_nodes=[ClusterNode(ip, REDIS_PORT) for ip in HOSTS.values()], password=PASSWORD,
                           decode_responses=True, ssl=True, ssl_ca_certs=ca_file)
    for number in range(300):
        cluster.set(f"tls:{number}", number)
    assert [cluster.get(f"tls:{n}") for n in range(300)] == [str(n) for n in range(300)]
    cluster.close()

    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []


def test_health_the_nagios_script_and_a_backup_set_over_tls(first_apply, cli, tls_master, tls_lab, ca_file):
    health = cli.run("redis_cluster.health", minion_tgt="*")
    for host in HOSTS:
        assert (health.data[host]["status"], health.data[host]["code"]) == ("OK", 0), health.data[host]
    script = host_run(tls_lab[0], "tl2", "/usr/local/bin/redis_health")
    assert script.returncode == 0 and "Cluster: OK" in script.stdout.splitlines(), script.stdout + script.stderr
    run = tls_master.salt_run_cli(timeout=600).run("redis_backup.run", "type=rdb")
    assert run.returncode == 0, run.stdout
    assert run.data["status"] == "complete" and sorted(run.data["nodes"]) == sorted(HOSTS), run.data
    assert "PRIVATE KEY" not in run.stdout


def test_a_renewed_certificate_is_served_without_a_restart(first_apply, cli, tls_master, tls_lab, ca_file):
    lab, _, config = tls_lab
    before = served_serial(HOSTS["tl1"], REDIS_PORT, ca_file)
    run_id = tls_client("tl1", ca_file).info("server")["run_id"]
    # The master's CA issues a new certificate once the stored one is due: here, it is gone.
    store = certificates.store_for(tls_master.config["cachedir"], str(config))
    os.unlink(os.path.join(store, "hosts", "tl1.crt"))

    renewed = cli.run("state.apply", "redis", minion_tgt="tl1")

    assert renewed.returncode == 0, renewed.stdout
    reload = state_by_id(renewed, None, "redis-server-serves-the-renewed-certificate")
    assert reload["result"] is True and reload["changes"], reload
    after = served_serial(HOSTS["tl1"], REDIS_PORT, ca_file)
    assert after == file_serial(host_file(lab, "tl1", "/etc/redis-tls/redis.crt")) != before
    assert tls_client("tl1", ca_file).info("server")["run_id"] == run_id, "no restart"
    assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []


def speaks(host):
    return listens_as(HOSTS[host], REDIS_PORT, 3)


def cluster_ok_everywhere(ca_file, tls):
    options = {"ssl": True, "ssl_ca_certs": ca_file} if tls else {}
    for ip in HOSTS.values():
        info = redis.Redis(host=ip, port=REDIS_PORT, password=PASSWORD, socket_timeout=3, decode_responses=True,
                           **options).cluster("INFO")
        if info["cluster_state"] != "ok" or int(info["cluster_slots_assigned"]) != 16384:
            return False
    return True


def test_the_formed_cluster_switches_to_plain_tcp_and_back_live_with_no_write_refused(
        first_apply, cli, tls_lab, ca_file):
    """cache.redis.tls dropped, then set again, on the formed cluster under a client that
    speaks both: each `state.apply` switches every node live (one CONFIG SET, no restart), the
    cluster bus follows, and no acknowledged write is lost."""
    lab, _, config = tls_lab
    run_ids = {h: tls_client(h, ca_file).info("server")["run_id"] for h in HOSTS}
    # The writer's keys live on tl1's slots (a hash tag), so that one node takes every write.
    owner = tls_client("tl1", ca_file)
    tag = next(t for t in range(1000) if owner.cluster("KEYSLOT", f"{{{t}}}") <= 5460
               and owner.cluster("COUNTKEYSINSLOT", owner.cluster("KEYSLOT", f"{{{t}}}")) == 0)
    writer = BothWaysWriter(f"{{{tag}}}:switch", HOSTS["tl1"], REDIS_PORT, PASSWORD, ca_file)
    writer.start()
    try:
        wait_until(lambda: writer.acknowledged, 30, "writes before the switch")
        config.write_text(yaml.safe_dump(deployment(tls=False)))
        to_plain = cli.run("state.apply", "redis", minion_tgt="*")
        assert to_plain.returncode == 0, to_plain.stdout
        for host in HOSTS:
            switched = state_by_id(to_plain, host, "redis-server-runs-the-managed-settings")
            assert switched["changes"]["protocol"] == {"old": "TLS", "new": "plain TCP"}, switched
            assert speaks(host) == "plain", host
        wait_until(lambda: cluster_ok_everywhere(ca_file, tls=False), 60, "cluster ok over plain TCP")
        pong = host_run(lab, "tl2", "redis-cli", "--no-auth-warning", "-h", HOSTS["tl2"], "ping", auth=True)
        assert pong.stdout.strip() == "PONG", pong.stdout + pong.stderr
        assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []
        seen = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) > seen + 20, 30,
                   lambda: f"writes over plain TCP (writer: {writer.errors}, refused for {writer.refusals}s)")

        config.write_text(yaml.safe_dump(deployment()))
        to_tls = cli.run("state.apply", "redis", minion_tgt="*")
        assert to_tls.returncode == 0, to_tls.stdout
        for host in HOSTS:
            assert speaks(host) == "tls", host
        wait_until(lambda: cluster_ok_everywhere(ca_file, tls=True), 60, "cluster ok over TLS again")
        seen = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) > seen + 20, 30,
                   lambda: f"writes over TLS again (writer: {writer.errors}, refused for {writer.refusals}s)")
    finally:
        config.write_text(yaml.safe_dump(deployment()))
        writer.finish()
    # plain (its first try) -> TLS -> plain -> TLS
    assert writer.errors == [] and writer.switches >= 3, (writer.errors, writer.switches, writer.refusals)
    assert {h: tls_client(h, ca_file).info("server")["run_id"] for h in HOSTS} == run_ids, "no restart"
    stored = owner.mget([f"{{{tag}}}:switch:{n}" for n in writer.acknowledged])
    assert stored == [str(n) for n in writer.acknowledged], "every acknowledged write is there"
    assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []
    # Each node's own file starts it as it runs now: a restart comes back over TLS, in the cluster.
    assert host_run(lab, "tl3", "systemctl", "restart", "redis-server").returncode == 0
    wait_until(lambda: speaks("tl3") == "tls" and cluster_ok_everywhere(ca_file, tls=True), 60,
               "tl3 back over TLS, cluster ok")


def key_body(pem):
    """The longest base64 line of a PEM private key: in every encoding a leak could take."""
    return max((line for line in pem.splitlines() if "-----" not in line), key=len)


def test_no_private_key_on_any_channel_through_renewals_and_a_backup_set(
        first_apply, cli, tls_master, tls_lab, event_listener):
    lab, _, config = tls_lab
    store = certificates.store_for(tls_master.config["cachedir"], str(config))
    known = deployment_secrets(deployment())
    keys = {f"TLS key of {host}": key_body(host_file(lab, host, "/etc/redis-tls/redis.key").read_text())
            for host in HOSTS}
    with open(os.path.join(store, "ca.key"), encoding="utf-8") as handle:
        keys["the CA's key"] = key_body(handle.read())
    secrets = Secrets({**known.values, **keys}, known.allowed, known.backup_dirs)
    for host in HOSTS:  # every host's certificate is renewed by the next apply
        os.unlink(os.path.join(store, "hosts", f"{host}.crt"))
    results = {}
    with Watch(event_listener, lab, list(HOSTS), tls_master, secrets) as watch:
        results["state.apply redis"] = cli.run("state.apply", "redis", minion_tgt="*")
        results["salt-run redis_backup.run"] = tls_master.salt_run_cli(timeout=600).run("redis_backup.run", "type=rdb")
        results["pillar.items"] = cli.run("pillar.items", minion_tgt="*")
    findings = everything_seen(watch, results, lab, list(HOSTS), tls_master, secrets)
    assert not findings, "LEAK (product code): " + report(findings)
    assert results["state.apply redis"].returncode == 0, results["state.apply redis"].stdout
    assert results["salt-run redis_backup.run"].data["status"] == "complete"


def test_the_exporter_reads_each_node_over_tls(first_apply, cli, tls_lab):
    _, _, config = tls_lab
    config.write_text(yaml.safe_dump(deployment(monitoring={"exporter": True})))
    try:
        applied = cli.run("state.apply", "redis", minion_tgt="*")
        assert applied.returncode == 0, applied.stdout
        for host, ip in HOSTS.items():
            wait_until(lambda ip=ip: scrape(ip).get("redis_up") == "1", 30, f"{host}'s exporter reading its node")
            assert scrape(ip).get("redis_cluster_state") == "1"
    finally:
        config.write_text(yaml.safe_dump(deployment()))
    assert cli.run("state.apply", "redis", minion_tgt="*").returncode == 0
