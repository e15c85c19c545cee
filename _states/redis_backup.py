"""
The Redis node's backup schedule, as jobs of the minion's own Salt scheduler.

Each entry of pillar ``redis:backup:schedule`` (YAML ``cache.redis.backup.schedule``)
becomes one scheduler job that calls ``redis_backup.create`` (or ``redis_backup.prune``)
at the times of its cron expression (the minion's local time):

.. code-block:: yaml

    cache:
      redis:
        backup:
          compress: gzip          # default of the entries that give none
          schedule:
            - {cron: "0 3 * * *", type: rdb, retention_days: 30}
            - {cron: "0 */6 * * *", type: aof}
            - {cron: "0 2 * * 0", type: both, compress: zstd, retention_days: 60}
            - {prune: true, cron: "30 4 * * *"}

``schedule`` absent: the original document's cron plan (daily RDB at 03:00 kept 30
days, AOF every 6 hours, ``both`` on Sundays at 02:00 kept 60 days, retention applied
daily at 04:30). ``schedule: []``: no job.

The jobs are named ``redis-backup-<type>-<n>`` (``n`` counts the entries of that type,
in order), persisted in the minion's ``minion.d/_schedule.conf`` and listed by
``salt '*' schedule.list``. The state adds, changes and removes only jobs of that prefix
that call ``redis_backup.*``; every other scheduler job is left alone. A minion without
a Redis server role (pillar ``redis:role``) gets no job (ours are removed from it).

Salt's scheduler evaluates cron expressions with the ``croniter`` Python module; the
salt-minion process must have found it when it started.
"""

import importlib
import logging
import re
import sys
import time

log = logging.getLogger(__name__)

__virtualname__ = "redis_backup"

PREFIX = "redis-backup-"
KEY = "cache.redis.backup.schedule"
TYPES = ("rdb", "aof", "both")
COMPRESSIONS = ("gzip", "zstd", "none")
DEFAULT_COMPRESS = "gzip"
DEFAULT_RETENTION_DAYS = 7
SERVER_ROLES = ("cluster-node", "master", "replica")
# The original document's cron plan, plus retention applied once a day.
DEFAULT_PLAN = (
    {"cron": "0 3 * * *", "type": "rdb", "retention_days": 30},
    {"cron": "0 */6 * * *", "type": "aof"},
    {"cron": "0 2 * * 0", "type": "both", "retention_days": 60},
    {"prune": True, "cron": "30 4 * * *"},
)
DEFAULT_PRUNE_CRON = "30 4 * * *"
BACKUP_KEYS = ("cron", "type", "compress", "retention_days")
PRUNE_KEYS = ("prune", "cron", "retention_days")
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names for lowest.. in order)
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, WEEKDAYS),
)
_ITEM = re.compile(r"^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?$")


def __virtual__():
    for function in ("schedule.list", "schedule.add", "schedule.modify", "schedule.delete"):
        if function not in __salt__:
            return (False, f"redis_backup state: Salt's {function} is not available")
    return __virtualname__


# ---------------------------------------------------------------- the plan (pure)


def _value(text, low, names):
    if text.isdigit():
        return int(text)
    if names and text in names:
        return names.index(text) + low
    return None


def _cron_problem(expression):
    """What is wrong with a 5-field cron expression, or None when it is valid.

    Accepted per field: ``*``, a number or (month, day of week) a three-letter name,
    ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists of those separated by commas;
    or a whole-expression macro such as ``@daily``.
    """
    if not isinstance(expression, str):
        return f'expected a cron expression as a string (e.g. "0 3 * * *"), got {expression!r}'
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() in CRON_MACROS:
            return None
        return f"expected one of {', '.join(CRON_MACROS)} or 5 fields, got {expression!r}"
    fields = text.split()
    if len(fields) != 5:
        return (f'expected 5 fields "minute hour day-of-month month day-of-week" (e.g. "0 3 * * *"), '
                f"got {len(fields)} in {expression!r}")
    for position, (field, (label, low, high, names)) in enumerate(zip(fields, CRON_FIELDS), 1):
        expected = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
        for item in field.lower().split(","):
            match = _ITEM.match(item)
            problem = None
            if not match:
                problem = "is not *, a value, a range a-b or a step */n"
            else:
                star, first, last, step = match.groups()
                values = [] if star else [_value(first, low, names)] + ([_value(last, low, names)] if last else [])
                if any(value is None or not low <= value <= high for value in values):
                    problem = f"is outside {expected}"
                elif len(values) == 2 and values[0] > values[1]:
                    problem = "is a range that ends before it starts"
                elif step is not None and not 1 <= int(step) <= high:
                    problem = f"has a step outside 1-{high}"
            if problem:
                return (f"field {position} ({label}) of {expression!r}: {item!r} {problem} "
                        f"(expected {expected}, '*', ranges a-b, lists a,b and steps */n)")
    return None


def _retention_problem(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"expected a whole number of days (0 or more), got {value!r}"
    return None


def _jobs_from_plan(plan, compress=None, retention_days=None, prefix=PREFIX):
    """The scheduler jobs a backup plan asks for: ``({job name: spec}, [errors])``.

    ``plan`` is the list of entries (None: the original document's plan). A spec holds
    the arguments of ``schedule.add``: ``function``, ``cron``, ``job_kwargs`` and
    ``maxrunning``. Each error names the entry's key (``<key>[i].cron``) and what was
    expected; with errors, no job is returned.
    """
    compress = compress or DEFAULT_COMPRESS
    retention_days = DEFAULT_RETENTION_DAYS if retention_days is None else retention_days
    errors = []
    if plan is None:
        plan = [dict(entry) for entry in DEFAULT_PLAN]
    if not isinstance(plan, (list, tuple)):
        return {}, [f"{KEY}: expected a list of entries like {{cron: \"0 3 * * *\", type: rdb}} "
                    f"(absent: the default plan, []: no job), got {plan!r}"]
    if compress not in COMPRESSIONS:
        errors.append(f"cache.redis.backup.compress: expected one of {', '.join(COMPRESSIONS)}, got {compress!r}")
    problem = _retention_problem(retention_days)
    if problem:
        errors.append(f"cache.redis.backup.retention_days: {problem}")
    jobs, counts = {}, {}
    for index, entry in enumerate(plan):
        where = f"{KEY}[{index}]"
        if not isinstance(entry, dict):
            errors.append(f"{where}: expected a mapping like {{cron: \"0 3 * * *\", type: rdb}} "
                          f"or {{prune: true}}, got {entry!r}")
            continue
        prune = entry.get("prune", False)
        if not isinstance(prune, bool):
            errors.append(f"{where}.prune: expected true or false, got {prune!r}")
            continue
        allowed = PRUNE_KEYS if prune else BACKUP_KEYS
        unknown = sorted(str(name) for name in entry if name not in allowed and not (name == "prune" and not prune))
        if unknown:
            errors.append(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                          f"(expected {', '.join(allowed)})")
        cron = entry.get("cron", DEFAULT_PRUNE_CRON if prune else None)
        problem = "expected a cron expression such as \"0 3 * * *\"" if cron is None else _cron_problem(cron)
        if problem:
            errors.append(f"{where}.cron: {problem}")
        job_kwargs = {}
        if not prune:
            kind = entry.get("type")
            if kind not in TYPES:
                errors.append(f"{where}.type: expected one of {', '.join(TYPES)}, got {kind!r}")
            entry_compress = entry.get("compress", compress)
            if entry_compress not in COMPRESSIONS:
                errors.append(f"{where}.compress: expected one of {', '.join(COMPRESSIONS)}, got {entry_compress!r}")
            job_kwargs = {"type": kind, "compress": entry_compress}
        else:
            kind = "prune"
        if "retention_days" in entry or not prune:
            days = entry.get("retention_days", retention_days)
            problem = _retention_problem(days)
            if problem:
                errors.append(f"{where}.retention_days: {problem}")
            job_kwargs["retention_days"] = days
        counts[kind] = counts.get(kind, 0) + 1
        jobs[f"{prefix}{kind}-{counts[kind]}"] = {
            "function": "redis_backup.prune" if prune else "redis_backup.create",
            "cron": cron.strip() if isinstance(cron, str) else cron,
            "job_kwargs": job_kwargs,
            "maxrunning": 1,
        }
    if errors:
        return {}, errors
    return jobs, []


def _ours(name, item, prefix=PREFIX):
    """Whether a scheduler job is one this state manages."""
    return (
        str(name).startswith(prefix)
        and isinstance(item, dict)
        and str(item.get("function", "")).startswith("redis_backup.")
    )


def _describe(item):
    """One line for a job: what it calls, with which arguments, when."""
    if not item:
        return None
    kwargs = item.get("kwargs") or item.get("job_kwargs") or {}
    order = {"type": 0, "compress": 1, "retention_days": 2}
    arguments = " ".join(f"{k}={kwargs[k]}" for k in sorted(kwargs, key=lambda k: (order.get(k, 3), k)))
    text = f"{item.get('function')}{' ' + arguments if arguments else ''} at cron {item.get('cron')!r}"
    if item.get("enabled") is False:
        text += " (disabled)"
    return text


def _plan_changes(current, desired, prefix=PREFIX):
    """``(add, modify, delete)``: job names, comparing the listed jobs (``{name: item}``)
    with the wanted ones (``{name: item as schedule.build_schedule_item makes it}``)."""
    add = sorted(name for name in desired if name not in current)
    modify = sorted(name for name in desired if name in current and _comparable(current[name]) != desired[name])
    delete = sorted(name for name, item in current.items() if name not in desired and _ours(name, item, prefix))
    return add, modify, delete


def _comparable(item):
    return {k: v for k, v in dict(item).items() if k != "saved"}


# ---------------------------------------------------------------- the state


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _croniter_missing():
    """Why cron jobs cannot run from this Python, or None."""
    importlib.invalidate_caches()  # installed by an earlier state of this run
    try:
        importlib.import_module("croniter")
    except ImportError as exc:
        return (f"the Python module croniter is missing on this minion ({sys.executable}: {exc}); Salt's "
                "scheduler needs it for cron expressions: install it (pip install croniter, or the "
                "python3-croniter package) and restart salt-minion")
    return None


def _listed(first_look=False):
    """``({name: item}, enabled)``: the scheduler jobs from the minion's configuration (jobs
    defined in pillar are not the state's to change) and whether the scheduler runs.
    ``first_look``: as this job's options hold them (``redis_node.scheduled_jobs``), not
    asked of the running salt-minion (``schedule.list``)."""
    if first_look and "redis_node.scheduled_jobs" in __salt__:
        listed = __salt__["redis_node.scheduled_jobs"]()
    else:
        listed = __salt__["schedule.list"](show_all=True, return_yaml=False, where="opts") or {}
    jobs = {name: item for name, item in listed.items() if isinstance(item, dict)}
    return jobs, listed.get("enabled", True) is not False


def _scheduler_view(names, wait):
    """What the running salt-minion's scheduler made of our jobs: ``{name: problem}`` for
    the jobs it refuses (``_error``, e.g. croniter missing in the salt-minion process), and
    the names it has not evaluated within ``wait`` seconds."""
    problems, pending = {}, list(names)
    deadline = time.monotonic() + wait
    while pending:
        still = []
        for name in pending:
            status = __salt__["schedule.job_status"](name) or {}
            if status.get("_error"):
                problems[name] = status["_error"]
            elif not status.get("_next_fire_time"):
                still.append(name)
        pending = still
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return problems, pending


def scheduled(name, schedule=None, compress=None, retention_days=None, prefix=PREFIX, wait=10):
    """
    Install the node's backup schedule in the minion's Salt scheduler (persisted in
    ``minion.d/_schedule.conf``): one job per entry, calling ``redis_backup.create`` with
    ``type``, ``compress`` and ``retention_days``, or ``redis_backup.prune``. Jobs of ours
    (``prefix``, calling ``redis_backup.*``) that the plan no longer has are removed;
    other jobs are never touched. Re-applied with the same plan: no change.

    name
        The state's ID; not used otherwise.
    schedule
        The list of entries. Default (None): pillar ``redis:backup:schedule``; when that
        is absent too, the original document's plan. ``[]``: no job. Entries:
        ``{cron: "0 3 * * *", type: rdb|aof|both, compress: gzip|zstd|none,
        retention_days: N}`` (``compress`` and ``retention_days`` default to pillar
        ``redis:backup:compress`` / ``retention_days``) and ``{prune: true, cron: ...,
        retention_days: N}`` (``cron`` defaults to daily at 04:30; without
        ``retention_days`` each backup keeps the retention it was taken with).
    compress, retention_days
        Defaults for the entries; default from pillar ``redis:backup``.
    prefix
        The names of the jobs this state manages.
    wait
        Seconds to wait, after a change, for the salt-minion's scheduler to compute each
        job's next run (a job it refuses, e.g. because croniter was missing when
        salt-minion started, fails the state).

    A bad entry fails the state before anything changes, naming the key
    (``cache.redis.backup.schedule[1].cron``) and what was expected. Under
    ``test=True`` nothing changes and the result says what would.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single redis_backup.scheduled redis-backup-schedule
        salt '*' schedule.list

    SLS Example:

    .. code-block:: yaml

        redis-backup-schedule:
          redis_backup.scheduled:
            - require:
              - pip: croniter-installed
    """
    ret = _ret(name)
    pillar = __pillar__.get("redis", {}) or {}
    backup = pillar.get("backup") or {}
    if pillar.get("error"):
        ret.update(result=False, comment=f"deployment pillar failed: {pillar['error']}")
        return ret
    if schedule is None:
        schedule = backup.get("schedule")
    role = pillar.get("role")
    plan = schedule
    if role is not None and role not in SERVER_ROLES:
        plan = []  # no Redis server here: no backup job, ours removed
    jobs, errors = _jobs_from_plan(
        plan, compress if compress is not None else backup.get("compress"),
        retention_days if retention_days is not None else backup.get("retention_days"), prefix)
    if errors:
        source = f" ({pillar['deployment_file']})" if pillar.get("deployment_file") else ""
        ret.update(result=False, comment=f"Backup schedule not changed{source}: " + "; ".join(errors))
        return ret
    if jobs:
        missing = _croniter_missing()
        if missing:
            ret.update(result=False, comment=f"Backup schedule not changed: {missing}")
            return ret
    desired = {job: dict(__salt__["schedule.build_schedule_item"](job, **spec)) for job, spec in jobs.items()}
    for job, item in desired.items():
        if item.get("result") is False:  # build_schedule_item's refusal
            ret.update(result=False, comment=f"Backup schedule not changed: job {job}: {item.get('comment')}")
            return ret
    # A converged schedule is seen in this job's options; anything else is decided on what
    # the running salt-minion answers.
    current, enabled = _listed(first_look=True)
    add, modify, delete = _plan_changes(current, desired, prefix)
    if add or modify or delete:
        current, enabled = _listed()
        add, modify, delete = _plan_changes(current, desired, prefix)
    changes = {}
    for job in add:
        changes[job] = {"old": None, "new": _describe(desired[job])}
    for job in modify:
        changes[job] = {"old": _describe(current[job]), "new": _describe(desired[job])}
    for job in delete:
        changes[job] = {"old": _describe(current[job]), "new": None}
    summary = _summary(add, modify, delete)
    if role is not None and role not in SERVER_ROLES:
        reason = f"this minion runs no Redis server (role {role}): no backup job"
    elif not jobs:
        reason = "the backup schedule is empty: no backup job"
    else:
        reason = f"{len(jobs)} backup job{'s' if len(jobs) != 1 else ''} ({', '.join(sorted(jobs))})"
    if not changes:
        ret["comment"] = f"Backup schedule in place: {reason}"
    elif __opts__.get("test"):
        ret.update(result=None, changes=changes, comment=f"Backup schedule would change ({summary}): {reason}")
        return ret
    else:
        failures = _apply(jobs, add, modify, delete)
        after, enabled = _listed()
        for job in desired:
            if _comparable(after.get(job, {})) != desired[job]:
                failures.append(f"{job} is not as wanted after the change: {_describe(after.get(job)) or 'missing'}")
        for job in delete:
            if job in after:
                failures.append(f"{job} is still scheduled after schedule.delete")
        if failures:
            ret.update(result=False, changes=changes,
                       comment=f"Backup schedule change failed ({summary}): {'; '.join(failures)}")
            return ret
        ret.update(changes=changes, comment=f"Backup schedule changed ({summary}): {reason}")
    if jobs and changes and not __opts__.get("test"):
        # Checked when the jobs change; a converged schedule costs a no-op apply nothing more.
        _check_scheduler(ret, sorted(jobs), enabled, wait)
    return ret


def _summary(add, modify, delete):
    parts = [f"{len(names)} {verb}" for names, verb in ((add, "added"), (modify, "changed"), (delete, "removed"))
             if names]
    return ", ".join(parts) or "nothing"


def _apply(jobs, add, modify, delete):
    failures = []
    for job in delete:
        result = __salt__["schedule.delete"](job, persist=True)
        if not result.get("result"):
            failures.append(f"schedule.delete {job}: {result.get('comment')}")
    for job in modify:
        result = __salt__["schedule.modify"](job, persist=True, **jobs[job])
        if not result.get("result"):
            failures.append(f"schedule.modify {job}: {result.get('comment')}")
    for job in add:
        result = __salt__["schedule.add"](job, persist=True, **jobs[job])
        if not result.get("result"):
            failures.append(f"schedule.add {job}: {result.get('comment')}")
    return failures


def _check_scheduler(ret, names, enabled, wait):
    """Fail when the running salt-minion refuses our jobs; say when it does not run them."""
    if "schedule.job_status" not in __salt__:
        return
    if not enabled:
        ret["comment"] += ("; WARNING: this minion's scheduler is disabled (schedule.disable): no job runs "
                           "until `salt-call schedule.enable`")
        return
    problems, pending = _scheduler_view(names, wait)
    if problems:
        text = "; ".join(f"{job}: {problem}" for job, problem in sorted(problems.items()))
        hint = ""
        if any("croniter" in problem for problem in problems.values()):
            hint = (" (salt-minion started before croniter was installed: restart salt-minion, "
                    "e.g. `systemctl restart salt-minion`)")
        ret.update(result=False, comment=f"{ret['comment']}; the salt-minion's scheduler refuses: {text}{hint}")
    elif pending and wait:
        ret["comment"] += (f"; the salt-minion's scheduler had not computed the next run of {', '.join(pending)} "
                           f"within {wait}s")


# ---------------------------------------------------------------- a restore cut short


def restore_recovered(name, journal_dir=None, timeout=600):
    """
    Finish what a restore cut short left on this node (its job killed, a SIGTERM, a power
    cut), before anything starts Redis: when ``redis_backup.restore`` left its journal,
    ``redis_backup.restore_recovered`` completes that restore or puts the previous data back,
    and the state says which (changes: ``{"restore": {backup, outcome, safety_copy, ...}}``).
    No journal: nothing to do, no change. A restore running now: the state fails, so that
    what requires it (the service's start) waits. ``test=True`` says what it would do.

    .. code-block:: yaml

        redis-restore-recovered:
          redis_backup.restore_recovered:
            - name: /var/lib/redis
            - require_in:
              - service: redis-server-running

    name
        Any text (the data directory reads well).
    journal_dir
        Where the journal lives (default: pillar ``redis:salt_config_dir``, else /etc/redis-salt).
    timeout
        Seconds for Redis to come back and for the check after a completed restore.
    """
    ret = _ret(name)
    try:
        if __opts__.get("test"):
            pending = __salt__["redis_backup.restore_pending"](journal_dir=journal_dir)
        else:
            done = __salt__["redis_backup.restore_recovered"](journal_dir=journal_dir, timeout=timeout)
    except Exception as exc:  # pylint: disable=broad-except - CommandExecutionError, from the execution module
        ret.update(result=False, comment=f"a restore cut short cannot be dealt with: {exc}")
        return ret
    if __opts__.get("test"):
        if pending["running"]:
            ret.update(result=False, comment="a restore is running on this node")
        elif not pending["pending"]:
            ret["comment"] = "no restore was cut short on this node"
        else:
            ret.update(result=None, changes={"restore": {key: pending.get(key) for key in (
                "backup", "data_dir", "phase", "safety_copy")}},
                comment=f"a restore of {pending.get('backup')} was cut short ({pending.get('phase')}): it would be "
                        "completed, or its previous data put back")
        return ret
    ret["result"], ret["comment"] = bool(done["result"]), done["comment"]
    if done["outcome"] not in ("none", "in progress"):
        ret["changes"] = {"restore": {key: done.get(key) for key in (
            "backup", "outcome", "data_dir", "safety_copy", "keys", "loaded_keys", "warnings")}}
    return ret
