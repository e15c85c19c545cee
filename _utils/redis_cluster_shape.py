"""
The replica plan of a Redis Cluster, as pure logic (no Salt, no Redis): which node should
replicate which master so that every master has ``replicas_per_master`` replicas where
the nodes allow it, and which slot-less nodes become masters for a rebalance.

One function decides it, :func:`moves`; the execution module runs its answer (CLUSTER
REPLICATE, then a rebalance onto the new masters) and calls a cluster healthy only when
it has nothing left to do. So "healthy" and "what a re-apply repairs" can never disagree.

Nodes are dicts ``{"id", "address" ("ip:port"), "role" ("master"|"replica"), "master"
(its master's id, replicas only), "slots" (how many it serves)}``; only live nodes are
given (a failing node is Redis's to fail over). ``planned`` maps a node's address to the
address of the master the deployment's plan gives it, which is preferred among equals.

Rules, in order:

1. A master with fewer than ``wanted`` replicas takes a newcomer (a slot-less master
   without replicas), its planned master first, else a spare replica (one beyond
   ``wanted`` on another master).
2. Remaining newcomers form new masters in groups of ``wanted + 1``: one newcomer gets
   slots (a rebalance), the others (newcomers first, then spares) replicate it.
3. A newcomer left over waits as a spare replica of the master with fewest replicas.
   Spares left over stay where they are.

A replica goes to the plan's master where it can; among other choices to the master with
fewest replicas, on another host address than its own.
(Every controller of the deployment has an address of its own, so no two copies of a
shard share a host; the preference matters only where nodes share one, as in tests.)

Roles Redis chose (a failover) are never undone: only replicas and slot-less nodes move;
no master with slots is ever touched.
"""

__virtualname__ = "redis_cluster_shape"


def __virtual__():
    return __virtualname__


def _ip(node):
    return (node.get("address") or "").rsplit(":", 1)[0]


def moves(nodes, wanted, planned=None):
    """``{"replicate": [{"node", "master", "why"}], "new_masters": [id, ...]}`` for ``nodes``
    (see the module's docstring); both empty when the shape holds. ``why`` is ``short``
    (fills a master's missing replica), ``group`` (replicates a new master) or ``spare``
    (a newcomer left over)."""
    planned = planned or {}
    wanted = int(wanted or 0)
    by_id = {node["id"]: node for node in nodes}
    replicas = {}
    for node in nodes:
        if node["role"] == "replica" and node.get("master") in by_id:
            replicas.setdefault(node["master"], []).append(node)
    # Masters: those that serve slots, and slot-less ones that already have replicas (a
    # group waiting for its rebalance). Newcomers: slot-less masters nobody replicates.
    masters = [n for n in nodes if n["role"] == "master" and (n["slots"] or n["id"] in replicas)]
    newcomers = sorted((n for n in nodes if n["role"] == "master" and not n["slots"] and n["id"] not in replicas),
                       key=lambda n: n["address"] or n["id"])
    new_masters = [n["id"] for n in masters if not n["slots"]]
    kept, spares = {}, []
    for master in masters:
        own = sorted(replicas.get(master["id"], []),
                     key=lambda r: (planned.get(r["address"]) != master["address"], r["address"] or r["id"]))
        # Keep the plan's replicas of this master first; the rest beyond `wanted` are spare.
        kept[master["id"]] = own[:wanted]
        spares += own[wanted:]
    result = []

    def count(master):
        return len(kept[master["id"]])

    def best(node, options):
        # The plan's master when it is among them; else fewest replicas, on another host.
        return min(options, key=lambda m: (planned.get(node["address"]) != m["address"], count(m),
                                           _ip(m) == _ip(node), m["address"] or m["id"]))

    def assign(node, master, why):
        result.append({"node": node["id"], "master": master["id"], "why": why})
        kept[master["id"]].append(node)

    for pool in (newcomers, spares):
        for node in list(pool):
            short = [m for m in masters if count(m) < wanted and m["id"] != node.get("master")]
            if short:
                assign(node, best(node, short), "short")
                pool.remove(node)
    while newcomers and len(newcomers) + len(spares) >= wanted + 1:
        master = newcomers.pop(0)
        masters.append(master)
        kept[master["id"]] = []
        new_masters.append(master["id"])
        for _ in range(wanted):
            pool = newcomers if newcomers else spares
            node = min(pool, key=lambda n: _ip(n) == _ip(master))
            pool.remove(node)
            assign(node, master, "group")
    for node in newcomers if masters else []:
        assign(node, best(node, masters), "spare")
    return {"replicate": result, "new_masters": new_masters}
