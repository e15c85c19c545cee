"""
External pillar: the Redis deployment's shape, computed from my_multihead_cluster.yaml.

This module is the one place that turns the operator's YAML into the deployment's
shape (mode, roles, peers, initial master, slot plan, memory limits). The salt-master
calls it at pillar-render time, so there is no generated file to go stale.

Master configuration:

.. code-block:: yaml

    ext_pillar:
      - redis_deployment:
          config: /etc/salt/my_multihead_cluster.yaml

Pillar keys an operator sets under ``redis:`` in ordinary pillar files override the
computed ones (``redis:maxmemory`` may carry Redis's memory units, e.g. ``2gb``).

A controller is the minion whose id equals its ``minion_id`` (default: its ``hostname``),
or whose id's first label does (``server1.example.org`` is ``server1``). The minion's
``ipv4`` grain (``ipv6`` for an IPv6 controller) must hold the controller's ``ip_address``.

Any mistake (in the YAML, an override, or a minion that does not fit its controller)
gives that minion the pillar ``redis: {error: <one line>, role: none, mode: none}`` and
no password: the Redis states fail with that line, other formulas' states still run.
A key under ``cache.redis`` that the formula does not read is such a mistake too: a typo
must not run with the default.

The pure functions (:func:`load_deployment`, :func:`node_pillar`) need no Salt and are
imported directly by the lab and the unit tests.
"""

import copy
import difflib
import functools
import hashlib
import importlib.util
import ipaddress
import logging
import math
import os
import re
import ssl
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

__virtualname__ = "redis_deployment"

TOTAL_SLOTS = 16384
MODES = ("auto", "cluster", "sentinel")
MAXMEMORY_POLICIES = (
    "volatile-lru",
    "allkeys-lru",
    "volatile-lfu",
    "allkeys-lfu",
    "volatile-random",
    "allkeys-random",
    "volatile-ttl",
    "noeviction",
)
COMPRESSIONS = ("gzip", "zstd", "none")
# Where a minion's synced modules of each kind live (below its extension_modules) -> our folder.
EXTENSION_FOLDERS = {"modules": "_modules", "states": "_states", "utils": "_utils", "beacons": "_beacons",
                     "grains": "_grains"}
DEFAULTS = {
    "mode": "auto",
    "port": 6379,
    "sentinel_port": 26379,
    "maxmemory_percent": 25,
    "maxmemory_policy": "allkeys-lru",
    "maxclients": 10000,
    "replicas_per_master": 0,
    "master_name": "mymaster",
    "cluster_node_timeout_ms": 5000,
    # The budget of one cluster rebalance (growth: slots and keys moved onto new masters),
    # separate from formation's: moving the keys takes as long as the data is large.
    "cluster_rebalance_timeout_s": 3600,
    "cluster_require_full_coverage": True,
    # Sentinel mode: 0 = off. With one replica, 1 stops every write while the replica is down.
    "min_replicas_to_write": 0,
    "min_replicas_max_lag": 10,
    # The host settings Redis asks for (salt/redis/sysctl.sls): `apply` them, or only `report`
    # those global to a machine (overcommit, transparent huge pages), as on a shared machine.
    "host_baseline": "apply",
    # salt/redis/firewall.sls: the Redis, cluster bus and Sentinel ports open to the members,
    # these networks and loopback only.
    "firewall": False,
    "client_networks": [],
    # TLS on every Redis port (salt/redis/tls.sls): absent or null = plain TCP.
    "tls": None,
    # Which server the distribution's packages provide it from (_utils/redis_servers.py).
    "server": "redis",
    # Hosts that run another server than `server` (hostname: server): a fleet part-way
    # through `salt-run redis_deployment.replace_hosts`, whose old hosts keep theirs.
    "server_by_host": {},
}
# cache.redis.tls: certificate files already on the minions, or `issue: true` (the master's
# CA, _pillar/redis_certificates.py). `plain_port: true` keeps the plain port open too (a
# migration); `days_valid`: an issued host certificate's lifetime, renewed with a third left.
TLS_FILE_KEYS = ("cert_file", "key_file", "ca_file")
# Where salt/redis/tls.sls puts what Salt issued, the same on every distribution: a directory
# of its own that the monitoring users may enter (the certificates are public; the key is
# root's and the redis group's), as /etc/redis-salt is closed to them.
TLS_ISSUED_FILES = {"cert_file": "/etc/redis-tls/redis.crt", "key_file": "/etc/redis-tls/redis.key",
                    "ca_file": "/etc/redis-tls/ca.crt"}
TLS_DEFAULTS = {"issue": False, "plain_port": False, "days_valid": 365}
TLS_PLAIN_PORT = "expected false, or the port number where plain TCP stays open during a migration"
HOST_BASELINES = ("apply", "report")
SENTINEL_DEFAULTS = {"down_after_ms": 5000, "failover_timeout_ms": 60000, "witnesses": []}
BACKUP_DEFAULTS = {
    "dir": "/var/backups/redis",
    "retention_days": 7,
    "compress": "gzip",
    # None (key absent): the original document's cron plan; []: no scheduled backups.
    "schedule": None,
    "copy_to": None,
    # Retention keeps, whatever the clock says, at least this many good backups per type
    # (and set manifests, and copies in copy_to), besides those within retention_days.
    "keep_min": 2,
    # Days the previous data's safety copies of restores are kept (always the newest one).
    "safety_copy_days": 7,
}
# cache.redis.monitoring: the thresholds of `redis_cluster.health` (pillar redis:monitoring;
# _utils/redis_health.py has the same defaults). name -> (default, kind, low, high).
MONITORING_DEFAULTS = {
    "memory_warning_percent": 90,
    "memory_critical_percent": 98,
    "evictions_per_second": 1000,
    "clients_warning_percent": 90,
    "hit_rate_minimum": 0.8,
    "hit_rate_min_lookups": 1000,
    "replication_lag_seconds": 30,
    "slowlog_new_entries": 10,
    "socket_timeout_seconds": 2,
    "backup_grace_minutes": 60,
    # Salt's scheduler runs the check this often and fires redis/health/<minion> when the
    # status changes (0: no scheduled check); a status still CRITICAL is said again this often.
    "health_interval_minutes": 5,
    "critical_reminder_minutes": 60,
    "exporter": False,
    # The group that may run /usr/local/bin/redis_health (read its settings file): created if
    # missing; Nagios's NRPE user (nagios) joins it.
    "group": "redis-monitoring",
}
MONITORING_LIMITS = {
    "memory_warning_percent": ("number", 1, 100),
    "memory_critical_percent": ("number", 1, 100),
    "evictions_per_second": ("number", 0, 10_000_000),
    "clients_warning_percent": ("number", 1, 100),
    "hit_rate_minimum": ("number", 0, 1),
    "hit_rate_min_lookups": ("integer", 0, 10**12),
    "replication_lag_seconds": ("number", 1, 86_400),
    "slowlog_new_entries": ("integer", 0, 10**9),
    "socket_timeout_seconds": ("number", 0.1, 60),
    "backup_grace_minutes": ("number", 0, 10_080),
    "health_interval_minutes": ("integer", 0, 1440),
    "critical_reminder_minutes": ("integer", 1, 10_080),
}
# The keys cache.redis may hold. Anything else is an error: a typo must not run with the
# default (`maxmemroy_percent: 50` would run with 25 %).
SETTINGS_KEYS = (
    *DEFAULTS, "password", "previous_password", "force_password_change", "acl", "sentinel", "backup", "monitoring"
)
# Keys of the public interface whose feature this formula does not build yet: refused, so
# nobody believes such a feature is on.
NOT_SUPPORTED_YET = ()
# Keys an operator sets under `redis:` in ordinary pillar (pillar.example), never in the YAML.
PILLAR_ONLY = ("maxmemory", "cluster_form_timeout_s")
# The keys of one cache.redis.backup.schedule entry, as _states/redis_backup.py reads them
# (BACKUP_KEYS and PRUNE_KEYS there; a backup entry may say `prune: false`).
SCHEDULE_BACKUP_KEYS = ("cron", "type", "compress", "retention_days", "prune")
SCHEDULE_PRUNE_KEYS = ("prune", "cron", "retention_days")
# Where Redis and Valkey keep their data and configuration (Debian's and RHEL's packages,
# salt/redis/map.jinja) and this formula its own settings: a backup directory there would
# have restore and prune work on the live files.
LIVE_DIRS = {
    "/var/lib/redis": "Redis's data directory",
    "/etc/redis": "Redis's configuration directory",
    "/var/lib/valkey": "Valkey's data directory",
    "/etc/valkey": "Valkey's configuration directory",
    "/etc/redis-salt": "this formula's settings directory",
}
PASSWORD_HIDDEN = "(hidden: only minions receive the password)"
KEY_HIDDEN = "(hidden: only its minion receives the private key)"
# What _pillar/redis_certificates.py uses of Salt's x509 (x509_v2) execution module.
X509_FUNCTIONS = ("x509.create_private_key", "x509.create_certificate", "x509.read_certificate", "x509.expires",
                  "x509.verify_signature")
# What an error message shows where the password would have been.
PASSWORD_IN_MESSAGE = "(the password)"
MISSING_CONFIG = "ext_pillar redis_deployment: expected option 'config' with the YAML's path"
# Roles that run a Sentinel in sentinel mode; how often the minion drains its events.
SENTINEL_ROLES = ("master", "replica", "sentinel-only")
SENTINEL_BEACON_INTERVAL_S = 2
# The grains that say which distribution a minion runs (what its packages offer).
OS_GRAINS = ("os", "os_family", "osmajorrelease")
# Roles that run redis-server (and so need maxmemory); sentinel-only runs a Sentinel only.
SERVER_ROLES = ("cluster-node", "master", "replica")
# Redis's memory units (memtoll in Redis's util.c), case-insensitive; no unit means bytes.
MEMORY_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
_MEMORY = re.compile(r"^\s*([0-9]+)\s*([A-Za-z]*)\s*$")
MAX_MEMORY_BYTES = 2**63 - 1  # msgpack (Salt's wire format) and Redis both stop at 64 bits
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
HOSTNAME_PATTERN = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class DeploymentError(ValueError):
    """The YAML does not describe a valid deployment; the message names file and key."""

    def __init__(self, path, key, expected):
        self.path, self.key, self.expected = path, key, expected
        super().__init__(f"{path}: {key}: {expected}")


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------- reading the YAML


def _expand(value, key, path, environ):
    """Expand ${VAR} in every string below value; an unset variable is an error."""
    if isinstance(value, str):

        def substitute(match):
            name = match.group(1)
            if name not in environ:
                raise DeploymentError(
                    path, key, f"environment variable {name} is not set in the salt-master's environment"
                )
            return environ[name]

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{key}.{k}", path, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{key}[{i}]", path, environ) for i, v in enumerate(value)]
    return value


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        raise DeploymentError(path, "(file)", f"cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise DeploymentError(path, where, f"is not valid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise DeploymentError(path, "(top level)", "expected a mapping with nodes.controllers and cache.redis")
    return document


def _mapping(value, key, path):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DeploymentError(path, key, f"expected a mapping, got {type(value).__name__}")
    return value


def _integer(settings, name, key, path, low, high):
    value = settings[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DeploymentError(path, key, f"expected an integer from {low} to {high}, got {value!r}")
    return value


def _choice(settings, name, key, path, choices):
    value = settings[name]
    if value not in choices:
        raise DeploymentError(path, key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _refuse_unknown_keys(mapping, valid, key, path, refused=None, kind=""):
    """The first key of `mapping` (in file order) that is not in `valid` is an error, with the
    nearest valid key when one is close. `refused` maps known but refused keys to why."""
    for name in mapping:
        if name in valid:
            continue
        if refused and name in refused:
            raise DeploymentError(path, f"{key}.{name}", refused[name])
        nearest = difflib.get_close_matches(str(name), valid, n=1)
        hint = f"did you mean {nearest[0]}?" if nearest else f"expected one of {', '.join(sorted(valid))}"
        raise DeploymentError(path, f"{key}.{name}", f"unknown key{kind}; {hint}")


def _refuse_unknown_settings(raw, path):
    """Every key under cache.redis must be one the formula reads (checked before ${VAR}
    expansion: a mistyped key is the mistake to report, not the variable in its value)."""
    refused = {name: "not supported yet by this formula; remove it" for name in NOT_SUPPORTED_YET}
    refused.update(
        {
            name: f"is not read from this file: set redis:{name} in ordinary pillar instead (see pillar.example)"
            for name in PILLAR_ONLY
        }
    )
    _refuse_unknown_keys(raw, SETTINGS_KEYS, "cache.redis", path, refused)
    # A section of the wrong type is reported by the checks that read it.
    sentinel, backup, monitoring = raw.get("sentinel"), raw.get("backup"), raw.get("monitoring")
    if isinstance(monitoring, dict):
        _refuse_unknown_keys(monitoring, tuple(MONITORING_DEFAULTS), "cache.redis.monitoring", path)
    if isinstance(sentinel, dict):
        _refuse_unknown_keys(sentinel, tuple(SENTINEL_DEFAULTS), "cache.redis.sentinel", path)
    if isinstance(backup, dict):
        _refuse_unknown_keys(backup, tuple(BACKUP_DEFAULTS), "cache.redis.backup", path)
        if isinstance(backup.get("schedule"), list):
            _refuse_unknown_schedule_keys(backup["schedule"], path)


def _refuse_unknown_schedule_keys(schedule, path):
    """A schedule entry holds the keys _states/redis_backup.py reads; which ones depends on
    `prune`. The state checks the rest of an entry (cron, type) when it installs the jobs."""
    for index, entry in enumerate(schedule):
        if not isinstance(entry, dict):
            continue
        key = f"cache.redis.backup.schedule[{index}]"
        prune = entry.get("prune", False)
        if not isinstance(prune, bool):
            raise DeploymentError(path, f"{key}.prune", f"expected true or false, got {prune!r}")
        if prune:
            _refuse_unknown_keys(entry, SCHEDULE_PRUNE_KEYS, key, path, kind=" in a prune entry")
        else:
            _refuse_unknown_keys(entry, SCHEDULE_BACKUP_KEYS, key, path)


def _backup_dir(backup, path):
    """backup.dir: absolute, and outside every directory that holds Redis's live files."""
    directory = backup["dir"]
    if not isinstance(directory, str) or not os.path.isabs(directory):
        raise DeploymentError(path, "cache.redis.backup.dir", f"expected an absolute path, got {directory!r}")
    # normpath keeps a leading "//" (POSIX leaves its meaning open); Linux reads it as "/".
    normalised = "/" + os.path.normpath(directory).lstrip("/")
    for live, what in LIVE_DIRS.items():
        if os.path.commonpath([normalised, live]) == live:
            relation = "is" if normalised == live else "is inside"
            raise DeploymentError(
                path,
                "cache.redis.backup.dir",
                f"expected a directory outside Redis's data and configuration directories, got {directory!r}, "
                f"which {relation} {live} ({what}): restore and prune would work on live data",
            )
    return directory


def _controllers(document, path, environ):
    nodes = _mapping(document.get("nodes"), "nodes", path)
    controllers = nodes.get("controllers")
    if controllers is None:
        raise DeploymentError(path, "nodes.controllers", "is missing: expected a list of controllers")
    if not isinstance(controllers, list):
        raise DeploymentError(path, "nodes.controllers", f"expected a list, got {type(controllers).__name__}")
    seen_names, seen_ips, seen_ids, result = {}, {}, {}, []
    for index, raw in enumerate(controllers):
        key = f"nodes.controllers[{index}]"
        if not isinstance(raw, dict):
            raise DeploymentError(path, key, f"expected a mapping with hostname and ip_address, got {raw!r}")
        # Expand ${VAR} only in what Redis reads; other parts of the platform own the rest.
        entry = {
            k: _expand(raw[k], f"{key}.{k}", path, environ)
            for k in ("hostname", "ip_address", "minion_id", "services")
            if k in raw
        }
        hostname = entry.get("hostname")
        if not isinstance(hostname, str) or not hostname.strip():
            raise DeploymentError(path, f"{key}.hostname", "is missing: expected the controller's host name")
        if not HOSTNAME_PATTERN.match(hostname):
            raise DeploymentError(path, f"{key}.hostname", f"expected a valid host name, got {hostname!r}")
        ip_text = entry.get("ip_address")
        try:
            ip = ipaddress.ip_address(str(ip_text).strip()) if ip_text is not None else None
        except ValueError:
            ip = None
        if ip is None or ip.is_unspecified or ip.is_multicast:
            raise DeploymentError(
                path, f"{key}.ip_address", f"expected the controller's unicast IP address, got {ip_text!r}"
            )
        minion_id = entry.get("minion_id", hostname)
        if not isinstance(minion_id, str) or not minion_id.strip():
            raise DeploymentError(path, f"{key}.minion_id", f"expected a Salt minion id, got {minion_id!r}")
        services = _mapping(entry.get("services"), f"{key}.services", path)
        redis_enabled = services.get("redis", False)
        if not isinstance(redis_enabled, bool):
            raise DeploymentError(path, f"{key}.services.redis", f"expected true or false, got {redis_enabled!r}")
        for seen, value, what in (
            (seen_names, hostname.lower(), "hostname"),
            (seen_ips, str(ip), "ip_address"),
            (seen_ids, minion_id, "minion_id"),
        ):
            if value in seen:
                raise DeploymentError(
                    path,
                    f"{key}.{what}",
                    f"duplicate {what} {value!r}, already used by nodes.controllers[{seen[value]}]",
                )
            seen[value] = index
        result.append(
            {"hostname": hostname, "minion_id": minion_id, "ip": str(ip), "redis": redis_enabled, "index": index}
        )
    return result


def _password(settings, path, name="password", key=None):
    key = key or f"cache.redis.{name}"
    password = settings.get(name)
    if password is None:
        raise DeploymentError(path, key, "is missing: expected a password (for example ${REDIS_PASSWORD})")
    if not isinstance(password, str):
        # Never echo the value: it is the password. YAML reads `password: 12345` as a number.
        raise DeploymentError(
            path, key, f"expected a string, got {type(password).__name__} (quote the password in the YAML)"
        )
    if not password.strip():
        raise DeploymentError(path, key, "expected a non-empty password, got an empty or blank one")
    if any(ord(char) < 32 or ord(char) == 127 for char in password):
        raise DeploymentError(path, key, "expected a password without control characters or line breaks")
    return password


def _rotation(settings, path):
    """cache.redis.previous_password: phase 1 of a two-phase password rotation (every node
    accepts both); cache.redis.force_password_change: a one-step change that refuses clients
    still holding the old password."""
    if settings.get("previous_password") is not None:
        settings["previous_password"] = _password(settings, path, "previous_password")
        if settings["previous_password"] == settings["password"]:
            raise DeploymentError(
                path, "cache.redis.previous_password",
                "expected the password being replaced, got the same as cache.redis.password "
                "(remove previous_password once every node has been applied with the new password)",
            )
    else:
        settings.pop("previous_password", None)
    force = settings.get("force_password_change", False)
    if not isinstance(force, bool):
        raise DeploymentError(path, "cache.redis.force_password_change", f"expected true or false, got {force!r}")
    settings["force_password_change"] = force


# Our own logins (_utils/redis_acl.py) and Redis's default user: not an application's to define.
RESERVED_USER = re.compile(r"^(default|salt-.*)$")
_USER_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# ACL rules an application user may carry (Redis's syntax, checked again by Redis itself on each
# node before anything changes). Passwords come from password/password_sha256 only.
_ACL_RULE = re.compile(
    r"^(on|off|allkeys|allchannels|allcommands|nocommands|resetkeys|resetchannels|clearselectors"
    r"|sanitize-payload|skip-sanitize-payload|(%R|%W|%RW)?~\S+|&\S+|[+-]@?[A-Za-z0-9_.|:-]+)$",
    re.IGNORECASE,
)
_PASSWORD_RULES = re.compile(r"^([<>#!].*|nopass|resetpass|reset)$", re.IGNORECASE)


def _acl_rules(rules, key, path):
    """Rules as a list of words (a string is split like Redis's config file splits a line);
    a selector ``(...)`` is kept as one word."""
    if isinstance(rules, str):
        words = rules.split()
    elif isinstance(rules, list) and all(isinstance(word, str) for word in rules):
        words = [part for word in rules for part in word.split()]
    else:
        raise DeploymentError(path, key, "expected ACL rules as a string or a list of strings, e.g. '~app:* +@read'")
    result, selector = [], None
    for word in words:
        if selector is not None or word.startswith("("):
            selector = word if selector is None else f"{selector} {word}"
            if selector.endswith(")"):
                result.append(selector)
                selector = None
            continue
        if _PASSWORD_RULES.match(word):
            raise DeploymentError(
                path, key, f"expected no password rule ({word.split()[0][:1] or word!r}...): give the user's password "
                "in password or password_sha256, Salt sets it",
            )
        if not _ACL_RULE.match(word):
            raise DeploymentError(path, key, f"expected Redis ACL rules, got {word!r}")
        result.append(word)
    if selector is not None:
        raise DeploymentError(path, key, "expected a selector closed by ')'")
    return result


def _acl_users(raw, path):
    """cache.redis.acl.users -> [{name, password_sha256, rules}]: minions get hashes only."""
    acl = _mapping(raw, "cache.redis.acl", path)
    _refuse_unknown_keys(acl, ("users",), "cache.redis.acl", path)
    users = acl.get("users") or []
    if not isinstance(users, list):
        raise DeploymentError(path, "cache.redis.acl.users", "expected a list of {name, password, rules}")
    result, seen = [], set()
    for index, user in enumerate(users):
        key = f"cache.redis.acl.users[{index}]"
        if not isinstance(user, dict):
            raise DeploymentError(path, key, "expected a mapping with name, password (or password_sha256) and rules")
        _refuse_unknown_keys(user, ("name", "password", "password_sha256", "rules"), key, path)
        name = user.get("name")
        if not isinstance(name, str) or not _USER_NAME.match(name):
            raise DeploymentError(path, f"{key}.name", f"expected a user name (letters, digits, . _ @ -), got {name!r}")
        if RESERVED_USER.match(name):
            raise DeploymentError(path, f"{key}.name", f"expected a name of your own: {name!r} is reserved for Redis "
                                  "and this formula (default, salt-*)")
        if name in seen:
            raise DeploymentError(path, f"{key}.name", f"duplicate user {name!r}")
        seen.add(name)
        if ("password" in user) == ("password_sha256" in user):
            raise DeploymentError(path, key, "expected exactly one of password or password_sha256")
        if "password" in user:
            password = _password(user, path, key=f"{key}.password")
            digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
        else:
            digest = user["password_sha256"]
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise DeploymentError(path, f"{key}.password_sha256",
                                      "expected 64 hex digits (sha256sum of the password)")
            digest = digest.lower()
        rules = _acl_rules(user.get("rules", ""), f"{key}.rules", path)
        result.append({"name": name, "password_sha256": digest, "rules": rules})
    return result


def _redis_settings(document, path, environ):
    cache = _mapping(document.get("cache"), "cache", path)
    raw = _mapping(cache.get("redis"), "cache.redis", path)
    _refuse_unknown_settings(raw, path)
    settings = dict(DEFAULTS)
    settings.update(_expand(raw, "cache.redis", path, environ))
    settings["password"] = _password(settings, path)
    _rotation(settings, path)
    settings["acl_users"] = _acl_users(settings.pop("acl", None), path)
    _choice(settings, "mode", "cache.redis.mode", path, MODES)
    _integer(settings, "port", "cache.redis.port", path, 1, 65535)
    _integer(settings, "sentinel_port", "cache.redis.sentinel_port", path, 1, 65535)
    if settings["port"] == settings["sentinel_port"]:
        raise DeploymentError(path, "cache.redis.sentinel_port", "expected a port different from cache.redis.port")
    _integer(settings, "maxclients", "cache.redis.maxclients", path, 1, 1_000_000)
    _integer(settings, "replicas_per_master", "cache.redis.replicas_per_master", path, 0, 5)
    _integer(settings, "cluster_node_timeout_ms", "cache.redis.cluster_node_timeout_ms", path, 100, 600_000)
    _integer(settings, "cluster_rebalance_timeout_s", "cache.redis.cluster_rebalance_timeout_s", path, 60, 86_400)
    if not isinstance(settings["cluster_require_full_coverage"], bool):
        raise DeploymentError(
            path,
            "cache.redis.cluster_require_full_coverage",
            f"expected true or false, got {settings['cluster_require_full_coverage']!r}",
        )
    _integer(settings, "min_replicas_to_write", "cache.redis.min_replicas_to_write", path, 0, 100)
    _integer(settings, "min_replicas_max_lag", "cache.redis.min_replicas_max_lag", path, 1, 3600)
    _choice(settings, "maxmemory_policy", "cache.redis.maxmemory_policy", path, MAXMEMORY_POLICIES)
    _choice(settings, "host_baseline", "cache.redis.host_baseline", path, HOST_BASELINES)
    _choice(settings, "server", "cache.redis.server", path, _servers().SERVERS)
    by_host = settings["server_by_host"] = _mapping(settings["server_by_host"], "cache.redis.server_by_host", path)
    for host, server in by_host.items():
        _choice(by_host, host, f"cache.redis.server_by_host.{host}", path, _servers().SERVERS)
    for server in {settings["server"], *by_host.values()}:
        for name in ("password", "previous_password"):
            refused = _servers().password_refusal(server, settings.get(name))
            if refused:
                raise DeploymentError(path, f"cache.redis.{name}", refused)
    percent = settings["maxmemory_percent"]
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
        raise DeploymentError(
            path, "cache.redis.maxmemory_percent", f"expected a number above 0 and at most 100, got {percent!r}"
        )
    if not isinstance(settings["master_name"], str) or not _NAME.match(settings["master_name"]):
        raise DeploymentError(
            path,
            "cache.redis.master_name",
            f"expected letters, digits, '.', '_' or '-', got {settings['master_name']!r}",
        )

    sentinel = dict(SENTINEL_DEFAULTS)
    sentinel.update(_mapping(settings.get("sentinel"), "cache.redis.sentinel", path))
    _integer(sentinel, "down_after_ms", "cache.redis.sentinel.down_after_ms", path, 100, 3_600_000)
    _integer(sentinel, "failover_timeout_ms", "cache.redis.sentinel.failover_timeout_ms", path, 1000, 86_400_000)
    if not isinstance(sentinel["witnesses"], list) or not all(isinstance(w, str) for w in sentinel["witnesses"]):
        raise DeploymentError(path, "cache.redis.sentinel.witnesses", "expected a list of controller hostnames")
    settings["sentinel"] = sentinel

    backup = dict(BACKUP_DEFAULTS)
    backup.update(_mapping(settings.get("backup"), "cache.redis.backup", path))
    _backup_dir(backup, path)
    _integer(backup, "retention_days", "cache.redis.backup.retention_days", path, 0, 36500)
    _integer(backup, "keep_min", "cache.redis.backup.keep_min", path, 1, 1000)
    _integer(backup, "safety_copy_days", "cache.redis.backup.safety_copy_days", path, 0, 36500)
    _choice(backup, "compress", "cache.redis.backup.compress", path, COMPRESSIONS)
    if backup["schedule"] is not None and not isinstance(backup["schedule"], list):
        raise DeploymentError(
            path,
            "cache.redis.backup.schedule",
            "expected a list of schedule entries ([] for none; absent: the default plan)",
        )
    copy_to = backup["copy_to"]
    if copy_to is not None and (not isinstance(copy_to, str) or not os.path.isabs(copy_to)):
        raise DeploymentError(path, "cache.redis.backup.copy_to", f"expected an absolute path, got {copy_to!r}")
    settings["backup"] = backup
    settings["monitoring"] = _monitoring(settings.get("monitoring"), path)
    _firewall(settings, path)
    settings["tls"] = _tls(settings["tls"], path)
    _tls_ports(settings, path)
    return settings


def _tls(raw, path):
    """cache.redis.tls: ``None`` (off) or ``{"issue", "plain_port", "days_valid", and with
    ``issue: false`` the three files}``."""
    if raw is None:
        return None
    key = "cache.redis.tls"
    tls = dict(TLS_DEFAULTS)
    tls.update(_mapping(raw, key, path))
    _refuse_unknown_keys(tls, (*TLS_DEFAULTS, *TLS_FILE_KEYS), key, path)
    if not isinstance(tls["issue"], bool):
        raise DeploymentError(path, f"{key}.issue", f"expected true or false, got {tls['issue']!r}")
    # TLS takes over `port` (tls-port); plain TCP cannot share it, so it stays on a port of its own.
    plain = tls["plain_port"]
    if plain is not False and (isinstance(plain, bool) or not isinstance(plain, int) or not 1 <= plain <= 65535):
        raise DeploymentError(path, f"{key}.plain_port", f"{TLS_PLAIN_PORT}, got {plain!r}")
    _integer(tls, "days_valid", f"{key}.days_valid", path, 2, 3650)
    files = [name for name in TLS_FILE_KEYS if name in tls]
    if tls["issue"] and files:
        raise DeploymentError(path, f"{key}.{files[0]}",
                              "expected either issue: true (Salt issues the certificates) or the three files, not both")
    if tls["issue"]:
        tls.update(TLS_ISSUED_FILES)
    else:
        for name in TLS_FILE_KEYS:
            value = tls.get(name)
            if not isinstance(value, str) or not os.path.isabs(value):
                raise DeploymentError(path, f"{key}.{name}", (
                    f"expected the absolute path of a PEM file on every Redis host (or issue: true instead of "
                    f"{', '.join(TLS_FILE_KEYS)}), got {value!r}"))
    return tls


def _tls_ports(settings, path):
    """A plain port kept during a TLS migration must not take another port of the deployment."""
    plain = (settings["tls"] or {}).get("plain_port")
    taken = {settings["port"]: "cache.redis.port", settings["port"] + 10000: "the cluster bus (port + 10000)",
             settings["sentinel_port"]: "cache.redis.sentinel_port"}
    if plain and plain in taken:
        raise DeploymentError(path, "cache.redis.tls.plain_port", f"{TLS_PLAIN_PORT}; {plain} is {taken[plain]}")


def _firewall(settings, path):
    """cache.redis.firewall (true/false) and cache.redis.client_networks (CIDRs, normalized)."""
    if not isinstance(settings["firewall"], bool):
        raise DeploymentError(path, "cache.redis.firewall", f"expected true or false, got {settings['firewall']!r}")
    networks = settings["client_networks"]
    if not isinstance(networks, list):
        raise DeploymentError(path, "cache.redis.client_networks",
                              f"expected a list of networks (CIDR, e.g. 10.0.0.0/24), got {networks!r}")
    normalized = []
    for index, network in enumerate(networks):
        try:
            if not isinstance(network, str):
                raise ValueError
            normalized.append(str(ipaddress.ip_network(network.strip(), strict=False)))
        except ValueError:
            raise DeploymentError(
                path, f"cache.redis.client_networks[{index}]",
                f"expected a network in CIDR notation (10.0.0.0/24, fd00::/64), got {network!r}",
            ) from None
    settings["client_networks"] = list(dict.fromkeys(normalized))


_GROUP_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _monitoring(raw, path):
    """cache.redis.monitoring over its defaults: numbers within their ranges, a warning level
    below the critical one, ``exporter`` a boolean, ``group`` a group name."""
    monitoring = dict(MONITORING_DEFAULTS)
    monitoring.update(_mapping(raw, "cache.redis.monitoring", path))
    for name, (kind, low, high) in MONITORING_LIMITS.items():
        value, key = monitoring[name], f"cache.redis.monitoring.{name}"
        wanted = int if kind == "integer" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted) or not low <= value <= high:
            what = "an integer" if kind == "integer" else "a number"
            raise DeploymentError(path, key, f"expected {what} from {low} to {high}, got {value!r}")
    if monitoring["memory_warning_percent"] >= monitoring["memory_critical_percent"]:
        raise DeploymentError(
            path, "cache.redis.monitoring.memory_warning_percent",
            f"expected a level below memory_critical_percent ({monitoring['memory_critical_percent']}), "
            f"got {monitoring['memory_warning_percent']!r}",
        )
    group = monitoring["group"]
    if not isinstance(group, str) or not _GROUP_NAME.match(group):
        raise DeploymentError(path, "cache.redis.monitoring.group",
                              f"expected a system group name (lower-case letters, digits, - and _), got {group!r}")
    exporter = monitoring["exporter"]
    if not isinstance(exporter, bool):
        raise DeploymentError(path, "cache.redis.monitoring.exporter", f"expected true or false, got {exporter!r}")
    return monitoring


# ---------------------------------------------------------------- the shape


def slot_ranges(masters):
    """Split the 16384 hash slots over `masters` nodes the way redis-cli --cluster create does."""
    per_node = TOTAL_SLOTS / masters
    ranges, first, cursor = [], 0, 0.0
    for index in range(masters):
        last = TOTAL_SLOTS - 1 if index == masters - 1 else int(round(cursor + per_node - 1))
        ranges.append([first, last])
        first, cursor = last + 1, cursor + per_node
    return ranges


def _resolve_mode(settings, redis_nodes, path):
    count, requested = len(redis_nodes), settings["mode"]
    if count < 2:
        raise DeploymentError(
            path,
            "nodes.controllers",
            f"expected at least 2 controllers with services.redis: true, found {count}",
        )
    mode = requested if requested != "auto" else ("cluster" if count >= 3 else "sentinel")
    if mode == "cluster":
        needed = 3 * (settings["replicas_per_master"] + 1)
        if count < needed:
            raise DeploymentError(
                path,
                "cache.redis.mode",
                f"cluster mode with replicas_per_master {settings['replicas_per_master']} needs at least "
                f"{needed} Redis controllers, found {count}",
            )
        if settings["port"] + 10000 > 65535:
            raise DeploymentError(
                path, "cache.redis.port", "expected a port of at most 55535 in cluster mode (the bus uses port + 10000)"
            )
    return mode


def _hide(text, secrets):
    """`text` with each of `secrets` (the password, or a list: the password, the previous one,
    the ACL users') replaced wherever it shows: as is, or inside a value that a message quotes
    with repr() (between single quotes, where ' reads \\', or double quotes)."""
    spellings = set()
    for secret in [secrets] if isinstance(secrets, str) else secrets or ():
        if isinstance(secret, str) and secret:
            in_single_quotes = repr(secret + "'\"")[1:-4]  # both quotes present: repr() picks '...'
            spellings |= {secret, in_single_quotes, in_single_quotes.replace("\\'", "'")}
    for spelling in sorted(spellings, key=len, reverse=True):
        text = text.replace(spelling, PASSWORD_IN_MESSAGE)
    return text


def _document_secrets(document, environ):
    """The passwords the YAML gives (password, previous_password, the ACL users'), expanded
    as far as the environment allows."""
    cache = document.get("cache")
    redis = cache.get("redis") if isinstance(cache, dict) else None
    if not isinstance(redis, dict):
        return []
    found = [redis.get("password"), redis.get("previous_password")]
    acl = redis.get("acl")
    users = acl.get("users") if isinstance(acl, dict) else None
    found += [user.get("password") for user in users or () if isinstance(user, dict)] if isinstance(users, list) else []
    return [_VAR.sub(lambda match: environ.get(match.group(1), match.group(0)), secret)
            for secret in found if isinstance(secret, str)]


def load_deployment(path, environ=None):
    """Read and validate the YAML at `path` and compute the whole deployment's shape.

    Raises DeploymentError (file, key path, expectation) on any mistake; its message
    never holds the password, even where a value is quoted (``port: ${REDIS_PASSWORD}``).
    """
    environ = os.environ if environ is None else environ
    document = _read_yaml(path)
    try:
        return _shape(document, path, environ)
    except DeploymentError as exc:
        raise DeploymentError(exc.path, exc.key, _hide(exc.expected, _document_secrets(document, environ))) from None


def _shape(document, path, environ):
    settings = _redis_settings(document, path, environ)
    controllers = _controllers(document, path, environ)
    redis_nodes = [c for c in controllers if c["redis"]]
    mode = _resolve_mode(settings, redis_nodes, path)

    by_hostname = {c["hostname"]: c for c in controllers}
    witnesses = []
    for index, name in enumerate(settings["sentinel"]["witnesses"]):
        key = f"cache.redis.sentinel.witnesses[{index}]"
        if mode != "sentinel":
            raise DeploymentError(path, key, "witness Sentinels only exist in sentinel mode")
        if name not in by_hostname:
            raise DeploymentError(path, key, f"expected the hostname of a controller, got {name!r}")
        if by_hostname[name]["redis"]:
            raise DeploymentError(path, key, f"expected a controller without services.redis, {name!r} runs Redis")
        witnesses.append(by_hostname[name])
    # A witness keeps its Sentinel's server too (an old Debian 12 witness while a new one runs Valkey).
    for host in settings["server_by_host"]:
        if host not in by_hostname or not (by_hostname[host]["redis"] or by_hostname[host] in witnesses):
            raise DeploymentError(path, f"cache.redis.server_by_host.{host}",
                                  "expected the hostname of a controller with services.redis: true, or of a "
                                  "witness (cache.redis.sentinel.witnesses)")

    port = settings["port"]
    peers = [{"hostname": n["hostname"], "minion_id": n["minion_id"], "ip": n["ip"], "port": port} for n in redis_nodes]
    roles, slot_plan, replica_of = {}, {}, {}
    if mode == "cluster":
        masters = len(redis_nodes) // (settings["replicas_per_master"] + 1)
        for node, slots in zip(redis_nodes[:masters], slot_ranges(masters)):
            slot_plan[node["hostname"]] = [slots]
        for index, node in enumerate(redis_nodes[masters:]):
            replica_of[node["hostname"]] = redis_nodes[index % masters]["hostname"]
        for node in redis_nodes:
            roles[node["hostname"]] = "cluster-node"
    else:
        for index, node in enumerate(redis_nodes):
            roles[node["hostname"]] = "master" if index == 0 else "replica"
            if index:
                replica_of[node["hostname"]] = redis_nodes[0]["hostname"]
    for node in witnesses:
        roles[node["hostname"]] = "sentinel-only"

    sentinels = [n for n in controllers if roles.get(n["hostname"]) in ("master", "replica", "sentinel-only")]
    sentinel = dict(settings["sentinel"], witnesses=[w["hostname"] for w in witnesses])
    if mode == "sentinel":
        sentinel["hosts"] = [{"hostname": n["hostname"], "ip": n["ip"]} for n in sentinels]
        sentinel["quorum"] = len(sentinels) // 2 + 1

    return {
        "path": path,
        "mode": mode,
        "settings": settings,
        "controllers": controllers,
        "peers": peers,
        "initial_master": peers[0],
        "roles": roles,
        "slot_plan": slot_plan,
        "replica_of": replica_of,
        "sentinel": sentinel,
    }


def maxmemory_bytes(mem_total_mib, percent):
    """Redis maxmemory for a host with `mem_total_mib` MiB of RAM (Salt's mem_total grain)."""
    return int(int(mem_total_mib) * 1024 * 1024 * percent / 100)


def _mem_total(value):
    """Salt's mem_total grain as a number of MiB, or None when it is missing, 0 or not a number."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value if value >= 1 else None


def memory_bytes(value):
    """A ``redis:maxmemory`` override in bytes: an integer, or digits with Redis's units (``2gb``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = _MEMORY.match(value) if isinstance(value, str) else None
        unit = match.group(2).lower() if match else None
        number = int(match.group(1)) * MEMORY_UNITS[unit] if unit in MEMORY_UNITS else -1
    if not 0 <= number <= MAX_MEMORY_BYTES:
        raise DeploymentError(
            "pillar",
            "redis:maxmemory",
            "expected bytes as Redis reads them: a whole number, optionally followed by one of Redis's units "
            f"k, kb, m, mb, g, gb (for example 2gb), got {value!r}",
        )
    return number


def _controller_key(node):
    return f"nodes.controllers[{node['index']}]"


def _matching_controllers(deployment, minion_id):
    """The controllers that are `minion_id`: its minion_id (default hostname) is the minion's
    id or the id's first label."""
    first_label = minion_id.split(".", 1)[0]
    return [c for c in deployment["controllers"] if c["minion_id"] in (minion_id, first_label)]


def _check_address(deployment, minion_id, node, ipv4, ipv6):
    """The minion's own address grains must hold the controller's ip_address."""
    ip = ipaddress.ip_address(node["ip"])
    grain_name, grain = ("ipv4", ipv4) if ip.version == 4 else ("ipv6", ipv6)
    entries = [grain] if isinstance(grain, str) else list(grain) if isinstance(grain, (list, tuple)) else []
    addresses = set()
    for entry in entries:
        try:
            addresses.add(ipaddress.ip_address(str(entry).strip()))
        except ValueError:
            continue
    if ip not in addresses:
        shown = ", ".join(str(entry) for entry in entries) or "empty"
        raise DeploymentError(
            deployment["path"],
            f"{_controller_key(node)}.ip_address",
            f"minion {minion_id} matches {_controller_key(node)} ({node['hostname']}) but has no address "
            f"{node['ip']} (its {grain_name} grain: {shown}): expected the controller's address on that minion; "
            "fix ip_address or set the controller's minion_id",
        )


def _computed_maxmemory(deployment, minion_id, node, role, mem_total_mib):
    """maxmemory_percent of the minion's RAM in bytes; None for a minion that runs no
    redis-server and has no usable mem_total. Never 0, which Redis reads as unlimited."""
    percent = deployment["settings"]["maxmemory_percent"]
    mem_total = _mem_total(mem_total_mib)
    maxmemory = maxmemory_bytes(mem_total, percent) if mem_total is not None else 0
    if maxmemory >= 1 or role not in SERVER_ROLES:
        return maxmemory or None
    if mem_total is None:
        shown = "missing" if mem_total_mib is None else repr(mem_total_mib)
        raise DeploymentError(
            deployment["path"],
            _controller_key(node),
            f"minion {minion_id} runs Redis (role {role}) but its mem_total grain is {shown}: expected the "
            f"host's RAM in MiB (a positive number) to compute maxmemory ({percent}% of it); "
            "maxmemory 0 would mean unlimited",
        )
    raise DeploymentError(
        deployment["path"],
        "cache.redis.maxmemory_percent",
        f"{percent}% of minion {minion_id}'s {mem_total_mib} MiB is 0 bytes, which Redis reads as unlimited: "
        "expected a larger percentage",
    )


def server_of(deployment, hostname):
    """The server a controller runs: ``cache.redis.server``, or its ``server_by_host`` entry
    (a witness's Sentinel too)."""
    settings = deployment["settings"]
    return settings["server_by_host"].get(hostname, settings["server"])


def node_pillar(deployment, minion_id, mem_total_mib, ipv4=None, ipv6=None, maxmemory=None, os_grains=None):
    """The ``redis`` pillar of one minion: its role plus everything it needs to know.

    `mem_total_mib` is the minion's mem_total grain. `ipv4`/`ipv6` are its address grains:
    given (ext_pillar always gives them), a minion with a Redis role must hold its
    controller's ip_address. `maxmemory` (bytes) is an operator's override: then the
    grain is not needed. `os_grains` (``os``, ``os_family``, ``osmajorrelease``), given,
    must name a distribution that offers cache.redis.server. Raises DeploymentError when
    the minion matches two controllers, lacks the address, runs redis-server without a
    usable mem_total, or cannot install the server.
    """
    matches = _matching_controllers(deployment, minion_id)
    if len(matches) > 1:
        described = " and ".join(
            f"{_controller_key(c)} (minion_id {c['minion_id']}, "
            f"{'its whole id' if c['minion_id'] == minion_id else 'its first label'})"
            for c in matches
        )
        raise DeploymentError(
            deployment["path"],
            ", ".join(_controller_key(c) for c in matches),
            f"minion {minion_id} matches {described}: expected one controller per minion; "
            "give the controllers distinct minion_id values",
        )
    node = matches[0] if matches else None
    settings = deployment["settings"]
    role = deployment["roles"].get(node["hostname"], "none") if node else "none"
    pillar = {"mode": deployment["mode"], "role": role, "deployment_file": deployment["path"]}
    if role == "none":
        return pillar
    if ipv4 is not None or ipv6 is not None:
        _check_address(deployment, minion_id, node, ipv4, ipv6)
    server = server_of(deployment, node["hostname"])
    refused = _servers().refusal(server, os_grains, node["hostname"]) if os_grains else None
    if refused:
        key = "cache.redis.server" + (f"_by_host.{node['hostname']}"
                                      if node["hostname"] in settings["server_by_host"] else "")
        raise DeploymentError(deployment["path"], key, refused)
    if maxmemory is None:
        maxmemory = _computed_maxmemory(deployment, minion_id, node, role, mem_total_mib)
    pillar.update(
        {
            "hostname": node["hostname"],
            "bind_ip": node["ip"],
            "port": settings["port"],
            "sentinel_port": settings["sentinel_port"],
            "password": settings["password"],
            "acl_users": copy.deepcopy(settings["acl_users"]),
            "peers": copy.deepcopy(deployment["peers"]),
            "initial_master": dict(deployment["initial_master"]),
            "master_name": settings["master_name"],
            "replicas_per_master": settings["replicas_per_master"],
            "cluster_node_timeout_ms": settings["cluster_node_timeout_ms"],
            "cluster_rebalance_timeout_s": settings["cluster_rebalance_timeout_s"],
            "cluster_require_full_coverage": settings["cluster_require_full_coverage"],
            "min_replicas_to_write": settings["min_replicas_to_write"],
            "min_replicas_max_lag": settings["min_replicas_max_lag"],
            "maxmemory_percent": settings["maxmemory_percent"],
            "maxmemory": maxmemory,
            "maxmemory_policy": settings["maxmemory_policy"],
            "maxclients": settings["maxclients"],
            "host_baseline": settings["host_baseline"],
            "firewall": {
                "enabled": settings["firewall"],
                # Every host of the deployment: its Redis servers and its Sentinels' hosts.
                "members": sorted({p["ip"] for p in deployment["peers"]}
                                  | {h["ip"] for h in deployment["sentinel"].get("hosts", [])}),
                "client_networks": list(settings["client_networks"]),
            },
            "sentinel": copy.deepcopy(deployment["sentinel"]),
            "backup": copy.deepcopy(settings["backup"]),
            "monitoring": copy.deepcopy(settings["monitoring"]),
            "server": server,
        }
    )
    # The server's package, unit, path, account and tool names over map.jinja's (Redis's).
    pillar.update(_servers().names(server))
    if maxmemory is None:  # a Sentinel-only witness without a usable mem_total: it runs no redis-server
        del pillar["maxmemory"]
    if "previous_password" in settings:
        pillar["previous_password"] = settings["previous_password"]
    if settings["force_password_change"]:
        pillar["force_password_change"] = True
    if settings["tls"]:
        pillar["tls"] = copy.deepcopy(settings["tls"])
    if deployment["mode"] == "cluster":
        pillar["slot_plan"] = copy.deepcopy(deployment["slot_plan"])
        pillar["slots"] = copy.deepcopy(deployment["slot_plan"].get(node["hostname"], []))
        # The initial master sets up every replica when it forms the cluster.
        pillar["replica_plan"] = dict(deployment["replica_of"])
    if node["hostname"] in deployment["replica_of"]:
        pillar["replica_of"] = deployment["replica_of"][node["hostname"]]
    return pillar


def node_versions(deployment, grains_by_minion):
    """``{hostname: {"server", "version", "rdb_format", "minion"}}`` of every Redis server of
    the deployment as its minion's ``redis_servers`` grain (_grains/redis_servers.py) says:
    the version of the server the YAML gives the host, and the RDB format that version
    writes (_utils/redis_servers.py). ``version`` is None where no minion matches the host,
    its grains are not known yet, or that server is not installed there yet.

    ``grains_by_minion``: ``{minion id: grains}``, as the salt-master's minion data cache
    keeps them (refreshed with each pillar request)."""
    minions = {}
    for minion_id in sorted(grains_by_minion):
        matches = _matching_controllers(deployment, minion_id)
        if len(matches) == 1:
            minions.setdefault(matches[0]["hostname"], []).append(minion_id)
    versions = {}
    for peer in deployment["peers"]:
        host = peer["hostname"]
        server = server_of(deployment, host)
        found = minions.get(host) or []
        # Two minions for one host (a stale key): neither is believed.
        minion = found[0] if len(found) == 1 else None
        installed = (grains_by_minion.get(minion) or {}).get("redis_servers") if minion else None
        version = installed.get(server) if isinstance(installed, dict) else None
        versions[host] = {"server": server, "version": version, "minion": minion,
                          "rdb_format": _servers().rdb_format(server, version) if version else None}
    return versions


def _cached_grains():
    """``{minion id: grains}`` from the salt-master's minion data cache, which the master
    fills with each pillar request: bank ``grains`` (Salt 3008, as salt.utils.minions reads
    it), else ``minions/<id>`` key ``data`` (Salt 3006 and 3007). Empty when the master
    keeps none (``minion_data_cache: False``)."""
    opts = globals().get("__opts__") or {}  # the loader's; this file is also imported directly
    if not opts.get("cachedir") or not opts.get("minion_data_cache", True):
        return {}
    import salt.cache  # pylint: disable=import-outside-toplevel

    cache = salt.cache.factory(opts)
    grains = {}
    for minion_id in cache.list("grains"):
        found = cache.fetch("grains", minion_id)
        if isinstance(found, dict):
            grains[minion_id] = found
    if grains:
        return grains
    for minion_id in cache.list("minions"):
        data = cache.fetch(f"minions/{minion_id}", "data") or {}
        if isinstance(data.get("grains"), dict):
            grains[minion_id] = data["grains"]
    return grains


def _merge(base, override):
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def formula_modules():
    """``{"modules/redis_cluster.py": sha256, ...}``: our custom Salt modules as the master serves
    them (salt://_modules, salt://_states, ...), so a minion syncs only when its copy differs."""
    root = Path(__file__).resolve().parents[1]
    digests = {}
    for kind, folder in EXTENSION_FOLDERS.items():
        for path in sorted((root / folder).glob("*.py")):
            digests[f"{kind}/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def error_pillar(message):
    """Pillar ``redis`` for a minion the deployment cannot serve: the one-line `message`,
    no Redis role and nothing else (no password). The Redis states fail with `message`;
    the pillar render itself succeeds, so other formulas' states still run."""
    return {"error": message, "role": "none", "mode": "none"}


def _redis_pillar(minion_id, pillar, config):
    deployment = load_deployment(config)
    settings = deployment["settings"]
    secrets = [settings["password"], settings.get("previous_password")]
    try:
        overrides = pillar.get("redis") if isinstance(pillar.get("redis"), dict) else {}
        maxmemory = memory_bytes(overrides["maxmemory"]) if "maxmemory" in overrides else None
        computed = node_pillar(
            deployment,
            minion_id,
            __grains__.get("mem_total"),
            ipv4=__grains__.get("ipv4", []),
            ipv6=__grains__.get("ipv6", []),
            maxmemory=maxmemory,
            os_grains={name: __grains__.get(name) for name in OS_GRAINS},
        )
        result = _merge(computed, overrides)
        if maxmemory is not None:
            result["maxmemory"] = maxmemory
    except DeploymentError as exc:
        raise DeploymentError(exc.path, exc.key, _hide(exc.expected, secrets)) from None
    result["formula_modules"] = formula_modules()
    if result.get("role") in SERVER_ROLES or result.get("role") in SENTINEL_ROLES:
        result["versions"] = node_versions(deployment, _cached_grains())
    tls = result.get("tls")
    if tls and tls.get("issue") and result.get("role") in (*SERVER_ROLES, *SENTINEL_ROLES):
        tls["issued"] = _issued_certificates(config, result["hostname"], result["bind_ip"], tls["days_valid"])
        if not _rendered_for_minion(minion_id):
            tls["issued"]["key"] = KEY_HIDDEN
        if result.get("mode") == "sentinel":
            # Sentinels cannot reload a certificate: each is restarted in the order of
            # sentinel:hosts once those before it serve theirs
            # (_modules/redis_sentinel.py, _restart_refused).
            tls["sentinel_certificates"] = {
                host["hostname"]: _fingerprint(
                    tls["issued"]["cert"] if host["hostname"] == result["hostname"]
                    else _issued_certificates(config, host["hostname"], host["ip"], tls["days_valid"])["cert"])
                for host in result["sentinel"]["hosts"]}
    if "password" in result and not _rendered_for_minion(minion_id):
        # Only minions need the password, and they get pillar from the salt-master daemon.
        # Any other process renders pillar for display (salt-run pillar.show_pillar,
        # salt-api) and would print it and publish it in its return event.
        result["password"] = PASSWORD_HIDDEN
        if "previous_password" in result:
            result["previous_password"] = PASSWORD_HIDDEN
    return result


def _fingerprint(pem):
    """The SHA-256 of a PEM certificate's DER form: what a TLS client sees served (the master
    has no ``__utils__``: this is ``redis_common.pem_fingerprint``'s twin, kept equal by
    tests/unit, which compare the two)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def _load_by_path(name, path):
    """The Python file at ``path`` as a module: our sibling files are no importable modules
    wherever Salt loads this one from, and the master has no ``__utils__``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def _servers():
    """_utils/redis_servers.py (the servers' names and which distribution offers which),
    loaded once: beside this file's folder as file_roots hold it (``_utils``), or as
    ``saltutil.sync_all`` puts it (``utils``)."""
    root = Path(__file__).resolve().parents[1]
    found = next((root / folder / "redis_servers.py" for folder in ("_utils", "utils")
                  if (root / folder / "redis_servers.py").is_file()), root / "_utils" / "redis_servers.py")
    return _load_by_path("redis_deployment_servers", found)


@functools.lru_cache(maxsize=1)
def _certificates_module():
    """_pillar/redis_certificates.py, loaded once."""
    return _load_by_path("redis_deployment_certificates", Path(__file__).with_name("redis_certificates.py"))


def _issued_certificates(config, hostname, ip, days_valid):
    """The host's key and certificate and the CA's certificate (PEM), from the deployment's
    CA on this master (_pillar/redis_certificates.py, with Salt's x509 module)."""
    certificates = _certificates_module()
    x509 = {name: __salt__[name] for name in X509_FUNCTIONS}
    store = certificates.store_for(__opts__["cachedir"], config)
    return certificates.issued(store, hostname, ip, x509, days_valid=days_valid)


def _rendered_for_minion(minion_id):
    """True only while a salt-master worker answers minion `minion_id`'s own request for its
    pillar, whatever program started the daemon; False in every other program: fail closed.

    Salt's options cannot tell the daemon from salt-run or salt-api: all three load the
    master's configuration (``__role`` is ``master``) and ``__cli`` is merely argv[0]'s
    name. A master worker, though, handles each minion request inside Salt's request
    context, which holds that request (``MWorker._handle_aes`` in salt/master.py); a
    minion asks for its pillar with the ``_pillar`` command and its own id. Both must
    match: a runner that a minion starts (``publish.runner``, command ``minion_runner``)
    runs inside that minion's request too, and prints what it renders.
    """
    if __opts__.get("__role") != "master":
        return False
    try:
        # Imported here, not at the top: the pure functions need no Salt (the lab imports them).
        from salt.utils.ctx import get_request_context  # pylint: disable=import-outside-toplevel
    except ImportError:
        return False
    context = get_request_context()
    request = context.get("data") if isinstance(context, dict) else None
    return isinstance(request, dict) and request.get("cmd") == "_pillar" and request.get("id") == minion_id


def ext_pillar(minion_id, pillar, config=None):  # pylint: disable=unused-argument
    """
    Compute pillar ``redis`` for `minion_id` from the deployment YAML at `config`.

    Any mistake gives ``{"redis": error_pillar(message)}``: a one-line message naming the
    file, the key path and what was expected, no password, and no Redis role. The pillar
    render itself never fails, so other formulas' states on the same minion still run.
    """
    if not config or not isinstance(config, str):
        log.error("redis_deployment: %s", MISSING_CONFIG)
        return {"redis": error_pillar(MISSING_CONFIG)}
    try:
        computed = _redis_pillar(minion_id, pillar, config)
        result = {"redis": computed}
        if computed["mode"] == "sentinel" and computed["role"] in SENTINEL_ROLES:
            # The minion turns its Sentinel's failovers into events on the master's bus
            # (_beacons/redis_sentinel.py); Salt merges pillar beacons with its own config.
            result["beacons"] = {"redis_sentinel": [{"interval": SENTINEL_BEACON_INTERVAL_S}]}
        return result
    except DeploymentError as exc:
        message = str(exc)
        log.error("redis_deployment: minion %s: %s", minion_id, message)
    except Exception as exc:  # pylint: disable=broad-except
        # A bug of ours must not fail every formula's pillar either. The log keeps the
        # traceback (no values); the pillar gets one line.
        message = f"{config}: (internal): redis_deployment failed with {type(exc).__name__}; see the salt-master log"
        log.error("redis_deployment: minion %s: internal error", minion_id, exc_info=True)
    return {"redis": error_pillar(message)}
