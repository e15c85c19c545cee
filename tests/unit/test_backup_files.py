"""_utils/redis_backup_files.py on real files (tests run as root, as the minion does): names
from a backup are plain file names or refused, writes never follow a planted name, reads
never follow a symbolic link, a tree the redis account owned is taken over without following
anything, the copy and compression pipe, the AOF helpers, and time and size formatting that
are the runner's and the module's one copy."""

import datetime
import errno
import gzip
import hashlib
import importlib.util
import json
import os
import pathlib
import pwd
import stat
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(relative, name):
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


files = load("_utils/redis_backup_files.py", "redis_backup_files_under_test")
config = load("_utils/redis_config.py", "redis_config_for_backup_files")
REDIS = pwd.getpwnam("redis")  # Debian's redis-server package made it (make setup)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("name", ["dump.rdb", "appendonly.aof.1.base.rdb", "a name with spaces", ".hidden", "..."])
def test_plain_names_pass(name):
    assert files.plain_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "/etc/cron.d/x", "../x", "a/b", "x\0y", None, 7, b"dump.rdb"])
def test_paths_and_odd_values_are_not_plain_names(name):
    assert not files.plain_name(name)


def good_meta():
    return {"name": "rdb_backup_20251027_120000", "type": "rdb", "dbfilename": "dump.rdb",
            "files": [{"name": "dump.rdb.gz", "source": "dump.rdb", "kind": "rdb"}]}


def test_name_problems_of_a_good_metadata_is_empty():
    assert files.name_problems(good_meta()) == []


@pytest.mark.parametrize("change, said", [
    (lambda m: m["files"][0].update(source="/etc/cron.d/planted"), "files[0].source '/etc/cron.d/planted'"),
    (lambda m: m["files"][0].update(name="../../x.gz"), "files[0].name '../../x.gz'"),
    (lambda m: m.update(appenddirname="../../../etc"), "appenddirname '../../../etc'"),
    (lambda m: m.update(appendfilename="a/b"), "appendfilename 'a/b'"),
    (lambda m: m.update(dbfilename=".."), "dbfilename '..'"),
    (lambda m: m.update(name="x/y"), "name 'x/y'"),
    (lambda m: m["files"].append(dict(m["files"][0])), "files[1].name 'dump.rdb.gz' is named twice"),
    (lambda m: m["files"].append("dump.rdb"), "files[1] is not an object"),
    (lambda m: m.update(files="dump.rdb.gz"), "files is not a list"),
])
def test_name_problems_name_the_bad_name(change, said):
    meta = good_meta()
    change(meta)
    problems = files.name_problems(meta)
    assert any(said in problem for problem in problems), problems


def test_manifest_entries_and_their_names():
    text = ('file appendonly.aof.1.base.rdb seq 1 type b\n'
            'file "appendonly.aof.1.incr.aof" seq 1 type i\n'
            'file appendonly.aof.0.base.rdb seq 0 type h\n')
    entries = files.manifest_entries(text, config.config_args)
    assert [(e["file"], e["kind"]) for e in entries] == [("appendonly.aof.1.base.rdb", "base"),
                                                         ("appendonly.aof.1.incr.aof", "incr")]
    held = {"appendonly.aof.1.base.rdb", "appendonly.aof.1.incr.aof"}
    assert files.manifest_problems(entries, held) == []
    hostile = files.manifest_entries('file "../../etc/passwd" seq 1 type b\nfile other.aof seq 1 type i\n',
                                     config.config_args)
    problems = files.manifest_problems(hostile, held)
    assert any("'../../etc/passwd', not a plain file name" in p for p in problems)
    assert any("'other.aof', which the backup does not hold" in p for p in problems)
    assert files.manifest_problems([], held) == ["the AOF manifest names no base file"]


def test_write_json_never_writes_through_a_planted_name(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    directory = tmp_path / "backup"
    directory.mkdir()
    # every name a fixed-name writer might use, and the final name itself, point at the victim
    for name in (".backup_metadata.json.tmp", ".backup_metadata.json", "backup_metadata.json"):
        (directory / name).symlink_to(victim)

    files.write_json(str(directory / "backup_metadata.json"), {"b": 1, "a": [2]}, gid=REDIS.pw_gid)

    assert victim.read_text() == "precious\n"
    final = directory / "backup_metadata.json"
    assert not final.is_symlink() and json.loads(final.read_text()) == {"a": [2], "b": 1}
    assert final.read_text().endswith("\n") and mode(final) == 0o640
    assert os.lstat(final).st_uid == 0 and os.lstat(final).st_gid == REDIS.pw_gid
    left = sorted(p.name for p in directory.iterdir())
    assert left == [".backup_metadata.json", ".backup_metadata.json.tmp", "backup_metadata.json"]  # no temporary


def test_open_read_refuses_a_symlink_and_a_fifo(tmp_path):
    real = tmp_path / "real"
    real.write_bytes(b"data")
    with files.open_read(str(real)) as handle:
        assert handle.read() == b"data"
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OSError, match="symbolic link where a file belongs") as raised:
        files.open_read(str(link))
    assert raised.value.errno == errno.ELOOP and raised.value.filename == str(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        files.open_read(str(fifo))  # returns at once: a FIFO would block a plain open
    with pytest.raises(ValueError):
        (tmp_path / "list.json").write_text("[1]")
        files.read_json(str(tmp_path / "list.json"))


def test_create_exclusive_refuses_a_planted_name(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "planted").symlink_to(victim)
    with pytest.raises(FileExistsError):
        files.create_exclusive(str(tmp_path / "planted"))
    assert victim.read_text() == "precious"
    fd = files.create_exclusive(str(tmp_path / "new"), 0o640, REDIS.pw_gid)
    os.close(fd)
    assert mode(tmp_path / "new") == 0o640 and os.lstat(tmp_path / "new").st_gid == REDIS.pw_gid


def test_ensure_dir_makes_takes_over_and_refuses(tmp_path):
    made = tmp_path / "a" / "backups"
    assert files.ensure_dir(str(made), REDIS.pw_gid) is True
    found = os.lstat(made)
    assert (found.st_uid, found.st_gid, mode(made)) == (0, REDIS.pw_gid, 0o750)
    assert files.ensure_dir(str(made), REDIS.pw_gid) is False  # as it should be: untouched

    old = tmp_path / "old"  # what an older version left: the redis account's, 0750
    old.mkdir(mode=0o770)
    os.chown(old, REDIS.pw_uid, REDIS.pw_gid)
    assert files.ensure_dir(str(old), REDIS.pw_gid) is True
    assert (os.lstat(old).st_uid, os.lstat(old).st_gid, mode(old)) == (0, REDIS.pw_gid, 0o750)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    with pytest.raises(OSError, match="a symbolic link where a directory of the backup tree belongs") as raised:
        files.ensure_dir(str(link), REDIS.pw_gid)
    assert raised.value.filename == str(link)
    assert mode(elsewhere) == 0o700 and os.lstat(elsewhere).st_gid == 0  # not followed


def redis_owned_backup(tmp_path):
    backup = tmp_path / "rdb_backup_20251027_120000"
    backup.mkdir(mode=0o775)
    (backup / "backup_metadata.json").write_text("{}")
    (backup / "dump.rdb.gz").write_bytes(b"x")
    for path in (backup, backup / "backup_metadata.json", backup / "dump.rdb.gz"):
        os.chown(path, REDIS.pw_uid, REDIS.pw_gid)
        os.chmod(path, 0o664 if path.is_file() else 0o775)
    return backup


def test_adopt_tree_takes_over_a_backup_of_the_redis_account(tmp_path):
    backup = redis_owned_backup(tmp_path)
    changed = files.adopt_tree(str(backup), REDIS.pw_gid)
    assert sorted(changed) == sorted(str(p) for p in (backup, backup / "backup_metadata.json", backup / "dump.rdb.gz"))
    for path in (backup, backup / "backup_metadata.json", backup / "dump.rdb.gz"):
        found = os.lstat(path)
        assert (found.st_uid, found.st_gid) == (0, REDIS.pw_gid)
        assert mode(path) == (0o750 if path.is_dir() else 0o640)
    assert files.adopt_tree(str(backup), REDIS.pw_gid) == []


@pytest.mark.parametrize("plant, said", [
    (lambda b, victim: (b / "evil").symlink_to(victim), "a symbolic link inside a backup"),
    (lambda b, victim: os.link(victim, b / "evil"), "a file with another hard link"),
    (lambda b, victim: os.mkfifo(b / "evil"), "neither a file nor a directory"),
])
def test_adopt_tree_refuses_what_it_must_not_take_over(tmp_path, plant, said):
    backup = redis_owned_backup(tmp_path)
    victim = tmp_path / "victim"  # a file of the redis account's (its data, say)
    victim.write_text("precious")
    os.chown(victim, REDIS.pw_uid, REDIS.pw_gid)
    plant(backup, victim)
    os.chown(backup / "evil", REDIS.pw_uid, REDIS.pw_gid, follow_symlinks=False)
    with pytest.raises(OSError, match=said) as raised:
        files.adopt_tree(str(backup), REDIS.pw_gid)
    assert raised.value.filename == str(backup / "evil")
    assert os.lstat(victim).st_uid == REDIS.pw_uid and victim.read_text() == "precious"


def test_pipe_copies_and_compresses_with_sums(tmp_path):
    data = os.urandom(3 * files.CHUNK + 17)
    source = tmp_path / "source"
    source.write_bytes(data)
    with files.open_read(str(source)) as handle:
        plain = files.pipe(handle, len(data), str(tmp_path / "copy"), gid=REDIS.pw_gid)
    assert (tmp_path / "copy").read_bytes() == data and mode(tmp_path / "copy") == 0o640
    assert plain["in_sha256"] == plain["out_sha256"] == hashlib.sha256(data).hexdigest()
    with files.open_read(str(source)) as handle:
        packed = files.pipe(handle, len(data), str(tmp_path / "copy.gz"), files.tool(["gzip", "-c", "-n"]))
    assert gzip.decompress((tmp_path / "copy.gz").read_bytes()) == data
    assert files.sha256_file(str(tmp_path / "copy.gz")) == (packed["out_size"], packed["out_sha256"])
    with pytest.raises(FileExistsError), files.open_read(str(source)) as handle:
        files.pipe(handle, len(data), str(tmp_path / "copy"))


def test_pipe_feeds_a_tap_the_output_it_hashes_with_or_without_a_file(tmp_path):
    data = os.urandom(3 * files.CHUNK + 17)
    (tmp_path / "source").write_bytes(data)
    packed = gzip.compress(data)
    (tmp_path / "packed.gz").write_bytes(packed)
    read_end, write_end = os.pipe()
    tap = files.tap(os.fdopen(write_end, "wb", buffering=0))
    received = []
    reader = threading.Thread(target=lambda: received.append(os.fdopen(read_end, "rb").read()))
    reader.start()
    with files.open_read(str(tmp_path / "packed.gz")) as handle:
        sums = files.pipe(handle, len(packed), None, files.tool(["gzip", "-d", "-c"]), tap=tap)
    tap.close()  # the reader sees the end of its input
    reader.join()
    assert received == [data] and tap.failed is None
    assert sums["out_sha256"] == hashlib.sha256(data).hexdigest() and sums["out_size"] == len(data)
    assert sums["in_sha256"] == hashlib.sha256(packed).hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["packed.gz", "source"]  # no file made
    with files.open_read(str(tmp_path / "source")) as handle:
        plain = files.pipe(handle, len(data), str(tmp_path / "copy"), sync=False)
    assert (tmp_path / "copy").read_bytes() == data and plain["out_sha256"] == plain["in_sha256"]


def test_a_tap_whose_reader_is_gone_never_holds_the_copy_back(tmp_path):
    data = os.urandom(20 * files.CHUNK)
    (tmp_path / "source").write_bytes(data)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the checker exited (its verdict says why)
    tap = files.tap(os.fdopen(write_end, "wb", buffering=0), depth=2)
    with files.open_read(str(tmp_path / "source")) as handle:
        sums = files.pipe(handle, len(data), None, tap=tap)
    tap.close()
    assert isinstance(tap.failed, BrokenPipeError) and sums["in_sha256"] == hashlib.sha256(data).hexdigest()


def test_aof_complete_length_stops_before_a_torn_command(tmp_path):
    whole = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n#TS:1\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    torn = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc"
    (tmp_path / "incr.aof").write_bytes(whole + torn)
    with files.open_read(str(tmp_path / "incr.aof")) as handle:
        assert files.aof_complete_length(handle, len(whole + torn)) == len(whole)
        assert files.aof_complete_length(handle, len(whole)) == len(whole)
        assert files.aof_complete_length(handle, len(whole) - 1) == 30  # the SET cut: SELECT and the annotation stay
        assert handle.tell() == 0


def test_times_are_read_by_one_rule_and_sizes_shown_as_the_original_script_did():
    sets = load("_utils/redis_backup_sets.py", "redis_backup_sets_for_files")
    texts = ["2025-10-27T12:00:00+00:00", "2025-10-27T12:00:00", "2025-10-27T14:00:00+02:00", "2025-10-27",
             "", None, "yesterday", 20251027]
    for text in texts:
        assert files.parse_time(text) == sets._parse_time(text), text
    noon = datetime.datetime(2025, 10, 27, 12, tzinfo=datetime.timezone.utc)
    assert files.parse_time("2025-10-27T12:00:00") == noon
    assert files.parse_time("2025-10-27T14:00:00+02:00") == noon
    assert files.parse_time("yesterday") is None and files.parse_time(None) is None
    assert [files.human_size(s) for s in (None, 512, 1023, 1024, 1536, 2 ** 30, 3 * 2 ** 40, 2 ** 60)] == [
        "0B", "512B", "1023B", "1.0K", "1.5K", "1.0G", "3.0T", "1048576.0T"]
