"""
The lab behaves like real hosts after `state.apply redis`: Redis is enabled at boot only
where it is deployed, a crashed host boots with its Redis, a partitioned host is cut off.
These run after test_deploy.py (they crash and reconnect hosts).
"""

import time

import pytest
import redis
from conftest import PLAIN_HOST, REDIS_HOSTS, host_file, node_client

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


def test_redis_is_enabled_at_boot_only_on_redis_hosts(first_apply, lab_hosts):
    def boot_links(host):
        return sorted(p.name for p in host_file(lab_hosts, host, "/etc/rc2.d").glob("S*redis*"))

    assert [name.lstrip("S0123456789") for name in boot_links("it1")] == ["redis-server"]
    assert boot_links(PLAIN_HOST[0]) == []


def test_crashed_host_boots_with_its_redis_and_minion(first_apply, lab_hosts, salt_minions, salt_cli):
    lab = lab_hosts[0]
    run_id = node_client("it3").info("server")["run_id"]

    lab.kill("it3")
    with pytest.raises(redis.ConnectionError):
        node_client("it3").ping()
    assert lab.boot("it3") == ["redis-server"]

    assert wait_for_ping("it3") is True
    assert node_client("it3").info("server")["run_id"] != run_id
    minion = salt_minions["it3"]
    minion.terminate()
    minion.start(start_timeout=120)
    assert salt_cli.run("test.ping", minion_tgt="it3").data is True


def test_partitioned_host_is_cut_off_until_healed(first_apply, lab_hosts):
    lab = lab_hosts[0]
    lab.set_link("it2", up=False)
    try:
        with pytest.raises(redis.RedisError):
            redis.Redis(host=REDIS_HOSTS["it2"], socket_connect_timeout=1, socket_timeout=1).ping()
    finally:
        lab.set_link("it2", up=True)
    assert wait_for_ping("it2") is True
