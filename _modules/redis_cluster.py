"""
Inspect and adjust the local Redis node of the deployment described in pillar ``redis``.

The password comes from pillar ``redis:password`` and is handed to redis-py in memory:
it never appears on a command line, in a return value or in a log line.

Works with Redis 6.2 and later (CONFIG GET takes several names only from 7.0 on: older
servers are asked one name at a time).

:depends: redis (redis-py)
"""

import logging
import os
import time

from salt.exceptions import CommandExecutionError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_cluster"

# Directives whose values never leave the minion (returns, logs, state changes).
SECRET_DIRECTIVES = frozenset(("requirepass", "masterauth"))
# Directives holding a path: the running server reports its real path (getcwd).
PATH_DIRECTIVES = frozenset(("dir",))


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_cluster: the redis Python library (redis-py) is not installed")
    return __virtualname__


def _settings():
    return __pillar__.get("redis", {}) or {}


def _port(port=None):
    return int(port or _settings().get("port", 6379))


def _client(port=None, timeout=5):
    settings = _settings()
    return redis.Redis(
        host="127.0.0.1",
        port=_port(port),
        password=settings.get("password") or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        # Our callers poll or decide themselves; redis-py's default retries would
        # stretch every timeout (and retry refused passwords) by seconds.
        retry=Retry(NoBackoff(), 0),
    )


def _error_text(exc):
    """A one-line description of a redis-py error, safe to return (no password in it)."""
    return f"{type(exc).__name__}: {exc}"


def _connection_refused(exc):
    """Nothing listens where we connected: the OS refused the connection."""
    seen = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "Connection refused" in str(exc)


def _is_auth_failure(exc):
    """The server answers but refuses the deployment's password (or has none set)."""
    if isinstance(exc, redis.AuthenticationError):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))


def _failure(exc):
    """What kind of trouble a redis-py error tells of, for callers that must decide whether a
    restart may help: ``refused`` (nothing listens), ``auth`` (the password is refused),
    ``loading``, ``busy`` (a script or module command holds the server), ``maxclients``,
    ``timeout`` (no answer in time: stopped, swapping, or blocked) or ``error``."""
    text = str(exc)
    if _is_auth_failure(exc):
        return "auth"
    if isinstance(exc, redis.BusyLoadingError):
        return "loading"
    if isinstance(exc, redis.TimeoutError):
        return "timeout"
    if "max number of clients reached" in text:
        return "maxclients"
    if isinstance(exc, redis.ResponseError) and text.startswith("BUSY "):
        return "busy"
    if isinstance(exc, redis.ConnectionError) and _connection_refused(exc):
        return "refused"
    return "error"


def _config_get(client, names):
    """``{directive: value}`` for ``names``: one CONFIG GET (Redis 7), or one per name
    (Redis 6.2 answers several names with "wrong number of arguments")."""
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


def _same(directive, running, wanted):
    if running is None:
        return False
    if directive in PATH_DIRECTIVES:
        # A symlinked data directory is the same directory: compare where both lead.
        return os.path.realpath(str(running)) == os.path.realpath(str(wanted))
    return str(running) == str(wanted)


def status():
    """
    Report what this node is and how it is doing: role and mode from the deployment,
    then ping, version, memory against maxmemory and number of keys from the live server.
    When the deployment's pillar failed (``redis:error``), says so and why.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.status
    """
    settings = _settings()
    result = {"role": settings.get("role", "none"), "mode": settings.get("mode", "none")}
    if settings.get("error"):
        result["error"] = f"deployment pillar failed: {settings['error']}"
        return result
    if result["role"] not in ("cluster-node", "master", "replica"):
        result["comment"] = "this minion runs no Redis server of the deployment"
        return result
    result["address"] = f"{settings.get('bind_ip', '127.0.0.1')}:{settings.get('port', 6379)}"
    try:
        client = _client()
        info = client.info()  # answers only with the password: no separate PING needed
        keys = client.dbsize()
    except redis.RedisError as exc:
        result.update({"ping": False, "error": _error_text(exc)})
        return result
    result.update(
        {
            "ping": True,
            "version": info.get("redis_version"),
            "uptime_seconds": info.get("uptime_in_seconds"),
            "redis_mode": info.get("redis_mode"),
            "cluster_enabled": bool(info.get("cluster_enabled")),
            "replication_role": info.get("role"),
            "used_memory": info.get("used_memory"),
            "used_memory_human": info.get("used_memory_human"),
            "maxmemory": info.get("maxmemory"),
            "maxmemory_human": info.get("maxmemory_human"),
            "maxmemory_policy": info.get("maxmemory_policy"),
            "connected_clients": info.get("connected_clients"),
            "keys": keys,
        }
    )
    return result


def config_diff(settings, port=None, timeout=5):
    """
    Compare the running server's configuration with ``settings`` (directive -> value).

    Returns ``{"reachable", "auth_failed", "loading": bool, "failure", "error": str,
    "differs": [...], "running": {...}}``. ``failure`` is empty when the server answered,
    else one of ``refused`` (nothing listens on the port), ``auth`` (the password is
    refused), ``loading``, ``busy``, ``maxclients``, ``timeout`` (no answer within
    ``timeout`` seconds) or ``error``. ``loading`` is also true when the server answered
    but is still loading its data. ``running`` holds the running values of the differing
    directives, except the password directives: nothing secret leaves the minion. A
    ``dir`` that leads to the same directory (symlinks) does not differ.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.config_diff '{"maxclients": 10000}'
    """
    try:
        client = _client(port, timeout=float(timeout))
        running = _config_get(client, list(settings))
        differs = [d for d, value in settings.items() if not _same(d, running.get(d), value)]
        loading = bool(differs) and bool(client.info("persistence").get("loading"))
    except redis.RedisError as exc:
        failure = _failure(exc)
        return {
            "reachable": False,
            "auth_failed": failure == "auth",
            "loading": failure == "loading",
            "failure": failure,
            "error": _error_text(exc),
            "differs": sorted(settings),
            "running": {},
        }
    return {
        "reachable": True,
        "auth_failed": False,
        "loading": loading,
        "failure": "",
        "error": "",
        "differs": differs,
        "running": {d: running.get(d) for d in differs if d not in SECRET_DIRECTIVES},
    }


def config_set(settings, port=None):
    """
    Apply ``settings`` (directive -> value) to the running server with CONFIG SET.

    Returns ``{"applied": [directive, ...], "refused": {directive: Redis's reason}}``;
    values are never echoed, so a refused password stays secret. Raises
    CommandExecutionError when the server cannot be reached or does not answer.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.config_set '{"maxclients": 20000}'
    """
    client = _client(port)
    result = {"applied": [], "refused": {}}
    for directive, value in settings.items():
        try:
            client.config_set(directive, value)
            result["applied"].append(directive)
        except redis.ResponseError as exc:
            if _failure(exc) != "error":  # BUSY, NOAUTH...: the server, not the setting
                raise CommandExecutionError(_unusable(exc, port, result["applied"])) from None
            reason = str(exc) if directive not in SECRET_DIRECTIVES else "refused"
            result["refused"][directive] = reason
        except redis.RedisError as exc:
            raise CommandExecutionError(_unusable(exc, port, result["applied"])) from None
    return result


def _unusable(exc, port, applied):
    done = f" (already applied: {', '.join(applied)})" if applied else ""
    return f"Redis on 127.0.0.1:{_port(port)} cannot take CONFIG SET: {_error_text(exc)}{done}"


def wait_ready(timeout=30, port=None):
    """
    Wait until the local server answers PING with the deployment's password and has
    finished loading its data. Returns True when it does within ``timeout`` seconds.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.wait_ready timeout=10
    """
    deadline = time.monotonic() + float(timeout)
    while True:
        remaining = deadline - time.monotonic()
        try:
            # INFO needs the password, so one call answers "up, ours, and done loading?".
            client = _client(port, timeout=max(0.1, min(2.0, remaining)))
            if not client.info("persistence").get("loading"):
                return True
        except redis.RedisError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
