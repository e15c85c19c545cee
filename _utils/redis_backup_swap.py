"""
The file work of a crash-safe restore (``redis_backup.restore``, ``redis_backup.restore_recovered``):
the restore journal and the swap of the data directory's entries, each step a rename on one
filesystem, so that whatever stops the restore, the data directory holds each entry either
as it was or as the backup has it, never neither for the entry Redis loads.

An entry ``NAME`` of the data directory ``data`` has three places: ``data/NAME`` (what Redis
loads), ``new/NAME`` (the staged entry from the backup, identified by its inode number,
recorded in the journal before anything stops) and ``old/NAME`` (the previous entry, moved
aside into the safety copy). ``settle`` moves one entry to the end state of either direction
from whatever state a killed restore left it in: forward (the backup's entry in ``data``, the
previous one in ``old``) or back (the previous one in ``data``, the backup's in ``new``). It
can be called again after a crash of its own. Where the kernel and the filesystem allow it,
an entry present on both sides is swapped by one ``renameat2(RENAME_EXCHANGE)``: ``data/NAME``
never disappears, not even for an instant.

Nothing here talks to Redis or to Salt: modules reach it as ``__utils__["redis_backup_swap.<name>"]``.
"""

import ctypes
import errno
import json
import os
import stat
import tempfile

__virtualname__ = "redis_backup_swap"

JOURNAL_FORMAT = 1
AT_FDCWD = -100
RENAME_EXCHANGE = 2
_RENAMEAT2 = []


def __virtual__():
    return __virtualname__


def identity(path):
    """The inode number of ``path`` itself (a symlink is not followed), or None when absent.

    Only the inode number: the three places of an entry are on one filesystem (every step is
    a rename), and the device number is not stable across a boot, which is when a journal is
    read again after a power cut (an overlay or a device-mapper volume gets whichever number
    is free at its mount: the backup's entry, in place, then looked foreign)."""
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


def recorded(ident):
    """An identity as the journal holds it: an inode number, or ``[st_dev, st_ino]`` from a
    journal written before the device number was dropped (only its inode number counts)."""
    if isinstance(ident, (list, tuple)):
        return ident[-1]
    return ident


def holds(path, ident):
    """Whether ``path`` is the entry the journal recorded as ``ident``."""
    ident = recorded(ident)
    return ident is not None and identity(path) == ident


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _renameat2():
    if not _RENAMEAT2:
        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            function.restype = ctypes.c_int
            _RENAMEAT2.append(function)
        except (OSError, AttributeError):
            _RENAMEAT2.append(None)
    return _RENAMEAT2[0]


def exchange(first, second):
    """Swap two existing paths atomically (``renameat2(RENAME_EXCHANGE)``). False when this
    kernel, C library or filesystem cannot (the caller then renames in two steps)."""
    function = _renameat2()
    if function is None:
        return False
    if function(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), first)


def _rename(source, target):
    """``rename(2)`` that never replaces: ``target`` must be free."""
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "the restore will not replace it", target)
    os.rename(source, target)


def free(path):
    """``path``, or ``path.1``, ``path.2``... whichever is free."""
    candidate, number = path, 0
    while os.path.lexists(candidate):
        number += 1
        candidate = f"{path}.{number}"
    return candidate


def settle(data_dir, new_dir, old_dir, name, new_ident, forward=True, replace_foreign=False):
    """Move the entry ``name`` to its end state (see the module's text) and say what that took:
    ``placed``, ``moved aside``, ``put back``, ``taken out``, ``as it was`` or ``absent``.

    ``new_ident`` is the staged entry's recorded identity (None: an entry the backup does not
    have, which only moves aside and back). Forward, whatever the data directory holds under
    that name moves into ``old_dir`` (never deleted: a name already taken there gets a
    ``.N`` suffix). Back, the previous entry (in ``old_dir``, or in ``new_dir`` where an
    exchange left it) returns; what the data directory holds then goes to ``new_dir`` when it
    is the backup's entry, and also when it is something else (what a Redis started on the
    restored data wrote, such as its shutdown SAVE) if ``replace_foreign``; without it, such an
    entry stays (a Redis that runs on it since made it). Raises when the staged entry is gone
    and the data directory does not hold it, changing nothing."""
    data, new, old = (os.path.join(directory, name) for directory in (data_dir, new_dir, old_dir))
    at_data, at_new, at_old = identity(data), identity(new), identity(old)
    ident = recorded(new_ident)
    placed = ident is not None and at_data == ident
    if forward:
        if ident is None:
            if at_data is None:
                return "as it was" if at_old is not None else "absent"
            _rename(data, free(old))
            return "moved aside"
        if placed:
            if at_new is not None:  # the previous entry, where an exchange left it
                _rename(new, free(old))
            return "placed"
        if at_new != ident:
            raise FileNotFoundError(errno.ENOENT, "the staged entry of the restore is gone", new)
        if at_data is None:
            _rename(new, data)
        elif exchange(new, data):
            _rename(new, free(old))
        else:
            _rename(data, free(old))  # a moment without data/NAME: only where exchange is impossible
            _rename(new, data)
        return "placed"
    # back: where is the previous entry?
    if at_new is not None and at_new != ident:
        previous = new  # an exchange left it there: data/NAME holds the backup's (or Redis's) entry
    elif at_old is not None:
        previous = old
    else:
        previous = None
    if previous is None:
        if placed:
            _rename(data, free(new))  # the data directory had no such entry before
            return "taken out"
        return "as it was"
    if at_data is None:
        _rename(previous, data)
        return "put back"
    if not placed and not replace_foreign:
        return "as it was"  # not the backup's entry: Redis made it since, and runs on it
    if previous == new:
        if not exchange(new, data):
            parked = free(old)
            _rename(data, parked)
            _rename(new, data)
            _rename(parked, new)
        return "put back"
    if exchange(old, data):
        _rename(old, free(new))
    else:
        _rename(data, free(new))
        _rename(old, data)
    return "put back"


def _trusted_directory(path):
    """The journal's directory must be this process's user's (root's) and writable by no one
    else: the ``redis`` account must not be able to plant or change a journal."""
    found = os.lstat(path)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o022:
        raise PermissionError(errno.EPERM, "the journal directory is not root's alone (owner, group/other "
                                           "write)", path)


def write_journal(path, data):
    """Write the journal atomically: a private temporary file (never a name someone else could
    have planted), fsynced, renamed over ``path``, the directory fsynced."""
    directory = os.path.dirname(path)
    _trusted_directory(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump(dict(data, format=JOURNAL_FORMAT), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def read_journal(path):
    """The journal at ``path``, or None when there is none. Raises ``PermissionError`` for a
    journal that is not root's alone and ``ValueError`` for one that is not a journal."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionError(errno.EPERM, "the journal is a symbolic link", path) from None
        raise
    with os.fdopen(fd, encoding="utf-8") as handle:
        found = os.fstat(handle.fileno())
        if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o022:
            raise PermissionError(errno.EPERM, "the journal is not a file root alone writes", path)
        _trusted_directory(os.path.dirname(path))
        data = json.load(handle)
    if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT or not data.get("entries"):
        raise ValueError(f"{path} is not a restore journal of format {JOURNAL_FORMAT}")
    return data


def remove_journal(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(os.path.dirname(path))
