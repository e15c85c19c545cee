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

import re

SERVERS = ("redis", "valkey")

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
    "pkgs": ["redis-server", "redis-sentinel", "redis-tools"],
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


# The RDB format each server version writes (the dump's header: REDIS0010, VALKEY080), from
# Redis's and Valkey's rdb.h (RDB_VERSION); measured here for Redis 6.2.14 (9), 7.0.15 (10),
# 8.0.2 (12) and Valkey 8.1.1 (11) and 9.1.2 (80). Replication, MIGRATE (slot moves) and a
# restore all send this format: a server loads only what it knows (FACTS.md: 7.0 -> 8.0,
# 7.0 -> Valkey 8.1 and Valkey 8.1 -> 8.0 work; 8.0 -> 7.0, Valkey 8.1 -> 7.0 and
# 8.0 -> Valkey 8.1 fail with "DUMP payload version or checksum are wrong").
RDB_FORMATS = {
    "redis": {(6, 0): 9, (6, 2): 9, (7, 0): 10, (7, 2): 11, (7, 4): 12, (8, 0): 12},
    "valkey": {(7, 2): 11, (8, 0): 11, (8, 1): 11, (9, 0): 80, (9, 1): 80},
}
# The last format Redis and Valkey share: Redis 7.4 went on to 12, Valkey 9 jumped to 80
# and leaves 12-79 to Redis (a Valkey loads none of those).
SHARED_FORMATS_END = 11


def release(version):
    """``(major, minor)`` of a version string (``"8.1.1"`` -> ``(8, 1)``), or None."""
    try:
        major, minor = str(version).split(".")[:2]
        return int(major), int(minor)
    except (TypeError, ValueError):
        return None


def rdb_format(server, version):
    """The RDB format ``server`` at ``version`` writes, or None when this table does not know it."""
    return RDB_FORMATS.get(server, {}).get(release(version))


def loads(server, version, rdb):
    """Whether ``server`` at ``version`` loads RDB format ``rdb``: True, False, or None when
    its own format is unknown. Redis loads every format up to its own (below Valkey's 80);
    Valkey those up to 11 and its own."""
    own = rdb_format(server, version)
    if own is None or rdb is None:
        return None
    if server == "valkey":
        return rdb <= min(own, SHARED_FORMATS_END) or rdb == own
    return rdb <= own


def node(server, version):
    """``{"server", "version", "rdb_format"}`` of one node, as status and backup metadata show it."""
    return {"server": server, "version": version, "rdb_format": rdb_format(server, version)}


def shown(identity):
    """``valkey 8.1.1 (RDB 11)`` for a node()."""
    rdb = identity.get("rdb_format")
    return f"{identity.get('server')} {identity.get('version')} (RDB {rdb if rdb is not None else 'format unknown'})"


def move_refused(source, target, what="data"):
    """Why ``what`` must not move from ``source`` to ``target`` (each a node() with its
    ``name``), or None when the target loads the source's format. An unknown format is
    refused too: a move that fails half-way leaves keys behind."""
    can = loads(target.get("server"), target.get("version"), source.get("rdb_format"))
    if can:
        return None
    why = ("cannot load it" if can is False
           else "whose formats this formula does not know (see _utils/redis_servers.py)")
    return (f"{what} would move from {source.get('name')} ({shown(source)}) to {target.get('name')} "
            f"({shown(target)}), {why}: data only moves towards a server that reads its format "
            "(an older or equal format; never from Redis 7.4+ to Valkey, nor from Valkey 9 to Redis); "
            "move it the other way, or upgrade the target first")


# Redis 8.0 and Valkey 8.x give the same cluster-bus ping extension (type 4) two meanings:
# Redis 8 sends its cluster's internal secret there, Valkey reads it as the sender's client
# IPv4. Measured here (Redis 8.0.2 with Valkey 8.1.1): every Valkey node then lists each
# Redis 8 node at "<40-hex secret>:port" for good (CLUSTER NODES, SLOTS, MOVED replies), its
# clients are sent to that name, `--cluster check`/`rebalance` entered at a Valkey node drop
# those nodes, and the secret, once printed, logs in to the Redis 8 nodes past their password
# (AUTH "internal connection" <secret>). No such cluster may ever meet.
BUS_CLASH_SINCE = {"redis": (8, 0), "valkey": (8, 0)}


def bus_refused(first, second):
    """Why the nodes ``first`` and ``second`` (node()s with their ``name``) must never be in one
    cluster, or None: a Valkey 8+ and a Redis 8+ node (see BUS_CLASH_SINCE). A node whose
    version is unknown is not refused here (its format is, wherever data would move)."""
    kinds = {first.get("server"), second.get("server")}
    if kinds != {"redis", "valkey"}:
        return None
    for identity in (first, second):
        version = release(identity.get("version"))
        if version is None or version < BUS_CLASH_SINCE[identity.get("server")]:
            return None
    return (f"{first.get('name')} ({shown(first)}) and {second.get('name')} ({shown(second)}) must never share a "
            "cluster: Redis 8 and Valkey 8 read each other's cluster-bus messages differently (Valkey shows the "
            "Redis nodes' internal secret as their address, sends clients there, and that secret logs in past "
            "the password); keep a cluster on one of them, or Redis 7.x beside Valkey")


def upstream(package_version):
    """The server's own version in a package version: ``5:8.0.2-3+deb13u3`` -> ``8.0.2``,
    ``8.1.1+dfsg1-3`` -> ``8.1.1`` ('' for none)."""
    return re.sub(r"^\d+:", "", str(package_version or "")).split("-")[0].split("+")[0].split("~")[0]


def upgrade_plan(nodes):
    """
    Which nodes an in-place package upgrade changes, or why it must not start: the pure part
    of ``salt-run redis_deployment.upgrade``.

    ``nodes``: ``[{"name", "server", "installed" (the server package's version), "target"
    (the version it would go to), "cmp" (target against installed: -1, 0, 1), "version" (the
    server version running now, or the installed one's), "selected" (in ``nodes=``),
    "witness" (runs a Sentinel only: no data), "unavailable" (why the target is not offered,
    or None)}]``.

    Returns ``{"upgrade": [names], "refused": [why]}``; a refusal means nothing is to change:

    - a target the node's archive does not offer;
    - a target older than the installed version (a downgrade: an older server may not load
      what the newer one wrote);
    - a deployment whose servers, after the upgrade, would not all load each other's RDB
      format: a failover (the roll's own, or any later one) makes any server the master of
      the others, and a replica that cannot load its master's format never syncs.
    """
    refused, upgrade = [], []
    for one in nodes:
        if one.get("unavailable"):
            refused.append(f"{one['name']}: {one['unavailable']}")
        elif one.get("cmp") is not None and one["cmp"] < 0:
            refused.append(f"{one['name']}: {one['target']} is older than the installed {one['installed']}: "
                           "a downgrade; an older server may not load what the newer one wrote (restore a "
                           "backup onto a rebuilt node instead)")
        elif one.get("selected") and (one.get("cmp") or 0) > 0:
            upgrade.append(one["name"])
    after = [dict(node(n["server"], upstream(n["target"]) if n["name"] in upgrade else n["version"]), name=n["name"])
             for n in nodes if not n.get("witness")]
    if any(a["name"] in upgrade for a in after):
        for source in after:
            for target in after:
                if source is target or (source["server"], release(source["version"])) == (
                        target["server"], release(target["version"])):
                    continue
                why = move_refused(source, target, "data")
                if why:
                    refused.append(f"after the upgrade, {why.split(': data only moves')[0]}: every server "
                                   "must load every other's format (a failover makes any of them the master); "
                                   "upgrade the nodes to versions that share a format, all of them together")
    return {"upgrade": upgrade if not refused else [], "refused": refused}


# Characters a server's CONFIG REWRITE writes back unescaped inside the quotes of
# `requirepass`: measured on Valkey 8.1.1 (Debian 13), which turns `it "pass" \ word` into
# `requirepass "it "pass" \ word"`; its next start then fails ("Unbalanced quotes in
# configuration line", the line echoed into its log) or reads another password. Redis 7.0
# and 8.0 and Valkey 9.1 escape them. Redis, Valkey and Sentinel all rewrite on their own
# (a failover), so such a password is refused up front for that server.
UNESCAPED_IN_REWRITE = {"valkey": ('"', "\\")}


def password_refusal(server, password):
    """Why ``server`` cannot keep ``password`` in its configuration file, or None."""
    found = [char for char in UNESCAPED_IN_REWRITE.get(server, ()) if char in (password or "")]
    if not found:
        return None
    shown = " and ".join(repr(char) for char in found)
    return (f"expected a password without {shown} for cache.redis.server {server}: Valkey 8.1's CONFIG REWRITE "
            "(which Redis, Sentinel and Salt run) writes it back unescaped and the server then fails to start")
