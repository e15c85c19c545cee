"""
Cluster mode: one `salt '*' state.apply redis` on bare hosts ends with one healthy Redis
Cluster (test_deploy.py's first apply), as an operator checks it: CLUSTER INFO, `redis-cli
--cluster check`, a cluster client's keys spread over every master, and a cluster reset
by hand formed again by the next apply (after a dry run that says what it would do).
"""

import datetime
import json
import time
from pathlib import Path

import pytest
import redis
import yaml
from lab.saltconf import minion_settings
from support.acl import APP_USERS, assert_app_user_limited
from support.cluster import cluster_client, cluster_info, cluster_ok, wait_aof_written, wait_cluster_ok
from support.events import master_events
from support.lab import (ADDRESSES, PASSWORD, PLAIN_HOST, REDIS_HOSTS, deployment, host_file, host_output,
                         host_processes, host_run, node_client, wait_for_minions)
from support.metrics import scrape
from support.loaders import utils_dunder
from support.states import state_by_id, states_with_changes
from support.waits import wait_until

listens_as = utils_dunder(["redis_common"])["redis_common.listens_as"]

pytestmark = pytest.mark.integration


def test_one_apply_forms_a_healthy_cluster(first_apply, lab_hosts):
    assert first_apply.returncode == 0, first_apply.stdout
    formed = state_by_id(first_apply, "it1", "redis-cluster-formed")
    assert formed["changes"]["formed"]["actions"][:2] == ["it1 met it2", "it1 met it3"], formed
    wait_cluster_ok()
    for host in REDIS_HOSTS:
        info = cluster_info(host)
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info and "cluster_slots_ok:16384" in info
        assert "cluster_known_nodes:3" in info
    check = host_run(lab_hosts[0], "it2", "redis-cli", "--cluster", "check", f"{REDIS_HOSTS['it1']}:6379", auth=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "[OK] All 16384 slots covered." in check.stdout
    assert "[OK] All nodes agree about slots configuration." in check.stdout
    assert "[WARNING]" not in check.stdout, check.stdout
    assert "[ERR]" not in check.stdout, check.stdout


def test_a_cluster_client_spreads_keys_over_every_master(first_apply):
    client = cluster_client(decode_responses=False)
    try:
        for number in range(1000):
            client.set(f"user:{number}", number)
        assert all(client.get(f"user:{number}") == str(number).encode() for number in range(0, 1000, 97))
    finally:
        client.close()
    assert all(node_client(host).dbsize() > 200 for host in REDIS_HOSTS)


def test_a_cluster_reset_by_hand_is_planned_by_a_dry_run_and_formed_by_the_next_apply(
    first_apply, salt_cli, salt_master, event_listener
):
    for host in REDIS_HOSTS:
        node_client(host).flushall()
        node_client(host).execute_command("CLUSTER", "RESET", "HARD")
    assert all("cluster_known_nodes:1" in cluster_info(host) for host in REDIS_HOSTS)

    dry = salt_cli.run("state.apply", "redis", "test=True", minion_tgt="it*")

    formed = {host: state_by_id(dry, host, "redis-cluster-formed") for host in REDIS_HOSTS}
    assert formed["it1"]["result"] is None
    assert "it1 would form the cluster of it1, it2, it3: slots it1 0-5460; it2 5461-10922; it3 10923-16383" in (
        formed["it1"]["comment"]
    )
    assert formed["it2"]["comment"] == "it2 would join the cluster that it1 forms"
    assert all("cluster_known_nodes:1" in cluster_info(host) for host in REDIS_HOSTS)

    # The master's event bus (what `salt-run state.event` shows an operator).
    fired_after, started = time.time(), time.monotonic()
    applied = salt_cli.run("state.apply", "redis", minion_tgt="it*")

    assert applied.returncode == 0, applied.stdout
    events = master_events(event_listener, salt_master, "redis/cluster/*", fired_after, count=1, timeout=30)
    assert events, "no redis/cluster/* event on the master's bus"
    tag, data = events[0]
    assert tag == "redis/cluster/formed"
    assert sorted(data["nodes"]) == sorted(REDIS_HOSTS)
    assert data["slots"]["it1"] == [[0, 5460]]
    assert "formed" in state_by_id(applied, "it1", "redis-cluster-formed")["changes"]
    assert cluster_ok()
    assert time.monotonic() - started < 60
    again = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    assert states_with_changes(again) == []


def test_a_node_of_another_cluster_is_refused_and_nothing_changes(first_apply, salt_cli, lab_hosts):
    """it3 has met a node the YAML does not know: forming refuses, names the repair, changes nothing."""
    for host in REDIS_HOSTS:
        node_client(host).flushall()
        node_client(host).execute_command("CLUSTER", "RESET", "HARD")
    stranger = ["redis-server", "--port", "6390", "--cluster-enabled", "yes", "--cluster-config-file",
                "/tmp/stranger-nodes.conf", "--save", "", "--appendonly", "no", "--daemonize", "yes"]
    host_run(lab_hosts[0], "it3", *stranger, check=True)
    node_client("it3").execute_command("CLUSTER", "MEET", REDIS_HOSTS["it3"], 6390)
    try:
        applied = salt_cli.run("state.apply", "redis", minion_tgt="it1")
        formed = state_by_id(applied, None, "redis-cluster-formed")
        assert formed["result"] is False
        assert "belongs to another cluster" in formed["comment"]
        assert "CLUSTER RESET" in formed["comment"]
        assert all("cluster_slots_assigned:0" in cluster_info(host) for host in REDIS_HOSTS)
    finally:
        host_run(lab_hosts[0], "it3", "redis-cli", "-p", "6390", "shutdown", "nosave")
        node_client("it3").execute_command("CLUSTER", "RESET", "HARD")
    assert salt_cli.run("state.apply", "redis", minion_tgt="it*").returncode == 0
    assert cluster_ok()
    with pytest.raises(redis.ResponseError):
        node_client("it1").execute_command("CLUSTER", "ADDSLOTS", 0)  # every slot is taken again


def test_tls_on_a_formed_plain_cluster_switches_live_and_back_with_no_restart(
        first_apply, salt_cli, lab_hosts, deployment_file, restore_deployment, tmp_path):
    """The other way round from test_tls_cluster.py's lab (formed over TLS): a cluster formed
    in plain TCP gets `tls: {issue: true}`, then loses it; each apply switches every node live."""
    wait_cluster_ok()
    client = cluster_client()
    keys = {f"switch:{n}": str(n) for n in range(100)}
    for key, value in keys.items():
        client.set(key, value)
    client.close()
    run_ids = {host: node_client(host).info("server")["run_id"] for host in REDIS_HOSTS}
    deployment_file.write_text(yaml.safe_dump(deployment(tls={"issue": True})))
    try:
        to_tls = salt_cli.run("state.apply", "redis", minion_tgt="it*")
        assert to_tls.returncode == 0, to_tls.stdout
        ca_file = tmp_path / "ca.crt"
        ca_file.write_bytes(host_file(lab_hosts[0], "it1", "/etc/redis-tls/ca.crt").read_bytes())
        for host in REDIS_HOSTS:
            switched = state_by_id(to_tls, host, "redis-server-runs-the-managed-settings")
            assert switched["changes"]["protocol"] == {"old": "plain TCP", "new": "TLS"}, switched
            assert listens_as(ADDRESSES[host], 6379, 3) == "tls", host
        over_tls = [redis.Redis(host=ADDRESSES[h], password=PASSWORD, socket_timeout=3, decode_responses=True,
                                ssl=True, ssl_ca_certs=str(ca_file)) for h in REDIS_HOSTS]
        wait_until(lambda: all(c.cluster("INFO")["cluster_state"] == "ok" for c in over_tls), 60,
                   "cluster_state:ok over TLS")
    finally:
        deployment_file.write_text(yaml.safe_dump(deployment()))
        back = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    assert back.returncode == 0, back.stdout
    for host in REDIS_HOSTS:
        assert listens_as(ADDRESSES[host], 6379, 3) == "plain", host
    wait_cluster_ok(timeout=60)
    assert {host: node_client(host).info("server")["run_id"] for host in REDIS_HOSTS} == run_ids, "no restart"
    client = cluster_client()
    assert {key: client.get(key) for key in keys} == keys
    client.close()
    assert states_with_changes(salt_cli.run("state.apply", "redis", minion_tgt="it*")) == []


def test_a_healthy_cluster_is_ok_on_every_node_and_in_the_runners_table(first_apply, salt_cli, salt_run_cli):
    wait_cluster_ok()
    answers = salt_cli.run("redis_cluster.health", minion_tgt="it*")
    for host in REDIS_HOSTS:
        health = answers.data[host]
        assert (health["status"], health["code"]) == ("OK", 0), health
        names = {check["name"] for check in health["checks"]}
        assert {"ping", "memory", "cluster_state", "cluster_slots", "backup_rdb", "backup_aof"} <= names, names
    # it4 is no Redis controller: nothing of ours is synced or installed there (test_deploy.py).
    table = salt_run_cli.run("redis_deployment.health")
    assert table.returncode == 0 and table.data["status"] == "OK", table.stdout
    assert sorted(table.data["nodes"]) == sorted(REDIS_HOSTS)
    jobs = salt_cli.run("schedule.list", "return_yaml=False", minion_tgt="it*").data
    for host in REDIS_HOSTS:
        job = jobs[host]["redis-health"]
        assert (job["function"], job["minutes"], job["kwargs"]) == ("redis_cluster.health", 5, {"fire_events": True})
    assert "redis-health" not in (jobs["it4"] or {})


def test_the_health_script_for_nagios_as_root_a_monitoring_group_member_and_anyone_else(first_apply, lab_hosts):
    lab = lab_hosts[0]
    wait_cluster_ok()
    added = host_run(lab, "it1", "useradd", "--system", "--no-create-home", "--groups", "redis-monitoring",
                     "nagioslab")
    assert added.returncode == 0, added.stderr
    member = host_output(lab, "it1", "runuser", "-u", "nagioslab", "--", "id")
    as_root = host_run(lab, "it1", "/usr/local/bin/redis_health")
    as_member = host_run(lab, "it1", "runuser", "-u", "nagioslab", "--", "/usr/local/bin/redis_health")
    as_other = host_run(lab, "it1", "runuser", "-u", "nobody", "--", "/usr/local/bin/redis_health")
    settings = json.loads(host_file(lab, "it1", "/etc/redis-monitoring/redis_health.json").read_text())
    mode = host_output(lab, "it1", "stat", "-c", "%a %U:%G", "/etc/redis-monitoring/redis_health.json")

    lines = as_root.stdout.splitlines()
    assert (as_root.returncode, lines[0]) == (0, "OK: Redis is running"), as_root.stdout + as_root.stderr
    assert lines[1].startswith("Memory: ") and "Cluster: OK" in lines, as_root.stdout
    # The same verdict (the memory figure may move between the two runs).
    assert (as_member.returncode, as_member.stdout.splitlines()[0]) == (0, lines[0]), (member, as_member.stdout,
                                                                                       as_member.stderr)
    assert "Cluster: OK" in as_member.stdout.splitlines()
    assert as_other.returncode == 3 and as_other.stdout.startswith("UNKNOWN: cannot read"), as_other.stdout
    assert mode == "640 root:redis-monitoring"
    # The monitoring login reads and cannot write, on every node.
    for host in REDIS_HOSTS:
        monitor = redis.Redis(host=ADDRESSES[host], port=6379,
                              username="salt-monitor", password=settings["password"], decode_responses=True)
        assert monitor.info("server")["redis_version"]
        for command in (("SET", "k", "v"), ("FLUSHALL",), ("CONFIG", "GET", "maxmemory")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                monitor.execute_command(*command)
        assert not [line for line in host_processes(lab, host) if settings["password"] in line]


def health_events(event_listener, salt_master, host, after, status):
    """The ``redis/health/<host>`` events fired after ``after`` until one says ``status`` (the
    scheduled check may fire it before the explicit one does: either counts)."""
    wait_until(lambda: any(data["status"] == status for _, data in master_events(
        event_listener, salt_master, f"redis/health/{host}", after, count=10, timeout=1)), 30,
        f"a redis/health/{host} event saying {status}")
    return [data for _, data in master_events(event_listener, salt_master, f"redis/health/{host}", after, 10, 1)]


def test_a_master_without_replica_down_fails_the_cluster_until_it_returns_with_every_key(
    first_apply, salt_cli, salt_run_cli, lab_hosts, event_listener, salt_master
):
    """The original document's scenario 3 with 3 masters and no replica, as it really goes:
    `cluster_state:fail` while a master is down (cluster-require-full-coverage yes, the
    default), `ok` again by itself when it is back, no key lost, nothing for Salt to do."""
    assert node_client("it1").config_get("cluster-require-full-coverage") == {"cluster-require-full-coverage": "yes"}
    writer = cluster_client(decode_responses=False)
    for number in range(300):
        writer.set(f"item:{number}", number)
    writer.close()
    assert node_client("it2").dbsize() > 0
    wait_aof_written()  # appendfsync everysec

    # The status the events compare with is the last scheduled (fire_events) check's, which may
    # have run during an earlier test's reset: one check now records the healthy cluster.
    settled = salt_cli.run("redis_cluster.health", "fire_events=True", minion_tgt="it1").data
    assert settled["status"] == "OK", settled
    fired_after = time.time()  # the scheduled check may see it first: its event counts too
    lab_hosts[0].kill("it2")
    wait_until(lambda: "cluster_state:fail" in cluster_info("it1"), 30, "the cluster noticing it2 was gone")
    health = salt_cli.run("redis_cluster.health", "fire_events=True", minion_tgt="it1").data
    assert (health["status"], health["code"]) == ("CRITICAL", 2), health
    events = health_events(event_listener, salt_master, "it1", fired_after, "CRITICAL")
    assert events[0]["status"] == "CRITICAL" and any("cluster_state" in line for line in events[0]["failing"])
    failing = {c["name"]: c for c in health["checks"] if c["status"] != "OK"}
    assert failing["cluster_state"]["value"] == "fail", failing
    table = salt_run_cli.run("redis_deployment.health", "timeout=10")
    assert table.returncode == 2 and table.data["nodes"]["it2"]["status"] == "CRITICAL", table.stdout
    script = host_run(lab_hosts[0], "it1", "/usr/local/bin/redis_health")
    assert script.returncode == 2 and "CRITICAL: Cluster state is fail" in script.stdout.splitlines(), script.stdout
    assert table.data["nodes"]["it1"]["status"] == "CRITICAL"
    lab_hosts[0].boot("it2")
    recovered_after = time.time()
    wait_cluster_ok(timeout=60)

    reader = cluster_client(["it1"], decode_responses=False)
    try:
        assert [reader.get(f"item:{n}") for n in range(300)] == [str(n).encode() for n in range(300)]
    finally:
        reader.close()
    wait_for_minions(salt_cli, ["it2"])
    wait_until(lambda: salt_cli.run("redis_cluster.health", "fire_events=True", minion_tgt="it1").data["status"]
               == "OK", 60, "it1's health check OK again")
    back = health_events(event_listener, salt_master, "it1", recovered_after, "OK")
    assert [(e["status"], e["previous"]) for e in back][-1] == ("OK", "CRITICAL")
    again = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    assert states_with_changes(again) == []


def test_a_dead_master_rebuilt_bare_takes_its_place_with_its_slots_empty(
    first_apply, salt_cli, salt_master, lab_hosts, deployment_file, restore_deployment
):
    lab = lab_hosts[0]
    # An application user on every node before the host dies (ACLs are not replicated).
    deployment_file.write_text(yaml.safe_dump(deployment(acl={"users": APP_USERS})))
    assert salt_cli.run("state.apply", "redis", minion_tgt="it*").returncode == 0
    dead = node_client("it3").execute_command("CLUSTER", "MYID")
    ports = {"master_port": salt_master.config["ret_port"], "publish_port": salt_master.config["publish_port"]}

    salt_master.salt_key_cli().run("-d", "it3", "-y")  # the rebuilt host's minion has a new key
    lab.rebuild("it3", lambda name, bridge: minion_settings(name, bridge, **ports))
    wait_for_minions(salt_cli, ["it3"])
    # The others notice the dead node (cluster-node-timeout 5 s).
    wait_until(lambda: "cluster_state:fail" in cluster_info("it1"), 30, "the cluster noticing it3's old node was gone")

    applied = salt_cli.run("state.apply", "redis", minion_tgt="it*")

    assert applied.returncode == 0, applied.stdout
    formed = state_by_id(applied, "it1", "redis-cluster-formed")
    assert formed["changes"]["formed"]["actions"][0].startswith(f"forgot the dead node {dead[:8]}")
    assert "it3 got slots 10923-16383" in formed["changes"]["formed"]["actions"]
    assert "WARNING: slots 10923-16383 on it3 are EMPTY" in formed["comment"]
    wait_cluster_ok()
    assert dead not in node_client("it1").execute_command("CLUSTER", "NODES")
    assert node_client("it3").execute_command("CLUSTER", "COUNTKEYSINSLOT", 12000) == 0
    # The rebuilt host has the application user too, as limited as on the others.
    for host, ip in REDIS_HOSTS.items():
        assert_app_user_limited(ip, f"rebuilt:{host}")
    again = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    assert states_with_changes(again) == []
    deployment_file.write_text(yaml.safe_dump(deployment()))
    dropped = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    assert dropped.returncode == 0, dropped.stdout


def test_the_orchestrated_rollout_on_a_healthy_cluster_changes_and_restarts_nothing(first_apply, salt_run_cli):
    wait_cluster_ok()
    run_ids = {host: node_client(host).info("server")["run_id"] for host in REDIS_HOSTS}

    orchestrated = salt_run_cli.run("state.orchestrate", "redis.orchestrate")

    assert orchestrated.returncode == 0, orchestrated.stdout
    steps = next(iter(orchestrated.data["data"].values()))
    assert {step["__id__"] for step in steps.values()} == {
        "redis-nodes-configured", "redis-masters-running-one-at-a-time",
        "redis-deployment-formed-by-the-initial-master", "redis-every-node-applied", "redis-pending-restarts-rolled",
        "redis-deployment-verified",
    }
    assert all(step["result"] is True for step in steps.values()), steps
    changed = [(minion, state["__id__"]) for step in steps.values() if step["__id__"] != "redis-deployment-verified"
               for minion, states in (step["changes"].get("ret") or {}).items() if isinstance(states, dict)
               for state in states.values() if isinstance(state, dict) and state.get("changes")]
    assert changed == []
    assert {host: node_client(host).info("server")["run_id"] for host in REDIS_HOSTS} == run_ids


def test_the_prometheus_exporters_on_and_off(first_apply, salt_cli, deployment_file, lab_hosts, restore_deployment):
    lab = lab_hosts[0]
    wait_cluster_ok()
    deployment_file.write_text(yaml.safe_dump(deployment(monitoring={"exporter": True})))

    applied = salt_cli.run("state.apply", "redis.monitoring", minion_tgt="it*")  # the opt-in state alone
    again = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    backup = salt_cli.run("redis_backup.create", "type=rdb", "verify=False", minion_tgt="it1")
    for host, ip in REDIS_HOSTS.items():
        wait_until(lambda ip=ip: scrape(ip).get("redis_up"), 30, f"{host}'s exporter answering")
    up = {host: scrape(ip).get("redis_up") for host, ip in REDIS_HOSTS.items()}
    cluster_metrics = scrape(REDIS_HOSTS["it1"])
    stamp_name = 'redis_backup_last_success_timestamp_seconds{type="rdb"}'
    wait_until(lambda: stamp_name in scrape(REDIS_HOSTS["it1"], port=9100), 30,
               "node-exporter reading the backup metrics")
    node_metrics = scrape(REDIS_HOSTS["it1"], port=9100)
    commands = [line for host in REDIS_HOSTS for line in host_processes(lab, host)]
    environment = host_output(lab, "it1", "stat", "-c", "%a %U", "/etc/redis-salt/redis-exporter.env")
    shown = host_output(lab, "it1", "systemctl", "show", "prometheus-redis-exporter")

    assert applied.returncode == 0, applied.stdout
    assert states_with_changes(again) == []
    assert up == dict.fromkeys(REDIS_HOSTS, "1"), up
    assert cluster_metrics.get("redis_cluster_state") == "1", sorted(k for k in cluster_metrics if "cluster" in k)
    taken = backup.data  # one minion targeted: its return itself
    stamp = float(node_metrics[stamp_name])
    assert abs(stamp - datetime.datetime.fromisoformat(taken["timestamp"]).timestamp()) < 1, (stamp, taken)
    assert node_metrics['redis_backup_last_size_bytes{type="rdb"}'] not in ("", "0")
    assert environment == "600 root"
    secret = host_file(lab, "it1", "/etc/redis-salt/redis-exporter.env").read_text().split("REDIS_PASSWORD=")[1]
    assert secret.strip() and not [c for c in commands if secret.strip() in c or PASSWORD in c]
    assert secret.strip() not in shown and "--web.listen-address=" + REDIS_HOSTS["it1"] + ":9121" in shown

    deployment_file.write_text(yaml.safe_dump(deployment()))
    off = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    off_again = salt_cli.run("state.apply", "redis", minion_tgt="it*")

    assert off.returncode == 0, off.stdout
    assert host_run(lab, "it1", "systemctl", "is-active", "prometheus-redis-exporter").stdout.strip() != "active"
    assert not host_file(lab, "it1", "/etc/redis-salt/redis-exporter.env").exists()
    assert states_with_changes(off_again) == []


def machine_knobs():
    """The machine's own global settings that a lab host must never change."""
    return (Path("/proc/sys/vm/overcommit_memory").read_text(),
            Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text())


def test_the_host_baseline_raises_somaxconn_in_the_host_and_reports_the_machine_wide_settings(
        first_apply, salt_cli, lab_hosts):
    lab = lab_hosts[0]
    machine = machine_knobs()
    host_run(lab, "it1", "sysctl", "-w", "net.core.somaxconn=128", check=True)
    # The lab keeps the machine's global settings out of reach of its hosts.
    assert host_run(lab, "it1", "sysctl", "-w", "vm.overcommit_memory=1").returncode != 0

    applied = salt_cli.run("state.apply", "redis.sysctl", minion_tgt="it*")
    again = salt_cli.run("state.apply", "redis", minion_tgt="it*")

    assert applied.returncode == 0, applied.stdout
    assert state_by_id(applied, "it1", "redis-host-somaxconn")["changes"]
    assert host_output(lab, "it1", "sysctl", "-n", "net.core.somaxconn") == "511"
    assert "net.core.somaxconn = 511" in host_file(lab, "it1", "/etc/sysctl.d/60-redis-salt.conf").read_text()
    overcommit = state_by_id(applied, "it2", "redis-host-overcommit-memory-reported")
    assert overcommit["comment"].startswith(f"vm.overcommit_memory is {machine[0].strip()}")
    assert overcommit["comment"].endswith("not changed: host_baseline is report")
    thp = state_by_id(applied, "it2", "redis-host-transparent-hugepages-reported")["comment"]
    assert thp.startswith(f"transparent huge pages: {machine[1].split('[')[1].split(']')[0]}")
    assert machine_knobs() == machine
    assert states_with_changes(again) == []
    for host in REDIS_HOSTS:
        pid = host_output(lab, host, "systemctl", "show", "--property", "MainPID", "--value", "redis-server")
        limits = host_file(lab, host, f"/proc/{pid}/limits").read_text()
        open_files = next(line for line in limits.splitlines() if line.startswith("Max open files")).split()
        assert int(open_files[3]) >= 10000 + 32, limits
        assert "somaxconn" not in host_file(lab, host, "/var/log/redis/redis-server.log").read_text()


def connects(lab, host, address, port):
    """Whether a TCP connection from inside ``host`` to ``address:port`` opens within 3 s."""
    return host_run(lab, host, "timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}").returncode == 0


def test_the_firewall_opens_the_redis_ports_to_members_and_client_networks_only_and_goes_cleanly(
        first_apply, salt_cli, lab_hosts, deployment_file, restore_deployment):
    lab, bridge_ip = lab_hosts[0], lab_hosts[1]
    plain, plain_ip = PLAIN_HOST
    wait_cluster_ok()
    # Another table of the host's, which the firewall must leave alone.
    host_run(lab, "it1", "nft", "add", "table", "inet", "operators_own", check=True)
    assert connects(lab, plain, REDIS_HOSTS["it1"], 6379)
    # This test's own clients come from the lab's bridge: a client network.
    deployment_file.write_text(yaml.safe_dump(deployment(firewall=True, client_networks=[f"{bridge_ip}/32"])))
    try:
        applied = salt_cli.run("state.apply", "redis", minion_tgt="it*")
        again = salt_cli.run("state.apply", "redis", minion_tgt="it*")
        assert applied.returncode == 0, applied.stdout
        assert states_with_changes(again) == [], again.stdout
        for ip in REDIS_HOSTS.values():
            assert not connects(lab, plain, ip, 6379) and not connects(lab, plain, ip, 16379)
        assert connects(lab, "it2", REDIS_HOSTS["it1"], 16379) and connects(lab, "it2", REDIS_HOSTS["it1"], 6379)
        # Members still talk (bus, replication), and a client network's clients still write.
        client = cluster_client()
        client.set("firewall:on", "1")
        assert client.get("firewall:on") == "1"
        wait_cluster_ok()
        # Salt's own ports and every other port stay as they were.
        assert salt_cli.run("test.ping", minion_tgt="it1").data is True
        assert "operators_own" in host_output(lab, "it1", "nft", "list", "tables")

        # A client network reaches the Redis port, never the cluster bus.
        deployment_file.write_text(yaml.safe_dump(deployment(
            firewall=True, client_networks=[f"{bridge_ip}/32", f"{plain_ip}/32"])))
        widened = salt_cli.run("state.apply", "redis", minion_tgt="it*")
        assert widened.returncode == 0, widened.stdout
        assert connects(lab, plain, REDIS_HOSTS["it1"], 6379) and not connects(lab, plain, REDIS_HOSTS["it1"], 16379)
    finally:
        deployment_file.write_text(yaml.safe_dump(deployment()))
        off = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    assert off.returncode == 0, off.stdout
    for host, ip in REDIS_HOSTS.items():
        assert host_run(lab, host, "nft", "list", "table", "inet", "redis_salt").returncode != 0
        assert not host_file(lab, host, "/etc/systemd/system/redis-salt-firewall.service").exists()
        assert connects(lab, plain, ip, 16379)
    assert "operators_own" in host_output(lab, "it1", "nft", "list", "tables")
    host_run(lab, "it1", "nft", "delete", "table", "inet", "operators_own", check=True)
    assert states_with_changes(salt_cli.run("state.apply", "redis", minion_tgt="it*")) == []
