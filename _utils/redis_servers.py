"""
The servers a deployment may run (``cache.redis.server``) and what each distribution's
packages call them: the one table of package, unit, path, account and tool names per
server. The ext_pillar (_pillar/redis_deployment.py, which loads this file by path) puts
the chosen server's names into pillar ``redis``; map.jinja layers pillar over its OS
defaults, so the SLS files and our modules read them from there.

Redis's names are the OS defaults in map.jinja (Debian's, and RHEL's in its osfamilymap);
a server other than Redis overrides them with the names below. Valkey keeps Redis's
protocol, configuration directives, RDB/AOF formats up to its own version and tools'
behaviour (``valkey-cli`` reads ``REDISCLI_AUTH``; its server binary answers to the
``redis-check-rdb``/``redis-check-aof`` names too), so only names differ.
"""

SERVERS = ("redis", "valkey")
DEFAULT_SERVER = "redis"

# What each distribution's own archive offers, by (os_family grain, major release), as
# checked on the releases named (FACTS.md): Debian 12 has Redis 7.0 only; Debian 13 has
# Redis 8.0 and Valkey 8.1. A distribution not listed is not refused anything (its
# package manager will say what it lacks).
OFFERED = {
    ("Debian", 12): ("redis",),
    ("Debian", 13): ("redis", "valkey"),
}

# The names a server other than Redis gives its parts (Debian's valkey-server,
# valkey-sentinel and valkey-tools 8.1 packages, Debian 13). Keys are map.jinja's.
NAMES = {
    "valkey": {
        "pkgs": ["valkey-server", "valkey-sentinel", "valkey-tools"],
        "sentinel_pkgs": ["valkey-sentinel", "valkey-tools"],
        "service": "valkey-server",
        "sentinel_service": "valkey-sentinel",
        "user": "valkey",
        "group": "valkey",
        "conf_dir": "/etc/valkey",
        "config_file": "/etc/valkey/valkey.conf",
        "sentinel_config_file": "/etc/valkey/sentinel.conf",
        "data_dir": "/var/lib/valkey",
        "log_dir": "/var/log/valkey",
        "run_dir": "/run/valkey",
        "logfile": "/var/log/valkey/valkey-server.log",
        "pidfile": "/run/valkey/valkey-server.pid",
        "sentinel_logfile": "/var/log/valkey/valkey-sentinel.log",
        "sentinel_pidfile": "/run/sentinel/valkey-sentinel.pid",
        "server_binary": "/usr/bin/valkey-server",
        "cli": "valkey-cli",
    },
}

# The same names for Redis on Debian (map.jinja's defaults): what our modules fall back to
# when pillar does not name a part (a minion without the deployment's pillar).
REDIS_NAMES = {
    "service": "redis-server",
    "sentinel_service": "redis-sentinel",
    "user": "redis",
    "group": "redis",
    "conf_dir": "/etc/redis",
    "config_file": "/etc/redis/redis.conf",
    "sentinel_config_file": "/etc/redis/sentinel.conf",
    "data_dir": "/var/lib/redis",
    "server_binary": "/usr/bin/redis-server",
    "cli": "redis-cli",
}


def names(server):
    """The map.jinja keys ``server`` overrides (``{}`` for Redis: map.jinja's OS defaults)."""
    return {key: list(value) if isinstance(value, list) else value for key, value in NAMES.get(server, {}).items()}


def name(settings, key):
    """Pillar ``redis``'s name for ``key`` (``service``, ``cli``, ``server_binary``...), else
    Debian Redis's."""
    return (settings or {}).get(key) or REDIS_NAMES[key]


def distribution(grains):
    """``(os_family, major release)`` of a minion's grains, e.g. ``("Debian", 13)``, or None."""
    family = (grains or {}).get("os_family")
    release = (grains or {}).get("osmajorrelease")
    try:
        return (str(family), int(release)) if family and release is not None else None
    except (TypeError, ValueError):
        return None


def offered(grains):
    """The servers a minion's distribution offers, or None when this table does not know it."""
    return OFFERED.get(distribution(grains))


def refusal(server, grains, host):
    """Why ``host`` (its grains) cannot run ``server``, or None when it can (or when its
    distribution is not in OFFERED)."""
    offers = offered(grains)
    if offers is None or server in offers:
        return None
    family, release = distribution(grains)
    shown = f"{(grains or {}).get('os') or family} {release}"
    return (f"host {host} runs {shown}, whose packages offer {' and '.join(offers)} only, not {server}: "
            f"set cache.redis.server to {' or '.join(offers)}, or move {host} to a distribution that ships "
            f"{server} (Debian 13 ships both)")


def running(info):
    """``(server, version)`` of a live server from its ``INFO server``: Valkey says
    ``server_name:valkey`` and its own ``valkey_version`` (its ``redis_version`` stays at the
    7.2.4 it forked from); Redis says neither."""
    server = str((info or {}).get("server_name") or "redis").lower()
    version = (info or {}).get(f"{server}_version") or (info or {}).get("redis_version")
    return server, str(version) if version is not None else None
