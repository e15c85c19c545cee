"""
Debian 13 lab hosts (`lab: {os: debian13}` on a controller) on a lab of its own, beside a
Debian 12 one, both from bare hosts: each boots its own systemd from its own release, its
salt-minion (the master's Salt) reports the host's release in its grains, and each host
runs the Redis its distribution ships (8.0 on Debian 13, 7.0 on Debian 12).

The Debian 13 root file system is built once (lab/debian13.py; about two minutes the first
time on a machine) and reused from its cache by every later lab and run.
"""

import shutil

import pytest
from support.lab import boot_hosts, host_output, lab_of_its_own, master_of_its_own, wait_for_minions

pytestmark = pytest.mark.integration

SUBNET = "10.213.27"
TRIXIE = ("d13a", f"{SUBNET}.11")
BOOKWORM = ("d12a", f"{SUBNET}.12")


def deployment():
    controllers = [
        {"hostname": TRIXIE[0], "ip_address": TRIXIE[1], "services": {"redis": True}, "lab": {"os": "debian13"}},
        {"hostname": BOOKWORM[0], "ip_address": BOOKWORM[1], "services": {"redis": True}},
    ]
    return {"cache": {"redis": {"password": "${REDIS_PASSWORD}", "host_baseline": "report"}},
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
    lab, _, config = debian13_lab
    # `make test` has built the Debian 13 root (make debian13-root); run alone, this builds
    # it first when the machine has none cached (it needs the mirror then).
    boot_hosts(lab, debian13_master, config)
    salt_cli = debian13_master.salt_cli(timeout=120)
    wait_for_minions(salt_cli, [TRIXIE[0], BOOKWORM[0]])
    return salt_cli


def test_each_host_reports_its_own_release_in_its_grains(cli):
    grains = cli.run("grains.item", "os", "osrelease", "oscodename", minion_tgt="*")

    assert grains.returncode == 0, grains
    assert grains.data == {
        TRIXIE[0]: {"os": "Debian", "osrelease": "13", "oscodename": "trixie"},
        BOOKWORM[0]: {"os": "Debian", "osrelease": "12", "oscodename": "bookworm"},
    }


def test_the_debian13_minion_runs_the_masters_salt(cli, debian13_master):
    master_version = debian13_master.salt_run_cli(timeout=60).run("manage.versions")
    versions = cli.run("test.version", minion_tgt="*")

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
