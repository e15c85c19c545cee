"""The edges of a restore's stop and of a backup's BGSAVE, on every build (conftest.SERVERS):
the shutdown SAVE of ``appendonly no`` lands in the safety copy, the rollback stops a Redis
whose start was reported failed, and a failed BGSAVE is reported when Redis records it.
"""

import os
import pathlib
import signal
import subprocess
import threading
import time

import pytest
from conftest import SERVERS
from salt.exceptions import CommandExecutionError
from support.waits import wait_until
from test_backup import Node, populate, snapshot


@pytest.fixture(params=list(SERVERS))
def any_node(request, tmp_path):
    SERVERS[request.param].require()
    made = Node(tmp_path, build=request.param)
    yield made
    made.server.stop()


def rdb_keys(node, path):
    """The keys redis-check-rdb reads in ``path`` (the build's own checker)."""
    checker = pathlib.Path(path).parent / "redis-check-rdb"
    checker.symlink_to(node.server.build.server)
    output = subprocess.run([str(checker), str(path)], capture_output=True, text=True, check=False).stdout
    checker.unlink()
    found = [line for line in output.splitlines() if "keys read" in line]
    assert found, output
    return int(found[0].split("]")[1].split()[0])


@pytest.fixture(params=list(SERVERS))
def rdb_only_node(request, tmp_path):
    SERVERS[request.param].require()
    made = Node(tmp_path, build=request.param, appendonly="no")
    yield made
    made.server.stop()


def test_the_shutdown_save_of_appendonly_no_is_in_the_safety_copy(rdb_only_node):
    node = rdb_only_node
    client = node.server.client()
    populate(client, bulk=10)
    ret = node.mod.create(type="rdb")
    # Acknowledged writes that no snapshot holds yet, and no dump.rdb in the data directory
    # (as on a node that never saved): only the SAVE of Redis's shutdown writes them.
    (node.data / "dump.rdb").unlink()
    for i in range(40):
        client.set(f"late:{i}", i)
    assert client.info("persistence")["rdb_changes_since_last_save"] >= 40

    restored = node.mod.restore(ret["name"], force=True)

    safety = pathlib.Path(restored["safety_copy"])
    assert (safety / "dump.rdb").is_file(), "the shutdown SAVE's file is not in the safety copy"
    assert rdb_keys(node, safety / "dump.rdb") == 62
    assert node.server.client().get("late:0") is None and restored["keys"] == 22


def test_the_rollback_stops_a_redis_whose_start_was_reported_failed(any_node, monkeypatch):
    """systemd's Restart=always, or a start that timed out, can leave Redis running on the
    restored data while service.start said it failed: the rollback must stop it first."""
    node = any_node
    populate(node.server.client(), bulk=10)
    ret = node.mod.create(type="rdb")
    node.server.client().flushall()
    node.server.client().set("current", "data")
    before = snapshot(node)
    starts = []

    def start_fails_but_runs(name):
        node.calls.append(("start", name))
        node.server.spawn()
        starts.append(node.server.process)
        return len(starts) > 1  # the restore's start "fails", the rollback's works

    monkeypatch.setitem(node.mod.__salt__, "service.start", start_fails_but_runs)

    with pytest.raises(CommandExecutionError, match="service.start redis-server failed") as caught:
        node.mod.restore(ret["name"], force=True)

    assert "previous data was put back" in str(caught.value) and "Redis started again" in str(caught.value)
    assert [call for call, _ in node.calls] == ["stop", "start", "stop", "start"]
    assert starts[0].poll() is not None, "the server started on the restored data still runs"
    assert snapshot(node) == before
    node.restart()
    assert snapshot(node) == before


def kill_the_bgsave_child(node, killed):
    """Kill the fork of the next BGSAVE (as the OOM killer or a full disk ends one)."""
    client = node.server.client()

    def killed_it():
        if not int(client.info("persistence")["rdb_bgsave_in_progress"]):
            return False
        children = subprocess.run(["pgrep", "-P", str(node.server.process.pid)], capture_output=True,
                                  text=True, check=False).stdout.split()
        if children:
            os.kill(int(children[0]), signal.SIGKILL)
            killed.append(time.monotonic())
        return bool(children)

    wait_until(killed_it, 20, "a BGSAVE child to kill", interval=0.01)


@pytest.fixture
def redis_62_node(tmp_path):
    SERVERS["redis-6.2"].require()
    made = Node(tmp_path, build="redis-6.2")
    yield made
    made.server.stop()


def test_a_failed_bgsave_is_reported_at_once_on_redis_62(redis_62_node):
    """Redis 6.2 counts no BGSAVE and leaves LASTSAVE as it was when one fails (Redis >= 7 and
    Valkey count them in ``rdb_saves``: seen at once there already)."""
    node = redis_62_node
    client = node.server.client()
    populate(client, bulk=50)
    client.config_set("rdb-key-save-delay", 100000)  # 0.1 s per key: the save would take ~6 s
    killed, errors = [], []
    killer = threading.Thread(target=kill_the_bgsave_child, args=(node, killed), daemon=True)
    killer.start()
    started = time.monotonic()
    try:
        node.mod.create(type="rdb", timeout=60)
    except CommandExecutionError as exc:
        errors.append(str(exc))
    finally:
        client.config_set("rdb-key-save-delay", 0)
    killer.join(timeout=20)

    assert killed, "the BGSAVE's child was never seen"
    assert errors and "BGSAVE failed (rdb_last_bgsave_status:err)" in errors[0]
    assert time.monotonic() - killed[0] < 3, f"reported {time.monotonic() - killed[0]:.1f}s after the failure"
    assert time.monotonic() - started < 10
    assert node.mod.list_()["backups"] == []
    assert node.mod.create(type="rdb", verify=False)["keys"] == 62  # the next one works
