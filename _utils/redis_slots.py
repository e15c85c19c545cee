"""
Moving hash slots, with their keys, between the masters of a Redis Cluster: what
``redis-cli --cluster rebalance`` does, by the same protocol, many slots per round trip.

Why not redis-cli: it moves one slot at a time, about ten requests in a row per slot, and
each ``CLUSTER SETSLOT`` makes every node rewrite ``nodes.conf`` and rescan the slot table.
Measured in the lab (6 hosts, 8192 slots): 3.5-8 ms per slot with redis-cli, 0.6 ms per
slot moved 64 at a time, where the SETSLOTs of one batch share the node's one config save.

The protocol per batch (Redis's cluster specification, "Live reconfiguration"), each step
one pipelined request to one node:

1. ``CLUSTER SETSLOT s IMPORTING source`` on the target;
2. ``CLUSTER SETSLOT s MIGRATING target`` on the source: from here a client's command for a
   key the source no longer has is redirected (ASK) to the target, so no new key lands on
   the source;
3. ``CLUSTER GETKEYSINSLOT`` and one ``MIGRATE ... KEYS`` per slot that still has keys
   (MIGRATE takes keys of one slot only), until no slot of the batch has a key left;
4. ``CLUSTER SETSLOT s NODE target`` on the target, then the source, then every other
   master (the rest learn it by gossip).

A move cut short (the minion killed, a power cut) leaves at most one batch open: the caller
closes it with ``redis-cli --cluster fix``, which finishes each open slot, and plans again
from what the nodes say (a plan is always computed from the slots' current owners).
"""

import time

from salt.exceptions import CommandExecutionError

try:
    import redis

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

__virtualname__ = "redis_slots"

TOTAL_SLOTS = 16384
BATCH = 64
# The key names one GETKEYSINSLOT returns, and so one MIGRATE carries (redis-cli: 10).
KEYS_PER_MIGRATE = 100
# What redis-cli calls balanced (--cluster-threshold 2): no master further than 2 % from
# its share; a balanced cluster is left alone, so that a second run moves nothing.
THRESHOLD_PERCENT = 2.0


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_slots: the redis Python library (redis-py) is not installed")
    return __virtualname__


def plan(masters, weights=None, use_empty=False):
    """The moves that give every master its share of the slots, as ``redis-cli --cluster
    rebalance`` computes them: ``[(source id, target id, [slots])]``.

    ``masters``: ``[{"id", "slots": [slot, ...]}]``, the live masters. ``weights``: ``{id:
    weight}`` (default 1; 0 empties a master). A master without slots takes part only with
    ``use_empty`` or a weight given. No move when every master is within 2 % of its share."""
    weights = weights or {}
    taking = [m for m in masters if m["slots"] or use_empty or m["id"] in weights]
    total = sum(float(weights.get(m["id"], 1)) for m in taking)
    if total <= 0:
        raise CommandExecutionError("every master would have weight 0: nobody would serve the slots")
    owned = {m["id"]: sorted(m["slots"]) for m in taking}
    served = sum(len(slots) for slots in owned.values())
    expected = {m["id"]: int(served * float(weights.get(m["id"], 1)) / total) for m in taking}
    balance = {i: len(owned[i]) - expected[i] for i in owned}
    if not any(abs(b) / max(expected[i], 1) * 100 > THRESHOLD_PERCENT or (expected[i] == 0 and owned[i])
               for i, b in balance.items()):
        return []
    # Rounding down leaves some slots to place: they go to the masters furthest below
    # their share, one each (redis-cli: "fix the node with the lowest balance").
    extra = sum(balance.values())
    for node_id in sorted((i for i in balance if float(weights.get(i, 1)) > 0), key=lambda i: balance[i]):
        if extra <= 0:
            break
        balance[node_id] -= 1
        extra -= 1
    order = [m["id"] for m in taking]
    givers = sorted((i for i in order if balance[i] > 0), key=lambda i: -balance[i])
    takers = sorted((i for i in order if balance[i] < 0), key=lambda i: balance[i])
    moves = []
    for taker in takers:
        want = -balance[taker]
        for giver in givers:
            if want == 0:
                break
            count = min(want, balance[giver])
            if count <= 0:
                continue
            # The lowest slots first, as redis-cli does: ranges stay contiguous.
            slots, owned[giver] = owned[giver][:count], owned[giver][count:]
            balance[giver] -= count
            want -= count
            moves.append((giver, taker, slots))
    return moves


def _check(replies, what):
    for reply in replies:
        if isinstance(reply, Exception):
            raise CommandExecutionError(f"{what}: {reply}")
    return replies


def _each(client, commands, what):
    """The commands in one round trip; every reply, or CommandExecutionError naming ``what``
    (``what`` None: the replies, errors among them)."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    replies = pipe.execute(raise_on_error=False)
    return replies if what is None else _check(replies, what)


def _login(client):
    """The ``AUTH`` part of MIGRATE: what ``client`` logged in to the target with."""
    kwargs = client.connection_pool.connection_kwargs
    password, username = kwargs.get("password"), kwargs.get("username")
    if not password:
        return []
    return ["AUTH2", username, password] if username else ["AUTH", password]


def move(nodes, source, target, slots, deadline, timeout_ms=60000, batch=BATCH, masters=()):
    """Move ``slots`` (with their keys) from master ``source`` to master ``target``, ``batch``
    at a time. ``nodes``: ``{id: {"client": redis-py client, "host", "port"}}`` (the announced
    address MIGRATE connects to); ``masters``: the ids of every master, told each slot's new
    owner. No batch starts after ``deadline`` (``time.monotonic()``): nothing is left open.
    Returns ``(slots moved, keys moved)``; raises CommandExecutionError with the node's words
    (a batch cut short by an error stays open: see the module's docstring)."""
    moved = done = 0
    src, dst = nodes[source]["client"], nodes[target]["client"]
    where = (nodes[target]["host"], int(nodes[target]["port"]))
    login = _login(dst)
    for start in range(0, len(slots), batch):
        if time.monotonic() > deadline:
            raise CommandExecutionError(f"the time given ran out after {done} of {len(slots)} slots; every slot "
                                        "moved so far is complete and none is left open")
        chunk = slots[start:start + batch]
        _each(dst, [("CLUSTER", "SETSLOT", s, "IMPORTING", source) for s in chunk], "SETSLOT IMPORTING on the target")
        _each(src, [("CLUSTER", "SETSLOT", s, "MIGRATING", target) for s in chunk], "SETSLOT MIGRATING on the source")
        while True:
            found = _each(src, [("CLUSTER", "GETKEYSINSLOT", s, KEYS_PER_MIGRATE) for s in chunk], "GETKEYSINSLOT")
            with_keys = [keys for keys in found if keys]
            if not with_keys:
                break
            _each(src, [("MIGRATE", *where, "", 0, timeout_ms, *login, "KEYS", *keys) for keys in with_keys],
                  f"MIGRATE to {where[0]}:{where[1]}")
            moved += sum(len(keys) for keys in with_keys)
        _each(dst, [("CLUSTER", "SETSLOT", s, "NODE", target) for s in chunk], "SETSLOT NODE on the target")
        replies = _each(src, [("CLUSTER", "SETSLOT", s, "NODE", target) for s in chunk], None)
        # A source that just gave its last slot may have heard it from the target and made
        # itself the target's replica (Redis 7's replica migration): not an error (redis-cli
        # ignores it too).
        _check([r for r in replies if not (isinstance(r, Exception) and "only with masters" in str(r))],
               "SETSLOT NODE on the source")
        for other in masters:
            if other in (source, target) or other not in nodes:
                continue
            # As redis-cli: a master that does not take it (it turned replica meanwhile, it
            # is unreachable) learns the owner by gossip.
            pipe = nodes[other]["client"].pipeline(transaction=False)
            for s in chunk:
                pipe.execute_command("CLUSTER", "SETSLOT", s, "NODE", target)
            try:
                pipe.execute(raise_on_error=False)
            except redis.RedisError:
                continue
        done += len(chunk)
    return done, moved
