"""Retention against real backups of a real redis-server (_modules/redis_backup.py) and real
set manifests (_runners/redis_backup.py): each rule of _utils/redis_backup_retention.py where
it deletes files. Times are moved by setting ``_now`` (the module's clock), never by sleeping.
"""

import datetime
import importlib.util
import json
import os
import pathlib
import time

import pytest
from conftest import ROOT, utils_dunder
from salt.exceptions import CommandExecutionError
from test_backup import Node

SET_A, SET_B, SET_C, SET_D = (f"set_2025102{n}_030000" for n in range(4))


@pytest.fixture
def node(tmp_path):
    made = Node(tmp_path)
    made.server.client().set("key", "value")
    yield made
    made.server.stop()


def later(node, monkeypatch, days):
    """The module's clock ``days`` ahead of the real one."""
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)
    monkeypatch.setattr(node.mod, "_now", lambda: moment)


def names(node):
    return [item["name"] for item in node.mod.list_()["backups"]]


def metadata(path):
    return json.loads((pathlib.Path(path) / "backup_metadata.json").read_text())


def test_a_transient_verify_failure_is_not_damage_and_keeps_the_backup(node, monkeypatch, tmp_path):
    good = node.mod.create(type="rdb", compress="zstd", verify=False, prune=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # zstd missing for a while
    with pytest.raises(CommandExecutionError, match="not marked damaged.*zstd is not installed"):
        node.mod.verify(good["name"])
    monkeypatch.undo()
    meta = metadata(good["path"])
    assert meta["verified"] is False and meta["verify_transient"] is True and "damaged" not in meta
    with pytest.raises(CommandExecutionError, match="not marked damaged"):
        node.mod.verify(good["name"], timeout=0.001)  # the checker cannot finish in time
    assert "damaged" not in metadata(good["path"])

    later(node, monkeypatch, 30)
    ret = node.mod.prune(keep_min=1)
    assert ret["deleted"] == [] and names(node) == [good["name"]]
    assert ret["kept"][0]["reason"].startswith("newest good rdb") and ret["kept"][0]["good"] is True


def test_damage_is_recorded_and_a_damaged_newest_backup_does_not_protect_itself(node, monkeypatch):
    older = node.mod.create(type="rdb", verify=False, prune=False)
    later(node, monkeypatch, 0.001)
    newest = node.mod.create(type="rdb", verify=False, prune=False)
    stored = pathlib.Path(newest["path"]) / "dump.rdb.gz"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(CommandExecutionError, match=r"fails verification \(damaged\)"):
        node.mod.verify(newest["name"])
    meta = metadata(newest["path"])
    assert meta["damaged"] is True and "sha256 differs" in meta["damage"]
    assert node.mod.list_()["backups"][0]["damaged"] is True

    later(node, monkeypatch, 30)
    ret = node.mod.prune(keep_min=1)
    assert [item["name"] for item in ret["deleted"]] == [newest["name"]]
    assert ret["deleted"][0]["reason"].endswith("damaged")
    assert names(node) == [older["name"]]


def test_create_with_retention_zero_never_deletes_the_backup_it_returns(node, monkeypatch):
    node.pillar["backup"]["keep_min"] = 1
    first = node.mod.create(type="rdb", verify=False, retention_days=0)
    assert pathlib.Path(first["path"]).is_dir() and first["pruned"] == []
    later(node, monkeypatch, 0.001)
    second = node.mod.create(type="rdb", verify=False, retention_days=0)
    assert pathlib.Path(second["path"]).is_dir()
    assert second["pruned"] == [first["name"]] and names(node) == [second["name"]]


def test_a_forward_clock_jump_past_the_retention_leaves_keep_min_per_type(node, monkeypatch):
    made = []
    for step in range(4):
        later(node, monkeypatch, step / 1000)
        made.append(node.mod.create(type="both", verify=False, prune=False))
    later(node, monkeypatch, 1000)  # the clock jumps far past every backup's 7 days

    ret = node.mod.prune()  # pillar keep_min absent: 2

    assert len(names(node)) == 4
    for kind in ("rdb", "aof"):
        assert [b["name"] for b in node.mod.list_()["backups"] if b["type"] == kind] == [
            made[-1][kind]["name"], made[-2][kind]["name"]]
    assert len(ret["deleted"]) == 4
    with pytest.raises(CommandExecutionError, match="keep_min must be a whole number"):
        node.mod.prune(keep_min="two")


def test_members_of_the_newest_complete_set_stay_until_a_newer_complete_set_exists(node, monkeypatch):
    node.pillar["backup"]["keep_min"] = 1
    in_a = node.mod.create(type="rdb", verify=False, prune=False, set_id=SET_A)
    later(node, monkeypatch, 1)
    in_b = node.mod.create(type="rdb", verify=False, prune=False, set_id=SET_B, complete_set=SET_A)
    later(node, monkeypatch, 2)
    in_c = node.mod.create(type="rdb", verify=False, prune=False, set_id=SET_C)
    assert metadata(in_c["path"])["set_id"] == SET_C
    later(node, monkeypatch, 30)  # every backup past its 7 days

    ret = node.mod.prune()  # the master said A was complete (B partial); C's status is not known yet

    assert names(node) == [in_c["name"], in_a["name"]] and [i["name"] for i in ret["deleted"]] == [in_b["name"]]
    assert {i["name"]: i["reason"] for i in ret["kept"]}[in_a["name"]].startswith(f"member of set {SET_A}")

    # the next set's run tells the node that C was complete: A's member may go now
    later(node, monkeypatch, 31)
    in_d = node.mod.create(type="rdb", verify=False, set_id=SET_D, complete_set=SET_C)
    assert in_d["pruned"] == [in_a["name"]]
    assert names(node) == [in_d["name"], in_c["name"]]
    with pytest.raises(CommandExecutionError, match="set_id must be a set id"):
        node.mod.create(type="rdb", verify=False, set_id="../../etc")


def test_copies_in_copy_to_get_the_same_retention(node, monkeypatch, tmp_path):
    copies = tmp_path / "gluster"
    node.pillar["backup"].update(copy_to=str(copies), keep_min=1)
    made = []
    for step in range(3):
        later(node, monkeypatch, step / 1000)
        made.append(node.mod.create(type="rdb", verify=False, retention_days=0))
    copied = sorted(p.name for p in (copies / "node1" / "rdb").iterdir())
    assert copied == [made[-1]["name"]] and names(node) == [made[-1]["name"]]
    assert made[-1]["pruned_copies"] == [made[-2]["name"]]


def test_safety_copies_older_than_their_days_go_but_never_the_newest(node, monkeypatch):
    ret = node.mod.create(type="rdb")
    restored = node.mod.restore(ret["name"], force=True)
    newest = pathlib.Path(restored["safety_copy"])
    older = newest.parent / "data_backup_20200101_000000"
    older.mkdir()
    (older / "dump.rdb").write_bytes(b"old")
    unrelated = newest.parent / "other_backup_20200101_000000"
    unrelated.mkdir()
    journal = node.journal_dir / "restore-journal.json"

    journal.write_text("{}")  # a restore journal pending: nothing goes
    kept = node.mod.prune(safety_copy_days=0, config_file=str(node.server.main_conf))["safety_copies"]
    assert kept["deleted"] == [] and "journal is pending" in kept["skipped"] and older.is_dir()
    journal.unlink()

    later(node, monkeypatch, 400)
    done = node.mod.prune(config_file=str(node.server.main_conf))["safety_copies"]  # pillar absent: 7 days

    assert [item["name"] for item in done["deleted"]] == [older.name]
    assert [item["name"] for item in done["kept"]] == [newest.name] and newest.is_dir()
    assert not older.exists() and unrelated.is_dir()


def load_runner():
    path = ROOT / "_runners" / "redis_backup.py"
    spec = importlib.util.spec_from_file_location("redis_backup_runner_retention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__utils__ = utils_dunder()
    return module


def test_set_manifests_keep_the_newest_complete_sets_the_one_just_made_and_their_retention(tmp_path):
    runner = load_runner()
    root = tmp_path / "redis_backup_sets"
    now = datetime.datetime(2025, 12, 1, tzinfo=datetime.timezone.utc)
    written = {}
    for days_ago, status in ((60, "complete"), (50, "partial"), (40, "complete"), (30, "complete"), (20, "partial"),
                             (3, "partial")):
        set_id, path = runner._make_set_dir(str(root), now - datetime.timedelta(days=days_ago))
        runner._write_manifest(path, {"set_id": set_id, "status": status, "retention_days": 7,
                                      "time": (now - datetime.timedelta(days=days_ago)).isoformat()})
        written[days_ago] = set_id
    dead, dead_path = runner._make_set_dir(str(root), now - datetime.timedelta(days=90))  # a run that died
    two_days_ago = time.time() - 2 * 86400
    os.utime(dead_path, (two_days_ago, two_days_ago))  # no manifest, untouched for two days
    just_made, _ = runner._make_set_dir(str(root), now)

    deleted = runner._prune_sets(str(root), now, 2, just_made)

    assert sorted(deleted) == sorted([written[60], written[50], written[20], dead])
    assert sorted(p.name for p in root.iterdir()) == sorted([written[40], written[30], written[3], just_made])
    assert [m["set_id"] for m in runner._read_sets(str(root))] == [written[3], written[30], written[40]]

    # a forward clock jump: still the two newest complete sets
    assert runner._prune_sets(str(root), now + datetime.timedelta(days=3650), 2) == [written[3]]
    assert [m["set_id"] for m in runner._read_sets(str(root))] == [written[30], written[40]]
