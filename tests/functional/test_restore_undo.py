"""``redis_backup.undo_restore``: what the set restore calls on every master that did restore
when another master of the set failed. The data the restore replaced comes back from its
safety copy (which stays as it was), the restored data goes to a new safety copy, and a path
that is not this node's safety copy is refused before anything stops."""

import os
import pathlib

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError
from test_backup import populate, snapshot
from test_restore_stop_and_save import any_node  # noqa: F401 - the fixture: a node of every build


def tree(path):
    return sorted((p.relative_to(path).as_posix(), p.stat().st_size) for p in pathlib.Path(path).rglob("*"))


def test_an_undone_restore_serves_the_data_it_replaced_and_keeps_the_restored_data(any_node):  # noqa: F811
    node = any_node
    client = node.server.client()
    populate(client, bulk=20)
    backed_up = node.mod.create(type="rdb")
    client.flushall()
    for number in range(50):
        client.set(f"since-the-backup:{number}", number)
    before = snapshot(node)
    restored = node.mod.restore(backed_up["name"], force=True)
    assert node.server.client().get("since-the-backup:0") is None
    first_copy = tree(restored["safety_copy"])

    undone = node.mod.undo_restore(restored["safety_copy"])

    assert undone["result"] is True and undone["restored_from"] == restored["safety_copy"]
    assert snapshot(node) == before
    assert tree(restored["safety_copy"]) == first_copy  # copied back, not moved: still there as it was
    assert undone["safety_copy"] != restored["safety_copy"] and os.path.isdir(undone["safety_copy"])
    assert [tag for tag, _ in node.events if tag.startswith("redis/restore/")][-2:] == [
        f"redis/restore/{node.pillar['hostname']}/started", f"redis/restore/{node.pillar['hostname']}/finished"]
    # The restored backup's data is kept too: undoing the undo serves the backup's keys again.
    again = node.mod.undo_restore(undone["safety_copy"])
    assert again["result"] is True and node.server.client().get("since-the-backup:0") is None
    assert node.server.client().get("str") == "value"


def test_a_path_that_is_not_this_nodes_safety_copy_is_refused_before_anything_stops(
    any_node, tmp_path  # noqa: F811
):
    node = any_node
    node.server.client().set("current", "data")
    run_id = node.server.client().info("server")["run_id"]
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    (elsewhere / "dump.rdb").write_bytes(b"REDIS0009")
    with pytest.raises(SaltInvocationError, match="is not a safety copy of"):
        node.mod.undo_restore(str(elsewhere))
    planted = node.data.parent / f"{node.data.name}_backup_20250101_000000"
    planted.symlink_to(elsewhere)
    with pytest.raises(CommandExecutionError, match="refused, nothing was changed"):
        node.mod.undo_restore(str(planted))
    assert node.server.client().info("server")["run_id"] == run_id
    assert node.server.client().get("current") == "data"
