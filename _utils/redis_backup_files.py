"""
The file work of the backups (``redis_backup.create``/``list``/``verify``/``prune``/``restore``),
apart from Redis and Salt: names, safe writes and reads, fsync, the copy and compression
pipes, sha256, the AOF manifest, the backup tree's ownership, time parsing and sizes.

The backup tree (``BACKUP_DIR``) is root's: the ``redis`` account reads what it must (group
``redis``), never writes. Nothing in it is trusted all the same (a tree left by an older
version of this formula was the ``redis`` account's, and a backup may come from anywhere):

- every name read from a backup's metadata or AOF manifest must be a plain file name
  (``plain_name``): no ``/``, not ``.`` or ``..``, no NUL; nothing joins another;
- a file is written under a fresh random name (``mkstemp``: ``O_CREAT|O_EXCL``, never a
  name someone planted), fsynced, then renamed over its final name (``write_json``), or
  created with ``O_EXCL|O_NOFOLLOW`` (``create_exclusive``);
- an existing file is opened with ``O_NOFOLLOW`` and must be a regular file (``open_read``):
  a symbolic link where a backup file belongs is refused, not followed;
- a directory of the tree that is not root's is taken over (``ensure_dir``, ``adopt_tree``)
  through descriptors opened with ``O_NOFOLLOW``: a symbolic link, a device or a file with a
  second hard link is refused, naming the path.

Nothing here talks to Redis or to Salt: modules reach it as
``__utils__["redis_backup_files.<name>"]``.
"""

import datetime
import errno
import hashlib
import json
import os
import queue
import re
import shutil
import stat
import subprocess
import tempfile
import threading

from salt.exceptions import CommandExecutionError

__virtualname__ = "redis_backup_files"

NAME_RE = re.compile(r"^(rdb|aof)_backup_(\d{8}_\d{6})(?:_(\d+))?$")
CHUNK = 1 << 20
DIR_MODE = 0o750
FILE_MODE = 0o640
# The names a backup's metadata gives (each must be a plain file name).
META_NAMES = ("name", "source", "dbfilename", "appenddirname", "appendfilename")
FILE_NAMES = ("name", "source")


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------- names


def backup_name(name):
    """The match of a backup's directory name (``rdb_backup_YYYYmmdd_HHMMSS[_N]``), or None."""
    return NAME_RE.match(str(name))


def plain_name(name):
    """Whether ``name`` is a plain file name: a non-empty text without ``/`` or NUL, not ``.``
    or ``..``. Only such a name may be joined to a directory of the backup tree."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def name_problems(meta):
    """What makes a backup's metadata unsafe to use: every name it gives (its own, the
    server's file names, each stored file's ``name`` and ``source``) must be a plain file
    name, and no two files may share one. ``[]`` when it is safe."""
    if not isinstance(meta, dict):
        return ["the metadata is not a JSON object"]
    problems = []
    for key in META_NAMES:
        if meta.get(key) is not None and not plain_name(meta[key]):
            problems.append(f"{key} {meta[key]!r} is not a plain file name")
    files = meta.get("files")
    if not isinstance(files, list):
        return problems + ["files is not a list"]
    seen = {"name": set(), "source": set()}
    for index, item in enumerate(files):
        if not isinstance(item, dict):
            problems.append(f"files[{index}] is not an object")
            continue
        for key in FILE_NAMES:
            value = item.get(key)
            if not plain_name(value):
                problems.append(f"files[{index}].{key} {value!r} is not a plain file name")
            elif value in seen[key]:
                problems.append(f"files[{index}].{key} {value!r} is named twice")
            else:
                seen[key].add(value)
    return problems


def manifest_entries(text, split_args):
    """The base and incr files a Redis 7 AOF manifest names, in order, with their lines.
    ``split_args``: ``redis_config.config_args`` (Redis quotes a manifest's file names as it
    quotes config arguments, sdssplitargs). History files (type h) are left out: Redis
    deletes them, they are not part of the data."""
    entries = []
    for line in text.splitlines():
        fields = split_args(line)
        pairs = dict(zip(fields[0::2], fields[1::2]))
        if "file" not in pairs or pairs.get("type") not in ("b", "i"):
            continue
        entries.append({"file": pairs["file"], "kind": "base" if pairs["type"] == "b" else "incr", "line": line})
    return entries


def manifest_problems(entries, allowed=None):
    """What makes an AOF manifest's entries unsafe: each file a plain file name (and, with
    ``allowed``, one of those names); a base file named."""
    problems = [f"the AOF manifest names {entry['file']!r}, not a plain file name"
                for entry in entries if not plain_name(entry["file"])]
    if allowed is not None:
        problems += [f"the AOF manifest names {entry['file']!r}, which the backup does not hold"
                     for entry in entries if plain_name(entry["file"]) and entry["file"] not in allowed]
    if not any(entry["kind"] == "base" for entry in entries):
        problems.append("the AOF manifest names no base file")
    return problems


# ---------------------------------------------------------------- time and sizes


def parse_time(text):
    """An aware datetime from ISO 8601 text (naive: UTC), or None."""
    try:
        moment = datetime.datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def human_size(size):
    """``size`` bytes as the original script printed them: 512B, 1.5K, 3.2M, 1.0G, 2.0T."""
    size = float(size or 0)
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


# ---------------------------------------------------------------- reads, writes, fsync


def _refused(exc, path, what="a file"):
    """The OSError of an O_NOFOLLOW open of a symbolic link, said plainly."""
    if exc.errno == errno.ELOOP:
        return OSError(errno.ELOOP, f"a symbolic link where {what} belongs: refused, not followed", path)
    return exc


def open_read(path):
    """``path`` opened for reading (unbuffered), never through a symbolic link, and only if it
    is a regular file (a FIFO or device planted there would block or lie)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _refused(exc, path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file: refused", path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def read_json(path):
    """The JSON object in ``path`` (read with ``open_read``); ``ValueError`` for anything else."""
    with open_read(path) as handle:
        data = json.loads(handle.read().decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds no JSON object")
    return data


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _own_fd(fd, mode, gid):
    os.fchmod(fd, mode)
    if gid is not None and gid >= 0:
        os.fchown(fd, -1, gid)


def create_exclusive(path, mode=FILE_MODE, gid=None):
    """A new file at ``path`` (``O_CREAT|O_EXCL|O_NOFOLLOW``: a name someone planted is an
    error, never followed), its mode and group set through the descriptor. Returns the fd."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _own_fd(fd, mode, gid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_bytes(path, data, mode=FILE_MODE, gid=None):
    """Write ``data`` to ``path`` atomically: a private temporary file beside it (``mkstemp``,
    a random name created with ``O_EXCL``), mode and group set through its descriptor,
    fsynced, renamed over ``path`` (a symbolic link there is replaced, never followed), the
    directory fsynced."""
    directory, base = os.path.split(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{base}.", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            _own_fd(handle.fileno(), mode, gid)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory or ".")


def write_json(path, data, mode=FILE_MODE, gid=None):
    """``data`` as indented JSON, written by ``write_bytes``."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"), mode, gid)


# ---------------------------------------------------------------- the tree's ownership


def _take_dir(fd, path, gid, mode):
    """Root's, ``mode``, group ``gid``, when someone else owns it or may write it."""
    found = os.fstat(fd)
    if not stat.S_ISDIR(found.st_mode):
        raise OSError(errno.ENOTDIR, "not a directory: refused", path)
    if found.st_uid != os.geteuid() or found.st_mode & 0o022 or stat.S_IMODE(found.st_mode) & ~mode:
        os.fchown(fd, os.geteuid(), gid if gid is not None and gid >= 0 else -1)
        os.fchmod(fd, mode)
        return True
    return False


def ensure_dir(path, gid=None, mode=DIR_MODE):
    """``path`` as a root-owned directory (``mode``, group ``gid``): made when missing (its
    missing parents too, root's), taken over when it exists but is someone else's (a tree of
    an older version was the ``redis`` account's). A symbolic link or anything but a
    directory there is refused, naming the path. True when something changed."""
    try:
        os.mkdir(path, 0o700)
        created = True
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        return ensure_dir(path, gid, mode)
    except FileExistsError:
        created = False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            kind = "a symbolic link" if os.path.islink(path) else "not a directory"
            raise OSError(exc.errno, f"{kind} where a directory of the backup tree belongs: refused", path) from None
        raise
    try:
        changed = _take_dir(fd, path, gid, mode) or created
        if created:
            os.fchown(fd, os.geteuid(), gid if gid is not None and gid >= 0 else -1)
            os.fchmod(fd, mode)
        return changed
    finally:
        os.close(fd)


def adopt_tree(path, gid=None, dir_mode=DIR_MODE, file_mode=FILE_MODE):
    """Take over a directory and everything in it (a backup left by an older version): each
    directory and regular file becomes root's (group ``gid``, no write for group or others).
    Never follows a symbolic link: one inside, a device, a FIFO, a socket or a file that is
    not root's and has a second hard link (chown would take over the other name too) is
    refused with ``OSError`` naming its path, the rest left as found at that point.
    Returns the paths changed."""
    changed = []
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _adopt(fd, path, gid, dir_mode, file_mode, changed)
    finally:
        os.close(fd)
    return changed


def _adopt(fd, path, gid, dir_mode, file_mode, changed):
    if _take_dir(fd, path, gid, dir_mode):
        changed.append(path)
    for name in sorted(os.listdir(fd)):
        child = os.path.join(path, name)
        found = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(found.st_mode):
            raise OSError(errno.ELOOP, "a symbolic link inside a backup: refused, not followed", child)
        if stat.S_ISDIR(found.st_mode):
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        elif stat.S_ISREG(found.st_mode):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        else:
            raise OSError(errno.EINVAL, "neither a file nor a directory inside a backup: refused", child)
        try:
            child_fd = os.open(name, flags, dir_fd=fd)
        except OSError as exc:
            raise _refused(exc, child, "a backup's file") from None
        try:
            now = os.fstat(child_fd)
            if (now.st_dev, now.st_ino) != (found.st_dev, found.st_ino):
                raise OSError(errno.EAGAIN, "replaced while it was being taken over: refused", child)
            if stat.S_ISDIR(now.st_mode):
                _adopt(child_fd, child, gid, dir_mode, file_mode, changed)
                continue
            if now.st_uid != os.geteuid():
                if now.st_nlink != 1:
                    raise OSError(errno.EMLINK, "a file with another hard link inside a backup: refused", child)
                os.fchown(child_fd, os.geteuid(), gid if gid is not None and gid >= 0 else -1)
                os.fchmod(child_fd, file_mode)
                changed.append(child)
            elif now.st_mode & 0o022:
                os.fchmod(child_fd, stat.S_IMODE(now.st_mode) & ~0o022)
                changed.append(child)
        finally:
            os.close(child_fd)


# ---------------------------------------------------------------- copy, compress, sha256


def tool(command):
    """``command`` with its program's full path; refused when it is not installed."""
    path = shutil.which(command[0])
    if not path:
        raise CommandExecutionError(f"{command[0]} is not installed: it is needed for this compression")
    return [path] + list(command[1:])


def chunks(handle, length):
    """``length`` bytes of ``handle`` in pieces of at most ``CHUNK``; raises when it ends first."""
    remaining = length
    while remaining > 0:
        chunk = handle.read(min(CHUNK, remaining))
        if not chunk:
            raise CommandExecutionError("a file shrank while it was being copied")
        remaining -= len(chunk)
        yield chunk


def pipe(source, length, destination, command=None, mode=FILE_MODE, gid=None, tap=None, sync=True):
    """Stream ``length`` bytes of the open file ``source`` through ``command`` (none: a
    plain copy) into a new file ``destination`` (``create_exclusive``; None: nowhere, the
    output is only hashed), fsynced unless ``sync`` is false (a check's scratch file). ``tap``:
    a ``Tap`` that gets every output byte too (e.g. ``redis-check-rdb`` reading the very
    bytes hashed), in a thread of its own. Returns the size and sha256 of what went in and
    of what came out. Memory: a few chunks, whatever the size."""
    in_hash, out_hash = hashlib.sha256(), hashlib.sha256()
    sizes = {"in": 0, "out": 0}
    sinks = [tap] if tap is not None else []
    out = os.fdopen(create_exclusive(destination, mode, gid), "wb") if destination is not None else None
    try:
        if out is not None:
            sinks.insert(0, out)
        if command is None:
            for chunk in chunks(source, length):
                in_hash.update(chunk)
                for sink in sinks:
                    sink.write(chunk)
                sizes["in"] += len(chunk)
            out_hash, sizes["out"] = in_hash, sizes["in"]
        else:
            _pipe_through(source, length, sinks, command, in_hash, out_hash, sizes)
        if out is not None:
            out.flush()
            if sync:
                os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()
    return {"in_size": sizes["in"], "in_sha256": in_hash.hexdigest(),
            "out_size": sizes["out"], "out_sha256": out_hash.hexdigest()}


class Tap:
    """A consumer of a stream that may be slower than the copy (a checker reading a pipe):
    ``write`` queues the chunk (at most ``depth`` waiting: memory stays a few chunks) and a
    thread of its own writes it to ``handle``. Once the consumer stops reading (it exited:
    its verdict says why) the rest is dropped, never blocking the copy. ``close`` waits for
    what is queued and closes ``handle``: the consumer sees the end of its input."""

    def __init__(self, handle, depth=2):
        self.handle, self.failed = handle, None
        self.queue = queue.Queue(depth)
        self.thread = threading.Thread(target=self._run, name="redis_backup-tap", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            chunk = self.queue.get()
            if chunk is None:
                break
            if self.failed is None:
                try:
                    self.handle.write(chunk)
                except Exception as exc:  # pylint: disable=broad-except
                    self.failed = exc
        try:
            self.handle.close()
        except Exception:  # pylint: disable=broad-except
            pass

    def write(self, chunk):
        self.queue.put(chunk)

    def close(self):
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()


def tap(handle, depth=2):
    """A ``Tap`` writing to ``handle``, started. Salt's loader gives ``__utils__`` only the
    functions of a ``_utils`` module, never its classes: the modules reach a Tap through this."""
    return Tap(handle, depth)


def _pipe_through(source, length, sinks, command, in_hash, out_hash, sizes):
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
    failed = []

    def feed():
        try:
            for chunk in chunks(source, length):
                in_hash.update(chunk)
                proc.stdin.write(chunk)
                sizes["in"] += len(chunk)
        except BaseException as exc:  # pylint: disable=broad-except
            failed.append(exc)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    feeder = threading.Thread(target=feed, name="redis_backup-feed", daemon=True)
    feeder.start()
    try:
        while True:
            chunk = proc.stdout.read(CHUNK)
            if not chunk:
                break
            out_hash.update(chunk)
            for sink in sinks:
                sink.write(chunk)
            sizes["out"] += len(chunk)
    except BaseException:
        proc.kill()
        raise
    finally:
        feeder.join()
        proc.stdout.close()
        proc.wait()
        with errors:
            errors.seek(0)
            stderr = errors.read().decode(errors="replace").strip()
    if failed and not isinstance(failed[0], BrokenPipeError):
        raise failed[0]
    if proc.returncode != 0 or failed:
        raise CommandExecutionError(f"{os.path.basename(command[0])} failed (exit {proc.returncode}): {stderr[-300:]}")


def sha256_file(path):
    """``(size, sha256)`` of the regular file ``path`` (read with ``open_read``)."""
    digest, size = hashlib.sha256(), 0
    with open_read(path) as handle:
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


# ---------------------------------------------------------------- AOF


def aof_complete_length(handle, size):
    """How many leading bytes of an AOF (at most ``size``) hold whole commands: the file
    Redis is appending to may end in the middle of one."""
    handle.seek(0)
    reader = open(handle.fileno(), "rb", closefd=False)  # buffered, for readline
    good = 0
    try:
        while good < size:
            line = reader.readline()
            if not line.endswith(b"\n"):
                break
            if line.startswith(b"#"):  # annotations (aof-timestamp-enabled)
                if reader.tell() > size:
                    break
                good = reader.tell()
                continue
            if not line.startswith(b"*"):
                raise CommandExecutionError("an AOF incr file holds something that is not a command")
            complete = True
            for _ in range(int(line[1:].strip())):
                header = reader.readline()
                if not header.startswith(b"$") or not header.endswith(b"\n"):
                    complete = False
                    break
                reader.seek(int(header[1:].strip()) + 2, os.SEEK_CUR)
                if reader.tell() > size:
                    complete = False
                    break
            if not complete or reader.tell() > size:
                break
            good = reader.tell()
    finally:
        reader.close()
        handle.seek(0)
    return good
