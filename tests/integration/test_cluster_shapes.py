"""
Cluster mode with replicas, from bare hosts, on a lab of its own (six Redis hosts, two more
to grow onto, its own salt-master): one `salt '*' state.apply redis` gives three masters
each with its planned replica on another host, announcing the controllers' addresses; a
second apply changes nothing and restarts nothing. From other legal states the next apply
converges: a replica reset by hand is taken back; a master host whose data directory is
lost and that boots within node-timeout never starts bare while its old self still serves
slots (its replica takes over, no acknowledged write is lost, the bare node joins as a
replica); a master's power cut with its disk intact fails over and nothing is reverted;
growth 6 -> 8 under a writing client gives four masters with a replica each, and a
rebalance whose job is killed mid-move is closed and resumed by the next apply, every
acknowledged key kept; a formation cut by a power cut of the forming host is completed.
`salt-run redis_deployment.rolling_restart` under a writing client restarts each of the
eight servers once, each master after CLUSTER FAILOVER to its replica, losing no write.
"""

import shutil
import subprocess
import time

import pytest
import yaml
from support.cluster import ClusterWriter, cluster_client
from support.lab import (
    assert_no_password,
    boot_hosts,
    host_output,
    host_run,
    lab_of_its_own,
    master_of_its_own,
    redis_client,
    wait_for_minions,
)
from support.rolling import RoleWatcher, runner_events
from support.states import state_by_id, states_with_changes
from support.waits import wait_until

pytestmark = pytest.mark.integration

SUBNET = "10.213.15"
FIRST_SIX = {f"cs{n}": f"{SUBNET}.{10 + n}" for n in range(1, 7)}
GROWTH = {"cs7": f"{SUBNET}.17", "cs8": f"{SUBNET}.18"}
ALL = {**FIRST_SIX, **GROWTH}
PLANNED_REPLICAS = {"cs4": "cs1", "cs5": "cs2", "cs6": "cs3"}


def deployment(hosts):
    return {
        "cache": {"redis": {"password": "${REDIS_PASSWORD}", "host_baseline": "report", "replicas_per_master": 1,
                            "cluster_node_timeout_ms": 2000}},
        "nodes": {"controllers": [{"hostname": h, "ip_address": ALL[h], "services": {"redis": True}}
                                  for h in hosts]},
    }


@pytest.fixture(scope="module")
def shape_lab(tmp_path_factory):
    with lab_of_its_own(tmp_path_factory, "rshape", deployment(FIRST_SIX)) as own_lab:
        yield own_lab


@pytest.fixture(scope="module")
def shape_master(salt_factories, shape_lab):
    with master_of_its_own(salt_factories, shape_lab, "cs-master") as master:
        yield master


@pytest.fixture(scope="module")
def cli(shape_master, shape_lab):
    lab, _, config = shape_lab
    boot_hosts(lab, shape_master, config)
    salt_cli = shape_master.salt_cli(timeout=600)
    wait_for_minions(salt_cli, list(FIRST_SIX))
    return salt_cli


@pytest.fixture(scope="module")
def first_apply(cli):
    return cli.run("state.apply", "redis", minion_tgt="*")


def server(host):
    return redis_client(ALL[host], timeout=3)


def shape(hosts):
    """{host: ("master", slots) or ("replica", its master's host)}, each node's own word."""
    ids = {server(h).execute_command("CLUSTER", "MYID"): h for h in hosts}
    result = {}
    for host in hosts:
        fields = next(line for line in server(host).execute_command("CLUSTER", "NODES").splitlines()
                      if "myself" in line).split()
        if "slave" in fields[2]:
            result[host] = ("replica", ids.get(fields[3], fields[3]))
        else:
            result[host] = ("master", sum(int(r.partition("-")[2] or r) - int(r.partition("-")[0]) + 1
                                          for r in fields[8:] if not r.startswith("[")))
    return result


def cluster_check(lab, host):
    """`redis-cli --cluster check` as an operator runs it on a host: (exit code, output)."""
    done = host_run(lab, host, "redis-cli", "--cluster", "check", f"{ALL[host]}:6379", auth=True)
    return done.returncode, done.stdout + done.stderr


def run_ids(hosts):
    return {host: server(host).info("server")["run_id"] for host in hosts}


def healthy(hosts):
    return all("cluster_state:ok" in server(h).execute_command("CLUSTER", "INFO") for h in hosts)


def test_six_bare_hosts_form_three_masters_each_with_its_replica_on_another_host(first_apply, cli, shape_lab):
    lab = shape_lab[0]
    assert first_apply.returncode == 0, first_apply.stdout
    assert_no_password(first_apply.stdout, "the apply's output")
    wait_until(lambda: healthy(FIRST_SIX), 30, "cluster ok on 6 nodes")

    assert shape(FIRST_SIX) == {"cs1": ("master", 5461), "cs2": ("master", 5462), "cs3": ("master", 5461),
                                **{replica: ("replica", master) for replica, master in PLANNED_REPLICAS.items()}}
    for replica, master in PLANNED_REPLICAS.items():
        assert server(replica).info("replication")["master_host"] == ALL[master] != ALL[replica]
        wait_until(lambda: server(replica).info("replication")["master_link_status"] == "up", 30,
                   f"{replica}'s link to {master}")
    code, output = cluster_check(lab, "cs1")
    assert code == 0 and "[OK] All 16384 slots covered" in output and "[WARNING]" not in output, output
    before = run_ids(FIRST_SIX)

    again = cli.run("state.apply", "redis", minion_tgt="*")

    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    assert run_ids(FIRST_SIX) == before


def test_each_node_announces_the_controllers_address_set_live(first_apply, cli):
    for host in FIRST_SIX:
        announced = server(host).config_get("*-announce-ip")
        assert announced["cluster-announce-ip"] == announced["replica-announce-ip"] == ALL[host]
    before = run_ids(["cs3"])
    server("cs3").config_set("replica-announce-ip", "")  # as a hand-edit would leave it

    applied = cli.run("state.apply", "redis", minion_tgt="cs3")

    assert applied.returncode == 0, applied.stdout
    state = state_by_id(applied, None, "redis-server-runs-the-managed-settings")
    assert state["comment"] == "applied live: replica-announce-ip", state["comment"]
    assert server("cs3").config_get("replica-announce-ip")["replica-announce-ip"] == ALL["cs3"]
    assert run_ids(["cs3"]) == before


def test_a_replica_reset_by_hand_is_taken_back_by_the_next_apply(first_apply, cli):
    server("cs5").execute_command("CLUSTER", "RESET", "HARD")
    wait_until(lambda: not healthy(["cs1"]) or "noaddr" in server("cs1").execute_command("CLUSTER", "NODES"),
               30, "cs1 notices the reset node")

    repaired = cli.run("state.apply", "redis", minion_tgt="*")

    assert repaired.returncode == 0, repaired.stdout
    formed = state_by_id(repaired, "cs1", "redis-cluster-formed")
    assert "cs5 replicates cs2" in formed["comment"], formed["comment"]
    wait_until(lambda: healthy(FIRST_SIX), 30, "cluster ok on 6 nodes")
    assert shape(FIRST_SIX)["cs5"] == ("replica", "cs2")
    assert "cluster_known_nodes:6" in server("cs1").execute_command("CLUSTER", "INFO")


def test_a_master_that_lost_its_data_dir_never_starts_bare_and_its_replica_keeps_every_key(
    first_apply, cli, shape_lab
):
    lab = shape_lab[0]
    cluster = cluster_client(["cs1"], decode_responses=False, addresses=ALL)
    acknowledged = []
    for number in range(600):
        key = f"order:{number}"
        cluster.set(key, number)
        node = cluster.get_node_from_key(key)
        if node.host == ALL["cs2"]:
            cluster.get_redis_connection(node).execute_command("WAIT", 1, 2000)  # the replica has it
            acknowledged.append(key)
    cluster.close()
    assert acknowledged

    lab.kill("cs2")
    data = lab.host_root("cs2") / "upper" / "var" / "lib" / "redis"
    for entry in data.iterdir():  # the disk with the data directory is gone
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    lab.boot("cs2")
    wait_for_minions(cli, ["cs2"])
    # The guard keeps Redis down at boot: nothing at cs2's address for cs5 to copy.
    assert host_output(lab, "cs2", "systemctl", "is-active", "redis-server") != "active"
    wait_until(lambda: server("cs5").info("replication")["role"] == "master", 60, "cs5 took over")

    applied = cli.run("state.apply", "redis", minion_tgt="*")

    assert applied.returncode == 0, applied.stdout
    handed = state_by_id(applied, "cs2", "redis-cluster-predecessor-handed-over")
    assert "it may start bare" in handed["comment"], handed["comment"]
    formed = state_by_id(applied, "cs1", "redis-cluster-formed")
    assert "cs2 replicates cs5" in formed["comment"] and "EMPTY" not in formed["comment"], formed["comment"]
    wait_until(lambda: healthy(FIRST_SIX), 30, "cluster ok on 6 nodes")
    assert shape(FIRST_SIX)["cs2"] == ("replica", "cs5")
    reader = cluster_client(["cs3"], addresses=ALL)
    assert [reader.get(key) for key in acknowledged] == [key.split(":")[1] for key in acknowledged]
    reader.close()
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0 and states_with_changes(again) == [], again.stdout


def test_a_dead_masters_replica_takes_over_and_nothing_is_reverted(first_apply, cli, shape_lab):
    """A power cut of a master whose disk survives (cs5, master since the test above)."""
    lab = shape_lab[0]
    cluster = cluster_client(["cs1"], decode_responses=False, addresses=ALL)
    acknowledged = []
    for number in range(300):
        key = f"paid:{number}"
        cluster.set(key, number)
        node = cluster.get_node_from_key(key)
        if node.host == ALL["cs5"]:
            cluster.get_redis_connection(node).execute_command("WAIT", 1, 2000)  # cs2 has it
            acknowledged.append(key)
    cluster.close()
    assert acknowledged

    lab.kill("cs5")
    wait_until(lambda: server("cs2").info("replication")["role"] == "master", 60, "cs2 promoted")
    lab.boot("cs5")
    wait_for_minions(cli, ["cs5"])
    wait_until(lambda: shape(["cs2", "cs5"])["cs5"] == ("replica", "cs2"), 60, "cs5 back as cs2's replica")
    wait_until(lambda: healthy(FIRST_SIX), 30, "cluster ok on 6 nodes")

    again = cli.run("state.apply", "redis", minion_tgt="*")

    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    assert shape(["cs2", "cs5"]) == {"cs2": ("master", 5462), "cs5": ("replica", "cs2")}
    reader = cluster_client(["cs3"], addresses=ALL)
    assert [reader.get(key) for key in acknowledged] == [key.split(":")[1] for key in acknowledged]
    reader.close()


def apply_abandoned(cli, job, minions):
    """The operator gives up on the apply ``job`` (the salt CLI, which would wait its whole
    timeout for a host whose job is gone) and stops its jobs on ``minions``."""
    job.kill()
    job.wait(timeout=30)
    targets = ",".join(minions)
    cli.run("-L", "saltutil.kill_all_jobs", minion_tgt=targets)  # they stop waiting for the one gone

    def nothing_running():
        running = cli.run("-L", "saltutil.running", minion_tgt=targets).data
        return isinstance(running, dict) and len(running) == len(minions) and not any(running.values())

    wait_until(nothing_running, 60, "no state run left on " + targets)


def test_growth_by_two_under_a_writer_with_its_rebalance_killed_mid_slot_converges_with_every_key(
    first_apply, cli, shape_lab, shape_master
):
    lab, _, config = shape_lab
    bulk = cluster_client(["cs1"], socket_timeout=10, addresses=ALL)
    for batch in range(20):  # enough keys that the rebalance takes a while
        pipe = bulk.pipeline()
        for number in range(batch * 5000, (batch + 1) * 5000):
            pipe.set(f"bulk:{number}", "x" * 100)
        pipe.execute()
    bulk.close()
    config.write_text(yaml.safe_dump(deployment(ALL)))
    boot_hosts(lab, shape_master, config)
    wait_for_minions(cli, list(GROWTH))
    writer = ClusterWriter("grow", FIRST_SIX, addresses=ALL)
    writer.start()

    job = subprocess.Popen(cli.cmdline("state.apply", "redis", minion_tgt="*"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=cli.environ)

    def slot_open():
        return any("[" in line for h in ALL for line in server(h).execute_command("CLUSTER", "NODES").splitlines()
                   if "myself" in line)

    wait_until(slot_open, 120, "the rebalance opened a slot")
    # The apply's job on cs1, which moves the slots, killed while slots are open.
    host_run(lab, "cs1", "pkill", "-9", "-f", "ProcessPayload")
    apply_abandoned(cli, job, ALL)

    resumed = cli.run("state.apply", "redis", minion_tgt="*")
    writer.finish()

    assert resumed.returncode == 0, resumed.stdout
    formed = state_by_id(resumed, "cs1", "redis-cluster-formed")
    assert "resumed the rebalance onto" in formed["comment"], formed["comment"]
    wait_until(lambda: healthy(ALL), 60, "cluster ok on 8 nodes")
    grown = shape(ALL)
    masters = sorted(h for h, role in grown.items() if role[0] == "master")
    assert len(masters) == 4 and all(role[1] > 0 for h, role in grown.items() if role[0] == "master"), grown
    replicas_of = [role[1] for role in grown.values() if role[0] == "replica"]
    assert sorted(replicas_of) == masters, grown  # one replica each
    assert writer.errors == [] and writer.written > 100
    code, output = cluster_check(lab, "cs1")
    assert code == 0 and "[WARNING]" not in output, output
    assert writer.read_back("cs3") == writer.acknowledged_keys()
    assert sum(server(h).dbsize() for h in masters) == 100000 + writer.written + 600 + 300
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0 and states_with_changes(again) == [], again.stdout


def test_a_formation_cut_by_a_power_cut_of_the_forming_host_is_completed_by_the_next_apply(
    first_apply, cli, shape_lab
):
    lab = shape_lab[0]
    # Every node as bare as a new host's (each keeps its membership record): replicas first
    # (a replica refuses FLUSHALL; reset, it is emptied), then the masters.
    replicas = [h for h in ALL if server(h).info("replication")["role"] == "slave"]
    for host in replicas + [h for h in ALL if h not in replicas]:
        if host not in replicas:
            server(host).flushall()
        server(host).execute_command("CLUSTER", "RESET", "HARD")
    job = subprocess.Popen(cli.cmdline("state.apply", "redis", minion_tgt="*"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=cli.environ)

    def slots_being_assigned():
        return any("cluster_slots_assigned:0" not in server(h).execute_command("CLUSTER", "INFO") for h in ALL)

    wait_until(slots_being_assigned, 120, "the formation assigning slots")
    lab.kill("cs1")  # the host that forms the cluster, at the worst moment
    apply_abandoned(cli, job, sorted(set(ALL) - {"cs1"}))
    lab.boot("cs1")
    wait_for_minions(cli, ["cs1"])

    completed = cli.run("state.apply", "redis", minion_tgt="*")

    assert completed.returncode == 0, completed.stdout
    wait_until(lambda: healthy(ALL), 60, "cluster ok on 8 nodes")
    formed = shape(ALL)
    masters = sorted(h for h, role in formed.items() if role[0] == "master")
    assert masters == ["cs1", "cs2", "cs3", "cs4"] and sum(formed[h][1] for h in masters) == 16384, formed
    assert sorted(role[1] for role in formed.values() if role[0] == "replica") == masters, formed
    code, output = cluster_check(lab, "cs1")
    assert code == 0 and "[WARNING]" not in output, output
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0 and states_with_changes(again) == [], again.stdout


def test_a_rolling_restart_under_a_writing_client_restarts_each_server_once_and_each_master_after_its_failover(
    first_apply, cli, shape_lab, shape_master, event_listener
):
    lab = shape_lab[0]
    wait_until(lambda: healthy(ALL), 60, "cluster ok on 8 nodes")
    masters = {h for h in ALL if server(h).info("replication")["role"] == "master"}
    watcher = RoleWatcher({h: server(h) for h in ALL})
    watcher.start()
    writer = ClusterWriter("roll", list(ALL), addresses=ALL)
    writer.start()
    wait_until(lambda: writer.written > 100, 30, "the writer writes")
    fired_after = time.time()

    rolled = shape_master.salt_run_cli(timeout=900).run("redis_deployment.rolling_restart")

    writer.finish()
    watcher.finish()
    assert rolled.returncode == 0, rolled.stdout
    assert_no_password(rolled.stdout, "the roll's output")
    assert len(masters) == 4 and watcher.problems(masters) == [], watcher.seen
    assert writer.errors == [] and writer.written > 100
    assert writer.read_back("cs3") == writer.acknowledged_keys()
    wait_until(lambda: healthy(ALL), 30, "cluster ok on 8 nodes")
    code, output = cluster_check(lab, "cs1")
    assert code == 0 and "[WARNING]" not in output, output
    events = runner_events(event_listener, shape_master, "redis/rolling/*/restarted", fired_after, count=8,
                           timeout=30)
    assert sorted(tag for tag, _ in events) == sorted(f"redis/rolling/{h}/restarted" for h in ALL)
    assert {data["node"] for _, data in events if data["failed_over_to"]} == masters


def test_a_start_only_change_is_left_pending_by_a_plain_apply_and_rolled_by_the_orchestration(
    first_apply, cli, shape_lab, shape_master
):
    """Last in this module: the servers keep the changed log file."""
    _, _, config = shape_lab
    wait_until(lambda: healthy(ALL), 60, "cluster ok on 8 nodes")
    logfile = "/var/log/redis/redis-server-rolled.log"
    (config.parent / "pillar" / "redis.sls").write_text(yaml.safe_dump({"redis": {"logfile": logfile}}))
    before = run_ids(ALL)
    writer = ClusterWriter("orchestrated", list(ALL), addresses=ALL)
    writer.start()
    wait_until(lambda: writer.written > 100, 30, "the writer writes")

    applied = cli.run("state.apply", "redis", minion_tgt="*")

    assert applied.returncode == 0, applied.stdout
    for host in ALL:
        settings = state_by_id(applied, host, "redis-server-runs-the-managed-settings")
        assert settings["result"] is True and "restart pending for logfile" in settings["comment"], settings
    assert run_ids(ALL) == before  # a plain apply restarted nothing
    assert cli.run("redis_cluster.status", minion_tgt="cs1").data["restart_pending"] == ["logfile"]

    orchestrated = shape_master.salt_run_cli(timeout=900).run("state.orchestrate", "redis.orchestrate")

    writer.finish()
    assert orchestrated.returncode == 0, orchestrated.stdout
    steps = next(iter(orchestrated.data["data"].values()))
    rolled = next(step for step in steps.values() if step["__id__"] == "redis-pending-restarts-rolled")
    assert rolled["result"] is True and len(rolled["changes"]["return"]["restarted"]) == len(ALL), rolled
    after = run_ids(ALL)
    assert all(after[h] != before[h] for h in ALL)
    assert all(server(h).config_get("logfile") == {"logfile": logfile} for h in ALL)
    assert writer.errors == [] and writer.read_back("cs3") == writer.acknowledged_keys()
    wait_until(lambda: healthy(ALL), 30, "cluster ok on 8 nodes")
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0 and states_with_changes(again) == [], again.stdout
    assert run_ids(ALL) == after
