"""_utils/redis_backup_swap.py on real directories: ``settle`` reaches both end states from
every state a killed restore can leave an entry in, with and without RENAME_EXCHANGE, and the
journal is written privately and refused when someone else could have written it."""

import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_swap():
    spec = importlib.util.spec_from_file_location("redis_backup_swap", ROOT / "_utils" / "redis_backup_swap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


swap = load_swap()


@pytest.fixture(params=["exchange", "two renames"])
def dirs(request, tmp_path, monkeypatch):
    if request.param == "two renames":
        monkeypatch.setattr(swap, "exchange", lambda first, second: False)
    else:
        probe = tmp_path / "probe"
        (probe / "a").mkdir(parents=True)
        (probe / "b").write_text("b")
        assert swap.exchange(str(probe / "a"), str(probe / "b")), "RENAME_EXCHANGE unavailable here"
    paths = {name: tmp_path / name for name in ("data", "new", "old")}
    for path in paths.values():
        path.mkdir()
    paths["exchanged"] = request.param == "exchange"
    return paths


def put(path, text, directory=False):
    if directory:
        path.mkdir()
        (path / "content").write_text(text)
    else:
        path.write_text(text)
    return swap.identity(str(path))


def read(path):
    if not os.path.lexists(path):
        return None
    return (path / "content").read_text() if path.is_dir() else path.read_text()


def where(dirs, name):
    return {place: read(dirs[place] / name) for place in ("data", "new", "old")}


def settle(dirs, name, ident, forward):
    return swap.settle(str(dirs["data"]), str(dirs["new"]), str(dirs["old"]), name, ident, forward)


FORWARD = {"data": "new", "new": None, "old": "old"}
BACK = {"data": "old", "new": "new", "old": None}


def prepare(dirs, name, state, directory, exchanged):
    old = put(dirs["data"] / name, "old", directory)
    new = put(dirs["new"] / name, "new", directory)
    if state in ("half", "after"):
        if exchanged:
            assert swap.exchange(str(dirs["new"] / name), str(dirs["data"] / name))
            if state == "after":
                os.rename(dirs["new"] / name, dirs["old"] / name)
        else:
            os.rename(dirs["data"] / name, dirs["old"] / name)
            if state == "after":
                os.rename(dirs["new"] / name, dirs["data"] / name)
    return old, new


@pytest.mark.parametrize("directory", [False, True], ids=["file", "directory"])
@pytest.mark.parametrize("state", ["before", "half", "after"])
@pytest.mark.parametrize("forward", [True, False], ids=["forward", "back"])
def test_an_entry_on_both_sides_reaches_either_end_from_any_step(dirs, directory, state, forward):
    name = "appendonlydir" if directory else "dump.rdb"
    _, new = prepare(dirs, name, state, directory, dirs["exchanged"])
    if not dirs["exchanged"] and state == "half":
        assert read(dirs["data"] / name) is None  # the two-step fallback's gap

    settle(dirs, name, new, forward)

    assert where(dirs, name) == (FORWARD if forward else BACK)
    settle(dirs, name, new, forward)  # again, as after a crash of the recovery itself
    assert where(dirs, name) == (FORWARD if forward else BACK)


@pytest.mark.parametrize("forward", [True, False], ids=["forward", "back"])
def test_an_entry_only_the_backup_has(dirs, forward):
    new = put(dirs["new"] / "appendonlydir", "new", directory=True)
    settle(dirs, "appendonlydir", new, True)
    assert where(dirs, "appendonlydir") == {"data": "new", "new": None, "old": None}
    if not forward:
        assert settle(dirs, "appendonlydir", new, False) == "taken out"
        assert where(dirs, "appendonlydir") == {"data": None, "new": "new", "old": None}


def test_an_entry_only_the_data_directory_has(dirs):
    put(dirs["data"] / "temp-123.rdb", "old")
    assert settle(dirs, "temp-123.rdb", None, True) == "moved aside"
    assert settle(dirs, "temp-123.rdb", None, True) == "as it was"
    assert where(dirs, "temp-123.rdb") == {"data": None, "new": None, "old": "old"}
    assert settle(dirs, "temp-123.rdb", None, False) == "put back"
    assert where(dirs, "temp-123.rdb") == {"data": "old", "new": None, "old": None}


def test_a_lost_staged_entry_is_refused_and_nothing_moves(dirs):
    put(dirs["data"] / "dump.rdb", "old")
    new = put(dirs["new"] / "dump.rdb", "new")
    put(dirs["new"] / "other", "someone else's")
    os.rename(dirs["new"] / "other", dirs["new"] / "dump.rdb")  # another inode under the staged name
    with pytest.raises(FileNotFoundError, match="staged entry"):
        settle(dirs, "dump.rdb", new, True)
    assert where(dirs, "dump.rdb") == {"data": "old", "new": "someone else's", "old": None}


def test_the_journal_is_private_and_refused_when_others_could_write_it(tmp_path):
    directory = tmp_path / "redis-salt"
    directory.mkdir(mode=0o750)
    journal = directory / "restore-journal.json"
    swap.write_journal(str(journal), {"entries": [{"name": "dump.rdb"}], "phase": "staged"})
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
    assert swap.read_journal(str(journal))["phase"] == "staged"
    assert [p.name for p in directory.iterdir()] == ["restore-journal.json"]  # no temporary file left

    journal.chmod(0o622)
    with pytest.raises(PermissionError, match="not a file root alone writes"):
        swap.read_journal(str(journal))
    journal.chmod(0o600)
    directory.chmod(0o770)
    with pytest.raises(PermissionError, match="not root's alone"):
        swap.read_journal(str(journal))
    with pytest.raises(PermissionError, match="not root's alone"):
        swap.write_journal(str(journal), {"entries": [{}]})
    directory.chmod(0o750)
    journal.unlink()
    journal.symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text('{"format": 1, "entries": [{}]}')
    with pytest.raises(PermissionError, match="symbolic link"):
        swap.read_journal(str(journal))
    journal.unlink()
    assert swap.read_journal(str(journal)) is None
    journal.write_text('{"format": 1}')
    journal.chmod(0o600)
    with pytest.raises(ValueError, match="not a restore journal"):
        swap.read_journal(str(journal))


def test_back_after_redis_ran_on_the_restored_data(dirs):
    """Redis started on the restored data rewrites dump.rdb (its shutdown SAVE: a new inode)
    and creates an AOF directory the backup did not have: the rollback (replace_foreign)
    puts the previous entries back all the same; a recovery that finds Redis running on its
    data (no replace_foreign) leaves what it made."""
    put(dirs["data"] / "dump.rdb", "old")
    put(dirs["data"] / "appendonlydir", "old", directory=True)
    new = put(dirs["new"] / "dump.rdb", "new")
    settle(dirs, "appendonlydir", None, True)
    settle(dirs, "dump.rdb", new, True)
    put(dirs["data"] / "appendonlydir", "made by redis", directory=True)
    (dirs["data"] / "saved").write_text("saved by redis")
    os.rename(dirs["data"] / "saved", dirs["data"] / "dump.rdb")

    assert settle(dirs, "dump.rdb", new, False) == "as it was"
    assert settle(dirs, "appendonlydir", None, False) == "as it was"
    assert read(dirs["data"] / "dump.rdb") == "saved by redis"

    assert swap.settle(str(dirs["data"]), str(dirs["new"]), str(dirs["old"]), "dump.rdb", new, False, True) == (
        "put back")
    assert swap.settle(str(dirs["data"]), str(dirs["new"]), str(dirs["old"]), "appendonlydir", None, False,
                       True) == "put back"
    assert where(dirs, "dump.rdb") == {"data": "old", "new": "saved by redis", "old": None}
    assert where(dirs, "appendonlydir") == {"data": "old", "new": "made by redis", "old": None}


def test_forward_never_overwrites_a_previous_entry_already_aside(dirs):
    put(dirs["old"] / "dump.rdb", "aside before")
    put(dirs["data"] / "dump.rdb", "made since")
    new = put(dirs["new"] / "dump.rdb", "new")
    assert settle(dirs, "dump.rdb", new, True) == "placed"
    assert read(dirs["data"] / "dump.rdb") == "new"
    assert read(dirs["old"] / "dump.rdb") == "aside before" and read(dirs["old"] / "dump.rdb.1") == "made since"


def test_an_entry_is_known_by_its_inode_whatever_device_number_a_boot_gave_its_filesystem(dirs):
    """A journal of before recorded ``[st_dev, st_ino]``; a boot may mount the filesystem under
    another device number: the backup's entry in place is still the backup's."""
    put(dirs["data"] / "dump.rdb", "old")
    new = put(dirs["new"] / "dump.rdb", "new")
    stale = [os.stat(dirs["data"]).st_dev + 7, new]
    assert settle(dirs, "dump.rdb", stale, forward=True) == "placed"
    assert swap.holds(str(dirs["data"] / "dump.rdb"), stale) and swap.holds(str(dirs["data"] / "dump.rdb"), new)
    assert settle(dirs, "dump.rdb", stale, forward=False) == "put back"
    assert where(dirs, "dump.rdb") == {"data": "old", "new": "new", "old": None}
