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

The runner keeps the Salt calls and the order of things; what to decide from their answers
(set status, slot coverage, time spread, manifest, restore plan, checks, whether a set's
members are still there, what follows the masters' restores) is plain functions of plain
data in ``_utils/redis_backup_sets.py`` (``__utils__["redis_backup_sets.<name>"]``), tested
without a master.
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

MANIFEST = "manifest.json"
SET_RE = re.compile(r"^set_\d{8}_\d{6}(?:_\d+)?$")
METADATA = "backup_metadata.json"
PAST = {"stop": "stopped", "start": "started"}
# Progress lines skip events of backups that started this long before the run (a node's
# scheduled backup running at the same time); minions' clocks may lag the master's a little.
CLOCK_SLACK = datetime.timedelta(seconds=60)


def __virtual__():
    if not HAS_SALT_CLIENT:
        return (False, "redis_backup runner: salt.client is not importable")
    return __virtualname__


# ---------------------------------------------------------------- sets on disk and events


def _parse_time(text):
    return __utils__["redis_backup_files.parse_time"](text)


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
    sets.sort(key=__utils__["redis_backup_sets.set_order"], reverse=True)
    return sets


def _make_set_dir(root, now):
    """Create the set's directory under a new, unique id; return (id, path)."""
    os.makedirs(root, mode=0o750, exist_ok=True)
    base, suffix = __utils__["redis_backup_sets.new_set_id"](now), 1
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
    entries = __utils__["redis_backup_sets.set_retention_entries"](_read_sets(root), default_days)
    keep = [just_made] if just_made else []
    deleted = []
    for entry, kept, _ in __utils__["redis_backup_retention.decide"](entries, now, keep_min, keep):
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
    """The set's manifest, written under a fresh temporary name, fsynced, then renamed."""
    target = os.path.join(path, MANIFEST)
    __utils__["redis_backup_files.write_json"](target, manifest)
    return target


def _human(size):
    return __utils__["redis_backup_files.human_size"](size)


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


def _wait_jobs(client, jobs, timeout, watch=None):
    """Wait for the returns of published jobs (``[(jid, [minions])]``) as long as the minions
    still run them: Salt asks a minion that has not returned with ``saltutil.find_job`` at
    each poll, and stops waiting for one that does not answer it (then ``{"failed": True}``).
    At most ``timeout`` seconds; calls ``watch()`` between polls. Returns ``{minion: what
    Salt gathered}``: ``{"ret", "retcode"}``, ``{"failed": True}``, or None for a minion that
    still ran the job when the time was up."""
    answers = {}
    poll = min(max(int(__opts__.get("timeout", 5)), 5), 30)
    iterators = [(minions, client.get_iter_returns(jid, minions, timeout=poll, block=False, expect_minions=True))
                 for jid, minions in jobs]
    deadline = time.monotonic() + timeout
    finished = set()
    while iterators and time.monotonic() < deadline:
        for entry in list(iterators):
            try:
                item = next(entry[1])
            except StopIteration:
                iterators.remove(entry)
                finished.update(entry[0])
                continue
            for minion, data in (item or {}).items():
                if minion in entry[0]:
                    answers[minion] = data
        if watch:
            watch()
    for jid, minions in jobs:
        for minion in minions:
            # An iterator that ended without a word of a minion: Salt gave up on it.
            answers.setdefault(minion, {"failed": True} if minion in finished else None)
    return answers


def _gather(client, jobs, timeout, watch=None):
    """``_wait_jobs``'s answers as ``{minion: (ok, return)}``."""
    answers = {}
    for minion, data in _wait_jobs(client, jobs, timeout, watch).items():
        answers[minion] = (_answer(data) if data is not None
                           else (False, f"no answer within {timeout:.0f}s (still running?)"))
    return answers


def _run_jobs(client, calls, timeout, watch=None):
    """Several minions at once, each with its own function and arguments (``{minion:
    (function, kwargs)}``), waited for until each job really ended (``_wait_jobs``), at most
    ``timeout`` seconds: ``{minion: what Salt gathered, None while still running}``."""
    jobs, answers = [], {}
    for minion, (function, kwargs) in calls.items():
        jid, sent = _publish(client, [minion], function, kwargs, timeout)
        if jid is None:
            answers[minion] = {"failed": True, "error": sent}
        else:
            jobs.append((jid, sent))
    answers.update(_wait_jobs(client, jobs, timeout, watch) if jobs else {})
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
            nodes[peer["minion_id"]] = __utils__["redis_backup_sets.node_entry"](peer, peer["minion_id"], False,
                                                                                 peer["minion_problem"])
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
        nodes[minion] = __utils__["redis_backup_sets.node_entry"](peer, minion, ok, ret)
        if not ok and f"redis/backup/{minion}/failed" not in (follower.seen if follower else []):
            _progress(f"{minion}: FAILED: {ret}")
    finished = datetime.datetime.now(datetime.timezone.utc)
    backup_settings = shape["settings"].get("backup") or {}
    copy_to = backup_settings.get("copy_to")
    days = retention_days if retention_days is not None else backup_settings.get("retention_days", 7)
    manifest = __utils__["redis_backup_sets.build_manifest"](
        set_id, shape["mode"], kinds, nodes, started, finished, shape.get("path"),
        {"copy_to": copy_to, "compress": compress, "requested_type": type, "retention_days": days})
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
    type(s), status and how many nodes it holds (``backups``, for scripts and
    ``--out=json``), and the same as one text line per set (``table``).

    ``status`` is what the set was when taken (``complete``/``partial``), unless member
    backups are gone since (pruned or deleted on their node, and not in copy_to): then
    ``incomplete``, with ``missing`` (``minion:backup``) and the ``reason``. Each node of a
    set is asked for its backups (``redis_backup.list``); a node that does not answer is
    listed in ``unchecked``.

    CLI Example:

    .. code-block:: bash

        salt-run redis_backup.list
    """
    _close_salt_clients_at_exit()
    root = _sets_dir()
    manifests = _read_sets(root)
    present, copies = _members_present(manifests)
    sets = []
    for manifest in manifests:
        nodes = manifest.get("nodes") or {}
        listed = {
            "set_id": manifest["set_id"], "time": manifest.get("time"), "mode": manifest.get("mode"),
            "types": manifest.get("types"), "status": manifest.get("status"),
            "nodes": sum(1 for node in nodes.values() if node.get("status") == "ok"), "nodes_total": len(nodes),
            "spread_seconds": manifest.get("spread_seconds"), "reason": manifest.get("reason"),
        }
        check = __utils__["redis_backup_sets.member_check"](manifest, present, copies)
        sets.append(__utils__["redis_backup_sets.mark_listed"](listed, check))
    if not sets:
        return {"sets_dir": root, "sets": [], "table": [f"No backup sets in {root}"]}
    table = [f"{'Set':<24} {'Time':<26} {'Mode':<9} {'Type':<8} {'Status':<10} Nodes"]
    for item in sets:
        kinds = "+".join(item["types"] or [])
        line = (f"{item['set_id']:<24} {str(item['time']):<26} {str(item['mode']):<9} {kinds:<8} "
                f"{str(item['status']):<10} {item['nodes']}/{item['nodes_total']}")
        if item.get("missing"):
            line += f"  members missing: {', '.join(item['missing'])}"
        if item.get("unchecked"):
            line += f"  (not checked: {', '.join(item['unchecked'])} did not answer)"
        table.append(line)
    return {"sets_dir": root, "sets": sets, "table": table}


def _members_present(manifests, timeout=30):
    """What the sets' nodes hold now: ``({minion: [backup names], or None when it did not
    answer}, {"minion:name" of members not on their node but in copy_to})``."""
    minions = sorted({minion for manifest in manifests
                      for minion, _, _ in __utils__["redis_backup_sets.set_members"](manifest)})
    if not minions:
        return {}, set()
    client = _client()
    try:
        present = {}
        for minion, (ok, ret) in _call_many(client, minions, "redis_backup.list", timeout).items():
            backups = ret.get("backups") if ok and isinstance(ret, dict) else None
            present[minion] = None if backups is None else [b.get("name") for b in backups if isinstance(b, dict)]
        copies, calls = set(), {}
        for manifest in manifests:
            for minion, _, backup in __utils__["redis_backup_sets.set_members"](manifest):
                names = present.get(minion)
                if names is not None and backup["name"] not in names and backup.get("copied_to"):
                    calls.setdefault(minion, []).append(backup)
        while calls:  # one file_exists per minion and round: _call_each takes one call per minion
            round_calls = {m: ("file.file_exists", {"path": os.path.join(b[0]["copied_to"], METADATA)})
                           for m, b in calls.items()}
            for minion, (ok, exists) in _call_each(client, round_calls, timeout).items():
                backup = calls[minion].pop(0)
                if ok and exists is True:
                    copies.add(f"{minion}:{backup['name']}")
            calls = {m: b for m, b in calls.items() if b}
        return present, copies
    finally:
        client.destroy()


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
            item["backup_of"] = chosen[item["minion"]].get("of", item["from"])
    return problems


def restore(set_id=None, force=False, timeout=900, **kwargs):
    """
    Restore the whole deployment from one backup set (``set=ID``, see
    ``salt-run redis_backup.list``), then verify it.

    Without ``force=True`` nothing changes: it checks that the deployment still has the
    set's shape, finds each backup on the node that takes it (or in
    ``cache.redis.backup.copy_to`` for a node rebuilt bare), runs
    ``redis_backup.restore`` without force there (checksums and the Redis checker on the
    unpacked data) and says what would be restored where and what would be stopped. Each
    backup's file sums, as its node's metadata holds them, must be those the set manifest
    recorded when the set was taken; a file that differs refuses the whole set.
    Any problem stops it, before anything changes; a Redis node or Sentinel host without
    a minion is one (it could not be stopped; ``salt-run redis_deployment.shape`` gives
    its ``minion_problem``).

    With ``force=True``, in this order, so that no replica resyncs from a master that is
    still empty and no failover promotes one: Sentinel mode: every Sentinel stopped; every
    replica's redis-server stopped; the masters restored in parallel
    (``redis_backup.restore force=True part_of_set=True``: crash-safe, safety copy of the
    current data, restore, start, what the server loaded compared with the backup), each
    waited for until its job really ended (Salt's ``saltutil.find_job`` says whether the
    minion still runs it; a minion that stops answering is a failed master); nothing else
    starts before every master has answered. All restored: the replicas started (they
    resync from the restored masters), the Sentinels started, then verified (cluster ok,
    every restored master still a master and not empty over every database, every replica
    in sync with its master as replication reports it; key counts are not compared,
    clients may write). One master failed: the set is all or nothing, so every master that
    did restore is put back to its safety copy (``redis_backup.undo_restore``), then the
    replicas and Sentinels start; ``rolled_back`` (and ``rollback_failed``) say which, and
    it exits non-zero. A master still restoring when ``timeout`` is up counts as failed, and
    its replicas and Sentinels are left stopped (``left_stopped``).

    set
        The set's id.
    force
        Restore; without it, only report.
    type
        ``rdb`` or ``aof`` for a set of both (default rdb).
    timeout
        Seconds for each node's restore steps, the bound of the wait for the masters'
        restore jobs (and for their rollback), and for the verification.

    Returns ``{"set_id", "mode", "type", "force", "plan": {"restore": [...], "stop":
    [...], "sentinels": [...]}, "steps": [...], "nodes": {...}, "problems", "warnings",
    "comment", "retcode"}``, after a failed forced restore also ``rolled_back`` ({minion:
    safety copy}), ``rollback_failed`` and ``left_stopped``.

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
        plan = __utils__["redis_backup_sets.restore_plan"](manifest, live, sentinels, copy_to, kind)
        result.update(type=plan["type"], plan=plan)
        result["problems"] += plan["problems"]
        result["warnings"] += plan["warnings"]
        if not result["problems"]:
            result["problems"] += _availability(client, plan)
        if not result["problems"]:
            result["problems"] += _sums(client, manifest, plan)
        if not result["problems"]:
            result["problems"] += _dry_run(client, plan, timeout, result)
        services = _services(client, set(plan["stop"]) | set(plan["sentinels"])) if not result["problems"] else {}
        steps = __utils__["redis_backup_sets.restore_steps"](plan, services)
        result["steps"] = [f"{action} {what} on {minion}" for action, minion, what in steps]
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
        verified = _verify(client, shape["mode"], plan, sorted(minions), timeout, result) if ok else False
        return _finish(result, ok and verified)
    finally:
        client.destroy()


def _sums(client, manifest, plan, timeout=30):
    """Each member's backup as its node has it (its metadata, read where the restore will read
    it) against the sums the set manifest recorded when the set was taken: a file replaced or
    rewritten since, even with metadata to match, refuses the whole set."""
    calls = {item["minion"]: ("file.read", {"path": os.path.join(item["backup"], METADATA)})
             for item in plan["restore"]}
    problems = []
    for minion, (ok, text) in sorted(_call_each(client, calls, timeout).items()):
        item = next(i for i in plan["restore"] if i["minion"] == minion)
        # After a Sentinel failover the new master may restore its own backup of the set.
        recorded = manifest["nodes"][item.get("backup_of", item["from"])]["backups"][plan["type"]]
        found = text if not ok else None
        if ok:
            try:
                found = json.loads(text)
            except (TypeError, ValueError) as exc:
                found = f"{item['backup']}/{METADATA} is not JSON: {exc}"
        problems += __utils__["redis_backup_sets.sum_mismatches"](minion, recorded, found)
    return problems


def _dry_run(client, plan, timeout, result):
    calls = {item["minion"]: ("redis_backup.restore", {"backup": item["backup"], "force": False,
                                                       "part_of_set": True, "timeout": int(timeout)})
             for item in plan["restore"]}
    problems, ranges = [], __utils__["redis_backup_sets.format_ranges"]
    for minion, (ok, ret) in sorted(_call_each(client, calls, int(timeout) + 60).items()):
        item = next(i for i in plan["restore"] if i["minion"] == minion)
        # Salt gives a return with "result": None (checked, nothing changed) retcode 1.
        if not isinstance(ret, dict) or ret.get("result") is False or (not ok and ret.get("result") is not None):
            problems.append(f"{minion}: {ret}")
            continue
        result["nodes"][minion] = {"backup": item["backup"], "source": item["source"], "from": item["from"],
                                   "would_replace": ret.get("would_replace"), "data_dir": ret.get("data_dir")}
        _progress(f"{minion}: {item['backup']} checked ({item['source']}, {item.get('keys')} keys"
                  f"{', slots ' + ranges(item['slots']) if item['slots'] else ''})")
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
    """Stop the Sentinels and replicas, restore the masters, wait until every master's restore
    job really ended, then: all restored, start the rest; one failed, put every master that did
    restore back to its safety copy first. True when every restore succeeded."""
    result["actions"], result["restored"] = [], []
    failed = _service_step(client, "stop", plan["sentinels"], services, "sentinel", result)
    if failed:  # a failed stop may have stopped it all the same
        result["comment"] = "nothing restored: a Sentinel could not be stopped (a failover could happen)"
        _service_step(client, "start", plan["sentinels"], services, "sentinel", result)
        return False
    failed = _service_step(client, "stop", plan["stop"], services, "server", result)
    if failed:
        result["comment"] = "nothing restored: a replica could not be stopped (it could be promoted)"
        _start_the_rest(client, plan, services, result)
        return False
    calls = {item["minion"]: ("redis_backup.restore", {"backup": item["backup"], "force": True,
                                                       "part_of_set": True, "timeout": int(timeout)})
             for item in plan["restore"]}
    answers = _job_answers(client, calls, timeout, "restore")
    decision = __utils__["redis_backup_sets.set_restore_decision"](answers)
    for minion in decision["done"]:
        ret = answers[minion]["ret"]
        result["restored"].append(minion)
        result["nodes"].setdefault(minion, {}).update(
            {k: ret.get(k) for k in ("keys", "backup_keys", "loaded_keys", "safety_copy", "warnings", "restored")})
        loaded = "" if ret.get("loaded_keys") is None else f" (its server loaded {ret['loaded_keys']})"
        result["actions"].append(f"{minion}: restored {ret.get('backup')}, {ret.get('keys')} keys{loaded}; "
                                 f"previous data in {ret.get('safety_copy')}")
    for minion, why in decision["failed"].items():
        result["nodes"].setdefault(minion, {})["error"] = why
        state = answers[minion]["state"]
        what = {"silent": "did not answer", "running": f"still running after {int(timeout)}s"}.get(state, "failed")
        result["problems"].append(f"{minion}: restore {what}: {why}")
    if decision["ok"]:
        result["comment"] = f"restored {len(decision['done'])} master(s) from set {result['set_id']}"
        _start_the_rest(client, plan, services, result)
        return True
    result["comment"] = ("set restore failed on " + ", ".join(sorted(decision["failed"])))
    if decision["rollback"]:
        _roll_back(client, decision["rollback"], timeout, result)
    if decision["start"]:
        _start_the_rest(client, plan, services, result)
    else:
        left = plan["stop"] + plan["sentinels"]
        result["left_stopped"] = left
        result["comment"] += (f"; {', '.join(decision['running'])} still restoring: "
                              + (f"{', '.join(left)} left stopped (started now, they would fail over from or "
                                 "resync from a master that is still being replaced); start them once "
                                 "salt MASTER redis_backup.restore_pending says it ended" if left else
                                 "nothing else to start"))
    return False


def _job_answers(client, calls, timeout, kind):
    """Run ``calls`` and wait for their real ends: ``{minion: job_answer}`` (progress from the
    nodes' ``redis/<kind>/...`` events meanwhile)."""
    follower = _Follower(kind, calls)
    try:
        raw = _run_jobs(client, calls, float(timeout), watch=follower)
        follower()
    except Exception as exc:  # pylint: disable=broad-except
        # Whether the minions still run them is unknown: count them as running, so that nothing
        # is started over a master that may still be being replaced.
        log.error("redis_backup: waiting for the %s jobs failed: %s", kind, exc)
        raw = {}
    finally:
        follower.close()
    return {minion: __utils__["redis_backup_sets.job_answer"](raw.get(minion)) for minion in calls}


def _roll_back(client, safety_copies, timeout, result):
    """Put each master's safety copy back (``redis_backup.undo_restore``), so that no master stays
    at the set's time while another could not get there."""
    result["rolled_back"], result["rollback_failed"] = {}, {}
    calls, missing = {}, []
    for minion, safety in sorted(safety_copies.items()):
        if safety:
            calls[minion] = ("redis_backup.undo_restore", {"safety_copy": safety, "part_of_set": True,
                                                           "timeout": int(timeout)})
        else:
            missing.append(minion)
    answers = _job_answers(client, calls, timeout, "restore") if calls else {}
    for minion in missing:
        answers[minion] = {"state": "failed", "ret": None, "error": "its restore named no safety copy"}
    for minion, answer in sorted(answers.items()):
        node = result["nodes"].setdefault(minion, {})
        if answer["state"] == "done":
            result["rolled_back"][minion] = safety_copies[minion]
            node["rolled_back"] = True
            result["actions"].append(f"{minion}: rolled back to its data from before the restore "
                                     f"({safety_copies[minion]})")
        else:
            result["rollback_failed"][minion] = answer["error"]
            node["rollback_error"] = answer["error"]
            result["problems"].append(f"{minion}: NOT rolled back, it holds the set's data: {answer['error']}")
    if result["rolled_back"]:
        result["comment"] += (f"; rolled back to their data from before the restore: "
                              f"{', '.join(sorted(result['rolled_back']))}")
    if result["rollback_failed"]:
        result["comment"] += (f"; NOT rolled back (they hold the set's data): "
                              f"{', '.join(sorted(result['rollback_failed']))}")
    _progress(result["comment"])


def _start_the_rest(client, plan, services, result):
    """The replicas, then the Sentinels, started again."""
    if plan["stop"]:
        _service_step(client, "start", plan["stop"], services, "server", result)
    if plan["sentinels"]:
        _service_step(client, "start", plan["sentinels"], services, "sentinel", result)


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
        problems, warnings = __utils__["redis_backup_sets.verify_restore"](mode, plan, live, reports)
        if not problems or time.monotonic() >= deadline:
            break
        time.sleep(2)
    for minion, status in live.items():
        node = result["nodes"].setdefault(minion, {})
        node.update(role=__utils__["redis_backup_sets.live_role"](status),
                    keys=status.get("keys") if isinstance(status, dict) else None)
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
