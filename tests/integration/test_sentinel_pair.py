"""
Sentinel mode on a lab of its own (two Redis hosts and a witness, its own salt-master):
one `salt '*' state.apply redis` from bare hosts gives a replicating pair and three
Sentinels that agree; a changed down_after_ms reaches every Sentinel without a restart;
a stopped server and a dead host both fail over (the witness makes the majority), one
`redis/sentinel/switch-master` event reaches the master's bus, the old master comes back as
a replica, and re-applying changes nothing: Salt never reverts a failover. A partition
shows what `min_replicas_to_write` decides. `salt-run redis_deployment.rolling_restart`
under a client writing with WAIT 1 restarts each server once, the master after SENTINEL
FAILOVER, and loses no acknowledged write.

The whole lab runs with the firewall on (``firewall: true``) from bare hosts: every test
here also shows that members form, replicate, elect and fail over through it, and that an
address that is neither a member nor a client network reaches no Redis or Sentinel port.
"""

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import yaml
from redis.sentinel import Sentinel
from support.drills import partial_backups
from support.events import bus_events, master_events
from support.lab import (
    PASSWORD,
    SENTINEL_PORT,
    assert_no_password,
    boot_hosts,
    host_output,
    host_run,
    lab_of_its_own,
    master_of_its_own,
    redis_client,
    wait_for_minions,
)
from support.metrics import scrape
from support.leaks import Watch, deployment_secrets, everything_seen, report
from support.rolling import RoleWatcher, runner_events
from support.rotation import AlternatingWriter
from support.sentinel import WaitWriter
from support.states import changed_ids, state_by_id, states_with_changes
from support.waits import poll, wait_until

pytestmark = pytest.mark.integration

SUBNET = "10.213.23"
SERVERS = {"st1": f"{SUBNET}.11", "st2": f"{SUBNET}.12"}
WITNESS = ("st3", f"{SUBNET}.13")
ALL = {**SERVERS, WITNESS[0]: WITNESS[1]}
# The lab's bridge (its last free address), where this test's clients come from: the one
# client network. Any other address of the subnet that is no member is dropped.
BRIDGE = f"{SUBNET}.254"
STRANGER = f"{SUBNET}.50"


def deployment(redis_settings=None, **sentinel):
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}} for h, ip in SERVERS.items()]
    controllers.append({"hostname": WITNESS[0], "ip_address": WITNESS[1], "services": {"redis": False}})
    settings = {"down_after_ms": 2000, "failover_timeout_ms": 10000, "witnesses": [WITNESS[0]], **sentinel}
    redis_settings = {"min_replicas_max_lag": 3, **(redis_settings or {})}
    cache_redis = {"password": "${REDIS_PASSWORD}", "host_baseline": "report", "sentinel": settings,
                   "firewall": True, "client_networks": [f"{BRIDGE}/32"], **redis_settings}
    return {"cache": {"redis": cache_redis},
            "nodes": {"controllers": controllers}}


@pytest.fixture(scope="module")
def sentinel_lab(tmp_path_factory):
    with lab_of_its_own(tmp_path_factory, "rpair", deployment()) as own_lab:
        assert own_lab[1] == BRIDGE, f"the lab's bridge is {own_lab[1]}: client_networks names {BRIDGE}"
        yield own_lab


@pytest.fixture(scope="module")
def sentinel_master(salt_factories, sentinel_lab):
    with master_of_its_own(salt_factories, sentinel_lab, "st-master") as master:
        yield master


def boot_until_minions_answer(boot, cli, master, event_listener, minions, timeout=90):
    """``boot()`` (hosts powered on), then until each of ``minions`` answers test.ping. The pings
    start once each minion announced its start on the master's bus (``salt/minion/<id>/start``):
    a ping a minion misses while it still connects costs the whole of that ping's timeout."""
    booted = time.time()
    boot()
    poll(lambda: {event.tag.split("/")[2] for event in bus_events(event_listener, master, "salt/minion/*/start",
                                                                  booted, count=1000, timeout=0)},
         lambda started: set(minions) <= started, timeout)
    wait_for_minions(cli, minions, timeout)


@pytest.fixture(scope="module")
def cli(sentinel_master, sentinel_lab, event_listener):
    lab, _, config = sentinel_lab
    salt_cli = sentinel_master.salt_cli(timeout=600)
    boot_until_minions_answer(lambda: boot_hosts(lab, sentinel_master, config), salt_cli, sentinel_master,
                              event_listener, list(ALL))
    return salt_cli


@pytest.fixture(scope="module")
def first_apply(cli):
    return cli.run("state.apply", "redis", minion_tgt="*")


def server(host, password=PASSWORD):
    return redis_client(ALL[host], password=password, timeout=3)


def sentinel(host, password=PASSWORD):
    return redis_client(ALL[host], SENTINEL_PORT, password=password, timeout=3)


def sentinel_client(password=PASSWORD):
    return Sentinel([(ip, SENTINEL_PORT) for ip in ALL.values()], socket_timeout=3,
                    sentinel_kwargs={"password": password, "socket_timeout": 3}, password=password,
                    decode_responses=True)


def sentinel_answer(host):
    """What the Sentinel on ``host`` says of the master, or why it does not answer."""
    try:
        fields = sentinel(host).execute_command("SENTINEL", "MASTER", "mymaster")
    except redis.RedisError as exc:
        return repr(exc)
    fields = dict(zip(fields[::2], fields[1::2]))
    return f"{fields['ip']} epoch {fields['config-epoch']} {fields['flags']}"


def counts_a_master_down_reply(host):
    """Whether the Sentinel on ``host`` still holds another Sentinel's "the master is down" reply.

    Sentinel keeps such replies for 5 s and counts them towards the quorum of the *next* master
    too: a Sentinel cut off within that time reaches ODOWN alone, starts a failover attempt, and
    if it comes back within that attempt's election window it collects a vote (any Sentinel in an
    older epoch gives one) and fails the healthy master over, promoting whatever replica it saw.
    """
    for entry in sentinel(host).execute_command("SENTINEL", "SENTINELS", "mymaster"):
        fields = dict(zip(entry[::2], entry[1::2]))
        if "master_down" in fields["flags"].split(","):
            return True
    return False


def master_seen_by(host):
    return sentinel(host).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[0]


def current_master(password=PASSWORD):
    return next(h for h in SERVERS if server(h, password).info("replication")["role"] == "master")


def test_bare_hosts_get_a_replicating_pair_and_three_sentinels_that_agree(first_apply, cli, sentinel_lab):
    assert first_apply.returncode == 0, first_apply.stdout
    assert_no_password(first_apply.stdout, "the first apply's output")
    assert server("st1").info("replication")["role"] == "master"
    wait_until(lambda: server("st2").info("replication")["master_link_status"] == "up", 30, "st2 linked")
    assert server("st2").info("replication")["master_host"] == SERVERS["st1"]
    wait_until(lambda: all(master_seen_by(h) == SERVERS["st1"] for h in ALL), 30, "Sentinels agree on st1")
    wait_until(lambda: all(len(sentinel(h).execute_command("SENTINEL", "SENTINELS", "mymaster")) == 2 for h in ALL),
               30, "every Sentinel knows the two others")
    with pytest.raises(redis.AuthenticationError):  # (a client that does not retry: refused at once, not 3 times)
        redis_client(ALL["st3"], SENTINEL_PORT, password=None, timeout=3, reconnect=False).execute_command(
            "SENTINEL", "MASTERS")
    client = sentinel_client().master_for("mymaster")
    client.set("pair:hello", "world")
    assert sentinel_client().slave_for("mymaster").get("pair:hello") in ("world", None)
    assert client.get("pair:hello") == "world"
    assert host_output(sentinel_lab[0], "st3", "systemctl", "is-active", "redis-server") != "active"
    status = cli.run("redis_cluster.status", minion_tgt="st3")
    assert status.data["sentinel"]["master"] == f"{SERVERS['st1']}:6379", status.data

    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []


def connects_from(lab, host, source, address, port):
    """Whether a TCP connection from ``source`` (an address of ``host``) to ``address:port`` opens."""
    probe = ("import socket, sys\ns = socket.socket(); s.settimeout(1); s.bind((sys.argv[1], 0))\n"
             "try:\n    s.connect((sys.argv[2], int(sys.argv[3])))\nexcept OSError:\n    sys.exit(1)")
    return host_run(lab, host, "python3", "-c", probe, source, address, str(port)).returncode == 0


def test_through_the_firewall_members_reach_each_other_and_anyone_else_nothing(first_apply, cli, sentinel_lab):
    lab = sentinel_lab[0]
    assert first_apply.returncode == 0, first_apply.stdout
    for host in ALL:
        assert "redis_salt" in host_output(lab, host, "nft", "list", "tables"), host
    # The witness, a member, reaches the servers and the other Sentinels; the same host from
    # an address that is no member and no client network reaches none of them.
    # Every probe at once: each refused one waits its 1 s for a SYN the firewall dropped.
    probes = [(host, port, source) for host in SERVERS for port in (6379, SENTINEL_PORT)
              for source in (WITNESS[1], STRANGER)]
    host_run(lab, "st3", "ip", "addr", "add", f"{STRANGER}/24", "dev", "eth0", check=True)
    try:
        with ThreadPoolExecutor(len(probes)) as pool:
            opened = dict(zip(probes, pool.map(lambda p: connects_from(lab, "st3", p[2], ALL[p[0]], p[1]), probes)))
        for host in SERVERS:
            for port in (6379, SENTINEL_PORT):
                assert opened[host, port, WITNESS[1]], (host, port)
                assert not opened[host, port, STRANGER], (host, port)
    finally:
        host_run(lab, "st3", "ip", "addr", "del", f"{STRANGER}/24", "dev", "eth0", check=True)
    # Salt's own ports are not Redis's: the minions still answer.
    assert cli.run("test.ping", minion_tgt="st1").data is True


def test_a_healthy_pair_and_its_witness_are_ok_on_every_minion_and_in_the_runners_table(
    first_apply, cli, sentinel_master
):
    answers = cli.run("redis_cluster.health", minion_tgt="*").data
    for host in ALL:
        assert (answers[host]["status"], answers[host]["code"]) == ("OK", 0), answers[host]
    names = {check["name"] for check in answers[WITNESS[0]]["checks"]}
    assert "ping" not in names and {"sentinel_local", "sentinel_agreement", "sentinel_majority"} <= names, names
    for host in SERVERS:
        names = {check["name"] for check in answers[host]["checks"]}
        assert {"ping", "memory", "replication_lag", "sentinel_agreement", "backup_rdb", "backup_aof"} <= names, names
    table = sentinel_master.salt_run_cli(timeout=120).run("redis_deployment.health")
    assert table.returncode == 0 and table.data["status"] == "OK", table.stdout
    assert sorted(table.data["nodes"]) == sorted(ALL)
    jobs = cli.run("schedule.list", "return_yaml=False", minion_tgt="*").data
    assert all(jobs[host]["redis-health"]["function"] == "redis_cluster.health" for host in ALL), jobs


def test_the_health_script_on_the_pair_and_the_witness(first_apply, sentinel_lab):
    lab = sentinel_lab[0]
    outputs = {host: host_run(lab, host, "/usr/local/bin/redis_health", "--verbose") for host in ALL}

    for host, done in outputs.items():
        assert done.returncode == 0, (host, done.stdout, done.stderr)
    for host in SERVERS:
        assert outputs[host].stdout.startswith("OK: Redis is running"), outputs[host].stdout
    witness = outputs[WITNESS[0]].stdout
    assert witness.splitlines()[0] == "OK: Sentinel witness", witness
    assert "OK: sentinel_majority: OK 3 usable Sentinels" in witness, witness


def test_a_stopped_replica_is_critical_on_its_host_in_the_module_the_script_and_the_runner(
    first_apply, cli, sentinel_master, sentinel_lab
):
    lab = sentinel_lab[0]
    master = current_master()
    replica = next(h for h in SERVERS if h != master)
    assert host_run(lab, replica, "systemctl", "stop", "redis-server").returncode == 0
    try:
        module = cli.run("redis_cluster.health", minion_tgt=replica).data
        script = host_run(lab, replica, "/usr/local/bin/redis_health")
        on_master = host_run(lab, master, "/usr/local/bin/redis_health", "--verbose")
        table = sentinel_master.salt_run_cli(timeout=120).run("redis_deployment.health")
    finally:
        assert host_run(lab, replica, "systemctl", "start", "redis-server").returncode == 0
    wait_until(lambda: server(replica).info("replication")["master_link_status"] == "up", 60, "the replica back")

    assert (module["status"], module["code"]) == ("CRITICAL", 2), module
    assert script.returncode == 2 and script.stdout.startswith("CRITICAL: Redis is down: refused"), script.stdout
    assert on_master.returncode == 1, on_master.stdout
    assert "WARNING: replication_lag: master without a connected replica" in on_master.stdout, on_master.stdout
    assert table.returncode == 2 and table.data["nodes"][replica]["status"] == "CRITICAL", table.stdout


def down_after_ms(host):
    """down-after-milliseconds as the Sentinel on ``host`` runs it."""
    master = dict(zip(*[iter(sentinel(host).execute_command("SENTINEL", "MASTER", "mymaster"))] * 2))
    return master["down-after-milliseconds"]


def test_one_apply_brings_the_exporter_to_every_node_and_a_changed_down_after_to_every_sentinel_without_a_restart(
    first_apply, cli, sentinel_lab
):
    """Two changes of the YAML in one apply (and one apply back): the exporter on the servers,
    their Sentinels and the witness, and a changed down_after_ms that reaches every running
    Sentinel. Neither restarts a server or a Sentinel; re-applying changes nothing."""
    _, _, config = sentinel_lab
    sentinel_runs = {h: sentinel(h).info("server")["run_id"] for h in ALL}
    server_runs = {h: server(h).info("server")["run_id"] for h in SERVERS}
    config.write_text(yaml.safe_dump(deployment({"monitoring": {"exporter": True}}, down_after_ms=3000)))
    try:
        applied = cli.run("state.apply", "redis", minion_tgt="*")
        again = cli.run("state.apply", "redis", minion_tgt="*")
        for host, ip in ALL.items():
            wait_until(lambda ip=ip: scrape(ip).get("redis_up") == "1", 30, f"{host}'s exporter answering")
        sentinel_target = f"/scrape?target=redis://127.0.0.1:{SENTINEL_PORT}"
        servers = {host: scrape(ip) for host, ip in SERVERS.items()}
        sentinels = {host: scrape(ip, path=sentinel_target) for host, ip in SERVERS.items()}
        witness = scrape(WITNESS[1])
        down_after = {host: down_after_ms(host) for host in ALL}
        runs = ({h: sentinel(h).info("server")["run_id"] for h in ALL},
                {h: server(h).info("server")["run_id"] for h in SERVERS})
    finally:
        config.write_text(yaml.safe_dump(deployment()))
    off = cli.run("state.apply", "redis", minion_tgt="*")

    assert applied.returncode == 0, applied.stdout
    assert states_with_changes(again) == []
    assert sorted(servers[h].get("redis_connected_slaves") for h in SERVERS) == ["0", "1"], servers
    for metrics in (*sentinels.values(), witness):
        assert metrics.get("redis_up") == "1" and metrics.get("redis_sentinel_masters") == "1", metrics
        assert any(k.startswith("redis_sentinel_master_ok_sentinels") and v == "3" for k, v in metrics.items())
    assert down_after == {host: "3000" for host in ALL}
    assert runs == (sentinel_runs, server_runs)  # no restart, neither for the exporter nor for down_after
    assert off.returncode == 0, off.stdout
    assert {host: down_after_ms(host) for host in ALL} == {host: "2000" for host in ALL}  # the later failovers'


def acknowledged_writes(prefix, count=50):
    client = sentinel_client().master_for("mymaster")
    for number in range(count):
        client.set(f"{prefix}:{number}", number)
    assert client.execute_command("WAIT", 1, 2000) == 1
    return [f"{prefix}:{n}" for n in range(count)]


def kill_the_master_host(lab, prefix):
    """Acknowledged writes, then a power cut of the master's host; returns once the other
    server is promoted and has taken ``{prefix}:after-failover`` through the Sentinels:
    ``(old, new, keys written before, the Sentinel master client)``."""
    old = current_master()
    new = next(h for h in SERVERS if h != old)
    keys = acknowledged_writes(prefix)
    lab.kill(old)
    wait_until(lambda: server(new).info("replication")["role"] == "master", 60, f"{new} promoted")
    client = sentinel_client().master_for("mymaster")
    wait_until(lambda: client.set(f"{prefix}:after-failover", "ok"), 30, "a write through the Sentinel client")
    return old, new, keys, client


def test_a_stopped_master_server_fails_over_with_one_event_and_is_never_reverted(
    first_apply, cli, sentinel_master, sentinel_lab, event_listener
):
    lab = sentinel_lab[0]
    old = current_master()
    new = next(h for h in SERVERS if h != old)
    keys = acknowledged_writes("stopped")
    fired_after, stopped = time.time(), time.monotonic()
    assert host_run(lab, old, "systemctl", "stop", "redis-server").returncode == 0

    promoted = wait_until(lambda: server(new).info("replication")["role"] == "master", 60, f"{new} promoted")
    client = sentinel_client().master_for("mymaster")
    wait_until(lambda: client.set("after:stop", "ok"), 30, "a write through the Sentinel client")
    assert promoted - stopped < 60
    assert [client.get(k) for k in keys] == [str(n) for n in range(len(keys))]
    listening = time.monotonic()  # where `salt-run state.event redis/sentinel/switch-master count=2` would start

    assert host_run(lab, old, "systemctl", "start", "redis-server").returncode == 0
    wait_until(lambda: server(old).info("replication")["role"] == "slave"
               and server(old).info("replication")["master_link_status"] == "up", 60, f"{old} back as a replica")
    new_run = server(new).info("server")["run_id"]
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    assert server(new).info("server")["run_id"] == new_run and current_master() == new
    assert all(master_seen_by(h) == SERVERS[new] for h in ALL)
    # Up to 20 s from `listening` for a second one, as that state.event would wait: the old
    # server's return and the apply above (neither fails anything over) take most of that time.
    window = max(0.0, listening + 20 - time.monotonic())
    events = [data for _, data in master_events(event_listener, sentinel_master, "redis/sentinel/switch-master",
                                                fired_after, count=2, timeout=window)]
    assert len(events) == 1, events  # one per failover, not one per Sentinel
    assert SERVERS[new] in json.dumps(events[0]) and SERVERS[old] in json.dumps(events[0])


def write_on_isolated(lab, host, key):
    """A client on the isolated host itself (the test cannot reach it any more)."""
    return host_output(lab, host, "redis-cli", "-h", "127.0.0.1", "SET", key, "1", auth=True)


def partition_until_failover(lab, old, new):
    lab.set_link(old, up=False)
    wait_until(lambda: server(new).info("replication")["role"] == "master", 60, f"{new} promoted")


def heal_until_replica(lab, old, new):
    lab.set_link(old, up=True)
    wait_until(lambda: server(old).info("replication")["role"] == "slave"
               and server(old).info("replication")["master_host"] == SERVERS[new]
               and server(old).info("replication")["master_link_status"] == "up", 90, f"{old} back as a replica")


def test_a_partitioned_master_loses_writes_unless_min_replicas_to_write_refuses_them(first_apply, cli, sentinel_lab):
    lab, _, config = sentinel_lab
    # Default (min_replicas_to_write 0): the isolated old master takes a write that is lost when it rejoins.
    old = current_master()
    new = next(h for h in SERVERS if h != old)
    partition_until_failover(lab, old, new)
    assert write_on_isolated(lab, old, "split:default") == "OK"
    heal_until_replica(lab, old, new)
    assert server(new).get("split:default") is None and server(old).get("split:default") is None

    # min_replicas_to_write 1: the isolated master refuses writes once its replica is out of reach.
    config.write_text(yaml.safe_dump(deployment({"min_replicas_to_write": 1})))
    assert cli.run("state.apply", "redis", minion_tgt="*").returncode == 0
    old, new = new, old
    partition_until_failover(lab, old, new)
    wait_until(lambda: "NOREPLICAS" in write_on_isolated(lab, old, "split:refused"), 30,
               "the isolated master refuses writes")
    heal_until_replica(lab, old, new)
    wait_until(lambda: sentinel_client().master_for("mymaster").set("split:after", "ok"), 30,
               "writes accepted again once the replica is back")
    assert server(new).get("split:refused") is None

    # Back to the module's deployment: a setting of the servers alone, which redis.service applies live.
    config.write_text(yaml.safe_dump(deployment()))
    assert cli.run("state.apply", "redis.service", minion_tgt="st[12]").returncode == 0
    assert {h: server(h).config_get("min-replicas-to-write")["min-replicas-to-write"] for h in SERVERS} == {
        h: "0" for h in SERVERS}


def test_a_pair_whose_yaml_grows_into_a_cluster_is_refused_and_nothing_changes(first_apply, cli, sentinel_lab):
    _, _, config = sentinel_lab
    grown = deployment(witnesses=[])
    grown["nodes"]["controllers"][2]["services"]["redis"] = True  # 2 grew to 3, mode auto: cluster
    config.write_text(yaml.safe_dump(grown))
    master = current_master()
    runs = {h: server(h).info("server")["run_id"] for h in SERVERS}
    try:
        refused = cli.run("state.apply", "redis", minion_tgt="st[12]")

        assert refused.returncode != 0
        for host in SERVERS:
            kept = state_by_id(refused, host, "redis-deployment-shape-kept")
            assert kept["result"] is False
            assert "master/replica pair" in kept["comment"] and "mode: sentinel" in kept["comment"]
            assert not changed_ids(refused.data[host])
        assert {h: server(h).info("server")["run_id"] for h in SERVERS} == runs
        assert current_master() == master and server(master).info("replication")["connected_slaves"] == 1
        assert server(master).info("cluster")["cluster_enabled"] == 0
    finally:
        config.write_text(yaml.safe_dump(deployment()))
    assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []


def test_a_dead_master_host_fails_over_through_the_witness_and_back_with_the_witness_cut_off_stays_a_replica(
    first_apply, cli, sentinel_lab, sentinel_master, event_listener
):
    """The master's host dies: the two Sentinels left (the witness's makes the majority) fail
    it over, and the Sentinel client reads every acknowledged key and writes on the new master.
    The witness is then cut off; the old host boots as a master with its keys and its stale
    Sentinel. An apply on the new master then hears one Sentinel for each server: Salt keeps
    the new master, and the write made after the failover is still there once everything is
    back; re-applying changes nothing and restarts nothing. (The old host back while every
    Sentinel is up, a replica of the new master at once: the set backup test below.)"""
    lab = sentinel_lab[0]
    old, new, keys, client = kill_the_master_host(lab, "scenario-a")
    assert [client.get(k) for k in keys] == [str(n) for n in range(len(keys))]
    # Cut the witness off once the failover is over, not within Sentinel's own 5 s window in which
    # a cut-off Sentinel can still start (and on its return finish) a failover of the new master.
    wait_until(lambda: all(master_seen_by(h) == SERVERS[new] for h in (new, WITNESS[0]))
               and not counts_a_master_down_reply(WITNESS[0]), 30,
               lambda: f"the failover to {new} settled: {WITNESS[0]} says {sentinel_answer(WITNESS[0])}")
    lab.set_link(WITNESS[0], up=False)
    try:
        boot_until_minions_answer(lambda: lab.boot(old), cli, sentinel_master, event_listener, [old])
        applied = cli.run("state.apply", "redis", minion_tgt=new)
        replication = state_by_id(applied, None, "redis-replication-follows-the-live-master")
        assert replication["result"] is True and not replication["changes"], replication
        assert server(new).info("replication")["role"] == "master"
        assert server(new).get("scenario-a:after-failover") == "ok"
    finally:
        lab.set_link(WITNESS[0], up=True)
    # The Sentinels convert the old master themselves (Salt never demotes a master holding keys).
    wait_until(lambda: server(old).info("replication")["role"] == "slave"
               and server(old).info("replication")["master_host"] == SERVERS[new]
               and server(old).info("replication")["master_link_status"] == "up", 120,
               lambda: f"{old} back as a replica of {new}: {old} says {server(old).info('replication')}, "
                       f"{new} says {server(new).info('replication')['role']}, the Sentinels say "
                       f"{ {h: sentinel_answer(h) for h in ALL} }")
    wait_until(lambda: all(master_seen_by(h) == SERVERS[new] for h in ALL), 60, f"every Sentinel names {new}")
    # The witness's minion too: cut off for as long as the boot and the apply above took, it may
    # have dropped its connection to the master and be reconnecting still (seen under load: 28 s
    # after its link was back), and would then miss the next apply's job.
    wait_for_minions(cli, [WITNESS[0]])
    new_run = server(new).info("server")["run_id"]
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    assert server(new).info("server")["run_id"] == new_run and current_master() == new
    assert server(old).get("scenario-a:after-failover") == "ok"
    assert [server(new).get(k) for k in keys] == [str(n) for n in range(len(keys))]


def test_a_redis_server_of_someone_else_on_the_witness_host_is_left_running(first_apply, cli, sentinel_lab):
    lab = sentinel_lab[0]
    witness = WITNESS[0]
    assert host_run(lab, witness, "systemctl", "start", "redis-server").returncode == 0
    try:
        # The package's own server: no password, 127.0.0.1:6379 inside the host.
        wait_until(lambda: host_output(lab, witness, "redis-cli", "PING") == "PONG", 30, "the witness's own Redis")
        run_id = host_output(lab, witness, "sh", "-c", "redis-cli INFO server | grep ^run_id")

        applied = cli.run("state.apply", "redis", minion_tgt=witness)

        assert applied.returncode == 0, applied.stdout
        assert changed_ids(applied.data) == []
        assert host_output(lab, witness, "systemctl", "is-active", "redis-server") == "active"
        assert host_output(lab, witness, "sh", "-c", "redis-cli INFO server | grep ^run_id") == run_id
    finally:
        host_run(lab, witness, "systemctl", "stop", "redis-server")


def test_a_rolling_restart_under_a_client_writing_with_wait_1_loses_nothing_and_fails_the_master_over_first(
    first_apply, cli, sentinel_master, event_listener
):
    old = current_master()
    watcher = RoleWatcher({h: server(h) for h in SERVERS})
    watcher.start()
    writer = WaitWriter([(ip, SENTINEL_PORT) for ip in ALL.values()], PASSWORD, "rolling")
    writer.start()
    wait_until(lambda: len(writer.acknowledged) > 50, 30, "the writer writes")
    fired_after = time.time()

    rolled = sentinel_master.salt_run_cli(timeout=600).run("redis_deployment.rolling_restart")

    count = len(writer.acknowledged)
    wait_until(lambda: len(writer.acknowledged) > count + 20, 30, lambda: f"the writer writes on: {writer.errors}")
    writer.finish()
    watcher.finish()
    assert rolled.returncode == 0, rolled.stdout
    assert_no_password(rolled.stdout, "the roll's output")
    new = current_master()
    assert new != old and watcher.problems({old}) == [], watcher.seen
    assert writer.errors == [] and writer.missing(server(new)) == []
    wait_until(lambda: all(master_seen_by(h) == SERVERS[new] for h in ALL), 30, f"the Sentinels agree on {new}")
    events = runner_events(event_listener, sentinel_master, "redis/rolling/*/restarted", fired_after, count=2,
                           timeout=30)
    assert [tag for tag, _ in events] == [f"redis/rolling/{new}/restarted", f"redis/rolling/{old}/restarted"]
    assert events[1][1]["failed_over_to"] == new and events[1][1]["role_after"] == "replica"


def test_a_start_only_change_is_left_pending_by_a_plain_apply_and_rolled_by_the_orchestration(
    first_apply, cli, sentinel_master, sentinel_lab
):
    """The servers keep the changed log file (the backup drills below only add keys)."""
    _, _, config = sentinel_lab
    logfile = "/var/log/redis/redis-server-rolled.log"
    (config.parent / "pillar" / "redis.sls").write_text(yaml.safe_dump({"redis": {"logfile": logfile}}))
    runs = {h: server(h).info("server")["run_id"] for h in SERVERS}

    applied = cli.run("state.apply", "redis", minion_tgt="*")

    assert applied.returncode == 0, applied.stdout
    statuses = cli.run("redis_cluster.status", minion_tgt="st[12]").data
    for host in SERVERS:
        settings = state_by_id(applied, host, "redis-server-runs-the-managed-settings")
        assert settings["result"] is True and "restart pending for logfile" in settings["comment"], settings
        assert "salt-run redis_deployment.rolling_restart" in settings["comment"]
        assert statuses[host]["restart_pending"] == ["logfile"], statuses
    assert {h: server(h).info("server")["run_id"] for h in SERVERS} == runs  # no restart at all
    assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []

    orchestrated = sentinel_master.salt_run_cli(timeout=900).run("state.orchestrate", "redis.orchestrate")

    assert orchestrated.returncode == 0, orchestrated.stdout
    steps = next(iter(orchestrated.data["data"].values()))
    rolled = next(step for step in steps.values() if step["__id__"] == "redis-pending-restarts-rolled")
    assert rolled["result"] is True and len(rolled["changes"]["return"]["restarted"]) == 2, rolled
    statuses = cli.run("redis_cluster.status", minion_tgt="st[12]").data
    for host in SERVERS:
        assert server(host).info("server")["run_id"] != runs[host]
        assert server(host).config_get("logfile") == {"logfile": logfile}
        assert statuses[host]["restart_pending"] == [], statuses
    master = current_master()
    wait_until(lambda: all(master_seen_by(h) == SERVERS[master] for h in ALL), 30, f"the Sentinels agree on {master}")
    assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []


# Backup drills in Sentinel mode: a set is the only way to restore a Sentinel deployment.


def run_cli(sentinel_master, timeout=600):
    """salt-run renders pillar itself: like the master, it needs REDIS_PASSWORD."""
    cli = sentinel_master.salt_run_cli(timeout=timeout)
    cli.environ = dict(cli.environ, REDIS_PASSWORD=PASSWORD)
    return cli


def database(host, number):
    return redis.Redis(host=ALL[host], port=6379, db=number, password=PASSWORD, socket_timeout=5,
                       decode_responses=True)


def test_keys_in_database_0_and_3_come_back_from_a_set_restore_on_both_servers(first_apply, cli, sentinel_master):
    master = current_master()
    for number in (0, 3):
        pipe = database(master, number).pipeline(transaction=False)
        for key in range(100):
            pipe.set(f"db{number}:{key}", key)
        pipe.execute()
    assert database(master, 0).execute_command("WAIT", 1, 2000) == 1
    backed_up = run_cli(sentinel_master).run("redis_backup.run", "type=rdb")
    assert backed_up.returncode == 0 and backed_up.data["status"] == "complete", backed_up.stdout
    server(master).flushall()
    single = cli.run("redis_backup.restore", f"backup={backed_up.data['nodes'][master]['backups']['rdb']['name']}",
                     "force=True", minion_tgt=master)
    assert "salt-run redis_backup.restore" in single.stdout  # a Sentinel master only ever in a set

    restored = run_cli(sentinel_master).run("redis_backup.restore", f"set={backed_up.data['set_id']}", "force=True")

    assert restored.returncode == 0, restored.stdout
    assert_no_password(restored.stdout, "salt-run redis_backup.restore")
    live = current_master()
    for host in SERVERS:
        wait_until(lambda: all(database(host, n).dbsize() >= 100 for n in (0, 3)), 60, f"{host} has both databases")
        for number in (0, 3):
            names = [f"db{number}:{key}" for key in range(100)]
            assert database(host, number).mget(names) == [str(key) for key in range(100)], (host, number)
    wait_until(lambda: all(master_seen_by(h) == SERVERS[live] for h in ALL), 60, f"the Sentinels agree on {live}")
    assert states_with_changes(cli.run("state.apply", "redis", minion_tgt="*")) == []


def published(event_listener, master, function, after):
    """Whether ``master`` published a job of ``function`` (its ``salt/job/<jid>/new`` event) after ``after``."""
    return any(event.data.get("fun") == function
               for event in bus_events(event_listener, master, "salt/job/*/new", after, count=1000, timeout=0))


def test_the_master_host_dying_during_a_set_backup_makes_the_set_partial_never_complete(
    first_apply, cli, sentinel_master, sentinel_lab, event_listener
):
    """The master's host power-cut while its part of a set copies: the set is partial, and
    listed so while that host is down. The host then boots while every Sentinel is up: a replica
    of the new master, with every acknowledged key; re-applying changes nothing, restarts
    nothing and moves no master back."""
    lab = sentinel_lab[0]
    old = current_master()
    # Incompressible values, so that the master's part of the set is still copying when it dies.
    ballast = [f"ballast:{number}" for number in range(48)]
    pipe = server(old).pipeline(transaction=False)
    for name in ballast:
        pipe.set(name, os.urandom(1 << 20).hex()[: 1 << 20])
    pipe.execute()
    keys = acknowledged_writes("set-death")
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(
        result=run_cli(sentinel_master).run("redis_backup.run", "type=rdb", "compress=gzip")), daemon=True)
    runner.start()
    wait_until(lambda: any(size > 0 for size in partial_backups(lab, old).values()), 120,
               f"{old}'s part of the set copying", interval=0.01)
    lab.kill(old)
    runner.join(240)
    assert not runner.is_alive(), "salt-run redis_backup.run still runs 4 minutes after the master's host died"
    result = outcome["result"]

    assert result.returncode != 0, result.stdout
    assert result.data["status"] == "partial", result.data
    assert old in result.data["reason"], result.data["reason"]

    # The list asks every node of the set and waits for the dead one as long as the master's
    # `timeout` (30 s): the rest of the test runs meanwhile. The host boots once the list's job is
    # out: a minion that was down when a job was published never gets it, so the list sees that
    # node down either way.
    listing, asked = {}, time.time()
    lister = threading.Thread(target=lambda: listing.update(
        result=run_cli(sentinel_master).run("redis_backup.list")), daemon=True)
    lister.start()
    wait_until(lambda: published(event_listener, sentinel_master, "redis_backup.list", asked), 60,
               "salt-run redis_backup.list asking the nodes")

    new = next(h for h in SERVERS if h != old)
    wait_until(lambda: server(new).info("replication")["role"] == "master", 60, f"{new} promoted")
    boot_until_minions_answer(lambda: lab.boot(old), cli, sentinel_master, event_listener, [old])
    wait_until(lambda: server(old).info("replication")["role"] == "slave"
               and server(old).info("replication")["master_host"] == SERVERS[new]
               and server(old).info("replication")["master_link_status"] == "up", 120, f"{old} back as a replica")
    assert [server(new).get(k) for k in keys] == [str(n) for n in range(len(keys))]
    new_run = server(new).info("server")["run_id"]
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    assert server(new).info("server")["run_id"] == new_run and current_master() == new

    lister.join(120)
    assert not lister.is_alive(), "salt-run redis_backup.list still runs 2 minutes after it asked the nodes"
    listed = listing["result"]
    assert [s["status"] for s in listed.data["sets"] if s["set_id"] == result.data["set_id"]] == ["partial"]
    # The ballast only slowed this set down: the later tests' backups and full resyncs need not copy it.
    assert server(new).delete(*ballast) == len(ballast)


NEW_PASSWORD = "rotated 'pw' \\ #2"


def run_ids(password):
    """Every server's and every Sentinel's run_id."""
    ids = {host: server(host, password).info("server")["run_id"] for host in SERVERS}
    ids.update({f"{host} sentinel": sentinel(host, password).info("server")["run_id"] for host in ALL})
    return ids


def apply_phase(cli, config, writer, phase, **redis_settings):
    config.write_text(yaml.safe_dump(deployment(redis_settings)))
    writer.phase = f"{phase} apply"
    applied = cli.run("state.apply", "redis", minion_tgt="*")
    writer.phase = f"{phase} done"
    writer.wait_for(f"{phase} done")
    assert applied.returncode == 0, applied.stdout
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert states_with_changes(again) == [], again.stdout


def test_a_two_phase_rotation_refuses_no_client_restarts_nothing_and_the_pair_still_fails_over(
        first_apply, cli, sentinel_lab, sentinel_master, event_listener):
    lab, _, config = sentinel_lab
    master = current_master()
    before = run_ids(PASSWORD)
    writer = AlternatingWriter(lambda key: f"{SERVERS[master]}:6379", {"old": PASSWORD, "new": NEW_PASSWORD})
    writer.start()
    try:
        apply_phase(cli, config, writer, "phase 1", password=NEW_PASSWORD, previous_password="${REDIS_PASSWORD}")
        for host in ALL:
            for password in (PASSWORD, NEW_PASSWORD):
                assert master_seen_by_with(host, password) == SERVERS[master], host
        apply_phase(cli, config, writer, "phase 2", password=NEW_PASSWORD)
        writer.stop()
        assert run_ids(NEW_PASSWORD) == before
        for host in ALL:
            with pytest.raises(redis.AuthenticationError):
                sentinel(host).ping()
        # The Sentinels still log in to the servers and to each other: a power cut fails over.
        new = next(h for h in SERVERS if h != master)
        lab.kill(master)
        wait_until(lambda: server(new, NEW_PASSWORD).info("replication")["role"] == "master", 60, f"{new} promoted")
        client = sentinel_client(NEW_PASSWORD).master_for("mymaster")
        wait_until(lambda: client.set("rotation:after-failover", "ok"), 30, "a write through the Sentinels")
        boot_until_minions_answer(lambda: lab.boot(master), cli, sentinel_master, event_listener, [master])
        wait_until(lambda: server(master, NEW_PASSWORD).info("replication").get("master_link_status") == "up", 120,
                   f"{master} back as a replica")
    finally:
        writer.stop()
        config.write_text(yaml.safe_dump(deployment({"previous_password": NEW_PASSWORD})))
        cli.run("state.apply", "redis", minion_tgt="*")
        config.write_text(yaml.safe_dump(deployment()))
        back = cli.run("state.apply", "redis", minion_tgt="*")
    assert back.returncode == 0, back.stdout

    writer.assert_no_client_refused()
    live = current_master()
    stored = server(live).mget([w.key for w in writer.acknowledged()])
    assert stored == [w.phase for w in writer.acknowledged()]


def master_seen_by_with(host, password):
    return sentinel(host, password).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[0]


APP_PASSWORD = 'app "pass" \\ word #7'
# Kept as the previous password of a rotation: the deployment holds every kind of secret at once.
LEAK_PREVIOUS_PASSWORD = "leak 'previous' \\ pw #3"


def app_login(address, port=6379):
    return redis.Redis(host=address, port=port, username="app", password=APP_PASSWORD, socket_timeout=3,
                       decode_responses=True)


def app_through_the_sentinels():
    """An application's client with its own login everywhere: the Sentinels and the master."""
    return Sentinel([(ip, SENTINEL_PORT) for ip in ALL.values()], socket_timeout=3,
                    sentinel_kwargs={"username": "app", "password": APP_PASSWORD, "socket_timeout": 3},
                    username="app", password=APP_PASSWORD, decode_responses=True).master_for("mymaster")


def test_an_application_user_on_both_servers_and_every_sentinel_survives_a_failover_and_no_secret_leaks_on_any_channel(
        first_apply, cli, sentinel_lab, sentinel_master, event_listener):
    """An application user on both servers and every Sentinel, allowed what its rules allow and
    nothing else, writing through the Sentinels before and after a failover, removed by the
    apply back. With a rotation's previous password kept too, no secret of the deployment shows
    on any channel through the apply, a backup set and the failover (the leak watch)."""
    lab, _, config = sentinel_lab
    users = [{"name": "app", "password": APP_PASSWORD, "rules": "~* +@read +@write +@connection -@dangerous"}]
    document = deployment({"previous_password": LEAK_PREVIOUS_PASSWORD, "acl": {"users": users}})
    config.write_text(yaml.safe_dump(document))
    secrets = deployment_secrets(document)
    results = {}
    removed = None
    try:
        with Watch(event_listener, lab, list(ALL), sentinel_master, secrets) as watch:
            added = results["state.apply redis"] = cli.run("state.apply", "redis", minion_tgt="*")
            again = results["state.apply redis again"] = cli.run("state.apply", "redis", minion_tgt="*")
            results["salt-run redis_backup.run"] = run_cli(sentinel_master).run("redis_backup.run", "type=rdb")

            assert added.returncode == 0, added.stdout
            for host in ALL:
                if host in SERVERS:
                    assert state_by_id(added, host, "redis-application-users-on-this-server")["changes"] == {
                        "created": ["app"]}, host
                assert state_by_id(added, host, "redis-application-users-on-this-sentinel")["changes"] == {
                    "created": ["app"]}, host
            assert states_with_changes(again) == []
            assert_no_password(added.stdout, "the apply's output")
            assert APP_PASSWORD not in added.stdout
            for host, address in SERVERS.items():
                app = app_login(address)
                assert app.ping() and app.get("acl:none") is None
                for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("SHUTDOWN",),
                                ("REPLICAOF", "NO", "ONE")):
                    with pytest.raises(redis.exceptions.NoPermissionError):
                        app.execute_command(*command)
            for host, address in ALL.items():  # the Sentinels: discovery only
                on_sentinel = app_login(address, SENTINEL_PORT)
                assert on_sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[0] in (
                    SERVERS.values())
                with pytest.raises(redis.exceptions.NoPermissionError):
                    on_sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
            client = app_through_the_sentinels()
            client.set("acl:before", "1")

            old = current_master()
            new = next(h for h in SERVERS if h != old)
            sentinel(new).execute_command("SENTINEL", "FAILOVER", "mymaster")
            wait_until(lambda: current_master() == new and all(master_seen_by(h) == SERVERS[new] for h in ALL), 60,
                       f"{new} promoted, every Sentinel agreeing")
            client = app_through_the_sentinels()
            wait_until(lambda: client.set("acl:after", "2"), 30, "the app writing on the new master")
            assert client.get("acl:before") == "1"
            results["redis_cluster.status"] = cli.run("redis_cluster.status", minion_tgt="*")
            after_failover = results["state.apply redis after the failover"] = cli.run(
                "state.apply", "redis", minion_tgt="*")
            assert states_with_changes(after_failover) == []

        config.write_text(yaml.safe_dump(deployment()))
        removed = cli.run("state.apply", "redis", minion_tgt="*")

        assert removed.returncode == 0, removed.stdout
        for host, address in ALL.items():
            assert "app" not in sentinel(host).acl_users(), host
            with pytest.raises(redis.AuthenticationError):
                app_login(address, SENTINEL_PORT).ping()
        for host, address in SERVERS.items():
            assert "app" not in server(host).acl_users(), host
            with pytest.raises(redis.AuthenticationError):
                app_login(address).ping()
    finally:
        config.write_text(yaml.safe_dump(deployment()))
        if removed is None:  # failed before: the later tests want the module's deployment
            cli.run("state.apply", "redis", minion_tgt="*")
    findings = everything_seen(watch, results, lab, list(ALL), sentinel_master, secrets)
    assert not findings, "LEAK (product code): " + report(findings)
    assert results["salt-run redis_backup.run"].returncode == 0, results["salt-run redis_backup.run"].stdout
