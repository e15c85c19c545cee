"""
The node-level steps of a rolling restart of the deployment's Redis servers, in both modes
(Redis Cluster, and a master/replica pair watched by Sentinels), run on the node's own
minion: what this node's server is now (``replication``), waiting until it is in sync
again (``wait_in_sync``), restarting it through Salt's service module (``restart``), and
handing a master's role to its replica first (``cluster_failover`` on the replica,
``sentinel_failover`` through a Sentinel). ``salt-run redis_deployment.rolling_restart``
runs them one node at a time.

It also holds what every node's settings state asks of its own server, in both modes: how
its running configuration differs from Salt's settings (``config_diff``), setting what
Redis takes live (``config_set``), and waiting until it answers and has loaded its data
(``wait_ready``); the states ``redis_node.config_included`` and
``redis_node.settings_applied`` use them.

The password comes from pillar ``redis:password`` and is handed to redis-py in memory: it
never appears on a command line, in a return value or in a log line.

:depends: redis (redis-py)
"""

import json
import logging
import os
import re
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import redis

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_node"

# What this node's minion renders to learn its Redis service's name: the formula's
# map.jinja (OS family table merged with pillar), as every state and runner reads it.
SERVICE_TEMPLATE = '{%- from "redis/map.jinja" import redis with context %}{{ redis.service }}'
SENTINEL_SERVICE_TEMPLATE = '{%- from "redis/map.jinja" import redis with context %}{{ redis.sentinel_service }}'
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9@._-]+$")
# CLUSTER NODES flags of a node the cluster does not count as working.
FAILING_FLAGS = frozenset(("fail", "fail?", "noaddr", "handshake"))
# What a Sentinel requires of a replica before it promotes it (sentinelSelectSlave in Redis's
# sentinel.c, for a master that is up), in SENTINEL REPLICAS fields: none of these flags, a
# ping answered within 5 ping periods, INFO at most 3 INFO periods old, and its link to the
# master down for at most 10 down-after periods.
PROMOTION_BLOCKING_FLAGS = frozenset(("s_down", "o_down", "disconnected"))
PING_REPLY_MAX_AGE_MS = 5000
INFO_MAX_AGE_MS = 30000
MASTER_LINK_DOWN_PERIODS = 10
# How long a failover waits for the Sentinel to see a replica fit to promote (before the
# writes are paused), and then asks it again while it answers NOGOODSLAVE (writes paused).
PROMOTABLE_WAIT_SECONDS = 30.0
NOGOODSLAVE_RETRY_SECONDS = 5.0


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_node: the redis Python library (redis-py) is not installed")
    return __virtualname__


# ---------------------------------------------------------------- Salt's scheduler


def scheduled_jobs():
    """
    ``{name: item}``: the minion's scheduled jobs as this job's options hold them (a job the
    salt-minion forks carries its scheduler's jobs), each as ``schedule.list`` shows it
    (keys of ``SCHEDULE_CONF`` only, no None nor ``_seconds``, ``enabled`` defaulting to
    True), and under ``enabled`` whether the scheduler runs. What ``schedule.list
    where=opts`` answers, without the round trip to the salt-minion and the parse of
    ``_schedule.conf``: the states' first look before they ask ``schedule.list``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.scheduled_jobs
    """
    from salt.modules.schedule import SCHEDULE_CONF  # pylint: disable=import-outside-toplevel

    schedule = __opts__.get("schedule") or {}
    jobs = {"enabled": schedule.get("enabled", True) is not False}
    for job, item in schedule.items():
        if not isinstance(item, dict):
            continue
        shown = {}
        for key, value in item.items():
            if key in SCHEDULE_CONF and value is not None:
                shown[key] = True if value == "true" else False if value == "false" else value
        shown.setdefault("enabled", True)
        shown.pop("_seconds", None)  # the scheduler's own; schedule.list drops it too
        jobs[job] = shown
    return jobs


# ---------------------------------------------------------------- helpers


def _settings():
    return __pillar__.get("redis", {}) or {}


def _port(port=None):
    return int(port or _settings().get("port", 6379))


def _client(port=None, host="127.0.0.1", timeout=5):
    """A Redis server of the deployment (default: the local one), with the deployment's password."""
    return __utils__["redis_common.client"](_settings(), port, host=host, timeout=timeout)


def _sentinel_client(host="127.0.0.1", port=None, timeout=5):
    """A Sentinel of the deployment (default: the local one): Sentinels require the same password."""
    settings = _settings()
    return __utils__["redis_common.client"](settings, port or settings.get("sentinel_port", 26379),
                                            host=host, timeout=timeout)


def _error(exc):
    return __utils__["redis_common.error_text"](exc)


def _wait(condition, timeout, interval=0.2):
    """``redis_common.wait``, run in this module's loader context: called through ``__utils__``,
    Salt would run it (and so ``condition``) in the utils loader's, where ``__utils__`` and
    ``__pillar__`` do not resolve."""
    wait = __utils__["redis_common.wait"]
    return getattr(wait, "func", wait)(condition, timeout, interval)


def _address(ip, port):
    return f"{ip}:{int(port)}"


def _split(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _my_address(port=None):
    """This node's address as its peers and clients know it (the controller's ip_address)."""
    return _address(_settings().get("bind_ip") or "127.0.0.1", _port(port))


def _master_name(name=None):
    return name or _settings().get("master_name") or "mymaster"


def _peer_addresses():
    """``{address: hostname}`` of the deployment's Redis servers (pillar ``peers``)."""
    port = _port()
    return {_address(p["ip"], p.get("port") or port): p["hostname"] for p in _settings().get("peers") or []}


def _cluster_nodes(client):
    """CLUSTER NODES as ``[{id, address, flags, master, slots, open_slots}]``."""
    return __utils__["redis_replies.cluster_nodes"](client.execute_command("CLUSTER", "NODES"))


def _myself(client):
    """This server's own CLUSTER NODES entry, with ``role``."""
    me = next(n for n in _cluster_nodes(client) if "myself" in n["flags"])
    return dict(me, role="replica" if "slave" in me["flags"] else "master")


def _cluster_state(client):
    info = client.execute_command("CLUSTER", "INFO")
    return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("cluster_state:")),
                None)


def _view(client, port=None):
    """What a server says about itself (see ``replication``)."""
    info = client.info()
    view = {
        "reachable": True,
        "address": _my_address(port),
        "hostname": _settings().get("hostname"),
        "run_id": info.get("run_id"),
        "uptime_seconds": int(info.get("uptime_in_seconds", 0)),
        "loading": bool(int(info.get("loading", 0))),
        "role": "replica" if info.get("role") == "slave" else "master",
        "offset": int(info.get("master_repl_offset", 0)),
        "replicas": [],
        "cluster_enabled": bool(int(info.get("cluster_enabled", 0))),
    }
    for key in sorted(k for k in info if re.match(r"^slave\d+$", k)):
        entry = info[key]
        if isinstance(entry, dict):
            view["replicas"].append({"address": _address(entry.get("ip"), entry.get("port")),
                                     "state": entry.get("state"), "offset": int(entry.get("offset", 0)),
                                     "lag": int(entry.get("lag", 0))})
    if view["role"] == "replica":
        view.update(master=_address(info.get("master_host"), info.get("master_port")),
                    link=info.get("master_link_status"),
                    sync_in_progress=bool(int(info.get("master_sync_in_progress", 0))),
                    replica_offset=int(info.get("slave_repl_offset", 0)))
    if view["cluster_enabled"] and not view["loading"]:
        me = _myself(client)
        view.update(node_id=me["id"], master_id=me["master"], slots=me["slots"], cluster_state=_cluster_state(client))
    return view


# ---------------------------------------------------------------- what the node is


def replication(port=None):
    """
    What this node's Redis server is now, as a rolling restart plans from it:
    ``{"reachable", "address" (the controller's ip:port), "hostname", "run_id",
    "uptime_seconds", "loading", "role": master|replica, "offset" (master_repl_offset),
    "replicas": [{address, state, offset, lag}] (a master's connected replicas),
    "cluster_enabled"}``; a replica adds ``master`` (ip:port), ``link`` (up|down),
    ``sync_in_progress`` and ``replica_offset``; a cluster node adds ``node_id``,
    ``master_id``, ``slots`` (its ranges) and ``cluster_state``. When the server does not
    answer with the deployment's password: ``{"reachable": False, "address", "failure",
    "error"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.replication
    """
    try:
        return _view(_client(port), port)
    except redis.RedisError as exc:
        return {"reachable": False, "address": _my_address(port),
                "failure": __utils__["redis_common.failure"](exc), "error": _error(exc)}


class _Peers:
    """Clients of the deployment's other servers, made once per wait."""

    def __init__(self, timeout=2):
        self.timeout, self.clients = timeout, {}

    def get(self, address):
        if address not in self.clients:
            host, port = _split(address)
            self.clients[address] = _client(port, host=host, timeout=self.timeout)
        return self.clients[address]


def _not_in_sync(port, role, state, peers):
    """Why this node is not in sync yet, or None. ``state`` keeps the offset to reach across
    polls: the master's offset when the replica's link was first seen up."""
    try:
        view = _view(_client(port, timeout=2), port)
    except redis.RedisError as exc:
        return f"does not answer ({_error(exc)})"
    state["view"] = view
    if view["loading"]:
        return "is loading its data"
    if role and view["role"] != role:
        return f"is a {view['role']}, expected a {role}"
    if view["role"] == "replica":
        if view["link"] != "up":
            return f"its link to its master {view['master']} is {view['link']}"
        if view["sync_in_progress"]:
            return f"a full sync from {view['master']} is in progress"
        if state.get("master") != view["master"]:
            try:
                state["target"] = int(peers.get(view["master"]).info("replication").get("master_repl_offset", 0))
            except redis.RedisError as exc:
                return f"its master {view['master']} does not answer ({_error(exc)})"
            state["master"] = view["master"]
        if view["replica_offset"] < state["target"]:
            return f"offset {view['replica_offset']} behind its master's {state['target']}"
    if view["cluster_enabled"]:
        if view["cluster_state"] != "ok":
            return f"says cluster_state:{view['cluster_state']}"
        for address in sorted(_peer_addresses()):
            if address == view["address"]:
                continue
            try:
                client = peers.get(address)
                cluster_state = _cluster_state(client)
                seen = next((n for n in _cluster_nodes(client) if n["id"] == view["node_id"]), None)
            except redis.RedisError as exc:
                return f"{address} does not answer ({_error(exc)})"
            if cluster_state != "ok":
                return f"{address} says cluster_state:{cluster_state}"
            if seen is None:
                return f"{address} does not know this node yet"
            if FAILING_FLAGS & set(seen["flags"]):
                return f"{address} still flags this node {','.join(sorted(FAILING_FLAGS & set(seen['flags'])))}"
    return None


def wait_in_sync(timeout=120, role=None, port=None):
    """
    Wait, bounded by ``timeout`` seconds, until this node's server is in sync: it answers
    with the deployment's password and has loaded its data; a replica's link to its master
    is up, no full sync is running and its offset reached its master's offset as it was
    when the link was seen up (a client may go on writing); in cluster mode every server
    of the deployment also says ``cluster_state:ok`` and none flags this node as failing.
    ``role`` (``master`` or ``replica``): also wait until the server has that role.

    Returns ``{"in_sync": bool, "seconds", "role", "comment"}``; not in sync within
    ``timeout`` also sets the job's return code to 1.

    CLI Example:

    .. code-block:: bash

        salt server2 redis_node.wait_in_sync timeout=60
        salt server2 redis_node.wait_in_sync role=replica
    """
    if role not in (None, "master", "replica"):
        raise SaltInvocationError(f"role: expected master or replica, got {role!r}")
    started, state, peers, last = time.monotonic(), {}, _Peers(), {}

    def in_sync():
        last["why"] = _not_in_sync(port, role, state, peers)
        return last["why"] is None

    done = bool(_wait(in_sync, float(timeout), interval=0.2))
    seconds = round(time.monotonic() - started, 2)
    view = state.get("view") or {}
    if not done:
        __context__["retcode"] = 1
        return {"in_sync": False, "seconds": seconds, "role": view.get("role"),
                "comment": f"{_my_address(port)} not in sync within {timeout}s: {last['why']}"}
    return {"in_sync": True, "seconds": seconds, "role": view.get("role"),
            "comment": f"{_my_address(port)} in sync as a {view.get('role')}"}


# ---------------------------------------------------------------- restart


def _service_name(template=SERVICE_TEMPLATE, what="service"):
    """The Redis server's service on this minion as salt://redis/map.jinja names it
    (``redis-server`` on Debian, ``redis`` on RHEL, or pillar ``redis:service``); with
    ``SENTINEL_SERVICE_TEMPLATE``, ``what="sentinel_service"``, its Sentinel's."""
    try:
        name = __salt__["slsutil.renderer"](string=template, default_renderer="jinja")
    except Exception as exc:  # pylint: disable=broad-except
        raise CommandExecutionError(f"could not learn the Redis {what}'s name from salt://redis/map.jinja: {exc}; "
                                    f"pass {what}=NAME") from None
    name = name.strip() if isinstance(name, str) else ""
    if not _SERVICE_NAME.match(name):
        raise CommandExecutionError(f"salt://redis/map.jinja gave {name!r} as redis.{what}; pass {what}=NAME")
    return name


def restart(service=None, role=None, timeout=120, port=None):
    """
    Restart this node's Redis server through Salt's ``service.restart`` (the service that
    ``salt://redis/map.jinja`` names on this minion unless ``service`` is given), then wait,
    bounded by ``timeout`` seconds, until it answers with a new ``run_id``, has loaded its
    data and is in sync (``wait_in_sync``: a replica caught up with its master; in cluster
    mode every server says ``cluster_state:ok``). A replica's full resync after its restart
    starts at once: its master's ``repl-diskless-sync-delay`` is 0 while it restarts, and set
    back after.

    role
        ``replica`` or ``master``: the role this server must have now. Anything else (a
        failover happened since the caller looked) restarts nothing and raises. The server
        is also waited for in that role after the restart.

    Returns ``{"restarted": True, "service", "address", "role_before", "role_after",
    "run_id_before", "run_id_after", "seconds_down" (until it answered again), "seconds"
    (until in sync), "comment"}``; raises CommandExecutionError when the node cannot be
    restarted or is not back in sync in time.

    CLI Example:

    .. code-block:: bash

        salt server2 redis_node.restart role=replica
        salt server2 redis_node.restart service=redis-server timeout=300
    """
    if role not in (None, "master", "replica"):
        raise SaltInvocationError(f"role: expected master or replica, got {role!r}")
    started = time.monotonic()
    deadline = started + float(timeout)
    address = _my_address(port)
    try:
        before = _view(_client(port), port)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"{address} does not answer ({_error(exc)}): nothing restarted") from None
    if role and before["role"] != role:
        raise CommandExecutionError(f"{address} is a {before['role']} now, expected a {role}: nothing restarted")
    name = service or _service_name()
    delay = _sync_at_once(before)
    try:
        return _restart(name, before, role, port, started, deadline, address, timeout)
    finally:
        if delay is not None:
            _restore_sync_delay(before, delay)


def _sync_at_once(view):
    """A replica about to restart comes back without a replication offset its master can
    continue from (it loads its append-only file): it needs a full sync, which its master
    holds back ``repl-diskless-sync-delay`` seconds (default 5) in case more replicas ask.
    Make its master start at once: returns the delay to restore afterwards, or None."""
    if view.get("role") != "replica" or not view.get("master"):
        return None
    host, port = _split(view["master"])
    try:
        client = _client(port, host=host, timeout=2)
        delay = client.config_get("repl-diskless-sync-delay").get("repl-diskless-sync-delay")
        if delay in (None, "0"):
            return None
        client.config_set("repl-diskless-sync-delay", 0)
    except redis.RedisError as exc:
        log.debug("redis_node: repl-diskless-sync-delay on %s left alone: %s", view["master"], _error(exc))
        return None
    return delay


def _restore_sync_delay(view, delay):
    host, port = _split(view["master"])
    try:
        _client(port, host=host, timeout=2).config_set("repl-diskless-sync-delay", delay)
    except redis.RedisError as exc:
        log.warning("redis_node: repl-diskless-sync-delay %s not restored on %s: %s", delay, view["master"],
                    _error(exc))


def _restart(name, before, role, port, started, deadline, address, timeout):
    try:
        restarted = __salt__["service.restart"](name)
    except CommandExecutionError as exc:
        raise CommandExecutionError(f"service.restart {name} failed: {exc}") from None
    if restarted is False:
        raise CommandExecutionError(f"service.restart {name} failed")

    def back():
        try:
            view = _view(_client(port, timeout=2), port)
        except redis.RedisError:
            return None
        return view if view["run_id"] != before["run_id"] and not view["loading"] else None

    after = _wait(back, max(0.5, deadline - time.monotonic()), interval=0.1)
    if not after:
        raise CommandExecutionError(f"{name} restarted, but {address} did not answer with a new run_id within "
                                    f"{timeout}s")
    seconds_down = round(time.monotonic() - started, 2)
    synced = wait_in_sync(max(0.5, deadline - time.monotonic()), role=role, port=port)
    if not synced["in_sync"]:
        raise CommandExecutionError(f"{name} restarted (run_id {before['run_id'][:8]} -> {after['run_id'][:8]}), "
                                    f"but {synced['comment']}")
    seconds = round(time.monotonic() - started, 2)
    return {
        "restarted": True,
        "service": name,
        "address": address,
        "role_before": before["role"],
        "role_after": synced["role"],
        "run_id_before": before["run_id"],
        "run_id_after": after["run_id"],
        "seconds_down": seconds_down,
        "seconds": seconds,
        "comment": f"{name} restarted; {address} answered after {seconds_down}s and was in sync as a "
                   f"{synced['role']} after {seconds}s",
    }


# ---------------------------------------------------------------- package upgrade

# Debian's maintainer scripts restart a running server on upgrade (deb-systemd-invoke, which
# asks policy-rc.d first: exit 101 denies). While ``upgrade`` installs, this file denies the
# server's unit only, so the step's own restart (after its failover) is the only one.
POLICY_RC_D = "/usr/sbin/policy-rc.d"
POLICY_MARK = "# redis_node.upgrade: the server's restart is the rolling upgrade's own"


def _package_names():
    """The server's packages this minion has installed, ``{name: version}`` (pillar
    ``redis:pkgs``, Redis's Debian names by default)."""
    names = list(__utils__["redis_servers.name"](_settings(), "pkgs"))
    installed = __salt__["pkg.version"](*names) if len(names) > 1 else {names[0]: __salt__["pkg.version"](names[0])}
    return {name: installed.get(name) for name in names if installed.get(name)}


def _running(port=None):
    """``{"server", "version", "run_id"}`` of the local server, or None when it does not answer."""
    try:
        info = _client(port, timeout=2).info("server")
    except redis.RedisError:
        return None
    server, version = __utils__["redis_servers.running"](info)
    return {"server": server, "version": version, "run_id": info.get("run_id")}


def packages(version=None, refresh=False, port=None):
    """
    This node's server packages: for each one installed (of pillar ``redis:pkgs``), the
    installed version, the version an upgrade would go to (``version``, or the newest its
    package archive offers) and how the two compare; and the server running now.
    ``salt-run redis_deployment.upgrade`` plans from it.

    version
        The package version to go to (the same for each package, e.g. ``5:8.0.2-3+deb13u3``);
        ``unavailable`` says so when the archive does not offer it.
    refresh
        Update the package index first (``pkg.refresh_db``).

    Returns ``{"server", "packages": {name: {"installed", "target", "cmp"}}, "installed",
    "target" (the server package's), "cmp", "unavailable" (why not, or None), "running":
    {"server", "version", "run_id"} or None}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.packages
        salt '*' redis_node.packages version=5:8.0.2-3+deb13u3 refresh=True
    """
    if version is not None and (not isinstance(version, str) or not re.match(r"^[A-Za-z0-9.+~:-]+$", version)):
        raise SaltInvocationError(f"version: expected a package version such as 5:8.0.2-3+deb13u3, got {version!r}")
    if refresh:
        __salt__["pkg.refresh_db"]()
    installed = _package_names()
    found, unavailable = {}, None
    offered = __salt__["pkg.list_repo_pkgs"](*installed) if version and installed else {}
    latest = __salt__["pkg.latest_version"](*installed, refresh=False) if installed and not version else {}
    if isinstance(latest, str):
        latest = {next(iter(installed)): latest}
    for name, now in installed.items():
        target = version or latest.get(name) or now
        if version and version != now and version not in (offered.get(name) or []):
            unavailable = unavailable or (f"{name} {version} is not offered by its package archive (offered: "
                                          f"{', '.join(offered.get(name) or []) or 'none'})")
        found[name] = {"installed": now, "target": target, "cmp": __salt__["pkg.version_cmp"](target, now)}
    main = next((found[n] for n in found if n.endswith("-server")), None) or next(iter(found.values()), {})
    return {"server": _settings().get("server") or "redis", "packages": found, "installed": main.get("installed"),
            "target": main.get("target"), "cmp": main.get("cmp"), "unavailable": unavailable,
            "running": _running(port)}


def _install_held(targets, service):
    """Install ``targets`` ({name: version}) with ``service``'s restart by the packages'
    scripts denied (policy-rc.d; an administrator's own policy-rc.d is left as it is)."""
    written = False
    if not __salt__["file.file_exists"](POLICY_RC_D):
        units = f"{service}|{service}.service"
        __salt__["file.write"](POLICY_RC_D, f"#!/bin/sh\n{POLICY_MARK}\ncase \"$1\" in {units}) exit 101;; "
                                            "esac\nexit 0")
        __salt__["file.set_mode"](POLICY_RC_D, "0755")
        written = True
    try:
        __salt__["pkg.install"](pkgs=[{name: version} for name, version in targets.items()], refresh=False)
    finally:
        if written and POLICY_MARK in (__salt__["file.read"](POLICY_RC_D) or ""):
            __salt__["file.remove"](POLICY_RC_D)


def _sentinel_back(timeout):
    """Wait until the local Sentinel answers (its package's scripts restart it)."""
    def answers():
        try:
            return _sentinel_client(timeout=2).ping()
        except redis.RedisError:
            return False
    return _wait(answers, timeout, interval=0.2)


def upgrade(packages=None, role=None, timeout=120, port=None, restart_server=True):
    """
    Upgrade this node's server packages to the versions given and restart its server once,
    waited for until in sync (``restart``). The packages' own scripts would restart the
    server on upgrade (Debian: deb-systemd-invoke): that restart is denied while they run
    (``/usr/sbin/policy-rc.d``, removed after), so a master is never restarted before its
    role went to a replica and the step's restart is the only one. Should the server still
    have restarted (an administrator's own policy-rc.d allowing it), it is not restarted a
    second time: it is waited for in sync. A Sentinel on the node restarts with its package
    and is waited for until it answers.

    packages
        ``{name: version}``, names of pillar ``redis:pkgs`` that are installed.
    role
        ``replica`` or ``master``: the role the server must have now (else nothing changes).
    restart_server
        False on a node without a server to restart (a witness).

    Returns ``{"installed_before", "installed_after", "running_before", "running_after",
    "restarted_by" (``upgrade``, ``package`` or None), "role_after", "run_id_before",
    "run_id_after", "seconds_down", "seconds"}``.

    CLI Example:

    .. code-block:: bash

        salt server2 redis_node.upgrade '{"redis-server": "5:8.0.2-3+deb13u4"}' role=replica
    """
    if role not in (None, "master", "replica"):
        raise SaltInvocationError(f"role: expected master or replica, got {role!r}")
    installed = _package_names()
    if not isinstance(packages, dict) or not packages or not all(
            isinstance(v, str) and v for v in packages.values()) or set(packages) - set(installed):
        raise SaltInvocationError(f"packages: expected {{name: version}} of installed server packages "
                                  f"({', '.join(installed) or 'none installed'}), got {packages!r}")
    started = time.monotonic()
    address = _my_address(port)
    before = _running(port) if restart_server else None
    if restart_server:
        if before is None:
            raise CommandExecutionError(f"{address} does not answer: nothing upgraded")
        if role:
            now = replication(port)
            if now.get("role") != role:
                raise CommandExecutionError(f"{address} is a {now.get('role')} now, expected a {role}: "
                                            "nothing upgraded")
    service = _service_name()
    sentinel = "-sentinel" in " ".join(packages) and _sentinel_back(2)
    try:
        _install_held(packages, service)
    except CommandExecutionError as exc:
        raise CommandExecutionError(f"upgrading {', '.join(packages)} failed: {exc}") from None
    after_pkgs = _package_names()
    wrong = {n: after_pkgs.get(n) for n, v in packages.items() if after_pkgs.get(n) != v}
    if wrong:
        raise CommandExecutionError(f"after the upgrade {wrong} are installed, expected {packages}")
    if sentinel and not _sentinel_back(max(0.5, started + float(timeout) - time.monotonic())):
        raise CommandExecutionError(f"packages upgraded, but the local Sentinel does not answer within {timeout}s")
    result = {"installed_before": installed, "installed_after": after_pkgs, "running_before": before,
              "restarted_by": None}
    if restart_server:
        now = _running(port)
        if now is not None and now["run_id"] == before["run_id"]:
            done = restart(service=service, role=role, timeout=max(1, started + float(timeout) - time.monotonic()),
                           port=port)
            result["restarted_by"] = "upgrade"
        else:
            synced = wait_in_sync(max(0.5, started + float(timeout) - time.monotonic()), role=role, port=port)
            if not synced["in_sync"]:
                raise CommandExecutionError(f"the package's scripts restarted {service}, but {synced['comment']}")
            done = {"role_after": synced["role"], "seconds_down": None}
            result["restarted_by"] = "package"
        running = _running(port)
        result.update(role_after=done["role_after"], run_id_before=before["run_id"],
                      run_id_after=(running or {}).get("run_id"), seconds_down=done.get("seconds_down"))
    result.update(running_after=_running(port) if restart_server else None,
                  seconds=round(time.monotonic() - started, 2))
    return result


# ---------------------------------------------------------------- failover, cluster mode


def cluster_failover(timeout=60, port=None):
    """
    Make this cluster replica its master's master: ``CLUSTER FAILOVER`` (the master stops
    its clients until this replica has every write, then the two swap: no acknowledged
    write is lost), then wait, bounded by ``timeout`` seconds, until this node says it is a
    master and the old master says it is this node's replica. The master must list this node
    as its replica, online, first (right after a swap its view may lag behind). A swap that
    has not happened within 7 s is asked for again (Redis gives a manual failover 5 s).

    Returns ``{"failed_over": True, "new_master" (this node), "old_master", "node_id",
    "seconds", "comment"}``; raises CommandExecutionError when this node is not a replica
    in sync, or the swap does not happen in time.

    CLI Example:

    .. code-block:: bash

        salt server4 redis_node.cluster_failover timeout=30
    """
    started = time.monotonic()
    deadline = started + float(timeout)
    address = _my_address(port)
    client = _client(port)
    try:
        view = _view(client, port)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"{address} does not answer ({_error(exc)})") from None
    if not view["cluster_enabled"]:
        raise CommandExecutionError(f"{address} is not a cluster node: use redis_node.sentinel_failover")
    if view["role"] != "replica":
        raise CommandExecutionError(f"{address} is a master: CLUSTER FAILOVER runs on one of its replicas")
    if view["link"] != "up" or view["sync_in_progress"]:
        raise CommandExecutionError(f"{address}'s link to its master {view['master']} is {view['link']}"
                                    + (" (full sync in progress)" if view["sync_in_progress"] else "")
                                    + ": it cannot take over without losing writes")
    old_address, my_id = view["master"], view["node_id"]
    host, old_port = _split(old_address)
    old = _client(old_port, host=host, timeout=2)

    def known_to_master():
        # Its master takes CLUSTER FAILOVER's request only from a node it knows as its replica
        # (right after a swap its view may lag) and with the replication link online.
        try:
            mine = next((n for n in _cluster_nodes(old) if n["id"] == my_id), None)
            linked = any(r["state"] == "online" for r in _view(old)["replicas"])
        except redis.RedisError:
            return False
        return mine is not None and "slave" in mine["flags"] and mine["master"] == view["master_id"] and linked

    if not _wait(known_to_master, max(0.5, min(15.0, deadline - time.monotonic())), interval=0.1):
        raise CommandExecutionError(f"{old_address} does not list {address} as its replica online: nothing failed "
                                    "over")

    def swapped():
        try:
            if _myself(client)["role"] != "master":
                return False
            theirs = _myself(old)
        except redis.RedisError:
            return False
        return theirs["role"] == "replica" and theirs["master"] == my_id

    asked = 0
    while time.monotonic() < deadline:
        try:
            client.execute_command("CLUSTER", "FAILOVER")
        except redis.RedisError as exc:
            raise CommandExecutionError(f"CLUSTER FAILOVER on {address} failed: {_error(exc)}") from None
        asked += 1
        if _wait(swapped, max(0.5, min(7.0, deadline - time.monotonic())), interval=0.1):
            seconds = round(time.monotonic() - started, 2)
            return {"failed_over": True, "new_master": address, "old_master": old_address, "node_id": my_id,
                    "seconds": seconds,
                    "comment": f"{address} took over from {old_address} in {seconds}s (CLUSTER FAILOVER"
                               + (f", asked {asked} times)" if asked > 1 else ")")}
    raise CommandExecutionError(f"{address} did not take over from {old_address} within {timeout}s "
                                f"(CLUSTER FAILOVER asked {asked} times)")


# ---------------------------------------------------------------- failover, Sentinel mode


def _sentinel_hosts():
    settings = _settings()
    port = int(settings.get("sentinel_port", 26379))
    return [{"hostname": h["hostname"], "ip": h["ip"], "port": int(h.get("port") or port)}
            for h in (settings.get("sentinel") or {}).get("hosts") or []]


def _sentinels_say(name):
    """``{hostname: "ip:port" the Sentinel there names for name, or None}`` of the
    Sentinels that answer (``SENTINEL GET-MASTER-ADDR-BY-NAME``)."""
    said = {}
    for host in _sentinel_hosts():
        try:
            reply = _sentinel_client(host["ip"], host["port"], timeout=1).execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
        except redis.RedisError:
            continue
        said[host["hostname"]] = _address(*reply) if reply else None
    return said


def _live_master(name):
    return __salt__["redis_sentinel.live_master"](name)


def _sentinels_to_ask():
    """The Sentinels asked for a failover, in the order they are asked: this host's first, then
    those of ``sentinel:hosts``."""
    local = {"hostname": "local", "ip": "127.0.0.1", "port": int(_settings().get("sentinel_port", 26379))}
    return [local] + _sentinel_hosts()


def _unfit(replica):
    """Why a Sentinel would not promote ``replica`` (its SENTINEL REPLICAS fields): what
    sentinelSelectSlave (Redis's sentinel.c) checks for a master that is up, as far as SENTINEL
    REPLICAS shows it, and a master link that is up (a replica syncing has not got every write)."""
    flags = set(replica.get("flags", "").split(","))
    down_after = int(replica.get("down-after-milliseconds", 0))
    checks = [
        (flags & PROMOTION_BLOCKING_FLAGS, "flagged " + ",".join(sorted(flags & PROMOTION_BLOCKING_FLAGS))),
        (replica.get("master-link-status") != "ok", "its master link is not up"),
        (int(replica.get("last-ok-ping-reply", 0)) > PING_REPLY_MAX_AGE_MS,
         f"last ping answered {replica.get('last-ok-ping-reply')} ms ago"),
        (int(replica.get("slave-priority", 1)) == 0, "slave-priority 0"),
        (int(replica.get("info-refresh", 0)) > INFO_MAX_AGE_MS, f"INFO {replica.get('info-refresh')} ms old"),
        (int(replica.get("master-link-down-time", 0)) > MASTER_LINK_DOWN_PERIODS * down_after,
         f"master link down for {replica.get('master-link-down-time')} ms"),
    ]
    return [why for failed, why in checks if failed]


def _replicas_seen(client, name, peers):
    """The deployment's replicas of ``name`` as the Sentinel behind ``client`` sees them:
    ``[{"unfit": [why], "seen": one line for an operator}]``."""
    seen = []
    for flat in client.execute_command("SENTINEL", "REPLICAS", name):
        replica = dict(zip(flat[::2], flat[1::2]))
        address = _address(replica["ip"], replica["port"])
        if address not in peers:
            continue
        unfit = _unfit(replica)
        line = (f"{peers[address]} ({address}) flags {replica.get('flags')}, master link "
                f"{replica.get('master-link-status')}: " + (f"unfit ({', '.join(unfit)})" if unfit else "fit"))
        seen.append({"unfit": unfit, "seen": line, "address": address,
                     "priority": int(replica.get("slave-priority", 1))})
    return seen


def _sentinel_named(hostname):
    return "the local Sentinel" if hostname == "local" else f"the Sentinel on {hostname}"


def _told(replicas):
    """What ``_replicas_seen`` found, for an error message."""
    return "; ".join(r["seen"] for r in replicas) or "no replica of the deployment"


def _asked_sentinel_sees(name, peers):
    """``(hostname, replicas)``: what the first Sentinel that answers, the one asked first for the
    failover, sees of the deployment's replicas (``_replicas_seen``); ``(None, [])`` when none
    answers."""
    for host in _sentinels_to_ask():
        try:
            return host["hostname"], _replicas_seen(_sentinel_client(host["ip"], host["port"], timeout=2), name, peers)
        except redis.RedisError:
            continue
    return None, []


def _ask_failover(name, peers, retry_for):
    """SENTINEL FAILOVER, to the local Sentinel first, then the others; the one that took it.
    A Sentinel that sees no replica fit to promote yet (NOGOODSLAVE: nothing started) is asked
    again for up to ``retry_for`` seconds: its view of the replica may have changed since it was
    looked at."""
    reasons = []
    for host in _sentinels_to_ask():
        client = _sentinel_client(host["ip"], host["port"], timeout=2)
        refusal = {}

        def taken():
            try:
                client.execute_command("SENTINEL", "FAILOVER", name)
            except redis.ResponseError as exc:
                if not str(exc).startswith("NOGOODSLAVE"):
                    raise
                refusal["error"] = exc
                return False
            return True

        try:
            if _wait(taken, retry_for, interval=0.1):
                return host["hostname"]
        except redis.ResponseError as exc:
            raise CommandExecutionError(f"SENTINEL FAILOVER {name} refused: {_error(exc)}") from None
        except redis.RedisError as exc:
            reasons.append(f"{host['hostname']}: {_error(exc)}")
            continue
        try:
            seen = _told(_replicas_seen(client, name, peers))
        except redis.RedisError as exc:
            seen = f"(SENTINEL REPLICAS: {_error(exc)})"
        raise CommandExecutionError(f"SENTINEL FAILOVER {name} refused by {_sentinel_named(host['hostname'])} for "
                                    f"{round(retry_for, 1)}s: {_error(refusal['error'])}; it sees {seen}")
    raise CommandExecutionError(f"no Sentinel takes SENTINEL FAILOVER {name}: " + "; ".join(reasons))


def _priorities(addresses, priority):
    """``CONFIG SET replica-priority`` on the servers at ``addresses`` (not persisted: a
    restart forgets it); {address: the priority it had}. One that does not answer is skipped."""
    before = {}
    for address in addresses:
        host, port = _split(address)
        try:
            client = _client(port, host=host, timeout=2)
            before[address] = int(client.config_get("replica-priority").get("replica-priority", 100))
            client.config_set("replica-priority", int(priority))
        except redis.RedisError as exc:
            log.warning("redis_node: replica-priority on %s: %s", address, _error(exc))
    return before


def _restore_priorities(before):
    for address, priority in before.items():
        _priorities([address], priority)


def sentinel_failover(name=None, timeout=60, pause_writes=True, to=None):
    """
    Hand the live master's role to its replica through the Sentinels: ``SENTINEL FAILOVER``
    (to this host's Sentinel, else another of ``sentinel:hosts``), then wait, bounded by
    ``timeout`` seconds, until the Sentinels agree on the new master
    (``redis_sentinel.live_master`` names it, every Sentinel that answers names its
    address) and it says it is a master. The old master is then made its replica at once
    (``REPLICAOF``, persisted with ``CONFIG REWRITE``, its clients disconnected), as the
    Sentinels would some seconds later.

    pause_writes
        Hold the old master's writes (``CLIENT PAUSE ... WRITE``) from before the failover
        until it is a replica, after waiting for its replica to have every write: a
        client's write then waits a moment and goes to the new master, instead of
        landing on the old master after its replica was promoted (where it is lost).

    to
        Only these replicas may take over (addresses ``ip:port``, a list): every other replica
        of the master gets ``replica-priority 0`` (live, not persisted; given back if the
        failover fails; after it, the old master gets it too: ``barred`` in the return), the
        Sentinel asked is waited for until it sees that, and the paused master waits until
        *every* one of ``to`` has its offset (whichever the Sentinel picks has every write).
        ``salt-run redis_deployment.replace_hosts`` moves a pair onto its new hosts this way.

    A replica just restarted may be online for Redis while the Sentinel still sees it down: this
    waits first, bounded, until the Sentinel asked sees a replica of the deployment it would
    promote (``SENTINEL REPLICAS``), and asks again for a few seconds while it answers
    NOGOODSLAVE.

    Returns ``{"failed_over": True, "old_master", "new_master" (hostnames),
    "old_address", "new_address", "sentinel" (the one that ran it), "seconds",
    "comment"}``; raises CommandExecutionError when the Sentinels have not decided on a
    master, it has no replica in sync, the Sentinel sees none it would promote (the message
    says what it sees), or they do not agree on a new one in time.

    CLI Example:

    .. code-block:: bash

        salt server2 redis_node.sentinel_failover
        salt server2 redis_node.sentinel_failover timeout=30 pause_writes=False
    """
    name = _master_name(name)
    started = time.monotonic()
    deadline = started + float(timeout)

    def remaining(at_most=None):
        left = max(0.5, deadline - time.monotonic())
        return min(left, at_most) if at_most else left

    last = {}

    def decided():
        last["live"] = _live_master(name)
        return last["live"].get("master") is not None

    if not _wait(decided, remaining(15.0), interval=0.2):
        raise CommandExecutionError(f"the Sentinels have not decided on the master of {name}: "
                                    f"{last['live'].get('comment')}")
    live = last["live"]
    old_host, old_address = live["master"], live["address"]
    peers = _peer_addresses()
    old = _client(live["port"], host=live["ip"], timeout=2)
    try:
        info = _view(old)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"the master {old_host} ({old_address}) does not answer: {_error(exc)}") from None
    online = [r for r in info["replicas"] if r["state"] == "online" and r["address"] in peers]
    if info["role"] != "master" or not online:
        raise CommandExecutionError(f"{old_host} ({old_address}) has no replica of the deployment online: a failover "
                                    "would lose its data set")
    takers = set(to if isinstance(to, (list, tuple, set)) else str(to).split(",")) if to else None
    if takers is not None and not takers & {r["address"] for r in online}:
        raise CommandExecutionError(f"none of {', '.join(sorted(takers))} is a replica of {old_host} "
                                    f"({old_address}) online: nothing failed over")
    barred = _priorities([r["address"] for r in info["replicas"] if r["address"] not in takers], 0) \
        if takers is not None else {}
    try:
        done = _failover(name, old, live, peers, takers, pause_writes, started, timeout, remaining)
    except Exception:
        _restore_priorities(barred)
        raise
    if takers is not None:
        # The hosts being left stay out of any later failover until they are retired.
        _priorities([old_address], 0)
        done["barred"] = sorted(set(barred) | {old_address})
    return done


def _failover(name, old, live, peers, takers, pause_writes, started, timeout, remaining):
    old_host, old_address = live["master"], live["address"]
    # Redis calls a replica back from a restart online before the Sentinels have seen it answer
    # again (they ping every second, read INFO every 10s): asked then, a Sentinel refuses.
    # Waited for before the writes are paused, so that the pause stays short.
    seen = {}

    def promotable():
        seen["sentinel"], seen["replicas"] = _asked_sentinel_sees(name, peers)
        if takers is None:
            return any(not r["unfit"] for r in seen["replicas"])
        return any(not r["unfit"] for r in seen["replicas"] if r["address"] in takers) and all(
            r["priority"] == 0 for r in seen["replicas"] if r["address"] not in takers)

    if not _wait(promotable, remaining(PROMOTABLE_WAIT_SECONDS), interval=0.2):
        if seen["sentinel"] is None:
            raise CommandExecutionError(f"no Sentinel answers SENTINEL REPLICAS {name}: nothing failed over")
        raise CommandExecutionError(f"{_sentinel_named(seen['sentinel'])} sees no replica of {old_host} fit to "
                                    f"promote: {_told(seen['replicas'])}; nothing failed over")
    paused, took, new_host, new_address = False, None, None, None
    try:
        if pause_writes:
            old.execute_command("CLIENT", "PAUSE", int(remaining() * 1000), "WRITE")
            paused = True

            def replicas_have_everything():
                view = _view(old)
                if takers is not None:
                    return all(r["offset"] >= view["offset"] for r in view["replicas"] if r["address"] in takers)
                return any(r["offset"] >= view["offset"] for r in view["replicas"] if r["address"] in peers)

            if not _wait(replicas_have_everything, remaining(10.0), interval=0.05):
                raise CommandExecutionError(f"no replica of {old_host} caught up with its offset within 10s: "
                                            "nothing failed over")
        took = _ask_failover(name, peers, remaining(NOGOODSLAVE_RETRY_SECONDS))

        def agreed():
            live_now = _live_master(name)
            if live_now.get("master") in (None, old_host):
                return None
            said = _sentinels_say(name)
            if not said or any(address != live_now["address"] for address in said.values()):
                return None
            try:
                if _client(live_now["port"], host=live_now["ip"], timeout=2).info("replication")["role"] != "master":
                    return None
            except redis.RedisError:
                return None
            return live_now

        live_now = _wait(agreed, remaining(), interval=0.2)
        if not live_now:
            raise CommandExecutionError(f"the Sentinels did not agree on a new master of {name} within {timeout}s "
                                        f"(SENTINEL FAILOVER via {took}): {_live_master(name).get('comment')}")
        new_host, new_address = live_now["master"], live_now["address"]
        if takers is not None and new_address not in takers:
            raise CommandExecutionError(f"the Sentinels promoted {new_host} ({new_address}), not one of "
                                        f"{', '.join(sorted(takers))}")
        try:
            old.execute_command("REPLICAOF", live_now["ip"], int(live_now["port"]))
            old.execute_command("CONFIG", "REWRITE")
            old.execute_command("CLIENT", "KILL", "TYPE", "normal")
        except redis.RedisError as exc:
            log.warning("redis_node: making %s a replica of %s: %s (the Sentinels will)", old_host, new_host,
                        _error(exc))
    finally:
        if paused:
            try:
                old.execute_command("CLIENT", "UNPAUSE")
            except redis.RedisError as exc:
                log.warning("redis_node: CLIENT UNPAUSE on %s: %s", old_address, _error(exc))
    seconds = round(time.monotonic() - started, 2)
    return {"failed_over": True, "old_master": old_host, "new_master": new_host, "old_address": old_address,
            "new_address": new_address, "sentinel": took, "seconds": seconds,
            "comment": f"{new_host} ({new_address}) took over from {old_host} ({old_address}) in {seconds}s "
                       f"(SENTINEL FAILOVER via {took}); the Sentinels agree"}


# ---------------------------------------------------------------- the running server's configuration


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
    ``dir`` that leads to the same directory (symlinks) does not differ, nor does a
    start-only directive the server does not show (Redis 6.2: ``cluster-config-file``).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.config_diff '{"maxclients": 10000}'
    """
    try:
        client = _client(port, timeout=float(timeout))
        diff = __utils__["redis_config.running_diff"](client, settings)
    except redis.RedisError as exc:
        failure = __utils__["redis_common.failure"](exc)
        return {
            "reachable": False,
            "auth_failed": failure == "auth",
            "loading": failure == "loading",
            "failure": failure,
            "error": __utils__["redis_common.error_text"](exc),
            "differs": sorted(settings),
            "running": {},
        }
    return dict(diff, reachable=True, auth_failed=False, failure="", error="")


def config_set(settings, port=None):
    """
    Apply ``settings`` (directive -> value) to the running server with CONFIG SET.

    Returns ``{"applied": [directive, ...], "refused": {directive: Redis's reason}}``;
    values are never echoed, so a refused password stays secret. Raises
    CommandExecutionError when the server cannot be reached or does not answer.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.config_set '{"maxclients": 20000}'
    """
    client = _client(port)
    result = {"applied": [], "refused": {}}
    for directive, value in settings.items():
        try:
            client.config_set(directive, value)
            result["applied"].append(directive)
        except redis.ResponseError as exc:
            if __utils__["redis_common.failure"](exc) != "error":  # BUSY, NOAUTH...: the server, not the setting
                raise CommandExecutionError(_unusable(exc, port, result["applied"])) from None
            reason = "refused" if __utils__["redis_config.secret"](directive) else str(exc)
            result["refused"][directive] = reason
        except redis.RedisError as exc:
            raise CommandExecutionError(_unusable(exc, port, result["applied"])) from None
    return result


# A switch's CONFIG SET, in order: Redis applies the arguments of one CONFIG SET in the order
# given, so the TLS files are loaded before the TLS port opens, and the port that changes
# protocol is freed before it is bound again. Between the two the port refuses in both
# protocols (microseconds; longer when the server is preempted), and connections queued on
# the old listener are reset: no order avoids that instant, clients ride it out by retrying.
TO_TLS = ("tls-cert-file", "tls-key-file", "tls-ca-cert-file", "tls-auth-clients", "port", "tls-port",
          "tls-replication", "tls-cluster")


def _switch_arguments(to, settings, port):
    """CONFIG SET's arguments (name, value, ...) that switch the server to ``to``."""
    if to == "tls":
        wanted = [(d, settings[d]) for d in TO_TLS if d in settings]
    else:
        wanted = [("tls-port", 0), ("port", settings.get("port") or port), ("tls-replication", "no"),
                  ("tls-cluster", "no")]
    return [str(word) for pair in wanted for word in pair]


def switch_tls(to, settings, port=None):
    """
    Switch the local server between plain TCP and TLS while it runs, with no restart: one
    ``CONFIG SET`` (Redis 7 and later) of the TLS files, ``port``, ``tls-port``,
    ``tls-replication`` and ``tls-cluster`` (``to="plain"``: ``tls-port 0`` and ``port``
    back), in an order that frees the port before it is bound in the other protocol.
    Connections already open stay open (a replica's link, a cluster bus link); new ones speak
    ``to``. Then ``CONFIG REWRITE``, so that Redis's own file (which an earlier rewrite may
    have given a ``tls-port``) starts the server as it runs now.

    to
        ``tls`` or ``plain``.
    settings
        The directives Salt owns (``redis_node.settings_applied``): the TLS files and ports.
    port
        The port clients use (pillar ``redis:port``), where the server listens before and
        after, in either protocol.

    Returns ``{"set": [directive, ...], "comment"}``; raises ``CommandExecutionError`` when
    Redis refuses.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.switch_tls plain '{"port": 6379}'
    """
    if to not in ("tls", "plain"):
        raise SaltInvocationError(f"to: expected tls or plain, got {to!r}")
    port = _port(port)
    arguments = _switch_arguments(to, settings, port)
    try:
        _client(port).execute_command("CONFIG", "SET", *arguments)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"Redis on 127.0.0.1:{port} refused the switch to {to}: {_error(exc)}") from None
    try:
        # A new client: the old one spoke the protocol the port no longer speaks.
        _client(port).execute_command("CONFIG", "REWRITE")
    except redis.RedisError as exc:
        raise CommandExecutionError(f"Redis on 127.0.0.1:{port} switched to {to} but cannot persist it "
                                    f"(CONFIG REWRITE: {_error(exc)})") from None
    speaks = "TLS" if to == "tls" else "plain TCP"
    return {"set": arguments[::2], "comment": f"the server on port {port} speaks {speaks} now (no restart)"}


def _unusable(exc, port, applied):
    done = f" (already applied: {', '.join(applied)})" if applied else ""
    return f"Redis on 127.0.0.1:{_port(port)} cannot take CONFIG SET: {__utils__['redis_common.error_text'](exc)}{done}"


def wait_ready(timeout=30, port=None):
    """
    Wait until the local server answers PING with the deployment's password and has
    finished loading its data. Returns True when it does within ``timeout`` seconds.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.wait_ready timeout=10
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


# ---------------------------------------------------------------- the monitoring login

MONITORING_USER = "salt-monitor"  # _utils/redis_acl.py says what it may run


def monitoring_user(dry_run=False, port=None, sentinel=False):
    """
    Make sure the local Redis server (or, with ``sentinel=True``, the local Sentinel) has the
    read-only ACL user ``salt-monitor`` that ``/usr/local/bin/redis_health`` and the
    Prometheus exporter log in as: ``PING``, ``INFO``, ``ROLE``, the cluster's view
    (``CLUSTER INFO``/``NODES``), the slow log and latency (a Sentinel: its ``SENTINEL``
    views and ``CKQUORUM``); no ``CONFIG``, no key, no write. Its password is derived from
    the deployment's; Redis keeps its hash only, in its own file (``CONFIG REWRITE``,
    ``ACL SAVE`` with an ``aclfile``, a Sentinel's ``SENTINEL FLUSHCONFIG``). ACL users are
    not replicated: every server and Sentinel needs this.

    Returns ``{"changed": bool, "differs": [...], "persisted": bool, "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.monitoring_user
        salt '*' redis_node.monitoring_user sentinel=True
    """
    settings = _settings()
    user = MONITORING_USER
    where = "Sentinel" if sentinel else "Redis server"
    try:
        client = _sentinel_client(port=port) if sentinel else _client(port)
        return __utils__["redis_acl.converge"](client, __utils__["redis_acl.secrets"](settings), user,
                                               on="sentinel" if sentinel else "server", dry_run=dry_run)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"ACL user {user} on the local {where}: {_error(exc)}") from None


# ---------------------------------------------------------------- the server's own logins

REPLICATION_USER = "salt-replication"  # _utils/redis_acl.py says what it may run


def _master_link(client):
    """``(host, port)`` of the master this server replicates from, or None for a master."""
    info = client.info("replication")
    if info.get("role") != "slave":
        return None
    return info.get("master_host"), int(info.get("master_port") or 0)


def _replication_login(client, dry_run, wait):
    """Point ``masteruser``/``masterauth`` at the replication user, with the new derived secret
    once this server's master accepts it (waiting up to ``wait`` seconds for a master not
    applied yet), else the login in use. Returns ``(changed, comment)``."""
    acl = __utils__["redis_acl.secrets"]
    passwords = acl(_settings())
    running = client.config_get("master*")
    current = (running.get("masteruser") or None, running.get("masterauth") or "")
    link = _master_link(client)
    connects = {}
    if link:
        connect = __utils__["redis_common.connector"](link[0], link[1], timeout=3, tls=_settings().get("tls"))
        connects[f"{link[0]}:{link[1]}"] = connect
    login, waiting = __utils__["redis_acl.settled_outgoing_login"](passwords, REPLICATION_USER, current, connects,
                                                                   0 if dry_run else wait)
    note = f"; waiting for {', '.join(waiting)} to accept the new replication login" if waiting else ""
    if login == current:
        return False, f"replication logs in as {login[0] or 'default'}{note}"
    if not dry_run:
        client.config_set("masteruser", login[0])
        client.config_set("masterauth", login[1])
    return True, f"replication login {'would be ' if dry_run else ''}set to {login[0]}{note}"


def logins(dry_run=False, port=None, wait=30):
    """
    Converge the local Redis server's own logins with the deployment's password (pillar
    ``redis:password``, and ``redis:previous_password`` during a two-phase rotation), live,
    without a restart:

    - Redis's ``default`` user accepts the password (and the previous one while it is set)
      and ``requirepass`` is the password, changed together in one MULTI;
    - the replication user ``salt-replication`` (``PSYNC``, ``REPLCONF``, ``PING``) accepts
      the secrets derived from them;
    - ``masteruser``/``masterauth`` log in to the master as ``salt-replication``, with the
      new derived secret as soon as the master accepts it (up to ``wait`` seconds for a
      master not applied yet; until then the login in use).

    Persisted in Redis's own file (``CONFIG REWRITE``). Returns ``{"changed": bool,
    "changes": {...}, "comment": str}``; no secret in it.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.logins dry_run=True
    """
    settings = _settings()
    acl = __utils__["redis_acl.secrets"](settings)
    try:
        client = _client(port)
        changes, comments, unsaved = __utils__["redis_acl.users_converged"](
            client, acl, [REPLICATION_USER], dry_run=dry_run)
        if unsaved:
            raise CommandExecutionError(unsaved)
        changed, comment = _replication_login(client, dry_run, wait)
        comments.append(comment)
        if changed:
            changes["replication_login"] = comment
            if not dry_run:
                why = __utils__["redis_acl.persist"](client)
                if why:
                    raise CommandExecutionError(f"replication login: {why}")
    except redis.RedisError as exc:
        return __utils__["redis_common.logins_refused"]("server", exc, dry_run)
    process = f"server-{port or settings.get('port', 6379)}"
    return __utils__["redis_common.logins_converged"](process, settings.get("password"), changes, comments, dry_run)


def reload_tls(port=None, dry_run=False):
    """
    Have the local Redis server load its TLS files again (a renewed certificate), live:
    ``CONFIG SET tls-cert-file`` with the path it already has makes Redis read the key,
    certificate and CA files anew; no restart, no client cut off. Nothing to do where the
    server does not run TLS yet (its next start reads the files) or is not reachable.

    Returns ``{"reloaded": bool, "comment": str}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.reload_tls
    """
    port = int(port or _settings().get("port", 6379))
    try:
        client = _client(port)
        running = __utils__["redis_config.config_get"](client, ["tls-port", "tls-cert-file"])
        if not int(running.get("tls-port") or 0):
            return {"reloaded": False, "comment": f"the server on port {port} does not run TLS yet: its start reads "
                                                  "the files"}
        if dry_run:
            return {"reloaded": True, "comment": f"the server on port {port} would load its TLS files again"}
        client.config_set("tls-cert-file", running["tls-cert-file"])
    except redis.RedisError as exc:
        failure = __utils__["redis_common.failure"](exc)
        if failure in ("refused", "auth", "timeout"):
            return {"reloaded": False, "comment": f"nothing to reload: {_error(exc)}"}
        raise CommandExecutionError(f"TLS files of the local server: {_error(exc)}") from None
    return {"reloaded": True, "comment": f"the server on port {port} loaded its TLS files again (no restart)"}


def accepts_password(port=None, timeout=5):
    """
    Whether the local Redis server lets the deployment's password in (or, during a two-phase
    rotation, the previous one): ``True``, ``False`` (refused) or ``None`` (no answer).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_node.accepts_password
    """
    settings = _settings()
    connect = __utils__["redis_common.connector"]("127.0.0.1", port or settings.get("port", 6379), timeout,
                                                  tls=settings.get("tls"))
    return __utils__["redis_acl.accepts_any"](connect, __utils__["redis_acl.secrets"](settings))


def forced_password_change(port=None, settings_file=None, dry_run=False):
    """
    ``force_password_change`` (pillar ``redis:force_password_change``) on the local Redis
    server when it refuses the deployment's password: log in with the password last accepted
    on this host (Salt's root-only record, written at every apply, else ``requirepass`` in
    ``settings_file``, Salt's settings file as last applied) and give ``default`` and
    ``requirepass`` the deployment's password, live, in one MULTI: no restart, and every
    client still using the old password is refused from then on.

    Returns ``{"changed": bool, "persisted": bool, "comment": str}`` (no secret), or None when
    the server accepts neither of those passwords either.

    CLI Example:

    .. code-block:: bash

        salt redis1 redis_node.forced_password_change settings_file=/etc/redis-salt/redis.conf dry_run=True
    """
    port = int(port or _settings().get("port", 6379))
    candidates = [__utils__["redis_common.remembered_password"](__opts__.get("cachedir"), f"server-{port}")]
    if settings_file:
        candidates.append(__utils__["redis_config.file_values"](settings_file, {"requirepass"}).get("requirepass"))
    connect = __utils__["redis_common.connector"]("127.0.0.1", port, 5, tls=_settings().get("tls"))
    acl = __utils__["redis_acl.secrets"](_settings())
    try:
        return __utils__["redis_acl.forced_change"](connect, acl, candidates, dry_run=dry_run)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"127.0.0.1:{port}: {_error(exc)}") from None


# ---------------------------------------------------------------- retirement

# Salt's cache (root's): the node's record that replace_hosts took it out for good.
RETIRED_RECORD = ("redis_node", "retired.json")


def _retired_path():
    return os.path.join(__opts__.get("cachedir") or "/var/cache/salt/minion", *RETIRED_RECORD)


def retired():
    """
    The record ``retire`` left on this node (``{"by", "at", "address"}``), or None.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_node.retired
    """
    try:
        with open(_retired_path(), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return dict(record, path=_retired_path()) if isinstance(record, dict) else None


def retire(by="replace_hosts", service=None, server=True, sentinel=False, sentinel_service=None):
    """
    Stop and disable this node's Redis server for good, once it is out of the deployment
    (``salt-run redis_deployment.replace_hosts`` runs it on each old host after the cluster
    forgot it, or after a Sentinel pair moved off it), and record it in Salt's cache: a
    ``state.apply`` that still finds this host in the YAML then refuses to take it back into
    the cluster or the pair, saying to remove it from the YAML. Running it again changes
    nothing.

    server
        Stop and disable the Redis server (``service``, default: map.jinja's). False on a
        witness, which runs a Sentinel only.
    sentinel
        Also stop and disable the local Sentinel (``sentinel_service``, default: map.jinja's
        ``sentinel_service``): Sentinel mode.

    Returns ``{"service", "stopped", "disabled", "record"}`` (``service``: the units
    stopped, comma-separated).

    CLI Example:

    .. code-block:: bash

        salt server1 redis_node.retire
        salt server1 redis_node.retire sentinel=True
        salt witness1 redis_node.retire server=False sentinel=True
    """
    names = ([service or _service_name()] if server else []) + (
        [sentinel_service or _service_name(SENTINEL_SERVICE_TEMPLATE, "sentinel_service")] if sentinel else [])
    if not names:
        raise SaltInvocationError("retire: server=False without sentinel=True stops nothing")
    path = _retired_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    record = {"by": str(by), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "address": f"{_settings().get('bind_ip', '127.0.0.1')}:{_settings().get('port', 6379)}"}
    temporary = f"{path}.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    os.replace(temporary, path)
    for name in names:
        stopped = __salt__["service.stop"](name)
        disabled = __salt__["service.disable"](name)
        if not stopped or not disabled:
            raise CommandExecutionError(f"{name} could not be {'stopped' if not stopped else 'disabled'}: stop it by "
                                        "hand")
    return {"service": ", ".join(names), "stopped": True, "disabled": True, "record": path}
