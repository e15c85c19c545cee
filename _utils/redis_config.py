"""
Redis configuration files as Redis reads them, in one place for the states and the execution
module (Salt's ``_utils``; modules reach it as ``__utils__["redis_config.<name>"]``; a state
module's own functions are out of an execution module's reach):

- the directives of a config file's lines, and a line's arguments unquoted as Redis does;
- which directives Redis reads only at start (a change needs a restart);
- the values a config file gives to some directives;
- what the running server's configuration (CONFIG GET) differs on from wanted settings;
- a config file read as root without following what the redis account could have planted.
"""

import errno
import os
import stat

try:
    import redis

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

__virtualname__ = "redis_config"

# Directives Redis cannot change at run time (or that we refuse to change live).
RESTART_DIRECTIVES = frozenset(
    ("daemonize", "pidfile", "logfile", "dir", "cluster-enabled", "cluster-config-file", "port", "bind",
     "tls-port", "tls-cluster", "tls-replication")
)
# What switches a server between plain TCP and TLS. Redis 7 changes them all at run time, in
# one CONFIG SET (redis_node.switch_tls): such a switch needs no restart.
TLS_SWITCH_DIRECTIVES = frozenset(("port", "tls-port", "tls-cluster", "tls-replication"))
# Other names of directives Salt manages, as some servers write them (Valkey's CONFIG
# REWRITE writes `primaryauth` for masterauth).
DIRECTIVE_ALIASES = {"primaryauth": "masterauth"}
# Directives whose values never leave the minion (returns, logs, state changes).
SECRET_DIRECTIVES = frozenset(("requirepass", "masterauth"))
# Directives holding a path: the running server reports its real path (getcwd).
PATH_DIRECTIVES = frozenset(("dir",))


def __virtual__():
    return __virtualname__


def start_only(directives, switch=None):
    """The directives among ``directives`` that Redis reads only at start, sorted; during a
    switch between plain TCP and TLS (``switch``: see :func:`tls_switch`) those of the
    switch are not."""
    restart = RESTART_DIRECTIVES - TLS_SWITCH_DIRECTIVES if switch else RESTART_DIRECTIVES
    return sorted(set(directives) & restart)


def tls_switch(running, settings, version):
    """``"tls"`` or ``"plain"`` when the server (``running``: CONFIG GET, ``tls-port``
    included; ``version``: its ``redis_version``) speaks the other protocol than ``settings``
    ask for, and can switch at run time (Redis 7 and later; 6.2 reads ports only at start);
    else None."""
    speaks_tls = str(running.get("tls-port") or "0") not in ("", "0")
    wants_tls = str(settings.get("tls-port") or "0") not in ("", "0")
    if speaks_tls == wants_tls or int(str(version).split(".", 1)[0] or 0) < 7:
        return None
    return "tls" if wants_tls else "plain"


def directives(lines):
    """``[(line index, directive, arguments)]`` for every non-comment line of a Redis config."""
    found = []
    for index, line in enumerate(lines):
        words = line.split(None, 1)
        if words and not words[0].startswith("#"):
            directive = words[0].lower()
            argument = words[1].strip() if len(words) > 1 else ""
            found.append((index, DIRECTIVE_ALIASES.get(directive, directive), argument))
    return found


def _is_hex(text):
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def config_args(text):
    """The arguments of a Redis config line, unquoted as Redis reads them (sdssplitargs)."""
    args, i = [], 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        current, quote = "", text[i] if text[i] in "\"'" else None
        i += 1 if quote else 0
        while i < len(text):
            char = text[i]
            if quote == '"' and text[i : i + 2] == "\\x" and _is_hex(text[i + 2 : i + 4]):
                current += chr(int(text[i + 2 : i + 4], 16))
                i += 3
            elif quote == '"' and char == "\\" and i + 1 < len(text):
                i += 1
                current += {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}.get(text[i], text[i])
            elif quote == "'" and char == "\\" and text[i + 1 : i + 2] == "'":
                i += 1
                current += "'"
            elif char == quote or (not quote and char.isspace()):
                i += 1
                break
            else:
                current += char
            i += 1
        args.append(current)
    return args


def values(text, wanted):
    """``{directive: value}`` for the directives of ``wanted`` that the config ``text`` sets
    (the last line wins, as in Redis; arguments joined by one space, as CONFIG GET shows a
    ``bind`` list). Includes are not followed; only ``wanted`` lines are parsed."""
    found = {}
    for _, directive, argument in directives(text.splitlines()):
        if directive in wanted:
            found[directive] = " ".join(config_args(argument))
    return found


def open_file(path):
    """``(descriptor, stat)`` of the config file ``path`` opened for reading, or ``(None,
    None)`` when there is none.

    Raises ``OSError`` (its ``strerror`` says what to do) for a symbolic link, or anything
    but a regular file with a single link: /etc/redis is writable by the redis account, and
    root never reads or replaces through a name that account could have redirected (a FIFO
    does not block the open: O_NONBLOCK)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, f"{path} is a symbolic link: Salt does not follow links in a directory the "
                          "redis user can write; replace it with a regular file") from None
        raise OSError(exc.errno, f"{path} cannot be opened: {exc.strerror}") from None
    info = os.fstat(descriptor)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"{path} is not a regular file; replace it with one"
    elif info.st_nlink != 1:
        problem = (f"{path} has {info.st_nlink} hard links: Salt does not change a file that also stands "
                   "elsewhere; replace it with a file of its own")
    if problem:
        os.close(descriptor)
        raise OSError(errno.EINVAL, problem)
    return descriptor, info


def read_file(path):
    """``(text, stat)`` of the config file ``path`` (opened as :func:`open_file` does), or
    ``(None, None)`` when there is none. Raises ``OSError`` as :func:`open_file` does."""
    descriptor, info = open_file(path)
    if descriptor is None:
        return None, None
    try:
        chunks = []
        while True:
            chunk = os.read(descriptor, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "surrogateescape"), info
    finally:
        os.close(descriptor)


def file_values(path, wanted):
    """:func:`values` of the config file ``path`` (read as :func:`read_file` does), or ``{}``
    when it is missing or unsafe to read."""
    try:
        text, _ = read_file(path)
    except OSError:
        return {}
    return values(text, wanted) if text is not None else {}


def secret(directive):
    """The directive's value must never leave the minion (returns, logs, state changes)."""
    return directive in SECRET_DIRECTIVES


def config_get(client, names):
    """``{directive: value}`` for ``names``: one CONFIG GET (Redis 7), or one per name
    (Redis 6.2 answers several names with "wrong number of arguments")."""
    names = list(names)
    if not names:
        return {}
    try:
        return client.config_get(*names)
    except redis.ResponseError as exc:
        if len(names) == 1 or "wrong number of arguments" not in str(exc).lower():
            raise
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.config_get(name)
    running = {}
    for answer in pipe.execute():
        running.update(answer)
    return running


def same(directive, running, wanted):
    """The running value is the wanted one (a symlinked ``dir`` is the directory it leads to)."""
    if running is None:
        return False
    if directive in PATH_DIRECTIVES:
        return os.path.realpath(str(running)) == os.path.realpath(str(wanted))
    return str(running) == str(wanted)


def running_diff(client, settings):
    """What the server behind ``client`` differs on from ``settings`` (directive -> value):
    ``{"differs": [...], "running": {directive: value} (secrets left out), "loading": bool,
    "tls_switch": "tls" | "plain" | None}`` (:func:`tls_switch`).
    A start-only directive CONFIG GET does not show (Redis 6.2 hides cluster-config-file)
    cannot be compared, before or after a restart: it never differs. Raises redis-py's errors."""
    running = config_get(client, list(dict.fromkeys([*settings, "tls-port"])))
    unseen = start_only(d for d in settings if d not in running)
    differs = [d for d, value in settings.items() if d not in unseen and not same(d, running.get(d), value)]
    loading = bool(differs) and bool(client.info("persistence").get("loading"))
    switch = None
    if set(differs) & TLS_SWITCH_DIRECTIVES:
        switch = tls_switch(running, settings, client.info("server").get("redis_version", "0"))
    return {"differs": differs, "loading": loading, "tls_switch": switch,
            "running": {d: running.get(d) for d in differs if d not in SECRET_DIRECTIVES}}
