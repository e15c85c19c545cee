"""
`salt-run redis_deployment.upgrade` on a Sentinel pair with a witness (a lab of its own,
`rupg`, three Debian 13 hosts: two Redis 8.0.2 servers and a witness). Lab hosts reach no
package archive: a fixture repacks the Redis packages the hosts' own apt cache holds with a
higher version (`+upgrade1`, the exact-version Depends between them bumped too) into a local
apt repository (the originals beside them), which each host's apt alone points at.

Debian 13 hosts, not the machine's Debian 12: a Debian 12 lab host shares the machine's
`/usr` (only `/etc`, `/usr/local` and `/var` are its own), so a package upgrade there would
write the machine's binaries; a Debian 13 host's whole root is an overlay of its own.

Under a WAIT 1 client: every node ends at the new version, each server restarted once, the
master failed over first, no confirmed write lost, the next apply changes nothing. A
downgrade (`version=` the original, which the repository still offers) is refused with
nothing changed; an upgrade with nothing newer says so with exit status 0.

The same pair is the lab's Debian 13 Redis 8.0 Sentinel pair formed from bare hosts: pillar
`redis:versions` names Redis 8.0 (RDB 12) on both servers; a dead master host fails over
through the witness keeping every write the replica confirmed and boots back a replica, with
nothing reverted by the next apply; a backup set restores every key.
"""

import shutil
import subprocess

import pytest
from support.lab import (
    SENTINEL_PORT,
    assert_no_password,
    booted_cli,
    host_output,
    host_run,
    lab_of_its_own,
    master_of_its_own,
    pillar_versions,
)
from support.pair_drills import backup_set_restores_every_key, dead_master_host_fails_over
from support.rolling import RoleWatcher
from support.sentinel import PairView, WaitWriter
from support.states import states_with_changes
from support.waits import wait_until

pytestmark = pytest.mark.integration

SUBNET = "10.213.37"
SERVERS = {"ug1": f"{SUBNET}.11", "ug2": f"{SUBNET}.12"}
WITNESS = ("ug3", f"{SUBNET}.13")
ALL = {**SERVERS, WITNESS[0]: WITNESS[1]}
PASSWORD = "upgrade's own #37"
PACKAGES = ("redis-server", "redis-sentinel", "redis-tools")
REPO_IN_HOST = "/srv/upgrade-repo"
pair = PairView(SERVERS, ALL, PASSWORD)
server, current_master, sentinels_agree_on = pair.server, pair.current_master, pair.sentinels_agree_on


def deployment():
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}, "lab": {"os": "debian13"}}
                   for h, ip in SERVERS.items()]
    controllers.append({"hostname": WITNESS[0], "ip_address": WITNESS[1], "services": {"redis": False},
                        "lab": {"os": "debian13"}})
    cache_redis = {"password": "${REDIS_PASSWORD}", "host_baseline": "report",
                   "sentinel": {"down_after_ms": 2000, "failover_timeout_ms": 10000, "witnesses": [WITNESS[0]]}}
    return {"cache": {"redis": cache_redis}, "nodes": {"controllers": controllers}}


@pytest.fixture(scope="module")
def upgrade_lab(tmp_path_factory):
    if shutil.which("debootstrap") is None or shutil.which("dpkg-scanpackages") is None:
        pytest.fail("integration prerequisite missing: debootstrap and dpkg-scanpackages (dpkg-dev)")
    with lab_of_its_own(tmp_path_factory, "rupg", deployment()) as own_lab:
        yield own_lab


@pytest.fixture(scope="module")
def upgrade_master(salt_factories, upgrade_lab):
    with master_of_its_own(salt_factories, upgrade_lab, "upg-master", password=PASSWORD) as master:
        yield master


@pytest.fixture(scope="module")
def cli(upgrade_master, upgrade_lab):
    return booted_cli(upgrade_master, upgrade_lab, ALL)


@pytest.fixture(scope="module")
def first_apply(cli):
    applied = cli.run("state.apply", "redis", minion_tgt="*")
    assert applied.returncode == 0, applied.stdout
    return applied


def installed(lab, host, package="redis-server"):
    return host_output(lab, host, "dpkg-query", "-W", "-f=${Version}", package)


def repack(deb, old, new, into):
    """``deb`` with Version ``new`` and every exact-version dependency on ``old`` bumped to it."""
    unpacked = into / f"{deb.name}.d"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(unpacked)], check=True)
    control = unpacked / "DEBIAN" / "control"
    text = control.read_text().replace(f"Version: {old}\n", f"Version: {new}\n").replace(f"(= {old})", f"(= {new})")
    control.write_text(text)
    name = deb.name.replace(old.replace(":", "%3a"), new.replace(":", "%3a"))
    subprocess.run(["dpkg-deb", "-b", str(unpacked), str(into / name)], check=True, capture_output=True)
    shutil.rmtree(unpacked)


@pytest.fixture(scope="module")
def repository(first_apply, upgrade_lab, tmp_path_factory):
    """``(old, new)`` versions; every host's apt sees only the local repository holding both."""
    lab = upgrade_lab[0]
    old = installed(lab, "ug1")
    new = f"{old}+upgrade1"
    repo = tmp_path_factory.mktemp("upgrade-repo")
    cache = lab.path("ug1", "/var/cache/apt/archives")
    for package in PACKAGES:
        deb = cache / f"{package}_{old.replace(':', '%3a')}_amd64.deb"
        shutil.copy(deb, repo / deb.name)
        repack(deb, old, new, repo)
    index = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo, check=True, capture_output=True,
                           text=True).stdout
    (repo / "Packages").write_text(index)
    for host in ALL:
        target = lab.path(host, REPO_IN_HOST)
        shutil.copytree(repo, target)
        for path in [target, *target.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        # The host's other sources out of the way: apt-get update then succeeds offline.
        host_run(lab, host, "sh", "-ec", "mkdir -p /etc/apt/sources-aside && "
                 "for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do [ -e \"$f\" ] && "
                 "mv \"$f\" /etc/apt/sources-aside/ || true; done", check=True)
        lab.path(host, "/etc/apt/sources.list.d/upgrade.list").write_text(
            f"deb [trusted=yes] file:{REPO_IN_HOST} ./\n")
        updated = host_run(lab, host, "apt-get", "update")
        assert updated.returncode == 0, updated.stdout + updated.stderr
        assert new in host_output(lab, host, "apt-cache", "policy", "redis-server")
    return old, new


def versions(lab):
    return {(h, p): installed(lab, h, p) for h in ALL for p in PACKAGES}


def test_the_upgrade_goes_one_node_at_a_time_master_last_and_loses_no_confirmed_write(
        repository, cli, upgrade_master, upgrade_lab):
    lab, old_version, new_version = upgrade_lab[0], *repository
    old = current_master()
    replica = next(h for h in SERVERS if h != old)
    wait_until(lambda: server(replica).info("replication")["master_link_status"] == "up", 30, "the replica syncs")
    wait_until(lambda: sentinels_agree_on(old), 30, f"the Sentinels agree on {old}")
    assert set(versions(lab).values()) == {old_version}
    watcher = RoleWatcher({h: server(h) for h in SERVERS})
    watcher.start()
    writer = WaitWriter([(ip, SENTINEL_PORT) for ip in ALL.values()], PASSWORD, "upgrade")
    writer.start()
    wait_until(lambda: len(writer.acknowledged) > 50, 30, "the writer writes")

    upgraded = upgrade_master.salt_run_cli(timeout=900).run("redis_deployment.upgrade")

    count = len(writer.acknowledged)
    wait_until(lambda: len(writer.acknowledged) > count + 20, 30, lambda: f"the writer writes on: {writer.errors}")
    writer.finish()
    watcher.finish()
    print(upgraded.stdout)
    assert upgraded.returncode == 0, upgraded.stdout
    assert_no_password(upgraded.stdout, "the upgrade's output")
    assert set(versions(lab).values()) == {new_version}, versions(lab)
    new = current_master()
    assert new == replica and watcher.problems({old}) == [], watcher.seen
    assert writer.errors == [] and writer.missing(server(new)) == []
    steps = upgraded.data["upgraded"]
    assert [s["node"] for s in steps] == [replica, old, WITNESS[0]]
    assert steps[1]["failed_over_to"] == replica and steps[1]["role_after"] == "replica"
    assert all(s["restarted_by"] == "upgrade" for s in steps[:2]), steps
    assert any(f"{old}: {old_version} -> {new_version}" in line for line in upgraded.data["plan"])
    assert all(new_version in line for line in upgraded.data["after"])
    assert all(old_version in line for line in upgraded.data["before"])
    wait_until(lambda: sentinels_agree_on(new), 30, f"the Sentinels agree on {new}")
    again = cli.run("state.apply", "redis", minion_tgt="*")
    assert again.returncode == 0, again.stdout
    assert states_with_changes(again) == []


def test_a_downgrade_is_refused_and_changes_nothing(repository, cli, upgrade_master, upgrade_lab):
    lab, old_version, new_version = upgrade_lab[0], *repository
    before = versions(lab)
    runs = pair.run_ids()

    refused = upgrade_master.salt_run_cli(timeout=600).run("redis_deployment.upgrade", f"version={old_version}")

    assert refused.returncode == 1, refused.stdout
    assert f"ug1: {old_version} is older than the installed {new_version}: a downgrade" in refused.data["comment"]
    assert refused.data["comment"].startswith("nothing upgraded: ")
    assert versions(lab) == before
    assert pair.run_ids() == runs

    unknown = upgrade_master.salt_run_cli(timeout=600).run("redis_deployment.upgrade", "version=5:9.9.9-1")

    assert unknown.returncode == 1, unknown.stdout
    assert "ug1: redis-server 5:9.9.9-1 is not offered by its package archive (offered: " in unknown.data["comment"]
    assert versions(lab) == before
    assert pair.run_ids() == runs


def test_nothing_newer_is_said_with_exit_status_0(repository, cli, upgrade_master):
    runs = pair.run_ids()

    again = upgrade_master.salt_run_cli(timeout=600).run("redis_deployment.upgrade")

    assert again.returncode == 0, again.stdout
    assert again.data["comment"].startswith("nothing to upgrade: every node runs the newest version")
    assert pair.run_ids() == runs


def test_the_pillar_names_redis_8_and_its_rdb_format_on_both_servers(first_apply, cli):
    shown = pillar_versions(cli, "ug1")
    assert set(shown) == set(SERVERS) and all(v.startswith("8.0.") for v in shown.values()), shown


def test_a_dead_redis_8_master_host_fails_over_keeping_every_confirmed_write(first_apply, cli, upgrade_lab):
    dead_master_host_fails_over(upgrade_lab[0], cli, pair, "r8-failover")


def test_a_redis_8_backup_set_restores_every_key(first_apply, cli, upgrade_master):
    backup_set_restores_every_key(upgrade_master, pair, "r8")
