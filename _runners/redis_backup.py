"""
Coordinated backups of the whole Redis deployment, and restores from them, run from the
salt-master.

.. code-block:: bash

    salt-run redis_backup.run type=rdb
    salt-run redis_backup.list
    salt-run redis_backup.restore set=set_20251027_120000              # what it would do
    salt-run redis_backup.restore set=set_20251027_120000 force=True

A runner never sees the Redis password (pillar hides it from ``salt-run``): every step
that talks to Redis runs on the deployment's minions, through the ``redis_backup``,
``redis_cluster`` and ``service`` execution modules. The deployment's shape (mode, nodes,
Sentinel hosts) comes from ``redis_deployment.shape``, and so does each node's minion: the
accepted minion key the ext_pillar's matcher finds for its controller (``server1`` or
``server1.example.org``), never a guess from the YAML's ``minion_id``.

A *set* is one backup of every Redis node taken together, described by one manifest on
the master: ``<redis_backup_sets_dir>/<set_id>/manifest.json`` (master option
``redis_backup_sets_dir``, default ``<cachedir>/redis_backup_sets``). The backups
themselves stay on the nodes (``redis_backup.create``), and also in
``cache.redis.backup.copy_to`` (for example a shared mount) when the YAML sets it.

The pure parts (set status, slot coverage, time spread, manifest, restore plan) are plain
functions of plain data, tested without a master.
"""

import datetime
import json
import logging
import os
import re
import shutil
import time

try:
    import salt.client
    import salt.utils.event
    from salt.exceptions import SaltInvocationError

    HAS_SALT_CLIENT = True
except ImportError:  # pragma: no cover - a master always has it
    HAS_SALT_CLIENT = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_backup"
__func_alias__ = {"list_": "list"}

TOTAL_SLOTS = 16384
TYPES = ("rdb", "aof")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SET_RE = re.compile(r"^set_\d{8}_\d{6}(?:_\d+)?$")
SERVER_ROLES = ("cluster-node", "master", "replica")
METADATA = "backup_metadata.json"
PAST = {"stop": "stopped", "start": "started"}
# Progress lines skip events of backups that started this long before the run (a node's
# scheduled backup running at the same time); minions' clocks may lag the master's a little.
CLOCK_SLACK = datetime.timedelta(seconds=60)


def __virtual__():
    if not HAS_SALT_CLIENT:
        return (False, "redis_backup runner: salt.client is not importable")
    return __virtualname__


# ---------------------------------------------------------------- pure helpers: slots and times


def _merge_ranges(ranges):
    """Slot ranges (``[[first, last], ...]``, any order, overlaps allowed) merged and sorted."""
    merged = []
    for first, last in sorted((int(a), int(b)) for a, b in ranges or []):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return merged


def _missing_slots(ranges):
    """The slot ranges of 0-16383 that ``ranges`` do not cover."""
    missing, expected = [], 0
    for first, last in _merge_ranges(ranges):
        if first > expected:
            missing.append([expected, min(first - 1, TOTAL_SLOTS - 1)])
        expected = max(expected, last + 1)
    if expected < TOTAL_SLOTS:
        missing.append([expected, TOTAL_SLOTS - 1])
    return missing


def _format_ranges(ranges):
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in _merge_ranges(ranges)) or "none"


def _parse_time(text):
    try:
        moment = datetime.datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _snapshot_time(meta):
    """When a backup's data was taken: the BGSAVE's LASTSAVE (RDB), else the backup's start."""
    return _parse_time(meta.get("last_save")) or _parse_time(meta.get("timestamp"))


def _new_set_id(now):
    return f"set_{now:%Y%m%d_%H%M%S}"


# ---------------------------------------------------------------- pure helpers: one backup set


def _node_backups(ret):
    """``{type: metadata}`` from what ``redis_backup.create`` returned (one type, or both)."""
    if not isinstance(ret, dict):
        return {}
    if ret.get("type") in TYPES and ret.get("name"):
        return {ret["type"]: ret}
    return {kind: ret[kind] for kind in TYPES if isinstance(ret.get(kind), dict)}


def _backup_summary(meta):
    taken = _snapshot_time(meta)
    return {
        "name": meta.get("name"),
        "path": meta.get("path"),
        "timestamp": meta.get("timestamp"),
        "snapshot_time": taken.isoformat() if taken else None,
        "compress": meta.get("compress"),
        "files": [{"name": f.get("name"), "sha256": f.get("sha256"), "size": f.get("size"),
                   "raw_sha256": f.get("raw_sha256"), "raw_size": f.get("raw_size")} for f in meta.get("files") or []],
        "size": meta.get("size"),
        "keys": meta.get("keys"),
        "keys_with_ttl": meta.get("keys_with_ttl"),
        "verified": bool(meta.get("verified")),
        "redis_version": meta.get("redis_version"),
        "copied_to": meta.get("copied_to"),
        "copy_error": meta.get("copy_error"),
    }


def _node_entry(peer, minion, ok, ret):
    """A node's entry in the manifest, from its peer record and ``redis_backup.create``'s answer."""
    entry = {"minion": minion, "hostname": peer.get("hostname"), "ip": peer.get("ip"), "port": peer.get("port"),
             "role": peer.get("role")}
    backups = _node_backups(ret) if ok else {}
    if not ok or not backups:
        entry.update(status="failed", error=str(ret) if not ok else f"unexpected answer: {ret!r}"[:500], backups={})
        return entry
    first = next(iter(backups.values()))
    entry.update(
        status="ok",
        node_id=first.get("node_id"),
        replication_role=first.get("replication_role"),
        slots=_merge_ranges(first.get("slots") or []),
        backups={kind: _backup_summary(meta) for kind, meta in backups.items()},
        keys=first.get("keys"),
    )
    if isinstance(ret, dict) and ret.get("prune_error"):
        entry["prune_error"] = ret["prune_error"]
    return entry


def _with_backup(nodes, kind):
    return [node for node in nodes.values() if node.get("status") == "ok" and kind in node.get("backups", {})]


def _assess(mode, nodes, types):
    """``(status, reason)`` of a set: ``complete`` when, for every type taken, the masters'
    backups cover all 16384 slots (cluster) or the node that was master has one (Sentinel);
    else ``partial`` and why (reason None when complete)."""
    reasons = []
    failed = sorted(f"{node['minion']}: {node.get('error')}" for node in nodes.values() if node.get("status") != "ok")
    for kind in types:
        backed = _with_backup(nodes, kind)
        if mode == "cluster":
            covered = [r for node in backed if node.get("replication_role") == "master" for r in node.get("slots", [])]
            gap = _missing_slots(covered)
            if gap:
                reasons.append(f"{kind}: slots {_format_ranges(gap)} are in no master's backup")
        else:
            masters = [node["minion"] for node in backed if node.get("replication_role") == "master"]
            if not masters:
                reasons.append(f"{kind}: no backup of the master (the node whose live role is master)")
            elif len(masters) > 1:
                reasons.append(f"{kind}: several nodes were master at once ({', '.join(sorted(masters))})")
    if not any(node.get("status") == "ok" for node in nodes.values()):
        reasons.insert(0, "no node's backup succeeded")
    if reasons and failed:
        reasons.append("failed: " + "; ".join(failed))
    if reasons:
        return "partial", "; ".join(reasons)
    return "complete", None


def _spread(nodes, types):
    """How far apart the nodes' snapshots are: ``{"seconds": worst, type: {first, last,
    seconds}}`` (None when fewer than one snapshot)."""
    result, worst = {}, None
    for kind in types:
        times = sorted(_snapshot_time(node["backups"][kind]) for node in _with_backup(nodes, kind)
                       if _snapshot_time(node["backups"][kind]))
        if not times:
            continue
        seconds = (times[-1] - times[0]).total_seconds()
        result[kind] = {"first": times[0].isoformat(), "last": times[-1].isoformat(), "seconds": seconds}
        worst = seconds if worst is None else max(worst, seconds)
    result["seconds"] = worst
    return result


def _build_manifest(set_id, mode, kinds, nodes, started, finished, deployment_file=None, options=None):
    """The set's manifest (what ``redis_backup.list``/``restore`` read back)."""
    status, reason = _assess(mode, nodes, kinds)
    timing = _spread(nodes, kinds)
    manifest = {
        "format": MANIFEST_FORMAT,
        "set_id": set_id,
        "time": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "mode": mode,
        "types": list(kinds),
        "deployment_file": deployment_file,
        "status": status,
        "spread_seconds": timing["seconds"],
        "spread": timing,
        "nodes": nodes,
    }
    if reason:
        manifest["reason"] = reason
    manifest.update(options or {})
    return manifest


# ---------------------------------------------------------------- pure helpers: restore plan


def _live_role(status):
    """``master``/``replica``/None from ``redis_cluster.status``."""
    if not isinstance(status, dict) or not status.get("ping"):
        return None
    if status.get("cluster_enabled"):
        return status.get("cluster_role")
    return "replica" if status.get("replication_role") == "slave" else "master"


def _copy_path(copy_to, minion, kind, name):
    return os.path.join(copy_to, minion, kind, name) if copy_to and name else None


def _candidates(entry, kind, copy_to, local=True):
    """Where a node's backup may be: on its own minion, then in copy_to."""
    backup = entry["backups"][kind]
    paths = []
    if local and backup.get("path"):
        paths.append({"path": backup["path"], "source": f"{entry['minion']}'s backup directory"})
    for path in (backup.get("copied_to"), _copy_path(copy_to, entry["minion"], kind, backup.get("name"))):
        if path and path not in [p["path"] for p in paths]:
            paths.append({"path": path, "source": "copy_to"})
    return paths


def _choose_type(manifest, wanted=None):
    """The backup type a restore uses: ``wanted``, else RDB when the set has it, else AOF."""
    kinds = manifest.get("types") or []
    if wanted:
        return wanted if wanted in kinds else None
    for kind in TYPES:
        if kind in kinds:
            return kind
    return None


def _restore_plan(manifest, live, sentinel_minions=(), copy_to=None, kind=None):
    """What restoring ``manifest`` onto the deployment as it runs now (``live``: ``{minion:
    redis_cluster.status}``) takes, without side effects:

    ``{"type", "restore": [{minion, from, backup_name, slots, keys, candidates: [{path,
    source}]}], "stop": [replica minions], "sentinels": [...], "problems": [...],
    "warnings": [...]}``. Any problem means the restore must not start.

    Cluster: each master's backup goes to the node that serves exactly its slots now (its
    own node unless a failover happened; another node reads it from copy_to). Sentinel:
    the master's backup goes to the current master. Every other running node is a replica:
    it is stopped before and started after, so that none resyncs from a master that is
    still empty and no failover promotes one.
    """
    problems, warnings = [], []
    mode, nodes = manifest.get("mode"), manifest.get("nodes") or {}
    wanted, kind = kind, _choose_type(manifest, kind)
    if kind is None:
        problems.append(f"the set holds no {wanted or 'rdb or aof'} backups (it holds "
                        f"{'+'.join(manifest.get('types') or []) or 'none'})")
        return {"type": None, "restore": [], "stop": [], "sentinels": list(sentinel_minions), "down": [],
                "problems": problems, "warnings": warnings}
    if manifest.get("status") != "complete":
        problems.append(f"set {manifest.get('set_id')} is partial ({manifest.get('reason')}): restoring it would "
                        "leave part of the data at another time")
    down = sorted(minion for minion, status in live.items() if _live_role(status) is None)
    roles = {minion: _live_role(status) for minion, status in live.items()}
    targets = {}
    if mode == "cluster":
        for entry in _with_backup(nodes, kind):
            if entry.get("replication_role") != "master" or not entry.get("slots"):
                continue
            slots = _merge_ranges(entry["slots"])
            owners = [m for m, status in live.items()
                      if roles[m] == "master" and _merge_ranges(status.get("slots") or []) == slots]
            if not owners:
                partly = sorted(m for m, status in live.items() if roles[m] == "master" and any(
                    a <= d and c <= b for a, b in slots for c, d in _merge_ranges(status.get("slots") or [])))
                detail = (f"now served by {', '.join(partly)} (resharded since the set?)" if partly
                          else "served by no running master now")
                problems.append(f"slots {_format_ranges(slots)} (backed up on {entry['minion']}) are {detail}: a set "
                                "restores onto the slot layout it was taken with")
                continue
            target = owners[0]
            if target in targets:
                problems.append(f"{target} would receive two backups")
                continue
            candidates = _candidates(entry, kind, copy_to, local=target == entry["minion"])
            if target != entry["minion"]:
                note = (f"slots {_format_ranges(slots)} moved from {entry['minion']} to {target} since the set "
                        "(failover)")
                if not candidates:
                    problems.append(f"{note}: the backup is on {entry['minion']} only; make {entry['minion']} master "
                                    f"again (CLUSTER FAILOVER on it) or set cache.redis.backup.copy_to")
                    continue
                warnings.append(f"{note}: {target} restores it from copy_to")
            targets[target] = _item(target, entry, kind, slots, candidates)
    else:
        masters = sorted(m for m, role in roles.items() if role == "master")
        source = [entry for entry in _with_backup(nodes, kind) if entry.get("replication_role") == "master"]
        if len(masters) != 1:
            problems.append(f"expected one running master, found {len(masters)}"
                            + (f" ({', '.join(masters)})" if masters else "") + ": let Sentinel settle first")
        elif not source:
            problems.append("the set holds no backup of the master")
        else:
            target, entry = masters[0], source[0]
            if target == entry["minion"]:
                targets[target] = _item(target, entry, kind, [], _candidates(entry, kind, copy_to))
            else:
                candidates = _candidates(entry, kind, copy_to, local=False)
                own = nodes.get(target)
                if own and own.get("status") == "ok" and kind in own.get("backups", {}):
                    candidates += [dict(c, source=c["source"] + f" ({target}'s own backup, taken as a replica)")
                                   for c in _candidates(own, kind, copy_to)]
                if not candidates:
                    problems.append(f"{target} is master now (failover since the set); the master's backup is on "
                                    f"{entry['minion']} only and {target} has none in the set: set "
                                    "cache.redis.backup.copy_to, or fail back to " + entry["minion"])
                else:
                    warnings.append(f"{target} is master now (failover since the set): it restores the set's master "
                                    "backup from copy_to, else its own backup of the set")
                    targets[target] = _item(target, entry, kind, [], candidates)
    for minion in down:
        if minion in targets:
            continue
        warnings.append(f"{minion} does not answer (Redis down or minion away): it is left alone; when it comes "
                        "back it must resync from its master")
    stop = sorted(m for m, role in roles.items() if role == "replica" and m not in targets)
    idle = sorted(m for m, role in roles.items() if role == "master" and m not in targets)
    if mode == "cluster" and idle:
        warnings.append(f"{', '.join(idle)}: master without a backup in the set (no slots then?): left running")
    return {"type": kind, "restore": [targets[m] for m in sorted(targets)], "stop": stop,
            "sentinels": sorted(sentinel_minions) if mode != "cluster" else [],
            "down": [m for m in down if m not in targets], "problems": problems, "warnings": warnings}


def _item(target, entry, kind, slots, candidates):
    backup = entry["backups"][kind]
    return {"minion": target, "from": entry["minion"], "backup_name": backup.get("name"), "slots": slots,
            "keys": backup.get("keys"), "keys_with_ttl": backup.get("keys_with_ttl"), "candidates": candidates}


def _restore_steps(plan, services):
    """The ordered actions of a forced restore (for display and the runner's loop):
    Sentinels stopped, replicas stopped, masters restored, replicas started, Sentinels
    started. ``services``: ``{minion: {"server": name, "sentinel": name}}``."""
    def service(minion, what):
        return services.get(minion, {}).get(what) or ("redis-server" if what == "server" else "redis-sentinel")

    steps = [("stop", m, service(m, "sentinel")) for m in plan["sentinels"]]
    steps += [("stop", m, service(m, "server")) for m in plan["stop"]]
    steps += [("restore", item["minion"], item["backup_name"]) for item in plan["restore"]]
    steps += [("start", m, service(m, "server")) for m in plan["stop"]]
    steps += [("start", m, service(m, "sentinel")) for m in plan["sentinels"]]
    return steps


def _verify_restore(mode, plan, live, reports=None):
    """``(problems, warnings)`` after a restore, from ``redis_cluster.status`` of every node
    (those that were down before it began are left out), merged with ``redis_backup.keyspace``
    where a node answered it (``keys`` then counts every database, and a replica says whether
    its link is up and in sync): every node answers, the cluster is ok, every restored master
    is still a master, every replica is back as a replica and in sync with its master.

    Key counts are not compared with the backup's: clients write as soon as a node answers,
    and each node's ``redis_backup.restore`` already compared what its server loaded at the
    start with the backup (``reports``: its returns). A restored master that holds no key at
    all when its backup held some is a problem (writes only add keys); fewer keys than the
    backup beyond those with a TTL is a warning."""
    problems, warnings = [], []
    reports = reports or {}
    down = set(plan.get("down") or [])
    for minion, status in sorted(live.items()):
        if minion in down:
            continue
        if not isinstance(status, dict) or not status.get("ping"):
            problems.append(f"{minion}: Redis does not answer ({(status or {}).get('error', 'no answer')})")
        elif mode == "cluster" and status.get("cluster_state") != "ok":
            problems.append(f"{minion}: cluster_state:{status.get('cluster_state')}")
    restored = {item["minion"]: item for item in plan["restore"]}
    for minion, item in restored.items():
        status = live.get(minion) or {}
        keys, expected = status.get("keys"), item.get("keys")
        if status.get("ping") and _live_role(status) != "master":
            problems.append(f"{minion}: restored but now {_live_role(status)}, not master")
        loaded = (reports.get(minion) or {}).get("loaded_keys")
        if keys is None or expected is None or not status.get("every_database"):
            continue  # redis_cluster.status counts database 0 only: nothing to tell from it
        with_ttl = int(item.get("keys_with_ttl") or 0)
        if expected > with_ttl and not keys:
            problems.append(f"{minion}: no key in any database, the backup holds {expected}")
        elif keys < expected - with_ttl:
            warnings.append(f"{minion}: {keys} keys (every database), the backup holds {expected} ({with_ttl} with a "
                            f"TTL){'' if loaded is None else f'; its server loaded {loaded} at the start'}")
    addresses = {status.get("address"): minion for minion, status in live.items() if isinstance(status, dict)}
    for minion in plan["stop"]:
        status = live.get(minion) or {}
        if not status.get("ping"):
            continue
        if _live_role(status) != "replica":
            problems.append(f"{minion}: came back as {_live_role(status)}, not as a replica")
            continue
        master = addresses.get(status.get("master")) if mode == "cluster" else next(iter(sorted(restored)), None)
        if "master_link_status" in status:  # from redis_backup.keyspace: what replication itself says
            if status["master_link_status"] != "up" or status.get("master_sync_in_progress"):
                problems.append(f"{minion}: not in sync with its master {master} yet (link "
                                f"{status['master_link_status']}"
                                f"{', full sync running' if status.get('master_sync_in_progress') else ''})")
            continue
        master_keys = (live.get(master) or {}).get("keys") if master else None
        if master_keys is not None and status.get("keys") != master_keys:
            problems.append(f"{minion}: {status.get('keys')} keys, its master {master} has {master_keys} "
                            "(still syncing?)")
    return problems, warnings


# ---------------------------------------------------------------- pure helpers: sets on disk and events


def _read_sets(root):
    """Every readable manifest under ``root``, newest first."""
    sets = []
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        if not SET_RE.match(name):
            continue
        try:
            with open(os.path.join(root, name, MANIFEST), encoding="utf-8") as handle:
                manifest = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("set_id") == name:
            sets.append(manifest)
    epoch = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
    sets.sort(key=lambda m: (_parse_time(m.get("time")) or epoch, _suffix(m["set_id"])), reverse=True)
    return sets


def _suffix(set_id):
    parts = set_id.split("_")
    return int(parts[3]) if len(parts) > 3 else 1


def _make_set_dir(root, now):
    """Create the set's directory under a new, unique id; return (id, path)."""
    os.makedirs(root, mode=0o750, exist_ok=True)
    base, suffix = _new_set_id(now), 1
    while True:
        set_id = base if suffix == 1 else f"{base}_{suffix}"
        path = os.path.join(root, set_id)
        try:
            os.mkdir(path, 0o750)
            return set_id, path
        except FileExistsError:
            suffix += 1


def _prune_sets(root, now, keep_min, just_made=None, default_days=7):
    """Retention of the set manifests on the master (``redis_backup_retention.decide``): a set
    goes when older than the retention it was taken with, unless it is the newest complete
    set, among the ``keep_min`` newest complete ones, or ``just_made``. A set directory
    without a manifest (a run that died) goes after a day. Returns the ids deleted."""
    entries = []
    for manifest in _read_sets(root):
        try:
            days = float(manifest.get("retention_days", default_days))
        except (TypeError, ValueError):
            days = default_days
        entries.append({"name": manifest["set_id"], "type": "set", "time": _parse_time(manifest.get("time")),
                        "days": days, "good": manifest.get("status") == "complete"})
    keep = [just_made] if just_made else []
    decide = globals().get("__utils__", {}).get("redis_backup_retention.decide")
    if decide is None:
        raise LookupError("the master lacks _utils/redis_backup_retention.py (salt-run saltutil.sync_utils)")
    deleted = []
    for entry, kept, _ in decide(entries, now, keep_min, keep):
        if not kept:
            shutil.rmtree(os.path.join(root, entry["name"]))
            deleted.append(entry["name"])
    listed = {entry["name"] for entry in entries}
    for name in os.listdir(root) if os.path.isdir(root) else []:
        path = os.path.join(root, name)
        if (SET_RE.match(name) and name not in listed and name != just_made and not os.path.islink(path)
                and os.path.isdir(path) and not os.path.lexists(os.path.join(path, MANIFEST))
                and time.time() - os.lstat(path).st_mtime > 86400):
            shutil.rmtree(path)
            deleted.append(name)
    return deleted


def _write_manifest(path, manifest):
    target = os.path.join(path, MANIFEST)
    tmp = target + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return target


def _human(size):
    size = float(size or 0)
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


def _event_line(tag, data):
    """One progress line for a ``redis/backup|restore/<minion>/<what>`` event, else None."""
    parts = tag.split("/")
    if len(parts) < 4 or parts[0] != "redis" or parts[1] not in ("backup", "restore"):
        return None
    kind, minion, what = parts[1], "/".join(parts[2:-1]), parts[-1]
    if kind == "backup":
        label = f"{data.get('type', '')} backup".strip()
        if what == "started":
            return f"{minion}: {label} started ({data.get('name')})"
        if what == "finished":
            return (f"{minion}: {label} finished: {data.get('name')}, {_human(data.get('size'))}, "
                    f"{data.get('keys')} keys, {data.get('duration_seconds')}s")
        if what == "failed":
            return f"{minion}: {label} FAILED: {data.get('error')}"
    else:
        if what == "started":
            return f"{minion}: restore of {data.get('backup')} started (Redis stopped)"
        if what == "finished":
            return f"{minion}: restore of {data.get('backup')} finished, {data.get('keys')} keys"
        if what == "failed":
            return f"{minion}: restore of {data.get('backup')} FAILED: {data.get('error')}"
    return None


def _event_payload(data):
    """An event's own data: the master wraps what a minion sends (``event.send``) in
    ``{"id", "tag", "data", "cmd": "_minion_event"}``."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and ("cmd" in data or "id" in data):
        return data["data"]
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- the master side


def _finish(result, ok):
    # salt-run exits with the returned "retcode".
    result["retcode"] = 0 if ok else 1
    __context__["retcode"] = result["retcode"]
    return result


def _progress(text):
    log.info("redis_backup: %s", text)
    event = globals().get("__jid_event__")
    if event is not None:
        event.fire_event({"message": text}, "progress")


def _sets_dir():
    return __opts__.get("redis_backup_sets_dir") or os.path.join(__opts__["cachedir"], "redis_backup_sets")


def _deployment():
    """``(shape, peers, sentinels)`` from ``redis_deployment.shape``: its Redis peers (each
    with its ``role``) and, in Sentinel mode, the controllers of its Sentinel hosts (else
    none). Each carries ``minion`` and ``minion_problem`` as shape resolved its controller
    with the ext_pillar's matcher: the accepted minion key that is it (``server1`` or
    ``server1.example.org``), or None and why."""
    shape = __salt__["redis_deployment.shape"]()
    controllers = {c["hostname"]: c for c in shape["controllers"]}

    def resolved(host):
        controller = controllers.get(host["hostname"]) or {}
        minion = controller.get("minion")
        problem = None if minion else (controller.get("minion_problem")
                                       or f"{host['hostname']}: redis_deployment.shape gave it no minion")
        return dict(host, minion=minion, minion_problem=problem)

    peers = [dict(resolved(peer), role=shape["roles"].get(peer["hostname"])) for peer in shape["peers"]]
    hosts = ((shape.get("sentinel") or {}).get("hosts") or []) if shape["mode"] == "sentinel" else []
    sentinels = [resolved(controllers[h["hostname"]]) for h in hosts if h["hostname"] in controllers]
    return shape, peers, sentinels


def _answer(data):
    """(ok, return) from one minion's job return."""
    if not isinstance(data, dict) or data.get("failed"):
        return False, "the minion did not answer (down or not connected)"
    ret = data.get("ret", data.get("return"))
    if data.get("retcode", 0) != 0:
        return False, ret
    return True, ret


def _gather(client, jobs, timeout, watch=None):
    """Wait for the returns of published jobs (``[(jid, [minions])]``) while the minions
    run them (Salt asks them with saltutil.find_job), at most ``timeout`` seconds; calls
    ``watch()`` between polls. Returns ``{minion: (ok, return)}``."""
    answers = {}
    poll = min(max(int(__opts__.get("timeout", 5)), 5), 30)
    iterators = [(minions, client.get_iter_returns(jid, minions, timeout=poll, block=False, expect_minions=True))
                 for jid, minions in jobs]
    deadline = time.monotonic() + timeout
    while iterators and time.monotonic() < deadline:
        for entry in list(iterators):
            try:
                item = next(entry[1])
            except StopIteration:
                iterators.remove(entry)
                continue
            for minion, data in (item or {}).items():
                if minion in entry[0]:
                    answers[minion] = _answer(data)
        if watch:
            watch()
    for minions, _ in iterators:
        for minion in minions:
            answers.setdefault(minion, (False, f"no answer within {timeout:.0f}s (still running?)"))
    for jid, minions in jobs:
        for minion in minions:
            answers.setdefault(minion, (False, "the minion did not answer (down or not connected)"))
    return answers


def _publish(client, minions, function, kwarg, timeout):
    """Publish one job to ``minions``; (jid, [minions it went to]) or (None, why)."""
    pub = client.run_job(list(minions), function, kwarg=kwarg, tgt_type="list", timeout=timeout, listen=True)
    if not pub or not pub.get("jid"):
        return None, (f"could not publish {function} to {', '.join(minions)}: no accepted minion matched, or the "
                      "salt-master does not answer")
    return pub["jid"], list(minions)


def _call_many(client, minions, function, timeout, kwarg=None, watch=None):
    """One function with the same arguments on several minions, in parallel."""
    if not minions:
        return {}
    jid, sent = _publish(client, minions, function, kwarg or {}, timeout)
    if jid is None:
        return {minion: (False, sent) for minion in minions}
    return _gather(client, [(jid, sent)], timeout, watch)


def _call_each(client, calls, timeout, watch=None):
    """Several minions at once, each with its own function and arguments
    (``{minion: (function, kwargs)}``)."""
    jobs, answers = [], {}
    for minion, (function, kwargs) in calls.items():
        jid, sent = _publish(client, [minion], function, kwargs, timeout)
        if jid is None:
            answers[minion] = (False, sent)
        else:
            jobs.append((jid, sent))
    answers.update(_gather(client, jobs, timeout, watch) if jobs else {})
    return answers


class _Follower:
    """Progress lines from the nodes' ``redis/<kind>/<minion>/...`` events, as they come."""

    def __init__(self, kind, minions, since=None):
        self.kind, self.minions, self.since = kind, set(minions), since
        self.seen = []
        self.listener = salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=True)

    def __call__(self):
        while True:
            event = self.listener.get_event(wait=0.05, tag=f"redis/{self.kind}/", full=True)
            if not event:
                return
            data = _event_payload(event.get("data"))
            parts = event["tag"].split("/")
            minion = "/".join(parts[2:-1])
            if minion not in self.minions:
                continue
            stamp = _parse_time(data.get("timestamp"))
            if self.since and stamp and stamp < self.since - CLOCK_SLACK:
                continue  # another backup of that node (a scheduled one) that started before ours
            line = _event_line(event["tag"], data)
            if line:
                self.seen.append(event["tag"])
                _progress(line)

    def close(self):
        try:
            self.listener.destroy()
        except Exception:  # pylint: disable=broad-except
            pass


def _client():
    return salt.client.get_local_client(__opts__["conf_file"])


def _close_salt_clients_at_exit():
    """salt-run leaves the Salt clients it runs a runner in open; their finalizers would
    print "unclosed Runner ...; call destroy()" after our output. The redis_deployment
    runner keeps and destroys them when salt-run exits (its _close_salt_clients_at_exit,
    one implementation for our runners, reached through the globals of its loaded shape)."""
    try:
        close = __salt__["redis_deployment.shape"].__globals__["_close_salt_clients_at_exit"]
    except (NameError, KeyError, AttributeError, TypeError):
        return  # that runner is not loaded: the warnings are Salt's, nothing of ours to tidy
    close()


def run(type="rdb", compress=None, retention_days=None, timeout=3600):  # pylint: disable=redefined-builtin
    """
    Back up every Redis node of the deployment at once (``redis_backup.create`` on each,
    in parallel), print one line per node as its backup starts, finishes or fails, and
    write one manifest for the whole set on the master: which node (minion, hostname,
    node id, role, slots), which backup (name, path, files with their sha256, key count),
    how far apart the nodes' snapshots are, and the set's ``status``: ``complete`` when
    the masters' backups cover all 16384 slots (cluster) or the master's backup is in it
    (Sentinel), else ``partial`` with the ``reason``.

    type
        ``rdb`` (default), ``aof`` or ``both``.
    compress
        ``gzip``, ``zstd`` or ``none``; default ``cache.redis.backup.compress``.
    retention_days
        Kept this many days by the nodes' retention; default
        ``cache.redis.backup.retention_days``.
    timeout
        Seconds each node may take (passed to ``redis_backup.create``); the runner waits
        as long as the nodes still run the job, at most ``timeout`` + 10 minutes.

    With ``cache.redis.backup.copy_to`` set, each node also copies its backup to
    ``COPY_TO/<minion>/<type>/<name>`` (``redis_backup.create`` does it).

    Each node's backup records the set id, and the nodes are told the newest complete set
    so far: their retention keeps its members until a newer complete set exists. After the
    manifest is written, the set manifests get retention (``_prune_sets``): past the
    retention they were taken with they go, except the one just written and the
    ``cache.redis.backup.keep_min`` newest complete sets (``pruned_sets`` in the return).

    Returns ``{"set_id", "status", "reason" (partial only), "nodes": {minion: {...}},
    "spread_seconds", "manifest": path, "retcode"}``; exits non-zero unless complete.

    CLI Example:

    .. code-block:: bash

        salt-run redis_backup.run
        salt-run redis_backup.run type=both compress=zstd
    """
    _close_salt_clients_at_exit()
    if type not in ("rdb", "aof", "both"):
        raise SaltInvocationError(f"type must be rdb, aof or both, not {type!r}")
    kinds = ["rdb", "aof"] if type == "both" else [type]
    try:
        shape, peers, _ = _deployment()
    except SaltInvocationError as exc:  # the YAML is broken: say it, no usage text
        return _finish({"status": None, "comment": f"no backup taken: {exc}"}, False)
    started = datetime.datetime.now(datetime.timezone.utc)
    nodes, targets = {}, {}
    for peer in peers:
        if peer["minion"] is None:  # not backed up: the set says why (and is partial if it held slots)
            nodes[peer["minion_id"]] = _node_entry(peer, peer["minion_id"], False, peer["minion_problem"])
            continue
        targets[peer["minion"]] = peer
    set_id, path = _make_set_dir(_sets_dir(), started)  # no manifest yet: listed by nobody
    kwarg = {"type": type, "timeout": int(timeout), "set_id": set_id}
    newest_complete = next((m["set_id"] for m in _read_sets(_sets_dir()) if m.get("status") == "complete"), None)
    if newest_complete:
        kwarg["complete_set"] = newest_complete  # the nodes' retention keeps its members
    if compress is not None:
        kwarg["compress"] = compress
    if retention_days is not None:
        kwarg["retention_days"] = retention_days
    _progress(f"backing up {len(targets)} Redis node(s) of the {shape['mode']} deployment ({type}): "
              f"{', '.join(sorted(targets)) or 'none'}")
    for peer in peers:
        if peer["minion"] is None:
            _progress(f"{peer['hostname']}: NOT BACKED UP: {peer['minion_problem']}")
    answers, follower = {}, None
    if targets:
        client = _client()
        follower = _Follower("backup", targets, since=started)
        try:
            answers = _call_many(client, sorted(targets), "redis_backup.create", int(timeout) + 600, kwarg,
                                 watch=follower)
            follower()
        finally:
            follower.close()
            client.destroy()
    for minion, peer in targets.items():
        ok, ret = answers.get(minion, (False, "no answer"))
        nodes[minion] = _node_entry(peer, minion, ok, ret)
        if not ok and f"redis/backup/{minion}/failed" not in (follower.seen if follower else []):
            _progress(f"{minion}: FAILED: {ret}")
    finished = datetime.datetime.now(datetime.timezone.utc)
    backup_settings = shape["settings"].get("backup") or {}
    copy_to = backup_settings.get("copy_to")
    days = retention_days if retention_days is not None else backup_settings.get("retention_days", 7)
    manifest = _build_manifest(set_id, shape["mode"], kinds, nodes, started, finished, shape.get("path"),
                               {"copy_to": copy_to, "compress": compress, "requested_type": type,
                                "retention_days": days})
    manifest_path = _write_manifest(path, manifest)
    pruned_sets, prune_problem = [], None
    try:
        pruned_sets = _prune_sets(_sets_dir(), finished, backup_settings.get("keep_min", 2), set_id)
    except (OSError, LookupError, TypeError, ValueError) as exc:
        prune_problem = f"set manifests not pruned: {exc}"
        log.error("redis_backup: %s", prune_problem)
    _progress(f"set {set_id}: {manifest['status']}" + (f" ({manifest['reason']})" if manifest.get("reason") else "")
              + f"; manifest {manifest_path}")
    result = {"set_id": set_id, "status": manifest["status"], "mode": shape["mode"], "nodes": nodes,
              "spread_seconds": manifest["spread_seconds"], "manifest": manifest_path}
    if manifest.get("reason"):
        result["reason"] = manifest["reason"]
    copy_errors = [f"{m}: {b['copy_error']}" for m, n in nodes.items() for b in n.get("backups", {}).values()
                   if b.get("copy_error")]
    if prune_problem:
        copy_errors.append(prune_problem)
    if copy_errors:
        result["warnings"] = copy_errors
    if pruned_sets:
        result["pruned_sets"] = pruned_sets
    return _finish(result, manifest["status"] == "complete")


def list_():
    """
    The backup sets written by ``redis_backup.run``, newest first: set id, time, mode,
    type(s), status (complete/partial) and how many nodes it holds (``backups``, for
    scripts and ``--out=json``), and the same as one text line per set (``table``).

    CLI Example:

    .. code-block:: bash

        salt-run redis_backup.list
    """
    _close_salt_clients_at_exit()
    root = _sets_dir()
    sets = []
    for manifest in _read_sets(root):
        nodes = manifest.get("nodes") or {}
        sets.append({
            "set_id": manifest["set_id"], "time": manifest.get("time"), "mode": manifest.get("mode"),
            "types": manifest.get("types"), "status": manifest.get("status"),
            "nodes": sum(1 for node in nodes.values() if node.get("status") == "ok"), "nodes_total": len(nodes),
            "spread_seconds": manifest.get("spread_seconds"), "reason": manifest.get("reason"),
        })
    if not sets:
        return {"sets_dir": root, "sets": [], "table": [f"No backup sets in {root}"]}
    table = [f"{'Set':<24} {'Time':<26} {'Mode':<9} {'Type':<8} {'Status':<9} Nodes"]
    for item in sets:
        kinds = "+".join(item["types"] or [])
        table.append(f"{item['set_id']:<24} {str(item['time']):<26} {str(item['mode']):<9} {kinds:<8} "
                     f"{str(item['status']):<9} {item['nodes']}/{item['nodes_total']}")
    return {"sets_dir": root, "sets": sets, "table": table}


def _load_set(set_id):
    """(manifest, None) or (None, why)."""
    set_id = str(set_id or "").strip()
    if not SET_RE.match(set_id):
        return None, (f"name the set: set=set_YYYYmmdd_HHMMSS (see salt-run redis_backup.list), "
                      f"not {set_id!r}")
    for manifest in _read_sets(_sets_dir()):
        if manifest["set_id"] == set_id:
            return manifest, None
    return None, f"no backup set {set_id} in {_sets_dir()} (see salt-run redis_backup.list)"


def _services(client, minions, timeout=30):
    """``{minion: {"server": service, "sentinel": service}}`` from each minion's pillar
    (``redis:service``/``redis:sentinel_service``), as the execution module reads them."""
    services = {minion: {} for minion in minions}
    for what, key, default in (("server", "redis:service", "redis-server"),
                               ("sentinel", "redis:sentinel_service", "redis-sentinel")):
        # unmask: Salt 3008 masks every pillar value a minion returns; these two are names.
        answers = _call_many(client, sorted(minions), "pillar.get", timeout,
                             {"key": key, "default": default, "unmask": True})
        for minion, (ok, ret) in answers.items():
            services[minion][what] = ret if ok and isinstance(ret, str) and ret else default
    return services


def _availability(client, plan, timeout=30):
    """Pick, per target, the first candidate path whose backup is on that minion;
    problems for targets that have none."""
    problems, pending = [], {item["minion"]: list(item["candidates"]) for item in plan["restore"]}
    chosen = {}
    while pending:
        calls = {minion: ("file.file_exists", {"path": os.path.join(paths[0]["path"], METADATA)})
                 for minion, paths in pending.items()}
        answers = _call_each(client, calls, timeout)
        for minion in list(pending):
            ok, exists = answers.get(minion, (False, None))
            if ok and exists is True:
                chosen[minion] = pending.pop(minion)[0]
            else:
                pending[minion].pop(0)
                if not pending[minion]:
                    del pending[minion]
                    item = next(i for i in plan["restore"] if i["minion"] == minion)
                    tried = ", ".join(c["path"] for c in item["candidates"]) or "no path"
                    hint = "" if any(c["source"] == "copy_to" for c in item["candidates"]) else (
                        " and cache.redis.backup.copy_to is not set")
                    problems.append(f"{minion}: backup {item['backup_name']} is not on this minion (tried {tried})"
                                    f"{hint}" + ("" if ok else f": {exists}"))
    for item in plan["restore"]:
        if item["minion"] in chosen:
            item["backup"] = chosen[item["minion"]]["path"]
            item["source"] = chosen[item["minion"]]["source"]
    return problems


def restore(set_id=None, force=False, timeout=900, **kwargs):
    """
    Restore the whole deployment from one backup set (``set=ID``, see
    ``salt-run redis_backup.list``), then verify it.

    Without ``force=True`` nothing changes: it checks that the deployment still has the
    set's shape, finds each backup on the node that takes it (or in
    ``cache.redis.backup.copy_to`` for a node rebuilt bare), runs
    ``redis_backup.restore`` without force there (checksums and the Redis checker on the
    unpacked data) and says what would be restored where and what would be stopped.
    Any problem stops it, before anything changes; a Redis node or Sentinel host without
    a minion is one (it could not be stopped; ``salt-run redis_deployment.shape`` gives
    its ``minion_problem``).

    With ``force=True``, in this order, so that no replica resyncs from a master that is
    still empty and no failover promotes one: Sentinel mode: every Sentinel stopped; every
    replica's redis-server stopped; the masters restored in parallel
    (``redis_backup.restore force=True part_of_set=True``: crash-safe, safety copy of the
    current data, restore, start, what the server loaded compared with the backup); the
    replicas started (they resync from the restored masters); the Sentinels started; then
    verified (cluster ok, every restored master still a master and not empty over every
    database, every replica in sync with its master as replication reports it; key counts
    are not compared, clients may write). What was stopped is started again even when a
    restore fails.

    set
        The set's id.
    force
        Restore; without it, only report.
    type
        ``rdb`` or ``aof`` for a set of both (default rdb).
    timeout
        Seconds for each node's restore and for the verification.

    Returns ``{"set_id", "mode", "type", "force", "plan": {"restore": [...], "stop":
    [...], "sentinels": [...]}, "steps": [...], "nodes": {...}, "problems", "warnings",
    "comment", "retcode"}``.

    CLI Example:

    .. code-block:: bash

        salt-run redis_backup.restore set=set_20251027_120000
        salt-run redis_backup.restore set=set_20251027_120000 force=True
    """
    _close_salt_clients_at_exit()
    options = {k: v for k, v in kwargs.items() if not str(k).startswith("__")}
    set_id = set_id or options.pop("set", None)
    kind = options.pop("type", None)
    if options:
        raise SaltInvocationError(f"unknown argument(s): {', '.join(sorted(options))} (expected set, force, type, "
                                  "timeout)")
    manifest, why = _load_set(set_id)
    if manifest is None:
        failed = {"set_id": set_id, "force": bool(force), "problems": [why], "comment": f"nothing changed: {why}"}
        return _finish(failed, False)
    try:
        shape, peers, sentinel_hosts = _deployment()
    except SaltInvocationError as exc:
        return _finish({"set_id": manifest["set_id"], "force": bool(force), "problems": [str(exc)],
                        "comment": f"nothing changed: {exc}"}, False)
    result = {"set_id": manifest["set_id"], "mode": shape["mode"], "force": bool(force), "problems": [],
              "warnings": [], "steps": [], "nodes": {}}
    if shape["mode"] != manifest.get("mode"):
        result["problems"].append(f"the set was taken in {manifest.get('mode')} mode; the deployment runs in "
                                  f"{shape['mode']} mode now")
        result["comment"] = "nothing changed: " + "; ".join(result["problems"])
        return _finish(result, False)
    minions = {p["minion"]: p for p in peers if p["minion"]}
    sentinels = [h["minion"] for h in sentinel_hosts if h["minion"]]
    # A node the runner cannot reach could not be checked, nor stopped while the masters restore.
    result["problems"] += [f"Redis node {p['hostname']} has no minion, it could not be stopped: {p['minion_problem']}"
                           for p in peers if not p["minion"]]
    result["problems"] += [f"Sentinel host {h['hostname']} has no minion, its Sentinel could not be stopped: "
                           f"{h['minion_problem']}" for h in sentinel_hosts if not h["minion"]]
    copy_to = (shape["settings"].get("backup") or {}).get("copy_to") or manifest.get("copy_to")
    client = _client()
    try:
        _progress(f"set {manifest['set_id']} ({manifest.get('mode')}, {'+'.join(manifest.get('types') or [])}, "
                  f"{manifest.get('status')}): checking the deployment")
        live = {m: (ret if ok else {"ping": False, "error": str(ret)}) for m, (ok, ret) in
                _call_many(client, sorted(minions), "redis_cluster.status", 60).items()}
        plan = _restore_plan(manifest, live, sentinels, copy_to, kind)
        result.update(type=plan["type"], plan=plan)
        result["problems"] += plan["problems"]
        result["warnings"] += plan["warnings"]
        if not result["problems"]:
            result["problems"] += _availability(client, plan)
        if not result["problems"]:
            result["problems"] += _dry_run(client, plan, timeout, result)
        services = _services(client, set(plan["stop"]) | set(plan["sentinels"])) if not result["problems"] else {}
        result["steps"] = [f"{action} {what} on {minion}" for action, minion, what in _restore_steps(plan, services)]
        if result["problems"]:
            result["comment"] = "nothing changed: " + "; ".join(result["problems"])
            return _finish(result, False)
        if not force:
            result["comment"] = ("nothing changed (force=True restores): " + "; ".join(
                f"{item['minion']} <- {item['backup']} ({item['source']})" for item in plan["restore"])
                + (f"; stopped meanwhile: {', '.join(plan['stop'] + plan['sentinels'])}" if plan["stop"] or plan[
                    "sentinels"] else ""))
            return _finish(result, True)
        ok = _forced(client, plan, services, timeout, result)
        verified = _verify(client, shape["mode"], plan, sorted(minions), timeout, result) if ok or result.get(
            "restored") else False
        return _finish(result, ok and verified)
    finally:
        client.destroy()


def _dry_run(client, plan, timeout, result):
    calls = {item["minion"]: ("redis_backup.restore", {"backup": item["backup"], "force": False,
                                                       "part_of_set": True, "timeout": int(timeout)})
             for item in plan["restore"]}
    problems = []
    for minion, (ok, ret) in sorted(_call_each(client, calls, int(timeout) + 60).items()):
        item = next(i for i in plan["restore"] if i["minion"] == minion)
        # Salt gives a return with "result": None (checked, nothing changed) retcode 1.
        if not isinstance(ret, dict) or ret.get("result") is False or (not ok and ret.get("result") is not None):
            problems.append(f"{minion}: {ret}")
            continue
        result["nodes"][minion] = {"backup": item["backup"], "source": item["source"], "from": item["from"],
                                   "would_replace": ret.get("would_replace"), "data_dir": ret.get("data_dir")}
        _progress(f"{minion}: {item['backup']} checked ({item['source']}, {item.get('keys')} keys"
                  f"{', slots ' + _format_ranges(item['slots']) if item['slots'] else ''})")
    return problems


def _service_step(client, action, minions, services, what, result):
    """Stop or start a service on several minions; the minions where it failed."""
    by_service = {}
    for minion in minions:
        by_service.setdefault(services.get(minion, {}).get(what), []).append(minion)
    failed = []
    for service, group in sorted(by_service.items(), key=lambda x: str(x[0])):
        answers = _call_many(client, group, f"service.{action}", 120, {"name": service})
        for minion in group:
            ok, ret = answers.get(minion, (False, "no answer"))
            if ok and ret is not False:
                result["actions"].append(f"{minion}: {service} {PAST[action]}")
            else:
                failed.append(minion)
                result["problems"].append(f"{minion}: service.{action} {service} failed: {ret}")
        _progress(f"{action} {service} on {', '.join(group)}: "
                  + ("done" if not set(group) & set(failed) else f"FAILED on {', '.join(set(group) & set(failed))}"))
    return failed


def _forced(client, plan, services, timeout, result):
    """Stop, restore, start; always start again what was stopped. True when every
    restore succeeded."""
    result["actions"], result["restored"] = [], []
    stopped_sentinels, stopped = [], []
    ok = True
    try:
        failed = _service_step(client, "stop", plan["sentinels"], services, "sentinel", result)
        stopped_sentinels = list(plan["sentinels"])  # a failed stop may have stopped it all the same
        if failed:
            result["comment"] = "nothing restored: a Sentinel could not be stopped (a failover could happen)"
            return False
        failed = _service_step(client, "stop", plan["stop"], services, "server", result)
        stopped = list(plan["stop"])
        if failed:
            result["comment"] = "nothing restored: a replica could not be stopped (it could be promoted)"
            return False
        calls = {item["minion"]: ("redis_backup.restore", {"backup": item["backup"], "force": True,
                                                           "part_of_set": True, "timeout": int(timeout)})
                 for item in plan["restore"]}
        follower = _Follower("restore", calls)
        try:
            answers = _call_each(client, calls, int(timeout) + 120, watch=follower)
            follower()
        finally:
            follower.close()
        for minion, (done, ret) in sorted(answers.items()):
            node = result["nodes"].setdefault(minion, {})
            if done:
                result["restored"].append(minion)
                node.update({k: ret.get(k) for k in ("keys", "backup_keys", "loaded_keys", "safety_copy", "warnings",
                                                     "restored")})
                loaded = "" if ret.get("loaded_keys") is None else f" (its server loaded {ret['loaded_keys']})"
                result["actions"].append(f"{minion}: restored {ret.get('backup')}, {ret.get('keys')} keys{loaded}; "
                                         f"previous data in {ret.get('safety_copy')}")
            else:
                ok = False
                node["error"] = str(ret)
                result["problems"].append(f"{minion}: restore failed: {ret}")
        result["comment"] = (f"restored {len(result['restored'])} of {len(plan['restore'])} master(s) from set "
                             f"{result['set_id']}")
        return ok
    finally:
        if stopped:
            _service_step(client, "start", stopped, services, "server", result)
        if stopped_sentinels:
            _service_step(client, "start", stopped_sentinels, services, "sentinel", result)


def _merge_keyspace(live, answers):
    """Every database's keys and the replication link, from ``redis_backup.keyspace``, into the
    nodes' ``redis_cluster.status`` (whose ``keys`` is DBSIZE: database 0 only)."""
    for minion, (ok, ret) in answers.items():
        status = live.get(minion)
        if not ok or not isinstance(ret, dict) or not isinstance(status, dict) or not status.get("ping"):
            continue
        status.update(keys=ret.get("keys"), every_database=True)
        for key in ("master_link_status", "master_sync_in_progress"):
            if key in ret:
                status[key] = ret[key]


def _verify(client, mode, plan, minions, timeout, result):
    """Poll every node's status until the restored deployment is whole, at most ``timeout``."""
    deadline = time.monotonic() + min(float(timeout), 600)
    reports = {minion: node for minion, node in result["nodes"].items() if minion in result.get("restored", [])}
    while True:
        live = {m: (ret if ok else {"ping": False, "error": str(ret)}) for m, (ok, ret) in
                _call_many(client, minions, "redis_cluster.status", 60).items()}
        _merge_keyspace(live, _call_many(client, minions, "redis_backup.keyspace", 60))
        problems, warnings = _verify_restore(mode, plan, live, reports)
        if not problems or time.monotonic() >= deadline:
            break
        time.sleep(2)
    for minion, status in live.items():
        node = result["nodes"].setdefault(minion, {})
        node.update(role=_live_role(status), keys=status.get("keys") if isinstance(status, dict) else None)
        if mode == "cluster" and isinstance(status, dict):
            node["cluster_state"] = status.get("cluster_state")
    result["verify"] = {"ok": not problems, "problems": problems, "warnings": warnings}
    result["warnings"] += warnings
    if problems:
        result["problems"] += problems
        result["comment"] += "; verification failed: " + "; ".join(problems)
        _progress("verification FAILED: " + "; ".join(problems))
        return False
    result["comment"] += "; verified: " + ("cluster ok, " if mode == "cluster" else "") + ", ".join(
        f"{m} {result['nodes'][m].get('keys')} keys" for m in sorted(live))
    _progress("verified")
    return True
