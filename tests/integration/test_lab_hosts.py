"""
The lab's hosts are systemd hosts, as an operator's are: what is enabled is per host, a
power cut takes every process of a host, a boot starts what is enabled (Redis and the
salt-minion included), and the deployment stays converged through it. These run after
test_deploy.py (they cut power and reconnect hosts).
"""

import subprocess
import time

import pytest
import redis
from conftest import PLAIN_HOST, REDIS_HOSTS, main_pid, node_client, wait_for_minions

pytestmark = pytest.mark.integration


def wait_for_ping(host, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return node_client(host).ping()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def in_host(lab_hosts, host, *argv):
    return subprocess.run(lab_hosts[0].enter(host, argv), capture_output=True, text=True).stdout.strip()


def test_every_host_boots_systemd_with_its_own_name_and_units(first_apply, lab_hosts):
    for host in [*REDIS_HOSTS, PLAIN_HOST[0]]:
        assert in_host(lab_hosts, host, "cat", "/proc/1/comm") == "systemd"
        assert in_host(lab_hosts, host, "hostname") == host
        assert in_host(lab_hosts, host, "systemctl", "is-system-running") == "running", host
        assert in_host(lab_hosts, host, "systemctl", "is-active", "salt-minion") == "active"
    ids = {in_host(lab_hosts, host, "cat", "/etc/machine-id") for host in [*REDIS_HOSTS, PLAIN_HOST[0]]}
    assert len(ids) == 4


def test_redis_is_enabled_at_boot_only_on_redis_hosts(first_apply, lab_hosts):
    assert in_host(lab_hosts, "it1", "systemctl", "is-enabled", "redis-server") == "enabled"
    # Cluster mode: the package's default Sentinel is stopped and disabled.
    assert in_host(lab_hosts, "it1", "systemctl", "is-enabled", "redis-sentinel") == "disabled"
    assert in_host(lab_hosts, PLAIN_HOST[0], "systemctl", "is-enabled", "redis-server") == "disabled"
    assert in_host(lab_hosts, PLAIN_HOST[0], "systemctl", "is-active", "redis-server") == "inactive"


def test_power_cut_and_boot_bring_back_redis_and_minion_converged(first_apply, lab_hosts, salt_cli):
    lab = lab_hosts[0]
    run_id = node_client("it3").info("server")["run_id"]
    assert len(lab.processes("it3")) > 3

    lab.kill("it3")

    assert lab.processes("it3") == []
    with pytest.raises(redis.ConnectionError):
        node_client("it3").ping()
    lab.boot("it3")
    assert wait_for_ping("it3") is True
    assert node_client("it3").info("server")["run_id"] != run_id
    wait_for_minions(salt_cli, ["it3"])
    pid = main_pid(lab_hosts, "it3")
    assert pid != 0

    applied = salt_cli.run("state.apply", "redis", minion_tgt="it3")

    assert applied.returncode == 0
    assert sorted(v["__id__"] for v in applied.data.values() if v["changes"]) == []
    assert main_pid(lab_hosts, "it3") == pid


def test_partitioned_host_is_cut_off_until_healed(first_apply, lab_hosts):
    lab = lab_hosts[0]
    lab.set_link("it2", up=False)
    try:
        with pytest.raises(redis.RedisError):
            redis.Redis(host=REDIS_HOSTS["it2"], socket_connect_timeout=1, socket_timeout=1).ping()
    finally:
        lab.set_link("it2", up=True)
    assert wait_for_ping("it2") is True
