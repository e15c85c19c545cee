"""
The health rules of ``redis_cluster.health`` (Salt's ``_utils``; modules reach them as
``__utils__["redis_health.<name>"]``): pure functions over plain data, no Redis and no Salt.

Each rule takes what the server, the cluster, the Sentinels or the backup list said
(``INFO`` as redis-py parses it, ``CONFIG GET`` values, ``CLUSTER NODES`` parsed by
``redis_cluster._parse_cluster_nodes``, ``redis_sentinel.status``, ``redis_backup.list``
entries, the previous check's counters) and returns check dicts
``{name, value, threshold, status, detail}``; ``summary`` turns them into
``{status, code, checks}`` (the worst status wins; Nagios codes 0/1/2).

The words and rules come from the original document's ``redis_health.sh`` and its
"Important Metrics" table (connected_clients < maxclients, used_memory < maxmemory,
hit rate > 0.8, recent saves, ``master_link_status:up`` on replicas, ``cluster_state:ok``).
"""

import datetime
import re

__virtualname__ = "redis_health"

OK, WARNING, CRITICAL = "OK", "WARNING", "CRITICAL"
CODES = {OK: 0, WARNING: 1, CRITICAL: 2}
TOTAL_SLOTS = 16384

# Pillar redis:monitoring (YAML cache.redis.monitoring): _pillar/redis_deployment.py gives the
# same defaults; these cover a pillar rendered before the key existed.
DEFAULTS = {
    "memory_warning_percent": 90,
    "memory_critical_percent": 98,
    "evictions_per_second": 1000,
    "clients_warning_percent": 90,
    "hit_rate_minimum": 0.8,
    "hit_rate_min_lookups": 1000,
    "replication_lag_seconds": 30,
    "slowlog_new_entries": 10,
    "socket_timeout_seconds": 2,
    "backup_grace_minutes": 60,
    "health_interval_minutes": 5,
    "critical_reminder_minutes": 60,
    "exporter": False,
    "group": "redis-monitoring",
}
# Seconds a save may come after its `save` rule is met before it counts as overdue
# (serverCron checks 10 times a second; a failed BGSAVE is retried after 5 s).
SAVE_SLACK_SECONDS = 60
CRON_MACRO_SECONDS = {"@yearly": 366 * 86400, "@annually": 366 * 86400, "@monthly": 31 * 86400,
                      "@weekly": 7 * 86400, "@daily": 86400, "@midnight": 86400, "@hourly": 3600}


def thresholds(monitoring=None):
    """Pillar ``redis:monitoring`` over the defaults (unknown keys kept, missing ones defaulted)."""
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in (monitoring or {}).items() if v is not None})
    return merged


def check(name, status, value=None, threshold=None, detail=""):
    return {"name": name, "value": value, "threshold": threshold, "status": status, "detail": detail}


def summary(checks):
    """``{status, code, checks}``: the worst status of ``checks`` (OK when there are none)."""
    worst = max((CODES.get(c["status"], 2) for c in checks), default=0)
    status = next(s for s, code in CODES.items() if code == worst)
    return {"status": status, "code": worst, "checks": list(checks)}


def _int(value, default=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _percent(part, whole):
    return round(100.0 * part / whole, 1) if whole else 0.0


# ---------------------------------------------------------------- reachability


FAILURE_WORDS = {
    "refused": "connection refused: no Redis listens there",
    "auth": "the deployment's password is refused",
    "loading": "Redis is loading its dataset into memory",
    "busy": "Redis is busy running a script or module command (BUSY)",
    "maxclients": "Redis refuses new clients: max number of clients reached",
    "timeout": "no answer within the socket timeout (server stopped, swapping or blocked)",
    "error": "error",
}


def unreachable(name, failure, error, timeout=None):
    """A server (or Sentinel) that did not answer: CRITICAL with the reason (``failure`` is
    ``redis_common.failure``'s word, ``error`` its one-line text)."""
    words = FAILURE_WORDS.get(failure, failure)
    detail = f"{words} ({error})" if failure != "error" else error
    if failure == "timeout" and timeout:
        detail = f"timeout: {words}, {timeout}s ({error})"
    elif failure != "error":
        detail = f"{failure}: {detail}"
    return check(name, CRITICAL, value=failure, detail=detail)


def ping(answered_in_ms):
    return check("ping", OK, value=round(answered_in_ms, 1), detail="PONG with the deployment's password")


# ---------------------------------------------------------------- memory and clients


def memory(info, limits):
    """used_memory against maxmemory. Under ``noeviction`` a full server refuses writes:
    WARNING at ``memory_warning_percent``, CRITICAL at ``memory_critical_percent``. Under an
    eviction policy a full cache is normal (see ``evictions``)."""
    used, maxmemory = _int(info.get("used_memory")), _int(info.get("maxmemory"))
    policy = info.get("maxmemory_policy", "noeviction")
    shown = f"{info.get('used_memory_human', used)} of {info.get('maxmemory_human', maxmemory)}"
    if not maxmemory:
        return check("memory", WARNING, value=used, threshold=0,
                     detail=f"maxmemory is 0 (unlimited): Redis may take all of the host's RAM ({shown} used)")
    percent = _percent(used, maxmemory)
    exact = 100.0 * used / maxmemory
    warn, crit = float(limits["memory_warning_percent"]), float(limits["memory_critical_percent"])
    if policy != "noeviction":
        return check("memory", OK, value=percent, threshold=None,
                     detail=f"{percent}% ({shown}); maxmemory-policy {policy} evicts keys when full, "
                            "so a full cache is normal")
    status = CRITICAL if exact >= crit else WARNING if exact >= warn else OK
    what = "writes are refused when it is full" if status != OK else "below the limits"
    return check("memory", status, value=percent, threshold=warn if status != CRITICAL else crit,
                 detail=f"{percent}% of maxmemory ({shown}), maxmemory-policy noeviction: {what} "
                        f"(WARNING at {warn:g}%, CRITICAL at {crit:g}%)")


def _rate(info, previous, key, now):
    """``(per second, delta, seconds)`` of the counter ``key`` since the previous check, or None
    when there is no previous check of this server process (its counters start at 0)."""
    if not previous or previous.get("run_id") != info.get("run_id") or key not in previous:
        return None
    seconds = max(0.001, now - float(previous.get("time", now)))
    delta = _int(info.get(key)) - _int(previous[key])
    if delta < 0:  # CONFIG RESETSTAT
        return None
    return delta / seconds, delta, seconds


def evictions(info, previous, now, limits):
    """Under an eviction policy: keys evicted per second since the previous check, WARNING
    above ``evictions_per_second`` (the working set does not fit). Not checked under
    ``noeviction`` (nothing is evicted; ``memory`` watches the limit)."""
    policy = info.get("maxmemory_policy", "noeviction")
    if policy == "noeviction":
        return None
    limit = float(limits["evictions_per_second"])
    rate = _rate(info, previous, "evicted_keys", now)
    if rate is None:
        return check("evictions", OK, value=None, threshold=limit,
                     detail=f"first check of this server process: {_int(info.get('evicted_keys'))} keys evicted "
                            "since it started; the rate is measured from the next check")
    per_second, delta, seconds = rate
    status = WARNING if per_second > limit else OK
    return check("evictions", status, value=round(per_second, 2), threshold=limit,
                 detail=f"{delta} keys evicted in {seconds:.0f}s ({per_second:.2f}/s, maxmemory-policy {policy})"
                        + ("; the working set does not fit in maxmemory" if status != OK else ""))


def clients(info, limits):
    """connected_clients against maxclients: WARNING at ``clients_warning_percent``."""
    connected, maximum = _int(info.get("connected_clients")), _int(info.get("maxclients"))
    warn = float(limits["clients_warning_percent"])
    percent = _percent(connected, maximum)
    status = WARNING if maximum and connected * 100 >= warn * maximum else OK
    return check("clients", status, value=connected, threshold=int(maximum * warn / 100) if maximum else None,
                 detail=f"{connected} of maxclients {maximum} ({percent}%, WARNING at {warn:g}%)")


def rejected_connections(info, previous, now):
    """``rejected_connections`` (maxclients reached) growing since the previous check: WARNING."""
    total = _int(info.get("rejected_connections"))
    rate = _rate(info, previous, "rejected_connections", now)
    if rate is None:
        return check("rejected_connections", OK, value=0, threshold=0,
                     detail=f"first check of this server process ({total} rejected since it started)")
    _, delta, seconds = rate
    status = WARNING if delta > 0 else OK
    return check("rejected_connections", status, value=delta, threshold=0,
                 detail=f"{delta} connections rejected (maxclients reached) in the last {seconds:.0f}s, "
                        f"{total} since the server started")


def hit_rate(info, limits):
    """keyspace_hits / (hits + misses) > ``hit_rate_minimum`` (the original's 0.8), judged only
    once there have been ``hit_rate_min_lookups`` lookups (an idle node does not warn)."""
    hits, misses = _int(info.get("keyspace_hits")), _int(info.get("keyspace_misses"))
    lookups = hits + misses
    minimum, floor = float(limits["hit_rate_minimum"]), int(limits["hit_rate_min_lookups"])
    if lookups < floor:
        return check("hit_rate", OK, value=None, threshold=minimum,
                     detail=f"{lookups} lookups since the server started, fewer than {floor}: not judged yet")
    rate = round(hits / lookups, 3)
    status = WARNING if rate < minimum else OK
    return check("hit_rate", status, value=rate, threshold=minimum,
                 detail=f"{hits} hits, {misses} misses ({rate:.3f}; WARNING under {minimum:g})")


# ---------------------------------------------------------------- persistence


def parse_save(value):
    """CONFIG GET save (``"900 1 300 10"``) as [(seconds, changes)]; [] for no schedule."""
    numbers = [int(word) for word in str(value or "").split() if word.isdigit()]
    return list(zip(numbers[::2], numbers[1::2]))


def rdb(info, save, now):
    """The last BGSAVE ok (CRITICAL when not: with stop-writes-on-bgsave-error Redis refuses
    writes), and changes not saved for longer than the ``save`` schedule allows (WARNING; an
    idle database never saves, so the bare age of the last save says nothing)."""
    checks = []
    status = info.get("rdb_last_bgsave_status", "ok")
    checks.append(check("rdb_last_bgsave", OK if status == "ok" else CRITICAL, value=status, threshold="ok",
                        detail="last background save ok" if status == "ok" else
                        "the last background save failed: see the Redis log (disk full? permissions?); with "
                        "stop-writes-on-bgsave-error Redis refuses writes until a save succeeds"))
    changes = _int(info.get("rdb_changes_since_last_save"))
    age = max(0, int(now - _int(info.get("rdb_last_save_time"), int(now))))
    rules = parse_save(save)
    name = "rdb_changes_since_last_save"
    if not rules:
        checks.append(check(name, OK, value=changes, detail=f"{changes} changes, {age}s since the last save; "
                            "no save schedule (save \"\"): RDB snapshots only on demand"))
        return checks
    if _int(info.get("rdb_bgsave_in_progress")):
        checks.append(check(name, OK, value=changes, detail=f"{changes} changes; a background save is running"))
        return checks
    due = [(seconds, needed) for seconds, needed in rules if changes >= needed and age > seconds + SAVE_SLACK_SECONDS]
    schedule = " ".join(f"{s} {n}" for s, n in rules)
    if due:
        seconds, needed = min(due)
        checks.append(check(name, WARNING, value=changes, threshold=needed,
                            detail=f"{changes} changes not saved for {age}s: the save schedule ({schedule}) asks for "
                                   f"a save after {seconds}s once {needed} keys changed"))
    else:
        checks.append(check(name, OK, value=changes,
                            detail=f"{changes} changes, {age}s since the last save (schedule {schedule})"))
    return checks


def aof(info):
    """AOF on: the last write ok (CRITICAL: Redis refuses writes after a failed AOF write) and
    the last rewrite ok (WARNING: the file keeps growing). Nothing when AOF is off."""
    if not _int(info.get("aof_enabled")):
        return []
    write = info.get("aof_last_write_status", "ok")
    rewrite = info.get("aof_last_bgrewrite_status", "ok")
    return [
        check("aof_last_write", OK if write == "ok" else CRITICAL, value=write, threshold="ok",
              detail="last AOF write ok" if write == "ok" else
              "the last AOF write failed: Redis refuses writes until it can write the AOF again (disk full?)"),
        check("aof_last_bgrewrite", OK if rewrite == "ok" else WARNING, value=rewrite, threshold="ok",
              detail="last AOF rewrite ok" if rewrite == "ok" else
              "the last AOF rewrite failed: the AOF keeps growing; see the Redis log"),
    ]


# ---------------------------------------------------------------- slow log


def slowlog(last_id, previous, run_id, limits, newest=()):
    """New slow-log entries since the previous check (``SLOWLOG GET``'s ids grow by one per
    entry for the life of a server process, whatever SLOWLOG RESET or the log's length did):
    WARNING above ``slowlog_new_entries``. ``newest``: the latest entries as (id, microseconds,
    command name), to name the slowest."""
    limit = int(limits["slowlog_new_entries"])
    if not previous or previous.get("run_id") != run_id or "slowlog_last_id" not in previous:
        return check("slowlog", OK, value=0, threshold=limit,
                     detail="first check of this server process: slow-log entries are counted from the next check")
    before = previous["slowlog_last_id"]
    new = max(0, (last_id if last_id is not None else -1) - (before if before is not None else -1))
    slowest = max((e for e in newest if before is None or e[0] > before), key=lambda e: e[1], default=None)
    named = f"; slowest {slowest[2]} {slowest[1] / 1000:.1f} ms" if slowest else ""
    status = WARNING if new > limit else OK
    return check("slowlog", status, value=new, threshold=limit,
                 detail=f"{new} new slow-log entries since the previous check (WARNING above {limit}){named}; "
                        "see SLOWLOG GET")


# ---------------------------------------------------------------- replication (Sentinel mode)


def replication(info, limits):
    """A replica: ``master_link_status`` up (CRITICAL when down, WARNING while a full sync runs)
    and ``master_last_io_seconds_ago`` within ``replication_lag_seconds``. A master: each
    replica's ``lag`` (seconds since its last acknowledgement) within the same limit."""
    limit = float(limits["replication_lag_seconds"])
    if info.get("role") == "slave":
        master = f"{info.get('master_host')}:{info.get('master_port')}"
        link = info.get("master_link_status")
        if link != "up":
            syncing = _int(info.get("master_sync_in_progress"))
            return [check("master_link", WARNING if syncing else CRITICAL, value=link, threshold="up",
                          detail=f"replica of {master}: master_link_status {link}"
                                 + (", a full sync is in progress" if syncing else ": not replicating"))]
        io_ago = _int(info.get("master_last_io_seconds_ago"), -1)
        return [
            check("master_link", OK, value=link, threshold="up", detail=f"replica of {master}: master_link_status up"),
            check("replication_lag", WARNING if io_ago > limit else OK, value=io_ago, threshold=limit,
                  detail=f"last contact with the master {io_ago}s ago (WARNING above {limit:g}s)"),
        ]
    replicas = [value for key, value in sorted(info.items())
                if re.match(r"^slave\d+$", key) and isinstance(value, dict)]
    if not replicas:
        # Sentinel mode always plans a replica: without one there is no copy to fail over to
        # (and under min-replicas-to-write the master refuses writes: INFO says so).
        refused = "min_slaves_good_slaves" in info  # shown only while min-replicas-to-write is on
        detail = "master without a connected replica: no copy of the data to fail over to"
        if refused:
            detail += "; min-replicas-to-write makes it refuse writes"
        return [check("replication_lag", CRITICAL if refused else WARNING, value=0, threshold=1, detail=detail)]
    late = [f"{r.get('ip')}:{r.get('port')} lag {r.get('lag')}s ({r.get('state')})" for r in replicas
            if _int(r.get("lag")) > limit or r.get("state") != "online"]
    worst = max(_int(r.get("lag")) for r in replicas)
    return [check("replication_lag", WARNING if late else OK, value=worst, threshold=limit,
                  detail=("replicas behind: " + ", ".join(late)) if late else
                  f"{len(replicas)} replicas online, lag at most {worst}s (WARNING above {limit:g}s)")]


def sentinels(status, me=None, local_role=None, my_address=None):
    """The Sentinels as ``redis_sentinel.status`` sees them: every Sentinel reachable and
    agreeing on one master (WARNING when one is not, CRITICAL when they have not decided),
    enough Sentinels for a majority (CRITICAL when fewer answer than a majority of all;
    WARNING when a host death could not fail over: no witness), this host's Sentinel
    reachable and monitoring the master (CRITICAL), and a local master that is not the
    Sentinels' master (CRITICAL: two masters)."""
    if status.get("error"):
        return [check("sentinels", CRITICAL, detail=status["error"])]
    checks = []
    expected, reachable = _int(status.get("expected")), _int(status.get("reachable"))
    entries = status.get("sentinels") or {}
    majority = expected // 2 + 1
    if me and me in entries:
        entry = entries[me]
        if "error" in entry:
            checks.append(check("sentinel_local", CRITICAL, value=entry["error"],
                                detail=f"this host's Sentinel ({entry.get('address')}): {entry['error']}"))
        else:
            down = {"s_down", "o_down"} & set(entry.get("flags") or [])
            checks.append(check("sentinel_local", WARNING if down else OK, value=entry.get("master"),
                                detail=f"this host's Sentinel ({entry.get('address')}) monitors "
                                       f"{status.get('master_name')} at {entry.get('master')}, knows "
                                       f"{entry.get('known_sentinels')} other Sentinels"
                                       + (f", sees the master down ({','.join(sorted(down))})" if down else "")))
    problems = [f"{host}: {entry['error']}" for host, entry in sorted(entries.items()) if "error" in entry]
    masters = sorted({entry["master"] for entry in entries.values() if "master" in entry})
    if not status.get("decided"):
        checks.append(check("sentinel_agreement", CRITICAL, value=status.get("agreeing"), threshold=majority,
                            detail="the Sentinels have not decided on a master: "
                                   + "; ".join(status.get("warnings") or problems or ["no answer"])))
    elif len(masters) > 1 or problems or reachable < expected:
        others = [f"name {', '.join(masters)}"] if len(masters) > 1 else []
        checks.append(check("sentinel_agreement", WARNING, value=status.get("agreeing"), threshold=expected,
                            detail=f"{status.get('agreeing')} of {expected} Sentinels name {status.get('master')} "
                                   f"({status.get('master_host')}); " + "; ".join(others + problems)))
    else:
        checks.append(check("sentinel_agreement", OK, value=status.get("agreeing"), threshold=expected,
                            detail=f"all {expected} Sentinels name {status.get('master')} "
                                   f"({status.get('master_host')})"))
    if reachable < majority:
        checks.append(check("sentinel_majority", CRITICAL, value=reachable, threshold=majority,
                            detail=f"{reachable} of {expected} Sentinels answer, a majority is {majority}: "
                                   "no failover can happen"))
    elif not status.get("host_death_fails_over", True):
        checks.append(check("sentinel_majority", WARNING, value=reachable, threshold=majority,
                            detail=f"{expected} Sentinels (quorum {status.get('quorum')}): a Redis host's death takes "
                                   "its Sentinel with it and the rest are no majority: no automatic failover. Add a "
                                   "witness (cache.redis.sentinel.witnesses)"))
    else:
        checks.append(check("sentinel_majority", OK, value=reachable, threshold=majority,
                            detail=f"{reachable} of {expected} Sentinels answer (majority {majority}, quorum "
                                   f"{status.get('quorum')}); a host death can fail over"))
    if local_role == "master" and my_address and status.get("decided") and status.get("master") != my_address:
        checks.append(check("sentinel_master", CRITICAL, value=my_address, threshold=status.get("master"),
                            detail=f"this server is a master but the Sentinels name {status.get('master')}: two "
                                   "masters (split brain); writes here will be lost when it rejoins"))
    return checks


def local_sentinel(address, master, quorum_reply):
    """The local Sentinel as ``/usr/local/bin/redis_health`` sees it through the monitoring
    user (``SENTINEL MASTER`` fields as a dict, ``SENTINEL CKQUORUM``'s reply or error text):
    the master not seen down (WARNING: subjectively, CRITICAL: objectively), a quorum and a
    majority for failover (CRITICAL), three Sentinels or more so a host death can fail over
    (WARNING)."""
    flags = set(str(master.get("flags", "")).split(","))
    known = _int(master.get("num-other-sentinels")) + 1
    at = f"{master.get('ip')}:{master.get('port')}"
    down = sorted({"s_down", "o_down"} & flags)
    status = CRITICAL if "o_down" in flags else WARNING if down else OK
    seen_down = f", sees the master down ({','.join(down)})" if down else ""
    checks = [check("sentinel_local", status, value=at,
                    detail=f"this host's Sentinel ({address}) monitors {master.get('name')} at {at}, knows "
                           f"{known - 1} other Sentinels{seen_down}")]
    usable = str(quorum_reply).startswith("OK")
    checks.append(check("sentinel_majority", OK if usable else CRITICAL, value=known, threshold=3,
                        detail=str(quorum_reply) if usable else f"no failover can happen: {quorum_reply}"))
    if usable and known < 3:
        checks[-1] = check("sentinel_majority", WARNING, value=known, threshold=3,
                           detail=f"{known} Sentinels: a Redis host's death takes its Sentinel with it and the rest "
                                  "are no majority: no automatic failover. Add a witness "
                                  "(cache.redis.sentinel.witnesses)")
    return checks


# ---------------------------------------------------------------- Redis Cluster


def cluster(view, replicas_per_master=0):
    """A node's view of its cluster (``redis_cluster`` ``_view``: ``state``, ``slots_assigned``,
    ``slots_ok``, ``open_slots``, ``failing``, ``nodes``): cluster_state ok and all 16384
    slots assigned and ok (CRITICAL), no failing node (WARNING: a copy lost), no open slot
    (WARNING: a migration in progress or cut short) and every slot-serving master with
    ``replicas_per_master`` live replicas (WARNING)."""
    checks = []
    state = view.get("state")
    checks.append(check("cluster_state", OK if state == "ok" else CRITICAL, value=state, threshold="ok",
                        detail=f"cluster_state:{state}"
                               + ("" if state == "ok" else ": the cluster refuses queries (slots not served)")))
    assigned, slots_ok = _int(view.get("slots_assigned")), _int(view.get("slots_ok"))
    checks.append(check("cluster_slots", OK if assigned == slots_ok == TOTAL_SLOTS else CRITICAL,
                        value=slots_ok, threshold=TOTAL_SLOTS,
                        detail=f"cluster_slots_assigned:{assigned}, cluster_slots_ok:{slots_ok} of {TOTAL_SLOTS}"))
    failing = list(view.get("failing") or [])
    checks.append(check("cluster_failing_nodes", WARNING if failing else OK, value=len(failing), threshold=0,
                        detail=("failing nodes: " + ", ".join(failing)) if failing else "no failing node"))
    open_slots = list(view.get("open_slots") or [])
    checks.append(check("cluster_open_slots", WARNING if open_slots else OK, value=len(open_slots), threshold=0,
                        detail=("open (migrating/importing) slots: " + " ".join(open_slots)
                                + "; a slot move in progress or cut short (redis-cli --cluster fix)")
                        if open_slots else "no open slot"))
    nodes = view.get("nodes") or []
    live = [n for n in nodes if not {"fail", "fail?", "noaddr", "handshake"} & set(n.get("flags") or [])]
    short = []
    for master in nodes:
        if "master" not in (master.get("flags") or []) or not master.get("slots"):
            continue
        count = sum(1 for n in live if n.get("master") == master["id"])
        if count < int(replicas_per_master):
            short.append(f"{master.get('address') or master['id'][:8]} has {count}")
    checks.append(check("cluster_replicas", WARNING if short else OK, value=len(short),
                        threshold=int(replicas_per_master),
                        detail=(f"masters below replicas_per_master {replicas_per_master}: " + ", ".join(short))
                        if short else f"every master has {replicas_per_master} or more live replicas"))
    return checks


# ---------------------------------------------------------------- backups


def backup_kinds(entry):
    """The backup types a schedule entry makes (``both``: rdb and aof); [] for prune entries."""
    if not isinstance(entry, dict) or entry.get("prune"):
        return []
    kind = entry.get("type")
    return ["rdb", "aof"] if kind == "both" else [kind] if kind in ("rdb", "aof") else []


def cron_period(expression):
    """A conservative upper bound of the time between two runs of a 5-field cron expression,
    in seconds (used when croniter is missing): the coarsest restricted field decides."""
    text = str(expression).strip().lower()
    if text.startswith("@"):
        return CRON_MACRO_SECONDS.get(text, 366 * 86400)
    fields = text.split()
    if len(fields) != 5:
        return 366 * 86400
    minute, hour, day, month, weekday = fields

    def step(field):
        found = re.match(r"^\*/(\d+)$", field)
        return int(found.group(1)) if found else None

    if month != "*":
        return 366 * 86400
    if day != "*":
        return 31 * 86400
    if weekday != "*":
        return 7 * 86400
    if hour != "*":
        return step(hour) * 3600 if step(hour) else 86400
    if minute != "*":
        return step(minute) * 60 if step(minute) else 3600
    return 60


def last_due(expression, now, croniter=None):
    """``(datetime, exact)``: when the cron expression was last due at or before ``now`` (an
    aware datetime in the minion's local time zone, as Salt's scheduler reads it) with
    croniter; without it, ``now`` minus ``cron_period`` (``exact`` False)."""
    if croniter is not None:
        try:
            return croniter(str(expression).strip(), now).get_prev(datetime.datetime), True
        except (ValueError, KeyError, TypeError):
            pass
    return now - datetime.timedelta(seconds=cron_period(expression)), False


def backups(plan, entries, now, first_seen, grace_minutes, croniter=None):
    """For each backup type the schedule makes (``plan``: the backup jobs Salt's scheduler runs
    on this minion, as ``[{cron, type}]``): the newest good (not damaged) backup must be no older than the type's
    last due time (``grace_minutes`` before ``now``, so a running job is not late); WARNING
    when it is older, CRITICAL when there is none although a scheduled run was due after
    ``first_seen`` (when this minion's health check first saw this schedule: a fresh
    deployment's first backup is not due yet)."""
    plan = list(plan or [])
    crons = {}
    for entry in plan:
        for kind in backup_kinds(entry):
            crons.setdefault(kind, []).append(str(entry.get("cron")))
    if not crons:
        return [check("backups", OK, detail="no backup job in Salt's scheduler on this minion (state "
                                            "redis_backup.scheduled installs them from cache.redis.backup.schedule)")]
    grace = datetime.timedelta(minutes=float(grace_minutes))
    checks = []
    for kind in sorted(crons):
        dues = [last_due(cron, now - grace, croniter) for cron in crons[kind]]
        due, exact = max(dues, key=lambda d: d[0])
        exact = all(e for _, e in dues)
        how = "" if exact else (" (croniter missing: each cron expression's longest period, "
                                f"{', '.join(crons[kind])}, is taken as the allowed age)")
        good = [e for e in entries if e.get("type") == kind and not e.get("damaged") and e.get("time")]
        newest = max(good, key=lambda e: e["time"], default=None)
        name = f"backup_{kind}"
        if newest is None:
            if first_seen is not None and due >= first_seen:
                checks.append(check(name, CRITICAL, value=None, threshold=due.isoformat(timespec="seconds"),
                                    detail=f"no good {kind} backup at all, though the schedule "
                                           f"({', '.join(crons[kind])}) was due at {due.isoformat(timespec='seconds')}"
                                           + how))
            else:
                checks.append(check(name, OK, value=None,
                                    detail=f"no {kind} backup yet; the schedule ({', '.join(crons[kind])}) has not "
                                           f"been due since this check first saw it{how}"))
            continue
        age = (now - newest["time"]).total_seconds()
        stamp = newest["time"].isoformat(timespec="seconds")
        if newest["time"] < due:
            checks.append(check(name, WARNING, value=int(age), threshold=due.isoformat(timespec="seconds"),
                                detail=f"newest good {kind} backup {newest.get('name')} is from {stamp}, before the "
                                       f"last scheduled run ({due.isoformat(timespec='seconds')}, "
                                       f"{', '.join(crons[kind])}, {float(grace_minutes):g} min grace){how}"))
        else:
            checks.append(check(name, OK, value=int(age), threshold=due.isoformat(timespec="seconds"),
                                detail=f"newest good {kind} backup {newest.get('name')} from {stamp}{how}"))
    return checks
