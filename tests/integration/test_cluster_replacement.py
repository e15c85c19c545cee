"""`salt-run redis_deployment.replace_hosts` (a lab of its own): a 3-node Redis 7.0 cluster on
Debian 12 hosts moves onto three bare Debian 13 hosts running Valkey 8.1 while a cluster client
writes: every acknowledged key is there afterwards, the old hosts' Redis is stopped and
disabled, a second run changes nothing, and once the YAML drops the old hosts the apply changes
nothing. Moving back (Valkey 8.1 -> Redis 7.0 on a Debian 12 host) is refused before anything
changes."""

import pytest
from support.lab import host_run
from support.replacement import lab_fixtures, move_under_writes, refused_move, running_server

pytestmark = pytest.mark.integration

SUBNET = "10.213.39"
PASSWORD = "replace's pass #3"  # Valkey 8.1 refuses `"` and `\` (tests/unit/test_deployment_server.py)
# Each group of hosts: addresses, distribution, server.
OLD = {"old1": f"{SUBNET}.11", "old2": f"{SUBNET}.12", "old3": f"{SUBNET}.13"}
NEW = {"new1": f"{SUBNET}.21", "new2": f"{SUBNET}.22", "new3": f"{SUBNET}.23"}
BACK = {"back1": f"{SUBNET}.31"}  # a Debian 12 host that would take Valkey's slots back
GROUPS = {"old": (OLD, "debian12", "redis"), "new": (NEW, "debian13", "valkey"), "back": (BACK, "debian12", "redis")}

replacement_lab, replacement_master, cli = lab_fixtures("rrepl", "repl-master", GROUPS, "old", PASSWORD)


def test_a_redis_7_cluster_moves_onto_debian_13_valkey_hosts_under_writes(cli, replacement_lab, replacement_master):
    move_under_writes(cli, replacement_lab, replacement_master, GROUPS, PASSWORD)
    for host, address in NEW.items():
        assert running_server(address, PASSWORD)[0] == "valkey", host


def test_moving_back_onto_an_older_redis_is_refused_before_anything_changes(
        cli, replacement_lab, replacement_master):
    comment = refused_move(cli, replacement_lab, replacement_master, GROUPS, PASSWORD, ["new1"], "back",
                           server="valkey")
    assert "slots would move from new1 (valkey 8.1." in comment
    assert "to back1 (redis 7.0." in comment and "cannot load it" in comment, comment
    # No state ran there: Salt's config for its server was never written.
    assert host_run(replacement_lab[0], "back1", "test", "-e", "/etc/redis-salt/redis-server.conf").returncode != 0
