"""
Redis's text replies as data (Salt's ``_utils``; modules reach them as
``__utils__["redis_replies.<name>"]``): ``CLUSTER NODES`` and ``CLUSTER INFO``, and what a
node's health check reads of its cluster. Pure functions, no Redis and no Salt:
``/usr/local/bin/redis_health`` imports this file too.
"""

__virtualname__ = "redis_replies"


def __virtual__():
    return __virtualname__


def cluster_nodes(text):
    """CLUSTER NODES (or a ``nodes.conf``) as ``[{id, address, flags, master, slots, open_slots}]``:
    ``address`` without the bus port, ``flags`` sorted, ``slots`` as ``[first, last]`` ranges,
    ``open_slots`` the ``[slot->-id]``/``[slot-<-id]`` entries of a slot being moved."""
    nodes = []
    for line in (text or "").splitlines():
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
        nodes.append({
            "id": fields[0],
            "address": fields[1].split("@")[0],
            "flags": sorted(fields[2].split(",")),
            "master": None if fields[3] == "-" else fields[3],
            "slots": slots,
            "open_slots": open_slots,
        })
    return nodes


def cluster_info(text):
    """CLUSTER INFO as a dict of strings."""
    return dict(line.strip().split(":", 1) for line in (text or "").splitlines() if ":" in line)


def cluster_health_view(info_text, nodes_text):
    """What the health rules read of a node's cluster (``redis_health.cluster``): ``state``,
    ``slots_assigned``, ``slots_ok``, ``known_nodes``, ``nodes``, ``open_slots``, ``failing``
    (nodes flagged failing, or ``noaddr``: the address answers with another id, a host rebuilt
    bare)."""
    info = cluster_info(info_text)
    nodes = cluster_nodes(nodes_text)
    return {
        "state": info.get("cluster_state"),
        "slots_assigned": int(info.get("cluster_slots_assigned", 0)),
        "slots_ok": int(info.get("cluster_slots_ok", 0)),
        "known_nodes": int(info.get("cluster_known_nodes", 0)),
        "nodes": nodes,
        "open_slots": sorted({slot for node in nodes for slot in node["open_slots"]}),
        "failing": sorted(n["address"] or n["id"] for n in nodes if {"fail", "fail?", "noaddr"} & set(n["flags"])),
    }
