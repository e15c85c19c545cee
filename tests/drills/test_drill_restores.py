"""
Drills on single-node restores (`salt NODE redis_backup.restore backup=NAME force=True`),
against the real lab (tests/drills/conftest.py): a cluster of three masters without
replicas, so each node may be restored alone. Each drill injects one fault at the moment
that hurts most, is bounded in time, and checks that nothing acknowledged is lost and that
the system says what happened.

- A power cut (`lab.kill`) right after the restore stopped Redis: after the boot and
  `state.apply redis` the node serves the backup's keys or its old ones, never none, and the
  state `redis_backup.restore_recovered` says which.
- A power cut once the backup is in place (journal phase ``swapped``), then a boot that
  mounts /var under another device number: the recovery completes the restore.
- The same with `saltutil.kill_job` on the restore's job (no boot: Redis stays down, masked,
  until the apply completes or undoes the restore).
- One corrupted byte in a backup file: the forced restore is refused before anything stops
  (same run_id, same keys).
- Clients writing during the restore: it succeeds, and every write the restored server
  acknowledged is there.

Drilled elsewhere, on the real parts they need:
- Keys in db 0 and db 3 both restored: this lab is a cluster, where only db 0 exists;
  tests/functional/test_restore_counts.py restores both on real servers of every build.
- Hostile metadata planted in a backup directory (absolute or ``../`` names, symbolic links
  at the temporary and metadata names, a tree the redis account owned):
  tests/functional/test_backup_hostile.py.
- A set restore (`salt-run redis_backup.restore set=ID force=True`) where one master's restore
  fails after the stop: every master back on its previous data,
  tests/integration/test_backup_sets.py.
"""

import os
import threading
import time

import pytest
import redis
from support.drills import (
    HOSTS,
    STRIKE_INTERVAL,
    command_lines,
    device_number_held,
    hash_tag,
    job_pids,
    journal_exists,
    journal_phase,
    keys_for,
    missing,
    publish,
    read_keys,
    server,
    serving_redis,
    wait_aof_written,
    write_ballast,
    write_keys,
)
from support.lab import assert_no_password, wait_for_minions
from support.states import state_by_id
from support.waits import wait_until

pytestmark = pytest.mark.integration

BALLAST_MIB = 32  # dr1's server takes a moment to save and load: the restore's window is wider


@pytest.fixture
def restore_ballast(healthy_lab):
    write_ballast("dr1", "rballast", BALLAST_MIB)


def backup_with(cli, host, label, count=200):
    """A backup of ``host`` holding ``count`` keys of its own that are then deleted: (name, keys)."""
    keys = keys_for(host, label, count)
    write_keys(host, keys)
    made = cli.run("redis_backup.create", "type=rdb", "compress=none", minion_tgt=host)
    assert made.returncode == 0, made.stdout
    server(host).delete(*keys)
    return made.data["name"], keys


def restore_struck_after_stop(lab, publisher, host, backup):
    """Publish the forced restore and return its jid once it has stopped Redis (its journal
    is written and the node's redis-server is gone)."""
    jid = publish(publisher, host, "redis_backup.restore", backup=backup, force=True)
    wait_until(lambda: journal_exists(lab, host) and not serving_redis(lab, host), 120,
               lambda: f"{host}'s restore stopping Redis: journal {journal_exists(lab, host)}, processes "
                       f"{sorted(command_lines(lab, host).values())}", interval=STRIKE_INTERVAL)
    return jid


def recovered_by_apply(cli, host):
    """`state.apply redis` on ``host``: its state redis_backup.restore_recovered's return."""
    applied = cli.run("state.apply", "redis", minion_tgt=host)
    assert applied.returncode == 0, applied.stdout
    assert_no_password(applied.stdout, f"state.apply on {host}")
    return state_by_id(applied, None, "redis-restore-recovered")


def assert_backup_or_old_keys(host, recovered, backup_keys, old_keys):
    """The node serves exactly one of the two datasets, and the recovery names which."""
    assert recovered["changes"], f"the apply found no restore cut short on {host}: {recovered['comment']}"
    print(f"{host}: redis-restore-recovered: {recovered['comment']}")  # what happened, in the drill's log
    outcome = recovered["changes"]["restore"]["outcome"]
    assert outcome in recovered["comment"] or outcome.split()[0] in recovered["comment"], recovered
    if outcome == "completed":
        assert missing(host, backup_keys) == [], "restore completed but the backup's keys are not all there"
        assert missing(host, old_keys) == list(sorted(old_keys)), "the old keys are served next to the backup's"
    else:
        assert outcome == "rolled back", recovered
        assert missing(host, old_keys) == [], "restore rolled back but the old keys are not all there"
    assert server(host).dbsize() > 0


def test_a_power_cut_right_after_the_restore_stopped_redis(healthy_lab, cli, publisher, restore_ballast):
    lab = healthy_lab
    backup, backup_keys = backup_with(cli, "dr1", "cut")
    old_keys = keys_for("dr1", "cutold", 200)
    write_keys("dr1", old_keys)
    wait_aof_written("dr1")

    restore_struck_after_stop(lab, publisher, "dr1", backup)
    lab.kill("dr1")

    lab.boot("dr1")
    wait_for_minions(cli, ["dr1"])
    recovered = recovered_by_apply(cli, "dr1")

    assert recovered["result"] is True, recovered
    assert_backup_or_old_keys("dr1", recovered, backup_keys, old_keys)
    assert recovered["changes"]["restore"]["backup"] == backup, recovered
    assert not journal_exists(lab, "dr1")


def test_a_power_cut_once_the_backup_is_in_place_and_a_boot_that_renumbers_the_disk(
        healthy_lab, cli, publisher, restore_ballast):
    """The restore has put every entry of the backup in place (journal phase ``swapped``)
    when the power goes; the boot mounts /var under another device number and starts Redis
    on the backup's data: the recovery completes the restore (it once took the backup's
    entries for foreign ones, "rolled back", and left the node serving neither dataset)."""
    lab = healthy_lab
    backup, backup_keys = backup_with(cli, "dr1", "placed")
    old_keys = keys_for("dr1", "placedold", 200)
    write_keys("dr1", old_keys)
    wait_aof_written("dr1")
    device = os.stat(lab.path("dr1", "/var/lib/redis")).st_dev

    publish(publisher, "dr1", "redis_backup.restore", backup=backup, force=True)
    wait_until(lambda: journal_phase(lab, "dr1") == "swapped", 120, "dr1's restore placing the backup",
               interval=STRIKE_INTERVAL)
    lab.kill("dr1")
    with device_number_held(device):
        lab.boot("dr1")
    assert os.stat(lab.path("dr1", "/var/lib/redis")).st_dev != device, "same device number: nothing drilled"
    wait_for_minions(cli, ["dr1"])
    recovered = recovered_by_apply(cli, "dr1")

    assert recovered["result"] is True, recovered
    assert recovered["changes"]["restore"]["outcome"] == "completed", recovered
    assert missing("dr1", backup_keys) == [], "the restore completed but the backup's keys are not all there"
    assert not journal_exists(lab, "dr1")


def test_the_restore_job_killed_right_after_it_stopped_redis(healthy_lab, cli, publisher, restore_ballast):
    lab = healthy_lab
    backup, backup_keys = backup_with(cli, "dr1", "killed")
    old_keys = keys_for("dr1", "killedold", 200)
    write_keys("dr1", old_keys)
    wait_aof_written("dr1")

    jid = restore_struck_after_stop(lab, publisher, "dr1", backup)
    publish(publisher, "dr1", "saltutil.kill_job", jid)
    wait_until(lambda: not job_pids(lab, "dr1", jid), 30, f"restore job {jid} killed on dr1")
    assert journal_exists(lab, "dr1"), "the kill landed after the restore had finished: nothing was drilled"

    recovered = recovered_by_apply(cli, "dr1")

    assert recovered["result"] is True, recovered
    assert_backup_or_old_keys("dr1", recovered, backup_keys, old_keys)
    assert recovered["changes"]["restore"]["backup"] == backup, recovered
    assert not journal_exists(lab, "dr1")


def test_a_backup_with_one_corrupted_byte_is_refused_before_anything_stops(healthy_lab, cli):
    lab = healthy_lab
    backup, backup_keys = backup_with(cli, "dr3", "corrupt", count=100)
    listed = cli.run("redis_backup.list", minion_tgt="dr3")
    path = next(item["path"] for item in listed.data["backups"] if item["name"] == backup)
    data_file = max((f for f in lab.path("dr3", path).iterdir() if f.name != "backup_metadata.json"),
                    key=lambda f: f.stat().st_size)
    content = bytearray(data_file.read_bytes())
    content[len(content) // 2] ^= 0x01
    data_file.write_bytes(bytes(content))
    current = keys_for("dr3", "corruptnow", 100)
    write_keys("dr3", current)
    run_id = server("dr3").info("server")["run_id"]

    refused = cli.run("redis_backup.restore", f"backup={backup}", "force=True", minion_tgt="dr3")

    assert refused.returncode != 0, refused.stdout
    print(f"dr3 refused the damaged backup: {refused.stdout}")
    assert "sha256" in refused.stdout or "checksum" in refused.stdout, refused.stdout
    assert data_file.name in refused.stdout, f"the refusal does not name the damaged file: {refused.stdout}"
    assert server("dr3").info("server")["run_id"] == run_id, "Redis was restarted for a damaged backup"
    assert missing("dr3", current) == []
    assert missing("dr3", backup_keys) == sorted(backup_keys)
    assert not journal_exists(lab, "dr3")


class AckedWriter(threading.Thread):
    """Writes ``{prefix}:{n}`` to one node's server, one key after the other, retrying through
    the restore's stop and start; keeps each acknowledged write with the run_id of the server
    that acknowledged it and when (monotonic)."""

    def __init__(self, host, prefix):
        super().__init__(daemon=True)
        self.host, self.prefix = host, prefix
        self.acked, self._stop_event = [], threading.Event()  # [(key, run_id, monotonic)]

    def run(self):
        client, run_id, number = None, None, 0
        while not self._stop_event.is_set():
            try:
                if client is None:
                    # Its own connection, which raises when the restore stops the server.
                    client = server(self.host, timeout=2, reconnect=False)
                    run_id = client.info("server")["run_id"]  # before the writes it will acknowledge
                key = f"{self.prefix}:{number}"
                client.set(key, number)
                self.acked.append((key, run_id, time.monotonic()))
                number += 1
            except (redis.RedisError, OSError):
                # Stopped, starting or loading: reconnect (and learn the new server's run_id).
                client = None
                self._stop_event.wait(0.02)

    def finish(self):
        self._stop_event.set()
        self.join(10)


def test_clients_writing_during_a_restore_keep_every_write_the_restored_server_acknowledged(healthy_lab, cli):
    backup, backup_keys = backup_with(cli, "dr2", "busy")
    prefix = f"busywrites:{hash_tag('dr2', 'busywrites')}"
    writer = AckedWriter("dr2", prefix)
    writer.start()
    wait_until(lambda: len(writer.acked) >= 50, 10, "the writer writing")
    old_run_id = server("dr2").info("server")["run_id"]

    restored = cli.run("redis_backup.restore", f"backup={backup}", "force=True", minion_tgt="dr2")
    finished = time.monotonic()
    wait_until(lambda: sum(1 for _, _, at in writer.acked if at > finished) >= 50, 20,
               "50 writes acknowledged after the restore")
    writer.finish()

    assert restored.returncode == 0, restored.stdout
    assert restored.data["result"] is True, restored.data
    assert missing("dr2", backup_keys) == []
    # The guarantee (redis_backup.restore): the restore replaces the node's data with the
    # backup's. Writes the old server acknowledged, up to its stop, are in the safety copy
    # (its shutdown save included), not in the restored data. From the moment the restored
    # server answers, its writes are kept: the restore's check compares what the loader read
    # with the backup, never the keys clients add, so it neither fails on them nor undoes
    # them. So: every write the new server acknowledged, inside the restore window or after.
    new_server = [key for key, run_id, _ in writer.acked if run_id != old_run_id]
    after_return = [key for key, _, at in writer.acked if at > finished]
    print(f"dr2: {len(writer.acked)} writes acknowledged, {len(new_server)} by the restored server, "
          f"{len(after_return)} after the restore returned")
    held = read_keys("dr2", new_server)
    lost = [key for key in new_server if held[key] is None]
    assert not lost, f"{len(lost)} of {len(new_server)} writes acknowledged by the restored server are gone: {lost[:5]}"
    assert set(after_return) <= set(new_server)
    assert server("dr2").info("server")["run_id"] != old_run_id


def test_the_lab_is_left_healthy_with_no_restore_pending(healthy_lab, cli):
    """A restore drill that left a journal, a mask or a stopped server behind shows here."""
    pending = cli.run("redis_backup.restore_pending", minion_tgt="*")
    assert pending.returncode == 0, pending.stdout
    assert {host: answer["pending"] for host, answer in pending.data.items()} == {h: False for h in HOSTS}
