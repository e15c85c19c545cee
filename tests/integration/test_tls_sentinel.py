"""
TLS-only Sentinel pair from bare hosts, on a lab of its own (two Redis hosts and a witness,
its own salt-master): with `cache.redis.tls: {issue: true}` one `salt '*' state.apply redis`
has the master's CA issue each host (the witness too) its certificate; the servers replicate
over TLS, the three Sentinels speak TLS to clients, to the servers and to each other; the
plain ports refuse. Health, the Nagios script and a backup set work over TLS. Renewed
certificates: the servers serve theirs without a restart, the Sentinels (which cannot
reload) are restarted one at a time, so that two of three always answer. A dead master
host (`lab kill`) fails over with every acknowledged write kept, and the next apply changes
nothing. TLS dropped and set again switches the formed pair both ways under a client writing:
servers live, Sentinels one at a time.
"""

import concurrent.futures
import os
import shutil
import threading

import pytest
import redis
import yaml
from redis.sentinel import Sentinel
from support.lab import (
    PASSWORD,
    REDIS_PORT,
    SENTINEL_PORT,
    assert_no_password,
    boot_hosts,
    host_file,
    host_output,
    host_run,
    lab_of_its_own,
    master_of_its_own,
    wait_for_minions,
)
from support.states import state_by_id, states_with_changes
from support.loaders import utils_dunder
from support.tls import BothWaysWriter, certificates, file_serial, served_serial
from support.waits import wait_until

listens_as = utils_dunder(["redis_common"])["redis_common.listens_as"]

pytestmark = pytest.mark.integration

SUBNET = "10.213.21"
SERVERS = {"ts1": f"{SUBNET}.11", "ts2": f"{SUBNET}.12"}
WITNESS = ("ts3", f"{SUBNET}.13")
ALL = {**SERVERS, WITNESS[0]: WITNESS[1]}
CA_FILE = "/etc/redis-tls/ca.crt"
CERT_FILE = "/etc/redis-tls/redis.crt"


def deployment(tls=True):
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}} for h, ip in SERVERS.items()]
    controllers.append({"hostname": WITNESS[0], "ip_address": WITNESS[1], "services": {"redis": False}})
    cache_redis = {"password": "${REDIS_PASSWORD}", "host_baseline": "report", "min_replicas_max_lag": 3,
                   "sentinel": {"down_after_ms": 2000, "failover_timeout_ms": 10000, "witnesses": [WITNESS[0]]}}
    if tls:
        cache_redis["tls"] = {"issue": True}
    return {"cache": {"redis": cache_redis}, "nodes": {"controllers": controllers}}


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory):
    with lab_of_its_own(tmp_path_factory, "rtsen", deployment()) as own_lab:
        yield own_lab


@pytest.fixture(scope="module")
def tls_master(salt_factories, tls_lab):
    with master_of_its_own(salt_factories, tls_lab, "ts-master") as master:
        yield master


@pytest.fixture(scope="module")
def cli(tls_master, tls_lab):
    lab, _, config = tls_lab
    boot_hosts(lab, tls_master, config)
    salt_cli = tls_master.salt_cli(timeout=600)
    wait_for_minions(salt_cli, list(ALL))
    return salt_cli


@pytest.fixture(scope="module")
def first_apply(cli):
    return cli.run("state.apply", "redis", minion_tgt="*")


@pytest.fixture(scope="module")
def ca_file(first_apply, tls_lab, tmp_path_factory):
    """The deployment CA's certificate, as the hosts hold it."""
    copy = tmp_path_factory.mktemp("ca") / "ca.crt"
    shutil.copyfile(host_file(tls_lab[0], "ts3", CA_FILE), copy)
    return str(copy)


def tls_client(host, ca_file, port=REDIS_PORT, timeout=3):
    # The certificate names the host's address: hostname checking on.
    return redis.Redis(host=ALL[host], port=port, password=PASSWORD, socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True, ssl=True, ssl_ca_certs=ca_file,
                       ssl_check_hostname=True)


def sentinel_client(ca_file):
    tls = {"ssl": True, "ssl_ca_certs": ca_file}
    return Sentinel([(ip, SENTINEL_PORT) for ip in ALL.values()], socket_timeout=3,
                    sentinel_kwargs={"password": PASSWORD, "socket_timeout": 3, **tls}, password=PASSWORD,
                    decode_responses=True, **tls)


def master_seen_by(host, ca_file):
    return tls_client(host, ca_file, SENTINEL_PORT).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                                                    "mymaster")[0]


def current_master(ca_file):
    return next(h for h in SERVERS if tls_client(h, ca_file).info("replication")["role"] == "master")


def plain_refused(host, port):
    try:
        redis.Redis(host=ALL[host], port=port, password=PASSWORD, socket_timeout=3).ping()
    except redis.ConnectionError:
        return True
    return False


def test_bare_hosts_form_a_tls_only_sentinel_pair_with_certificates_salt_issued(first_apply, cli, tls_lab, ca_file):
    lab = tls_lab[0]
    assert first_apply.returncode == 0, first_apply.stdout
    assert_no_password(first_apply.stdout, "the first apply's output")
    assert "PRIVATE KEY" not in first_apply.stdout
    assert tls_client("ts1", ca_file).info("replication")["role"] == "master"
    wait_until(lambda: tls_client("ts2", ca_file).info("replication")["master_link_status"] == "up", 30,
               "ts2 replicating over TLS")
    wait_until(lambda: all(master_seen_by(h, ca_file) == SERVERS["ts1"] for h in ALL), 30, "Sentinels agree on ts1")
    # The Sentinels find each other through their hello messages, over TLS.
    wait_until(lambda: all(len(tls_client(h, ca_file, SENTINEL_PORT).execute_command("SENTINEL", "SENTINELS",
                                                                                     "mymaster")) == 2
                           for h in ALL), 30, "every Sentinel knows the two others")
    for host in ALL:
        assert plain_refused(host, SENTINEL_PORT), f"{host}:{SENTINEL_PORT} speaks plain TCP"
        assert host_output(lab, host, "stat", "-c", "%a %U:%G", "/etc/redis-tls/redis.key") == "640 root:redis"
    for host in SERVERS:
        assert plain_refused(host, REDIS_PORT), f"{host}:{REDIS_PORT} speaks plain TCP"
    pong = host_run(lab, "ts3", "redis-cli", "--no-auth-warning", "--tls", "--cacert", CA_FILE, "-h", WITNESS[1],
                    "-p", str(SENTINEL_PORT), "ping", auth=True)
    assert pong.stdout.strip() == "PONG", pong.stdout + pong.stderr
    client = sentinel_client(ca_file).master_for("mymaster")
    client.set("tls:hello", "world")
    assert client.execute_command("WAIT", 1, 2000) == 1
    assert sentinel_client(ca_file).slave_for("mymaster").get("tls:hello") == "world"

    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []


def test_health_the_nagios_script_and_a_backup_set_over_tls(first_apply, cli, tls_master, tls_lab, ca_file):
    health = cli.run("redis_cluster.health", minion_tgt="*")
    for host in ALL:
        assert (health.data[host]["status"], health.data[host]["code"]) == ("OK", 0), health.data[host]
    for host in ("ts2", "ts3"):
        script = host_run(tls_lab[0], host, "/usr/local/bin/redis_health")
        assert script.returncode == 0, script.stdout + script.stderr
    run = tls_master.salt_run_cli(timeout=600).run("redis_backup.run", "type=rdb")
    assert run.returncode == 0, run.stdout
    assert run.data["status"] == "complete", run.data
    assert "PRIVATE KEY" not in run.stdout


class SentinelsAnswering(threading.Thread):
    """How many of the three Sentinels answer over TLS (or, ``either_protocol``, in plain TCP
    or TLS), asked again and again until stopped: ``fewest`` is the lowest count seen."""

    def __init__(self, ca_file, either_protocol=False):
        super().__init__(daemon=True)
        self.ca_file, self.fewest, self.rounds = ca_file, len(ALL), 0
        self.either_protocol = either_protocol
        self.done = threading.Event()

    def answers(self, host):
        if self.either_protocol:
            return listens_as(ALL[host], SENTINEL_PORT, 1) is not None
        try:
            return tls_client(host, self.ca_file, SENTINEL_PORT, timeout=1).ping()
        except redis.RedisError:
            return False

    def run(self):
        # All three asked at the same moment: asked one after the other (each up to a second
        # or two), a round once counted ts1 still starting and then ts2 already stopping for
        # its own restart, which it began only once ts1 answered: never down at once.
        with concurrent.futures.ThreadPoolExecutor(len(ALL)) as pool:
            while not self.done.is_set():
                self.fewest = min(self.fewest, sum(pool.map(self.answers, ALL)))
                self.rounds += 1

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *_):
        self.done.set()
        self.join()


def test_renewed_certificates_servers_reload_and_sentinels_restart_one_at_a_time(
        first_apply, cli, tls_master, tls_lab, ca_file):
    lab, _, config = tls_lab
    run_ids = {h: tls_client(h, ca_file).info("server")["run_id"] for h in SERVERS}
    before = {h: served_serial(ip, SENTINEL_PORT, ca_file) for h, ip in ALL.items()}
    # The master's CA issues new certificates once the stored ones are due: here, they are gone.
    store = certificates.store_for(tls_master.config["cachedir"], str(config))
    for host in ALL:
        os.unlink(os.path.join(store, "hosts", f"{host}.crt"))

    # With the witness's Sentinel down, restarting ts1's would leave one Sentinel of three:
    # refused, and ts1's keeps serving (its renewed file waits for the next apply).
    assert host_run(lab, "ts3", "systemctl", "stop", "redis-sentinel").returncode == 0
    try:
        assert cli.run("state.apply", "redis.tls", minion_tgt="ts1").returncode == 0
        refused = cli.run("redis_sentinel.serve_current_certificate", "timeout=2", minion_tgt="ts1")
        assert "would not hold a majority" in refused.stdout and "(ts2)" in refused.stdout, refused.stdout
        assert served_serial(ALL["ts1"], SENTINEL_PORT, ca_file) == before["ts1"], "ts1's Sentinel was restarted"
    finally:
        assert host_run(lab, "ts3", "systemctl", "start", "redis-sentinel").returncode == 0
    wait_until(lambda: served_serial(ALL["ts3"], SENTINEL_PORT, ca_file), 30, "the witness's Sentinel back")

    with SentinelsAnswering(ca_file) as answering:
        renewed = cli.run("state.apply", "redis", minion_tgt="*")

    assert renewed.returncode == 0, renewed.stdout
    for host, ip in ALL.items():
        on_file = file_serial(host_file(lab, host, CERT_FILE))
        assert served_serial(ip, SENTINEL_PORT, ca_file) == on_file != before[host], f"{host}'s Sentinel"
        restart = state_by_id(renewed, host, "redis-sentinel-serves-the-renewed-certificate")
        assert restart["result"] is True and restart["changes"], restart
        if host in SERVERS:
            assert served_serial(ip, REDIS_PORT, ca_file) == on_file, f"{host}'s server"
            assert tls_client(host, ca_file).info("server")["run_id"] == run_ids[host], f"{host}: no restart"
    assert answering.rounds > 10 and answering.fewest >= 2, (answering.rounds, answering.fewest)
    wait_until(lambda: all(len(tls_client(h, ca_file, SENTINEL_PORT).execute_command("SENTINEL", "SENTINELS",
                                                                                     "mymaster")) == 2
                           for h in ALL), 30, "every Sentinel knows the two others again")
    assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []


def test_the_master_host_dies_and_the_pair_fails_over_over_tls_keeping_every_acknowledged_write(
        first_apply, cli, tls_lab, ca_file):
    lab = tls_lab[0]
    old = current_master(ca_file)
    new = next(h for h in SERVERS if h != old)
    client = sentinel_client(ca_file).master_for("mymaster")
    keys = [f"tls:kill:{n}" for n in range(200)]
    for number, key in enumerate(keys):
        client.set(key, number)
    assert client.execute_command("WAIT", 1, 2000) == 1

    lab.kill(old)

    wait_until(lambda: tls_client(new, ca_file).info("replication")["role"] == "master", 60, f"{new} promoted")
    client = sentinel_client(ca_file).master_for("mymaster")
    wait_until(lambda: client.set("tls:after-failover", "ok"), 30, "a write through the Sentinels")
    assert [client.get(k) for k in keys] == [str(n) for n in range(len(keys))]

    lab.boot(old)
    wait_for_minions(cli, [old])
    wait_until(lambda: tls_client(old, ca_file).info("replication")["role"] == "slave"
               and tls_client(old, ca_file).info("replication")["master_link_status"] == "up", 60,
               f"{old} back as a replica, over TLS")
    new_run = tls_client(new, ca_file).info("server")["run_id"]
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    assert tls_client(new, ca_file).info("server")["run_id"] == new_run and current_master(ca_file) == new


def sentinel_on(host, ca_file, tls):
    options = {"ssl": True, "ssl_ca_certs": ca_file} if tls else {}
    return redis.Redis(host=ALL[host], port=SENTINEL_PORT, password=PASSWORD, socket_timeout=3,
                       decode_responses=True, **options)


def sentinels_ready(ca_file, tls, master):
    """Every Sentinel, in the protocol ``tls`` says, sees ``master``, knows the two others and
    could authorize a failover (CKQUORUM)."""
    for host in ALL:
        sentinel = sentinel_on(host, ca_file, tls)
        if sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[0] != SERVERS[master]:
            return False
        if len(sentinel.execute_command("SENTINEL", "SENTINELS", "mymaster")) != 2:
            return False
        if not str(sentinel.execute_command("SENTINEL", "CKQUORUM", "mymaster")).startswith("OK 3 usable"):
            return False
    return True


def test_the_formed_pair_switches_to_plain_tcp_and_back_with_no_write_refused_one_sentinel_at_a_time(
        first_apply, cli, tls_lab, ca_file):
    """cache.redis.tls dropped, then set again, under a client that speaks both: the servers
    switch live (no restart, no failover), each Sentinel is restarted in the new protocol
    once the servers speak it, one at a time (two of three always answer), and every
    acknowledged write is there."""
    lab, _, config = tls_lab
    master = current_master(ca_file)
    run_ids = {h: tls_client(h, ca_file).info("server")["run_id"] for h in SERVERS}
    writer = BothWaysWriter("switch", ALL[master], REDIS_PORT, PASSWORD, ca_file)
    writer.start()
    try:
        wait_until(lambda: writer.acknowledged, 30, "writes before the switch")
        for tls in (False, True):
            config.write_text(yaml.safe_dump(deployment(tls=tls)))
            with SentinelsAnswering(ca_file, either_protocol=True) as answering:
                switched = cli.run("state.apply", "redis", minion_tgt="*")
            assert switched.returncode == 0, switched.stdout
            timing = {h: {k: state_by_id(switched, h, "redis-sentinel-monitors-the-master").get(k)
                          for k in ("start_time", "duration", "comment")} for h in ALL}
            assert answering.rounds > 10 and answering.fewest >= 2, (tls, answering.rounds, answering.fewest, timing)
            protocol = "tls" if tls else "plain"
            for host in ALL:
                assert listens_as(ALL[host], SENTINEL_PORT, 3) == protocol, (host, "Sentinel")
                monitored = state_by_id(switched, host, "redis-sentinel-monitors-the-master")
                assert monitored["changes"]["protocol"]["new"] == ("TLS" if tls else "plain TCP"), monitored
            for host in SERVERS:
                assert listens_as(ALL[host], REDIS_PORT, 3) == protocol, (host, "server")
            wait_until(lambda tls=tls: sentinels_ready(ca_file, tls, master), 60,
                       f"the Sentinels agree on {master}, know each other and have a quorum ({protocol})")
            assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []
            seen = len(writer.acknowledged)
            wait_until(lambda seen=seen: len(writer.acknowledged) > seen + 20, 30,
                       lambda: f"writes over {protocol} (writer: {writer.errors}, refused for {writer.refusals}s)")
    finally:
        config.write_text(yaml.safe_dump(deployment()))
        writer.finish()
    # plain (its first try) -> TLS -> plain -> TLS
    assert writer.errors == [] and writer.switches >= 3, (writer.errors, writer.switches, writer.refusals)
    assert {h: tls_client(h, ca_file).info("server")["run_id"] for h in SERVERS} == run_ids, "no restart"
    assert current_master(ca_file) == master, "no failover"
    client = tls_client(master, ca_file)
    assert client.execute_command("WAIT", 1, 5000) == 1
    replica = tls_client(next(h for h in SERVERS if h != master), ca_file)
    keys = [f"switch:{n}" for n in writer.acknowledged]
    for stored in (client.mget(keys), replica.mget(keys)):
        assert stored == [str(n) for n in writer.acknowledged], "every acknowledged write is there, on both"
