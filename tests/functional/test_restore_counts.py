"""What a restore checks after Redis's start: the keys the server's loader read (every
database), never what clients add once it answers. Real servers of every build
(conftest.SERVERS); Redis 6.2 has no loader counter and falls back to "not empty".
"""

import os
import threading

import pytest
from conftest import PASSWORD, SERVERS, assert_no_password
from salt.exceptions import CommandExecutionError
from test_backup import Node, populate, snapshot

BUILDS = list(SERVERS)


@pytest.fixture(params=BUILDS)
def any_node(request, tmp_path):
    SERVERS[request.param].require()
    made = Node(tmp_path, build=request.param)
    yield made
    made.server.stop()


@pytest.fixture
def node(tmp_path):
    made = Node(tmp_path)
    yield made
    made.server.stop()


def fill_databases(node, databases=(0, 3), per_db=20):
    client = node.server.client()
    for db in databases:
        client.execute_command("SELECT", db)
        for i in range(per_db):
            client.set(f"db{db}:key{i}", i)
        client.set(f"db{db}:ttl", "x", ex=3600)
    client.execute_command("SELECT", 0)
    return client


def every_database(node):
    """{db: snapshot of that database} for the databases that hold keys."""
    found = {}
    for name in node.server.client().info("keyspace"):
        db = int(name[2:])
        client = node.binary()
        client.execute_command("SELECT", db)
        found[db] = sorted((key, client.dump(key)) for key in client.scan_iter(count=1000))
    return found


def test_keys_in_database_0_and_3_are_restored(any_node):
    node = any_node
    fill_databases(node)
    before = every_database(node)
    ret = node.mod.create(type="rdb", compress="none")
    assert ret["keys"] == 42
    node.server.client().flushall()
    node.server.client().set("written:after", "the backup")

    restored = node.mod.restore(ret["name"], force=True)

    assert restored["result"] is True and restored["warnings"] == []
    assert restored["keys"] == 42, "keys counted over every database"
    if node.server.build.name == "redis-6.2":
        assert restored["loaded_keys"] is None  # no loader counter: the fallback check
    else:
        assert restored["loaded_keys"] == 42 and restored["expected_load"]["keys"] == 42
    assert every_database(node) == before
    node.restart()
    assert every_database(node) == before


def test_an_aof_of_database_0_and_3_with_commands_after_its_base(node, monkeypatch):
    """Redis counts the AOF base's keys when it loads it, not the incr file's commands."""
    client = fill_databases(node)
    rewrite = node.mod._bgrewriteaof

    def rewrite_then_write(*args):
        rewrite(*args)
        client.execute_command("SELECT", 3)
        client.delete("db3:key0", "db3:key1")
        client.set("db3:after", "in the incr file")
        client.execute_command("SELECT", 0)

    monkeypatch.setattr(node.mod, "_bgrewriteaof", rewrite_then_write)
    ret = node.mod.create(type="aof", compress="zstd")
    before = every_database(node)
    assert ret["keys"] == 41
    client.flushall()

    restored = node.mod.restore(ret["name"], force=True)

    assert restored["expected_load"] == {"keys": 42, "what": "the AOF's base file"}
    assert restored["loaded_keys"] == 42 and restored["keys"] == 41 and restored["warnings"] == []
    assert every_database(node) == before


def test_a_backup_of_database_3_alone_is_restored(any_node):
    node = any_node
    fill_databases(node, databases=(3,))
    before = every_database(node)
    ret = node.mod.create(type="rdb")
    node.server.client().flushall()

    restored = node.mod.restore(ret["name"], force=True)

    assert restored["result"] is True and restored["keys"] == 21
    assert every_database(node) == before


class Writer:
    """A client that writes new keys as fast as the server takes them, from when it is told
    to start, and remembers every write the server acknowledged."""

    def __init__(self, server):
        self.server, self.acked = server, []
        self.go, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.go.wait()
        number = 0
        while not self.done.is_set():
            try:
                client = self.server.client(timeout=1)
                while not self.done.is_set():
                    number += 1
                    client.execute_command("SELECT", number % 2 * 5)  # databases 0 and 5
                    if client.set(f"client:{number}", number):
                        self.acked.append(number)
            except Exception:  # noqa: BLE001 - down, loading, restarting: try again
                self.done.wait(0.02)

    def stop(self):
        self.done.set()
        self.thread.join(timeout=10)

    def missing(self):
        client = self.server.client()
        missing = []
        for number in self.acked:
            client.execute_command("SELECT", number % 2 * 5)
            if client.get(f"client:{number}") != str(number):
                missing.append(number)
        return missing


def writing_during_the_start(node, monkeypatch, writes=30):
    """Clients write from the moment Redis stops; the check after the start runs only once
    the restored server has acknowledged ``writes`` of their writes."""
    writer = Writer(node.server)
    stop = node.stop

    def stop_then_write(name):
        result = stop(name)
        writer.go.set()
        return result

    check = node.mod._check_restored

    def check_after_writes(*args, **kwargs):
        assert node.mod._wait(lambda: len(writer.acked) >= writes, 20), "no client write reached the server"
        return check(*args, **kwargs)

    monkeypatch.setitem(node.mod.__salt__, "service.stop", stop_then_write)
    monkeypatch.setattr(node.mod, "_check_restored", check_after_writes)
    return writer


def test_clients_writing_during_the_start_keep_their_writes(any_node, monkeypatch):
    node = any_node
    populate(node.server.client(), bulk=50)
    ret = node.mod.create(type="rdb")
    before = snapshot(node)
    node.server.client().flushall()
    writer = writing_during_the_start(node, monkeypatch)
    try:
        restored = node.mod.restore(ret["name"], force=True)
    finally:
        writer.stop()

    assert restored["result"] is True, restored
    assert len(writer.acked) >= 30 and writer.missing() == []
    assert restored["loaded_keys"] in (62, None)  # None: Redis 6.2 says nothing of its load
    after = snapshot(node)
    assert {key: value for key, value in after.items() if not key.startswith(b"client:")} == before
    node.restart()
    assert writer.missing() == [], "acknowledged writes lost at the next restart"
    assert_no_password(restored)


def test_a_start_that_did_not_load_the_backup_is_rolled_back_though_clients_write(node, monkeypatch):
    """Redis 7 with appendonly yes loads the AOF only: without it, it starts empty. Clients
    writing to the empty server must not make that look like a restore."""
    populate(node.server.client(), bulk=50)
    ret = node.mod.create(type="rdb")
    node.server.client().flushall()
    node.server.client().set("current", "data")
    before = snapshot(node)
    prepare = node.mod._prepare

    def prepare_without_the_aof(meta, live, new_dir, uid, gid):
        entries = prepare(meta, live, new_dir, uid, gid)
        node.mod._remove(os.path.join(new_dir, "appendonlydir"))
        return [name for name in entries if name != "appendonlydir"]

    monkeypatch.setattr(node.mod, "_prepare", prepare_without_the_aof)
    writer = writing_during_the_start(node, monkeypatch, writes=10)
    try:
        with pytest.raises(CommandExecutionError) as caught:
            node.mod.restore(ret["name"], force=True)
    finally:
        writer.stop()

    assert "Redis loaded 0 keys at its start" in str(caught.value) and "holds 62" in str(caught.value)
    assert "previous data was put back" in str(caught.value)
    assert {key: value for key, value in snapshot(node).items() if not key.startswith(b"client:")} == before


def test_keyspace_counts_every_database_and_says_whether_a_replica_is_in_sync(node, tmp_path):
    fill_databases(node).config_set("repl-diskless-sync-delay", 0)
    (tmp_path / "replica").mkdir()
    replica = Node(tmp_path / "replica", role="replica")
    try:
        client = replica.server.client()
        client.config_set("masterauth", PASSWORD)
        client.replicaof("127.0.0.1", node.server.port)
        assert node.mod._wait(lambda: replica.mod.keyspace().get("master_link_status") == "up", 10)

        master, copy = node.mod.keyspace(), replica.mod.keyspace()

        assert master["keys"] == 42 and master["databases"] == {0: 21, 3: 21}
        assert master["replication_role"] == "master" and "master_link_status" not in master
        assert copy["keys"] == 42 and copy["replication_role"] == "slave"
        assert copy["master_sync_in_progress"] is False
        assert_no_password([master, copy])
    finally:
        replica.server.stop()
