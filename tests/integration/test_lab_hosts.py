"""
The lab's hosts are systemd hosts, as an operator's are: what is enabled is per host, a
power cut takes every process of a host, a boot starts what is enabled (Redis and the
salt-minion included), and the deployment stays converged through it. These run after
test_deploy.py (they cut power and reconnect hosts).
"""

import pytest
import redis
from support.lab import PLAIN_HOST, REDIS_HOSTS, host_output, main_pid, node_client, wait_for_minions
from support.states import changed_ids
from support.waits import wait_until

pytestmark = pytest.mark.integration


def wait_for_ping(host, timeout=15):
    """True once ``host``'s server answers PING (a booting host starts it in seconds)."""
    wait_until(lambda: node_client(host).ping() is True, timeout, f"{host}'s Redis answering PING")
    return True


def test_every_host_boots_systemd_with_its_own_name_and_units(first_apply, lab_hosts):
    for host in [*REDIS_HOSTS, PLAIN_HOST[0]]:
        assert host_output(lab_hosts[0], host, "cat", "/proc/1/comm") == "systemd"
        assert host_output(lab_hosts[0], host, "hostname") == host
        assert host_output(lab_hosts[0], host, "systemctl", "is-system-running") == "running", host
        assert host_output(lab_hosts[0], host, "systemctl", "is-active", "salt-minion") == "active"
    ids = {host_output(lab_hosts[0], host, "cat", "/etc/machine-id") for host in [*REDIS_HOSTS, PLAIN_HOST[0]]}
    assert len(ids) == 4


def test_redis_is_enabled_at_boot_only_on_redis_hosts(first_apply, lab_hosts):
    assert host_output(lab_hosts[0], "it1", "systemctl", "is-enabled", "redis-server") == "enabled"
    # Cluster mode: the package's default Sentinel is stopped and disabled.
    assert host_output(lab_hosts[0], "it1", "systemctl", "is-enabled", "redis-sentinel") == "disabled"
    assert host_output(lab_hosts[0], PLAIN_HOST[0], "systemctl", "is-enabled", "redis-server") == "disabled"
    assert host_output(lab_hosts[0], PLAIN_HOST[0], "systemctl", "is-active", "redis-server") == "inactive"


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
    pid = main_pid(lab_hosts[0], "it3")
    assert pid != 0

    applied = salt_cli.run("state.apply", "redis", minion_tgt="it3")

    assert applied.returncode == 0
    assert changed_ids(applied.data) == []
    assert main_pid(lab_hosts[0], "it3") == pid


def test_partitioned_host_is_cut_off_until_healed(first_apply, lab_hosts):
    lab = lab_hosts[0]
    lab.set_link("it2", up=False)
    try:
        with pytest.raises(redis.RedisError):
            redis.Redis(host=REDIS_HOSTS["it2"], socket_connect_timeout=1, socket_timeout=1).ping()
    finally:
        lab.set_link("it2", up=True)
    assert wait_for_ping("it2") is True
