"""A restore killed (SIGKILL: nothing of it runs after) at its worst moments, then what the
next ``redis_backup.restore_recovered`` (or a boot) does with it: the node serves either the
backup's keys or its previous ones, never none, and the recovery says which.

The restore runs in a subprocess (its settings and the password through a pipe, never
argv) with ``service.*`` stand-ins that act on a redis-server no process owns (its pidfile)
and keep a mask as systemd does (a masked unit does not start; a boot clears a runtime mask).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, assert_no_password, load_module, stop_process
from support.waits import wait_until
from test_backup import Node

BACKUP_KEYS = {f"backup:{i}": str(i) for i in range(30)}
OLD_KEYS = {f"old:{i}": str(i) for i in range(20)}


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Services:
    """``service.stop/start/mask/unmask/masked`` for a redis-server found by its pidfile."""

    def __init__(self, home, server, config):
        self.home, self.server, self.config = pathlib.Path(home), server, config
        self.pidfile, self.mask_file = self.home / "redis.pid", self.home / "masked"
        self.log = self.home / "services.log"

    def record(self, what):
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write(what + "\n")

    def calls(self):
        return self.log.read_text().split() if self.log.exists() else []

    def pid(self):
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def stop(self, name):
        self.record("stop")
        pid = self.pid()
        if pid and not gone(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: gone(pid), 30, f"redis-server (pid {pid}) to exit", interval=0.02)
        return True

    def start(self, name):
        self.record("start")
        if self.mask_file.exists():
            return False  # systemd refuses to start a masked unit
        self.boot()
        return True

    def boot(self):
        """What a boot does: the runtime mask is gone, the enabled unit starts."""
        self.mask_file.unlink(missing_ok=True)
        with open(self.home / "stderr.log", "ab") as log:
            subprocess.Popen([self.server, self.config], cwd=self.home, stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True)

    def mask(self, name, runtime=False):
        assert runtime is True
        self.record("mask")
        self.mask_file.touch()
        return True

    def unmask(self, name, runtime=False):
        assert runtime is True
        self.record("unmask")
        self.mask_file.unlink(missing_ok=True)
        return True

    def masked(self, name, runtime=False):
        return self.mask_file.exists()

    def functions(self):
        return {f"service.{name}": getattr(self, name) for name in ("stop", "start", "mask", "unmask", "masked")}


KILLED_RESTORE = """
import json, sys, threading
sys.path[:0] = [{functional!r}, {tests!r}]
from conftest import load_module
from test_restore_crash import Services
settings = json.loads(sys.stdin.readline())
mod = load_module("redis_backup_mod", "_modules/redis_backup.py")
mod.__pillar__ = {{"redis": settings["pillar"]}}
mod.__grains__ = {{"id": "node1"}}
mod.__opts__ = {{}}
mod.__salt__ = dict(Services(*settings["services"]).functions(), **{{"event.send": lambda tag, data: True}})
point = settings["point"]

def hang():
    print(point, flush=True)
    threading.Event().wait(120)  # until the test's SIGKILL (bounded, should the test die first)

if point == "stopped":
    stop = mod.__salt__["service.stop"]
    mod.__salt__["service.stop"] = lambda name: stop(name) and hang()
elif point == "staging":
    prepare = mod._prepare
    mod._prepare = lambda *args: prepare(*args) and hang()
else:  # "swapped-N": after the N-th entry of the swap
    settle, done = mod.__utils__["redis_backup_swap.settle"], []

    def settle_then_hang(*args):
        result = settle(*args)
        done.append(args[3])
        if len(done) == int(point.split("-")[1]):
            hang()
        return result

    mod.__utils__["redis_backup_swap.settle"] = settle_then_hang
mod.restore(settings["backup"], force=True)
print("finished", flush=True)
"""


class CrashNode(Node):
    """A node whose redis-server writes a pidfile, and whose service functions find it by it."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.server.stop()
        self.server.settings["pidfile"] = str(self.server.dir / "redis.pid")
        self.server.write_salt_conf()
        self.server.start()
        self.services = Services(self.server.dir, self.server.build.server, str(self.server.main_conf))
        self.mod.__salt__.update(self.services.functions())

    def keys(self):
        client = self.server.client()
        return {key: client.get(key) for key in client.scan_iter(count=1000)}

    def up(self):
        try:
            return self.server.client(timeout=1).ping()
        except Exception:  # noqa: BLE001
            return False

    def cleanup(self):
        pid = self.services.pid()
        if pid and not gone(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: gone(pid), 30, "the node's redis-server to stop")
        self.server.stop()


@pytest.fixture
def crash_node(tmp_path):
    node = CrashNode(tmp_path)
    client = node.server.client()
    client.mset(BACKUP_KEYS)
    node.backup = node.mod.create(type="rdb", compress="none")["name"]
    client.flushall()
    client.mset(OLD_KEYS)
    yield node
    node.cleanup()


def kill_restore_at(node, point):
    """Run the restore in a subprocess until ``point``, then SIGKILL it; returns its output line."""
    script = node.server.dir.parent / "killed_restore.py"
    script.write_text(KILLED_RESTORE.format(functional=str(ROOT / "tests" / "functional"), tests=str(ROOT / "tests")))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    settings = {"pillar": node.pillar, "backup": node.backup, "point": point,
                "services": [str(node.services.home), node.services.server, node.services.config]}
    proc.stdin.write(json.dumps(settings).encode() + b"\n")  # the password through a pipe, not argv
    proc.stdin.close()
    try:
        line = proc.stdout.readline().decode().strip()
        if line == point:
            during = node.mod.restore_recovered()  # while it runs: the recovery must not touch it
            assert during["outcome"] == "in progress" and during["result"] is False
            assert node.mod.restore_pending()["running"] is True
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert line == point, f"the restore did not reach {point}: {line!r}"
    return line


def journal(node):
    return node.journal_dir / "restore-journal.json"


def test_killed_right_after_the_stop_the_recovery_completes_the_restore(crash_node):
    node = crash_node
    kill_restore_at(node, "stopped")
    assert not node.up() and node.services.mask_file.exists() and journal(node).exists()
    assert node.mod.restore_pending()["running"] is False

    ret = node.mod.restore_recovered()

    assert ret["result"] is True and ret["outcome"] == "completed", ret
    assert "had been cut short (staged) with Redis down: completed" in ret["comment"]
    assert node.keys() == BACKUP_KEYS and ret["loaded_keys"] == 30
    assert not journal(node).exists() and not node.services.mask_file.exists()
    safety = pathlib.Path(ret["safety_copy"])
    assert sorted(p.name for p in safety.iterdir()) == ["appendonlydir", "dump.rdb"]
    assert not list(node.data.parent.glob(".salt-restore-*")), "the work area is left behind"
    assert node.services.calls()[-2:] == ["unmask", "start"]
    assert node.mod.restore_recovered()["outcome"] == "none"
    assert_no_password(ret)


def recovery_state(node, test):
    state = load_module("redis_backup_state", "_states/redis_backup.py")
    state.__salt__ = {f"redis_backup.{name}": getattr(node.mod, name) for name in ("restore_pending",
                                                                                   "restore_recovered")}
    state.__opts__ = {"test": test}
    return state.restore_recovered(str(node.data))


def test_killed_mid_swap_with_redis_down_the_state_completes_the_restore(crash_node):
    node = crash_node
    kill_restore_at(node, "swapped-1")  # dump.rdb is the backup's, appendonlydir (what Redis loads) not yet

    dry = recovery_state(node, test=True)
    assert dry["result"] is None and dry["changes"]["restore"]["phase"] == "swapping" and journal(node).exists()
    assert not node.up()
    ret = recovery_state(node, test=False)

    assert ret["result"] is True and ret["changes"]["restore"]["outcome"] == "completed", ret
    assert ret["changes"]["restore"]["loaded_keys"] == 30
    assert node.keys() == BACKUP_KEYS
    assert recovery_state(node, test=False) == {"name": str(node.data), "result": True, "changes": {},
                                                "comment": "no restore was cut short on this node"}
    node.services.stop("redis-server")
    node.services.boot()  # and it stays so at the next boot
    wait_until(node.up, 10, "Redis back after a boot")
    assert node.keys() == BACKUP_KEYS


def test_killed_mid_swap_then_a_boot_serves_the_previous_data_and_the_recovery_keeps_it(crash_node):
    node = crash_node
    kill_restore_at(node, "swapped-1")
    node.services.boot()  # a power cut and a boot: the runtime mask is gone, the unit starts
    wait_until(node.up, 10, "Redis up after the boot")
    assert node.keys() == OLD_KEYS, "the boot did not load the previous data"
    node.server.client().set("written:after:boot", "acknowledged")

    ret = node.mod.restore_recovered()

    assert ret["outcome"] == "rolled back" and ret["result"] is True
    assert "Redis runs on the previous data: that stays" in ret["comment"]
    assert node.keys() == dict(OLD_KEYS, **{"written:after:boot": "acknowledged"})
    assert not journal(node).exists() and not list(node.data.parent.glob(".salt-restore-*"))
    # Everything went back where it was, but for a dump.rdb that the booted Redis wrote since
    # (replaying the FLUSHALL of its AOF saves): the previous one stays in the safety copy.
    safety = pathlib.Path(ret["safety_copy"])
    assert not safety.exists() or sorted(p.name for p in safety.iterdir()) == ["dump.rdb"]
    node.services.stop("redis-server")
    node.services.boot()
    wait_until(node.up, 10, "Redis back after another boot")
    assert node.keys() == dict(OLD_KEYS, **{"written:after:boot": "acknowledged"})


def test_a_boot_between_the_two_renames_of_the_entry_redis_loads_never_leaves_it_serving_neither(crash_node):
    """Where the filesystem has no RENAME_EXCHANGE the swap renames the entry Redis loads in
    two steps: a power cut between them and a boot start Redis without its AOF, on a dataset
    of its own. The recovery stops it, keeps what it wrote, and puts the previous data back."""
    node = crash_node
    kill_restore_at(node, "swapped-1")
    written = json.loads(journal(node).read_text())
    os.rename(node.data / "appendonlydir", pathlib.Path(written["old_dir"]) / "appendonlydir")  # the first rename
    node.services.boot()
    wait_until(node.up, 10, "Redis up after the boot")
    assert node.keys() != OLD_KEYS, "Redis loaded the previous data: nothing was drilled"
    node.server.client().set("written:after:boot", "acknowledged")

    ret = node.mod.restore_recovered()

    assert ret["result"] is True and ret["outcome"] == "rolled back", ret
    assert node.keys() == OLD_KEYS
    kept = next(pathlib.Path(word) for word in ret["warnings"][0].split() if word.endswith(".since-boot"))
    assert kept.name == "appendonlydir.since-boot" and kept.is_dir() and str(kept) in ret["comment"]
    assert not journal(node).exists() and not node.services.mask_file.exists()
    assert not list(node.data.parent.glob(".salt-restore-*")), "the work area is left behind"
    node.services.stop("redis-server")
    node.services.boot()
    wait_until(node.up, 10, "Redis back after another boot")
    assert node.keys() == OLD_KEYS


def test_killed_after_the_swap_a_boot_serves_the_backup_and_the_recovery_completes(crash_node):
    node = crash_node
    kill_restore_at(node, "swapped-2")  # every entry is the backup's; Redis not started yet
    node.services.boot()
    wait_until(node.up, 10, "Redis up after the boot")
    assert node.keys() == BACKUP_KEYS

    ret = node.mod.restore_recovered()

    assert ret["outcome"] == "completed" and ret["warnings"] == []
    assert "was started since: completed" in ret["comment"]
    assert sorted(p.name for p in pathlib.Path(ret["safety_copy"]).iterdir()) == ["appendonlydir", "dump.rdb"]
    assert not journal(node).exists()


def test_after_the_swap_a_boot_that_renumbers_the_device_still_completes_the_restore(crash_node):
    """A boot mounts the data directory's filesystem again and it may get another device
    number (an overlay, a device-mapper volume): the backup's entries, in place, are still the
    backup's. The journal here is one that recorded ``[st_dev, st_ino]`` (as before the device
    number was dropped), its device number now stale."""
    node = crash_node
    kill_restore_at(node, "swapped-2")
    written = json.loads(journal(node).read_text())
    for entry in written["entries"]:
        inode = entry["new"][-1] if isinstance(entry["new"], list) else entry["new"]
        entry["new"] = [os.stat(node.data).st_dev + 7, inode]
    journal(node).write_text(json.dumps(written))
    node.services.boot()
    wait_until(node.up, 10, "Redis up after the boot")
    assert node.keys() == BACKUP_KEYS
    node.server.client().set("written:after:boot", "acknowledged")

    ret = node.mod.restore_recovered()

    assert ret["outcome"] == "completed" and ret["result"] is True, ret
    assert node.keys() == dict(BACKUP_KEYS, **{"written:after:boot": "acknowledged"})
    assert sorted(p.name for p in pathlib.Path(ret["safety_copy"]).iterdir()) == ["appendonlydir", "dump.rdb"]
    assert not journal(node).exists()


def test_a_new_restore_first_deals_with_the_one_cut_short(crash_node):
    node = crash_node
    kill_restore_at(node, "stopped")
    dry = node.mod.restore(node.backup, part_of_set=True, config_file=str(node.server.main_conf))  # Redis is down
    assert dry["result"] is None and dry["pending_recovery"]["phase"] == "staged"
    assert "was cut short on this node" in dry["comment"] and journal(node).exists()

    ret = node.mod.restore(node.backup, force=True)

    assert ret["recovered"]["outcome"] == "completed" and ret["result"] is True
    assert node.keys() == BACKUP_KEYS and not journal(node).exists()
    assert ret["safety_copy"] != ret["recovered"]["safety_copy"]
    stop_process(node.server.process)


def test_a_data_directory_that_is_a_mount_point(crash_node, monkeypatch):
    """The data directory on a filesystem of its own: the work area (staged entries, previous
    ones) lives inside it, root's, so that every swap is still a rename; the safety copy is
    copied out next to it at the end."""
    node = crash_node
    monkeypatch.setattr(node.mod, "_same_filesystem", lambda first, second: False)
    monkeypatch.setattr(node.mod, "_require_space", lambda path, need, what: 1 << 40)
    seen = []
    swap = node.mod._swap

    def swap_and_look(journal, forward, replace_foreign=False):
        seen.append((journal["work_dir"], journal["old_dir"], sorted(os.listdir(node.data)),
                     oct(os.stat(journal["work_dir"]).st_mode & 0o777)))
        return swap(journal, forward, replace_foreign)

    monkeypatch.setattr(node.mod, "_swap", swap_and_look)

    ret = node.mod.restore(node.backup, force=True)

    work, old_dir, listed, mode = seen[0]
    assert os.path.dirname(work) == str(node.data) and old_dir == os.path.join(work, "old") and mode == "0o700"
    assert listed == sorted(["appendonlydir", "dump.rdb", os.path.basename(work)])
    assert node.keys() == BACKUP_KEYS
    safety = pathlib.Path(ret["safety_copy"])
    assert safety.parent == node.data.parent and sorted(p.name for p in safety.iterdir()) == ["appendonlydir",
                                                                                              "dump.rdb"]
    assert sorted(os.listdir(node.data)) == ["appendonlydir", "dump.rdb"]
    assert ret["restored"] == ["dump.rdb", "appendonlydir"]


def test_killed_while_staging_nothing_changed_and_the_next_restore_clears_its_leftovers(crash_node):
    node = crash_node
    kill_restore_at(node, "staging")
    assert not journal(node).exists() and node.keys() == OLD_KEYS
    leftovers = list(node.data.parent.glob(".salt-restore-data-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "new" / "dump.rdb").exists()
    assert node.mod.restore_recovered() == {"result": True, "changed": False, "outcome": "none",
                                            "comment": "no restore was cut short on this node"}

    assert node.mod.restore(node.backup)["result"] is None

    assert not list(node.data.parent.glob(".salt-restore-*")) and node.keys() == OLD_KEYS
