"""
What checks a backup's data with Redis's own code (``redis_backup.create``/``verify``/
``restore``): ``redis-check-rdb``/``redis-check-aof`` and a throwaway redis-server that loads
the unpacked backup and counts its keys per type.

That code parses data nobody vouches for, so it never runs as root: each child drops to the
``redis`` account (pillar ``redis:user``/``redis:group``, default ``redis``: ``setgroups([])``,
``setgid``, ``setuid``) after root has made it ``/proc/self/oom_score_adj`` 1000 (the first
process the OOM killer takes, never the node's Redis) and changed into its working directory
(so the account needs no way through the directories above it). The server reads its
configuration from stdin (no file, no path to open), logs to a pipe root reads, listens on a
Unix socket only (in a directory of its own under the system's temporary directory) and gets
``maxmemory`` (with ``noeviction``: a key is never evicted from what is counted). Redis loads
a whole RDB or AOF whatever ``maxmemory`` says: the bound stops writes and buffers growing
afterwards; ``oom_score_adj`` is what keeps the node's Redis safe from the OOM killer.

Modules reach it as ``__utils__["redis_backup_throwaway.<name>"]``.
"""

import grp
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading

from salt.exceptions import CommandExecutionError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

__virtualname__ = "redis_backup_throwaway"

OOM_SCORE_ADJ = 1000
MAXMEMORY_FACTOR = 1.5
MAXMEMORY_SLACK = 64 << 20
# used_memory is unknown for a backup taken before it was recorded: about twice its raw size.
RAW_TO_MEMORY = 2
# Counts the keys of the selected database per type, inside the throwaway server (nobody
# else talks to it, so one blocking script is the cheapest way).
COUNT_SCRIPT = """
local counts = {}
local cursor = "0"
repeat
  local reply = redis.call("SCAN", cursor, "COUNT", 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    local kind = redis.call("TYPE", key)["ok"]
    counts[kind] = (counts[kind] or 0) + 1
  end
until cursor == "0"
local flat = {}
for kind, n in pairs(counts) do
  table.insert(flat, kind)
  table.insert(flat, n)
end
return flat
"""
_PRCTL = []


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_backup_throwaway: the redis Python library (redis-py) is not installed")
    return __virtualname__


def account(user="redis", group="redis"):
    """``(uid, gid)`` of the account Redis runs as, which the checks run as and restored files
    belong to; refused (nothing checked or restored, nothing run as root instead) when this
    host has no such user or group."""
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        raise CommandExecutionError(
            f"user {user} or group {group} (pillar redis:user/redis:group) does not exist on this host: refused, "
            "nothing was checked or changed (the checks never run as root)") from None


def trusted_executable(candidate, default):
    """The server binary whose checkers read a backup: ``candidate`` (what a backup's metadata
    or the running server names) when it is an absolute path to a regular, executable file
    that root owns and nobody else may change, in such a directory; else ``default``."""
    if not candidate or not os.path.isabs(str(candidate)):
        return default
    try:
        found, parent = os.stat(candidate), os.stat(os.path.dirname(os.path.realpath(candidate)))
    except OSError:
        return default
    for item in (found, parent):
        if item.st_uid != 0 or item.st_mode & 0o022:
            return default
    if not stat.S_ISREG(found.st_mode) or not found.st_mode & 0o111:
        return default
    return str(candidate)


def _prctl():
    if not _PRCTL:
        try:
            import ctypes  # pylint: disable=import-outside-toplevel

            _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
        except (OSError, AttributeError):
            _PRCTL.append(None)
    return _PRCTL[0]


def demote(uid, gid):
    """The ``preexec_fn`` of a child that runs Redis's code on a backup: as root still (the
    working directory is already entered), ``oom_score_adj`` 1000 (after the user change the
    process's /proc files are root's: too late), then ``setgroups([])``, ``setgid``,
    ``setuid``, then SIGTERM when the parent dies (the user change clears that). Everything
    it calls is loaded before the fork."""
    prctl = _prctl()
    value = str(OOM_SCORE_ADJ).encode()

    def child():
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, value)
        finally:
            os.close(fd)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return child


def sanitized(text, limit=5):
    """The problem lines of a Redis tool's output, with quoted strings (key names) hidden."""
    lines = [
        re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", line.strip())
        for line in str(text).splitlines()
        if re.search(r"error|invalid|not valid|mismatch|unexpected|can't|cannot|wrong|bad|fail|expected",
                     line, re.IGNORECASE)
    ]
    return "; ".join(lines[-limit:]) or "no detail"


def run_check(executable, name, target, timeout, uid, gid):
    """``name`` (``redis-check-rdb``/``redis-check-aof``) of the build ``executable`` (the
    server binary runs as that checker when called by that name) on ``target``, as
    ``uid``:``gid`` from inside ``target``'s directory. ``(exit code, output)``."""
    try:
        proc = subprocess.run(
            [name, os.path.basename(target)], executable=executable, cwd=os.path.dirname(target) or ".",
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False,
            preexec_fn=demote(uid, gid),
        )
    except subprocess.TimeoutExpired:
        raise CommandExecutionError(f"{name} did not finish within {timeout}s") from None
    except subprocess.SubprocessError as exc:
        raise CommandExecutionError(f"{name} could not be started as uid {uid}: {exc}") from None
    return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


class StreamCheck:
    """``name`` (``redis-check-rdb``) of the build ``executable`` reading its standard input,
    as ``uid``:``gid`` (``demote``), while the caller writes the data to ``stdin``: the check
    runs on the bytes of a copy as they pass, with no file made for it. The pipe's read end
    is given to ``uid`` (the checker opens it again by ``/dev/stdin``, a path it may not open
    as root's); its output goes to a file root reads back. Killed after ``timeout`` seconds
    (its input then ends early: a failure, never a pass). ``result()``: ``(exit code,
    output)`` once the input is closed; ``kill()`` ends it early."""

    def __init__(self, executable, name, timeout, uid, gid, cwd="/"):
        self.name, self.timeout = name, timeout
        self.output = tempfile.TemporaryFile()
        read_end, write_end = os.pipe()
        try:
            os.fchown(read_end, uid, gid)
            try:
                self.proc = subprocess.Popen(
                    [name, "/dev/stdin"], executable=executable, cwd=cwd, stdin=read_end, stdout=self.output,
                    stderr=subprocess.STDOUT, preexec_fn=demote(uid, gid),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise CommandExecutionError(f"{name} could not be started as uid {uid}: {exc}") from None
        except BaseException:
            os.close(write_end)
            self.output.close()
            raise
        finally:
            os.close(read_end)
        self.stdin = os.fdopen(write_end, "wb")
        self.timed_out = False
        self.timer = threading.Timer(timeout, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self):
        if self.proc.poll() is None:
            self.timed_out = True
            self.proc.kill()

    def kill(self):
        """End it early (the copy feeding it failed) and forget its output."""
        self.timer.cancel()
        for step in (self.proc.kill, self.proc.wait, self.output.close):
            try:
                step()
            except OSError:
                pass

    def result(self):
        self.proc.wait()  # bounded: the timer kills it after ``timeout``
        self.timer.cancel()
        with self.output:
            self.output.seek(0)
            text = self.output.read().decode(errors="replace")
        if self.timed_out:
            raise CommandExecutionError(f"{self.name} did not finish within {self.timeout}s")
        return self.proc.returncode, text


def stream_check(executable, name, timeout, uid, gid):
    """A ``StreamCheck`` started: write the data to its ``stdin``, close it, ask ``result()``."""
    return StreamCheck(executable, name, timeout, uid, gid)


def server_version(executable, uid, gid):
    """``(server, version)`` as ``executable --version`` reports them (run as ``uid``:``gid``):
    ``Redis server v=7.0.15 ...`` or ``Valkey server v=8.1.1 ...``; ``(None, None)`` when
    it says neither."""
    try:
        output = subprocess.run([executable, "--version"], capture_output=True, timeout=30, check=False, cwd="/",
                                stdin=subprocess.DEVNULL, preexec_fn=demote(uid, gid)).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    found = re.search(rb"^(\w+) server v=(\d+\.\d+\.\d+)", output)
    return (found.group(1).decode().lower(), found.group(2).decode()) if found else (None, None)


def maxmemory_for(meta):
    """The throwaway server's ``maxmemory``: the memory the dataset used when it was backed up
    (``used_memory`` in the metadata; about twice its raw size for an older backup) x 1.5,
    plus 64 MiB."""
    used = int(meta.get("used_memory") or 0) or int(meta.get("raw_size") or 0) * RAW_TO_MEMORY
    return int(used * MAXMEMORY_FACTOR) + MAXMEMORY_SLACK


def quote(value):
    """``value`` as a double-quoted argument of a Redis configuration file."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def hand_over(directory, uid, gid):
    """Give ``directory`` and what it holds (made by root a moment ago, never writable by
    anyone else: nothing planted) to ``uid``:``gid``, for a server that writes there. Root
    follows no path in it afterwards (only ``shutil.rmtree``, which is descriptor-based)."""
    for top, dirs, files in os.walk(directory):
        for name in dirs + files:
            os.chown(os.path.join(top, name), uid, gid, follow_symlinks=False)
    os.chown(directory, uid, gid, follow_symlinks=False)


class Throwaway:
    """A redis-server of its own, run as ``uid``:``gid`` in ``workdir`` (where the unpacked
    backup is), on a Unix socket only (no TCP port, no password needed). Always stopped."""

    def __init__(self, executable, workdir, meta, timeout, uid, gid, wait, maxmemory=None):
        self.executable, self.workdir, self.meta, self.timeout = executable, workdir, meta, timeout
        self.uid, self.gid, self.wait = uid, gid, wait
        self.maxmemory = int(maxmemory or maxmemory_for(meta))
        self.sockdir = tempfile.mkdtemp(prefix="redis-backup-")  # short path: sockets allow ~107 bytes
        os.chown(self.sockdir, uid, gid)  # the server makes its socket there
        self.socket = os.path.join(self.sockdir, "redis.sock")
        self.output = tempfile.TemporaryFile()  # root's: the server's log, read back without a path
        self.proc = self.client = None

    def config(self):
        aof = self.meta["type"] == "aof"
        lines = [
            "port 0", f"unixsocket {quote(self.socket)}", "unixsocketperm 700", "daemonize no",
            'dir "."', 'logfile ""', 'save ""', f"maxmemory {self.maxmemory}", "maxmemory-policy noeviction",
            f"databases {max(16, int(self.meta.get('databases') or 16))}", "protected-mode no",
            f"dbfilename {quote(self.meta.get('dbfilename') or 'dump.rdb') if not aof else 'throwaway.rdb'}",
            f"appendonly {'yes' if aof else 'no'}", "appendfsync no", "auto-aof-rewrite-percentage 0",
        ]
        if aof:
            lines += [f"appenddirname {quote(self.meta.get('appenddirname') or 'appendonlydir')}",
                      f"appendfilename {quote(self.meta.get('appendfilename') or 'appendonly.aof')}"]
        return "\n".join(lines) + "\n"

    def __enter__(self):
        if self.meta["type"] == "aof":  # Redis opens the last incr file to append, may rewrite the manifest
            hand_over(os.path.join(self.workdir, self.meta.get("appenddirname") or "appendonlydir"),
                      self.uid, self.gid)
        self.proc = subprocess.Popen(
            [self.executable, "-"], cwd=self.workdir, stdin=subprocess.PIPE, stdout=self.output,
            stderr=subprocess.STDOUT, preexec_fn=demote(self.uid, self.gid),
        )
        try:
            self.proc.stdin.write(self.config().encode("utf-8", "surrogateescape"))
            self.proc.stdin.close()
        except OSError:
            pass  # it exited already: said below
        self.client = redis.Redis(unix_socket_path=self.socket, socket_timeout=self.timeout,
                                  socket_connect_timeout=5, decode_responses=True, retry=Retry(NoBackoff(), 0))

        def up():
            if self.proc.poll() is not None:
                return "exited"
            try:
                return "up" if self.client.ping() else None
            except redis.RedisError:
                return None

        state = self.wait(up, self.timeout, 0.05)
        if state != "up":
            detail = self.log_tail()
            self.stop()
            raise CommandExecutionError(
                f"a throwaway redis-server could not load the backup ({state or 'timed out'}): {detail}")
        return self

    def log_tail(self):
        try:
            self.output.seek(0, os.SEEK_END)
            size = self.output.tell()
            self.output.seek(max(0, size - 4000))
            return sanitized(self.output.read().decode(errors="replace"), limit=3)
        except (OSError, ValueError):
            return "no log"

    def counts(self):
        """Keys per type over every database, and how many carry a TTL."""
        types, with_ttl = {}, 0
        for db, stats in self.client.info("keyspace").items():
            with_ttl += int(stats.get("expires", 0))
            client = redis.Redis(unix_socket_path=self.socket, db=int(db[2:]), socket_timeout=self.timeout,
                                 decode_responses=True, retry=Retry(NoBackoff(), 0))
            flat = client.eval(COUNT_SCRIPT, 0)
            client.close()
            for kind, count in zip(flat[0::2], flat[1::2]):
                types[kind] = types.get(kind, 0) + int(count)
        return {"loaded_keys": sum(types.values()), "loaded_keys_with_ttl": with_ttl, "key_types": types}

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        shutil.rmtree(self.sockdir, ignore_errors=True)
        self.output.close()

    def __exit__(self, *exc_info):
        try:
            if self.client is not None:
                self.client.close()
        finally:
            self.stop()


def throwaway(executable, workdir, meta, timeout, uid, gid, wait, maxmemory=None):
    """A ``Throwaway`` server (a context manager: started on entry, always stopped on exit).
    ``wait``: ``redis_common.wait`` as the caller reaches it."""
    return Throwaway(executable, workdir, meta, timeout, uid, gid, wait, maxmemory)
