"""_modules/redis_backup.py against real redis-servers (Debian's Redis 7.0; Redis 6.2 where
the difference matters): hot backups of every key type, restores compared key by key
(DUMP), the refusals that must come before anything stops, interrupted backups, retention.

``service.stop``/``service.start`` are stand-ins that stop/start the test's server process;
``event.send`` records what the module fires (the real event bus: integration tests).
"""

import datetime
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import redis
from conftest import (
    PASSWORD,
    ROOT,
    SERVERS,
    WRONG_PASSWORD,
    RedisServer,
    assert_no_password,
    cluster_port,
    free_port,
    load_module,
)
from salt.exceptions import CommandExecutionError
from support.waits import wait_until

MINION = "node1"


class Node:
    """One Redis server (data in its own ``data`` directory, config and logs beside it, as
    on a real host) and the backup module wired to it."""

    def __init__(self, tmp_path, build="redis-7.0", appendonly="yes", cluster=False, role="master"):
        home = tmp_path / f"srv-{build}"
        home.mkdir()
        self.server = RedisServer(home, SERVERS[build])
        self.data = home / "data"
        self.data.mkdir()
        self.server.settings.update({"dir": str(self.data), "appendonly": appendonly})
        if cluster:
            self.server.port = self.server.settings["port"] = cluster_port()
            self.server.settings.update({"cluster-enabled": "yes", "cluster-config-file": "nodes.conf"})
        self.server.write_salt_conf()
        self.server.start()
        self.backups = tmp_path / "backups"
        self.journal_dir = home / "redis-salt"  # the restore journal's root-only directory (/etc/redis-salt)
        self.events, self.calls, self.start_results = [], [], []
        self.mod = load_module("redis_backup_mod", "_modules/redis_backup.py")
        self.pillar = {
            "role": role, "mode": "cluster" if cluster else "sentinel", "port": self.server.port,
            "password": PASSWORD, "hostname": MINION, "salt_config_dir": str(self.journal_dir),
            "backup": {"dir": str(self.backups), "retention_days": 7, "compress": "gzip"},
        }
        self.mod.__pillar__ = {"redis": self.pillar}
        self.mod.__grains__ = {"id": MINION}
        self.mod.__opts__ = {"id": MINION}
        self.mod.__salt__ = {"service.stop": self.stop, "service.start": self.start, "event.send": self.send}

    # stand-ins for Salt's functions
    def stop(self, name):
        self.calls.append(("stop", name))
        self.server.stop()
        return True

    def start(self, name):
        self.calls.append(("start", name))
        if self.start_results and not self.start_results.pop(0):
            return False
        self.server.spawn()
        return True

    def send(self, tag, data):
        json.dumps(data)  # what the real bus sends must serialize
        self.events.append((tag, data))
        return True

    def binary(self):
        return redis.Redis(port=self.server.port, password=PASSWORD, decode_responses=False)

    def restart(self):
        self.server.stop()
        self.server.start()

    def tags(self):
        return [tag for tag, _ in self.events]


@pytest.fixture
def node(tmp_path):
    """A Redis 7.0 node with appendonly yes, as the deployment runs it."""
    made = Node(tmp_path)
    yield made
    made.server.stop()


def populate(client, bulk=300):
    """Keys of every type, with the encodings Redis picks for small and big values."""
    client.set("str", "value")
    client.set("str:ttl", "expiring", ex=3600)
    client.set("str:int", 12345)
    client.rpush("list", *[f"item{i}" for i in range(10)])
    client.rpush("list:big", *[f"item{i}" * 20 for i in range(800)])
    client.sadd("set", "a", "b", "c")
    client.sadd("set:int", *range(100))
    client.zadd("zset", {"one": 1, "two": 2.5, "three": -3})
    client.zadd("zset:big", {f"member{i}": i for i in range(300)})
    client.hset("hash", mapping={"field": "value", "n": 1})
    client.hset("hash:big", mapping={f"field{i}": "x" * 100 for i in range(200)})
    client.xadd("stream", {"field": "value"})
    client.xadd("stream", {"field": "other"})
    client.xgroup_create("stream", "readers", id="0")
    client.xreadgroup("readers", "reader1", {"stream": ">"}, count=1)
    pipe = client.pipeline(transaction=False)
    for i in range(bulk):
        pipe.set(f"bulk:{i}", f"value-{i}" * 10)
    pipe.execute()
    client.execute_command("SELECT", 0)


def snapshot(node):
    """Every key's type, encoding, DUMP and whether it has a TTL. A set or hash in a hash
    table dumps its members in table order, which a reload changes: for those, the members."""
    client = node.binary()
    keys = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"set":
            value = sorted(client.smembers(key))
        elif kind == b"hash":
            value = sorted(client.hgetall(key).items())
        else:
            value = client.dump(key)
        keys[key] = (kind, client.object("encoding", key), value, client.pttl(key) > 0)
    return keys


EXPECTED_TYPES = {"string": 303, "list": 2, "set": 2, "zset": 2, "hash": 2, "stream": 1}


def data_dir_state(node):
    return sorted((p.relative_to(node.data).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in node.data.rglob("*"))


def test_rdb_round_trip_every_type(node):
    populate(node.server.client())
    before = snapshot(node)
    ret = node.mod.create(type="rdb")

    assert ret["type"] == "rdb" and ret["compress"] == "gzip" and ret["verified"] is True
    assert ret["keys"] == 312 and ret["keys_with_ttl"] == 1 and ret["key_types"] == EXPECTED_TYPES
    assert ret["minion"] == MINION and ret["redis_version"].startswith("7.0.")
    assert ret["role"] == "master" and ret["replication_role"] == "master" and ret["mode"] == "sentinel"
    assert ret["retention_days"] == 7 and ret["pruned"] == []
    path = pathlib.Path(ret["path"])
    assert path.parent == node.backups / "rdb" and path.name == ret["name"]
    assert sorted(p.name for p in path.iterdir()) == ["backup_metadata.json", "dump.rdb.gz"]
    stored = json.loads((path / "backup_metadata.json").read_text())
    assert stored["name"] == ret["name"] and stored["files"] == ret["files"]
    assert "str:ttl" not in (path / "backup_metadata.json").read_text()  # no key names
    assert node.tags() == [f"redis/backup/{MINION}/started", f"redis/backup/{MINION}/finished"]
    assert node.events[1][1]["name"] == ret["name"] and node.events[1][1]["files"] == ret["files"]
    assert not [p for p in node.backups.rglob(".partial-*")]

    node.server.client().flushall()
    ret = node.mod.restore(ret["name"], force=True)

    assert ret["result"] is True and ret["keys"] == 312 and ret["backup_keys"] == 312
    assert ret["restored"] == ["dump.rdb", "appendonlydir"] and ret["warnings"] == []
    assert node.calls == [("stop", "redis-server"), ("start", "redis-server")]
    assert snapshot(node) == before
    safety = pathlib.Path(ret["safety_copy"])
    assert safety.parent == node.data.parent and safety.name.startswith("data_backup_")
    assert (safety / "appendonlydir").is_dir()  # the flushed data, kept
    assert (node.data / "dump.rdb").stat().st_uid == int(subprocess.check_output(["id", "-u", "redis"]))
    assert node.tags()[-2:] == [f"redis/restore/{MINION}/started", f"redis/restore/{MINION}/finished"]
    # appendonly yes loads the AOF, never dump.rdb: the restored data must survive a restart.
    node.restart()
    assert snapshot(node) == before
    assert_no_password(ret)
    assert_no_password(node.events)


def test_aof_round_trip_includes_writes_after_the_rewrite(node, monkeypatch):
    client = node.server.client()
    populate(client)
    rewrite = node.mod._bgrewriteaof

    def rewrite_then_write(*args):
        rewrite(*args)
        client.set("after:rewrite", "in the incr file")
        client.lpush("list", "pushed after the rewrite")

    monkeypatch.setattr(node.mod, "_bgrewriteaof", rewrite_then_write)
    ret = node.mod.create(type="aof", compress="zstd")
    before = snapshot(node)

    kinds = [item["kind"] for item in ret["files"]]
    assert kinds == ["base", "incr", "manifest"]
    assert all(item["name"].endswith(".zst") for item in ret["files"])
    assert ret["appenddirname"] == "appendonlydir" and ret["keys"] == 313 and ret["verified"] is True
    assert [f for f in ret["files"] if f["kind"] == "incr"][0]["raw_size"] > 0

    client.flushall()
    ret = node.mod.restore(ret["name"], force=True)

    assert ret["restored"] == ["appendonlydir"] and ret["keys"] == 313
    assert snapshot(node) == before
    node.restart()
    assert snapshot(node) == before


def test_both_uncompressed_with_copy_to(node, tmp_path):
    populate(node.server.client(), bulk=10)
    node.pillar["backup"]["copy_to"] = str(tmp_path / "shared")
    before = snapshot(node)
    ret = node.mod.create(type="both", compress="none")

    assert set(ret) == {"rdb", "aof", "pruned"}
    assert [f["name"] for f in ret["rdb"]["files"]] == ["dump.rdb"]
    assert ret["rdb"]["files"][0]["sha256"] == ret["rdb"]["files"][0]["raw_sha256"]
    for kind in ("rdb", "aof"):
        copy = pathlib.Path(ret[kind]["copied_to"])
        assert copy == tmp_path / "shared" / MINION / kind / ret[kind]["name"]
        assert json.loads((copy / "backup_metadata.json").read_text())["files"] == ret[kind]["files"]
    assert node.tags() == [f"redis/backup/{MINION}/{end}" for end in ("started", "finished") * 2]

    listed = node.mod.list_()
    newest_first = sorted([ret["rdb"], ret["aof"]], key=lambda meta: (meta["timestamp"], meta["name"]), reverse=True)
    assert [b["name"] for b in listed["backups"]] == [meta["name"] for meta in newest_first]
    assert set(listed["backups"][0]) == {"name", "path", "type", "timestamp", "size", "verified", "damaged",
                                         "compress", "keys"}
    assert listed["table"][1].split()[:6] == ["No.", "Backup", "Name", "Timestamp", "Type", "Size"]
    assert listed["table"][3].split()[:2] == ["1", newest_first[0]["name"]] and listed["table"][3].endswith("yes")

    node.server.client().flushall()
    node.mod.restore(ret["rdb"]["path"], force=True)  # by path
    assert snapshot(node) == before


def test_same_second_backups_get_unique_names(node, monkeypatch):
    moment = datetime.datetime(2025, 10, 27, 12, 0, 0, tzinfo=datetime.timezone.utc)
    monkeypatch.setattr(node.mod, "_now", lambda: moment)
    names = [node.mod.create(type="rdb", verify=False, prune=False)["name"] for _ in range(3)]

    assert names == ["rdb_backup_20251027_120000", "rdb_backup_20251027_120000_2", "rdb_backup_20251027_120000_3"]
    assert [b["name"] for b in node.mod.list_()["backups"]] == names[::-1]


def test_corrupted_backup_refused_before_anything_stops(node):
    populate(node.server.client(), bulk=10)
    ret = node.mod.create(type="rdb")
    stored = pathlib.Path(ret["path"]) / "dump.rdb.gz"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    before = data_dir_state(node)

    with pytest.raises(CommandExecutionError, match="damaged"):
        node.mod.restore(ret["name"], force=True)
    assert node.calls == []
    assert data_dir_state(node) == before
    assert node.server.client().dbsize() == 22  # nothing touched
    with pytest.raises(CommandExecutionError, match="fails verification"):
        node.mod.verify(ret["name"])
    assert node.mod.list_()["backups"][0]["verified"] is False


def test_damaged_rdb_with_matching_checksums_refused_by_redis_check_rdb(node):
    node.server.client().set("key", "value")
    ret = node.mod.create(type="rdb", compress="none")
    path = pathlib.Path(ret["path"])
    stored = path / "dump.rdb"
    data = bytearray(stored.read_bytes())
    data[-12] ^= 0xFF  # inside the data: the RDB's own CRC64 no longer matches
    stored.write_bytes(bytes(data))
    meta = json.loads((path / "backup_metadata.json").read_text())
    digest = hashlib.sha256(bytes(data)).hexdigest()
    meta["files"][0].update(sha256=digest, raw_sha256=digest)  # as if damaged before checksumming
    (path / "backup_metadata.json").write_text(json.dumps(meta))

    with pytest.raises(CommandExecutionError, match="redis-check-rdb finds the backup damaged"):
        node.mod.restore(ret["name"], force=True)
    assert node.calls == []


@pytest.mark.parametrize("compress", ["zstd", "none"])
def test_verify_streams_the_decompressed_bytes_to_redis_check_rdb(node, compress):
    """verify (and create's own check) run redis-check-rdb on the bytes the stored file
    decompresses to, fed through a pipe as they are hashed: damage under matching sums is
    still the checker's to find, and marks the backup damaged."""
    node.server.client().set("key", "value")
    ret = node.mod.create(type="rdb", compress=compress)
    assert ret["verified"] is True and ret["keys"] == 1
    path = pathlib.Path(ret["path"])
    raw = bytearray(pathlib.Path(node.data / "dump.rdb").read_bytes())
    raw[-12] ^= 0xFF  # inside the data: the RDB's own CRC64 no longer matches
    stored = bytes(raw) if compress == "none" else subprocess.run(
        ["zstd", "-q", "-c"], input=bytes(raw), capture_output=True, check=True).stdout
    item = json.loads((path / "backup_metadata.json").read_text())["files"][0]
    (path / item["name"]).write_bytes(stored)
    meta = json.loads((path / "backup_metadata.json").read_text())
    meta["files"][0].update(sha256=hashlib.sha256(stored).hexdigest(), size=len(stored),
                            raw_sha256=hashlib.sha256(bytes(raw)).hexdigest())
    (path / "backup_metadata.json").write_text(json.dumps(meta))

    with pytest.raises(CommandExecutionError, match="damaged.*redis-check-rdb finds the backup damaged"):
        node.mod.verify(ret["name"])
    assert json.loads((path / "backup_metadata.json").read_text())["verified"] is False
    assert sorted(p.name for p in path.parent.iterdir()) == [ret["name"]]  # no check directory left


def test_a_streamed_check_that_outlives_its_timeout_fails_as_unfinished():
    """A checker still waiting for input when its timeout runs out is killed and reported as
    unfinished, never as a pass, and the copy feeding it (through a tap, as create's check
    does) is never held back by it. Its input stays open until the checker has ended: only
    the timer can have ended it, whatever the machine's load made of the first second."""
    throwaway = load_module("redis_backup_throwaway_for_timeout", "_utils/redis_backup_throwaway.py")
    files = load_module("redis_backup_files_for_timeout", "_utils/redis_backup_files.py")
    uid, gid = throwaway.account()
    started = time.monotonic()
    checker = throwaway.stream_check("/usr/bin/redis-server", "redis-check-rdb", 1, uid, gid)
    tap = files.tap(checker.stdin)
    tap.write(b"REDIS0010")  # a valid start, then nothing: the checker waits for the rest
    wait_until(lambda: checker.proc.poll() is not None, 30, "the checker ended while its input was open")
    assert checker.proc.returncode == -signal.SIGKILL and time.monotonic() - started >= 1  # the timer's kill
    for _ in range(8):  # more than the tap holds: dropped, never blocking the copy
        tap.write(b"0" * files.CHUNK)
    tap.close()  # as verdict(): the checker's input ends
    assert isinstance(tap.failed, BrokenPipeError) and checker.stdin.closed
    with pytest.raises(CommandExecutionError, match="redis-check-rdb did not finish within 1s"):
        checker.result()


def test_restore_without_force_changes_nothing(node):
    populate(node.server.client(), bulk=10)
    ret = node.mod.create(type="rdb")
    node.server.client().set("newer", "data")
    before, state = snapshot(node), data_dir_state(node)

    check = node.mod.restore(ret["name"])

    assert check["result"] is None and check["changed"] is False
    assert [item["name"] for item in check["would_replace"]] == ["appendonlydir", "dump.rdb"]
    assert check["would_create"] == ["dump.rdb", "appendonlydir"]
    assert "force=True" in check["comment"]
    assert node.calls == [] and snapshot(node) == before and data_dir_state(node) == state
    assert not list(node.backups.rglob(".partial-*"))
    assert_no_password(check)


def test_interrupted_copy_leaves_nothing_listed(node, monkeypatch):
    populate(node.server.client(), bulk=10)
    store = node.mod._store

    def half_then_fail(source, length, destination, compress):
        with open(destination, "wb") as handle:
            handle.write(source.read(length // 2))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(node.mod, "_store", half_then_fail)
    with pytest.raises(CommandExecutionError, match="No space left on device"):
        node.mod.create(type="rdb")
    monkeypatch.setattr(node.mod, "_store", store)

    assert node.mod.list_()["backups"] == []
    assert not list(node.backups.rglob(".partial-*"))
    assert node.tags() == [f"redis/backup/{MINION}/started", f"redis/backup/{MINION}/failed"]
    assert "No space left on device" in node.events[-1][1]["error"]
    assert_no_password(node.events)


KILLED_CREATE = """
import json, sys, time
sys.path[:0] = [{functional!r}, {functional!r} + "/.."]
from conftest import load_module
settings = json.loads(sys.stdin.read())
mod = load_module("redis_backup_mod", "_modules/redis_backup.py")
mod.__pillar__ = {{"redis": settings}}
mod.__grains__ = {{"id": "node1"}}
mod.__opts__ = {{}}
mod.__salt__ = {{"event.send": lambda tag, data: True}}
store = mod._store

def store_then_hang(*args):
    result = store(*args)
    print("copied", flush=True)
    time.sleep(60)
    return result

mod._store = store_then_hang
mod.create(type="rdb")
"""


def test_backup_killed_half_way_is_never_listed_and_pruned_after_a_day(node, tmp_path):
    populate(node.server.client(), bulk=10)
    script = tmp_path / "killed_create.py"
    script.write_text(KILLED_CREATE.format(functional=str(ROOT / "tests" / "functional")))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(json.dumps(node.pillar).encode())  # the password through a pipe, not argv
    proc.stdin.close()
    try:
        assert proc.stdout.readline() == b"copied\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    partials = list((node.backups / "rdb").glob(".partial-rdb_backup_*"))
    assert len(partials) == 1 and (partials[0] / "dump.rdb.gz").exists()
    assert not (partials[0] / "backup_metadata.json").exists()
    assert node.mod.list_()["backups"] == []

    assert node.mod.prune()["deleted"] == []  # a backup may still be running: left alone for a day
    old = time.time() - 2 * 86400
    os.utime(partials[0], (old, old))
    deleted = node.mod.prune()["deleted"]
    assert [item["path"] for item in deleted] == [str(partials[0])] and not partials[0].exists()


def set_metadata(path, **changes):
    meta_path = pathlib.Path(path) / "backup_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


def ago(days):
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)
    return moment.isoformat(timespec="seconds")


def test_prune_follows_each_backups_retention_and_keeps_the_newest_good(node, monkeypatch):
    node.server.client().set("key", "value")
    made = {}
    for label in ("old", "mid", "long", "new"):
        moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=len(made))
        monkeypatch.setattr(node.mod, "_now", lambda moment=moment: moment)
        made[label] = node.mod.create(type="rdb", verify=label != "new", prune=False)
    set_metadata(made["old"]["path"], timestamp=ago(20))                      # verified, past 7 days
    set_metadata(made["long"]["path"], timestamp=ago(25), retention_days=30,  # taken with 30 days
                 verified=False)
    set_metadata(made["mid"]["path"], timestamp=ago(10))                      # newest verified
    set_metadata(made["new"]["path"], timestamp=ago(1))                       # not verified, recent
    foreign = node.backups / "rdb" / "rdb_backup_20000101_000000"
    foreign.mkdir()  # no metadata: not ours
    (node.backups / "rdb" / "notes.txt").write_text("an operator's file")

    ret = node.mod.prune()

    assert [item["name"] for item in ret["deleted"]] == [made["old"]["name"]]
    kept = {item["name"]: item["reason"] for item in ret["kept"]}
    assert "among the 2 newest good rdb" in kept[made["mid"]["name"]]  # keep_min (default 2)
    assert "within its retention (30 days)" in kept[made["long"]["name"]]
    assert "within its retention (7 days)" in kept[made["new"]["name"]]
    assert foreign.exists() and (node.backups / "rdb" / "notes.txt").exists()

    ret = node.mod.prune(retention_days=0)  # a given retention overrides each backup's own

    assert [item["name"] for item in ret["deleted"]] == [made["long"]["name"]]
    assert [item["name"] for item in ret["kept"]] == [made["new"]["name"], made["mid"]["name"]]
    assert [b["name"] for b in node.mod.list_()["backups"]] == [made["new"]["name"], made["mid"]["name"]]
    with pytest.raises(CommandExecutionError, match="retention_days must be"):
        node.mod.prune(retention_days=-1)


def child_processes():
    return set(subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.split())


def test_verify_counts_keys_per_type_and_leaves_no_process(node):
    populate(node.server.client())
    ret = node.mod.create(type="rdb", verify=False)
    assert ret["verified"] is False and "key_types" not in ret
    assert node.mod.list_()["backups"][0]["verified"] is False
    children = child_processes()

    result = node.mod.verify(ret["name"])

    assert result["result"] is True and result["keys"] == 312 and result["key_types"] == EXPECTED_TYPES
    assert result["expected"]["keys"] == 312 and result["expected"]["keys_with_ttl"] == 1
    assert node.mod.list_()["backups"][0]["verified"] is True
    meta = json.loads((pathlib.Path(ret["path"]) / "backup_metadata.json").read_text())
    assert meta["verified"] is True and meta["key_types"] == EXPECTED_TYPES
    assert child_processes() <= children, "verify left a process behind"
    assert not list(node.backups.rglob(".partial-*"))


def test_user_mistakes_are_clear_and_never_show_the_password(node, monkeypatch):
    errors = []
    for kwargs, expected in (
        ({"type": "full"}, "type must be one of rdb, aof, both"),
        ({"compress": "lz4"}, "compress must be one of gzip, zstd, none"),
        ({"retention_days": "soon"}, "retention_days must be a number"),
    ):
        with pytest.raises(CommandExecutionError, match=expected) as caught:
            node.mod.create(**kwargs)
        errors.append(str(caught.value))
    with pytest.raises(CommandExecutionError, match="not a backup name"):
        node.mod.restore("latest")
    with pytest.raises(CommandExecutionError, match="does not exist"):
        node.mod.verify("rdb_backup_20000101_000000")

    node.pillar["password"] = WRONG_PASSWORD
    with pytest.raises(CommandExecutionError, match="refuses the deployment's password") as caught:
        node.mod.create(type="rdb")
    errors.append(str(caught.value))
    node.pillar.update(password=PASSWORD, port=free_port())
    with pytest.raises(CommandExecutionError, match="connection refused") as caught:
        node.mod.create(type="rdb")
    errors.append(str(caught.value))
    node.pillar["port"] = node.server.port

    free = {"value": 1000}
    usage = node.mod.shutil.disk_usage
    monkeypatch.setattr(node.mod.shutil, "disk_usage", lambda path: usage(path)._replace(free=free["value"]))
    node.server.client().set("key", "x" * 5000)
    with pytest.raises(CommandExecutionError, match=r"not enough free space in .*data.*: 1000B free \(1000 bytes\)"):
        node.mod.create(type="rdb")
    assert node.server.client().info("persistence")["rdb_saves"] == 0, "BGSAVE ran despite the refusal"
    errors.append(str(node.events[-1][1]["error"]))
    assert node.tags()[-1] == f"redis/backup/{MINION}/failed"
    assert_no_password(errors)
    assert_no_password(node.events)


def test_aof_refused_without_appendonly(node):
    node.server.client().config_set("appendonly", "no")
    with pytest.raises(CommandExecutionError, match="appendonly no"):
        node.mod.create(type="aof")
    # type=both: the RDB is still taken, the error says so
    with pytest.raises(CommandExecutionError, match=r"aof: .*appendonly no.*rdb backup rdb_backup_\S+ done"):
        node.mod.create(type="both")
    assert [b["type"] for b in node.mod.list_()["backups"]] == ["rdb"]


def test_redis_62_refuses_aof_and_round_trips_rdb(tmp_path):
    SERVERS["redis-6.2"].require()
    node = Node(tmp_path, build="redis-6.2")
    try:
        populate(node.server.client(), bulk=10)
        before = snapshot(node)
        with pytest.raises(CommandExecutionError, match=r"AOF backup needs Redis 7 or later.*6\.2\.\d+"):
            node.mod.create(type="aof")
        assert not list(node.backups.rglob("aof_backup_*"))
        ret = node.mod.create(type="rdb", compress="zstd")
        assert ret["redis_version"].startswith("6.2.") and ret["verified"] is True  # checked by 6.2's own tools
        node.server.client().flushall()

        node.mod.restore(ret["name"], force=True)

        assert snapshot(node) == before
        node.restart()  # appendonly yes on 6.2: the RDB went in as the AOF's preamble
        assert snapshot(node) == before
    finally:
        node.server.stop()


def test_failed_start_puts_the_previous_data_back(node):
    populate(node.server.client(), bulk=10)
    ret = node.mod.create(type="rdb")
    node.server.client().flushall()
    node.server.client().set("current", "data")
    before = snapshot(node)
    node.start_results = [False]  # the first start fails, the one after the rollback works

    with pytest.raises(CommandExecutionError) as caught:
        node.mod.restore(ret["name"], force=True)

    message = str(caught.value)
    assert "service.start redis-server failed" in message
    assert "previous data was put back from" in message and "Redis started again" in message
    assert snapshot(node) == before
    assert node.tags()[-1] == f"redis/restore/{MINION}/failed"
    # the rollback stops Redis whatever the failed start left running, then starts it again
    assert [call for call, _ in node.calls] == ["stop", "start", "stop", "start"]


def test_restore_with_redis_down(node):
    populate(node.server.client(), bulk=10)
    before = snapshot(node)
    ret = node.mod.create(type="rdb")
    node.server.stop()
    (node.data / "appendonlydir" / "appendonly.aof.manifest").write_text("damaged\n")  # why it is down

    with pytest.raises(CommandExecutionError, match="Redis is down.*part_of_set=True"):
        node.mod.restore(ret["name"], force=True, config_file=str(node.server.main_conf))
    ret = node.mod.restore(ret["name"], force=True, part_of_set=True, config_file=str(node.server.main_conf))

    assert ret["result"] is True
    assert snapshot(node) == before


def test_replica_and_master_with_replicas_need_part_of_set(node, tmp_path):
    node.server.client().set("key", "value")
    backup = node.mod.create(type="rdb")["name"]
    (tmp_path / "replica").mkdir()
    replica = Node(tmp_path / "replica", role="replica")
    try:
        replica.server.client().replicaof("127.0.0.1", node.server.port)
        replica.server.client().config_set("masterauth", PASSWORD)
        assert node.mod._wait(lambda: node.server.client().info("replication")["connected_slaves"] == 1, 10)

        with pytest.raises(CommandExecutionError, match=r"has 1 replica\(s\).*part_of_set=True"):
            node.mod.restore(backup, force=True)
        replica.mod.__pillar__["redis"]["backup"] = node.pillar["backup"]
        with pytest.raises(CommandExecutionError, match="this node is a replica"):
            replica.mod.restore(backup, force=True)
        assert node.calls == [] and replica.calls == []
        assert node.mod.restore(backup, part_of_set=True)["result"] is None  # checked, allowed
    finally:
        replica.server.stop()


@pytest.fixture
def cluster_node(tmp_path):
    """A one-node Redis Cluster serving every slot."""
    made = Node(tmp_path, cluster=True, role="cluster-node")
    client = made.server.client()
    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    assert made.mod._wait(lambda: client.cluster("info")["cluster_state"] == "ok", 10)
    yield made
    made.server.stop()


def test_cluster_restore_keeps_identity_and_refuses_foreign_slots(cluster_node):
    node = cluster_node
    client = node.server.client()
    for i in range(50):
        client.set(f"key:{i}", i)
    before = snapshot(node)
    node_id = client.execute_command("CLUSTER", "MYID")
    ret = node.mod.create(type="rdb")
    assert ret["cluster_enabled"] is True and ret["node_id"] == node_id and ret["slots"] == [[0, 16383]]

    set_metadata(ret["path"], slots=[[0, 5460]])
    with pytest.raises(CommandExecutionError, match=r"holds slots \[\[0, 5460\]\], this node serves \[\[0, 16383\]\]"):
        node.mod.restore(ret["name"], force=True)
    assert node.calls == []
    set_metadata(ret["path"], slots=[[0, 16383]])

    client.flushall()
    restored = node.mod.restore(ret["name"], force=True)

    assert restored["cluster_state"] == "ok" and restored["warnings"] == []
    assert "nodes.conf" in restored["kept"]
    assert (pathlib.Path(restored["safety_copy"]) / "nodes.conf").exists()  # a copy, for reference
    assert node.server.client().execute_command("CLUSTER", "MYID") == node_id
    assert snapshot(node) == before


def test_snapshot_already_running_is_waited_for_then_a_fresh_one_taken(node):
    client = node.server.client()
    populate(client, bulk=10)
    client.config_set("rdb-key-save-delay", 20000)  # 20 ms per key: a snapshot of 22 keys takes ~0.4 s
    saves = client.info("persistence")["rdb_saves"]
    client.bgsave()
    client.set("late", "written while the first BGSAVE ran")
    rdb = node.mod.create(type="rdb", verify=False, compress="none")
    assert client.info("persistence")["rdb_saves"] == saves + 2
    assert rdb["keys"] == 23, "the backup is the BGSAVE that ran before 'late' was written"

    client.bgsave()  # BGREWRITEAOF is scheduled behind it
    client.set("later", "written while a BGSAVE ran")
    aof = node.mod.create(type="aof", compress="none")
    client.config_set("rdb-key-save-delay", 0)
    assert aof["keys"] == 24 and aof["verified"] is True


def test_aof_copy_stops_at_the_last_whole_command(tmp_path):
    mod = load_module("redis_backup_mod", "_modules/redis_backup.py")
    last = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nv!\r\n"  # a value holding CRLF
    whole = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n" + b"#TS:1700000000\r\n" + last
    torn = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva"
    path = tmp_path / "appendonly.aof.1.incr.aof"
    path.write_bytes(whole + torn)
    with open(path, "rb", buffering=0) as handle:
        assert mod._aof_complete_length(handle, len(whole + torn)) == len(whole)
        assert mod._aof_complete_length(handle, len(whole) - 1) == len(whole) - len(last)
        assert mod._aof_complete_length(handle, len(whole)) == len(whole)
        assert handle.tell() == 0


def test_a_backup_the_server_cannot_load_is_refused_up_front(tmp_path):
    """A Valkey 9 backup (RDB format 80) onto Redis 7.0 (which reads up to 10): refused before
    anything stops, naming both servers and formats; the metadata records what wrote it."""
    SERVERS["valkey-9"].require()
    valkey = Node(tmp_path, build="valkey-9")
    redis_node = Node(tmp_path, build="redis-7.0")
    try:
        populate(valkey.server.client(), bulk=10)
        made = valkey.mod.create(type="rdb", compress="none")
        assert (made["server"], made["rdb_format"]) == ("valkey", 80) and made["server_version"].startswith("9.")
        populate(redis_node.server.client(), bulk=5)
        before = snapshot(redis_node)

        with pytest.raises(CommandExecutionError) as refused:
            redis_node.mod.restore(made["name"], force=True)

        message = str(refused.value)
        assert f"restore of {made['name']} refused: the restore would move from the backup" in message
        assert "(valkey 9." in message and "(RDB 80)) to this node (redis 7.0." in message
        assert "(RDB 10)), cannot load it" in message
        assert redis_node.calls == [] and snapshot(redis_node) == before
    finally:
        valkey.server.stop()
        redis_node.server.stop()
