"""
The pure parts of the coordinated backups of the whole deployment (``salt-run
redis_backup.run``/``list``/``restore``), as plain functions of plain data: slot ranges,
set status and time spread, the set manifest, the restore plan and its order, the checks
after a restore, the retention entries of the set manifests, the comparison of a node's
backup with the manifest's record of it, which members of a set are gone, and what the
runner does once the masters' restore jobs have answered (start the rest, or roll back).

Nothing here touches a file or talks to Redis or Salt: the runner reaches it as
``__utils__["redis_backup_sets.<name>"]`` and keeps the Salt calls.
"""

import datetime
import os

__virtualname__ = "redis_backup_sets"

TOTAL_SLOTS = 16384
TYPES = ("rdb", "aof")
MANIFEST_FORMAT = 1


def __virtual__():
    return __virtualname__

# ---------------------------------------------------------------- slots and times


def merge_ranges(ranges):
    """Slot ranges (``[[first, last], ...]``, any order, overlaps allowed) merged and sorted."""
    merged = []
    for first, last in sorted((int(a), int(b)) for a, b in ranges or []):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return merged


def missing_slots(ranges):
    """The slot ranges of 0-16383 that ``ranges`` do not cover."""
    missing, expected = [], 0
    for first, last in merge_ranges(ranges):
        if first > expected:
            missing.append([expected, min(first - 1, TOTAL_SLOTS - 1)])
        expected = max(expected, last + 1)
    if expected < TOTAL_SLOTS:
        missing.append([expected, TOTAL_SLOTS - 1])
    return missing


def format_ranges(ranges):
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in merge_ranges(ranges)) or "none"


def _parse_time(text):
    """``redis_backup_files.parse_time``'s rule (Salt gives one utils module no way to reach
    another; tests/unit/test_backup_files.py checks that the two agree)."""
    try:
        moment = datetime.datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def snapshot_time(meta):
    """When a backup's data was taken: the BGSAVE's LASTSAVE (RDB), else the backup's start."""
    return _parse_time(meta.get("last_save")) or _parse_time(meta.get("timestamp"))


def new_set_id(now):
    return f"set_{now:%Y%m%d_%H%M%S}"


# ---------------------------------------------------------------- one backup set


def node_backups(ret):
    """``{type: metadata}`` from what ``redis_backup.create`` returned (one type, or both)."""
    if not isinstance(ret, dict):
        return {}
    if ret.get("type") in TYPES and ret.get("name"):
        return {ret["type"]: ret}
    return {kind: ret[kind] for kind in TYPES if isinstance(ret.get(kind), dict)}


def backup_summary(meta):
    taken = snapshot_time(meta)
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
        # The member's server and the RDB format it wrote: which servers a restore may load it on.
        "server": meta.get("server"),
        "server_version": meta.get("server_version"),
        "rdb_format": meta.get("rdb_format"),
        "copied_to": meta.get("copied_to"),
        "copy_error": meta.get("copy_error"),
    }


def node_entry(peer, minion, ok, ret):
    """A node's entry in the manifest, from its peer record and ``redis_backup.create``'s answer."""
    entry = {"minion": minion, "hostname": peer.get("hostname"), "ip": peer.get("ip"), "port": peer.get("port"),
             "role": peer.get("role")}
    backups = node_backups(ret) if ok else {}
    if not ok or not backups:
        entry.update(status="failed", error=str(ret) if not ok else f"unexpected answer: {ret!r}"[:500], backups={})
        return entry
    first = next(iter(backups.values()))
    entry.update(
        status="ok",
        node_id=first.get("node_id"),
        replication_role=first.get("replication_role"),
        slots=merge_ranges(first.get("slots") or []),
        backups={kind: backup_summary(meta) for kind, meta in backups.items()},
        keys=first.get("keys"),
    )
    if isinstance(ret, dict) and ret.get("prune_error"):
        entry["prune_error"] = ret["prune_error"]
    return entry


def with_backup(nodes, kind):
    return [node for node in nodes.values() if node.get("status") == "ok" and kind in node.get("backups", {})]


def assess(mode, nodes, types):
    """``(status, reason)`` of a set: ``complete`` when, for every type taken, the masters'
    backups cover all 16384 slots (cluster) or the node that was master has one (Sentinel);
    else ``partial`` and why (reason None when complete)."""
    reasons = []
    failed = sorted(f"{node['minion']}: {node.get('error')}" for node in nodes.values() if node.get("status") != "ok")
    for kind in types:
        backed = with_backup(nodes, kind)
        if mode == "cluster":
            covered = [r for node in backed if node.get("replication_role") == "master" for r in node.get("slots", [])]
            gap = missing_slots(covered)
            if gap:
                reasons.append(f"{kind}: slots {format_ranges(gap)} are in no master's backup")
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


def spread(nodes, types):
    """How far apart the nodes' snapshots are: ``{"seconds": worst, type: {first, last,
    seconds}}`` (None when fewer than one snapshot)."""
    result, worst = {}, None
    for kind in types:
        times = sorted(snapshot_time(node["backups"][kind]) for node in with_backup(nodes, kind)
                       if snapshot_time(node["backups"][kind]))
        if not times:
            continue
        seconds = (times[-1] - times[0]).total_seconds()
        result[kind] = {"first": times[0].isoformat(), "last": times[-1].isoformat(), "seconds": seconds}
        worst = seconds if worst is None else max(worst, seconds)
    result["seconds"] = worst
    return result


def build_manifest(set_id, mode, kinds, nodes, started, finished, deployment_file=None, options=None):
    """The set's manifest (what ``redis_backup.list``/``restore`` read back)."""
    status, reason = assess(mode, nodes, kinds)
    timing = spread(nodes, kinds)
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


# ---------------------------------------------------------------- restore plan


def live_role(status):
    """``master``/``replica``/None from ``redis_cluster.status``."""
    if not isinstance(status, dict) or not status.get("ping"):
        return None
    if status.get("cluster_enabled"):
        return status.get("cluster_role")
    return "replica" if status.get("replication_role") == "slave" else "master"


def _copy_path(copy_to, minion, kind, name):
    return os.path.join(copy_to, minion, kind, name) if copy_to and name else None


def backup_candidates(entry, kind, copy_to, local=True):
    """Where a node's backup may be: on its own minion, then in copy_to (``of``: the node
    whose backup it is, whose record in the manifest its sums must match)."""
    backup = entry["backups"][kind]
    paths = []
    if local and backup.get("path"):
        paths.append({"path": backup["path"], "source": f"{entry['minion']}'s backup directory",
                      "of": entry["minion"]})
    for path in (backup.get("copied_to"), _copy_path(copy_to, entry["minion"], kind, backup.get("name"))):
        if path and path not in [p["path"] for p in paths]:
            paths.append({"path": path, "source": "copy_to", "of": entry["minion"]})
    return paths


def choose_type(manifest, wanted=None):
    """The backup type a restore uses: ``wanted``, else RDB when the set has it, else AOF."""
    kinds = manifest.get("types") or []
    if wanted:
        return wanted if wanted in kinds else None
    for kind in TYPES:
        if kind in kinds:
            return kind
    return None


def restore_plan(manifest, live, sentinel_minions=(), copy_to=None, kind=None):
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
    wanted, kind = kind, choose_type(manifest, kind)
    if kind is None:
        problems.append(f"the set holds no {wanted or 'rdb or aof'} backups (it holds "
                        f"{'+'.join(manifest.get('types') or []) or 'none'})")
        return {"type": None, "restore": [], "stop": [], "sentinels": list(sentinel_minions), "down": [],
                "problems": problems, "warnings": warnings}
    if manifest.get("status") != "complete":
        problems.append(f"set {manifest.get('set_id')} is partial ({manifest.get('reason')}): restoring it would "
                        "leave part of the data at another time")
    down = sorted(minion for minion, status in live.items() if live_role(status) is None)
    roles = {minion: live_role(status) for minion, status in live.items()}
    targets = {}
    if mode == "cluster":
        for entry in with_backup(nodes, kind):
            if entry.get("replication_role") != "master" or not entry.get("slots"):
                continue
            slots = merge_ranges(entry["slots"])
            owners = [m for m, status in live.items()
                      if roles[m] == "master" and merge_ranges(status.get("slots") or []) == slots]
            if not owners:
                partly = sorted(m for m, status in live.items() if roles[m] == "master" and any(
                    a <= d and c <= b for a, b in slots for c, d in merge_ranges(status.get("slots") or [])))
                detail = (f"now served by {', '.join(partly)} (resharded since the set?)" if partly
                          else "served by no running master now")
                problems.append(f"slots {format_ranges(slots)} (backed up on {entry['minion']}) are {detail}: a set "
                                "restores onto the slot layout it was taken with")
                continue
            target = owners[0]
            if target in targets:
                problems.append(f"{target} would receive two backups")
                continue
            candidates = backup_candidates(entry, kind, copy_to, local=target == entry["minion"])
            if target != entry["minion"]:
                note = (f"slots {format_ranges(slots)} moved from {entry['minion']} to {target} since the set "
                        "(failover)")
                if not candidates:
                    problems.append(f"{note}: the backup is on {entry['minion']} only; make {entry['minion']} master "
                                    f"again (CLUSTER FAILOVER on it) or set cache.redis.backup.copy_to")
                    continue
                warnings.append(f"{note}: {target} restores it from copy_to")
            targets[target] = _item(target, entry, kind, slots, candidates)
    else:
        masters = sorted(m for m, role in roles.items() if role == "master")
        source = [entry for entry in with_backup(nodes, kind) if entry.get("replication_role") == "master"]
        if len(masters) != 1:
            problems.append(f"expected one running master, found {len(masters)}"
                            + (f" ({', '.join(masters)})" if masters else "") + ": let Sentinel settle first")
        elif not source:
            problems.append("the set holds no backup of the master")
        else:
            target, entry = masters[0], source[0]
            if target == entry["minion"]:
                targets[target] = _item(target, entry, kind, [], backup_candidates(entry, kind, copy_to))
            else:
                candidates = backup_candidates(entry, kind, copy_to, local=False)
                own = nodes.get(target)
                if own and own.get("status") == "ok" and kind in own.get("backups", {}):
                    candidates += [dict(c, source=c["source"] + f" ({target}'s own backup, taken as a replica)")
                                   for c in backup_candidates(own, kind, copy_to)]
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


def restore_steps(plan, services):
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


def verify_restore(mode, plan, live, reports=None):
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
        if status.get("ping") and live_role(status) != "master":
            problems.append(f"{minion}: restored but now {live_role(status)}, not master")
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
        if live_role(status) != "replica":
            problems.append(f"{minion}: came back as {live_role(status)}, not as a replica")
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


# ---------------------------------------------------------------- set manifests on the master


def set_suffix(set_id):
    """The counter of a set id made in the same second as another (``set_..._2``), else 1."""
    parts = str(set_id).split("_")
    return int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 1


def set_order(manifest):
    """The sort key of a manifest, oldest first: its time, then its id's counter."""
    epoch = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
    return (_parse_time(manifest.get("time")) or epoch, set_suffix(manifest["set_id"]))


def set_retention_entries(manifests, default_days=7):
    """The set manifests as ``redis_backup_retention.decide`` takes them: each goes by the
    retention it was taken with; only a complete set counts as good (kept by keep_min)."""
    entries = []
    for manifest in manifests:
        try:
            days = float(manifest.get("retention_days", default_days))
        except (TypeError, ValueError):
            days = default_days
        entries.append({"name": manifest["set_id"], "type": "set", "time": _parse_time(manifest.get("time")),
                        "days": days, "good": manifest.get("status") == "complete"})
    return entries


# ---------------------------------------------------------------- a set's members as the nodes have them


def set_members(manifest):
    """``[(minion, type, backup record)]``: every backup the set holds (nodes whose backup succeeded)."""
    members = []
    for minion, node in sorted((manifest.get("nodes") or {}).items()):
        if node.get("status") != "ok":
            continue
        for kind, backup in sorted((node.get("backups") or {}).items()):
            if backup.get("name"):
                members.append((minion, kind, backup))
    return members


def member_check(manifest, present, copies=()):
    """Which members of a set are gone. ``present``: ``{minion: [backup names it lists]}``, or
    None for a minion that did not answer (``redis_backup.list``); ``copies``: ``"minion:name"``
    of members found in copy_to. Returns ``{"missing": ["minion:name"], "unchecked": [minions]}``."""
    missing, unchecked = [], set()
    for minion, _, backup in set_members(manifest):
        names = present.get(minion)
        if names is None:
            unchecked.add(minion)
        elif backup["name"] not in names and f"{minion}:{backup['name']}" not in copies:
            missing.append(f"{minion}:{backup['name']}")
    return {"missing": missing, "unchecked": sorted(unchecked)}


def mark_listed(listed, check):
    """A set's line of ``salt-run redis_backup.list`` with what ``member_check`` found: a set
    whose member backups are gone is ``incomplete`` (whatever it was when taken), and says which."""
    marked = dict(listed)
    if check.get("missing"):
        marked["status"] = "incomplete"
        marked["missing"] = list(check["missing"])
        marked["reason"] = "members missing: " + ", ".join(check["missing"])
    if check.get("unchecked"):
        marked["unchecked"] = list(check["unchecked"])
    return marked


def sum_mismatches(minion, recorded, found):
    """How a node's backup (``found``: its metadata as the node has it, a dict, or why it could
    not be read) differs from the set manifest's record of it (``recorded``: the manifest's
    ``nodes[minion]["backups"][type]``): one line per file whose sha256 differs, is missing or
    is not in the manifest. Empty when they agree."""
    name = recorded.get("name")
    if not isinstance(found, dict):
        return [f"{minion}: {name}: its metadata cannot be read ({found})"]
    problems = []
    if found.get("name") not in (None, name):
        problems.append(f"{minion}: {name}: the node's backup there is {found.get('name')}")
    files = {entry.get("name"): entry for entry in found.get("files") or [] if isinstance(entry, dict)}
    listed = [entry for entry in recorded.get("files") or [] if isinstance(entry, dict)]
    if not listed:
        problems.append(f"{minion}: {name}: the set manifest records no file sums for it")
    for entry in listed:
        ours = files.get(entry.get("name"))
        if ours is None:
            problems.append(f"{minion}: {name}: file {entry.get('name')} is in the set manifest, not in the node's "
                            "backup")
            continue
        for key in ("sha256", "raw_sha256"):
            if entry.get(key) and ours.get(key) != entry[key]:
                problems.append(f"{minion}: {name}: file {entry['name']} {key} {str(ours.get(key))[:16]}... on the "
                                f"node, {entry[key][:16]}... in the set manifest")
    for extra in sorted(set(files) - {entry.get("name") for entry in listed}):
        problems.append(f"{minion}: {name}: file {extra} is in the node's backup, not in the set manifest")
    return problems


# ---------------------------------------------------------------- the masters' restore jobs


def job_answer(data):
    """What became of one minion's job, from what Salt gathered for it: ``{"state", "ret",
    "error"}`` with ``state`` ``done`` (it returned, retcode 0, and a dict whose ``result`` is
    True), ``failed`` (it returned anything else), ``silent`` (Salt's ``{"failed": True}``: the
    minion stopped answering ``saltutil.find_job``, or never got the job) or ``running`` (None:
    the runner stopped waiting while the minion still ran it)."""
    if data is None:
        return {"state": "running", "ret": None, "error": "still running when the runner stopped waiting"}
    if not isinstance(data, dict) or data.get("failed"):
        why = data.get("error") if isinstance(data, dict) else None
        return {"state": "silent", "ret": None,
                "error": why or "the minion stopped answering (saltutil.find_job): down, or its job was killed"}
    ret = data.get("ret", data.get("return"))
    if data.get("retcode", 0) != 0 or not isinstance(ret, dict) or ret.get("result") is not True:
        return {"state": "failed", "ret": ret, "error": str(ret)}
    return {"state": "done", "ret": ret, "error": None}


def set_restore_decision(answers):
    """What the runner does once it stopped waiting for the masters' restores (``answers``:
    ``{minion: job_answer(...)}``). All done: start the replicas and Sentinels. Else the set
    failed: every master that did restore goes back to its safety copy (``rollback``, with
    the path), so that no master is left at the set's time while others are not; the others
    are ``failed`` (with why). The replicas and Sentinels start (``start``) only when no
    master still runs its restore: started meanwhile, they would fail over from, or resync
    from, a master that is still being replaced.

    Returns ``{"ok", "start", "done": [...], "failed": {minion: why}, "running": [...],
    "rollback": {minion: safety_copy}}``."""
    done = sorted(m for m, a in answers.items() if a["state"] == "done")
    running = sorted(m for m, a in answers.items() if a["state"] == "running")
    failed = {m: a["error"] for m, a in sorted(answers.items()) if a["state"] != "done"}
    ok = bool(answers) and not failed
    rollback = {} if ok else {m: (answers[m]["ret"] or {}).get("safety_copy") for m in done}
    return {"ok": ok, "start": not running, "done": done, "failed": failed, "running": running,
            "rollback": rollback}
