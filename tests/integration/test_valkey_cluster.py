"""
`cache.redis.server: valkey` on three bare Debian 13 hosts (a lab of its own, its own
salt-master): one `salt '*' state.apply redis` installs Debian's valkey-server 8.1, forms the
cluster (`valkey-cli --cluster check` clean), the next apply changes nothing; status and the
preflight name the server, its version and RDB format; a backup set taken while a client
writes restores every acknowledged key after FLUSHALL. The same deployment on a Debian 12
host is refused before anything changes, naming the host and what Debian 12 offers. Three
more hosts with `replicas_per_master: 1` become a Valkey replica each of a master on another
host; a master host killed fails over to its replica with every key the replica confirmed,
boots back as its replica, and the next apply reverts nothing.
"""

import shutil

import pytest
import yaml
from support.cluster import ClusterWriter, cluster_client, slots_served
from support.lab import (
    REDIS_PORT,
    boot_hosts,
    booted_cli,
    host_output,
    host_run,
    lab_of_its_own,
    master_of_its_own,
    password_forms,
    redis_client,
    wait_for_minions,
)
from support.states import states_with_changes
from support.waits import wait_until

pytestmark = pytest.mark.integration

SUBNET = "10.213.33"
# Not the suite's PASSWORD: Valkey 8.1 rewrites `"` and `\` unescaped, so the pillar refuses
# them for Valkey (tests/unit/test_deployment_server.py). Spaces, `#` and `'` it keeps.
PASSWORD = "valkey's pass #8"
HOSTS = {"vk1": f"{SUBNET}.11", "vk2": f"{SUBNET}.12", "vk3": f"{SUBNET}.13"}
GROWN = ("vk4", f"{SUBNET}.14")
BOOKWORM = ("vk5", f"{SUBNET}.15")
REPLICAS = {"vk6": f"{SUBNET}.16", "vk7": f"{SUBNET}.17", "vk8": f"{SUBNET}.18"}


def deployment(with_bookworm=False, grown=None, replicas=False):
    """The YAML; ``grown``: None without vk4, True with vk4 running Redis, False with vk4 as a
    controller without Redis (what an operator writes before `redis_cluster.remove_node`);
    ``replicas``: vk6-vk8 listed too, with ``replicas_per_master: 1``."""
    hosts = dict(HOSTS, **{GROWN[0]: GROWN[1]}) if grown is not None else dict(HOSTS)
    if replicas:
        hosts.update(REPLICAS)
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": grown is not False or h != GROWN[0]},
                    "lab": {"os": "debian13"}} for h, ip in hosts.items()]
    if with_bookworm:
        controllers.append({"hostname": BOOKWORM[0], "ip_address": BOOKWORM[1], "services": {"redis": True}})
    settings = {"password": "${REDIS_PASSWORD}", "host_baseline": "report", "server": "valkey"}
    if replicas:
        settings["replicas_per_master"] = 1
    return {"cache": {"redis": settings}, "nodes": {"controllers": controllers}}


@pytest.fixture(scope="module")
def valkey_lab(tmp_path_factory):
    if shutil.which("debootstrap") is None:
        pytest.fail("integration prerequisite missing: the debootstrap command (run `make setup` as root)")
    with lab_of_its_own(tmp_path_factory, "rvkc", deployment()) as own_lab:
        yield own_lab


@pytest.fixture(scope="module")
def valkey_master(salt_factories, valkey_lab):
    with master_of_its_own(salt_factories, valkey_lab, "vk-master", password=PASSWORD) as master:
        yield master


@pytest.fixture(scope="module")
def cli(valkey_master, valkey_lab):
    return booted_cli(valkey_master, valkey_lab, HOSTS)


@pytest.fixture(scope="module")
def first_apply(cli):
    return cli.run("state.apply", "redis", minion_tgt="*")


def node(host):
    return redis_client(HOSTS[host], REDIS_PORT, password=PASSWORD)


def wait_cluster_ok(timeout=60):
    wait_until(lambda: all("cluster_state:ok" in node(h).execute_command("CLUSTER", "INFO") for h in HOSTS),
               timeout, "cluster_state:ok on every node")


def test_bare_debian_13_hosts_form_a_valkey_cluster_in_one_apply(first_apply, cli, valkey_lab):
    lab = valkey_lab[0]
    assert first_apply.returncode == 0, first_apply.stdout
    assert not any(form in first_apply.stdout for form in password_forms(PASSWORD))
    for host in HOSTS:
        info = node(host).info("server")
        assert (info["server_name"], info["valkey_version"][:4]) == ("valkey", "8.1."), info
        assert host_output(lab, host, "systemctl", "is-active", "valkey-server").strip() == "active"
    check = host_run(lab, "vk2", "valkey-cli", "--cluster", "check", f"{HOSTS['vk1']}:{REDIS_PORT}", auth=PASSWORD)
    assert check.returncode == 0, check.stdout
    assert "[OK] All 16384 slots covered." in check.stdout
    assert "[ERR]" not in check.stdout and "[WARNING]" not in check.stdout, check.stdout
    # Valkey's own places: its data directory holds the cluster's nodes file, its config includes Salt's.
    assert host_run(lab, "vk1", "test", "-s", f"/var/lib/valkey/nodes-{REDIS_PORT}.conf").returncode == 0
    assert "include /etc/redis-salt/redis-server.conf" in host_output(lab, "vk1", "cat", "/etc/valkey/valkey.conf")

    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == [], [(m, s["__id__"], s["comment"]) for m, states in again.data.items()
                                              for s in states.values() if s["changes"]]


def test_status_and_the_preflight_name_the_server_version_and_format(first_apply, cli, valkey_master):
    status = cli.run("redis_cluster.status", minion_tgt="vk1")
    assert (status.data["server"], status.data["version"][:4], status.data["rdb_format"]) == ("valkey", "8.1.", 11)
    assert status.data["redis_mode"] == "cluster"
    preflight = valkey_master.salt_run_cli(timeout=120).run("redis_deployment.check")
    assert preflight.returncode == 0, preflight.stdout
    line = next(line for line in preflight.data["plan"] if line.startswith("vk1 ("))
    assert ": minion vk1, valkey 8.1." in line and " on Debian 13" in line, line
    health = cli.run("redis_cluster.health", minion_tgt="*")
    for host in HOSTS:
        assert (health.data[host]["status"], health.data[host]["code"]) == ("OK", 0), health.data[host]


def test_a_backup_set_taken_under_writes_restores_every_acknowledged_key(first_apply, cli, valkey_master):
    wait_cluster_ok()
    writer = ClusterWriter("vk", hosts=list(HOSTS), addresses=HOSTS, password=PASSWORD)
    writer.start()
    wait_until(lambda: writer.written >= 200, 30, "200 writes acknowledged")
    before_backup = writer.written
    run = valkey_master.salt_run_cli(timeout=600).run("redis_backup.run", "type=rdb", "compress=zstd")
    writer.finish()
    assert run.returncode == 0, run.stdout
    assert run.data["status"] == "complete", run.data
    assert writer.errors == []

    for host in HOSTS:
        node(host).flushall()
    restored = valkey_master.salt_run_cli(timeout=600).run("redis_backup.restore", f"set={run.data['set_id']}",
                                                           "force=True")
    assert restored.returncode == 0, restored.stdout
    wait_cluster_ok()

    after = writer.read_back("vk2")
    # Every write acknowledged before the backup began is back with its value; a later one
    # may be in the set or not (each node's snapshot is its own point in time), never altered.
    missing = [n for n in range(before_backup) if after[f"vk:{n}"] != str(n)]
    assert missing == [], f"{len(missing)} of {before_backup} acknowledged keys lost: {missing[:10]}"
    assert all(value in (None, key.split(":")[1]) for key, value in after.items())


def test_a_fourth_valkey_host_joins_under_writes_and_remove_node_takes_it_out(
        first_apply, cli, valkey_lab, valkey_master):
    lab, _, config = valkey_lab
    wait_cluster_ok()
    config.write_text(yaml.safe_dump(deployment(grown=True)))
    boot_hosts(lab, valkey_master, config)
    wait_for_minions(cli, [GROWN[0]])
    addresses = dict(HOSTS, **{GROWN[0]: GROWN[1]})
    writer = ClusterWriter("vkgrow", hosts=list(HOSTS), addresses=addresses, password=PASSWORD)
    writer.start()
    try:
        grown = cli.run("state.apply", "redis", minion_tgt="*")
        assert grown.returncode == 0, grown.stdout
        newcomer = redis_client(GROWN[1], REDIS_PORT, password=PASSWORD)
        assert newcomer.info("server")["server_name"] == "valkey"
        owned = slots_served(newcomer)
        assert 4096 - 200 <= owned <= 4096 + 200, owned

        config.write_text(yaml.safe_dump(deployment(grown=False)))
        removed = valkey_master.salt_run_cli(timeout=600).run("redis_cluster.remove_node", f"node={GROWN[0]}")
    finally:
        writer.finish()
    assert removed.returncode == 0, removed.stdout
    assert f"{GROWN[0]}: valkey-server stopped and disabled" in removed.data["actions"], removed.data
    # The client kept writing while vk4's slots moved: the cluster only gained keys.
    assert removed.data["keys_after"] >= removed.data["keys_before"]
    wait_cluster_ok()
    assert "cluster_known_nodes:3" in node("vk1").execute_command("CLUSTER", "INFO")
    assert host_output(lab, GROWN[0], "systemctl", "is-active", "valkey-server") == "inactive"
    assert writer.errors == [] and writer.written > 50
    assert writer.read_back("vk2") == writer.acknowledged_keys()
    again = cli.run("state.apply", "redis", minion_tgt="vk[1-3]")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []


def test_valkey_on_a_debian_12_host_is_refused_before_anything_changes(first_apply, cli, valkey_lab, valkey_master):
    lab, _, config = valkey_lab
    config.write_text(yaml.safe_dump(deployment(with_bookworm=True)))
    try:
        boot_hosts(lab, valkey_master, config)
        wait_for_minions(cli, [BOOKWORM[0]])
        preflight = valkey_master.salt_run_cli(timeout=120).run("redis_deployment.check")
        assert preflight.returncode != 0
        problem = preflight.data["problems"][0]
        assert "cache.redis.server: host vk5 runs Debian 12, whose packages offer redis only, not valkey" in problem

        refused = cli.run("state.apply", "redis", minion_tgt=BOOKWORM[0])
        assert refused.returncode != 0
        comments = [s["comment"] for s in refused.data.values() if s["result"] is False]
        assert comments and all("host vk5 runs Debian 12" in c for c in comments), comments
        assert all(not s["changes"] for s in refused.data.values())
        assert host_run(lab, BOOKWORM[0], "dpkg", "-s", "valkey-server").returncode != 0
        assert PASSWORD not in refused.stdout
    finally:
        config.write_text(yaml.safe_dump(deployment()))


def roles(hosts):
    """{host: ("master", None) or ("replica", its master's host)}, each node's own word."""
    addresses = {**HOSTS, **REPLICAS}
    ids = {redis_client(addresses[h], REDIS_PORT, password=PASSWORD).execute_command("CLUSTER", "MYID"): h
           for h in hosts}
    result = {}
    for host in hosts:
        myself = next(line for line in redis_client(addresses[host], REDIS_PORT, password=PASSWORD)
                      .execute_command("CLUSTER", "NODES").splitlines() if "myself" in line).split()
        result[host] = ("replica", ids.get(myself[3], myself[3])) if "slave" in myself[2] else ("master", None)
    return result


def test_three_more_hosts_become_a_valkey_replica_each_and_a_dead_master_fails_over_keeping_every_key(
        first_apply, cli, valkey_lab, valkey_master):
    lab, _, config = valkey_lab
    everyone = {**HOSTS, **REPLICAS}
    wait_cluster_ok()
    config.write_text(yaml.safe_dump(deployment(replicas=True)))
    boot_hosts(lab, valkey_master, config)
    wait_for_minions(cli, list(REPLICAS))

    grown = cli.run("-L", "state.apply", "redis", minion_tgt=",".join(everyone))

    assert grown.returncode == 0, grown.stdout
    shape = roles(everyone)
    masters = sorted(h for h, (role, _) in shape.items() if role == "master")
    assert masters == sorted(HOSTS), shape  # no master lost its slots to a newcomer
    assert sorted(master for role, master in shape.values() if role == "replica") == masters, shape
    victim = "vk1"
    heir = next(h for h, (role, master) in shape.items() if master == victim)
    wait_until(lambda: redis_client(everyone[heir], REDIS_PORT, password=PASSWORD).info("replication")
               ["master_link_status"] == "up", 60, f"{heir} replicating {victim}")
    client = cluster_client(["vk2"], decode_responses=False, addresses=everyone, password=PASSWORD)
    acknowledged = []
    for number in range(300):
        key = f"vkpaid:{number}"
        client.set(key, number)
        owner = client.get_node_from_key(key)
        if owner.host == HOSTS[victim]:
            assert client.get_redis_connection(owner).execute_command("WAIT", 1, 2000) == 1  # the heir has it
            acknowledged.append(key)
    client.close()
    assert acknowledged

    lab.kill(victim)
    wait_until(lambda: roles([heir])[heir][0] == "master", 60, f"{heir} promoted")
    lab.boot(victim)
    wait_for_minions(cli, [victim])
    wait_until(lambda: roles([victim, heir])[victim] == ("replica", heir), 60, f"{victim} back as {heir}'s replica")
    wait_until(lambda: all("cluster_state:ok" in redis_client(ip, REDIS_PORT, password=PASSWORD)
                           .execute_command("CLUSTER", "INFO") for ip in everyone.values()), 60, "cluster ok")

    again = cli.run("-L", "state.apply", "redis", minion_tgt=",".join(everyone))
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []
    assert roles([victim, heir]) == {victim: ("replica", heir), heir: ("master", None)}  # nothing reverted
    reader = cluster_client(["vk3"], addresses=everyone, password=PASSWORD)
    assert [reader.get(key) for key in acknowledged] == [key.split(":")[1] for key in acknowledged]
    reader.close()
