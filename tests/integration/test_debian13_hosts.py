"""
Debian 13 lab hosts (`lab: {os: debian13}` on a controller) on a lab of its own, beside a
Debian 12 one, both from bare hosts: each boots its own systemd from its own release, its
salt-minion (the master's Salt) reports the host's release in its grains, and each host
runs the Redis its distribution ships (8.0 on Debian 13, 7.0 on Debian 12).

Debian 13 ships Valkey too: a Debian 13 host whose config says `cache.redis.server: valkey`
starts as if only the valkey-* packages had been installed, one whose config says redis (or
nothing) as if only the redis-* ones had. Those come from a second config booted into the
same lab at the same time (the server is the deployment's choice, one per YAML); the master
serves the first config only.

The Debian 13 root file system is built once (lab/debian13.py; about two minutes the first
time on a machine) and reused from its cache by every later lab and run.
"""

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from support.lab import PASSWORD, ROOT, host_output, lab_of_its_own, master_of_its_own, wait_for_minions

pytestmark = pytest.mark.integration

SUBNET = "10.213.27"
TRIXIE = ("d13a", f"{SUBNET}.11")
BOOKWORM = ("d12a", f"{SUBNET}.12")
# The second config's hosts: `cache.redis.server: valkey`, a Redis controller and one without Redis.
VALKEY = ("d13v", f"{SUBNET}.13")
VALKEY_QUIET = ("d13n", f"{SUBNET}.14")
REDIS_UNITS = ("redis-server", "redis-sentinel")
VALKEY_UNITS = ("valkey-server", "valkey-sentinel")


def deployment():
    controllers = [
        {"hostname": TRIXIE[0], "ip_address": TRIXIE[1], "services": {"redis": True}, "lab": {"os": "debian13"}},
        {"hostname": BOOKWORM[0], "ip_address": BOOKWORM[1], "services": {"redis": True}},
    ]
    return {"cache": {"redis": {"password": "${REDIS_PASSWORD}", "host_baseline": "report"}},
            "nodes": {"controllers": controllers}}


def valkey_deployment():
    controllers = [
        {"hostname": VALKEY[0], "ip_address": VALKEY[1], "services": {"redis": True}, "lab": {"os": "debian13"}},
        {"hostname": VALKEY_QUIET[0], "ip_address": VALKEY_QUIET[1], "services": {"redis": False},
         "lab": {"os": "debian13"}},
    ]
    return {"cache": {"redis": {"password": "${REDIS_PASSWORD}", "server": "valkey"}},
            "nodes": {"controllers": controllers}}


@pytest.fixture(scope="module")
def debian13_lab(tmp_path_factory):
    # Under CI=true as everywhere: a missing prerequisite fails, it never skips.
    if shutil.which("debootstrap") is None:
        pytest.fail("integration prerequisite missing: the debootstrap command (run `make setup` as root)")
    with lab_of_its_own(tmp_path_factory, "rd13", deployment()) as own_lab:
        yield own_lab


@pytest.fixture(scope="module")
def debian13_master(salt_factories, debian13_lab):
    with master_of_its_own(salt_factories, debian13_lab, "d13-master") as master:
        yield master


@pytest.fixture(scope="module")
def cli(debian13_master, debian13_lab):
    from lab.hosts import read_hosts  # pylint: disable=import-outside-toplevel
    from lab.saltconf import minion_settings  # pylint: disable=import-outside-toplevel

    lab, _, config = debian13_lab
    valkey_config = config.parent / "valkey.yaml"
    valkey_config.write_text(yaml.safe_dump(valkey_deployment()))
    ports = {"master_port": debian13_master.config["ret_port"], "publish_port": debian13_master.config["publish_port"]}
    # Every host of both configs boots at once. `make test` has built the Debian 13 root
    # (make debian13-root); run alone, this builds it first when the machine has none cached
    # (it needs the mirror then).
    lab.ensure_hosts(read_hosts(config) + read_hosts(valkey_config),
                     lambda name, bridge: minion_settings(name, bridge, **ports))
    salt_cli = debian13_master.salt_cli(timeout=120)
    wait_for_minions(salt_cli, [TRIXIE[0], BOOKWORM[0]])
    return salt_cli


def lab_exec(lab, host, *argv):
    """`python -m lab exec HOST ARGV...` as an operator types it (REDISCLI_AUTH set to the
    deployment's password, which these fresh servers do not ask for)."""
    env = dict(os.environ, LAB_STATE_DIR=str(lab.state_dir), LAB_NAME=lab.name, REDIS_PASSWORD=PASSWORD)
    return subprocess.run([sys.executable, "-m", "lab", "exec", host, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def installed(lab, host, *packages):
    """Those of ``packages`` dpkg has installed on ``host``."""
    listed = host_output(lab, host, "dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *packages)
    return {line.split()[0] for line in listed.splitlines() if line.endswith(" installed")}


def test_each_host_reports_its_own_release_in_its_grains(cli):
    grains = cli.run("-L", "grains.item", "os", "osrelease", "oscodename", minion_tgt=f"{TRIXIE[0]},{BOOKWORM[0]}")

    assert grains.returncode == 0, grains
    assert grains.data == {
        TRIXIE[0]: {"os": "Debian", "osrelease": "13", "oscodename": "trixie"},
        BOOKWORM[0]: {"os": "Debian", "osrelease": "12", "oscodename": "bookworm"},
    }


def test_the_debian13_minion_runs_the_masters_salt(cli, debian13_master):
    master_version = debian13_master.salt_run_cli(timeout=60).run("manage.versions")
    versions = cli.run("-L", "test.version", minion_tgt=f"{TRIXIE[0]},{BOOKWORM[0]}")

    assert master_version.returncode == 0, master_version
    assert versions.data == {TRIXIE[0]: master_version.data["Master"], BOOKWORM[0]: master_version.data["Master"]}


def test_each_host_boots_its_own_systemd_and_runs_its_distributions_redis(cli, debian13_lab):
    lab = debian13_lab[0]
    assert host_output(lab, TRIXIE[0], "cat", "/etc/debian_version").startswith("13.")
    assert host_output(lab, TRIXIE[0], "systemctl", "--version").startswith("systemd 257")
    for host in (TRIXIE[0], BOOKWORM[0]):
        assert host_output(lab, host, "systemctl", "is-system-running") == "running", host
        assert host_output(lab, host, "systemctl", "is-active", "salt-minion", "redis-server") == "active\nactive"

    assert " v=8.0." in host_output(lab, TRIXIE[0], "redis-server", "--version")
    assert " v=7.0." in host_output(lab, BOOKWORM[0], "redis-server", "--version")
    # What runs is the host's own package, not only what its PATH finds.
    assert host_output(lab, TRIXIE[0], "redis-cli", "INFO", "server").count("redis_version:8.0.") == 1


def test_a_valkey_host_starts_with_the_valkey_packages_only_their_server_answering(cli, debian13_lab):
    lab = debian13_lab[0]
    host = VALKEY[0]
    assert host_output(lab, host, "systemctl", "is-active", *VALKEY_UNITS) == "active\nactive"
    assert host_output(lab, host, "systemctl", "is-enabled", *VALKEY_UNITS) == "enabled\nenabled"
    # The alias both Sentinels' units claim is Valkey's, as valkey-sentinel's postinst leaves it.
    assert host_output(lab, host, "systemctl", "show", "-p", "Id", "--value", "sentinel.service") == \
        "valkey-sentinel.service"
    ping = lab_exec(lab, host, "valkey-cli", "-h", "127.0.0.1", "-p", "6379", "PING")
    assert (ping.returncode, ping.stdout) == (0, "PONG\n"), ping.stderr
    assert "server_name:valkey" in host_output(lab, host, "valkey-cli", "INFO", "server")
    # Nothing of Redis: not running, its units and packages gone (purged: no compat names).
    assert host_output(lab, host, "systemctl", "is-active", *REDIS_UNITS) == "inactive\ninactive"
    assert host_output(lab, host, "systemctl", "is-enabled", *REDIS_UNITS) == "not-found\nnot-found"
    assert installed(lab, host, "redis-server", "redis-sentinel", "redis-tools", "valkey-server",
                     "valkey-sentinel", "valkey-tools") == {"valkey-server", "valkey-sentinel", "valkey-tools"}


def test_a_redis_host_of_debian13_starts_with_the_redis_packages_only(cli, debian13_lab):
    lab = debian13_lab[0]
    host = TRIXIE[0]
    assert host_output(lab, host, "systemctl", "is-active", *REDIS_UNITS) == "active\nactive"
    assert host_output(lab, host, "systemctl", "show", "-p", "Id", "--value", "sentinel.service") == \
        "redis-sentinel.service"
    ping = lab_exec(lab, host, "redis-cli", "-h", "127.0.0.1", "PING")
    assert (ping.returncode, ping.stdout) == (0, "PONG\n"), ping.stderr
    assert host_output(lab, host, "systemctl", "is-active", *VALKEY_UNITS) == "inactive\ninactive"
    assert host_output(lab, host, "systemctl", "is-enabled", *VALKEY_UNITS) == "not-found\nnot-found"
    assert installed(lab, host, "redis-server", "redis-sentinel", "redis-tools", "valkey-server",
                     "valkey-sentinel", "valkey-tools") == {"redis-server", "redis-sentinel", "redis-tools"}


def test_a_valkey_controller_without_redis_runs_neither_server(cli, debian13_lab):
    """As on Debian 12: the packages there, their units disabled (a witness Sentinel is the
    states' to enable)."""
    lab = debian13_lab[0]
    host = VALKEY_QUIET[0]
    assert host_output(lab, host, "systemctl", "is-active", *VALKEY_UNITS, *REDIS_UNITS) == \
        "inactive\ninactive\ninactive\ninactive"
    assert host_output(lab, host, "systemctl", "is-enabled", *VALKEY_UNITS) == "disabled\ndisabled"
    assert installed(lab, host, "redis-server", "valkey-server", "valkey-sentinel") == \
        {"valkey-server", "valkey-sentinel"}
