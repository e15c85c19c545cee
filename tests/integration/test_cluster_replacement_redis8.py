"""`salt-run redis_deployment.replace_hosts` onto Debian 13's Redis 8.0 (a lab of its own): a
3-node Redis 7.0 cluster on Debian 12 hosts moves onto three bare Debian 13 hosts running
Redis 8.0 (`cache.redis.server: redis`) while a cluster client writes: every acknowledged key
is there afterwards, the old hosts' Redis is stopped and disabled, a second run changes
nothing, and once the YAML drops the old hosts the apply changes nothing. Moving a Redis 8
node onto a Debian 13 host that runs Valkey 8.1 (`cache.redis.server_by_host`) is refused
before anything changes: Valkey 8.1 cannot load Redis 8's RDB format, and the two must never
share a cluster bus."""

import pytest
from support.lab import host_output, host_run
from support.replacement import lab_fixtures, move_under_writes, refused_move, running_server

pytestmark = pytest.mark.integration

SUBNET = "10.213.43"
PASSWORD = "redis 8's move #5"  # no `"` nor `\`: the Valkey host's pillar refuses them
# Each group of hosts: addresses, distribution, server.
OLD = {"old1": f"{SUBNET}.11", "old2": f"{SUBNET}.12", "old3": f"{SUBNET}.13"}
NEW = {"new1": f"{SUBNET}.21", "new2": f"{SUBNET}.22", "new3": f"{SUBNET}.23"}
VALKEY = {"vk1": f"{SUBNET}.31"}  # a bare Debian 13 host that would take a Redis 8 node's slots
GROUPS = {"old": (OLD, "debian12", "redis"), "new": (NEW, "debian13", "redis"),
          "valkey": (VALKEY, "debian13", "valkey")}

replacement_lab, replacement_master, cli = lab_fixtures("rr8", "r8-master", GROUPS, "old", PASSWORD)


def test_a_redis_7_cluster_moves_onto_debian_13_redis_8_hosts_under_writes(cli, replacement_lab, replacement_master):
    # An old host taken back is refused by the same code on the same Debian 12 host as in
    # test_cluster_replacement.py: that apply is not repeated here.
    move_under_writes(cli, replacement_lab, replacement_master, GROUPS, PASSWORD, refused_back=False)
    for host, address in NEW.items():
        server, version = running_server(address, PASSWORD)
        assert (server, version[:4]) == ("redis", "8.0."), (host, server, version)


def test_moving_a_redis_8_node_onto_valkey_is_refused_before_anything_changes(
        cli, replacement_lab, replacement_master):
    comment = refused_move(cli, replacement_lab, replacement_master, GROUPS, PASSWORD, ["new1"], "valkey")
    assert "slots would move from new1 (redis 8.0." in comment
    assert "to vk1 (valkey 8.1." in comment and "cannot load it" in comment, comment
    assert "new1 (redis 8.0." in comment and "and vk1 (valkey 8.1." in comment, comment
    assert "must never share a cluster" in comment, comment
    # No state ran there: Salt's config for its server was never written, and its Valkey is
    # the package's own, as the host booted (no cluster, no password).
    lab = replacement_lab[0]
    assert host_run(lab, "vk1", "test", "-e", "/etc/redis-salt/redis-server.conf").returncode != 0
    assert "include /etc/redis-salt" not in host_output(lab, "vk1", "cat", "/etc/valkey/valkey.conf")
    assert "cluster_enabled:0" in host_output(lab, "vk1", "valkey-cli", "INFO", "cluster")
