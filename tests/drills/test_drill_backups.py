"""
Drills on backups, against the real lab (tests/drills/conftest.py): each injects one fault
at the moment that hurts most, is bounded in time, and checks that nothing acknowledged is
lost and that the system says what happened.

- A backup SIGKILLed mid-copy is never listed, and the next backup works and verifies.
- A backup onto a full filesystem fails saying so; the older backups stay intact and listed.
- A host's power cut during `salt-run redis_backup.run` makes the set `partial`, never
  `complete`, and the host comes back with every acknowledged key.
"""

import threading

import pytest
from support.drills import (
    BACKUP_DIR,
    STRIKE_INTERVAL,
    command_lines,
    job_pids,
    keys_for,
    missing,
    partial_backups,
    publish,
    sigkill,
    wait_aof_written,
    wait_cluster_ok,
    write_ballast,
    write_keys,
)
from support.lab import assert_no_password, host_run, wait_for_minions
from support.waits import wait_until

pytestmark = pytest.mark.integration

# Enough incompressible data that a gzip backup of dr1 copies for a few seconds.
BALLAST_MIB = 48


@pytest.fixture
def ballast(healthy_lab):
    """dr1 holds BALLAST_MIB MiB: its backups take long enough to be struck mid-copy."""
    write_ballast("dr1", "ballast", BALLAST_MIB)


def backup_names(cli, host):
    listed = cli.run("redis_backup.list", minion_tgt=host)
    assert listed.returncode == 0, listed.stdout
    return [item["name"] for item in listed.data["backups"]]


def test_a_backup_killed_mid_copy_is_never_listed_and_the_next_one_verifies(healthy_lab, cli, publisher, ballast):
    lab = healthy_lab
    before = backup_names(cli, "dr1")

    jid = publish(publisher, "dr1", "redis_backup.create", type="rdb", compress="gzip")
    wait_until(lambda: any(size > 0 for size in partial_backups(lab, "dr1").values()), 120,
               lambda: f"dr1's backup copying into a .partial- directory: {partial_backups(lab, 'dr1')}",
               interval=STRIKE_INTERVAL)
    pids = job_pids(lab, "dr1", jid)
    assert pids, f"no process of dr1 runs job {jid}: {command_lines(lab, 'dr1')}"
    sigkill(pids)
    struck = partial_backups(lab, "dr1")

    wait_until(lambda: not job_pids(lab, "dr1", jid), 10, f"job {jid} gone from dr1")
    # Its compressor and checker die with it (nothing keeps writing into the backup directory).
    wait_until(lambda: not [line for line in command_lines(lab, "dr1").values()
                            if line.startswith(("gzip", "redis-check"))], 10,
               lambda: f"no gzip/redis-check left on dr1: {sorted(command_lines(lab, 'dr1').values())}")
    assert any(size > 0 for size in struck.values()), f"the kill did not land mid-copy: {struck}"
    assert backup_names(cli, "dr1") == before, "a backup killed mid-copy is listed"

    made = cli.run("redis_backup.create", "type=rdb", "compress=zstd", minion_tgt="dr1")

    assert made.returncode == 0, made.stdout
    assert made.data["verified"] is True, made.data
    assert backup_names(cli, "dr1") == [made.data["name"], *before]
    assert_no_password(made.stdout, "redis_backup.create's return")


def test_a_backup_onto_a_full_filesystem_fails_saying_so_and_keeps_the_older_ones(healthy_lab, cli):
    lab = healthy_lab
    keys = keys_for("dr3", "full", 50)
    write_keys("dr3", keys)
    # A small filesystem of its own over dr3's backup directory (in dr3's mount namespace only).
    mounted = host_run(lab, "dr3", "mount", "-t", "tmpfs", "-o", "size=2m,mode=0750", "drill-full", BACKUP_DIR)
    assert mounted.returncode == 0, mounted.stderr
    try:
        host_run(lab, "dr3", "chown", "redis:redis", BACKUP_DIR, check=True)
        older = cli.run("redis_backup.create", "type=rdb", "compress=none", minion_tgt="dr3")
        assert older.returncode == 0, older.stdout
        # Fill what is left (dd stops at ENOSPC).
        host_run(lab, "dr3", "dd", "if=/dev/zero", f"of={BACKUP_DIR}/filler", "bs=4k")
        free = host_run(lab, "dr3", "stat", "-f", "-c", "%a", BACKUP_DIR, check=True).stdout.strip()
        assert free == "0", f"{free} blocks still free on the full filesystem"

        failed = cli.run("redis_backup.create", "type=rdb", "compress=none", minion_tgt="dr3")

        assert failed.returncode != 0, failed.stdout
        assert "space" in failed.stdout.lower(), f"the failure does not say the disk is full: {failed.stdout}"
        print(f"dr3, backup onto a full disk: {failed.stdout}")
        listed = cli.run("redis_backup.list", minion_tgt="dr3")
        assert [(b["name"], b["verified"]) for b in listed.data["backups"]] == [(older.data["name"], True)]
        assert not partial_backups(lab, "dr3"), "the failed backup left its .partial- directory on the full disk"
        host_run(lab, "dr3", "rm", f"{BACKUP_DIR}/filler", check=True)
        verified = cli.run("redis_backup.verify", f"backup={older.data['name']}", minion_tgt="dr3")
        assert verified.returncode == 0, verified.stdout
    finally:
        host_run(lab, "dr3", "umount", "-l", BACKUP_DIR)
    assert missing("dr3", keys) == []


def test_a_host_dying_during_a_set_backup_makes_the_set_partial(healthy_lab, cli, run_cli, ballast):
    lab = healthy_lab
    acknowledged = {host: keys_for(host, "setdeath", 100) for host in ("dr1", "dr2", "dr3")}
    for host, keys in acknowledged.items():
        write_keys(host, keys)
        wait_aof_written(host)

    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(
        result=run_cli.run("redis_backup.run", "type=rdb", "compress=gzip")), daemon=True)
    runner.start()
    # dr1 (the ballast) is still copying when it dies.
    wait_until(lambda: any(size > 0 for size in partial_backups(lab, "dr1").values()), 120,
               "dr1's part of the set copying", interval=STRIKE_INTERVAL)
    lab.kill("dr1")
    runner.join(240)
    assert not runner.is_alive(), "salt-run redis_backup.run still runs 4 minutes after dr1 died"
    result = outcome["result"]

    assert result.returncode != 0, result.stdout
    assert result.data["status"] == "partial", result.data
    print(f"set {result.data['set_id']}: {result.data['status']}: {result.data['reason']}")
    # It names the slots no backup holds and the node that failed.
    assert "0-5460" in result.data["reason"] and "dr1" in result.data["reason"], result.data["reason"]
    listed = run_cli.run("redis_backup.list")
    assert [s["status"] for s in listed.data["sets"] if s["set_id"] == result.data["set_id"]] == ["partial"]

    lab.boot("dr1")
    wait_for_minions(cli, ["dr1"])
    wait_cluster_ok(timeout=60)
    for host, keys in acknowledged.items():
        assert missing(host, keys) == [], f"{host} lost acknowledged keys"
