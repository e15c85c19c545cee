"""
The retention rules of the backups (``redis_backup.prune``/``create`` on the nodes, the set
manifests of ``salt-run redis_backup.run`` on the master), as plain functions of plain data.

A backup is *good* unless its checks found it damaged (a sha256 that differs, a file
missing, ``redis-check-rdb``/``redis-check-aof`` saying the data is bad): a verification
that could not finish (a timeout, a missing ``zstd``, the throwaway server killed) says
nothing about the backup and leaves it good. Whatever the clock says, ``decide`` keeps, of
each type: everything within its retention, the newest good one, the ``keep_min`` newest
good ones, the ones named in ``keep_names`` (the backup just made) and the members of the
sets in ``keep_sets``. A forward clock jump larger than the retention therefore still
leaves ``keep_min`` of each type.

Nothing here touches a file or talks to Redis or Salt: modules reach it as
``__utils__["redis_backup_retention.<name>"]``.
"""

import datetime
import re

__virtualname__ = "redis_backup_retention"

KEEP_MIN_DEFAULT = 2
SET_ID_RE = re.compile(r"^set_(\d{8}_\d{6})(?:_(\d+))?$")


def __virtual__():
    return __virtualname__


def is_good(meta):
    """Whether a backup (its metadata) may be restored: only recorded damage says no."""
    return not (meta or {}).get("damaged")


def verification(at, damage=None, transient=None):
    """The metadata fields a verification leaves: ``damage`` (what the checks found wrong
    with the data) makes the backup not-good for good; ``transient`` (why the check could
    not finish) only leaves it unverified; neither: verified."""
    if damage:
        return {"verified": False, "verified_at": at, "damaged": True, "damage": damage, "verify_error": damage,
                "verify_transient": False}
    if transient:
        return {"verified": False, "verified_at": at, "verify_error": transient, "verify_transient": True}
    return {"verified": True, "verified_at": at, "verify_error": None, "verify_transient": False}


def set_key(set_id):
    """Sort key of a set id (``set_YYYYmmdd_HHMMSS[_N]``): newer sorts higher; None for another text."""
    found = SET_ID_RE.match(str(set_id or ""))
    if not found:
        return None
    return (found.group(1), int(found.group(2) or 1))


def protected_sets(node_set_ids, newest_complete):
    """The set ids whose members a node's prune keeps: the newest complete set the master
    told it of, and the node's newest set when it is newer (its status was not known yet
    when the node last heard from the master). Sets in between are known not complete."""
    keep = set()
    if set_key(newest_complete):
        keep.add(newest_complete)
    known = [set_id for set_id in node_set_ids if set_key(set_id)]
    if known:
        newest = max(known, key=set_key)
        if not set_key(newest_complete) or set_key(newest) > set_key(newest_complete):
            keep.add(newest)
    return keep


def newer_set(first, second):
    """The newer of two set ids (either may be None)."""
    keys = [(set_key(item), item) for item in (first, second) if set_key(item)]
    return max(keys)[1] if keys else None


def decide(entries, now, keep_min=KEEP_MIN_DEFAULT, keep_names=(), keep_sets=()):
    """Which entries retention deletes. ``entries``: dicts with ``name``, ``type``,
    ``time`` (an aware datetime, or None when unreadable), ``days`` (the retention),
    ``good`` and optionally ``set_id``. Returns ``[(entry, keep, reason)]`` newest first.

    Kept, whatever ``now`` says: within its retention; the newest good of its type; among
    the ``keep_min`` newest good of its type; named in ``keep_names``; a member of a set in
    ``keep_sets``; no readable time. Everything else goes."""
    keep_min = max(0, int(keep_min))
    epoch = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
    ordered = sorted(entries, key=lambda e: (e.get("time") or epoch, e.get("name") or ""), reverse=True)
    good_seen = {}
    decisions = []
    for entry in ordered:
        kind = entry.get("type")
        rank = None
        if entry.get("good"):
            good_seen[kind] = good_seen.get(kind, 0) + 1
            rank = good_seen[kind]
        days = entry.get("days")
        moment = entry.get("time")
        if entry.get("name") in keep_names:
            decisions.append((entry, True, "the backup just made"))
        elif moment is None:
            decisions.append((entry, True, "no readable time"))
        elif (now - moment).total_seconds() / 86400 <= days:
            decisions.append((entry, True, f"within its retention ({days} days)"))
        elif rank == 1:
            decisions.append((entry, True, f"newest good {kind} (kept past its {days} days)"))
        elif rank is not None and rank <= keep_min:
            decisions.append((entry, True, f"among the {keep_min} newest good {kind} (keep_min, kept past its "
                                           f"{days} days)"))
        elif entry.get("set_id") and entry["set_id"] in keep_sets:
            decisions.append((entry, True, f"member of set {entry['set_id']}, the newest complete set "
                                           f"(kept past its {days} days)"))
        else:
            decisions.append((entry, False, f"older than its retention ({days} days)"
                                            + ("" if entry.get("good") else ", damaged")))
    return decisions
