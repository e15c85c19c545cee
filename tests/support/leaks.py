"""
No secret on any channel (issue 18, item 3): every secret of a deployment, in every form it
could be written in, looked for wherever someone other than root and redis could read it.

- :func:`deployment_secrets`: the secrets of a my_multihead_cluster.yaml document (the
  password, the previous one, every ACL user's, the internal users' derived from both) and
  who may legitimately read which (the monitoring group, its login's derived password).
- :func:`forms`: a secret raw, JSON-escaped, repr-escaped and quoted as in redis.conf.
- :class:`Finding`: one secret found, ``(channel, host, where, secret, form)``: the secret's
  label and the form's name, never the secret itself (``where`` is redacted too).
- :func:`sweep`: every channel of every lab host (argv, journal, ``systemctl show``, the
  files others can read, the minion's log, backup metadata) and of the master (argv of its
  processes, its log, its job cache, the files others can read, the set manifests).
- :class:`ExecWatcher`: every process started while it runs (the kernel's process
  connector), its argv read at once: the short-lived commands a final sweep never sees.
- :class:`EventRecorder`: the master's bus while it runs (saltfactories' event listener).
- :class:`Watch`: both of them at once, over a lab and its master.
- :func:`scan_result`: a saltfactories ``ProcessResult`` (a job's or runner's return).

Typical use (tests/integration/test_secret_channels.py; any lab, e.g. the Sentinel lab's)::

    secrets = deployment_secrets(document)  # the lab's my_multihead_cluster.yaml as a dict
    with Watch(event_listener, lab, hosts, master, secrets) as watch:
        result = salt_cli.run("state.apply", "redis", minion_tgt="*")
    findings = [*watch.findings, *scan_result(result, secrets, "state.apply"),
                *sweep(lab, hosts, master, secrets)]
    assert not findings, report(findings)
"""

import json
import os
import re
import select
import socket
import stat
import struct
import subprocess
import threading
import time
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path

from support.lab import PASSWORD, ROOT
from support.loaders import load_file

# Where a Redis host keeps what Salt and Redis write: files in them that anyone but root and
# redis can read must hold no secret (root- and redis-only files may hold the password).
HOST_DIRS = (
    "/etc/redis", "/etc/redis-salt", "/etc/redis-monitoring", "/etc/redis-tls", "/var/lib/redis", "/var/backups/redis",
    "/var/cache/salt/minion", "/var/log/redis", "/run/redis", "/run/redis-salt", "/etc/salt",
    "/etc/systemd/system", "/var/lib/prometheus/node-exporter", "/usr/local/lib/redis-salt",
)  # fmt: skip
HOST_FILE_PATTERNS = ("/usr/local/bin/redis*", "/usr/local/sbin/redis*")
# Read whoever may read them: logs are a channel of their own.
HOST_LOG_DIRS = ("/var/log/salt",)
DEFAULT_BACKUP_DIR = "/var/backups/redis"
BACKUP_METADATA_NAMES = ("backup_metadata.json", ".backup_sets.json")  # _modules/redis_backup.py
SET_MANIFEST = "manifest.json"  # _runners/redis_backup.py, under <cachedir>/redis_backup_sets/<set_id>/
TRUSTED_ACCOUNTS = ("root", "redis")
FORM_NAMES = ("raw", "json", "repr", "redis-quoted")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Finding(namedtuple("Finding", "channel host where secret form")):
    """A secret seen: on which channel (``argv``, ``journal``, ``file``...), which host (a lab
    host or ``master``), where there (a path, a unit, a pid, an event tag), which secret (its
    label, e.g. ``password`` or ``derived salt-monitor``) and in which form(s)."""

    def __str__(self):
        return f"{self.channel} on {self.host}: {self.where}: {self.secret} ({self.form})"


def report(findings):
    """The findings, one line each (never a secret): an assertion message."""
    lines = sorted({str(finding) for finding in findings})
    return f"{len(lines)} secret(s) on channels others can read:\n  " + "\n  ".join(lines)


# Secrets and their forms


def forms(secret):
    """``{form name: text}``: the secret as is, JSON-escaped (``json.dumps`` without its quotes),
    repr-escaped (inside Python's quotes) and quoted as redis.conf quotes it (``\\`` and ``"``
    backslash-escaped inside double quotes, the quotes left off)."""
    return {
        "raw": secret,
        "json": json.dumps(secret)[1:-1],
        "repr": repr(secret)[1:-1],
        "redis-quoted": secret.replace("\\", "\\\\").replace('"', '\\"'),
    }


def redis_acl():
    """_utils/redis_acl.py, loaded by path: ``USERS`` and ``derived_password``."""
    return load_file("leaks_redis_acl", ROOT / "_utils" / "redis_acl.py")


@dataclass
class Secrets:
    """Every secret of a deployment by label, who may read which of them although not root or
    redis (``allowed``: ``{"group NAME": {labels}}``) and where its backups are."""

    values: dict
    allowed: dict = field(default_factory=dict)
    backup_dirs: tuple = (DEFAULT_BACKUP_DIR,)

    def __post_init__(self):
        # Each distinct text once, with every form name that spells it (a hex secret: all four).
        self._texts = {}
        for label, secret in self.values.items():
            spelled = {}
            for name, text in forms(secret).items():
                spelled.setdefault(text, []).append(name)
            self._texts[label] = [(text, "/".join(names)) for text, names in spelled.items()]

    def find(self, text):
        """``[(label, form)]`` of every secret form in ``text``."""
        if not text:
            return []
        return [(label, form) for label, spelled in self._texts.items() for piece, form in spelled if piece in text]

    def redact(self, text):
        """``text`` with every secret form replaced (for ``where``: never print a secret)."""
        for spelled in self._texts.values():
            for piece, _ in sorted(spelled, key=lambda item: -len(item[0])):
                text = text.replace(piece, "<secret>")
        return text


def _expand(value, environ):
    if value is None:
        return None
    return _VAR.sub(lambda match: environ[match.group(1)], str(value))


def deployment_secrets(document, environ=None):
    """Every secret of the deployment ``document`` (a my_multihead_cluster.yaml as a dict),
    ``${VAR}`` expanded from ``environ`` (default: the lab's ``REDIS_PASSWORD``):

    ``password``, ``previous_password``, ``acl user NAME`` for each ``cache.redis.acl.users``
    entry with a ``password``, and for each internal user of ``_utils/redis_acl.py``'s
    ``USERS`` ``derived NAME`` (from the password) and ``derived NAME (previous)``.
    A secret's SHA-256 (what Redis stores) is not one: ``password_sha256`` is skipped.

    The monitoring group (``cache.redis.monitoring.group``) may read its login's password
    (``/etc/redis-monitoring/redis_health.json``, root:group 0640): ``Secrets.allowed``."""
    environ = {"REDIS_PASSWORD": PASSWORD} if environ is None else environ
    settings = ((document.get("cache") or {}).get("redis") or {})
    password = _expand(settings.get("password"), environ)
    previous = _expand(settings.get("previous_password"), environ)
    values = {"password": password}
    if previous is not None:
        values["previous_password"] = previous
    for index, user in enumerate(((settings.get("acl") or {}).get("users") or [])):
        if isinstance(user, dict) and user.get("password") is not None:
            values[f"acl user {user.get('name', index)}"] = _expand(user["password"], environ)
    acl = redis_acl()
    for user in acl.USERS:
        values[f"derived {user}"] = acl.derived_password(password, user)
        if previous is not None:
            values[f"derived {user} (previous)"] = acl.derived_password(previous, user)
    values = {label: secret for label, secret in values.items() if secret}
    group = ((settings.get("monitoring") or {}).get("group")) or "redis-monitoring"
    monitoring = f"derived {acl.MONITORING_USER}"
    allowed = {f"group {group}": {label for label in values if label.split(" (")[0] == monitoring}}
    backup = settings.get("backup") or {}
    backup_dirs = tuple(dict.fromkeys(str(d) for d in (backup.get("dir") or DEFAULT_BACKUP_DIR, backup.get("copy_to"))
                                      if d))
    return Secrets(values, allowed, backup_dirs)


# Scanning text, objects, results


def scan_text(text, secrets, channel, host, where):
    """Findings of ``secrets`` in ``text`` (str or bytes)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    found = secrets.find(text)
    return [Finding(channel, host, secrets.redact(str(where)), label, form) for label, form in found]


def strings(obj):
    """Every key and value of ``obj`` (nested dicts, lists...) as text, one at a time."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            yield from strings(item)
    elif isinstance(obj, (bytes, bytearray)):
        yield bytes(obj).decode("utf-8", "replace")
    elif obj is not None:
        yield str(obj)


def scan_object(obj, secrets, channel, host, where):
    """Findings in every string of ``obj`` (an event's data, a parsed return), each as is."""
    found = []
    for text in strings(obj):
        found += scan_text(text, secrets, channel, host, where)
    return _unique(found)


def scan_result(result, secrets, where, host="master"):
    """Findings in a saltfactories ``ProcessResult``: its stdout, stderr and parsed data."""
    found = []
    for name in ("stdout", "stderr"):
        found += scan_text(getattr(result, name, "") or "", secrets, "job return", host, f"{where} ({name})")
    found += scan_object(getattr(result, "data", None), secrets, "job return", host, f"{where} (data)")
    return _unique(found)


def scan_event(tag, data, secrets, host="master"):
    """Findings in one event on the bus: its tag and every string of its data."""
    return _unique([*scan_text(tag, secrets, "event", host, "event tag"),
                    *scan_object(data, secrets, "event", host, f"event {tag}")])


def _unique(findings):
    return list(dict.fromkeys(findings))


# Processes


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None


def _comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def scan_processes(pids, secrets, host):
    """Findings in the argv of each process of ``pids`` (machine PIDs), arguments joined by spaces."""
    found = []
    for pid in pids:
        argv = _cmdline(pid)
        if argv:
            found += scan_text(argv, secrets, "argv", host, f"pid {pid} ({_comm(pid)})")
    return found


def _ppid(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def descendants(pid):
    """``pid`` and every process below it."""
    children = {}
    for proc in Path("/proc").glob("[0-9]*"):
        children.setdefault(_ppid(proc.name), []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def process_tree_scope(roots):
    """``scope(pid)`` for :class:`ExecWatcher`: the label of the first of ``roots``
    (``{pid: label}``) the process descends from, else None."""

    def scope(pid):
        current = pid
        for _ in range(64):
            if current in roots:
                return roots[current]
            current = _ppid(current)
            if current <= 1:
                return None
        return None

    return scope


def lab_scope(lab, hosts, master=None, own=True):
    """``scope(pid)`` for :class:`ExecWatcher`: the lab host (of ``hosts``) the process runs in
    (by its PID namespace, looked up again when a host rebooted), ``master`` below the
    master's process, ``test`` below this test process (the salt CLIs it starts; ``own``),
    else None (not the lab's)."""
    namespaces = {}
    refreshed = [0.0]

    def refresh():
        namespaces.clear()
        for host in hosts:
            pid1 = (lab.hosts().get(host) or {}).get("pid1")
            try:
                namespaces[os.readlink(f"/proc/{pid1}/ns/pid")] = host
            except (OSError, TypeError):
                pass
        refreshed[0] = time.monotonic()

    refresh()
    roots = {}
    if master is not None and master.pid:
        roots[master.pid] = "master"
    if own:
        roots[os.getpid()] = "test"
    below = process_tree_scope(roots)

    def scope(pid):
        try:
            namespace = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            namespace = None
        if namespace is not None and namespace not in namespaces and time.monotonic() - refreshed[0] > 1:
            refresh()
        return namespaces.get(namespace) or below(pid)

    return scope


NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC = 11, 1, 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
PROC_EVENT_EXEC = 0x00000002
_NLMSG_HEADER = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")


class ExecWatcher:
    """While it runs, every ``exec`` on the machine (the kernel's process connector, as root)
    whose process ``scope(pid)`` names (a lab host, ``master``, ``test``): its argv read at
    once and scanned. ``findings``; ``execs`` (processes seen in scope), ``gone`` (exited before
    their argv could be read), ``overflows`` (kernel messages lost: a burst too fast)."""

    def __init__(self, secrets, scope):
        self.secrets, self.scope = secrets, scope
        self.findings, self.execs, self.gone, self.overflows = [], 0, 0, 0
        self._stop = threading.Event()
        self._socket = self._thread = None

    def _control(self, operation):
        message = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, 4, 0) + struct.pack("=I", operation)
        self._socket.send(_NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(message), 3, 0, 0, 0) + message)

    def __enter__(self):
        self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
        except OSError:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._socket.bind((0, CN_IDX_PROC))
        self._control(PROC_CN_MCAST_LISTEN)
        self._thread = threading.Thread(target=self._run, name="leaks-exec-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self._control(PROC_CN_MCAST_IGNORE)
        except OSError:
            pass
        self._socket.close()

    def _run(self):
        while not self._stop.is_set():
            if not select.select([self._socket], [], [], 0.2)[0]:
                continue
            try:
                data = self._socket.recv(1 << 16)
            except OSError:  # ENOBUFS: the kernel dropped messages
                self.overflows += 1
                continue
            offset = 0
            while offset + _NLMSG_HEADER.size + _CN_MSG.size + 16 <= len(data):
                length = _NLMSG_HEADER.unpack_from(data, offset)[0]
                event = offset + _NLMSG_HEADER.size + _CN_MSG.size
                (what,) = struct.unpack_from("=I", data, event)
                if what == PROC_EVENT_EXEC:
                    _, tgid = struct.unpack_from("=II", data, event + 16)
                    self._exec(tgid)
                offset += max(length, 1)
                offset = (offset + 3) & ~3

    def _exec(self, pid):
        argv, comm = _cmdline(pid), _comm(pid)  # first, before the process exits
        where = self.scope(pid)
        if where is None:
            return
        self.execs += 1
        if argv is None:
            self.gone += 1
            return
        self.findings += scan_text(argv, self.secrets, "argv", where, f"pid {pid} ({comm}), short-lived")


# Files


def _accounts(etc):
    """``(users, groups)``: ``{uid: name}`` and ``{gid: name}`` from ``etc``'s passwd and group."""
    tables = []
    for name in ("passwd", "group"):
        table = {}
        try:
            for line in (Path(etc) / name).read_text().splitlines():
                parts = line.split(":")
                if len(parts) > 2 and parts[2].isdigit():
                    table[int(parts[2])] = parts[0]
        except OSError:
            pass
        tables.append(table)
    return tables


def _allows(status, who, bits):
    """Whether ``who`` (``("user", uid)``, ``("group", gid)`` or ``("others", None)``) has
    ``bits`` (``"r"`` or ``"x"``) on a file of ``status``."""
    owner = {"r": stat.S_IRUSR, "x": stat.S_IXUSR}[bits]
    group = {"r": stat.S_IRGRP, "x": stat.S_IXGRP}[bits]
    other = {"r": stat.S_IROTH, "x": stat.S_IXOTH}[bits]
    kind, number = who
    if kind == "user" and status.st_uid == number:
        return bool(status.st_mode & owner)
    if kind == "group" and status.st_gid == number:
        return bool(status.st_mode & group)
    return bool(status.st_mode & other)


def readers(path, top, users, groups):
    """Who other than root and redis can read the file at ``path``: its mode and those of the
    directories between ``top`` (the host's ``/``, or the master's root_dir) and it. Names:
    ``others``, ``group NAME``, ``user NAME``."""
    path, top = Path(path), Path(top)
    chain = [path] + [parent for parent in path.parents if parent != top and top in parent.parents]
    try:
        statuses = [os.lstat(p) for p in chain]
    except OSError:
        return []
    trusted_users = {uid for uid, name in users.items() if name in TRUSTED_ACCOUNTS} | {0}
    trusted_groups = {gid for gid, name in groups.items() if name in TRUSTED_ACCOUNTS} | {0}
    candidates = [("others", None)]
    candidates += [("user", s.st_uid) for s in statuses if s.st_uid not in trusted_users]
    candidates += [("group", s.st_gid) for s in statuses if s.st_gid not in trusted_groups]
    found = []
    for who in dict.fromkeys(candidates):
        if _allows(statuses[0], who, "r") and all(_allows(s, who, "x") for s in statuses[1:]):
            kind, number = who
            name = {"user": users, "group": groups}.get(kind, {}).get(number, number)
            found.append("others" if kind == "others" else f"{kind} {name}")
    return found


def regular_files(directory):
    for base, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = Path(base) / name
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    yield path
            except OSError:
                pass


def _read(path, limit=64 << 20):
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except OSError:
        return b""


def scan_readable_files(paths, top, secrets, host, users, groups, channel="file"):
    """Findings in each regular file of ``paths`` that someone other than root and redis can
    read (``readers``), but for the secrets ``secrets.allowed`` gives those readers."""
    found = []
    top = Path(top)
    for path in paths:
        who = readers(path, top, users, groups)
        if not who:
            continue
        shown = "/" + str(Path(path).relative_to(top))
        for finding in scan_text(_read(path), secrets, channel, host, f"{shown} (readable by {', '.join(who)})"):
            if not all(finding.secret in secrets.allowed.get(reader, ()) for reader in who):
                found.append(finding)
    return found


def scan_files(paths, top, secrets, host, channel):
    """Findings in each file of ``paths``, whoever may read it (logs, metadata, manifests)."""
    found = []
    for path in paths:
        shown = "/" + str(Path(path).relative_to(top))
        found += scan_text(_read(path), secrets, channel, host, shown)
    return found


# A lab host


def _host_command(lab, host, *argv):
    result = subprocess.run(lab.enter(host, argv), capture_output=True, check=False)
    return result.stdout.decode("utf-8", "replace")


def host_argv(lab, host, secrets):
    """Argv of every process of ``host`` now."""
    return scan_processes(lab.processes(host), secrets, host)


def scan_journal(output, secrets, host):
    """Findings in ``journalctl -o json`` output: every field of every entry, a binary field
    (a list of byte values) as its bytes."""
    found = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            found += scan_text(line, secrets, "journal", host, "journalctl (unparsed line)")
            continue
        unit = entry.get("_SYSTEMD_UNIT") or entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or "?"
        for name, value in entry.items():
            if isinstance(value, list) and value and all(isinstance(b, int) for b in value):
                value = bytes(value)
            found += scan_object(value, secrets, "journal", host, f"journalctl ({unit}), field {name}")
    return _unique(found)


def host_journal(lab, host, secrets):
    """Every field of every journal entry of ``host`` (all units, all boots; ``_CMDLINE``
    included: the argv of a process long gone that logged)."""
    return scan_journal(_host_command(lab, host, "journalctl", "-o", "json", "--all", "--no-pager"), secrets, host)


def unit_names(list_units, list_unit_files):
    """Unit names from ``systemctl list-units --all --plain --no-legend --full`` and
    ``systemctl list-unit-files --plain --no-legend --full`` output (templates left out)."""
    names = []
    for output in (list_units, list_unit_files):
        for line in output.splitlines():
            words = line.replace("\u25cf", " ").split()
            if words and "@." not in words[0]:
                names.append(words[0])
    return list(dict.fromkeys(names))


def scan_unit_properties(output, secrets, host):
    """Findings in ``systemctl show UNIT...`` output, each named by its block's ``Id=``."""
    found = []
    for block in output.split("\n\n"):
        unit = next((line[3:] for line in block.splitlines() if line.startswith("Id=")), "the manager")
        found += scan_text(block, secrets, "systemctl show", host, unit)
    return found


def host_units(lab, host, secrets):
    """``systemctl show`` of every unit (loaded or only installed) and of the manager."""
    names = unit_names(
        _host_command(lab, host, "systemctl", "list-units", "--all", "--plain", "--no-legend", "--full"),
        _host_command(lab, host, "systemctl", "list-unit-files", "--plain", "--no-legend", "--full"))
    found = scan_unit_properties(_host_command(lab, host, "systemctl", "show"), secrets, host)
    for start in range(0, len(names), 200):
        found += scan_unit_properties(_host_command(lab, host, "systemctl", "show", "--", *names[start:start + 200]),
                                      secrets, host)
    return found


def host_files(lab, host, secrets, dirs=HOST_DIRS, patterns=HOST_FILE_PATTERNS):
    """Files under ``dirs`` (and matching ``patterns``) of ``host`` that others can read."""
    top = lab.path(host, "/")
    users, groups = _accounts(lab.path(host, "/etc"))
    paths = [path for directory in dirs for path in regular_files(lab.path(host, directory))]
    paths += [path for pattern in patterns for path in sorted(top.glob(pattern.lstrip("/"))) if path.is_file()]
    return scan_readable_files(list(dict.fromkeys(paths)), top, secrets, host, users, groups)


def host_logs(lab, host, secrets, dirs=HOST_LOG_DIRS):
    """The minion's log (and Salt's other logs on ``host``), whoever can read them."""
    top = lab.path(host, "/")
    paths = [path for directory in dirs for path in regular_files(lab.path(host, directory))]
    return scan_files(paths, top, secrets, host, "log")


def host_backup_metadata(lab, host, secrets):
    """Every backup's metadata and the node's set record under the backup directories."""
    top = lab.path(host, "/")
    paths = [path for directory in secrets.backup_dirs for path in regular_files(lab.path(host, directory))
             if path.name in BACKUP_METADATA_NAMES]
    return scan_files(paths, top, secrets, host, "backup metadata")


def sweep_host(lab, host, secrets):
    """Every channel of one lab host."""
    return [*host_argv(lab, host, secrets), *host_journal(lab, host, secrets), *host_units(lab, host, secrets),
            *host_files(lab, host, secrets), *host_logs(lab, host, secrets),
            *host_backup_metadata(lab, host, secrets)]


# The master (a saltfactories master daemon)


def _master_path(master, key):
    path = Path(master.config[key])
    return path if path.is_absolute() else Path(master.config["root_dir"]) / path


def master_argv(master, secrets):
    """Argv of the master's processes now."""
    return scan_processes(descendants(master.pid), secrets, "master") if master.pid else []


def master_log(master, secrets):
    """The master's log (and every other file in its log directory)."""
    log = _master_path(master, "log_file")
    top = Path(master.config["root_dir"])
    return scan_files([*regular_files(log.parent)] if log.parent.is_dir() else [], top, secrets, "master", "log")


def master_job_cache(master, secrets):
    """Every file of the master's job cache (loads, returns: msgpack holds strings verbatim),
    whoever may read it."""
    jobs = _master_path(master, "cachedir") / "jobs"
    return scan_files(list(regular_files(jobs)), Path(master.config["root_dir"]), secrets, "master", "job cache")


def set_manifests(master, secrets):
    """Every backup set manifest on the master, whoever may read it."""
    sets = Path(master.config.get("redis_backup_sets_dir") or _master_path(master, "cachedir") / "redis_backup_sets")
    paths = [path for path in regular_files(sets) if path.name == SET_MANIFEST] if sets.is_dir() else []
    top = Path(master.config["root_dir"])
    return scan_files(paths, top if top in sets.parents else sets.parent, secrets, "master", "set manifest")


def master_files(master, secrets):
    """Every file under the master's root_dir (configuration, cache, logs) others can read;
    permissions counted from root_dir down (root_dir stands for the master host's ``/``)."""
    top = Path(master.config["root_dir"])
    users, groups = _accounts("/etc")
    return scan_readable_files(list(regular_files(top)), top, secrets, "master", users, groups)


def sweep_master(master, secrets):
    """Every channel of the master."""
    return [*master_argv(master, secrets), *master_log(master, secrets), *master_job_cache(master, secrets),
            *set_manifests(master, secrets), *master_files(master, secrets)]


def sweep(lab, hosts, master, secrets):
    """Every channel of every host of ``hosts`` (names of ``lab``'s running hosts) and of
    ``master`` (a saltfactories master, or None): the findings, never a secret."""
    found = []
    for host in hosts:
        found += sweep_host(lab, host, secrets)
    if master is not None:
        found += sweep_master(master, secrets)
    return _unique(found)


def everything_seen(watch, results, lab, hosts, master, secrets):
    """The findings of a leak test: what ``watch`` (a Watch) saw while it ran, each of
    ``results`` ({what: ProcessResult}), and a sweep of ``hosts`` and ``master`` afterwards."""
    findings = list(watch.findings)
    for what, result in results.items():
        findings += scan_result(result, secrets, what)
    return findings + sweep(lab, hosts, master, secrets)


# The bus


class EventRecorder:
    """Every event on ``master``'s bus from entering the block (or ``since``, a
    ``time.time()``; 0: everything the listener still keeps) until leaving it, scanned on
    leaving: ``findings``, ``events`` (how many). The master's engine forwards its queue
    about once a second: leaving waits (bounded) until no more events come."""

    def __init__(self, event_listener, master, secrets, since=None, settle_timeout=6):
        self.listener, self.master, self.secrets = event_listener, master, secrets
        self.since, self.settle_timeout = since, settle_timeout
        self.findings, self.events = [], 0

    def __enter__(self):
        if self.since is None:
            self.since = time.time()
        return self

    def _received(self):
        return self.listener.get_events([(self.master.id, "*")], after_time=float(self.since))

    def __exit__(self, *_):
        deadline, seen, quiet = time.monotonic() + self.settle_timeout, -1, 0
        while time.monotonic() < deadline:
            count = len(self._received())
            quiet = quiet + 1 if count == seen else 0
            if quiet >= 2:
                break
            seen = count
            time.sleep(0.75)
        events = self._received()
        self.events = len(events)
        found = []
        for event in events:
            found += scan_event(event.tag, event.full_data, self.secrets, "master")
        self.findings = _unique(found)


class Watch:
    """:class:`EventRecorder` and :class:`ExecWatcher` over ``lab``'s ``hosts`` and ``master``
    for the duration of a ``with`` block: ``findings`` of both once it is left; ``bus`` and
    ``execs`` for their counts."""

    def __init__(self, event_listener, lab, hosts, master, secrets, since=None):
        self.bus = EventRecorder(event_listener, master, secrets, since=since)
        self.execs = ExecWatcher(secrets, lab_scope(lab, hosts, master))

    def __enter__(self):
        self.bus.__enter__()
        try:
            self.execs.__enter__()
        except BaseException:
            self.bus.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info):
        try:
            self.execs.__exit__(*exc_info)
        finally:
            self.bus.__exit__(*exc_info)

    @property
    def findings(self):
        return _unique([*self.bus.findings, *self.execs.findings])

    def __str__(self):
        return (f"{self.bus.events} events, {self.execs.execs} processes started ({self.execs.gone} gone before "
                f"their argv was read, {self.execs.overflows} kernel overflows)")
