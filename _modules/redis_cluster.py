"""
Inspect and adjust the local Redis node of the deployment described in pillar ``redis``.

The password comes from pillar ``redis:password`` and is handed to redis-py in memory:
it never appears on a command line, in a return value or in a log line.

Works with Redis 6.2 and later (CONFIG GET takes several names only from 7.0 on: older
servers are asked one name at a time).

:depends: redis (redis-py)
"""

import contextlib
import datetime
import grp
import json
import logging
import os
import subprocess
import time

from salt.exceptions import CommandExecutionError

try:
    import redis

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_cluster"

# Where the formula puts its files when pillar `redis` does not say (salt/redis/map.jinja's
# defaults, which pillar keys of the same name override).
DEFAULT_PATHS = {
    "salt_config_file": "/etc/redis-salt/redis-server.conf",
    "config_file": "/etc/redis/redis.conf",
    "sentinel_config_file": "/etc/redis/sentinel.conf",
    "data_dir": "/var/lib/redis",
}


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_cluster: the redis Python library (redis-py) is not installed")
    return __virtualname__


def _settings():
    return __pillar__.get("redis", {}) or {}


def _port(port=None):
    return int(port or _settings().get("port", 6379))


def _path(key):
    """A file or directory of the formula on this minion: pillar ``redis:<key>``, else map.jinja's default."""
    return _settings().get(key) or DEFAULT_PATHS[key]


def _client(port=None, timeout=5, host="127.0.0.1"):
    """redis-py client for a node of the deployment (default: this one), with its password."""
    return __utils__["redis_common.client"](_settings(), port, host=host, timeout=timeout)


def status():
    """
    Report what this node is and how it is doing: role and mode from the deployment,
    then ping, server (``redis`` or ``valkey``) and its version, memory against maxmemory and
    number of keys from the live server.
    When the deployment's pillar failed (``redis:error``), says so and why.

    ``restart_pending`` lists the directives of Salt's settings file (pillar
    ``redis:salt_config_file``, default ``/etc/redis-salt/redis-server.conf``) that Redis
    reads only at start and whose running value differs: a restart the state left to
    ``salt-run redis_deployment.rolling_restart`` on a formed deployment (empty when none).
    It is computed from the running server each time, so any restart clears it.

    ``password_phase`` says where the server is in a two-phase password rotation:
    ``rotating`` while its ``default`` user accepts two passwords (the deployment's and the
    previous one: ``cache.redis.previous_password`` is set), ``one password`` otherwise.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.status
    """
    settings = _settings()
    result = {"role": settings.get("role", "none"), "mode": settings.get("mode", "none")}
    if settings.get("error"):
        result["error"] = f"deployment pillar failed: {settings['error']}"
        return result
    if result["mode"] == "sentinel" and result["role"] in ("master", "replica", "sentinel-only"):
        result["sentinel"] = _sentinel_status()
    if result["role"] not in ("cluster-node", "master", "replica"):
        if "sentinel" not in result:
            result["comment"] = "this minion runs no Redis server of the deployment"
        return result
    result["address"] = f"{settings.get('bind_ip', '127.0.0.1')}:{settings.get('port', 6379)}"
    try:
        client = _client()
        info = client.info()  # answers only with the password: no separate PING needed
        keys = client.dbsize()
        accepted = __utils__["redis_acl.password_hashes"](client)
    except redis.RedisError as exc:
        result.update({"ping": False, "error": __utils__["redis_common.error_text"](exc)})
        return result
    result["password_phase"] = "rotating" if len(accepted) > 1 else "one password"
    server, version = __utils__["redis_servers.running"](info)
    result.update(
        {
            "ping": True,
            "server": server,
            "version": version,
            "rdb_format": __utils__["redis_servers.rdb_format"](server, version),
            "uptime_seconds": info.get("uptime_in_seconds"),
            "redis_mode": info.get("redis_mode") or info.get("server_mode"),  # Valkey: server_mode
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
    result["restart_pending"], error = _restart_pending()
    if error:
        result["restart_pending_error"] = error
    if result["cluster_enabled"]:
        try:
            view = _view(client)
        except redis.RedisError as exc:
            result["cluster_error"] = __utils__["redis_common.error_text"](exc)
            return result
        result.update(
            {
                "cluster_state": view["state"],
                "cluster_healthy": view["healthy"],
                "node_id": view["id"],
                "cluster_role": view["role"],
                "slots": view["slots"],
                "known_nodes": view["known_nodes"],
                "failing_nodes": view["failing"],
            }
        )
        if view["master"]:
            master = next((n for n in view["nodes"] if n["id"] == view["master"]), {})
            result["master"] = master.get("address", view["master"])
    return result


def _restart_pending():
    """``(directives, error)``: the start-only directives whose value in Salt's settings file the
    running server lacks (as redis_node.config_diff compares), or why that cannot be told."""
    path = _path("salt_config_file")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return [], ""  # nothing deployed yet: nothing for a restart to pick up
    except OSError as exc:
        return [], f"{path}: {exc.strerror}"
    lines = text.splitlines()
    start_only = __utils__["redis_config.start_only"](d for _, d, _ in __utils__["redis_config.directives"](lines))
    try:
        diff = __utils__["redis_config.running_diff"](_client(), __utils__["redis_config.values"](text, start_only))
    except redis.RedisError as exc:
        return [], __utils__["redis_common.error_text"](exc)
    return sorted(diff["differs"]), ""


def _sentinel_status():
    """The Sentinels' view (the live master, agreement, failover outlook and warnings), or why not."""
    try:
        return __salt__["redis_sentinel.status"]()
    except (KeyError, CommandExecutionError) as exc:
        return {"error": f"no Sentinel view: {exc}"}


# ---------------------------------------------------------------- Redis Cluster

TOTAL_SLOTS = 16384


def _cluster_command(client, *args):
    """A CLUSTER subcommand's raw answer (redis-py would reshape some of them)."""
    return client.execute_command("CLUSTER", *args)


def _parse_cluster_nodes(text):
    """CLUSTER NODES as a list of {id, address, flags, master, slots, open_slots}."""
    return __utils__["redis_replies.cluster_nodes"](text)


def _view(client, peer_count=None):
    """What one node says about its cluster (see cluster_view)."""
    view = __utils__["redis_replies.cluster_health_view"](_cluster_command(client, "INFO"),
                                                          _cluster_command(client, "NODES"))
    nodes = view["nodes"]
    myself = next((n for n in nodes if "myself" in n["flags"]), {})
    view.update({
        "id": myself.get("id"),
        "role": "replica" if "slave" in myself.get("flags", []) else "master",
        "master": myself.get("master"),
        "slots": myself.get("slots", []),
        "keys": client.dbsize(),
    })
    peers = len(_settings().get("peers") or []) if peer_count is None else peer_count
    view["shape"] = _shape_moves([_shape_node(n) for n in nodes if _live(n)])
    view["healthy"] = (
        view["state"] == "ok"
        and view["slots_assigned"] == view["slots_ok"] == TOTAL_SLOTS
        and not view["open_slots"]
        and not view["failing"]
        and view["known_nodes"] >= peers
        and not view["shape"]["replicate"]
        and not view["shape"]["new_masters"]
    )
    return view


FAILING_FLAGS = frozenset(("fail", "fail?", "noaddr", "handshake"))


def _live(node):
    return not FAILING_FLAGS & set(node["flags"])


def _slot_count(ranges):
    return sum(last - first + 1 for first, last in ranges)


def _shape_node(node):
    """A CLUSTER NODES entry as the replica planner reads it."""
    return {"id": node["id"], "address": node["address"], "slots": _slot_count(node["slots"]),
            "role": "replica" if "slave" in node["flags"] else "master", "master": node["master"]}


def _shape_moves(nodes):
    """What the replica plan (``replicas_per_master``) still asks of these live nodes:
    ``{"replicate": [{"node", "master", "why"}], "new_masters": [ids]}``
    (_utils/redis_cluster_shape.py decides; this module only runs its answer)."""
    settings = _settings()
    addresses = {peer["hostname"]: f"{peer['ip']}:{peer.get('port', _port())}" for peer in settings.get("peers") or []}
    planned = {addresses[host]: addresses[master] for host, master in (settings.get("replica_plan") or {}).items()
               if host in addresses and master in addresses}
    return __utils__["redis_cluster_shape.moves"](nodes, settings.get("replicas_per_master", 0), planned)


def cluster_view(host=None, port=None):
    """
    What a node of the deployment (default: this one) says about its Redis Cluster:
    ``state`` (``ok``/``fail``), ``slots_assigned``, ``known_nodes``, its ``id``,
    ``role`` (master/replica) and ``master``, its ``slots``, every node it knows, open
    (migrating/importing) slots, failing nodes, its number of keys, ``rebalance_pending``
    (hosts of a rebalance this minion started and did not finish), ``shape`` (the replica
    moves and new masters the plan still asks for) and ``healthy``: all 16384 slots
    assigned and ok, none open, no failing node, every peer of the deployment known, every
    master with ``replicas_per_master`` replicas where the nodes allow it, no slot-less
    master left over, and no replica on its master's host address.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.cluster_view
    """
    try:
        view = _view(_client(port, host=host or "127.0.0.1"))
    except redis.RedisError as exc:
        reason = __utils__["redis_common.error_text"](exc)
        raise CommandExecutionError(f"{host or 'this node'}: cannot read the cluster: {reason}") from None
    # A rebalance this minion started and did not finish: its open slot shows only on the
    # two nodes moving it, so the others would call the cluster healthy.
    view["rebalance_pending"] = _rebalance_record() if not host else []
    return view


def cluster_plan():
    """
    The cluster the deployment's pillar describes: every node's address (by hostname),
    the initial master, the masters' slot ranges and the replicas' masters.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.cluster_plan
    """
    settings = _settings()
    port = _port()
    return {
        "initial_master": (settings.get("initial_master") or {}).get("hostname"),
        "nodes": {peer["hostname"]: f"{peer['ip']}:{peer.get('port', port)}" for peer in settings.get("peers") or []},
        "slots": {host: ranges for host, ranges in (settings.get("slot_plan") or {}).items() if ranges},
        "replicas": dict(settings.get("replica_plan") or {}),
    }


def _wait(condition, timeout, interval=0.2):
    """``redis_common.wait``, run in this module's loader context: called through ``__utils__``,
    Salt would run it (and so ``condition``) in the utils loader's, where ``__utils__`` and
    ``__pillar__`` do not resolve."""
    wait = __utils__["redis_common.wait"]
    return getattr(wait, "func", wait)(condition, timeout, interval)


def _node_clients(addresses, timeout=5):
    return {host: _client(int(address.rsplit(":", 1)[1]), timeout, address.rsplit(":", 1)[0])
            for host, address in addresses.items()}


def _views(clients):
    """{hostname: view, or the reason it gave none}."""
    views = {}
    for host, client in clients.items():
        try:
            views[host] = _view(client, peer_count=len(clients))
        except redis.RedisError as exc:
            views[host] = __utils__["redis_common.error_text"](exc)
    return views


def _identity(client, name):
    """``{"name", "server", "version", "rdb_format"}`` of a live node (its INFO server)."""
    server, version = __utils__["redis_servers.running"](client.info("server"))
    return dict(__utils__["redis_servers.node"](server, version), name=name)


def _identities(clients, hosts):
    """``{host: _identity}`` of each of ``hosts``, one INFO per host."""
    return {host: _identity(clients[host], host) for host in hosts}


def _moves_refused(moves, what):
    """Raise CommandExecutionError naming every (source, target) of ``moves`` (node
    identities) whose target cannot load the source's RDB format: checked before anything
    moves, as a move that fails half-way leaves a slot open with keys on both sides."""
    refusals = [__utils__["redis_servers.move_refused"](source, target, what) for source, target in moves]
    refusals = list(dict.fromkeys(r for r in refusals if r))
    if refusals:
        raise CommandExecutionError("; ".join(refusals) + "; nothing was moved")


def _bus_clash(clients):
    """Why these nodes must never be one cluster (``redis_servers.bus_refused``: Redis 8 beside
    Valkey 8), or None; asked before any MEET."""
    known = _identities(clients, list(clients))
    hosts = sorted(known)
    clashes = [__utils__["redis_servers.bus_refused"](known[a], known[b])
               for index, a in enumerate(hosts) for b in hosts[index + 1:]]
    clashes = list(dict.fromkeys(why for why in clashes if why))
    return "; ".join(clashes) + "; no node was met" if clashes else None


def _within_plan(own, planned):
    """Every range of ``own`` lies inside one of ``planned``."""
    return all(any(p_first <= first and last <= p_last for p_first, p_last in planned) for first, last in own)


def _refusal(plan, views):
    """Why forming must not touch these nodes, or None."""
    ours = set(plan["nodes"].values())
    for host, view in views.items():
        address = plan["nodes"][host]
        strangers = [n["address"] for n in view["nodes"]
                     if n["address"] not in ours and not {"myself", "noaddr"} & set(n["flags"])]
        if strangers:
            return (
                f"{host} ({address}) belongs to another cluster (it knows {', '.join(strangers)}): check the YAML, "
                f"or empty it with `redis-cli -h {address.rsplit(':', 1)[0]} CLUSTER RESET HARD` (its data is lost)"
            )
    assigned = max(view["slots_assigned"] for view in views.values())
    for host, view in views.items():
        # Keys on a node of a cluster still to be formed (a standalone node's data: Redis
        # claims their slots at start) would be split from, or mixed into, the plan's slots.
        if view["keys"] and assigned < TOTAL_SLOTS:
            claimed = f" (it claimed slots {', '.join(f'{a}-{b}' for a, b in view['slots'])})" if view["slots"] else ""
            return (
                f"{host} ({plan['nodes'][host]}) holds {view['keys']} keys but the cluster is not formed{claimed}: "
                "forming it would lose or strand them; back them up and FLUSHALL that node "
                "(or restore them after forming), then apply again"
            )
    if any(view["open_slots"] for view in views.values()) and not _rebalance_record():
        return (
            "the cluster has open (migrating/importing) slots that no rebalance of ours left: repair them with "
            "`redis-cli --cluster fix HOST:PORT` (REDISCLI_AUTH holds the password), then apply again"
        )
    # A formation cut short (ours: each node holds only slots the plan gives it, no key
    # anywhere) is completed; any other partial assignment is not ours to guess about.
    if 0 < assigned < TOTAL_SLOTS and not all(_within_plan(view["slots"], plan["slots"].get(host) or [])
                                              for host, view in views.items()):
        return (
            f"the cluster has unassigned slots ({assigned} of {TOTAL_SLOTS} assigned) and nodes that hold slots "
            "the plan does not give them: repair it with `redis-cli --cluster fix HOST:PORT` (REDISCLI_AUTH holds "
            "the password), then apply again"
        )
    return None


def _assign_slots(client, first, last):
    try:
        _cluster_command(client, "ADDSLOTSRANGE", first, last)
    except redis.ResponseError as exc:
        if "unknown subcommand" not in str(exc).lower():
            raise
        _cluster_command(client, "ADDSLOTS", *range(first, last + 1))  # Redis before 7.0


def form_cluster(timeout=120):
    """
    Form the deployment's Redis Cluster from this node (the initial master), or bring a
    formed one back to the plan's shape: wait, bounded, until every peer answers with the
    deployment's password; refuse if a peer belongs to another cluster, would lose keys,
    or the cluster has open slots or a partial slot assignment that are not ours; forget
    dead predecessors of rebuilt hosts once no data depends on them (their replica takes
    over first); CLUSTER MEET every peer, give each planned master its slots nobody serves
    (ADDSLOTSRANGE, ADDSLOTS before Redis 7: a formation cut short is completed), then move
    replicas and newcomers until every master has ``replicas_per_master`` replicas
    (CLUSTER REPLICATE, never touching a master that serves slots), rebalance slots onto
    new masters (its own budget, pillar ``cluster_rebalance_timeout_s``; a rebalance of
    ours that was cut short is closed with ``redis-cli --cluster fix`` and resumed), and
    wait until every node says the cluster is healthy.

    Returns ``{"formed": bool, "actions": [...], "nodes": {hostname: node id},
    "slots": {hostname: ranges}, "added": [...], "rebalanced": {...}, "comment": str}``.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_cluster.form_cluster timeout=60
    """
    plan = cluster_plan()
    deadline = time.monotonic() + float(timeout)
    clients = _node_clients(plan["nodes"])

    def remaining():
        return max(1.0, deadline - time.monotonic())

    def everyone_answers():
        views = _views(clients)
        return views if all(isinstance(view, dict) for view in views.values()) else None

    views = _wait(everyone_answers, timeout, interval=0.2)
    if not views:
        reasons = {h: why for h, why in _views(clients).items() if not isinstance(why, dict)}
        return {
            "formed": False,
            "actions": [],
            "comment": f"peers did not answer with the deployment's password within {timeout}s: "
            + "; ".join(f"{h} ({plan['nodes'][h]}): {why}" for h, why in reasons.items()),
        }
    refusal = _refusal(plan, views) or _bus_clash(clients)
    if refusal:
        return {"formed": False, "actions": [], "comment": refusal}

    actions, warnings, me = [], [], clients[plan["initial_master"]]
    ids = {host: _cluster_command(client, "MYID") for host, client in clients.items()}
    result = {"actions": actions, "nodes": ids, "slots": plan["slots"], "warnings": warnings,
              "added": [], "rebalanced": {}}
    try:
        waiting = _hand_over_from_predecessors(plan, clients, views, ids, actions, remaining())
        if waiting:
            return dict(result, formed=False, comment=waiting)
        known = {n["address"] for n in _view(me, peer_count=len(clients))["nodes"]}
        met = []
        for host, address in plan["nodes"].items():
            # (A node that met no one lists itself without its address.)
            if host != plan["initial_master"] and address not in known:
                ip, port = address.rsplit(":", 1)
                _cluster_command(me, "MEET", ip, int(port))
                actions.append(f"{plan['initial_master']} met {host}")
                met.append(host)
        _newcomers_meet_everyone(plan, clients, met)

        def all_met():
            # Known by id, past the handshake: CLUSTER REPLICATE names a master by its id, and a
            # node still in handshake is listed under a random one (and counted in known_nodes).
            wanted = set(ids.values())
            return all(wanted <= {n["id"] for n in view["nodes"] if "handshake" not in n["flags"]}
                       for view in _views(clients).values() if isinstance(view, dict))

        if not _wait(all_met, remaining()):
            return dict(result, formed=False, comment=f"the nodes did not all meet within {timeout}s")
        forming = max(view["slots_assigned"] for view in views.values()) < TOTAL_SLOTS
        _assign_unserved_slots(plan, clients, actions, warnings, forming)
        onto = _resume_interrupted_rebalance(plan, actions)
        onto += [host for host in _reshape(plan, clients, ids, actions) if host not in onto]
        result["added"] = [] if forming else [_added(host, ids, clients) for host in met]
        result["rebalanced"] = _rebalance_onto(onto, plan, actions)
    except redis.RedisError as exc:
        return dict(result, formed=False, comment=f"forming stopped: {__utils__['redis_common.error_text'](exc)}")
    except CommandExecutionError as exc:
        return dict(result, formed=False, comment=str(exc))

    last = {}

    def healthy():
        last["views"] = _views(clients)
        return all(isinstance(v, dict) and v["healthy"] for v in last["views"].values()) \
            and not _slot_owners_disagree(last["views"])

    if not _wait(healthy, remaining()):
        return dict(result, formed=False, comment=f"not every node says the cluster is healthy within {timeout}s: "
                    + _unhealthy_reasons(last.get("views") or {}, ids))
    return dict(result, formed=True, comment="cluster ok" + "".join(f"; WARNING: {w}" for w in warnings))


def _newcomers_meet_everyone(plan, clients, met):
    """Each node the initial master just met meets every other node it does not know yet.
    Met by one node only, the others learn of a newcomer from gossip, a few random peers a
    second: 0.7-3.9 s until 6 fresh nodes all knew each other (measured), against 0.1 s when
    every newcomer meets everyone itself (one handshake each)."""
    for host in met:
        known = {n["address"] for n in _view(clients[host], peer_count=len(clients))["nodes"]}
        for other, address in plan["nodes"].items():
            if other not in (host, plan["initial_master"]) and address not in known:
                ip, port = address.rsplit(":", 1)
                _cluster_command(clients[host], "MEET", ip, int(port))


def _slot_owners(view):
    """``{node id: ranges}`` of the masters serving slots, as one node sees them."""
    return {n["id"]: [tuple(r) for r in n["slots"]] for n in view["nodes"] if n["slots"]}


def _slot_owners_disagree(views):
    """Whether the nodes that answered see different owners for some slot: right after slots
    moved (or a cut-short move was closed) gossip may not have reached every node yet, and a
    client sent back and forth between two of them gets no answer."""
    seen = [_slot_owners(v) for v in views.values() if isinstance(v, dict)]
    return any(owners != seen[0] for owners in seen[1:])


def _unhealthy_reasons(views, ids):
    """Why each node does not call the cluster healthy, in words."""
    reasons = ["the nodes do not agree yet on which master serves which slots"] if _slot_owners_disagree(views) \
        else []
    for host, view in views.items():
        if not isinstance(view, dict):
            reasons.append(f"{host}: {view}")
        elif not view["healthy"]:
            why = [f"cluster_state:{view['state']}"] if view["state"] != "ok" else []
            why += [f"failing {', '.join(view['failing'])}"] if view["failing"] else []
            why += [f"open slots {', '.join(view['open_slots'])}"] if view["open_slots"] else []
            why += [f"{_host_of(ids, m['node'])} should replicate {_host_of(ids, m['master'])}"
                    for m in view["shape"]["replicate"]]
            why += [f"{_host_of(ids, m)} waits for slots" for m in view["shape"]["new_masters"]]
            reasons.append(f"{host}: " + (", ".join(why) or f"knows {view['known_nodes']} nodes"))
    return "; ".join(reasons)


def _added(host, ids, clients):
    """What a node the cluster took in has become (for the node-added event)."""
    view = _view(clients[host], peer_count=len(clients))
    entry = {"host": host, "id": ids[host], "role": view["role"]}
    if view["master"]:
        entry["master"] = _host_of(ids, view["master"])
    return entry


def _unserved(ranges, views):
    """The parts of ``ranges`` that no node names as served, in its own view or a peer's."""
    served = [r for view in views.values() if isinstance(view, dict) for node in view["nodes"] for r in node["slots"]]
    gaps = []
    for first, last in ranges:
        slot = first
        while slot <= last:
            covering = [end for start, end in served if start <= slot <= end]
            if covering:
                slot = max(covering) + 1
                continue
            following = [start for start, _ in served if slot < start <= last]
            end = min(following) - 1 if following else last
            gaps.append([slot, end])
            slot = end + 1
    return gaps


def _assign_unserved_slots(plan, clients, actions, warnings, forming):
    """Planned slots no node serves go to their planned master: a new cluster's, the rest of
    a formation cut short, or (said loudly) a dead master's that no replica took over."""
    views = _views(clients)
    for host, ranges in plan["slots"].items():
        view = views.get(host)
        unowned = _unserved(ranges, views)
        if not unowned or not isinstance(view, dict) or view["role"] != "master":
            continue
        for first, last in unowned:
            _assign_slots(clients[host], first, last)
        actions.append(f"{host} got slots " + ", ".join(f"{a}-{b}" for a, b in unowned))
        if not forming:
            warnings.append(f"slots {', '.join(f'{a}-{b}' for a, b in unowned)} on {host} are EMPTY: their keys "
                            "died with the node; restore them from a backup set")


def _host_of(ids, node_id):
    return next((host for host, known in ids.items() if known == node_id), node_id)


def _reshape(plan, clients, ids, actions):
    """Run what the replica plan asks (CLUSTER REPLICATE), reading each node's own view of
    itself (a peer's gossip may lag). Returns the hosts that wait for slots."""
    nodes = []
    for host, view in _views(clients).items():
        if not isinstance(view, dict):
            raise CommandExecutionError(f"{host} does not answer: {view}")
        nodes.append({"id": view["id"], "address": plan["nodes"][host], "role": view["role"],
                      "master": view["master"], "slots": _slot_count(view["slots"])})
    shape = _shape_moves(nodes)
    why = {"short": "its master lacked a replica", "group": "a new master's replica",
           "spare": "a spare, waiting for more nodes"}
    # A replica loads its master's data: only from a format it reads.
    pairs = [(_host_of(ids, m["master"]), _host_of(ids, m["node"])) for m in shape["replicate"]]
    known = _identities(clients, {host for pair in pairs for host in pair})
    _moves_refused([(known[master], known[host]) for master, host in pairs], "replication")
    for move in shape["replicate"]:
        host, master = _host_of(ids, move["node"]), _host_of(ids, move["master"])
        try:
            _cluster_command(clients[host], "REPLICATE", move["master"])
        except redis.ResponseError as exc:
            raise CommandExecutionError(f"{host} cannot replicate {master}: {exc}") from None
        actions.append(f"{host} replicates {master} ({why[move['why']]})")
    return [_host_of(ids, node_id) for node_id in shape["new_masters"]]


def _redis_cli_cluster(args, timeout):
    """``redis-cli --cluster ARGS`` (the tool operators use to move slots), the password in
    REDISCLI_AUTH, never in argv. Returns (exit code, output)."""
    settings = _settings()
    # valkey-cli reads REDISCLI_AUTH too.
    env = dict(os.environ, REDISCLI_AUTH=settings.get("password") or "")
    tls = __utils__["redis_common.redis_cli_tls"](settings.get("tls"))
    cli = __utils__["redis_servers.name"](settings, "cli")
    try:
        done = subprocess.run(
            [cli, *tls, "--cluster", *[str(a) for a in args]],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return 124, f"{cli} --cluster {args[0]} did not finish within {timeout:.0f}s: {exc.stdout or ''}"
    except OSError as exc:
        return 127, f"cannot run {cli}: {exc}"
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def _rebalance_record_path():
    """Where this minion notes a rebalance it started (Salt's cache: root's, not Redis's)."""
    return os.path.join(__opts__.get("cachedir") or "/var/cache/salt/minion", "redis_cluster", "rebalance.json")


def _rebalance_record():
    """The hosts of a rebalance of ours that did not finish, or []."""
    try:
        with open(_rebalance_record_path(), encoding="utf-8") as handle:
            return list(json.load(handle).get("onto") or [])
    except (OSError, ValueError, AttributeError):
        return []


def _note_rebalance(onto):
    path = _rebalance_record_path()
    if onto is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"onto": onto}, handle)
    os.replace(temporary, path)


def _resume_interrupted_rebalance(plan, actions):
    """A rebalance of ours that was cut short (redis-cli killed mid-slot, a power cut) left
    its slot open: close it with ``redis-cli --cluster fix`` (it finishes moving that slot's
    keys) and return the hosts the rebalance was for, so it resumes."""
    onto = [host for host in _rebalance_record() if host in plan["nodes"]]
    if not onto:
        return []
    entry = plan["nodes"][plan["initial_master"]]
    clients = _node_clients(plan["nodes"])

    def open_slots():
        # A node lists only its own migrating/importing slots: ask every one.
        return any(isinstance(view, dict) and view["open_slots"] for view in _views(clients).values())

    if open_slots():
        _wait_everyone_ok(clients, _rebalance_budget())
        code, output = _redis_cli_cluster(["fix", entry], _rebalance_budget())
        if code != 0 or open_slots():
            log.error("redis-cli --cluster fix failed: %s", output)
            raise CommandExecutionError(f"closing the slots an interrupted rebalance left open failed (exit {code}): "
                                        + " ".join(output.split())[-600:])
        actions.append("closed the slot an interrupted rebalance left open (redis-cli --cluster fix)")
    actions.append(f"resumed the rebalance onto {', '.join(onto)}")
    return onto


def _wait_everyone_ok(clients, timeout):
    """Until every node says cluster_state:ok (bounded): a node that just joined answers
    CLUSTERDOWN until it has learnt every slot's owner, and then refuses the keys MIGRATE
    brings it (redis-cli stops mid-slot)."""
    def everyone_ok():
        return all(isinstance(view, dict) and view["state"] == "ok" for view in _views(clients).values())

    return _wait(everyone_ok, timeout, interval=0.2)


def _rebalance_budget():
    return float(_settings().get("cluster_rebalance_timeout_s") or 3600)


def _rebalance_onto(newcomers, plan, actions):
    """Move slots (with their keys) onto new masters until every master has its share, as
    ``redis-cli --cluster rebalance --cluster-use-empty-masters`` would (``_move_slots``),
    which clients follow through MOVED/ASK, within its own budget (pillar
    ``cluster_rebalance_timeout_s``). A note in Salt's cache says a rebalance is under way
    until it finished, so an interrupted one is resumed. Returns {hostname: slots it serves}
    or raises CommandExecutionError with the nodes' words."""
    if not newcomers:
        return {}
    timeout = _rebalance_budget()
    entry = plan["nodes"][plan["initial_master"]]
    deadline = time.monotonic() + timeout
    clients = _node_clients(plan["nodes"])

    _wait_everyone_ok(clients, timeout)
    # Slots (and their keys) move from the masters that serve them to the newcomers.
    serving = [host for host, view in _views(clients).items()
               if isinstance(view, dict) and view["slots"] and host not in newcomers]
    known = _identities(clients, set(serving) | set(newcomers))
    _moves_refused([(known[source], known[target]) for source in serving for target in newcomers], "slots")
    _note_rebalance(newcomers)
    host, port = _split_address(entry)
    try:
        _move_slots(_client(port, host=host), deadline, use_empty=True, what=f"rebalancing onto {', '.join(newcomers)}")
    except CommandExecutionError as exc:
        log.error("%s", exc)
        raise CommandExecutionError(f"{exc} (the next apply resumes it)") from None
    _note_rebalance(None)
    host, port = _split_address(entry)
    current = _view(_client(port, host=host))
    gained = {}
    for host in newcomers:
        node = next((n for n in current["nodes"] if n["address"] == plan["nodes"][host]), {"slots": []})
        gained[host] = _slot_count(node["slots"])
    actions.append("rebalanced: " + ", ".join(f"{host} got {count} slots" for host, count in gained.items()))
    return gained


def _open_slots_anywhere(clients):
    """Whether any node lists a migrating/importing slot (each lists only its own)."""
    return any(isinstance(view, dict) and view["open_slots"] for view in _views(clients).values())


def _move_slots(me, deadline, weights=None, use_empty=False, what="rebalancing"):
    """Give every live master its share of the slots (``weights``: ``{node id: weight}``,
    0 empties a master; ``use_empty``: slot-less masters take a share), moving the keys
    with them (_utils/redis_slots.py: redis-cli's protocol, many slots per round trip).
    A slot a cut-short move left open is first closed with ``redis-cli --cluster fix``.
    Returns ``{node id: slots it gained (negative: gave)}``."""
    view = _view(me, peer_count=0)
    masters = [n for n in view["nodes"] if "master" in n["flags"] and _live(n) and n["address"]]
    nodes = {}
    for node in masters:
        host, port = _split_address(node["address"])
        # MIGRATE waits for its keys to land: a long socket timeout, MIGRATE has its own.
        client = _client(port, host=host, timeout=120)
        nodes[node["id"]] = {"client": client, "host": host, "port": port, "address": node["address"]}
    if _open_slots_anywhere({n["address"]: nodes[n["id"]]["client"] for n in masters}):
        code, output = _redis_cli_cluster(["fix", masters[0]["address"]], max(1.0, deadline - time.monotonic()))
        if code != 0 or _open_slots_anywhere({n["address"]: nodes[n["id"]]["client"] for n in masters}):
            log.error("redis-cli --cluster fix failed: %s", output)
            raise CommandExecutionError(f"closing the slots a cut-short move left open failed (exit {code}): "
                                        + " ".join(output.split())[-600:])
        return _move_slots(me, deadline, weights, use_empty, what)
    layout = [{"id": n["id"], "slots": [s for first, last in n["slots"] for s in range(first, last + 1)]}
              for n in masters]
    moves = __utils__["redis_slots.plan"](layout, weights, use_empty)
    gained = {}
    for source, target, slots in moves:
        try:
            __utils__["redis_slots.move"](nodes, source, target, slots, deadline, masters=list(nodes))
        except (CommandExecutionError, redis.RedisError) as exc:
            raise CommandExecutionError(
                f"{what}: moving {len(slots)} slots from {nodes[source]['address']} to {nodes[target]['address']} "
                f"failed: {__utils__['redis_common.error_text'](exc) if isinstance(exc, redis.RedisError) else exc}"
            ) from None
        gained[target] = gained.get(target, 0) + len(slots)
        gained[source] = gained.get(source, 0) - len(slots)
    return gained


def _split_address(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _predecessors(plan, views, ids):
    """Node ids the cluster lists at a planned address (or without one: noaddr) that no
    node answers to any more: a host rebuilt bare, or whose data dir was lost, has a new
    id. ``{id: {"host", "slots": bool, "replicas": [hosts replicating it]}}``."""
    live = set(ids.values())
    by_address = {address: host for host, address in plan["nodes"].items()}
    found = {}
    for view in views.values():
        for node in view["nodes"]:
            if node["id"] not in live and (node["address"] in by_address or "noaddr" in node["flags"]):
                entry = found.setdefault(node["id"], {"host": by_address.get(node["address"]), "slots": False})
                entry["slots"] = entry["slots"] or bool(node["slots"])
    for node_id, entry in found.items():
        entry["replicas"] = [host for host, view in views.items() if view["role"] == "replica"
                             and view["master"] == node_id]
    return found


def _hand_over_from_predecessors(plan, clients, views, ids, actions, timeout):
    """Before a predecessor is forgotten, the data it served must live on. A predecessor's
    address answers with another id (or none: ``noaddr``), so Redis will never fail it over,
    and its replica may copy the empty newcomer there any second: CLUSTER FAILOVER FORCE on
    its most advanced replica, at once. Then only slot-less predecessors, and those whose
    slots no replica holds (given out EMPTY later, said loudly), are forgotten. Returns why
    it must wait, or None. (A guard keeps a member that lost its data from starting bare at
    boot, so Redis has usually failed it over long before: see predecessor_handed_over.)"""
    deadline = time.monotonic() + timeout
    for node_id, entry in _predecessors(plan, views, ids).items():
        if not entry["slots"] or not entry["replicas"]:
            continue
        name = entry["host"] or node_id[:8]

        def promoted(replicas=entry["replicas"]):
            return next((host for host in replicas if _view(clients[host], len(clients))["role"] == "master"), None)

        best = max(entry["replicas"], key=lambda host: int(
            clients[host].info("replication").get("slave_repl_offset") or 0))
        _cluster_command(clients[best], "FAILOVER", "FORCE")
        winner = _wait(promoted, max(1.0, deadline - time.monotonic()), interval=0.2)
        if not winner:
            return (f"waiting for a replica of {name}'s predecessor {node_id[:8]} ({', '.join(entry['replicas'])}) "
                    f"to take over its slots within {timeout:.0f}s; its keys live there: apply again")
        actions.append(f"{winner} took over the slots of {name}'s predecessor {node_id[:8]} (CLUSTER FAILOVER "
                       "FORCE: its address answers with another id)")

    def slots_moved():
        current = _views(clients)
        if not all(isinstance(view, dict) for view in current.values()):
            return None
        found = _predecessors(plan, current, ids)
        holding = [i for i, entry in found.items() if entry["slots"] and entry["replicas"]]
        return None if holding else (current, found)

    settled = _wait(slots_moved, max(1.0, deadline - time.monotonic()), interval=0.5)
    if not settled:
        return f"the slots of a predecessor of a rebuilt host did not move to its replica within {timeout:.0f}s"
    current, found = settled
    for node_id, entry in found.items():
        for client in clients.values():
            try:
                _cluster_command(client, "FORGET", node_id)
            except redis.ResponseError:
                pass  # this node never knew it, or it is that node's own id
        whose = f" ({entry['host']}'s predecessor)" if entry["host"] else ""
        actions.append(f"forgot the dead node {node_id[:8]}{whose}")
    return None


def predecessor(timeout=5, wait=0):
    """
    What the rest of the cluster still says about this node's address, asked of the peers
    (for a node that lost its data directory and must not start bare while its old self
    still serves slots: its replica would copy the empty newcomer and lose every key).
    With ``wait`` (seconds), wait, bounded, until no replica holds keys that depend on it
    (its replica took its slots over, or it has none) and some peer answers.

    Returns ``{"answered": [hosts], "id": old id or None, "slots": n, "failing": bool,
    "replicas": [hosts of its live replicas], "served_by": [hosts that took its slots over],
    "comment": str}``.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_cluster.predecessor wait=60
    """
    if float(wait) > 0:
        last = {}

        def released():
            last["status"] = predecessor(timeout)
            return last["status"]["answered"] and not (last["status"]["slots"] and last["status"]["replicas"])

        _wait(released, float(wait), interval=1.0)
        return last["status"]
    plan = cluster_plan()
    me = _settings().get("hostname")
    mine = plan["nodes"].get(me)
    peers = {host: address for host, address in plan["nodes"].items() if host != me}
    views = {host: view for host, view in _views(_node_clients(peers, timeout=float(timeout))).items()
             if isinstance(view, dict)}
    result = {"answered": sorted(views), "id": None, "slots": 0, "failing": False, "replicas": [],
              "comment": ""}
    if not views:
        result["comment"] = f"no peer answers ({', '.join(peers)}): nobody can say whether {mine} still serves slots"
        return result
    listed = [node for view in views.values() for node in view["nodes"] if node["address"] == mine]
    if not listed:
        result["comment"] = f"no peer lists {mine}: nothing depends on its old data"
        return result
    old = max(listed, key=lambda node: _slot_count(node["slots"]))
    result.update(id=old["id"], slots=_slot_count(old["slots"]),
                  failing=any(not _live(node) for node in listed if node["id"] == old["id"]))
    result["replicas"] = sorted(host for host, view in views.items()
                                if view["role"] == "replica" and view["master"] == old["id"])
    # A peer's gossip may still credit the old node with slots its replica already took
    # over: a node's word on its own slots is the fresher one.
    takers = sorted(host for host, view in views.items()
                    if any(first <= b and a <= last for first, last in view["slots"] for a, b in old["slots"]))
    if takers:
        result.update(slots=0, served_by=takers)
        result["comment"] = (f"{mine}'s old self {old['id'][:8]} serves no slots: {', '.join(takers)} took them "
                             "over; nothing depends on its old data")
        return result
    if result["slots"]:
        result["comment"] = (f"{mine}'s old self {old['id'][:8]} still serves {result['slots']} slots"
                             + (f"; its replicas {', '.join(result['replicas'])} hold its keys" if result["replicas"]
                                else "; no replica holds its keys"))
    else:
        result["comment"] = f"{mine}'s old self {old['id'][:8]} serves no slots: nothing depends on its old data"
    return result


def wait_cluster_healthy(timeout=120):
    """
    Wait, bounded, until this node sees itself in a healthy cluster (all slots assigned
    and ok, none open, no failing node, every peer known, and the replica plan's shape:
    see ``cluster_view``). While slots keep moving (the initial master rebalancing them
    onto new masters, within its own budget, pillar ``cluster_rebalance_timeout_s``), the
    wait goes on: it ends ``timeout`` seconds after the last slot this node saw move, or
    once that budget is spent. Returns ``{"healthy": bool, "comment": str}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.wait_cluster_healthy timeout=30
    """
    started = time.monotonic()
    last, moved = {}, {"layout": None, "at": started}

    def check():
        try:
            last["view"] = _view(_client())
        except redis.RedisError as exc:
            last["view"] = {"healthy": False, "error": __utils__["redis_common.error_text"](exc)}
        layout = _slot_layout(last["view"])
        if layout is not None and layout != moved["layout"]:
            moved.update(layout=layout, at=time.monotonic())
        return last["view"]["healthy"] or time.monotonic() - moved["at"] >= float(timeout)

    _wait(check, max(float(timeout), _rebalance_budget()), interval=0.2)
    view = last["view"]
    if view["healthy"]:
        return {"healthy": True, "comment": "cluster ok"}
    __context__["retcode"] = 1  # `salt` and orchestration see the failure (a state run resets it)
    if "error" in view:
        return {"healthy": False, "comment": view["error"]}
    pending = len(view["shape"]["replicate"]) + len(view["shape"]["new_masters"])
    shape = (f", {pending} replica moves or rebalances pending (replicas_per_master "
             f"{_settings().get('replicas_per_master', 0)})") if pending else ""
    stalled = time.monotonic() - moved["at"] >= float(timeout)
    waited = (f"no slot moved in the last {timeout}s" if stalled
              else f"slots still moving after {time.monotonic() - started:.0f}s, the rebalance budget")
    return {
        "healthy": False,
        "comment": f"cluster_state:{view['state']}, {view['slots_assigned']} slots assigned, "
        f"{view['known_nodes']} nodes known{shape}; {waited}",
    }


def _slot_layout(view):
    """Which node serves which slots and which slots are open, as one node's view says (None
    without a view): what changes whenever a slot moves."""
    if "nodes" not in view:
        return None
    return (tuple(sorted((n["id"], tuple(map(tuple, n["slots"]))) for n in view["nodes"] if n["slots"])),
            tuple(view["open_slots"]))


def server_shape(port=None, timeout=5):
    """
    What the running server is, as far as changing the deployment's shape matters: its
    ``port`` and ``dir``, ``cluster_enabled``, ``slots_assigned`` and ``known_nodes`` (a
    formed cluster), its replication ``role`` and ``connected_replicas`` (a Sentinel pair),
    and the process's ``run_id``. ``reachable`` False (with ``error``) when it does not
    answer with the deployment's password within ``timeout`` seconds.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.server_shape
    """
    try:
        client = _client(port, timeout=float(timeout))
        info = client.info()
        running = __utils__["redis_config.config_get"](client, ["port", "tls-port", "dir"])
        view = _view(client) if info.get("cluster_enabled") else {}
    except redis.RedisError as exc:
        return {"reachable": False, "error": __utils__["redis_common.error_text"](exc)}
    return {
        "reachable": True,
        "run_id": info.get("run_id"),
        # A TLS-only server (port 0) serves the deployment's port as its tls-port.
        "port": int(running.get("port", 0)) or int(running.get("tls-port") or 0),
        "dir": running.get("dir", ""),
        "cluster_enabled": bool(info.get("cluster_enabled")),
        "slots_assigned": view.get("slots_assigned", 0),
        "known_nodes": view.get("known_nodes", 1),
        "role": info.get("role"),
        "connected_replicas": int(info.get("connected_slaves", 0)),
    }


def in_formed_deployment(port=None, nodes_file=None, timeout=5):
    """
    Whether this node belongs to a formed deployment, so that restarting it together with
    the others (a plain ``state.apply``) would take the deployment down. Returns
    ``{"formed": bool, "why": str, "run_id": the server process's run_id or None}``.

    Judged from the running server when it answers with the deployment's password
    (``server_shape``): a cluster-enabled server is formed when it knows another node or
    serves slots (CLUSTER INFO ``cluster_known_nodes`` > 1 or ``cluster_slots_assigned``
    > 0); any other server when it is a replica or has connected replicas.

    A server that does not answer with the password cannot be asked, so the records the
    deployment keeps on this host decide (``run_id`` is then None). Cluster mode (pillar
    ``redis:mode``): Redis's nodes file (``nodes_file``, default
    ``<data_dir>/nodes-<port>.conf``) lists another node, or slots of this one. Sentinel
    mode: Redis's main file (``config_file``) has a ``replicaof`` line, or this host's
    Sentinel file (``sentinel_config_file``) lists a known replica. Redis and Sentinel
    write these themselves once nodes met or replicated: a server the package started on
    a fresh host has none of them. (Salt's ``cluster-member`` marker is not needed: the
    nodes file says it first.) Paths come from pillar ``redis``, else map.jinja's defaults.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.in_formed_deployment
    """
    shape = server_shape(port=port, timeout=timeout)
    if shape["reachable"]:
        if shape["cluster_enabled"]:
            formed = shape["known_nodes"] > 1 or shape["slots_assigned"] > 0
            why = f"cluster node: {shape['known_nodes']} nodes known, {shape['slots_assigned']} slots assigned"
        else:
            formed = shape["role"] in ("slave", "replica") or shape["connected_replicas"] > 0
            why = f"replication role {shape['role']}, {shape['connected_replicas']} connected replicas"
        return {"formed": formed, "why": why, "run_id": shape["run_id"]}
    evidence = _formed_on_disk(_port(port), nodes_file)
    return {
        "formed": bool(evidence),
        "why": evidence or f"no record of a formed deployment on this host ({shape['error']})",
        "run_id": None,
    }


def _read_text(path):
    """A file's text, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _formed_on_disk(port, nodes_file=None):
    """What this host's files say about the deployment having formed (see in_formed_deployment),
    in words, or "" when nothing does."""
    mode = _settings().get("mode")
    if mode == "cluster":
        path = nodes_file or os.path.join(_path("data_dir"), f"nodes-{port}.conf")
        nodes = _parse_cluster_nodes(_read_text(path) or "")
        others = [n for n in nodes if "myself" not in n["flags"]]
        own_slots = sum(_slot_count(n["slots"]) for n in nodes if "myself" in n["flags"])
        if others or own_slots:
            return f"{path} lists {len(others)} other nodes and {own_slots} slots of this one"
    elif mode == "sentinel":
        config_file = _path("config_file")
        replicaof = __utils__["redis_config.values"](_read_text(config_file) or "", {"replicaof", "slaveof"})
        if replicaof:
            return f"{config_file} makes this server a replica"
        sentinel_file = _path("sentinel_config_file")
        lines = (_read_text(sentinel_file) or "").splitlines()
        for _, directive, argument in __utils__["redis_config.directives"](lines):
            if directive == "sentinel" and argument.split()[:1] in (["known-replica"], ["known-slave"]):
                return f"the Sentinel's {sentinel_file} knows a replica"
    return ""


def remove_member(address, timeout=300, force=False):
    """
    Take the node at ``address`` (``ip:port``) out of this node's cluster without losing a
    key: move its slots (and their keys) to the other masters (``_move_slots`` with its
    weight at 0), then ``redis-cli --cluster del-node``, which makes
    every node forget it, moves its replicas to other masters and resets it. A dead node
    is only forgotten, and only when it serves no slot (else its keys would be lost).
    Run it on a node that stays; ``salt-run redis_cluster.remove_node`` does. Removing a
    master's last live replica leaves that shard without a copy: refused unless ``force``
    is True, and the comment says which shard loses its copy.

    Returns ``{"removed": bool, "actions": [...], "keys_before": n, "keys_after": n,
    "comment": str}``.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_cluster.remove_member address=192.168.1.104:6379
    """
    deadline = time.monotonic() + float(timeout)
    me = _client()
    view = _view(me)
    entry = f"{_settings().get('bind_ip', '127.0.0.1')}:{_port()}"
    target = next((n for n in view["nodes"] if n["address"] == address), None)
    if target is None:
        return {"removed": False, "actions": [], "comment": f"{address} is not a member of this cluster: nothing to do"}
    if "myself" in target["flags"]:
        raise CommandExecutionError(f"{address} is this node: run the removal from a node that stays")
    dead = bool({"fail", "fail?", "noaddr"} & set(target["flags"]))
    if dead and target["slots"]:
        ranges = ", ".join(f"{a}-{b}" for a, b in target["slots"])
        raise CommandExecutionError(
            f"{address} ({target['id'][:8]}) is down and still serves slots {ranges}: their keys exist nowhere "
            "else. Start it again (then remove it), or wait for a replica to take over"
        )
    keys_before = _cluster_keys(view)
    actions = []
    lost = _last_copy_of(view, target)
    if lost and not force:
        return {"removed": False, "actions": [], "keys_before": keys_before,
                "comment": f"{address} is the last replica of {lost}: removing it leaves that shard with no copy "
                           "(a failure of that master then loses its keys); add a replica first, or pass force=True"}
    if lost:
        actions.append(f"forced: {lost} has no replica any more")
    if target["slots"]:
        # Its slots go to every other master: each must read its format.
        receivers = [n for n in view["nodes"] if "master" in n["flags"] and n["id"] != target["id"]
                     and n["address"] and not {"fail", "fail?", "noaddr"} & set(n["flags"])]

        def at(node_address):
            host, port = _split_address(node_address)
            return _client(port, host=host)

        source = _identity(at(address), address)
        _moves_refused([(source, _identity(me if "myself" in n["flags"] else at(n["address"]), n["address"]))
                        for n in receivers], f"the slots of {address}")
        failed = None
        try:
            _move_slots(me, deadline, weights={target["id"]: 0}, what=f"moving the slots off {address}")
        except CommandExecutionError as exc:
            failed = str(exc)
        left = next((n["slots"] for n in _view(me)["nodes"] if n["id"] == target["id"]), [])
        if failed or left:
            log.error("draining %s failed: %s", address, failed)
            raise CommandExecutionError(f"moving the slots off {address} failed (still serving {len(left)} ranges)"
                                        + (f": {failed}" if failed else ""))
        moved = sum(last - first + 1 for first, last in target["slots"])
        actions.append(f"moved {moved} slots off {address}")
    if dead:
        for node in _view(me)["nodes"]:
            if node["id"] != target["id"] and not {"fail", "fail?", "noaddr"} & set(node["flags"]):
                host, port = _split_address(node["address"]) if node["address"] else (None, None)
                client = me if "myself" in node["flags"] else _client(port, host=host)
                try:
                    _cluster_command(client, "FORGET", target["id"])
                except redis.ResponseError:
                    pass  # already forgotten
        actions.append(f"every node forgot the dead node {address} ({target['id'][:8]})")
    else:
        code, output = _redis_cli_cluster(["del-node", entry, target["id"]], max(1.0, deadline - time.monotonic()))
        if code != 0:
            log.error("redis-cli --cluster del-node %s failed: %s", address, output)
            raise CommandExecutionError(f"removing {address} failed (exit {code}): " + " ".join(output.split())[-600:])
        actions.append(f"every node forgot {address} ({target['id'][:8]}), which was reset")

    def settled():
        current = _view(me, peer_count=0)
        gone = all(n["id"] != target["id"] for n in current["nodes"])
        return current if gone and current["state"] == "ok" and not current["open_slots"] else None

    after = _wait(settled, max(1.0, deadline - time.monotonic()), interval=0.5)
    if not after:
        return {"removed": False, "actions": actions, "keys_before": keys_before,
                "comment": "the cluster did not settle (state ok, node forgotten) in time"}
    keys_after = _cluster_keys(after)
    return {
        "removed": True,
        "actions": actions,
        "keys_before": keys_before,
        "keys_after": keys_after,
        "comment": f"{address} left the cluster; keys before {keys_before}, after {keys_after}",
    }


def drain_members(addresses, timeout=3600):
    """
    Move every slot (with its keys) off the nodes at ``addresses`` (``ip:port`` each) onto
    the cluster's other masters in one rebalance with their weights at 0 (``_move_slots``),
    which clients follow through MOVED/ASK; the nodes stay members (``remove_member``
    then takes each out). ``salt-run redis_deployment.replace_hosts`` runs it on a node
    that stays. Refused before anything moves, naming the nodes: a drained node that is
    down while it serves slots, no master left to take them, and a master that would
    receive or give slots and cannot load the other's RDB format (``redis_servers``).
    Running it again changes nothing.

    Returns ``{"drained": bool, "actions": [...], "moved": {address: slots}, "keys_before",
    "keys_after", "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt server4 redis_cluster.drain_members addresses='[192.168.1.101:6379, 192.168.1.102:6379]'
    """
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",") if a.strip()]
    deadline = time.monotonic() + float(timeout)
    me = _client()
    view = _view(me)
    entry = f"{_settings().get('bind_ip', '127.0.0.1')}:{_port()}"
    by_address = {n["address"]: n for n in view["nodes"] if n["address"]}
    drained = [by_address[a] for a in addresses if a in by_address]
    if any("myself" in n["flags"] for n in drained):
        raise CommandExecutionError(f"{entry} is among the nodes to drain: run it on a node that stays")
    down = [n for n in drained if n["slots"] and {"fail", "fail?", "noaddr"} & set(n["flags"])]
    if down:
        raise CommandExecutionError(
            "; ".join(f"{n['address']} is down and serves slots {', '.join(f'{a}-{b}' for a, b in n['slots'])}"
                      for n in down) + ": their keys are on it alone; start it again first. Nothing was moved")
    keys_before = _cluster_keys(view)
    sources = [n for n in drained if n["slots"]]
    if not sources:
        return {"drained": True, "actions": [], "moved": {}, "keys_before": keys_before, "keys_after": keys_before,
                "comment": f"none of {', '.join(addresses)} serves a slot: nothing to move"}
    receivers = [n for n in view["nodes"] if "master" in n["flags"] and n not in drained and n["address"]
                 and not {"fail", "fail?", "noaddr"} & set(n["flags"])]
    if not receivers:
        raise CommandExecutionError(f"no master outside {', '.join(addresses)} is there to take their slots: "
                                    "add the new nodes first. Nothing was moved")

    def identity(node):
        host, port = _split_address(node["address"])
        return _identity(me if "myself" in node["flags"] else _client(port, host=host), node["address"])

    known = {n["address"]: identity(n) for n in sources + receivers}
    # A rebalance takes slots from every master above its share, not only the drained ones.
    share = TOTAL_SLOTS / len(receivers)
    donors = sources + [n for n in receivers if _slot_count(n["slots"]) > share]
    _moves_refused([(known[d["address"]], known[r["address"]]) for d in donors for r in receivers
                    if d is not r], "slots")
    for node in sources:
        host, port = _split_address(node["address"])
        try:
            # A master that gave away its last slot turns itself into a replica (Redis 7's
            # replica migration), while redis-cli still counts it among the masters it sends
            # the next source's SETSLOT to ("Please use SETSLOT only with masters"): the
            # drained nodes stay slot-less masters until remove_member takes them out.
            _client(port, host=host).config_set("cluster-allow-replica-migration", "no")
        except redis.ResponseError:
            pass  # a server without the setting (Redis 6.2) keeps an emptied master a master
    failed = None
    try:
        _move_slots(me, deadline, weights={n["id"]: 0 for n in drained},
                    what=f"moving the slots off {', '.join(addresses)}")
    except CommandExecutionError as exc:
        failed = str(exc)
    after = _view(me)
    left = [n["address"] for n in after["nodes"] if n["address"] in addresses and n["slots"]]
    if failed or left:
        log.error("draining %s failed: %s", ", ".join(addresses), failed)
        raise CommandExecutionError(
            f"moving the slots off {', '.join(left or addresses)} failed (run it again to resume)"
            + (f": {failed}" if failed else ""))
    moved = {n["address"]: _slot_count(n["slots"]) for n in sources}
    settled = _wait(lambda: (lambda v: v if v["state"] == "ok" and not v["open_slots"] else None)(_view(me)),
                    max(1.0, deadline - time.monotonic()), interval=0.5)
    keys_after = _cluster_keys(settled or after)
    return {"drained": True, "actions": [f"moved {count} slots off {address}" for address, count in moved.items()],
            "moved": moved, "keys_before": keys_before, "keys_after": keys_after,
            "comment": f"{sum(moved.values())} slots moved off {', '.join(moved)} onto "
                       f"{', '.join(n['address'] for n in receivers)}; keys before {keys_before}, after {keys_after}"}


def _last_copy_of(view, target):
    """``"ip:port (slots a-b)"`` of the master whose only live replica ``target`` is, else None."""
    if "slave" not in target["flags"] or not _live(target):
        return None
    master = next((n for n in view["nodes"] if n["id"] == target["master"]), None)
    if master is None or not master["slots"]:
        return None
    others = [n for n in view["nodes"] if n["master"] == master["id"] and n["id"] != target["id"] and _live(n)]
    if others:
        return None
    return f"{master['address']} (slots {', '.join(f'{a}-{b}' for a, b in master['slots'])})"


def _cluster_keys(view):
    """Keys on every reachable master of the cluster (a dead one's count as 0)."""
    total = 0
    for node in view["nodes"]:
        if "master" not in node["flags"] or {"fail", "fail?", "noaddr"} & set(node["flags"]) or not node["address"]:
            continue
        host, port = _split_address(node["address"])
        try:
            total += _client(port, host=host).dbsize()
        except redis.RedisError:
            pass
    return total


# ---------------------------------------------------------------- health

# The rules live in _utils/redis_health.py (pure, unit-tested on recorded INFO outputs); this
# part only gathers what they read.
HEALTH_SERVER_ROLES = ("cluster-node", "master", "replica")
HEALTH_ROLES = (*HEALTH_SERVER_ROLES, "sentinel-only")
HEALTH_SLOWLOG_READ = 10


def _health_rule(name):
    return __utils__[f"redis_health.{name}"]


def health(fire_events=False):
    """
    The node's health, as the original document's ``redis_health.sh`` judged it and more:
    ``{"status": "OK"|"WARNING"|"CRITICAL", "code": 0|1|2, "checks": [{"name", "value",
    "threshold", "status", "detail"}]}`` (the worst check wins; Nagios codes).

    On a Redis server of the deployment: PING with the deployment's password (a server that
    is down, refuses the password, is loading, busy or does not answer within
    ``socket_timeout_seconds`` is CRITICAL with the reason), memory against maxmemory (under
    ``noeviction``) or the eviction rate (under an eviction policy), clients against
    maxclients and rejected connections, the hit rate, the last BGSAVE, unsaved changes
    against the ``save`` schedule, the AOF's last write and rewrite, new slow-log entries
    since the previous check, the newest good backup of each scheduled type; in cluster
    mode the cluster's state, slots, failing nodes, open slots and replicas per master; in
    Sentinel mode the replication link and lag and the Sentinels (reachable, agreeing on one
    master, enough for a majority). On a witness (role ``sentinel-only``): its Sentinel and
    the others. Thresholds: pillar ``redis:monitoring`` (YAML ``cache.redis.monitoring``).

    Rates need the previous check's counters: kept in the minion's cache directory
    (``<cachedir>/redis_health/<port>.json``) for the server process that answered (its
    ``run_id``: a restart starts over). Never raises for an unhealthy server.

    fire_events
        What Salt's scheduler passes (the job ``redis-health``, every
        ``monitoring.health_interval_minutes``): fire ``redis/health/<minion>`` with the status,
        the previous one and the failing checks whenever the status changed since the
        previous such check (a first check fires only when it is not OK), and
        ``redis/health/<minion>/still-critical`` when it stayed CRITICAL for
        ``monitoring.critical_reminder_minutes`` since the last event.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.health
    """
    settings = _settings()
    if settings.get("error"):
        return _health_rule("summary")([_health_rule("check")(
            "pillar", "CRITICAL", detail=f"the deployment's pillar failed: {settings['error']}")])
    role, mode = settings.get("role", "none"), settings.get("mode", "none")
    if role not in HEALTH_ROLES:
        return {"status": "OK", "code": 0, "checks": [], "comment": "not a Redis node"}
    limits = _health_rule("thresholds")(settings.get("monitoring"))
    timeout = float(limits["socket_timeout_seconds"])
    checks = []
    info = None
    if role in HEALTH_SERVER_ROLES:
        server_checks, info = _health_server(settings, limits, timeout, mode)
        checks += server_checks
    if mode == "sentinel":
        checks += _health_sentinels(settings, timeout, info)
    if role in HEALTH_SERVER_ROLES:
        checks += _health_backups(settings, limits)
    result = _health_rule("summary")(checks)
    if fire_events:
        _health_events(result, limits)
        _health_publish(result, limits)
    return result


# The scheduled check's last verdict, for /usr/local/bin/redis_health (which may not read
# Salt's schedule or the backup directory): root's, readable by the monitoring group.
HEALTH_LAST_CHECK = "/run/redis-salt/health-last.json"


def _health_publish(result, limits, path=HEALTH_LAST_CHECK):
    """Write the scheduled check's result (no secret in it) for the health script."""
    try:
        gid = grp.getgrnam(limits.get("group") or "redis-monitoring").gr_gid
    except KeyError:
        return  # health.sls creates the group with the script; nothing reads this before
    text = json.dumps({"time": time.time(), "status": result["status"], "checks": result["checks"]}, default=str)
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        __utils__["redis_common.replace_file"](path, text, 0, gid, 0o640)
    except OSError as exc:
        log.warning("redis_cluster.health: cannot publish the check to %s: %s", path, exc)


def _health_events(result, limits, now=None):
    """``redis/health/<minion>`` on a status change, ``.../still-critical`` as a reminder (see
    ``health``); the last status and event time are kept with the check's counters."""
    now = time.time() if now is None else now
    record = _health_state_load().get("events")
    record = record if isinstance(record, dict) else {}
    previous, last_event = record.get("status"), float(record.get("fired_at") or 0)
    status = result["status"]
    data = {"status": status, "code": result["code"], "previous": previous,
            "failing": [f"{c['name']}: {c.get('detail')}" for c in result["checks"] if c["status"] != "OK"]}
    tag = f"redis/health/{__opts__['id']}"
    if status != (previous or "OK"):
        fired = tag
    elif status == "CRITICAL" and now - last_event >= float(limits["critical_reminder_minutes"]) * 60:
        fired = f"{tag}/still-critical"
    else:
        fired = None
    if fired:
        try:
            __salt__["event.send"](fired, data)
            last_event = now
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("redis_cluster.health: event %s not sent: %s", fired, exc)
    _health_state_write(events={"status": status, "fired_at": last_event})


def _health_server(settings, limits, timeout, mode):
    """``(checks, INFO or None)`` of the local Redis server."""
    rule = _health_rule
    try:
        client = _client(timeout=timeout)
        started = time.monotonic()
        client.ping()
        answered = (time.monotonic() - started) * 1000
        info = client.info()
        if "maxclients" not in info:  # INFO shows it from Redis 7.0 on
            info["maxclients"] = __utils__["redis_config.config_get"](client, ["maxclients"]).get("maxclients")
        save = __utils__["redis_config.config_get"](client, ["save"]).get("save", "")
        slow = client.slowlog_get(HEALTH_SLOWLOG_READ)
        view = _view(client) if info.get("cluster_enabled") else None
    except redis.RedisError as exc:
        failure = __utils__["redis_common.failure"](exc)
        text = __utils__["redis_common.error_text"](exc)
        address = f"{settings.get('bind_ip', '127.0.0.1')}:{_port()}"
        return [rule("unreachable")("ping", failure, f"{address}: {text}", timeout)], None
    now = time.time()
    previous, _ = _health_state_read()
    newest = [(int(e["id"]), int(e.get("duration", 0)), _health_command_name(e.get("command"))) for e in slow]
    last_id = max((e[0] for e in newest), default=None)
    if last_id is None and previous.get("run_id") == info.get("run_id"):
        last_id = previous.get("slowlog_last_id")  # SLOWLOG RESET empties the log, ids go on
    checks = [rule("ping")(answered), rule("memory")(info, limits)]
    checks += [c for c in (rule("evictions")(info, previous, now, limits),) if c]
    checks += [rule("clients")(info, limits), rule("rejected_connections")(info, previous, now),
               rule("hit_rate")(info, limits)]
    checks += rule("rdb")(info, save, now)
    checks += rule("aof")(info)
    checks.append(rule("slowlog")(last_id, previous, info.get("run_id"), limits, newest))
    if view is not None:
        checks += rule("cluster")(view, settings.get("replicas_per_master", 0))
    elif mode == "sentinel":
        checks += rule("replication")(info, limits)
    _health_state_write({"run_id": info.get("run_id"), "time": now, "evicted_keys": info.get("evicted_keys", 0),
                         "rejected_connections": info.get("rejected_connections", 0), "slowlog_last_id": last_id})
    return checks, info


def _health_command_name(command):
    """A slow-log entry's command name only (its arguments may hold application data)."""
    if isinstance(command, bytes):  # redis-py joins the words as bytes whatever decode_responses says
        command = command.decode("utf-8", "replace")
    return str(command or "?").split(" ", 1)[0].upper()


def _health_sentinels(settings, timeout, info):
    """The Sentinels' checks (``redis_sentinel.status``: the same live-master decision the
    states follow)."""
    rule = _health_rule
    try:
        status = __salt__["redis_sentinel.status"](timeout=timeout)
    except (KeyError, CommandExecutionError) as exc:
        return [rule("check")("sentinels", "CRITICAL", detail=f"no Sentinel view: {exc}")]
    local_role = None
    if info is not None:
        local_role = "replica" if info.get("role") == "slave" else "master"
    address = f"{settings.get('bind_ip', '127.0.0.1')}:{_port()}"
    return rule("sentinels")(status, me=settings.get("hostname"), local_role=local_role, my_address=address)


def _health_croniter():
    try:
        from croniter import croniter  # pylint: disable=import-outside-toplevel

        return croniter
    except ImportError:
        return None


def _health_backups(settings, limits):
    """The newest good backup of each scheduled type (``redis_backup.list``) against the backup
    jobs Salt's scheduler really runs here (``schedule.list``: the jobs the state
    ``redis_backup.scheduled`` installed from pillar ``redis:backup:schedule``)."""
    rule = _health_rule
    try:
        jobs = __salt__["schedule.list"](show_all=True, return_yaml=False) or {}
    except (KeyError, CommandExecutionError) as exc:
        return [rule("check")("backups", "WARNING", detail=f"cannot read Salt's scheduler: {exc}")]
    plan = [{"cron": job.get("cron"), "type": (job.get("kwargs") or {}).get("type", "both")}
            for name, job in sorted(jobs.items()) if isinstance(job, dict) and str(name).startswith("redis-backup-")
            and job.get("function") == "redis_backup.create" and job.get("enabled", True) is not False]
    if not plan:
        return rule("backups")(plan, [], None, None, 0)
    try:
        listed = __salt__["redis_backup.list"]()
    except (KeyError, CommandExecutionError) as exc:
        return [rule("check")("backups", "WARNING", detail=f"cannot list this node's backups: {exc}")]
    entries = []
    for item in listed.get("backups") or []:
        moment = __utils__["redis_backup_files.parse_time"](item.get("timestamp"))
        entries.append(dict(item, time=moment))
    now = datetime.datetime.now().astimezone()  # the scheduler reads cron in local time
    first_seen = _health_schedule_first_seen(plan, now)
    return rule("backups")(plan, entries, now, first_seen, limits["backup_grace_minutes"], _health_croniter())


def _health_state_path():
    cachedir = (globals().get("__opts__") or {}).get("cachedir")
    if not cachedir:
        return None
    return os.path.join(cachedir, "redis_health", f"{_port()}.json")


def _health_state_load():
    path = _health_state_path()
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _health_state_read():
    """``(previous counters, backup schedule record)`` from the last check."""
    data = _health_state_load()
    server = data.get("server") if isinstance(data.get("server"), dict) else {}
    schedule = data.get("schedule") if isinstance(data.get("schedule"), dict) else {}
    return server, schedule


def _health_state_write(server=None, schedule=None, events=None):
    """Keep the counters (the schedule record, the last event) for the next check: mkstemp + os.replace."""
    path = _health_state_path()
    if not path:
        return
    data = _health_state_load()
    for key, value in (("server", server), ("schedule", schedule), ("events", events)):
        if value is not None:
            data[key] = value
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        __utils__["redis_common.replace_file"](path, json.dumps(data), 0, 0, 0o600)
    except OSError as exc:
        log.warning("redis_cluster.health: cannot keep the check's counters in %s: %s", path, exc)


def _health_schedule_first_seen(plan, now):
    """When this minion's health check first saw this backup schedule (recorded now if new)."""
    signature = json.dumps(plan, sort_keys=True, default=str)
    _, record = _health_state_read()
    seen = __utils__["redis_backup_files.parse_time"](record.get("first_seen")) if record else None
    if record.get("signature") == signature and seen is not None:
        return seen
    _health_state_write(schedule={"signature": signature, "first_seen": now.isoformat(timespec="seconds")})
    return now
