"""
Back up, list, verify, prune and restore the local Redis node of the deployment described
in pillar ``redis`` (backup settings under ``redis:backup``: ``dir``, ``retention_days``,
``compress``, ``copy_to``, ``keep_min``, ``safety_copy_days``; ``redis:service`` names the
service restore stops and starts). Retention's rules are ``_utils/redis_backup_retention.py``'s.

Layout (the original ``redis_backup.sh``'s)::

    BACKUP_DIR/rdb/rdb_backup_YYYYmmdd_HHMMSS/{backup_metadata.json, dump.rdb.gz}
    BACKUP_DIR/aof/aof_backup_YYYYmmdd_HHMMSS/{backup_metadata.json, appendonly.aof.1.base.rdb.gz, ...}

Names and timestamps are UTC; a second backup of the same type in the same second gets
``_2``, ``_3``... A backup is written into ``.partial-*`` in the same parent, every file
fsynced, checked (checksums re-read, ``redis-check-rdb``/``redis-check-aof`` on the
decompressed data, then loaded into a throwaway redis-server that counts the keys per
type), the metadata written last, and only then renamed to its final name: a backup cut
off half-way is never listed. Files are streamed in 1 MiB chunks through the ``gzip`` /
``zstd`` CLIs: memory does not grow with the dataset.

The backup tree is root's (group ``redis`` reads, nobody else writes; a tree an older version
left the redis account's is taken over, without following a symbolic link), and nothing in it
is trusted: every name a backup's metadata or AOF manifest gives must be a plain file name or
the backup is refused as damaged before any file is made; every file is written under a
fresh random name (mkstemp) then renamed, every existing one opened with ``O_NOFOLLOW``.
Redis's checkers and the throwaway server never run as root: as the redis account (pillar
``redis:user``/``redis:group``), with ``oom_score_adj`` 1000 and a ``maxmemory`` bound
(``_utils/redis_backup_throwaway.py``). The file work is ``_utils/redis_backup_files.py``'s.

A forced restore is crash-safe: before anything stops it writes a restore journal (root's
``<salt_config_dir>/restore-journal.json``) naming the staged entries (checked, on the data
directory's filesystem), what they replace and the safety copy; Redis is kept from starting
(a runtime systemd mask) while the entries are swapped, one rename each, the one Redis loads
last. Whatever kills it, ``restore_recovered`` (the state of the same name runs it on every
``state.apply redis``, before Redis starts) completes it or puts the previous data back. The
check after the start compares what the server's loader read (every database) with the backup,
never what clients write once it answers. ``_utils/redis_backup_swap.py`` holds the file work.

The password comes from pillar and reaches Redis through redis-py only: never a command
line, a return value, an event or a log line. Backups hold no password and the metadata
no key names.

:depends: redis (redis-py); the ``gzip`` and ``zstd`` commands for compressed backups
"""

import datetime
import errno
import fcntl
import glob
import grp
import io
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import redis

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_backup"
__func_alias__ = {"list_": "list"}

TYPES = ("rdb", "aof")
EXTENSIONS = {"gzip": ".gz", "zstd": ".zst", "none": ""}
# zstd -1: within 1 % of -3's size on RDB files (bench/backup.py), in less time.
COMPRESS_COMMANDS = {"gzip": ["gzip", "-6", "-c", "-n"], "zstd": ["zstd", "-1", "-T0", "-q", "-c"]}
DECOMPRESS_COMMANDS = {"gzip": ["gzip", "-d", "-c"], "zstd": ["zstd", "-d", "-q", "-c"]}
DEFAULTS = {"dir": "/var/backups/redis", "retention_days": 7, "compress": "gzip", "keep_min": 2,
            "safety_copy_days": 7}
METADATA = "backup_metadata.json"
SETS_FILE = ".backup_sets.json"  # the newest complete set the master told this node of
METADATA_FORMAT = 1
PARTIAL = ".partial-"
STALE_PARTIAL_SECONDS = 86400
CLUSTER_OK_WAIT = 15
AOF_FLUSH_WAIT = 5
SERVER_ROLES = ("cluster-node", "master", "replica")
DEFAULT_SALT_CONFIG_DIR = "/etc/redis-salt"
JOURNAL = "restore-journal.json"
LOCK = "restore.lock"
WORK_PREFIX = ".salt-restore-"


class _Damage(CommandExecutionError):
    """What a backup's checks found wrong with its data (a sha256 that differs, a file missing,
    the build's checker refusing it): unlike a check that could not finish, it makes the backup
    not-good for retention."""


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_backup: the redis Python library (redis-py) is not installed")
    return __virtualname__


# ---------------------------------------------------------------- settings and helpers


def _settings():
    return __pillar__.get("redis", {}) or {}


def _backup_settings():
    return _settings().get("backup") or {}


def _backup_root(backup_dir=None):
    return os.path.abspath(backup_dir or _backup_settings().get("dir") or DEFAULTS["dir"])


def _minion():
    for source in ("__grains__", "__opts__"):
        value = (globals().get(source) or {}).get("id")
        if value:
            return str(value)
    return socket.getfqdn()


def _name(key):
    """The server's name for ``key`` (``service``, ``server_binary``, ``config_file``, ``user``...):
    pillar ``redis`` (Valkey's when cache.redis.server says so), else Debian Redis's."""
    return __utils__["redis_servers.name"](_settings(), key)


def _service():
    return _name("service")


def _wait(condition, timeout, interval=0.2):
    """``redis_common.wait``, run in this module's loader context (see redis_cluster._wait)."""
    wait = __utils__["redis_common.wait"]
    return getattr(wait, "func", wait)(condition, timeout, interval)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(moment):
    return moment.isoformat(timespec="seconds")


def _files(name):
    """A function of ``_utils/redis_backup_files.py``: the file work (names, safe writes and
    reads, fsync, copy and compression, sha256, the AOF manifest, times and sizes)."""
    return __utils__[f"redis_backup_files.{name}"]


def _throwaway(name):
    """A function of ``_utils/redis_backup_throwaway.py``: Redis's checkers and the throwaway
    server, run as the redis account."""
    return __utils__[f"redis_backup_throwaway.{name}"]


def _fire(tag_end, data, kind="backup"):
    """Fire ``redis/<kind>/<minion>/<tag_end>``; a missing event bus never fails the job."""
    tag = f"redis/{kind}/{_minion()}/{tag_end}"
    try:
        __salt__["event.send"](tag, data)
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("redis_backup: could not fire event %s: %s", tag, exc)
    return tag


def _fsync_dir(path):
    _files("fsync_dir")(path)


def _fsync_file(path):
    _files("fsync_file")(path)


def _account(user=None, group=None):
    """``(uid, gid)`` of the account Redis's checkers and the throwaway server run as (pillar
    ``redis:user``/``redis:group``, default ``redis``); refused when the host lacks it."""
    return _throwaway("account")(user or _name("user"), group or _name("group"))


def _tree_gid():
    """The group that may read the backup tree (pillar ``redis:group``, default ``redis``);
    None (root's group stays) when the host has no such group."""
    try:
        return grp.getgrnam(_name("group")).gr_gid
    except KeyError:
        return None


def _write_json(path, data):
    """Write ``data`` to ``path`` atomically, root's, group-readable (``write_json``: a private
    random temporary name, never one someone could have planted)."""
    _files("write_json")(path, data, gid=_tree_gid())


def _metadata_path(path):
    return os.path.join(path, METADATA)


def _read_metadata(path):
    """A backup directory's metadata, read without following a symbolic link; None when there
    is none that can be read."""
    try:
        return _files("read_json")(_metadata_path(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _unsafe_names(meta):
    """Refuse a backup whose metadata names anything but plain file names (a path, ``..``):
    before any file is created for it."""
    problems = _files("name_problems")(meta)
    if problems:
        raise _Damage(f"backup {meta.get('name') if isinstance(meta, dict) else '?'} is damaged: its metadata "
                      f"{'; '.join(problems)}: refused, nothing was created")


def _tree_dir(path):
    """A directory of the backup tree, root's (group ``redis``, 0750): made, or taken over
    from a tree of an older version (the redis account's); refused when it is a symbolic
    link or not a directory."""
    try:
        _files("ensure_dir")(path, _tree_gid())
    except OSError as exc:
        raise CommandExecutionError(f"the backup tree cannot be used: {exc.filename or path}: {exc.strerror}") from None


def _tree(root, backups=False):
    """The backup tree's top and its type directories, root's (see ``_tree_dir``); with
    ``backups``, every backup in it too (``_adopt``; one that cannot be taken over is left as
    it is, with a warning: it is refused when used)."""
    _tree_dir(root)
    for kind in TYPES:
        type_dir = os.path.join(root, kind)
        _tree_dir(type_dir)
        for name in sorted(os.listdir(type_dir)) if backups else []:
            if _files("backup_name")(name):
                try:
                    _adopt(os.path.join(type_dir, name))
                except CommandExecutionError as exc:
                    log.warning("redis_backup: %s", exc)


def _adopt(path):
    """A backup left by an older version (the redis account's) taken over: root's, group
    ``redis``; refused, naming the path, when it holds a symbolic link or anything odd."""
    try:
        taken = _files("adopt_tree")(path, _tree_gid())
    except OSError as exc:
        raise CommandExecutionError(f"backup {path} cannot be used: {exc.filename or path}: {exc.strerror}") from None
    if taken:
        log.info("redis_backup: took over %s (%d entries) from its previous owner", path, len(taken))


def _makedirs(path):
    os.makedirs(path, mode=0o750, exist_ok=True)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _require_space(path, need, what):
    free = shutil.disk_usage(path).free
    if free < need:
        raise CommandExecutionError(
            f"not enough free space in {path} for {what}: {_files('human_size')(free)} free ({free} bytes), "
            f"about {_files('human_size')(need)} ({need} bytes) needed"
        )
    return free


def _same_filesystem(first, second):
    return os.stat(first).st_dev == os.stat(second).st_dev


def _tool(command):
    return _files("tool")(command)


def _check_choice(value, choices, what):
    if value not in choices:
        raise CommandExecutionError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _days(value, what="retention_days"):
    try:
        days = float(value)
    except (TypeError, ValueError):
        days = -1
    if days < 0:
        raise CommandExecutionError(f"{what} must be a number of days (0 or more), not {value!r}")
    return int(days) if days == int(days) else days


# ---------------------------------------------------------------- Redis access


def _problem(exc, doing):
    kind = __utils__["redis_common.failure"](exc)
    port = _settings().get("port", 6379)
    text = {
        "refused": f"Redis does not run on 127.0.0.1:{port} (connection refused)",
        "auth": f"Redis on port {port} refuses the deployment's password (pillar redis:password)",
        "timeout": f"Redis on port {port} does not answer in time",
        "loading": f"Redis on port {port} is still loading its data",
    }.get(kind) or __utils__["redis_common.error_text"](exc)
    return f"cannot {doing}: {text}"


def _client(timeout=10):
    return __utils__["redis_common.client"](_settings(), timeout=timeout)


def _config(client, names):
    """``{directive: value}`` for ``names`` (Redis 6.2 takes one name per CONFIG GET)."""
    try:
        return client.config_get(*names)
    except redis.ResponseError as exc:
        if len(names) == 1 or "wrong number of arguments" not in str(exc).lower():
            raise
    found = {}
    for name in names:
        found.update(client.config_get(name))
    return found


LIVE_DIRECTIVES = (
    "dir", "dbfilename", "appendonly", "appenddirname", "appendfilename", "cluster-enabled",
    "cluster-config-file", "databases", "logfile", "pidfile", "unixsocket",
)


def _live(client):
    """What this module needs to know about the running server."""
    info = client.info()
    config = _config(client, list(LIVE_DIRECTIVES))
    server, server_version = __utils__["redis_servers.running"](info)
    live = {
        "running": True,
        "version": info.get("redis_version"),
        "server": server,
        "server_version": server_version,
        "executable": info.get("executable"),
        "config_file": info.get("config_file") or None,
        "replication_role": info.get("role"),
        "connected_replicas": int(info.get("connected_slaves", 0) or 0),
        "cluster_enabled": bool(int(info.get("cluster_enabled", 0) or 0)),
        "used_memory": int(info.get("used_memory_dataset") or info.get("used_memory") or 0),
        "dir": os.path.realpath(config.get("dir") or "."),
        "dbfilename": config.get("dbfilename") or "dump.rdb",
        "appendonly": config.get("appendonly") == "yes",
        "appenddirname": config.get("appenddirname") or None,
        "appendfilename": config.get("appendfilename") or "appendonly.aof",
        "cluster_config_file": config.get("cluster-config-file") or "nodes.conf",
        "databases": int(config.get("databases") or 16),
        "logfile": config.get("logfile") or None,
        "pidfile": config.get("pidfile") or None,
        "unixsocket": config.get("unixsocket") or None,
        "node_id": None,
        "slots": None,
        "cluster_replicas": 0,
    }
    if live["cluster_enabled"]:
        live.update(_cluster_identity(client.execute_command("CLUSTER", "NODES")))
    return live


def _cluster_identity(nodes_text):
    """This node's id, its slot ranges and how many replicas follow it, from CLUSTER NODES
    (or nodes.conf: same line format)."""
    myself, lines = None, []
    for line in str(nodes_text).splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        lines.append(fields)
        if "myself" in fields[2].split(","):
            myself = fields
    if myself is None:
        return {"node_id": None, "slots": [], "cluster_replicas": 0}
    slots = []
    for item in myself[8:]:
        if item.startswith("["):
            continue
        first, _, last = item.partition("-")
        slots.append([int(first), int(last or first)])
    replicas = sum(1 for fields in lines if fields[3] == myself[0] and "fail" not in fields[2].split(","))
    return {"node_id": myself[0], "slots": sorted(slots), "cluster_replicas": replicas}


def _persistence(client):
    return client.info("persistence")


def _require_redis_role():
    settings = _settings()
    if settings.get("error"):
        raise CommandExecutionError(f"deployment pillar failed: {settings['error']}")
    role = settings.get("role")
    if role is not None and role not in SERVER_ROLES:
        raise CommandExecutionError(f"this minion runs no Redis server of the deployment (pillar redis:role is {role})")


def _executable(candidate):
    """The redis-server binary whose tools read a backup: the server's own when it is root's
    alone (the metadata naming it is not trusted), else Debian's."""
    return _throwaway("trusted_executable")(candidate, _name("server_binary"))


# ---------------------------------------------------------------- snapshots


def _idle(client, flags):
    return not any(int(_persistence(client).get(flag, 0) or 0) for flag in flags)


def _wait_idle(client, flags, timeout, what):
    if not _wait(lambda: _idle(client, flags), timeout, 0.1):
        raise CommandExecutionError(f"a {what} already running did not end within {timeout}s")


def _bgsave(client, timeout):
    """A fresh BGSAVE, waited for by INFO persistence (never a fixed sleep); a failed one is
    reported as soon as Redis records it."""
    deadline = time.monotonic() + timeout
    _wait_idle(client, ("rdb_bgsave_in_progress",), timeout, "BGSAVE")
    saves_before = _persistence(client).get("rdb_saves")  # Redis >= 7: counts every BGSAVE started
    if saves_before is None:
        _bgsave_started_now(client, deadline, timeout)
    while saves_before is not None:
        try:
            client.execute_command("BGSAVE", "SCHEDULE")  # scheduled after an AOF rewrite
            break
        except redis.ResponseError as exc:
            if "in progress" not in str(exc).lower() or time.monotonic() > deadline:
                raise CommandExecutionError(f"BGSAVE refused: {exc}") from None
            _wait_idle(client, ("rdb_bgsave_in_progress",), max(1, deadline - time.monotonic()), "BGSAVE")

    def ended():
        now = _persistence(client)
        if int(now.get("rdb_bgsave_in_progress", 0)):
            return None
        if saves_before is not None and int(now.get("rdb_saves", 0)) <= int(saves_before):
            return None  # scheduled behind an AOF rewrite: not started yet
        return now.get("rdb_last_bgsave_status", "ok")

    status = _wait(ended, max(1, deadline - time.monotonic()), 0.1)
    if status is None:
        raise CommandExecutionError(f"BGSAVE did not finish within {timeout}s")
    if status != "ok":
        raise CommandExecutionError(f"BGSAVE failed (rdb_last_bgsave_status:{status}); see the Redis log")
    return int(_persistence(client).get("rdb_last_save_time", 0))


def _bgsave_started_now(client, deadline, timeout):
    """Redis 6.2 counts no BGSAVE (no ``rdb_saves``) and a failed one leaves LASTSAVE as it
    was: start one that forks at once (no SCHEDULE: no fork running), so that the next time
    ``rdb_bgsave_in_progress`` reads 0 it has ended and ``rdb_last_bgsave_status`` is its own."""
    flags = ("rdb_bgsave_in_progress", "aof_rewrite_in_progress")
    while True:
        _wait_idle(client, flags, max(1, deadline - time.monotonic()), "BGSAVE or AOF rewrite")
        try:
            client.execute_command("BGSAVE")
            return
        except redis.ResponseError as exc:
            busy = "in progress" in str(exc).lower() or "child process is active" in str(exc).lower()
            if not busy or time.monotonic() > deadline:
                raise CommandExecutionError(f"BGSAVE refused: {exc}") from None
            # a save point's BGSAVE or an AOF rewrite started in between: wait for it


def _bgrewriteaof(client, timeout):
    """A fresh BGREWRITEAOF (scheduled behind a running BGSAVE if need be), waited for."""
    deadline = time.monotonic() + timeout
    flags = ("aof_rewrite_in_progress", "aof_rewrite_scheduled")
    _wait_idle(client, flags, timeout, "AOF rewrite")
    rewrites_before = _persistence(client).get("aof_rewrites")
    seen = []
    while True:
        try:
            client.execute_command("BGREWRITEAOF")
            break
        except redis.ResponseError as exc:
            if "in progress" not in str(exc).lower() or time.monotonic() > deadline:
                raise CommandExecutionError(f"BGREWRITEAOF refused: {exc}") from None
            _wait_idle(client, flags, max(1, deadline - time.monotonic()), "AOF rewrite")

    def ended():
        now = _persistence(client)
        if any(int(now.get(flag, 0) or 0) for flag in flags):
            seen.append(True)
            return None
        if rewrites_before is not None:
            advanced = int(now.get("aof_rewrites", 0)) > int(rewrites_before)
        else:
            advanced = bool(seen)
        return now.get("aof_last_bgrewrite_status", "ok") if advanced else None

    status = _wait(ended, max(1, deadline - time.monotonic()), 0.1)
    if status is None:
        raise CommandExecutionError(f"BGREWRITEAOF did not finish within {timeout}s")
    if status != "ok":
        raise CommandExecutionError(f"BGREWRITEAOF failed (aof_last_bgrewrite_status:{status}); see the Redis log")


def _manifest_entries(text):
    """The base and incr files a Redis 7 AOF manifest names, in order, with their lines."""
    return _files("manifest_entries")(text, __utils__["redis_config.config_args"])


def _open_aof(directory, appendfilename, attempts=20):
    """Open (so keep alive, like a hard link would, without leaving links behind if we die)
    every file the manifest names (never through a symbolic link). A rewrite that ends in
    between deletes old files: then read the new manifest and try again."""
    manifest_path = os.path.join(directory, f"{appendfilename}.manifest")
    for _ in range(attempts):
        with _files("open_read")(manifest_path) as handle:
            text = handle.read().decode(errors="surrogateescape")
        entries = _manifest_entries(text)
        problems = _files("manifest_problems")(entries)
        if problems:
            raise CommandExecutionError(f"{manifest_path}: {'; '.join(problems)}")
        opened = []
        try:
            for entry in entries:
                handle = _files("open_read")(os.path.join(directory, entry["file"]))
                opened.append(dict(entry, handle=handle, size=os.fstat(handle.fileno()).st_size))
        except FileNotFoundError:
            for item in opened:
                item["handle"].close()
            continue
        manifest = "".join(entry["line"] + "\n" for entry in entries)
        return manifest, opened
    raise CommandExecutionError(f"the AOF files in {directory} kept changing while being read")


def _aof_complete_length(handle, size):
    """How many leading bytes of an AOF (at most ``size``) hold whole commands."""
    return _files("aof_complete_length")(handle, size)


# ---------------------------------------------------------------- streaming


def _store(source, length, destination, compress):
    """Copy one Redis file into the backup (compressed): the step a crash may cut short."""
    command = _tool(COMPRESS_COMMANDS[compress]) if compress != "none" else None
    return _files("pipe")(source, length, destination, command, gid=_tree_gid())


# ---------------------------------------------------------------- checks


def _run_check(executable, name, target, timeout, account):
    """``redis-check-rdb``/``redis-check-aof`` of ``executable``'s build on ``target``, as the
    redis account (``account``: its uid and gid), never root."""
    return _checked(name, *_throwaway("run_check")(executable, name, target, timeout, *account))


def _checked(name, code, output):
    if code != 0:
        raise _Damage(f"{name} finds the backup damaged (exit {code}): {_throwaway('sanitized')(output)}")
    return output


def _check_rdb(executable, path, timeout, account):
    return _rdb_verdict(_run_check(executable, "redis-check-rdb", path, timeout, account))


def _rdb_verdict(output):
    """The key counts redis-check-rdb reports, once it confirms the file; else ``_Damage``."""

    def count(label):
        found = re.search(r"\[info\]\s+(\d+)\s+" + label, output)
        return int(found.group(1)) if found else None

    if "RDB looks OK" not in output or count("keys read") is None:
        raise _Damage(f"redis-check-rdb does not confirm the backup: {_throwaway('sanitized')(output)}")
    return {"keys": count("keys read"), "keys_with_ttl": count("expires") or 0,
            "already_expired": count("already expired") or 0}


class _RdbCheck:
    """``redis-check-rdb`` of ``executable``'s build (as the redis account, ``account``)
    reading a stream as it is copied or decompressed: the caller hands ``tap`` to
    ``_files("pipe")``, then asks ``verdict()`` (its counts; ``_Damage`` when it refuses
    the data) or, when the stream failed, ``abort()``."""

    def __init__(self, executable, timeout, account):
        self.checker = _throwaway("stream_check")(executable, "redis-check-rdb", timeout, *account)
        self.tap = _files("tap")(self.checker.stdin)

    def verdict(self):
        self.tap.close()  # the checker's input ends here
        return _rdb_verdict(_checked("redis-check-rdb", *self.checker.result()))

    def abort(self):
        self.checker.kill()
        self.tap.close()


def _check_aof(executable, manifest_path, timeout, account):
    output = _run_check(executable, "redis-check-aof", manifest_path, timeout, account)
    if "valid" not in output or "not valid" in output:
        raise _Damage(f"redis-check-aof does not confirm the backup: {_throwaway('sanitized')(output)}")
    return {}


def _stored_sums(path):
    """``(size, sha256)`` of a stored file, or None when it is missing, a symbolic link or not
    a regular file (refused, never followed)."""
    try:
        return _files("sha256_file")(path)
    except OSError:
        return None


def _readable_dir(path):
    """Make the new directory ``path`` root's, group ``redis``, 0750: Redis's checkers (run as
    the redis account) read there, nobody but root writes."""
    gid = _tree_gid()
    if gid is not None:
        os.chown(path, -1, gid, follow_symlinks=False)
    os.chmod(path, 0o750)
    return path


def _unpack(path, meta, target_dir):
    """Decompress (or copy) the backup's files into ``target_dir`` as Redis names them,
    checking every stored and every decompressed byte against the metadata's sha256 (root's
    files, group ``redis``: the checkers read them). Every name is checked first: a path or
    ``..`` in the metadata or the AOF manifest refuses the backup as damaged. Returns the path
    Redis's checker takes (the RDB file or the AOF manifest)."""
    _unsafe_names(meta)
    compress = meta.get("compress", "none")
    command = _tool(DECOMPRESS_COMMANDS[compress]) if compress != "none" else None
    if meta["type"] == "aof":
        target_dir = os.path.join(target_dir, meta.get("appenddirname") or "appendonlydir")
        os.mkdir(target_dir, 0o700)
        _readable_dir(target_dir)
    gid = _tree_gid()
    checked = None
    for item in meta["files"]:
        destination = os.path.join(target_dir, item["source"])
        _unpack_file(path, meta, item, destination, command, gid)
        if item["kind"] in ("rdb", "manifest"):
            checked = destination
    if meta["type"] == "aof":
        _check_manifest_names(meta, checked)
    return checked


def _unpack_file(path, meta, item, destination, command, gid, tap=None, sync=True):
    """One stored file decompressed (``command``; None: copied) into ``destination`` (None:
    nowhere, only hashed), every stored and every decompressed byte checked against the
    metadata's sha256; ``tap`` gets the decompressed bytes too (``_files("pipe")``)."""
    stored = os.path.join(path, item["name"])
    try:
        handle = _files("open_read")(stored)
    except OSError as exc:
        raise _Damage(f"backup {meta.get('name')}: {item['name']} is missing or not a regular file "
                      f"({exc.strerror})") from None
    try:
        with handle:
            sums = _files("pipe")(handle, os.fstat(handle.fileno()).st_size, destination, command, gid=gid,
                                  tap=tap, sync=sync)
    except CommandExecutionError as exc:
        if _stored_sums(stored) != (item["size"], item["sha256"]):
            raise _Damage(f"backup {meta.get('name')}: {item['name']} is damaged (sha256 differs)") from None
        raise CommandExecutionError(f"backup {meta.get('name')}: {item['name']}: {exc}") from None
    if (sums["in_size"], sums["in_sha256"]) != (item["size"], item["sha256"]):
        raise _Damage(f"backup {meta.get('name')}: {item['name']} is damaged (sha256 differs)")
    if (sums["out_size"], sums["out_sha256"]) != (item["raw_size"], item["raw_sha256"]):
        raise _Damage(f"backup {meta.get('name')}: {item['name']} decompresses to other data than was backed up")


def _check_rdb_streamed(path, meta, target_dir, executable, timeout, account):
    """An RDB backup's check in one read of what was stored: each stored byte hashed, the
    file decompressed through a pipe, the decompressed bytes hashed and fed as they come to
    ``redis-check-rdb`` (the build's own, as the redis account) reading its standard input,
    and written into ``target_dir`` only when a throwaway server is to load them (None:
    nowhere; a scratch file, not fsynced). The checker's verdict counts only when both
    sha256 match the metadata: it read the very bytes the stored file decompresses to. An
    uncompressed backup is hashed as it is read and, for ``target_dir``, linked there."""
    _unsafe_names(meta)
    compress = meta.get("compress", "none")
    command = _tool(DECOMPRESS_COMMANDS[compress]) if compress != "none" else None
    rdb = [item for item in meta["files"] if item["kind"] == "rdb"]
    if len(rdb) != 1 or len(meta["files"]) != 1:
        raise _Damage(f"backup {meta.get('name')}: an RDB backup holds one RDB file, its metadata names "
                      f"{len(meta['files'])} files, {len(rdb)} of them RDB")
    item = rdb[0]
    destination = os.path.join(target_dir, item["source"]) if target_dir is not None else None
    check = _RdbCheck(executable, timeout, account)
    try:
        _unpack_file(path, meta, item, destination if command is not None else None, command, _tree_gid(),
                     tap=check.tap, sync=False)
    except BaseException:
        check.abort()
        raise
    facts = check.verdict()
    if destination is not None and command is None:
        os.link(os.path.join(path, item["name"]), destination, follow_symlinks=False)  # read-only use
    return facts


def _check_manifest_names(meta, manifest_path):
    """The unpacked AOF manifest names only files the backup holds, by plain names."""
    if manifest_path is None:
        raise _Damage(f"backup {meta.get('name')}: no AOF manifest among its files")
    with _files("open_read")(manifest_path) as handle:
        entries = _manifest_entries(handle.read().decode(errors="surrogateescape"))
    held = {item["source"] for item in meta["files"] if item["kind"] != "manifest"}
    problems = _files("manifest_problems")(entries, held)
    if problems:
        raise _Damage(f"backup {meta.get('name')} is damaged: {'; '.join(problems)}")


def _check_unpacked(meta, checked, executable, timeout, account):
    if meta["type"] == "rdb":
        return _check_rdb(executable, checked, timeout, account)
    # redis-check-aof opens the AOF files read-write ("r+"): the unpacked AOF directory (made
    # by root a moment ago, nothing planted) becomes the account's; root follows no path in
    # it afterwards (reads with O_NOFOLLOW, chown without following, rmtree by descriptors).
    _throwaway("hand_over")(os.path.dirname(checked), *account)
    return _check_aof(executable, checked, timeout, account)


def _inspect(path, meta, workdir, timeout, account, load=True):
    """Checksums, the build's own checker on the decompressed data and, with ``load``, a
    throwaway server's count of the keys per type; Redis's code runs as the redis account
    (``account``), with oom_score_adj 1000 and a maxmemory bound. Returns what was found."""
    executable = _executable(meta.get("server_executable"))
    started = time.monotonic()
    _readable_dir(workdir)
    if meta["type"] == "rdb":
        facts = _check_rdb_streamed(path, meta, workdir if load else None, executable, timeout, account)
    else:
        checked = _unpack(path, meta, workdir)
        facts = _check_unpacked(meta, checked, executable, timeout, account)
    if load:
        with _throwaway("throwaway")(executable, workdir, meta, timeout, *account, _wait) as server:
            facts.update(server.counts())
    facts["seconds"] = round(time.monotonic() - started, 3)
    return facts


def _compare(meta, facts):
    """What differs between a backup's metadata and what loading it showed. Keys with a TTL
    may have expired since the backup: only those may be missing."""
    problems = []
    expected, with_ttl = meta.get("keys"), int(meta.get("keys_with_ttl") or 0)
    if meta["type"] == "rdb" and facts.get("keys") is not None and expected is not None and facts["keys"] != expected:
        problems.append(f"the RDB file holds {facts['keys']} keys, its metadata says {expected}")
    loaded = facts.get("loaded_keys")
    if loaded is not None and expected is not None:
        if loaded > expected:
            problems.append(f"{loaded} keys loaded, more than the {expected} recorded")
        if loaded < expected - with_ttl:
            problems.append(f"only {loaded} keys loaded of {expected} recorded ({with_ttl} had a TTL)")
    recorded = meta.get("key_types") or {}
    if recorded:
        for kind, count in sorted((facts.get("key_types") or {}).items()):
            if count > int(recorded.get(kind, 0)):
                problems.append(f"{count} keys of type {kind} loaded, {recorded.get(kind, 0)} recorded")
    return problems


# ---------------------------------------------------------------- create


def _partial_dir(parent, base):
    return tempfile.mkdtemp(prefix=f"{PARTIAL}{base}-", dir=parent)


def _finalize(partial, type_dir, base, meta):
    """Metadata last, then the atomic rename to a free final name, then the parent fsynced."""
    suffix = 1
    while True:
        name = base if suffix == 1 else f"{base}_{suffix}"
        final = os.path.join(type_dir, name)
        if os.path.lexists(final):
            suffix += 1
            continue
        meta["name"] = name
        _write_json(os.path.join(partial, METADATA), meta)
        _readable_dir(partial)
        try:
            os.rename(partial, final)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                suffix += 1
                continue
            raise
        _fsync_dir(type_dir)
        return final


def _snapshot_files(kind, client, live, timeout):
    """Take the snapshot; return the open source files ``[{source, kind, handle, size}]``
    (and the manifest text for AOF)."""
    if kind == "rdb":
        last_save = _bgsave(client, timeout)
        path = os.path.join(live["dir"], live["dbfilename"])
        handle = _files("open_read")(path)  # this inode, even if a newer save replaces the name
        return [{"source": live["dbfilename"], "kind": "rdb", "handle": handle,
                 "size": os.fstat(handle.fileno()).st_size}], None, last_save
    _bgrewriteaof(client, timeout)
    # appendfsync everysec may hold writes back (up to 2 s) while a background fsync runs:
    # once the AOF buffer is empty, every write acknowledged so far is in the files we open.
    _wait(lambda: not int(_persistence(client).get("aof_buffer_length", 0) or 0), AOF_FLUSH_WAIT, 0.02)
    manifest, opened = _open_aof(os.path.join(live["dir"], live["appenddirname"]), live["appendfilename"])
    sources = []
    for entry in opened:
        size = entry["size"]
        if entry["kind"] == "incr":
            size = _aof_complete_length(entry["handle"], size)
        sources.append({"source": entry["file"], "kind": entry["kind"], "handle": entry["handle"], "size": size})
    return sources, manifest, None


def _refuse_aof(live):
    if not live["appenddirname"]:
        raise CommandExecutionError(
            f"AOF backup needs Redis 7 or later (AOF as a directory with a manifest); this server runs "
            f"{live['version']}, whose single AOF file is rewritten in place: take an RDB backup instead")
    if not live["appendonly"]:
        raise CommandExecutionError("AOF backup impossible: this server runs with appendonly no (no AOF to back up)")


def _estimate(live):
    """About how big a snapshot of this server is: its last RDB, else its dataset in memory."""
    try:
        return os.stat(os.path.join(live["dir"], live["dbfilename"])).st_size
    except OSError:
        return live["used_memory"]


def _create_one(kind, client, live, options):
    compress, retention, root, timeout, verify = (
        options["compress"], options["retention_days"], options["root"], options["timeout"], options["verify"])
    started_at = _now()
    base = f"{kind}_backup_{started_at:%Y%m%d_%H%M%S}"
    type_dir = os.path.join(root, kind)
    meta = {
        "format": METADATA_FORMAT, "name": base, "type": kind, "timestamp": _iso(started_at),
        "minion": _minion(), "compress": compress, "retention_days": retention,
    }
    if options.get("set_id"):
        meta["set_id"] = options["set_id"]
    _fire("started", dict(meta))
    started = time.monotonic()
    partial = workdir = None
    sources = []
    try:
        if kind == "aof":
            _refuse_aof(live)
        estimate = _estimate(live)
        _require_space(live["dir"], estimate, "the snapshot (BGSAVE/BGREWRITEAOF) in the data directory")
        # The check decompresses (AOF: copies) next to the backup; an RDB only for the throwaway
        # server (verify=True), when compressed (uncompressed: linked).
        factor = 1 if kind == "rdb" and (compress == "none" or not verify) else 2
        _require_space(type_dir, estimate * factor, "the backup and its check")
        snapshot_started = time.monotonic()
        sources, manifest, last_save = _snapshot_files(kind, client, live, timeout)
        snapshot_seconds = time.monotonic() - snapshot_started
        raw_total = sum(item["size"] for item in sources)
        _require_space(type_dir, raw_total * factor, "the backup and its check")
        partial = _partial_dir(type_dir, base)
        files = []
        for item in sources:
            name = item["source"] + EXTENSIONS[compress]
            sums = _store(item["handle"], item["size"], os.path.join(partial, name), compress)
            files.append({"name": name, "source": item["source"], "kind": item["kind"], "size": sums["out_size"],
                          "sha256": sums["out_sha256"], "raw_size": sums["in_size"], "raw_sha256": sums["in_sha256"]})
        if manifest is not None:
            data = manifest.encode(errors="surrogateescape")
            source = f"{live['appendfilename']}.manifest"
            name = source + EXTENSIONS[compress]
            sums = _store(io.BytesIO(data), len(data), os.path.join(partial, name), compress)
            files.append({"name": name, "source": source, "kind": "manifest", "size": sums["out_size"],
                          "sha256": sums["out_sha256"], "raw_size": sums["in_size"], "raw_sha256": sums["in_sha256"]})
        _fsync_dir(partial)
        copy_seconds = time.monotonic() - snapshot_started - snapshot_seconds
        meta.update(_describe(live, kind, files))
        _unsafe_names(meta)  # the names the server gave: plain file names, or no backup
        if last_save:
            meta["last_save"] = _iso(datetime.datetime.fromtimestamp(last_save, datetime.timezone.utc))
        # Verification: stored bytes re-read and decompressed, both sha256 compared, the build's
        # checker on the decompressed bytes (an RDB: as they stream past, no file made; an AOF:
        # unpacked into a work directory), and (verify=True) a throwaway server loads and counts.
        workdir = _partial_dir(type_dir, f"check-{base}")
        facts = _inspect(partial, meta, workdir, timeout, options["account"], load=verify)
        _record_counts(meta, facts)
        problems = _compare(meta, facts) if verify else []
        if problems:
            raise CommandExecutionError(f"the new backup does not load as taken: {'; '.join(problems)}")
        meta.update({
            "verified": bool(verify), "verified_at": _iso(_now()) if verify else None,
            "verify_seconds": facts["seconds"], "snapshot_seconds": round(snapshot_seconds, 3),
            "copy_seconds": round(copy_seconds, 3), "duration_seconds": round(time.monotonic() - started, 3),
        })
        final = _finalize(partial, type_dir, base, meta)
        partial = None
    except Exception as exc:
        error = str(exc) if isinstance(exc, CommandExecutionError) else f"{type(exc).__name__}: {exc}"
        _fire("failed", dict(meta, error=error))
        if isinstance(exc, redis.RedisError):
            raise CommandExecutionError(_problem(exc, f"take the {kind} backup")) from None
        if isinstance(exc, CommandExecutionError):
            raise
        raise CommandExecutionError(f"{kind} backup failed: {error}") from None
    finally:
        for item in sources:
            item["handle"].close()
        for leftover in (partial, workdir):
            if leftover:
                shutil.rmtree(leftover, ignore_errors=True)
    _fire("finished", dict(meta))
    return dict(meta, path=final)


def _describe(live, kind, files):
    meta = {
        "redis_version": live["version"], "server_executable": _executable(live["executable"]),
        # What wrote it, and so which servers can load it (_utils/redis_servers.py).
        **{key: value for key, value in __utils__["redis_servers.node"](live["server"], live["server_version"]).items()
           if key != "version"},
        "server_version": live["server_version"],
        "mode": _settings().get("mode"), "role": _settings().get("role"),
        "replication_role": live["replication_role"], "port": int(_settings().get("port", 6379)),
        "cluster_enabled": live["cluster_enabled"], "node_id": live["node_id"], "slots": live["slots"],
        "databases": live["databases"], "files": files, "used_memory": live["used_memory"],
        "size": sum(item["size"] for item in files), "raw_size": sum(item["raw_size"] for item in files),
    }
    if kind == "rdb":
        meta["dbfilename"] = live["dbfilename"]
    else:
        meta.update({"appenddirname": live["appenddirname"], "appendfilename": live["appendfilename"]})
    return meta


def _record_counts(meta, facts):
    """Key counts as the backup holds them: an RDB's from redis-check-rdb (every key in the
    file, expired or not); an AOF's from the throwaway server that replayed it."""
    if meta["type"] == "rdb":
        meta.update({"keys": facts["keys"], "keys_with_ttl": facts["keys_with_ttl"], "keys_source": "redis-check-rdb"})
    elif "loaded_keys" in facts:
        meta.update({"keys": facts["loaded_keys"], "keys_with_ttl": facts["loaded_keys_with_ttl"],
                     "keys_source": "throwaway redis-server"})
    else:
        meta.update({"keys": None, "keys_with_ttl": None, "keys_source": "not counted (not verified)"})
    if "key_types" in facts:
        meta["key_types"] = facts["key_types"]


def _copy_to(final, meta, destination_root):
    """Copy a finished backup to ``copy_to/<minion>/<type>/<name>`` (same partial-then-rename)."""
    type_dir = os.path.join(destination_root, meta["minion"], meta["type"])
    _makedirs(type_dir)
    partial = _partial_dir(type_dir, meta["name"])
    try:
        for entry in os.listdir(final):
            shutil.copy2(os.path.join(final, entry), os.path.join(partial, entry))
            _fsync_file(os.path.join(partial, entry))
        _fsync_dir(partial)
        os.chmod(partial, 0o750)
        target = os.path.join(type_dir, meta["name"])
        os.rename(partial, target)
        _fsync_dir(type_dir)
        return target
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def create(type="both", compress=None, retention_days=None, backup_dir=None, verify=True, timeout=3600,
           prune=True, set_id=None, complete_set=None):  # pylint: disable=redefined-builtin
    """
    Hot backup of this node's Redis: RDB (a fresh BGSAVE), AOF (a fresh BGREWRITEAOF; Redis 7
    AOF directory) or both. Defaults from pillar ``redis:backup`` (``compress``: gzip, zstd or
    none; ``retention_days``; ``dir``). Refuses early, with the figures, when the data or the
    backup directory lacks the space. Fires ``redis/backup/<minion>/started``, ``finished``
    (the metadata) or ``failed`` (with the error). Each new backup is checked before it is
    listed: checksums re-read, ``redis-check-rdb``/``redis-check-aof`` on the decompressed
    data and, with ``verify=True`` (the default), loaded into a throwaway redis-server that
    counts its keys per type (that needs as much memory again as the dataset, for a
    moment). ``copy_to`` in pillar copies each new backup to ``COPY_TO/<minion>/<type>/<name>``.
    Then retention is applied (``prune=True``) here and to this node's copies in ``copy_to``,
    each backup by its own ``retention_days``, by ``prune``'s rules; the backups just made
    are never deleted. ``set_id`` (given by ``salt-run redis_backup.run``) is recorded in the
    metadata; ``complete_set``: the newest complete set the master knows, whose members
    retention keeps.

    Returns the backup's metadata plus ``path``, ``pruned`` (names deleted by retention)
    and ``copied_to``/``copy_error`` when ``copy_to`` is set; for ``type=both``,
    ``{"rdb": ..., "aof": ..., "pruned": [...]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_backup.create
        salt '*' redis_backup.create type=rdb compress=zstd retention_days=30
    """
    settings = _backup_settings()
    _check_choice(type, ("rdb", "aof", "both"), "type")
    kinds = ["rdb", "aof"] if type == "both" else [type]
    compress = _check_choice(compress or settings.get("compress") or DEFAULTS["compress"], tuple(EXTENSIONS),
                             "compress")
    if compress != "none":
        _tool(COMPRESS_COMMANDS[compress])
    if retention_days is None:
        retention_days = settings.get("retention_days")
    retention = _days(DEFAULTS["retention_days"] if retention_days is None else retention_days)
    _require_redis_role()
    options = {"compress": compress, "retention_days": retention, "root": _backup_root(backup_dir),
               "timeout": float(timeout), "verify": bool(verify), "set_id": set_id, "account": _account()}
    keep_min = _keep_min()
    for given, what in ((set_id, "set_id"), (complete_set, "complete_set")):
        if given is not None and not __utils__["redis_backup_retention.set_key"](given):
            raise CommandExecutionError(f"{what} must be a set id (set_YYYYmmdd_HHMMSS), not {given!r}")
    client = _client()
    try:
        live = _live(client)
    except redis.RedisError as exc:
        error = _problem(exc, "take a backup")
        _fire("failed", {"type": type, "minion": _minion(), "error": error})
        raise CommandExecutionError(error) from None
    _tree(options["root"], backups=True)
    results, errors = {}, []
    try:
        for kind in kinds:
            try:
                results[kind] = _create_one(kind, client, live, options)
            except CommandExecutionError as exc:
                errors.append(f"{kind}: {exc}")
    finally:
        client.close()
    if errors:
        done = "; ".join(f"{kind} backup {meta['name']} done" for kind, meta in results.items())
        raise CommandExecutionError("; ".join(errors) + (f" ({done})" if done else ""))
    copy_to = settings.get("copy_to")
    if copy_to:
        for meta in results.values():
            try:
                meta["copied_to"] = _copy_to(meta["path"], meta, copy_to)
            except (OSError, shutil.Error) as exc:
                meta["copy_error"] = f"could not copy to {copy_to}: {exc}"
                log.error("redis_backup: %s", meta["copy_error"])
    pruned, pruned_copies, prune_error = [], [], None
    made = [meta["name"] for meta in results.values()]
    if complete_set:
        try:
            _record_complete_set(options["root"], complete_set)
        except OSError as exc:
            prune_error = f"the newest complete set not recorded: {exc}"
    if prune and not prune_error:
        try:
            pruned = [item["name"] for item in _prune(options["root"], None, made, keep_min)["deleted"]]
        except (OSError, CommandExecutionError) as exc:
            prune_error = f"retention not applied: {exc}"
        if copy_to and not prune_error and any(meta.get("copied_to") for meta in results.values()):
            copies = os.path.join(copy_to, _minion())
            try:
                if complete_set:
                    _record_complete_set(copies, complete_set)
                pruned_copies = [item["name"] for item in _prune(copies, None, made, keep_min)["deleted"]]
            except (OSError, CommandExecutionError) as exc:
                prune_error = f"retention not applied to the copies in {copy_to}: {exc}"
    _publish_metrics(options["root"])
    if len(kinds) == 1:
        ret = dict(results[kinds[0]], pruned=pruned)
    else:
        ret = dict(results, pruned=pruned)
    if pruned_copies:
        ret["pruned_copies"] = pruned_copies
    if prune_error:
        ret["prune_error"] = prune_error
    return ret


# Debian's prometheus-node-exporter reads *.prom in its --collector.textfile.directory
# (map.jinja's backup_metrics_file: the state that removes it when the exporter is off).
BACKUP_METRICS_FILE = "/var/lib/prometheus/node-exporter/redis_backup.prom"


def _publish_metrics(root, path=BACKUP_METRICS_FILE):
    """With ``monitoring.exporter`` on: this node's backup metrics for node-exporter's textfile
    collector (_utils/redis_backup_metrics.py), written whole, readable by everyone. A failure
    is logged, never the backup's; without node-exporter's directory nothing is written."""
    if not (_settings().get("monitoring") or {}).get("exporter"):
        return
    if not os.path.isdir(os.path.dirname(path)):
        log.warning("redis_backup: no node-exporter textfile directory: backup metrics not written")
        return
    try:
        text = __utils__["redis_backup_metrics.textfile"]([meta for _, meta in _scan(root)])
        __utils__["redis_common.replace_file"](path, text, 0, 0, 0o644)
    except OSError as exc:
        log.warning("redis_backup: backup metrics not written: %s", exc)


# ---------------------------------------------------------------- list, prune, verify


def _scan(root):
    """Our complete backups under ``root``: ``[(path, metadata)]``, newest first."""
    found = []
    for kind in TYPES:
        type_dir = os.path.join(root, kind)
        try:
            names = os.listdir(type_dir)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            match = _files("backup_name")(name)
            path = os.path.join(type_dir, name)
            if not match or match.group(1) != kind or not os.path.isdir(path) or os.path.islink(path):
                continue
            meta = _read_metadata(path)
            if meta is None or meta.get("type") != kind:
                continue
            found.append((path, meta))
    epoch = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
    found.sort(key=lambda item: (_files("parse_time")(item[1].get("timestamp")) or epoch, os.path.basename(item[0])),
               reverse=True)
    return found


def _summary(path, meta):
    return {
        "name": os.path.basename(path), "path": path, "type": meta.get("type"),
        "timestamp": meta.get("timestamp"), "size": meta.get("size"), "verified": bool(meta.get("verified")),
        "damaged": bool(meta.get("damaged")), "compress": meta.get("compress"), "keys": meta.get("keys"),
    }


def list_(backup_dir=None):
    """
    This node's backups, newest first: ``backups`` (name, path, type, timestamp, size in
    bytes, verified, compress, keys) for scripts and ``--out=json``, and ``table``, the same
    as the original's text table (No., name, timestamp, type, size, verified), one line per
    list item so that Salt's default output prints it aligned. Unfinished (``.partial-*``)
    and foreign directories are not listed.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_backup.list
        salt '*' redis_backup.list --out=json
    """
    root = _backup_root(backup_dir)
    backups = [_summary(path, meta) for path, meta in _scan(root)]
    if not backups:
        return {"backup_dir": root, "backups": [], "table": [f"No backups in {root}"]}
    width = max(30, max(len(item["name"]) for item in backups) + 2)
    rule = "-" * (width + 62)
    table = [rule, f"{'No.':<5} {'Backup Name':<{width}} {'Timestamp':<26} {'Type':<5} {'Size':>8}  Verified", rule]
    for number, item in enumerate(backups, 1):
        table.append(f"{number:<5} {item['name']:<{width}} {str(item['timestamp']):<26} {item['type']:<5} "
                     f"{_files('human_size')(item['size']):>8}  {'yes' if item['verified'] else 'no'}")
    return {"backup_dir": root, "backups": backups, "table": table}


def _keep_min(value=None):
    """The minimum count of good backups kept per type (pillar ``backup.keep_min``, default 2)."""
    if value is None:
        value = _backup_settings().get("keep_min")
    if value is None:
        value = DEFAULTS["keep_min"]
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if count < 0 or str(count) != str(value).strip():
        raise CommandExecutionError(f"keep_min must be a whole number (0 or more), not {value!r}")
    return count


def _sets_file(root):
    return os.path.join(root, SETS_FILE)


def _newest_complete_set(root):
    """The newest complete set the master told this node of (``create``'s ``complete_set``)."""
    try:
        data = _files("read_json")(_sets_file(root))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data.get("newest_complete")


def _record_complete_set(root, set_id):
    newest = __utils__["redis_backup_retention.newer_set"](_newest_complete_set(root), set_id)
    if newest and newest != _newest_complete_set(root):
        _write_json(_sets_file(root), {"newest_complete": newest})


def _prune(root, retention_days, keep_names=(), keep_min=None):
    """Retention of the backups under ``root`` (``BACKUP_DIR``, or ``COPY_TO/<minion>``): the
    rules are ``redis_backup_retention.decide``'s; ``keep_names``: the backups just made."""
    now = _now()
    keep_min = _keep_min(keep_min)
    default_days = _backup_settings().get("retention_days", DEFAULTS["retention_days"])
    entries = []
    for path, meta in _scan(root):
        days = _days(retention_days if retention_days is not None else meta.get("retention_days", default_days))
        entries.append({"name": os.path.basename(path), "type": meta["type"], "days": days, "path": path,
                        "time": _files("parse_time")(meta.get("timestamp")), "set_id": meta.get("set_id"),
                        "good": __utils__["redis_backup_retention.is_good"](meta), "meta": meta})
    keep_sets = __utils__["redis_backup_retention.protected_sets"](
        [entry["set_id"] for entry in entries if entry["set_id"]], _newest_complete_set(root))
    deleted, kept = [], []
    for entry, keep, reason in __utils__["redis_backup_retention.decide"](entries, now, keep_min, keep_names,
                                                                          keep_sets):
        item = _summary(entry["path"], entry["meta"])
        item.update(retention_days=entry["days"], good=entry["good"])
        if entry["time"] is not None:
            item["age_days"] = round((now - entry["time"]).total_seconds() / 86400, 2)
        if keep:
            kept.append(dict(item, reason=reason))
        else:
            shutil.rmtree(entry["path"])
            deleted.append(dict(item, reason=reason))
    for directory in [root] + [os.path.join(root, kind) for kind in TYPES]:
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            path = os.path.join(directory, name)
            if not name.startswith(PARTIAL) or not os.path.isdir(path) or os.path.islink(path):
                continue
            age = time.time() - os.lstat(path).st_mtime
            if age > STALE_PARTIAL_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
                deleted.append({"name": name, "path": path, "age_days": round(age / 86400, 2),
                                "reason": "unfinished backup or check left behind, older than a day"})
    return {"backup_dir": root, "deleted": deleted, "kept": kept}


def _prune_safety_copies(days, config_file=None, journal_dir=None):
    """Retention of the restores' safety copies next to the data directory (restore's default
    place, ``<datadir>_backup_YYYYmmdd_HHMMSS``): older than ``days`` go, never the newest,
    and none while a restore runs or its journal is pending (the journal names one)."""
    config_file = config_file or _name("config_file")
    config = _config_file_settings(config_file)
    if not config.get("dir"):
        return {"data_dir": None, "deleted": [], "kept": [],
                "skipped": f"no data directory in {config_file}: safety copies left alone"}
    data_dir = os.path.realpath(config["dir"])
    parent, base = os.path.dirname(data_dir), os.path.basename(data_dir)
    pattern = re.compile(re.escape(base) + r"_backup_(\d{8}_\d{6})(?:_(\d+))?$")
    directory = _journal_dir(journal_dir, create=False)
    result = {"data_dir": data_dir, "deleted": [], "kept": []}
    try:
        lock = _Lock(directory) if os.path.isdir(directory) else None
        if lock is not None:
            lock.__enter__()
    except _Busy:
        return dict(result, skipped="a restore is running: safety copies left alone")
    try:
        if os.path.lexists(os.path.join(directory, JOURNAL)):
            return dict(result, skipped="a restore journal is pending: safety copies left alone")
        entries = []
        for name in os.listdir(parent) if os.path.isdir(parent) else []:
            found = pattern.match(name)
            path = os.path.join(parent, name)
            if not found or os.path.islink(path) or not os.path.isdir(path):
                continue
            moment = datetime.datetime.strptime(found.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=datetime.timezone.utc)
            entries.append({"name": name, "type": "safety copy", "time": moment, "days": days, "good": True,
                            "path": path})
        for entry, keep, reason in __utils__["redis_backup_retention.decide"](entries, _now(), 1):
            item = {"name": entry["name"], "path": entry["path"], "reason": reason}
            if keep:
                result["kept"].append(item)
            else:
                shutil.rmtree(entry["path"])
                result["deleted"].append(item)
        return result
    finally:
        if lock is not None:
            lock.__exit__()


def prune(retention_days=None, backup_dir=None, keep_min=None, safety_copy_days=None, config_file=None,
          journal_dir=None):
    """
    Apply retention: delete this node's backups older than the retention each was taken
    with (or ``retention_days`` when given), and unfinished ``.partial-*`` directories older
    than a day. Whatever the clock says, never the newest good backup of each type (good:
    not found damaged; a verification that could not finish does not count), nor the
    ``keep_min`` newest good ones of each type (pillar ``backup.keep_min``, default 2), nor
    a member of the newest complete set (``salt-run redis_backup.run``) or of this node's
    newest set. Only our own directories (``rdb/rdb_backup_*``, ``aof/aof_backup_*``
    holding our metadata) are touched. The restores' safety copies next to the data
    directory (``<datadir>_backup_YYYYmmdd_HHMMSS``) older than ``safety_copy_days`` (pillar
    ``backup.safety_copy_days``, default 7) go too, never the newest one, and none while a
    restore runs or its journal is pending (``safety_copies`` in the return).

    Returns ``{"backup_dir", "deleted": [...], "kept": [...]}``, each entry with its name,
    path, age and the reason.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_backup.prune
        salt '*' redis_backup.prune retention_days=30
    """
    if retention_days is not None:
        _days(retention_days)
    if safety_copy_days is None:
        safety_copy_days = _backup_settings().get("safety_copy_days")
    safety_days = _days(DEFAULTS["safety_copy_days"] if safety_copy_days is None else safety_copy_days,
                        "safety_copy_days")
    ret = _prune(_backup_root(backup_dir), retention_days, keep_min=_keep_min(keep_min))
    try:
        ret["safety_copies"] = _prune_safety_copies(safety_days, config_file, journal_dir)
    except OSError as exc:
        ret["safety_copies"] = {"deleted": [], "kept": [], "skipped": f"safety copies not pruned: {exc}"}
    return ret


def _resolve(backup, backup_dir=None, check_names=True):
    """A backup's directory and metadata from its name or path. A backup of our tree is
    taken over first when an older version left it the redis account's (refused, naming the
    path, when it holds a symbolic link). ``check_names``: refuse as damaged a backup whose
    metadata names anything but plain file names."""
    text = str(backup or "").strip()
    if not text:
        raise CommandExecutionError("name the backup: backup=NAME or backup=PATH (see redis_backup.list)")
    root = _backup_root(backup_dir)
    if os.sep in text:
        path = os.path.abspath(text)
    else:
        match = _files("backup_name")(text)
        if not match:
            raise CommandExecutionError(f"{text!r} is not a backup name (rdb_backup_... or aof_backup_...)")
        path = os.path.join(root, match.group(1), text)
    parent = os.path.dirname(path)
    if os.path.dirname(parent) == root and os.path.basename(parent) in TYPES and os.path.isdir(root):
        _tree(root)  # our tree: root's alone before anything in it is read
        if os.path.lexists(path):
            _adopt(path)
    if os.path.islink(_metadata_path(path)):
        raise CommandExecutionError(f"backup {path}: {METADATA} is a symbolic link: refused, not followed")
    meta = _read_metadata(path)
    if meta is None:
        what = "does not exist" if not os.path.isdir(path) else f"has no readable {METADATA}"
        raise CommandExecutionError(f"backup {path} {what}")
    if meta.get("type") not in TYPES or meta.get("compress") not in EXTENSIONS or not meta.get("files"):
        raise CommandExecutionError(f"backup {path}: its metadata is not one of ours")
    if check_names:
        _unsafe_names(meta)
    return path, meta


def verify(backup, backup_dir=None, timeout=3600):
    """
    Load a backup into a throwaway redis-server (its own build's binary, run as the redis
    account with oom_score_adj 1000 and a maxmemory bound, on a Unix socket only; always
    stopped afterwards) after checking its checksums and running ``redis-check-rdb``/
    ``redis-check-aof`` (as that account too) on the decompressed data; compare the keys
    loaded, in total and per type, with its metadata (keys with a TTL may have expired since).
    Marks the backup verified (or not) in its metadata. A backup whose metadata names a path
    or ``..`` instead of a plain file name is marked damaged, before any file is made for it.

    Returns ``{"result": True, "backup", "path", "type", "keys", "key_types", "expected":
    {"keys", "keys_with_ttl", "key_types"}, "seconds"}``; raises with the reasons otherwise.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_backup.verify backup=rdb_backup_20251027_120000
    """
    account = _account()
    path, meta = _resolve(backup, backup_dir, check_names=False)  # bad names: recorded as damage below
    workdir = _partial_dir(os.path.dirname(path), f"verify-{os.path.basename(path)}")
    damage = transient = None
    try:
        facts = _inspect(path, meta, workdir, float(timeout), account, load=True)
        problems = _compare(meta, facts)
        damage = "; ".join(problems) or None  # the data is not what was backed up
    except _Damage as exc:
        damage = str(exc)
    except CommandExecutionError as exc:  # the check could not finish: says nothing of the data
        transient = str(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if damage or transient:
        meta.update(__utils__["redis_backup_retention.verification"](_iso(_now()), damage, transient))
        _write_json(os.path.join(path, METADATA), meta)
        what = "damaged" if damage else "the check did not finish; the backup is not marked damaged"
        raise CommandExecutionError(f"backup {meta['name']} fails verification ({what}): {damage or transient}")
    if meta.get("keys") is None:  # an AOF backup taken with verify=False: counted now
        _record_counts(meta, facts)
    if not meta.get("key_types"):
        meta["key_types"] = facts["key_types"]
    meta.pop("verify_error", None)
    meta.update(__utils__["redis_backup_retention.verification"](_iso(_now())))
    meta.pop("verify_error", None)
    meta["verify_seconds"] = facts["seconds"]
    _write_json(os.path.join(path, METADATA), meta)
    return {
        "result": True, "backup": meta["name"], "path": path, "type": meta["type"],
        "keys": facts["loaded_keys"], "key_types": facts["key_types"], "seconds": facts["seconds"],
        "expected": {"keys": meta.get("keys"), "keys_with_ttl": meta.get("keys_with_ttl"),
                     "key_types": meta.get("key_types")},
    }


def keyspace():
    """
    What the set restore's verification reads from a node: its keys over every database
    (``keys``; ``databases``: ``{db: keys}``), what its loader read at its last start
    (``loaded_keys``, ``expired_at_load``; None on Redis 6.2, which does not say), its
    replication role and, on a replica, whether its link to the master is up and in sync
    (``master_link_status``, ``master_sync_in_progress``).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_backup.keyspace
    """
    _require_redis_role()
    client = _client()
    try:
        info = client.info()
    except redis.RedisError as exc:
        raise CommandExecutionError(_problem(exc, "read the keyspace")) from None
    finally:
        client.close()
    databases = {int(name[2:]): int(stats.get("keys", 0)) for name, stats in info.items()
                 if re.match(r"^db\d+$", str(name)) and isinstance(stats, dict)}
    ret = {"keys": sum(databases.values()), "databases": databases, "replication_role": info.get("role"),
           "loaded_keys": None, "expired_at_load": None}
    if "rdb_last_load_keys_loaded" in info:
        ret.update(loaded_keys=int(info["rdb_last_load_keys_loaded"]),
                   expired_at_load=int(info.get("rdb_last_load_keys_expired") or 0))
    if info.get("role") == "slave":
        ret.update(master_link_status=info.get("master_link_status"),
                   master_sync_in_progress=bool(int(info.get("master_sync_in_progress") or 0)))
    return ret


# ---------------------------------------------------------------- restore


def _config_file_settings(path):
    """The directives restore needs, read from Redis's configuration file and its includes
    (when the server is down). Password lines are never parsed."""
    wanted = {"dir", "dbfilename", "appendonly", "appenddirname", "appendfilename", "cluster-enabled",
              "cluster-config-file", "replicaof", "slaveof", "logfile", "pidfile", "unixsocket", "databases"}
    found, seen = {}, set()

    def read(name):
        real = os.path.realpath(name)
        if real in seen:
            return
        seen.add(real)
        try:
            with open(real, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return
        for line in lines:
            head = line.strip().split(None, 1)
            if not head or head[0].lower() not in wanted | {"include"}:
                continue
            args = __utils__["redis_config.config_args"](head[1]) if len(head) > 1 else []
            if head[0].lower() == "include":
                for pattern in args:
                    for included in sorted(glob.glob(pattern)):
                        read(included)
            elif args:
                found[head[0].lower()] = " ".join(args)

    read(path)
    return found


def _format_refused(meta, live):
    """Why this node's server cannot load the backup's RDB format (a Redis 8 backup onto
    Valkey 8.1, a Valkey 8.1 backup onto Redis 7.0...), or None. A backup of before this
    check records no format: the server version that wrote it tells."""
    if not live.get("server") or not live.get("server_version"):
        return None  # the server's own checker refuses what it cannot read, before anything stops
    written = meta.get("rdb_format")
    source_server = meta.get("server") or "redis"
    source_version = meta.get("server_version") or meta.get("redis_version")
    if written is None:
        written = __utils__["redis_servers.rdb_format"](source_server, source_version)
    if __utils__["redis_servers.loads"](live["server"], live["server_version"], written) is not False:
        return None  # it loads it, or a format unknown here (a safety copy records none): the checker decides
    source = {"name": f"the backup ({meta.get('name') or meta.get('minion')})", "server": source_server,
              "version": source_version, "rdb_format": written}
    target = dict(__utils__["redis_servers.node"](live["server"], live["server_version"]), name="this node")
    return __utils__["redis_servers.move_refused"](source, target, "the restore")


def _offline(config_file, executable, account):
    """What restore needs from a server that does not run, from its files (its version from
    ``executable --version``, run as the redis account)."""
    config = _config_file_settings(config_file)
    server, version = _throwaway("server_version")(executable, *account)
    major = int(version.split(".")[0]) if version else 7
    live = {
        "running": False, "version": version, "executable": executable, "config_file": config_file,
        "server": server, "server_version": version,
        "replication_role": "slave" if (config.get("replicaof") or config.get("slaveof")) else "master",
        "connected_replicas": 0, "cluster_enabled": config.get("cluster-enabled") == "yes", "used_memory": 0,
        "dir": os.path.realpath(config.get("dir") or _name("data_dir")),
        "dbfilename": config.get("dbfilename") or "dump.rdb", "appendonly": config.get("appendonly") == "yes",
        "appenddirname": (config.get("appenddirname") or "appendonlydir") if major >= 7 else None,
        "appendfilename": config.get("appendfilename") or "appendonly.aof",
        "cluster_config_file": config.get("cluster-config-file") or "nodes.conf",
        "databases": int(config.get("databases") or 16), "logfile": config.get("logfile"),
        "pidfile": config.get("pidfile"), "unixsocket": config.get("unixsocket"),
        "node_id": None, "slots": None, "cluster_replicas": 0,
    }
    if live["cluster_enabled"]:
        try:
            with open(os.path.join(live["dir"], live["cluster_config_file"]), encoding="utf-8") as handle:
                live.update(_cluster_identity(handle.read()))
        except OSError:
            live.update({"node_id": None, "slots": []})
    return live


def _refusals(meta, live, part_of_set):
    """Why this backup must not go onto this node (checked before anything stops)."""
    reasons = []
    door = _format_refused(meta, live)
    if door:
        reasons.append(door)
    if meta["type"] == "aof":
        if not live["appenddirname"]:
            reasons.append(f"an AOF backup needs Redis 7 or later; this server runs {live['version']}")
        elif not live["appendonly"]:
            reasons.append("this server runs with appendonly no: it would ignore a restored AOF "
                           "(restore an RDB backup, or enable appendonly first)")
    if live["cluster_enabled"]:
        if not meta.get("cluster_enabled"):
            reasons.append("this node is a cluster node; the backup was taken outside a cluster")
        elif sorted(meta.get("slots") or []) != sorted(live["slots"] or []):
            reasons.append(f"the backup holds slots {meta.get('slots')}, this node serves {live['slots']}: "
                           "restore it on the node that serves those slots")
    if not part_of_set:
        settings = _settings()
        # The planned roles, not the replicas linked at this moment: a replica that is resyncing
        # or restarting is not counted, and the Sentinels fail over to it all the same.
        watched = (settings.get("mode") == "sentinel" and settings.get("role") in ("master", "replica")
                   and len(settings.get("peers") or []) > 1)
        if live["replication_role"] == "slave":
            reasons.append("this node is a replica: its master would wipe the restored data at the next resync "
                           "(restore the whole set with part_of_set=True, or restore the master)")
        elif watched:
            reasons.append(f"this node runs in a Sentinel deployment (pillar redis:role {settings['role']}, "
                           f"{len(settings['peers'])} Redis nodes): stopped alone, the Sentinels fail over to a "
                           "replica and the new master's data wins at the next resync, whatever replicas are linked "
                           "now; restore the whole deployment from a set: salt-run redis_backup.restore set=ID "
                           "force=True")
        elif live["connected_replicas"] or live["cluster_replicas"]:
            count = live["connected_replicas"] or live["cluster_replicas"]
            reasons.append(f"this master has {count} replica(s): stopping it alone triggers a failover and the "
                           "new master's data wins (restore the whole set with part_of_set=True)")
        elif not live["running"] and _settings().get("role") in ("master", "replica"):
            reasons.append("Redis is down: whether Sentinel failed over or replicas follow it cannot be checked "
                           "(pass part_of_set=True when restoring the whole set)")
    return reasons


def _kept_entries(live):
    """Names in the data directory that are not data and stay in place: the node's cluster
    identity (nodes.conf), configuration, logs, sockets, a mount point's lost+found."""
    kept = {"lost+found"}
    candidates = [live["config_file"], live["logfile"], live["pidfile"], live["unixsocket"]]
    if live["cluster_enabled"]:
        candidates.append(live["cluster_config_file"])
    for candidate in candidates:
        if not candidate:
            continue
        path = os.path.realpath(os.path.join(live["dir"], candidate))
        if os.path.dirname(path) == live["dir"]:
            kept.add(os.path.basename(path))
    return kept


def _entry_size(path):
    if os.path.isdir(path) and not os.path.islink(path):
        return sum(os.lstat(os.path.join(top, name)).st_size for top, _, names in os.walk(path) for name in names)
    return os.lstat(path).st_size


def _target_names(meta, live):
    """The data-directory entries a restore creates."""
    if meta["type"] == "aof":
        return [live["appenddirname"]]
    names = [live["dbfilename"]]
    if live["appendonly"]:
        names.append(live["appenddirname"] or live["appendfilename"])
    return names


def _loading_entry(live):
    """The data directory's entry this server loads at its start: the AOF (directory on
    Redis >= 7, file before) with ``appendonly yes``, else the RDB file."""
    if live["appendonly"]:
        return live["appenddirname"] or live["appendfilename"]
    return live["dbfilename"]


def _prepare(meta, live, new_dir, uid, gid):
    """Shape the unpacked, checked backup in ``new_dir`` (the work area, on the data
    directory's filesystem) into the entries this server loads from, owned by ``uid``:``gid``
    and fsynced; return their names. An RDB restored onto ``appendonly yes`` also becomes the
    AOF's base (Redis loads the AOF and ignores dump.rdb when appendonly is on; with no AOF
    at all, Redis 7.0 starts empty)."""
    if meta["type"] == "aof":
        source = meta.get("appenddirname") or "appendonlydir"
        if source != live["appenddirname"]:
            os.rename(os.path.join(new_dir, source), os.path.join(new_dir, live["appenddirname"]))
        entries = [live["appenddirname"]]
    else:
        target = os.path.join(new_dir, live["dbfilename"])
        if meta["files"][0]["source"] != live["dbfilename"]:
            os.rename(os.path.join(new_dir, meta["files"][0]["source"]), target)
        entries = [live["dbfilename"]]
        if live["appendonly"] and live["appenddirname"]:
            aof_dir = os.path.join(new_dir, live["appenddirname"])
            os.mkdir(aof_dir, 0o750)
            base = f"{live['appendfilename']}.1.base.rdb"
            os.link(target, os.path.join(aof_dir, base))  # Redis replaces both by rename, never in place
            with open(os.path.join(aof_dir, f"{live['appendfilename']}.manifest"), "w", encoding="utf-8") as handle:
                handle.write(f"file {base} seq 1 type b\n")
            entries.append(live["appenddirname"])
        elif live["appendonly"]:
            aof = os.path.join(new_dir, live["appendfilename"])  # Redis < 7: an AOF with an RDB preamble
            shutil.copyfile(target, aof)
            entries.append(live["appendfilename"])
    for name in entries:
        _own(os.path.join(new_dir, name), uid, gid)
    _fsync_dir(new_dir)
    return entries


def _own(path, uid, gid):
    """chown ``path`` (and what a directory holds) and fsync it, never through a symbolic link:
    the staged AOF directory was the redis account's during its check (one found there is
    refused: nothing has stopped yet)."""
    found = os.lstat(path)
    if stat.S_ISLNK(found.st_mode):
        raise CommandExecutionError(f"the staged backup holds a symbolic link, {path}: refused, nothing was changed")
    os.chown(path, uid, gid, follow_symlinks=False)
    if not stat.S_ISDIR(found.st_mode):
        _fsync_file(path)
        return
    for name in os.listdir(path):
        _own(os.path.join(path, name), uid, gid)
    _fsync_dir(path)


def _down():
    """True when no server answers on the deployment's port (one that refuses the password
    or is loading is up)."""
    client = _client(timeout=2)
    try:
        client.ping()
        return False
    except (redis.AuthenticationError, redis.BusyLoadingError):
        return False
    except redis.ResponseError as exc:
        return not str(exc).startswith(("NOAUTH", "WRONGPASS"))
    except redis.RedisError:
        return True
    finally:
        client.close()


def _wait_down(timeout):
    return _wait(_down, timeout, 0.1)


def _total_keys(client):
    """Keys over every database (INFO keyspace), not DBSIZE's database 0 alone."""
    return sum(int(stats.get("keys", 0)) for stats in client.info("keyspace").values())


def _loaded(client):
    """What the server loaded at its start, from its own loader's counters (INFO persistence,
    Redis >= 7.0, Valkey): ``{"keys", "expired"}`` over every database, or None (Redis 6.2)
    when the server does not say. Client writes after the load do not move these counters."""
    persistence = client.info("persistence")
    if "rdb_last_load_keys_loaded" not in persistence:
        return None
    return {"keys": int(persistence["rdb_last_load_keys_loaded"]),
            "expired": int(persistence.get("rdb_last_load_keys_expired") or 0)}


def _wait_up(timeout):
    """Wait until the server answers PING (loading is not yet up); return what it loaded at
    its start and its key count over every database."""
    last = []

    def up():
        client = _client(timeout=5)
        try:
            client.ping()
            return {"loaded": _loaded(client), "keys": _total_keys(client), "node_id": _node_id(client),
                    "cluster_state": _cluster_state(client)}
        except redis.RedisError as exc:
            last[:] = [exc]
            return None
        finally:
            client.close()

    state = _wait(up, timeout, 0.2)
    if state is None:
        reason = _problem(last[0], "reach Redis after the restart") if last else "Redis did not answer"
        raise CommandExecutionError(f"{reason} (waited {timeout:.0f}s)")
    return state


def _cluster_state(client):
    try:
        return client.execute_command("CLUSTER", "INFO").split("cluster_state:", 1)[1].split()[0]
    except (redis.RedisError, IndexError):
        return None


def _wait_cluster_ok(timeout):
    """A cluster node answers before it serves: masters wait for their peers (or ~2 s alone)."""
    def ok():
        client = _client(timeout=5)
        try:
            return _cluster_state(client) == "ok"
        finally:
            client.close()

    return "ok" if _wait(ok, timeout, 0.2) else "fail"


def _node_id(client):
    try:
        if int(client.info("cluster").get("cluster_enabled", 0)):
            return client.execute_command("CLUSTER", "MYID")
    except redis.RedisError:
        pass
    return None


def _service_call(name, service):
    try:
        ok = __salt__[f"service.{name}"](service)
    except Exception as exc:  # pylint: disable=broad-except
        raise CommandExecutionError(f"service.{name} {service} failed: {exc}") from None
    if ok is False:
        raise CommandExecutionError(f"service.{name} {service} failed")


def _journal_dir(journal_dir=None, create=True):
    """Where the restore journal lives: root's directory of Salt's Redis files (pillar
    ``redis:salt_config_dir``, default /etc/redis-salt), which the ``redis`` account cannot
    write; created root-only when missing (``create``)."""
    directory = os.path.abspath(journal_dir or _settings().get("salt_config_dir") or DEFAULT_SALT_CONFIG_DIR)
    if create:
        os.makedirs(directory, mode=0o750, exist_ok=True)
    return directory


class _Journal:
    """The restore journal: what is being replaced, where the backup's entries are staged and
    where the previous ones go; rewritten atomically (fsynced) at each step."""

    def __init__(self, directory, data=None):
        self.path = os.path.join(directory, JOURNAL)
        self.data = data

    def load(self):
        try:
            self.data = __utils__["redis_backup_swap.read_journal"](self.path)
        except (OSError, ValueError) as exc:
            raise CommandExecutionError(f"the restore journal {self.path} cannot be used: {exc}") from None
        return self.data

    def save(self, **changes):
        self.data.update(changes)
        __utils__["redis_backup_swap.write_journal"](self.path, self.data)

    def remove(self):
        __utils__["redis_backup_swap.remove_journal"](self.path)

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)


class _Lock:
    """One restore (or recovery) at a time on a node: an flock the kernel drops when the
    process dies, however it dies."""

    def __init__(self, directory):
        self.path = os.path.join(directory, LOCK)
        self.fd = None

    def __enter__(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _Busy(self.path) from None
        self.fd = fd
        return self

    def __exit__(self, *exc_info):
        os.close(self.fd)


class _Busy(CommandExecutionError):
    def __init__(self, path):
        super().__init__(f"another restore is running on this node (it holds {path}): nothing was changed")


def _data_entries(data_dir, kept_names):
    """The data directory's entries that a restore replaces (not the kept ones, nor a restore's
    own work area)."""
    return sorted(name for name in os.listdir(data_dir)
                  if name not in kept_names and not name.startswith(WORK_PREFIX))


def _work_area(data_dir):
    """A root-only directory on the data directory's filesystem (its parent, or the data
    directory itself when that is a mount point), with ``new/`` for the staged entries: placing
    them is then a rename."""
    base = os.path.dirname(data_dir)
    if not _same_filesystem(base, data_dir):
        base = data_dir
    work = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.path.basename(data_dir)}-", dir=base)
    os.mkdir(os.path.join(work, "new"), 0o700)
    _readable_dir(os.path.join(work, "new"))  # Redis's checkers read the staged files there, as redis
    return work


def _remove_stale_work_areas(data_dir, keep=None):
    """Work areas of restores killed before they wrote their journal (while staging): no journal
    points at them (the caller holds the restore lock, ``keep`` is a pending journal's)."""
    for base in {os.path.dirname(data_dir), data_dir}:
        prefix = f"{WORK_PREFIX}{os.path.basename(data_dir)}-"
        for name in os.listdir(base):
            path = os.path.join(base, name)
            if name.startswith(prefix) and path != keep and os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)


def _mask(service):
    """Keep systemd from starting Redis while its data directory changes (its ``Restart=``, a
    unit that wants it, an operator): a runtime mask, gone at reboot. True when masked here;
    False where Salt's service module has no mask (no systemd: nothing restarts Redis by
    itself there) or where the unit was already masked by someone else (left as it is)."""
    if "service.mask" not in __salt__:
        return False
    try:
        if "service.masked" in __salt__ and __salt__["service.masked"](service, runtime=True):
            return False
        result = __salt__["service.mask"](service, runtime=True)
    except Exception as exc:  # pylint: disable=broad-except
        raise CommandExecutionError(f"could not keep Redis from starting during the restore (service.mask "
                                    f"{service} runtime=True): {exc}") from None
    if result is False:
        raise CommandExecutionError(f"could not keep Redis from starting during the restore (service.mask {service} "
                                    "runtime=True failed)")
    return True


def _unmask(journal):
    if journal.get("masked"):
        __salt__["service.unmask"](journal["service"], runtime=True)
        journal.save(masked=False)


def _swap(journal, forward, replace_foreign=False):
    """Every entry of the journal to the data directory (``forward``) or back out of it:
    entries only the data directory has first, the one Redis loads last (and first back), so
    that a start at any moment loads either the previous data or the backup's. Back, with
    ``replace_foreign``, the previous entries return whatever the data directory holds (what
    a Redis started on the restored data wrote); without it, only the backup's entries leave.
    Returns ``{name: what was done}``."""
    settle = __utils__["redis_backup_swap.settle"]
    data_dir, new_dir, old_dir = journal["data_dir"], journal["new_dir"], journal["old_dir"]
    os.makedirs(old_dir, mode=0o700, exist_ok=True)
    entries = journal["entries"]
    aside = journal.get("aside")
    if aside is None:  # cut short between the stop and its record: Redis is down, list now
        names = {entry["name"] for entry in entries}
        aside = [name for name in _data_entries(data_dir, set(journal["kept"])) if name not in names]
        journal.save(aside=aside)
    steps = [(name, None) for name in aside]
    steps += [(entry["name"], entry["new"]) for entry in entries if not entry["loading"]]
    steps += [(entry["name"], entry["new"]) for entry in entries if entry["loading"]]
    if not forward:
        steps.reverse()
    done = {}
    for name, ident in steps:
        done[name] = settle(data_dir, new_dir, old_dir, name, ident, forward, replace_foreign)
        for directory in (data_dir, new_dir, old_dir):
            _fsync_dir(directory)
    return done


def _placed(journal):
    """Whether the entry Redis loads is the backup's."""
    loading = next(entry for entry in journal["entries"] if entry["loading"])
    return __utils__["redis_backup_swap.holds"](os.path.join(journal["data_dir"], loading["name"]), loading["new"])


def _finish(journal):
    """A restore done: the previous entries end up in the safety copy (copied when the safety
    copy lives on another filesystem), the work area and the journal go."""
    old_dir, safety = journal["old_dir"], journal["safety_copy"]
    if old_dir != safety and os.path.isdir(old_dir):
        parent = os.path.dirname(safety)
        partial = _partial_dir(parent, os.path.basename(safety))
        shutil.copytree(old_dir, partial, symlinks=True, dirs_exist_ok=True)
        for top, _, files in os.walk(partial):
            for name in files:
                if not os.path.islink(os.path.join(top, name)):
                    _fsync_file(os.path.join(top, name))
            _fsync_dir(top)
        os.chmod(partial, 0o700)
        os.rename(partial, safety)
        _fsync_dir(parent)
    shutil.rmtree(journal["work_dir"], ignore_errors=True)
    journal.remove()


def _abandon(journal):
    """A restore undone (every entry back): the staged entries go, and the journal. The safety
    copy goes when it holds nothing but copies of the kept files; else (a previous entry that
    could not go back because Redis made a new one meanwhile) it stays and its path is
    returned."""
    old_dir, kept = journal["old_dir"], set(journal["kept"])
    left = [name for name in (os.listdir(old_dir) if os.path.isdir(old_dir) else []) if name not in kept]
    if left and not old_dir.startswith(journal["work_dir"] + os.sep):
        shutil.rmtree(journal["work_dir"], ignore_errors=True)
        journal.remove()
        return old_dir
    if left:  # inside the work area (a safety copy on another filesystem): keep it beside
        keep = _free_safety_path(os.path.dirname(journal["safety_copy"]), journal["data_dir"])
        shutil.move(old_dir, keep)
        old_dir = keep
    shutil.rmtree(journal["work_dir"], ignore_errors=True)
    if not left and os.path.isdir(old_dir):
        shutil.rmtree(old_dir, ignore_errors=True)
    journal.remove()
    return old_dir if left else None


def _masked_and_down(journal, timeout):
    """Keep systemd from starting Redis (a mask failing is logged: stopping matters more),
    then stop it: None once it is down, else why not."""
    try:
        if not journal.get("masked"):
            journal.save(masked=_mask(journal["service"]))
    except CommandExecutionError as exc:
        log.warning("redis_backup: %s", exc)
    return _ensure_down(journal["service"], timeout)


def _undo(journal, timeout):
    """Put the previous data back (Redis stopped first, whatever a failed start left running,
    and kept from starting meanwhile); start it again unless the restore was asked not to.
    Returns what came of it. When that fails too, the journal stays for
    ``redis_backup.restore_recovered``."""
    service, old_dir = journal["service"], journal["old_dir"]
    problem = _masked_and_down(journal, timeout)
    if problem:
        return (f"The previous data was not put back, Redis does not stop ({problem}): it is in {old_dir}, the "
                f"restored data is in place; the restore journal {journal.path} stays for "
                "redis_backup.restore_recovered")
    try:
        journal.save(phase="rolling back")
        _swap(journal, forward=False, replace_foreign=True)  # Redis ran on the restored data: its files go
        _unmask(journal)
    except Exception as exc:  # pylint: disable=broad-except
        return (f"Putting the previous data back failed too ({type(exc).__name__}: {exc}): it is in {old_dir}; Redis "
                f"is left stopped; the restore journal {journal.path} stays for redis_backup.restore_recovered")
    left = _abandon(journal)
    if left:
        old_dir = f"{old_dir} (previous entries that could not go back stay in {left})"
    if not journal["start"]:
        return f"The previous data was put back from {old_dir}; Redis was not started (start=False)"
    try:
        _service_call("start", service)
        _wait_up(timeout)
    except CommandExecutionError as exc:
        return f"The previous data was put back from {old_dir}, but Redis does not answer after starting it: {exc}"
    return f"The previous data was put back from {old_dir} and Redis started again"


def _swap_in_and_start(journal, meta, timeout):
    """Put the staged backup in place (each step journaled), let systemd start Redis again,
    start it and check what it loaded: ``(state, warnings)``."""
    journal.save(phase="swapping")
    _swap(journal, forward=True)
    journal.save(phase="swapped")
    _unmask(journal)
    return _start_and_check(journal, meta, timeout)


def _start_and_check(journal, meta_counts, timeout):
    """Start Redis on the restored data (unless start=False) and check what it loaded; returns
    ``(state, warnings)``; raises when the restore did not take."""
    if not journal["start"]:
        return None, []
    _service_call("start", journal["service"])
    state = _wait_up(timeout)
    live = {"cluster_enabled": journal["cluster_enabled"], "node_id": journal["node_id"]}
    warnings = _check_restored(meta_counts, live, state, journal["expected"])
    if journal["cluster_enabled"] and state["cluster_state"] != "ok":
        state["cluster_state"] = _wait_cluster_ok(min(timeout, CLUSTER_OK_WAIT))
        if state["cluster_state"] != "ok":
            warnings.append(f"cluster_state is not ok {CLUSTER_OK_WAIT}s after the start: the other nodes "
                            "of the set may still be restoring or down (see redis_cluster.status)")
    return state, warnings


def _free_safety_path(parent, data_dir):
    stamp = f"{_now():%Y%m%d_%H%M%S}"
    safety = os.path.join(parent, f"{os.path.basename(data_dir)}_backup_{stamp}")
    suffix = 1
    while os.path.lexists(safety):
        suffix += 1
        safety = os.path.join(parent, f"{os.path.basename(data_dir)}_backup_{stamp}_{suffix}")
    return safety


def restore(backup, force=False, part_of_set=False, start=True, user=None, group=None, safety_dir=None,
            backup_dir=None, timeout=600, config_file=None, journal_dir=None):
    """
    Restore a backup (name or path, see ``redis_backup.list``) onto this node.

    First, without changing anything: the backup's files, checksums and the build's
    ``redis-check-rdb``/``redis-check-aof`` on the decompressed data, staged in a root-only
    work area on the data directory's filesystem; refusals (an AOF onto a server with
    appendonly no or older than Redis 7; in cluster mode a backup whose slots are not this
    node's; a replica, or a master with replicas, unless ``part_of_set=True`` because the
    whole set is being restored). Without ``force=True`` it stops there and reports what
    would be replaced.

    With ``force=True``, crash-safe: a restore journal (``restore-journal.json`` in pillar
    ``redis:salt_config_dir``, default /etc/redis-salt, root's) records, before anything
    stops, what is replaced, where the backup's entries are staged and where the safety copy
    goes; Redis is kept from starting (``service.mask runtime=True`` where systemd runs it,
    undone at the end) and stopped (``service.stop``, service from pillar ``redis:service``);
    the data directory is listed once Redis is down (its shutdown SAVE included); its entries
    (not the directory: it may be a mount point) are swapped one rename each with the staged
    ones, the one Redis loads last, so a start at any moment loads either the previous data
    or the backup's; the previous entries form the safety copy
    ``<datadir>_backup_YYYYmmdd_HHMMSS`` (in ``safety_dir`` when given, else next to the data
    directory), which also gets a copy of what stays in place (the node's cluster identity
    nodes.conf, configuration or logs living there). Then Redis is started (unless
    ``start=False``) and what its loader read at the start is compared with the backup
    (every database; Redis 6.2, which does not say, must hold a key when the backup does),
    never the keys clients write once it answers. When any step after the stop fails, Redis
    is stopped again, the previous entries are put back and Redis started again, and the
    error says so. Whatever kills the restore, the next ``redis_backup.restore_recovered``
    (or restore) completes it or puts the previous data back. Works with Redis down
    (settings then come from its configuration file, ``config_file``).

    Returns ``{"result": None, "changed": False, "backup", "type", "data_dir",
    "would_replace": [{"name", "size"}], "would_keep": [...], "would_create": [...], "comment"}``
    without force (and ``pending_recovery`` when a restore was cut short); ``{"result": True,
    "changed": True, "backup", "type", "data_dir", "safety_copy", "restored": [...], "kept":
    [...], "keys" (every database), "loaded_keys" (what the loader read; None on Redis 6.2),
    "backup_keys", "started", "cluster_state", "warnings", "comment"}`` after a restore
    (cluster mode: it waits up to 15 s for ``cluster_state:ok`` and warns when the rest of the
    set is not back yet), with ``recovered`` when a restore cut short was dealt with first.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_backup.restore backup=rdb_backup_20251027_120000
        salt server1 redis_backup.restore backup=rdb_backup_20251027_120000 force=True
    """
    _require_redis_role()
    path, meta = _resolve(backup, backup_dir)
    uid, gid = _account(user, group)
    timeout = float(timeout)
    directory = _journal_dir(journal_dir)
    with _Lock(directory):
        pending, recovered = _pending_restore(directory, timeout, recover=force)
        ret = _restore_locked(path, meta, force, part_of_set, start, uid, gid, safety_dir, timeout, config_file,
                              directory, None if recovered else pending.get("work_dir") if pending.data else None)
    if recovered:
        ret["recovered"] = recovered
    elif pending.data:
        ret["pending_recovery"] = _journal_summary(pending)
        ret["comment"] += (f"; a restore of {pending['backup']} was cut short on this node: force=True (or "
                           "redis_backup.restore_recovered) completes it or puts its previous data back first")
    return ret


def _pending_restore(directory, timeout, recover):
    """``(journal, recovery report or None)``: the restore cut short on this node, if any (its
    journal loaded), completed or undone first when ``recover``; raises when that could not be
    done. Called with the restore lock held."""
    pending = _Journal(directory)
    if not os.path.lexists(pending.path):
        return pending, None
    pending.load()
    if not recover:
        return pending, None
    recovered = _recover(pending, timeout)
    if not recovered["result"]:
        raise CommandExecutionError(f"a restore cut short could not be dealt with first: {recovered['comment']}")
    return pending, recovered


def _restore_locked(path, meta, force, part_of_set, start, uid, gid, safety_dir, timeout, config_file, directory,
                    pending_work=None):
    client = _client()
    try:
        live = _live(client)
    except redis.RedisError as exc:
        if __utils__["redis_common.failure"](exc) not in ("refused", "loading"):
            raise CommandExecutionError(_problem(exc, "read the server's settings before a restore")) from None
        live = _offline(config_file or _name("config_file"),
                        _executable(meta.get("server_executable")), (uid, gid))
    finally:
        client.close()
    data_dir = live["dir"]
    if not os.path.isdir(data_dir):
        raise CommandExecutionError(f"the data directory {data_dir} does not exist")
    reasons = _refusals(meta, live, bool(part_of_set))
    if reasons:
        raise CommandExecutionError(f"restore of {meta['name']} refused: {'; '.join(reasons)}")
    executable = _executable(live["executable"] if live["running"] else meta.get("server_executable"))
    kept_names = _kept_entries(live)
    current = _data_entries(data_dir, kept_names)
    replace = [{"name": name, "size": _entry_size(os.path.join(data_dir, name))} for name in current]
    parent = os.path.abspath(safety_dir) if safety_dir else os.path.dirname(data_dir)
    if os.path.realpath(parent).startswith(data_dir + os.sep) or os.path.realpath(parent) == data_dir:
        raise CommandExecutionError(f"the safety copy cannot live inside the data directory {data_dir}")
    raw = int(meta.get("raw_size") or 0)
    copies = 2 if live["appendonly"] and meta["type"] == "rdb" and not live["appenddirname"] else 1
    _require_space(data_dir, raw * copies, "the backup staged on the data directory's filesystem")
    _makedirs(parent)
    if not _same_filesystem(parent, data_dir):
        _require_space(parent, sum(item["size"] for item in replace), "the safety copy of the current data")
    _remove_stale_work_areas(data_dir, pending_work)
    work = _work_area(data_dir)
    handed_over = False
    try:
        new_dir = os.path.join(work, "new")
        checked = _unpack(path, meta, new_dir)
        facts = _check_unpacked(meta, checked, executable, timeout, (uid, gid))
        if not force:
            return {
                "result": None, "changed": False, "backup": meta["name"], "type": meta["type"],
                "data_dir": data_dir, "would_replace": replace, "would_keep": sorted(kept_names & set(
                    os.listdir(data_dir))), "would_create": _target_names(meta, live),
                "comment": f"backup {meta['name']} checked; nothing changed. With force=True, Redis "
                           f"({_service()}) is stopped and the {len(replace)} entries of {data_dir} listed in "
                           f"would_replace move to a safety copy in {parent}",
            }
        expected = _expected_load(meta, facts, new_dir, executable, timeout, (uid, gid))
        entries = _prepare(meta, live, new_dir, uid, gid)
        handed_over = True  # from here on the journal says what becomes of the work area
        return _restore_forced(meta, path, live, work, entries, parent, kept_names, bool(start), timeout, expected,
                               directory)
    finally:
        if not handed_over:
            shutil.rmtree(work, ignore_errors=True)


def _restore_forced(meta, path, live, work, entries, parent, kept_names, start, timeout, expected, directory):
    data_dir, service = live["dir"], _service()
    new_dir = os.path.join(work, "new")
    safety = _free_safety_path(parent, data_dir)
    old_dir = safety if _same_filesystem(parent, data_dir) else os.path.join(work, "old")
    identity = __utils__["redis_backup_swap.identity"]
    loading = _loading_entry(live)
    journal = _Journal(directory, {
        "pid": os.getpid(), "started_at": _iso(_now()), "minion": _minion(), "backup": meta["name"],
        "backup_path": path, "type": meta["type"], "data_dir": data_dir, "work_dir": work, "new_dir": new_dir,
        "old_dir": old_dir, "safety_copy": safety, "service": service, "start": start,
        "was_running": live["running"], "masked": False, "kept": sorted(kept_names), "aside": None,
        "entries": [{"name": name, "new": identity(os.path.join(new_dir, name)), "loading": name == loading}
                    for name in entries],
        "expected": expected, "backup_keys": meta.get("keys"), "keys_with_ttl": meta.get("keys_with_ttl"),
        "cluster_enabled": live["cluster_enabled"], "node_id": live["node_id"], "phase": "staged",
    })
    if not any(entry["loading"] for entry in journal["entries"]):
        journal.data["entries"][-1]["loading"] = True  # cannot happen: _prepare makes what the server loads
    journal.save()
    event = {"backup": meta["name"], "type": meta["type"], "data_dir": data_dir, "minion": _minion()}
    _fire("started", event, kind="restore")
    try:
        journal.save(masked=_mask(service))
        problem = _ensure_down(service, timeout)
        if problem:
            raise CommandExecutionError(problem)
    except CommandExecutionError as exc:
        try:
            _unmask(journal)
        finally:
            _abandon(journal)
        error = f"{exc}: nothing was changed"
        _fire("failed", dict(event, error=error), kind="restore")
        raise CommandExecutionError(error) from None
    state, warnings = None, []
    try:
        # Listed now that Redis is down: with appendonly no its shutdown SAVE may just have
        # written the dbfilename (every acknowledged write), which the safety copy must hold.
        names = {entry["name"] for entry in journal["entries"]}
        current = _data_entries(data_dir, kept_names)
        journal.save(phase="stopped", aside=[name for name in current if name not in names],
                     replaced=[{"name": name, "size": _entry_size(os.path.join(data_dir, name))} for name in current])
        os.makedirs(old_dir, mode=0o700, exist_ok=True)
        for name in sorted(kept_names & set(os.listdir(data_dir))):
            if name != "lost+found" and os.path.isfile(os.path.join(data_dir, name)):
                shutil.copy2(os.path.join(data_dir, name), os.path.join(old_dir, name))  # a copy for reference
        state, warnings = _swap_in_and_start(journal, meta, timeout)
    except Exception as exc:  # pylint: disable=broad-except
        reason = str(exc) if isinstance(exc, CommandExecutionError) else f"{type(exc).__name__}: {exc}"
        outcome = _undo(journal, timeout)
        error = f"restore of {meta['name']} failed: {reason}. {outcome}"
        _fire("failed", dict(event, error=error, safety_copy=safety), kind="restore")
        raise CommandExecutionError(error) from None
    _finish(journal)
    started = state is not None
    ret = {
        "result": True, "changed": True, "backup": meta["name"], "type": meta["type"], "data_dir": data_dir,
        "safety_copy": safety, "restored": list(entries),
        "kept": sorted(kept_names & set(os.listdir(data_dir))), "started": started,
        "keys": state["keys"] if state else None, "backup_keys": meta.get("keys"), "warnings": warnings,
        "loaded_keys": state["loaded"]["keys"] if state and state["loaded"] else None,
        "expected_load": expected,
        "cluster_state": state.get("cluster_state") if state and live["cluster_enabled"] else None,
        "comment": f"backup {meta['name']} restored into {data_dir}; the previous data is in {safety}"
                   + ("" if started else "; Redis was not started (start=False)"),
    }
    _fire("finished", dict(event, safety_copy=safety, keys=ret["keys"]), kind="restore")
    return ret


def _journal_summary(journal):
    return {key: journal.get(key) for key in ("backup", "backup_path", "data_dir", "safety_copy", "started_at",
                                              "phase", "pid")}


def _previous_left_out(journal):
    """Where the previous entry Redis loads still is when it is not in the data directory
    although a Redis runs there (it started, at a boot, in the moment of a two-step swap
    without that entry, and made one of its own: it serves neither the previous data nor
    the backup's), else None."""
    loading = next(entry for entry in journal["entries"] if entry["loading"])
    data = os.path.join(journal["data_dir"], loading["name"])
    if not os.path.lexists(data) or __utils__["redis_backup_swap.holds"](data, loading["new"]):
        return None
    new = os.path.join(journal["new_dir"], loading["name"])
    if os.path.lexists(new) and not __utils__["redis_backup_swap.holds"](new, loading["new"]):
        return new  # where an exchange left it
    old = os.path.join(journal["old_dir"], loading["name"])
    return old if os.path.lexists(old) else None


def _put_previous_back_under(journal, summary, event, timeout):
    """The running Redis serves a dataset of its own (see ``_previous_left_out``): it is
    stopped, what it made is kept in the safety copy (``NAME.since-boot``: writes it
    acknowledged are there), the previous entry goes back and Redis starts on it."""
    loading = next(entry for entry in journal["entries"] if entry["loading"])
    service = journal["service"]
    problem = _masked_and_down(journal, timeout)
    if problem:
        result = {"result": False, "changed": False, "outcome": "failed", **summary,
                  "comment": f"the restore of {journal['backup']} had been cut short and Redis started since without "
                             f"the entry it loads ({loading['name']}): it serves neither the previous data nor the "
                             f"backup's, and does not stop ({problem}); the previous entry is in "
                             f"{_previous_left_out(journal)}, the journal {journal.path} stays"}
        _fire("recovered", dict(event, outcome="failed", error=result["comment"]), kind="restore")
        return result
    made = os.path.join(journal["data_dir"], loading["name"])
    kept = __utils__["redis_backup_swap.free"](os.path.join(journal["old_dir"], f"{loading['name']}.since-boot"))
    os.rename(made, kept)
    _fsync_dir(journal["data_dir"])
    _fsync_dir(journal["old_dir"])
    _swap(journal, forward=False)
    _unmask(journal)
    left = _abandon(journal)
    kept = os.path.join(left, os.path.basename(kept)) if left else kept
    state = None
    if journal["start"]:
        _service_call("start", service)
        state = _wait_up(timeout)
    comment = (f"the restore of {journal['backup']} had been cut short ({journal['phase']}) and Redis started since "
               f"without the entry it loads ({loading['name']}), on a dataset of its own: it was stopped, the "
               f"previous data put back and Redis started on it; the restore was rolled back (not done). What that "
               f"Redis wrote is kept in {kept}")
    result = {"result": True, "changed": True, "outcome": "rolled back", "comment": comment,
              "warnings": [f"writes acknowledged between the boot and this recovery are not served: they are in "
                           f"{kept}"],
              "keys": state["keys"] if state else None,
              "loaded_keys": state["loaded"]["keys"] if state and state["loaded"] else None, **summary}
    _fire("recovered", dict(event, outcome="rolled back"), kind="restore")
    return result


def _recover(journal, timeout):
    """Complete a restore cut short, or put its previous data back; say which. Redis running
    means something started it since (a boot: the runtime mask is gone then): the data it
    loaded stays (the backup's when the entry Redis loads had been swapped, else the previous
    data), so that no write it acknowledged is thrown away. Redis down: the restore is
    completed (the staged entries were checked before anything stopped) and Redis started as
    the restore would have; if it does not take, the previous data goes back."""
    summary = _journal_summary(journal)
    event = dict(summary, minion=_minion())
    meta_counts = {"keys": journal.get("backup_keys"), "keys_with_ttl": journal.get("keys_with_ttl")}
    warnings, state = [], None
    if not _down():
        if _placed(journal):
            _swap(journal, forward=True)
            _unmask(journal)
            state = _wait_up(timeout)
            live = {"cluster_enabled": journal["cluster_enabled"], "node_id": journal["node_id"]}
            try:
                warnings = _check_restored(meta_counts, live, state, journal["expected"])
            except CommandExecutionError as exc:
                warnings = [f"{exc} (Redis was started by something else since; it is left serving)"]
            _finish(journal)
            outcome = "completed"
            comment = (f"the restore of {journal['backup']} had been cut short after its data was in place and Redis "
                       f"was started since: completed; the previous data is in {journal['safety_copy']}")
        else:
            _swap(journal, forward=False)
            if _previous_left_out(journal):
                return _put_previous_back_under(journal, summary, event, timeout)
            _unmask(journal)
            left = _abandon(journal)
            outcome = "rolled back"
            comment = (f"the restore of {journal['backup']} had been cut short ({journal['phase']}) before its data "
                       "was in place, and Redis runs on the previous data: that stays, the restore was rolled back "
                       "(not done)"
                       + (f"; previous entries Redis has replaced since are in {left}" if left else ""))
    elif journal["phase"] == "rolling back":  # a failed restore's rollback was cut short: finish it
        undone = _undo(journal, timeout)
        put_back = not os.path.lexists(journal.path)
        result = {"result": put_back, "changed": True, "outcome": "rolled back" if put_back else "failed",
                  "comment": f"the restore of {journal['backup']} had failed and its rollback was cut short. {undone}",
                  **summary}
        _fire("recovered", dict(event, outcome=result["outcome"]), kind="restore")
        return result
    else:
        try:
            if not journal.get("masked"):
                journal.save(masked=_mask(journal["service"]))
            state, warnings = _swap_in_and_start(journal, meta_counts, timeout)
        except Exception as exc:  # pylint: disable=broad-except
            reason = str(exc) if isinstance(exc, CommandExecutionError) else f"{type(exc).__name__}: {exc}"
            undone = _undo(journal, timeout)
            put_back = not os.path.lexists(journal.path)
            result = {"result": put_back, "changed": True, "outcome": "rolled back" if put_back else "failed",
                      "comment": f"the restore of {journal['backup']} had been cut short; completing it failed "
                                 f"({reason}). {undone}", **summary}
            _fire("recovered", dict(event, outcome=result["outcome"], error=result["comment"]), kind="restore")
            return result
        _finish(journal)
        outcome = "completed"
        comment = (f"the restore of {journal['backup']} had been cut short ({summary['phase']}) with Redis down: "
                   f"completed; the previous data is in {journal['safety_copy']}"
                   + ("" if state else "; Redis was not started (start=False)"))
    result = {"result": True, "changed": True, "outcome": outcome, "comment": comment, "warnings": warnings,
              "keys": state["keys"] if state else None,
              "loaded_keys": state["loaded"]["keys"] if state and state["loaded"] else None, **summary}
    _fire("recovered", dict(event, outcome=outcome), kind="restore")
    return result


def restore_recovered(journal_dir=None, timeout=600):
    """
    Finish what a restore cut short left (``salt-run``'s job killed, a SIGTERM, a power cut):
    when this node has a restore journal (``restore-journal.json`` in pillar
    ``redis:salt_config_dir``, default /etc/redis-salt) and no restore is running, either
    complete that restore or put the previous data back, and say which (``outcome``:
    ``completed`` or ``rolled back``; ``none`` when there was nothing to do, ``in progress``
    when a restore is running now, ``failed`` when neither worked: the journal then stays).

    Redis down: the restore is completed (its staged data was checked before anything
    stopped) and Redis started and checked as the restore would have; if that fails, the
    previous data goes back. Redis running (started by something else meanwhile, e.g. at
    boot): what it serves stays, unless it started without the entry it loads (it then
    serves a dataset of its own: it is stopped, what it wrote kept in the safety copy as
    ``NAME.since-boot``, the previous data put back and Redis started again). The state
    ``redis_backup.restore_recovered`` calls this on every ``state.apply redis`` before
    Redis is started.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_backup.restore_recovered
    """
    directory = _journal_dir(journal_dir)
    journal = _Journal(directory)
    try:
        with _Lock(directory):
            if not os.path.lexists(journal.path):
                return {"result": True, "changed": False, "outcome": "none",
                        "comment": "no restore was cut short on this node"}
            journal.load()
            return _recover(journal, float(timeout))
    except _Busy:
        return {"result": False, "changed": False, "outcome": "in progress",
                "comment": "a restore is running on this node: nothing done (Redis must not be started meanwhile)"}


def restore_pending(journal_dir=None):
    """
    What ``redis_backup.restore_recovered`` would deal with, changing nothing: ``{"pending":
    bool (a restore journal is there), "running": bool (a restore runs now), ...the journal's
    backup, data_dir, safety_copy, phase}``.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_backup.restore_pending
    """
    directory = _journal_dir(journal_dir, create=False)
    journal = _Journal(directory)
    running = False
    if os.path.lexists(os.path.join(directory, LOCK)):  # a running restore has made it: never made here
        try:
            with _Lock(directory):
                pass
        except _Busy:
            running = True
    if not os.path.lexists(journal.path):
        return {"pending": False, "running": running}
    journal.load()
    return dict(_journal_summary(journal), pending=True, running=running)


def _expected_load(meta, facts, staging, executable, timeout, account):
    """How many keys the server's loader must count at the start (loaded + expired at load,
    every database) for this backup: an RDB's every key (redis-check-rdb on the staged file);
    an AOF's base keys when the base is an RDB (Redis counts no command of the incr files).
    ``{"keys", "what"}``, or None when that cannot be told."""
    if meta["type"] == "rdb":
        return {"keys": facts.get("keys"), "what": "the RDB file"} if facts.get("keys") is not None else None
    base = next((item for item in meta["files"] if item["kind"] == "base"), None)
    if base is None:
        return None
    path = os.path.join(staging, meta.get("appenddirname") or "appendonlydir", base["source"])
    with _files("open_read")(path) as handle:
        if handle.read(5) != b"REDIS":
            return None  # a base in AOF format (aof-use-rdb-preamble no): no loader counter covers it
    return {"keys": _check_rdb(executable, path, timeout, account)["keys"], "what": "the AOF's base file"}


def _check_restored(meta, live, state, expected=None):
    """What the server loaded at its start, and its identity: raises when the restore did not take.

    Redis >= 7.0 and Valkey count what their loader read (``rdb_last_load_keys_loaded`` and
    ``_expired``, every database): that must be the backup's count exactly, whatever clients
    write once the server answers. Redis 6.2 has no such counter: there the server must hold
    at least one key (over every database) when the backup has live ones, and more keys than
    the backup is not an error (clients may have written them)."""
    with_ttl = int(meta.get("keys_with_ttl") or 0)
    keys, loaded, warnings = state["keys"], state.get("loaded"), []
    if loaded is not None and expected and expected.get("keys") is not None:
        counted = loaded["keys"] + loaded["expired"]
        if counted != expected["keys"]:
            raise CommandExecutionError(
                f"Redis loaded {loaded['keys']} keys at its start ({loaded['expired']} more already expired), "
                f"{expected['what']} of the backup holds {expected['keys']}: it did not load the restored data")
    elif meta.get("keys") is not None:
        expected_keys = int(meta["keys"])
        if expected_keys > with_ttl and keys == 0:
            raise CommandExecutionError(f"Redis holds no key after the start (every database); the backup has "
                                        f"{expected_keys}")
        if keys < expected_keys - with_ttl:
            warnings.append(f"{keys} keys (every database) after the start, the backup holds {expected_keys} of "
                            f"which only {with_ttl} have a TTL: others were evicted (maxmemory) or deleted since "
                            "the start")
    if live["cluster_enabled"] and live["node_id"] and state["node_id"] != live["node_id"]:
        raise CommandExecutionError(f"the node came back as {state['node_id']}, not {live['node_id']}")
    return warnings


def _ensure_down(service, timeout):
    """Stop Redis and wait until it no longer answers, whatever the start before said: a start
    reported failed may still have left it running (systemd's Restart= brings it back). None
    when it is down, else why not."""
    problem = None
    try:
        _service_call("stop", service)
    except CommandExecutionError as exc:
        problem = str(exc)
    if _wait_down(min(timeout, 120)):
        return None
    return problem or f"Redis still answers after service.stop {service}"


def undo_restore(safety_copy, part_of_set=False, start=True, user=None, group=None, timeout=600,
                 config_file=None, journal_dir=None):
    """
    Put back the data a restore of this node replaced: the entries of its safety copy
    (``safety_copy``, the path ``restore`` returned). ``salt-run redis_backup.restore`` calls
    it on every master that did restore when another master of the set failed, so that the
    deployment is never left at mixed times.

    The safety copy is copied (it stays as it is), staged on the data directory's filesystem
    and swapped in with the same crash-safe journal as ``restore``; what it replaces (the
    restored backup's data) goes to a new safety copy, so nothing is lost either way. What
    stays in place in ``restore`` stays in place here (the node's cluster identity
    nodes.conf, configuration, logs). Only a safety copy of this node's data directory, made
    by root, is accepted; the refusals of ``restore`` apply (``part_of_set``).

    Returns ``{"result": True, "changed": True, "restored_from", "safety_copy" (the new one),
    "restored", "keys", "started", "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_backup.undo_restore safety_copy=/var/lib/redis_backup_20251027_120000
    """
    _require_redis_role()
    uid, gid = _account(user, group)
    timeout = float(timeout)
    directory = _journal_dir(journal_dir)
    with _Lock(directory):
        _, recovered = _pending_restore(directory, timeout, recover=True)
        ret = _undo_locked(str(safety_copy), bool(part_of_set), bool(start), uid, gid, timeout, config_file,
                           directory)
    if recovered:
        ret["recovered"] = recovered
    return ret


def _safety_copy_entries(safety_copy, data_dir, kept_names):
    """The entries of ``safety_copy`` that go back into ``data_dir``, after checking that it is
    what a restore of this data directory left: a real directory named after it, next to it
    (or wherever ``safety_dir`` put it), made by root, holding no symbolic link at its top."""
    path = os.path.abspath(safety_copy)
    pattern = re.compile(rf"^{re.escape(os.path.basename(data_dir))}_backup_\d{{8}}_\d{{6}}(?:_\d+)?$")
    if not pattern.match(os.path.basename(path)):
        raise SaltInvocationError(f"{safety_copy} is not a safety copy of {data_dir} (expected "
                                  f"{os.path.basename(data_dir)}_backup_YYYYmmdd_HHMMSS)")
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        raise CommandExecutionError(f"the safety copy {path} does not exist") from None
    if os.path.realpath(path) != path or not stat.S_ISDIR(found.st_mode) or found.st_uid != 0:
        raise CommandExecutionError(f"{path} is not a directory root made (a symbolic link, or another "
                                    "account's): refused, nothing was changed")
    entries = sorted(name for name in os.listdir(path) if name not in kept_names)
    for name in entries:
        if stat.S_ISLNK(os.lstat(os.path.join(path, name)).st_mode):
            raise CommandExecutionError(f"the safety copy holds a symbolic link, {name}: refused, nothing was changed")
    if not entries:
        raise CommandExecutionError(f"the safety copy {path} holds no data entry: refused, nothing was changed")
    return path, entries


def _undo_locked(safety_copy, part_of_set, start, uid, gid, timeout, config_file, directory):
    client = _client()
    try:
        live = _live(client)
    except redis.RedisError as exc:
        if __utils__["redis_common.failure"](exc) not in ("refused", "loading"):
            raise CommandExecutionError(_problem(exc, "read the server's settings before an undo")) from None
        live = _offline(config_file or _name("config_file"),
                        _executable(None), (uid, gid))
    finally:
        client.close()
    data_dir = live["dir"]
    kept_names = _kept_entries(live)
    path, entries = _safety_copy_entries(safety_copy, data_dir, kept_names)
    name = f"the safety copy {os.path.basename(path)}"
    meta = {"name": name, "type": "safety-copy", "cluster_enabled": live["cluster_enabled"],
            "slots": live["slots"], "keys": None, "keys_with_ttl": None}
    reasons = _refusals(meta, live, part_of_set)
    if reasons:
        raise CommandExecutionError(f"undo from {name} refused: {'; '.join(reasons)}")
    _require_space(data_dir, sum(_entry_size(os.path.join(path, entry)) for entry in entries),
                   "the safety copy staged on the data directory's filesystem")
    work = _work_area(data_dir)
    handed_over = False
    try:
        new_dir = os.path.join(work, "new")
        for entry in entries:
            source, target = os.path.join(path, entry), os.path.join(new_dir, entry)
            if os.path.isdir(source):
                shutil.copytree(source, target, symlinks=True)
            else:
                shutil.copy2(source, target, follow_symlinks=False)
            _own(target, uid, gid)
        _fsync_dir(new_dir)
        handed_over = True  # from here on the journal says what becomes of the work area
        ret = _restore_forced(meta, path, live, work, entries, os.path.dirname(path), kept_names, start, timeout,
                              None, directory)
    finally:
        if not handed_over:
            shutil.rmtree(work, ignore_errors=True)
    ret.update(restored_from=path, comment=f"{name} put back into {data_dir}; the data it replaced is in "
                                           f"{ret['safety_copy']}" + ("" if ret["started"] else
                                                                      "; Redis was not started (start=False)"))
    return ret
