"""
Inspect and adjust the local Redis node of the deployment described in pillar ``redis``.

The password comes from pillar ``redis:password`` and is handed to redis-py in memory:
it never appears on a command line, in a return value or in a log line.

:depends: redis (redis-py)
"""

import logging
import time

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_cluster"


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_cluster: the redis Python library (redis-py) is not installed")
    return __virtualname__


def _settings():
    return __pillar__.get("redis", {}) or {}


def _client(port=None, timeout=5):
    settings = _settings()
    return redis.Redis(
        host="127.0.0.1",
        port=int(port or settings.get("port", 6379)),
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


def _is_auth_failure(exc):
    """The server answers but refuses the deployment's password (or has none set)."""
    if isinstance(exc, redis.AuthenticationError):
        return True
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and "AUTH" in text  # also matches NOAUTH


def status():
    """
    Report what this node is and how it is doing: role and mode from the deployment,
    then ping, version, memory against maxmemory and number of keys from the live server.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.status
    """
    settings = _settings()
    result = {"role": settings.get("role", "none"), "mode": settings.get("mode", "none")}
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


def config_diff(settings, port=None):
    """
    Compare the running server's configuration with ``settings`` (directive -> value).

    Returns ``{"reachable", "auth_failed", "loading": bool, "error": str, "differs": [...]}``.
    Values are not returned, so nothing secret leaves the minion.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.config_diff '{"maxclients": 10000}'
    """
    try:
        client = _client(port)
        running = client.config_get(*settings) if settings else {}  # one round trip (Redis 7)
    except redis.RedisError as exc:
        return {
            "reachable": False,
            "auth_failed": _is_auth_failure(exc),
            "loading": isinstance(exc, redis.BusyLoadingError),
            "error": _error_text(exc),
            "differs": sorted(settings),
        }
    differs = [d for d, value in settings.items() if str(running.get(d, "")) != str(value)]
    return {"reachable": True, "auth_failed": False, "loading": False, "error": "", "differs": differs}


def config_set(settings, port=None):
    """
    Apply ``settings`` (directive -> value) to the running server with CONFIG SET.

    Returns ``{"applied": [directive, ...], "refused": {directive: Redis's reason}}``;
    values are never echoed, so a refused password stays secret.

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
            reason = str(exc) if directive not in ("requirepass", "masterauth") else "refused"
            result["refused"][directive] = reason
    return result


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
        try:
            # INFO needs the password, so one call answers "up, ours, and done loading?".
            if not _client(port, timeout=2).info("persistence").get("loading"):
                return True
        except redis.RedisError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
