"""The backup tree is root's and nothing in it is trusted (_modules/redis_backup.py against a
real Redis 7.0): names a backup's metadata gives are plain file names or the backup is refused
before any file is made; a symbolic link planted in a backup is never followed; Redis's
checkers and the throwaway server run as the redis account, with oom_score_adj 1000 and a
maxmemory bound; what create() writes is root's, and a tree an older version left the redis
account's is taken over.

"Planted" files are written the way the redis account could have in the tree an older
version gave it (its own, 0750): the tests chown them to redis.
"""

import grp
import json
import os
import pathlib
import pwd
import stat
import tempfile

import pytest
from salt.exceptions import CommandExecutionError
from test_backup import Node, data_dir_state, populate

REDIS = pwd.getpwnam("redis")  # Debian's redis-server package made it (make setup)
REDIS_GID = grp.getgrnam("redis").gr_gid


@pytest.fixture
def node(tmp_path):
    made = Node(tmp_path)
    populate(made.server.client(), bulk=20)
    yield made
    made.server.stop()


@pytest.fixture
def canary(tmp_path):
    """A directory outside the backup tree that nothing may create or change anything in."""
    directory = tmp_path / "canary"
    directory.mkdir()
    (directory / "victim").write_text("precious\n")
    return directory


def canary_state(directory):
    return sorted((p.name, p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir())


def metadata_path(ret):
    return pathlib.Path(ret["path"]) / "backup_metadata.json"


def plant_metadata(ret, change):
    """Rewrite a backup's metadata as the redis account could (its file, in its old tree)."""
    path = metadata_path(ret)
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    os.chown(path, REDIS.pw_uid, REDIS.pw_gid)


def give_tree_to_redis(root):
    """The tree as an older version of the formula left it: the redis account's."""
    for top, dirs, names in os.walk(root):
        for name in dirs + names:
            os.chown(os.path.join(top, name), REDIS.pw_uid, REDIS.pw_gid, follow_symlinks=False)
    os.chown(root, REDIS.pw_uid, REDIS.pw_gid)


@pytest.mark.parametrize("kind, change", [
    ("rdb", lambda meta, canary: meta["files"][0].update(source=str(canary / "planted"))),
    ("rdb", lambda meta, canary: meta["files"][0].update(source="../../../canary/planted")),
    ("aof", lambda meta, canary: meta.update(appenddirname="../../../canary")),
], ids=["absolute source", "relative source", "appenddirname"])
def test_paths_in_metadata_are_refused_before_any_file_is_made(node, canary, kind, change):
    ret = node.mod.create(type=kind, verify=False)
    plant_metadata(ret, lambda meta: change(meta, canary))
    before, data_before = canary_state(canary), data_dir_state(node)

    with pytest.raises(CommandExecutionError, match="not a plain file name") as refused:
        node.mod.restore(ret["name"])  # the dry run
    assert "refused, nothing was created" in str(refused.value)
    with pytest.raises(CommandExecutionError, match="fails verification \\(damaged\\).*not a plain file name"):
        node.mod.verify(ret["name"])

    assert canary_state(canary) == before
    assert data_dir_state(node) == data_before and node.calls == []
    meta = json.loads(metadata_path(ret).read_text())
    assert meta["damaged"] is True and "not a plain file name" in meta["damage"]
    assert not list(node.backups.rglob(".partial-*")) and not list(node.data.parent.glob(".salt-restore-*"))


def test_a_symlink_planted_in_a_backup_is_not_followed(node, canary):
    ret = node.mod.create(type="rdb", verify=False)
    give_tree_to_redis(node.backups)
    # the fixed temporary name the metadata used to be written through (O_TRUNC, followed)
    planted = pathlib.Path(ret["path"]) / ".backup_metadata.json.tmp"
    planted.symlink_to(canary / "victim")
    os.chown(planted, REDIS.pw_uid, REDIS.pw_gid, follow_symlinks=False)
    before = canary_state(canary)

    for call in (lambda: node.mod.verify(ret["name"]), lambda: node.mod.restore(ret["name"])):
        with pytest.raises(CommandExecutionError, match="symbolic link") as refused:
            call()
        assert str(planted) in str(refused.value)

    assert canary_state(canary) == before
    assert os.lstat(canary / "victim").st_uid == 0


def test_a_symlink_at_the_metadata_name_is_refused(node, canary):
    ret = node.mod.create(type="rdb", verify=False)
    path = metadata_path(ret)
    (canary / "victim").write_text(path.read_text())  # a copy: following it would "work"
    path.unlink()
    path.symlink_to(canary / "victim")
    before = canary_state(canary)

    for call in (lambda: node.mod.verify(ret["name"]), lambda: node.mod.restore(ret["name"])):
        with pytest.raises(CommandExecutionError, match="symbolic link"):
            call()
    assert ret["name"] not in [item["name"] for item in node.mod.list_()["backups"]]  # not read through it
    assert canary_state(canary) == before


WRAPPER = """#!/bin/bash
# Records who runs Redis's code and how, then runs it: the server binary is the checker its
# name (argv[0]) says, which a script cannot pass on, so the arguments tell.
echo "$(id -u) $(id -g) $(id -G) $(cat /proc/self/oom_score_adj) $*" >> {log}/calls
if [ "$1" = "-" ]; then
    config=$(cat)
    printf '%s\\n' "$config" > {log}/config
    exec {server} - <<< "$config"
elif [ "$1" = "--version" ]; then
    exec {server} "$@"
elif [[ "$1" == *.manifest ]]; then
    exec -a redis-check-aof {server} "$@"
else
    exec -a redis-check-rdb {server} "$@"
fi
"""


@pytest.fixture
def wrapper():
    """A server "binary" that records its uid, groups, oom_score_adj and configuration: root's,
    in a root-only-writable directory the redis account can reach (as a real one would be)."""
    bindir = pathlib.Path(tempfile.mkdtemp(prefix="h-bin-"))
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="h-log-"))
    os.chmod(bindir, 0o755)
    os.chown(logdir, REDIS.pw_uid, REDIS.pw_gid)
    script = bindir / "redis-server"
    script.write_text(WRAPPER.format(log=logdir, server="/usr/bin/redis-server"))
    script.chmod(0o755)
    yield script, logdir
    for directory in (bindir, logdir):
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


@pytest.mark.parametrize("kind", ["rdb", "aof"])
def test_checkers_and_throwaway_run_as_redis_with_oom_score_and_maxmemory(node, wrapper, kind):
    script, logdir = wrapper
    ret = node.mod.create(type=kind, verify=False)
    path = metadata_path(ret)
    meta = json.loads(path.read_text())
    meta["server_executable"] = str(script)
    path.write_text(json.dumps(meta))
    own_score = pathlib.Path("/proc/self/oom_score_adj").read_text()

    checked = node.mod.verify(ret["name"])

    assert checked["result"] is True and checked["keys"] == node.server.client().dbsize()
    calls = [line.split() for line in (logdir / "calls").read_text().splitlines()]
    assert len(calls) == 2  # the checker, then the throwaway server
    for uid, gid, groups, score, *_ in calls:
        assert (int(uid), int(gid), int(groups), score) == (REDIS.pw_uid, REDIS_GID, REDIS_GID, "1000")
    # redis-check-rdb reads the decompressed bytes from its standard input as they are hashed
    assert (calls[0][4].endswith(".manifest") if kind == "aof" else calls[0][4] == "/dev/stdin")
    assert calls[1][4:] == ["-"]
    config = dict(line.split(None, 1) for line in (logdir / "config").read_text().splitlines())
    assert int(config["maxmemory"]) >= int(meta["used_memory"]) * 1.5 > 0
    assert config["maxmemory-policy"] == "noeviction" and config["port"] == "0"
    assert pathlib.Path("/proc/self/oom_score_adj").read_text() == own_score  # root's own, untouched


def assert_root_tree(root):
    """Everything below ``root`` (and itself): root's, group redis, nobody else writes."""
    for path in [root, *root.rglob("*")]:
        found = os.lstat(path)
        assert not stat.S_ISLNK(found.st_mode), path
        assert (found.st_uid, found.st_gid) == (0, REDIS_GID), path
        assert stat.S_IMODE(found.st_mode) == (0o750 if stat.S_ISDIR(found.st_mode) else 0o640), path


def test_what_create_writes_is_roots_and_an_old_tree_is_taken_over(node):
    first = node.mod.create(type="both", verify=False)
    assert_root_tree(node.backups)
    assert {p.name for p in node.backups.iterdir()} == {"rdb", "aof"}

    give_tree_to_redis(node.backups)  # as an older version left it
    second = node.mod.create(type="rdb", verify=False)
    assert_root_tree(node.backups / "rdb" / second["name"])
    for directory in (node.backups, node.backups / "rdb", node.backups / "aof"):
        assert (os.lstat(directory).st_uid, stat.S_IMODE(os.lstat(directory).st_mode)) == (0, 0o750)
    assert_root_tree(node.backups)  # the older backups too
    names = [item["name"] for item in node.mod.list_()["backups"]]
    assert second["name"] in names and first["rdb"]["name"] in names and first["aof"]["name"] in names
    assert node.mod.verify(first["aof"]["name"])["result"] is True
