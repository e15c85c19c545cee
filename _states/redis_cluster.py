"""
States of a Redis Cluster deployment (pillar ``redis:mode`` ``cluster``) that never fight
Redis over what it decides on its own (a failover, ``nodes.conf``): :func:`formed`
forms, grows and repairs the cluster to the plan; :func:`predecessor_handed_over` keeps a
member whose data is gone from starting bare while its old self still serves slots;
:func:`shape_kept` refuses to turn a formed deployment into another shape. The node-level
states (Salt's settings file and the running server's settings) are ``redis_node``'s.
"""

import os

from salt.exceptions import CommandExecutionError

__virtualname__ = "redis_cluster"


def __virtual__():
    if "redis_cluster.cluster_view" not in __salt__:
        return (False, "redis_cluster state: the redis_cluster execution module is not available")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _pillar_failed(ret, error):
    ret.update(result=False, comment=f"the Redis deployment's pillar failed: {error}; nothing changed")
    return ret


TOTAL_SLOTS = 16384


def _ranges(ranges):
    return ", ".join(f"{first}-{last}" for first, last in ranges) or "no slots"


def formed(name, timeout=120, marker=None):
    """
    Make the deployment's nodes one healthy Redis Cluster of the plan's shape. The initial
    master (pillar ``redis:initial_master``) forms it when no slot is assigned yet (or
    completes a formation cut short): it waits, bounded by ``timeout`` seconds, for every
    peer, meets them, assigns the slot plan and makes every planned replica replicate its
    master; every other node waits, bounded, until it is in the healthy cluster (for as
    long as slots keep moving: the initial master's rebalance has its own budget).

    Healthy means: all 16384 slots served, none open, no failing node, every peer known,
    every master with ``replicas_per_master`` replicas where the nodes allow it, no
    slot-less master left over and no replica on its master's host. A cluster that is not
    is repaired by the initial master: spare replicas and newcomers replicate short
    masters, newcomers in groups of ``replicas_per_master + 1`` become new masters and get
    slots by a rebalance; no master that serves slots is ever moved or demoted, so roles
    Redis chose (a failover) stay. Refuses, changing nothing, a node of another cluster,
    a slot-less node that holds keys, open slots no rebalance of ours left, and slot
    assignments the plan does not explain, naming the repair.

    name
        Any label.
    timeout
        Seconds to wait for the peers, and for the cluster to become healthy (on a node
        other than the initial master: after the last slot it saw move).
    marker
        A file in a directory only root writes (e.g. ``/etc/redis-salt/cluster-member``)
        that records, once this node is in the healthy cluster, that it is a member: a
        member whose ``nodes.conf`` is gone lost its data and must not start bare (see
        :func:`predecessor_handed_over`).

    .. code-block:: yaml

        redis-cluster-formed:
          redis_cluster.formed:
            - name: cluster
            - timeout: 120
            - marker: /etc/redis-salt/cluster-member
    """
    ret = _ret(name)
    settings = __pillar__.get("redis") or {}
    if settings.get("error"):
        return _pillar_failed(ret, settings["error"])
    if settings.get("mode") != "cluster":
        ret["comment"] = "not a Redis Cluster deployment: nothing to form"
        return ret
    retired = __salt__["redis_node.retired"]()
    if retired:
        ret.update(result=False, comment=(
            f"this host was taken out of the deployment by {retired.get('by')} at {retired.get('at')} and its Redis "
            f"stopped: remove it from {settings.get('deployment_file') or 'the YAML'} (or set services.redis: false). "
            f"To bring it back as a new member, delete {retired.get('path')} and apply again"))
        return ret
    plan = __salt__["redis_cluster.cluster_plan"]()
    me, initial = settings.get("hostname"), plan["initial_master"]
    try:
        view = __salt__["redis_cluster.cluster_view"]()
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    departed = _departed(view, plan)
    if departed:
        ret.update(
            result=False,
            comment=f"the cluster still has {', '.join(departed)}, which the YAML no longer lists as a Redis "
            "controller; a state run never tears a node out: move its slots to the others, make every node "
            "forget it and stop its Redis with `salt-run redis_cluster.remove_node node="
            f"{departed[0].split(' ')[0].rsplit(':', 1)[0]}`",
        )
        return ret
    if view["healthy"] and not view.get("rebalance_pending"):
        ret["comment"] = (
            f"cluster ok: {view['known_nodes']} nodes, all {TOTAL_SLOTS} slots assigned; this node is a "
            f"{view['role']}" + (f" with slots {_ranges(view['slots'])}" if view["slots"] else "")
        )
        return _membership_noted(ret, marker, view["id"])
    was_member = view["slots_assigned"] > 0 or view["known_nodes"] > 1
    if __opts__["test"]:
        if me == initial and not view["slots_assigned"]:
            layout = "; ".join(f"{host} {_ranges(ranges)}" for host, ranges in plan["slots"].items())
            replicas = "".join(f"; {host} replicates {master}" for host, master in plan["replicas"].items())
            ret["comment"] = f"{me} would form the cluster of {', '.join(plan['nodes'])}: slots {layout}{replicas}"
            ret["changes"] = {"would_form": plan}
        elif me == initial and _newcomers(view, plan):
            wanted = settings.get("replicas_per_master", 0)
            ret["comment"] = (
                f"{me} would add {', '.join(_newcomers(view, plan))} to the cluster: each replicates a master with "
                f"fewer than {wanted} replicas, else becomes a master and the slots are rebalanced onto it"
            )
            ret["changes"] = {"would_add": _newcomers(view, plan)}
        elif me == initial and view.get("rebalance_pending"):
            ret["comment"] = (f"{me} would close the slot an interrupted rebalance left open and resume it onto "
                              f"{', '.join(view['rebalance_pending'])}")
            ret["changes"] = {"would_resume_rebalance": view["rebalance_pending"]}
        elif me == initial and (view["shape"]["replicate"] or view["shape"]["new_masters"]):
            moves = view["shape"]["replicate"]
            ret["comment"] = (
                f"{me} would bring the cluster to the plan's shape (replicas_per_master "
                f"{settings.get('replicas_per_master', 0)}): {len(moves)} replica moves (CLUSTER REPLICATE), "
                f"{len(view['shape']['new_masters'])} new masters to rebalance onto; no master with slots is touched"
            )
            ret["changes"] = {"would_reshape": view["shape"]}
        elif me == initial:
            ret["comment"] = f"the cluster is not ok yet ({view['state']}): {me} would wait for it or repair nothing"
        else:
            ret["comment"] = f"{me} would join the cluster that {initial} forms"
            ret["changes"] = {} if was_member else {"would_join": initial}
        ret["result"] = None if ret["changes"] else True
        return ret
    if me == initial:
        outcome = __salt__["redis_cluster.form_cluster"](timeout=timeout)
        ret["comment"] = outcome["comment"]
        if outcome["actions"]:
            ret["changes"] = {"formed": {"actions": outcome["actions"], "nodes": outcome.get("nodes", {})}}
        if not outcome["formed"]:
            ret["result"] = False
            return ret
        if outcome["actions"]:
            _announce(outcome, was_member)
            what = "grew the cluster" if outcome.get("added") and was_member else "formed the cluster"
            ret["comment"] = f"{what} of {', '.join(plan['nodes'])}: " + "; ".join(outcome["actions"])
            ret["comment"] += "".join(f"; WARNING: {warning}" for warning in outcome.get("warnings", []))
        return _membership_noted(ret, marker, outcome["nodes"].get(me))
    joined = __salt__["redis_cluster.wait_cluster_healthy"](timeout=timeout)
    if not joined["healthy"]:
        ret.update(
            result=False,
            comment=f"no healthy cluster ({joined['comment']}); {initial} forms it: "
            "see that minion's result",
        )
        return ret
    ret["comment"] = f"in the cluster formed by {initial}"
    if not was_member:
        ret["changes"] = {"joined": initial}
    return _membership_noted(ret, marker, view["id"])


def _membership_noted(ret, marker, node_id):
    """Record (once) that this node is a member of the formed cluster."""
    if not marker or not node_id or __opts__["test"]:
        return ret
    try:
        with open(marker, encoding="utf-8") as handle:
            if handle.read().strip() == node_id:
                return ret
    except OSError:
        pass
    try:
        temporary = __utils__["redis_common.write_temporary"](marker, node_id + "\n", 0, 0, 0o644)
        os.replace(temporary, marker)
    except OSError as exc:
        ret.update(result=False, comment=f"{ret['comment']}; cannot record the membership in {marker}: {exc.strerror}")
        return ret
    ret["changes"] = dict(ret["changes"], member=node_id)
    return ret


def predecessor_handed_over(name, marker, nodes_file, timeout=120, service=None):
    """
    Keep a cluster member that lost its data directory from starting bare while its old
    self still serves slots. Its replica would copy the empty newcomer at that address
    and lose every key; and Redis never fails over a node whose address answers with
    another id. (A systemd drop-in refuses the start at boot under the same condition.)

    When ``marker`` (written by :func:`formed`) says this node was a member and
    ``nodes_file`` is missing or empty, the peers are asked what they still list at this
    node's address: when it serves slots and has a live replica, wait, bounded, until the
    replica has taken them over (nothing answers at this address, so Redis fails it over
    after cluster-node-timeout); then remove the marker, so the node may start bare and
    join as a replica. A node whose old self serves nothing, or whose slots no replica
    holds (then they are given out EMPTY, said loudly, by the initial master), is let go
    at once. No peer answering fails the state: nobody can tell whether keys depend on it.

    name
        Any label.
    marker
        The membership record, e.g. ``/etc/redis-salt/cluster-member``.
    nodes_file
        Redis's cluster configuration file, e.g. ``/var/lib/redis/nodes-6379.conf``.
    timeout
        Seconds to wait for the replica to take over.
    service
        The Redis unit: under systemd its failed starts (the guard refused them at boot)
        are reset, so the next start is not refused as too frequent.

    .. code-block:: yaml

        redis-cluster-predecessor-handed-over:
          redis_cluster.predecessor_handed_over:
            - marker: /etc/redis-salt/cluster-member
            - nodes_file: /var/lib/redis/nodes-6379.conf
    """
    ret = _ret(name)
    settings = __pillar__.get("redis") or {}
    if settings.get("error"):
        return _pillar_failed(ret, settings["error"])
    if settings.get("mode") != "cluster" or not os.path.exists(marker):
        ret["comment"] = "no cluster membership recorded on this node: nothing to hand over"
        return ret
    try:
        kept = os.path.getsize(nodes_file) > 0
    except OSError:
        kept = False
    if kept:
        ret["comment"] = f"{nodes_file} is there: the node starts as itself"
        return ret
    status = __salt__["redis_cluster.predecessor"]()
    if not status["answered"]:
        ret.update(result=False, comment=(
            f"this node was a cluster member and lost {nodes_file}; {status['comment']}. Start the other nodes, "
            f"or if the whole cluster is rebuilt from backups, remove {marker} and apply again"))
        return ret
    if status["slots"] and status["replicas"]:
        if __opts__["test"]:
            ret.update(result=None, changes={"would_wait": status["comment"]},
                       comment=f"would wait until a replica takes over: {status['comment']}")
            return ret
        status = __salt__["redis_cluster.predecessor"](wait=timeout)
        if status["slots"] and status["replicas"]:
            ret.update(result=False, comment=(
                f"this node lost {nodes_file} and its old self still serves slots after {timeout}s: "
                f"{status['comment']}; not started bare (that would wipe the replica); apply again"))
            return ret
    ret["changes"] = {"bare_start": status["comment"]}
    if __opts__["test"]:
        ret.update(result=None, comment=f"would let this node start bare: {status['comment']}")
        return ret
    os.unlink(marker)
    if service and __grains__.get("init") == "systemd":
        __salt__["cmd.run_all"](["systemctl", "reset-failed", f"{service}.service"], python_shell=False,
                                ignore_retcode=True)
    ret["comment"] = f"this node lost {nodes_file}; it may start bare and join again: {status['comment']}"
    return ret


def _departed(view, plan):
    """Live members of this node's cluster that the deployment no longer lists ("ip:port
    (id)"): a controller switched to services.redis false, or removed from the YAML."""
    ours = set(plan["nodes"].values())
    return [f"{node['address']} ({node['id'][:8]})" for node in view["nodes"]
            if node["address"] and node["address"] not in ours and "noaddr" not in node["flags"]
            and "myself" not in node["flags"]]


def _newcomers(view, plan):
    """Hosts of the deployment this node's cluster does not know yet."""
    known = {node["address"] for node in view["nodes"]}
    return [host for host, address in plan["nodes"].items() if address not in known]


def _announce(outcome, was_member):
    """Events for the bus: a new cluster, or the nodes a formed one took in and the slots it moved."""
    if not was_member or not outcome.get("added"):
        __salt__["event.send"]("redis/cluster/formed", {"nodes": outcome["nodes"], "slots": outcome["slots"]})
    for node in outcome.get("added") or []:
        __salt__["event.send"]("redis/cluster/node-added", node)
    if outcome.get("rebalanced"):
        __salt__["event.send"]("redis/cluster/rebalanced", {"slots_moved_to": outcome["rebalanced"]})


def _deployed_port(settings_file):
    """The port in Salt's settings file as last deployed (the server may still run there)."""
    port = __utils__["redis_config.file_values"](settings_file, {"port"}).get("port", "")
    return int(port) if port.isdigit() else None


def shape_kept(name, mode, port, dir, settings_file=None):  # pylint: disable=redefined-builtin
    """
    Refuse, before any configuration file changes, what would tear a running deployment
    apart: a formed Redis Cluster whose YAML now says Sentinel (3 controllers shrank to
    2), a replicating Sentinel pair whose YAML now says cluster (2 grew to 3 with
    ``mode: auto``), a new ``port`` or ``dir`` on a formed cluster (peers know each
    other by address; a new ``dir`` starts an empty master whose replicas then wipe
    themselves). A server that does not answer, or runs standalone, is not refused. (A
    switch between plain TCP and TLS is not refused: ``redis_node.settings_applied`` makes it
    live, ``redis_sentinel.monitored`` restarts the Sentinels one at a time.)

    name
        Any label.
    mode
        The deployment's mode from pillar (``cluster`` or ``sentinel``).
    port, dir
        The port and data directory the deployment asks for.
    settings_file
        Salt's settings file: the server may still run on the port it last gave.

    .. code-block:: yaml

        redis-deployment-shape-kept:
          redis_cluster.shape_kept:
            - mode: cluster
            - port: 6379
            - dir: /var/lib/redis
    """
    ret = _ret(name)
    settings = __pillar__.get("redis") or {}
    if settings.get("error"):
        return _pillar_failed(ret, settings["error"])
    deployed = _deployed_port(settings_file) if settings_file else None
    running = __salt__["redis_cluster.server_shape"](port=deployed or port)
    if not running["reachable"] and deployed and deployed != int(port):
        running = __salt__["redis_cluster.server_shape"](port=port)
    if not running["reachable"]:
        ret["comment"] = f"no running server of the deployment to protect ({running['error']})"
        return ret
    refusal = None
    if running["cluster_enabled"] and running["slots_assigned"] and mode != "cluster":
        refusal = (
            f"this node belongs to a formed Redis Cluster ({running['slots_assigned']} slots assigned) and "
            f"my_multihead_cluster.yaml now gives mode {mode}: nothing reconfigured. Keep the cluster with "
            "`mode: cluster` under cache.redis, or migrate: back up, rebuild, restore"
        )
    elif not running["cluster_enabled"] and mode == "cluster" and (
        running["role"] == "slave" or running["connected_replicas"]
    ):
        refusal = (
            "this node is part of a running master/replica pair and my_multihead_cluster.yaml now gives mode "
            "cluster: nothing reconfigured. Keep the pair with `mode: sentinel` under cache.redis, or migrate: "
            "back up, rebuild, restore"
        )
    elif running["cluster_enabled"] and running["slots_assigned"] and (
        running["port"] != int(port) or os.path.realpath(running["dir"]) != os.path.realpath(dir)
    ):
        refusal = (
            f"this node belongs to a formed Redis Cluster on port {running['port']}, dir {running['dir']}; "
            f"the deployment now asks for port {port}, dir {dir}: nothing reconfigured (peers know each other "
            "by address, and a new dir would start an empty master). Keep port and dir, or migrate: back up, "
            "rebuild, restore"
        )
    if refusal:
        ret.update(result=False, comment=refusal)
        return ret
    ret["comment"] = f"the running server fits mode {mode}, port {port}, dir {dir}"
    return ret
