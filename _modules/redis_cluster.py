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


def _client(port=None, timeout=5, host="127.0.0.1"):
    """redis-py client for a node of the deployment (default: this one), with its password."""
    return __utils__["redis_common.client"](_settings(), port, host=host, timeout=timeout)


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
    except redis.RedisError as exc:
        result.update({"ping": False, "error": __utils__["redis_common.error_text"](exc)})
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


def _sentinel_status():
    """The Sentinels' view (the live master, agreement, failover outlook and warnings), or why not."""
    try:
        return __salt__["redis_sentinel.status"]()
    except (KeyError, CommandExecutionError) as exc:
        return {"error": f"no Sentinel view: {exc}"}


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
            if __utils__["redis_common.failure"](exc) != "error":  # BUSY, NOAUTH...: the server, not the setting
                raise CommandExecutionError(_unusable(exc, port, result["applied"])) from None
            reason = str(exc) if directive not in SECRET_DIRECTIVES else "refused"
            result["refused"][directive] = reason
        except redis.RedisError as exc:
            raise CommandExecutionError(_unusable(exc, port, result["applied"])) from None
    return result


def _unusable(exc, port, applied):
    done = f" (already applied: {', '.join(applied)})" if applied else ""
    return f"Redis on 127.0.0.1:{_port(port)} cannot take CONFIG SET: {__utils__['redis_common.error_text'](exc)}{done}"


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


# ---------------------------------------------------------------- Redis Cluster

TOTAL_SLOTS = 16384


def _cluster_command(client, *args):
    """A CLUSTER subcommand's raw answer (redis-py would reshape some of them)."""
    return client.execute_command("CLUSTER", *args)


def _parse_cluster_nodes(text):
    """CLUSTER NODES as a list of {id, address, flags, master, slots, open_slots}."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        slots, open_slots = [], []
        for item in fields[8:]:
            if item.startswith("["):
                open_slots.append(item)
            else:
                first, _, last = item.partition("-")
                slots.append([int(first), int(last or first)])
        nodes.append(
            {
                "id": fields[0],
                "address": fields[1].split("@")[0],
                "flags": sorted(fields[2].split(",")),
                "master": None if fields[3] == "-" else fields[3],
                "slots": slots,
                "open_slots": open_slots,
            }
        )
    return nodes


def _view(client, peer_count=None):
    """What one node says about its cluster (see cluster_view)."""
    info = dict(line.split(":", 1) for line in _cluster_command(client, "INFO").splitlines() if ":" in line)
    nodes = _parse_cluster_nodes(_cluster_command(client, "NODES"))
    myself = next((n for n in nodes if "myself" in n["flags"]), {})
    view = {
        "state": info.get("cluster_state"),
        "slots_assigned": int(info.get("cluster_slots_assigned", 0)),
        "slots_ok": int(info.get("cluster_slots_ok", 0)),
        "known_nodes": int(info.get("cluster_known_nodes", 0)),
        "id": myself.get("id"),
        "role": "replica" if "slave" in myself.get("flags", []) else "master",
        "master": myself.get("master"),
        "slots": myself.get("slots", []),
        "nodes": nodes,
        "open_slots": sorted({slot for node in nodes for slot in node["open_slots"]}),
        # noaddr: the node's address now answers with another id (a host rebuilt bare).
        "failing": sorted(n["address"] or n["id"] for n in nodes if {"fail", "fail?", "noaddr"} & set(n["flags"])),
        "keys": client.dbsize(),
    }
    peers = len(_settings().get("peers") or []) if peer_count is None else peer_count
    view["healthy"] = (
        view["state"] == "ok"
        and view["slots_assigned"] == view["slots_ok"] == TOTAL_SLOTS
        and not view["open_slots"]
        and not view["failing"]
        and view["known_nodes"] >= peers
    )
    return view


def cluster_view(host=None, port=None):
    """
    What a node of the deployment (default: this one) says about its Redis Cluster:
    ``state`` (``ok``/``fail``), ``slots_assigned``, ``known_nodes``, its ``id``,
    ``role`` (master/replica) and ``master``, its ``slots``, every node it knows, open
    (migrating/importing) slots, failing nodes, its number of keys, and ``healthy``
    (all 16384 slots assigned and ok, none open, every peer of the deployment known).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.cluster_view
    """
    try:
        return _view(_client(port, host=host or "127.0.0.1"))
    except redis.RedisError as exc:
        reason = __utils__["redis_common.error_text"](exc)
        raise CommandExecutionError(f"{host or 'this node'}: cannot read the cluster: {reason}") from None


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
    if 0 < assigned < TOTAL_SLOTS or any(view["open_slots"] for view in views.values()):
        return (
            f"the cluster has unassigned or open slots ({assigned} of {TOTAL_SLOTS} assigned): repair it with "
            "`redis-cli --cluster fix HOST:PORT` (REDISCLI_AUTH holds the password), then apply again"
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
    Form the deployment's Redis Cluster from this node (the initial master): wait,
    bounded, until every peer answers with the deployment's password; refuse if a
    peer belongs to another cluster, would lose keys, or the cluster has open or
    unassigned slots; then CLUSTER MEET every peer, give each master its slots
    (ADDSLOTSRANGE, ADDSLOTS before Redis 7), CLUSTER REPLICATE the replicas and wait
    until every node says ``cluster_state:ok``. A cluster that only needs time (every
    slot assigned, nodes still agreeing) is waited for, not touched.

    Returns ``{"formed": bool, "actions": [...], "nodes": {hostname: node id},
    "slots": {hostname: ranges}, "comment": str}``.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_cluster.form_cluster timeout=60
    """
    plan = cluster_plan()
    deadline = time.monotonic() + float(timeout)
    clients = _node_clients(plan["nodes"])

    def everyone_answers():
        views = _views(clients)
        return views if all(isinstance(view, dict) for view in views.values()) else None

    views = _wait(everyone_answers, timeout, interval=0.5)
    if not views:
        reasons = {h: why for h, why in _views(clients).items() if not isinstance(why, dict)}
        return {
            "formed": False,
            "actions": [],
            "comment": f"peers did not answer with the deployment's password within {timeout}s: "
            + "; ".join(f"{h} ({plan['nodes'][h]}): {why}" for h, why in reasons.items()),
        }
    refusal = _refusal(plan, views)
    if refusal:
        return {"formed": False, "actions": [], "comment": refusal}

    actions, me = [], clients[plan["initial_master"]]
    ids = {host: _cluster_command(client, "MYID") for host, client in clients.items()}
    warnings = []
    _forget_dead_predecessors(plan, clients, views, ids, actions)
    known = {n["address"] for n in _view(me, peer_count=len(clients))["nodes"]}
    for host, address in plan["nodes"].items():
        # (A node that met no one lists itself without its address.)
        if host != plan["initial_master"] and address not in known:
            ip, port = address.rsplit(":", 1)
            _cluster_command(me, "MEET", ip, int(port))
            actions.append(f"{plan['initial_master']} met {host}")

    def all_met():
        return all(view["known_nodes"] >= len(clients) for view in _views(clients).values()
                   if isinstance(view, dict))

    if not _wait(all_met, max(1.0, deadline - time.monotonic())):
        return {"formed": False, "actions": actions, "comment": f"the nodes did not all meet within {timeout}s"}
    fresh = not any(view["slots_assigned"] for view in views.values())
    current = _view(me, peer_count=len(clients))
    for host, ranges in plan["slots"].items():
        # Planned slots nobody serves: a new cluster's, or a dead master's forgotten ones.
        unowned = [[first, last] for first, last in ranges if _slot_owner(current, first) is None]
        if not unowned or _view(clients[host], peer_count=len(clients))["role"] != "master":
            continue
        for first, last in unowned:
            _assign_slots(clients[host], first, last)
        actions.append(f"{host} got slots " + ", ".join(f"{a}-{b}" for a, b in unowned))
        if not fresh:
            warnings.append(f"slots {', '.join(f'{a}-{b}' for a, b in unowned)} on {host} are EMPTY: their keys "
                            "died with the node; restore them from a backup set")
    if fresh:
        _replicate_as_planned(plan, clients, ids, actions)
        added, rebalanced = [], {}
    else:
        added, newcomers = _place_newcomers(plan, clients, ids, actions)
        rebalanced = _rebalance_onto(newcomers, plan, actions, max(1.0, deadline - time.monotonic()))

    def healthy():
        return all(isinstance(v, dict) and v["healthy"] for v in _views(clients).values())

    result = {"actions": actions, "nodes": ids, "slots": plan["slots"], "warnings": warnings,
              "added": added, "rebalanced": rebalanced}
    if not _wait(healthy, max(1.0, deadline - time.monotonic())):
        return dict(result, formed=False, comment=f"not every node says cluster_state:ok within {timeout}s")
    return dict(result, formed=True, comment="cluster ok" + "".join(f"; WARNING: {w}" for w in warnings))


def _slot_owner(view, slot):
    """The id of the master serving ``slot`` in one node's view, or None."""
    for node in view["nodes"]:
        if any(first <= slot <= last for first, last in node["slots"]):
            return node["id"]
    return None


def _host_of(ids, node_id):
    return next((host for host, known in ids.items() if known == node_id), node_id)


def _replicate_as_planned(plan, clients, ids, actions):
    """A new cluster: each planned replica replicates the master of its planned slots."""
    current = _view(clients[plan["initial_master"]], peer_count=len(clients))
    for host, master in plan["replicas"].items():
        view = _view(clients[host], peer_count=len(clients))
        planned = plan["slots"].get(master) or []
        owner = _slot_owner(current, planned[0][0]) if planned else None
        if view["role"] == "master" and not view["slots"] and owner and owner != ids[host]:
            _cluster_command(clients[host], "REPLICATE", owner)
            actions.append(f"{host} replicates {_host_of(ids, owner)}")


def _place_newcomers(plan, clients, ids, actions):
    """A formed cluster met slotless masters: new controllers, or hosts rebuilt bare. Each
    replicates a master that has fewer replicas than ``replicas_per_master`` (its planned
    master first), else stays a master for the rebalance. Live roles of the others are kept.
    Returns ([{host, id, role, master}], [hosts to give slots])."""
    wanted = int(_settings().get("replicas_per_master", 0) or 0)
    current = _view(clients[plan["initial_master"]], peer_count=len(clients))
    serving = [n for n in current["nodes"] if n["slots"] and "master" in n["flags"]]
    replicas = {n["id"]: 0 for n in serving}
    for node in current["nodes"]:
        if node["master"] in replicas and not {"fail", "fail?", "noaddr"} & set(node["flags"]):
            replicas[node["master"]] += 1
    added, newcomers = [], []
    for host, client in clients.items():
        view = _view(client, peer_count=len(clients))
        if view["role"] != "master" or view["slots"] or view["master"]:
            continue
        home = ids.get(plan["replicas"].get(host))  # the master the plan gives it, if still a master
        short = [node_id for node_id, count in replicas.items() if count < wanted]
        if short:
            master = min(short, key=lambda node_id: (replicas[node_id], node_id != home, node_id))
            _cluster_command(client, "REPLICATE", master)
            replicas[master] += 1
            actions.append(f"{host} replicates {_host_of(ids, master)}")
            added.append({"host": host, "id": ids[host], "role": "replica", "master": _host_of(ids, master)})
        else:
            newcomers.append(host)
            added.append({"host": host, "id": ids[host], "role": "master"})
    return added, newcomers


def _redis_cli_cluster(args, timeout):
    """``redis-cli --cluster ARGS`` (the tool operators use to move slots), the password in
    REDISCLI_AUTH, never in argv. Returns (exit code, output)."""
    env = dict(os.environ, REDISCLI_AUTH=_settings().get("password") or "")
    try:
        done = subprocess.run(
            ["redis-cli", "--cluster", *[str(a) for a in args]],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return 124, f"redis-cli --cluster {args[0]} did not finish within {timeout:.0f}s: {exc.stdout or ''}"
    except OSError as exc:
        return 127, f"cannot run redis-cli: {exc}"
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def _rebalance_onto(newcomers, plan, actions, timeout):
    """Move slots (with their keys) onto new masters: ``redis-cli --cluster rebalance
    --cluster-use-empty-masters``, which clients follow through MOVED/ASK. Returns
    {hostname: slots it got} or raises CommandExecutionError with redis-cli's words."""
    if not newcomers:
        return {}
    entry = plan["nodes"][plan["initial_master"]]
    deadline = time.monotonic() + timeout
    clients = _node_clients(plan["nodes"])

    def everyone_ok():
        # A node that just joined answers CLUSTERDOWN until it has learnt every slot's
        # owner, and then refuses the keys MIGRATE brings it.
        return all(isinstance(view, dict) and view["state"] == "ok" for view in _views(clients).values())

    _wait(everyone_ok, timeout, interval=0.2)
    while True:
        code, output = _redis_cli_cluster(["rebalance", entry, "--cluster-use-empty-masters"],
                                          max(1.0, deadline - time.monotonic()))
        # Right after a MEET the nodes may not agree on the configuration yet: redis-cli
        # then refuses to move anything; it is safe to ask again.
        if code == 0 or "don't agree" not in output or time.monotonic() >= deadline:
            break
        log.debug("redis-cli --cluster rebalance: the nodes do not agree yet; trying again")
        time.sleep(1)
    if code != 0:
        log.error("redis-cli --cluster rebalance failed: %s", output)
        raise CommandExecutionError(f"rebalancing onto {', '.join(newcomers)} failed (exit {code}): "
                                    + " ".join(output.split())[-600:])
    host, port = _split_address(entry)
    current = _view(_client(port, host=host))
    gained = {}
    for host in newcomers:
        node = next((n for n in current["nodes"] if n["address"] == plan["nodes"][host]), {"slots": []})
        gained[host] = sum(last - first + 1 for first, last in node["slots"])
    actions.append("rebalanced: " + ", ".join(f"{host} got {count} slots" for host, count in gained.items()))
    return gained


def _split_address(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _forget_dead_predecessors(plan, clients, views, ids, actions):
    """A host rebuilt bare at its old address has a new node id; the cluster still lists
    the dead one there. Every live node forgets it, so the new node can be met."""
    live = set(ids.values())
    by_address = {address: host for host, address in plan["nodes"].items()}
    dead = {}
    for view in views.values():
        for node in view["nodes"]:
            # Listed at a host's address with another id, or left without an address
            # because that address now answers with another id (noaddr).
            if node["id"] not in live and (node["address"] in by_address or "noaddr" in node["flags"]):
                dead.setdefault(node["id"], by_address.get(node["address"]))
    for node_id, host in dead.items():
        for client in clients.values():
            try:
                _cluster_command(client, "FORGET", node_id)
            except redis.ResponseError:
                pass  # this node never knew it, or it is that node's own id
        actions.append(f"forgot the dead node {node_id[:8]}" + (f" ({host}'s predecessor)" if host else ""))


def wait_cluster_healthy(timeout=120):
    """
    Wait, bounded, until this node sees itself in a healthy cluster (all slots assigned
    and ok, none open, every peer known). Returns ``{"healthy": bool, "comment": str}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.wait_cluster_healthy timeout=30
    """
    last = {}

    def check():
        try:
            last["view"] = _view(_client())
        except redis.RedisError as exc:
            last["view"] = {"healthy": False, "error": __utils__["redis_common.error_text"](exc)}
        return last["view"]["healthy"]

    if _wait(check, timeout, interval=0.5):
        return {"healthy": True, "comment": "cluster ok"}
    __context__["retcode"] = 1  # `salt` and orchestration see the failure (a state run resets it)
    view = last["view"]
    if "error" in view:
        return {"healthy": False, "comment": view["error"]}
    return {
        "healthy": False,
        "comment": f"cluster_state:{view['state']}, {view['slots_assigned']} slots assigned, "
        f"{view['known_nodes']} nodes known",
    }


def server_shape(port=None):
    """
    What the running server is, as far as changing the deployment's shape matters: its
    ``port`` and ``dir``, ``cluster_enabled`` and ``slots_assigned`` (a formed cluster),
    its replication ``role`` and ``connected_replicas`` (a Sentinel pair). ``reachable``
    False (with ``error``) when it does not answer with the deployment's password.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_cluster.server_shape
    """
    try:
        client = _client(port)
        info = client.info()
        running = _config_get(client, ["port", "dir"])
        slots = _view(client)["slots_assigned"] if info.get("cluster_enabled") else 0
    except redis.RedisError as exc:
        return {"reachable": False, "error": __utils__["redis_common.error_text"](exc)}
    return {
        "reachable": True,
        "port": int(running.get("port", 0)),
        "dir": running.get("dir", ""),
        "cluster_enabled": bool(info.get("cluster_enabled")),
        "slots_assigned": slots,
        "role": info.get("role"),
        "connected_replicas": int(info.get("connected_slaves", 0)),
    }


def remove_member(address, timeout=300):
    """
    Take the node at ``address`` (``ip:port``) out of this node's cluster without losing a
    key: move its slots (and their keys) to the other masters (``redis-cli --cluster
    rebalance`` with its weight at 0), then ``redis-cli --cluster del-node``, which makes
    every node forget it, moves its replicas to other masters and resets it. A dead node
    is only forgotten, and only when it serves no slot (else its keys would be lost).
    Run it on a node that stays; ``salt-run redis_cluster.remove_node`` does.

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
    if target["slots"]:
        code, output = _redis_cli_cluster(
            ["rebalance", entry, "--cluster-weight", f"{target['id']}=0"], max(1.0, deadline - time.monotonic())
        )
        left = next((n["slots"] for n in _view(me)["nodes"] if n["id"] == target["id"]), [])
        if code != 0 or left:
            log.error("redis-cli --cluster rebalance (draining %s) failed: %s", address, output)
            raise CommandExecutionError(
                f"moving the slots off {address} failed (exit {code}; still serving {len(left)} ranges): "
                + " ".join(output.split())[-600:]
            )
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
