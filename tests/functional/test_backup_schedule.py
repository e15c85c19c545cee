"""_states/redis_backup.py (``redis_backup.scheduled``) against Salt's real scheduler.

Everything Salt runs here is Salt's own code, in this process: the state module and
``schedule``/``event`` execution modules come from Salt's loader, the jobs live in a real
``salt.utils.schedule.Schedule`` (the one a salt-minion runs) that persists them in
``minion.d/_schedule.conf``, and requests reach it through ``salt.minion.Minion.manage_schedule``.
Only the transport is replaced: the minion's IPC event bus (which needs a running
salt-minion) becomes an in-memory bus that serializes every event as the real one does and
evaluates the schedule after each request, as the minion's loop would. The lab's
integration suite covers the daemons (``salt '*' schedule.list`` on lab minions).
"""

import datetime
import importlib
import importlib.util
import json
import pathlib
import threading

import pytest
import salt.config
import salt.loader
import salt.minion
import salt.payload
import salt.utils.event
import salt.utils.schedule
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_JOBS = {
    "redis-backup-rdb-1": (
        "redis_backup.create", "0 3 * * *", {"type": "rdb", "compress": "gzip", "retention_days": 30}),
    "redis-backup-aof-1": (
        "redis_backup.create", "0 */6 * * *", {"type": "aof", "compress": "gzip", "retention_days": 7}),
    "redis-backup-both-1": (
        "redis_backup.create", "0 2 * * 0", {"type": "both", "compress": "gzip", "retention_days": 60}),
    "redis-backup-prune-1": ("redis_backup.prune", "30 4 * * *", {}),
}
# Records what a scheduled job calls, in place of the real module (loaded by the scheduler's
# own loader in the job's thread).
FAKE_BACKUP_MODULE = '''
import json

__virtualname__ = "redis_backup"


def _record(name, kwargs):
    with open(__opts__["redis_backup_calls"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps([name, {k: v for k, v in kwargs.items() if not k.startswith("__")}]) + "\\n")
    return {"recorded": True}


def create(**kwargs):
    return _record("create", kwargs)


def prune(**kwargs):
    return _record("prune", kwargs)
'''


class Bus:
    """The minion's event bus, in memory: events are serialized like Salt's transport does
    (so nobody shares objects with the scheduler), ``manage_schedule`` requests are handled
    by the minion's own handler, and the schedule is evaluated after each, as the minion's
    loop does between events."""

    def __init__(self):
        self.listeners, self.minion, self.now = [], None, None

    def get_event(self, node, sock_dir=None, opts=None, listen=True, **kwargs):
        return _Event(self, listen)


class _Event:
    def __init__(self, bus, listen):
        self.bus, self.queue = bus, []
        if listen:
            bus.listeners.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.destroy()

    def destroy(self):
        if self in self.bus.listeners:
            self.bus.listeners.remove(self)

    def fire_event(self, data, tag, timeout=None):
        data = salt.payload.loads(salt.payload.dumps(data))
        for listener in list(self.bus.listeners):
            listener.queue.append({"tag": tag, "data": data})
        if tag.startswith("manage_schedule") and self.bus.minion is not None:
            salt.minion.Minion.manage_schedule(self.bus.minion, tag, data)
            self.bus.minion.schedule.eval(now=self.bus.now)
        return True

    def get_event(self, wait=5, tag="", full=False, **kwargs):
        for index, event in enumerate(self.queue):
            if event["tag"].startswith(tag):
                del self.queue[index]
                return event if full else event["data"]
        return None


class Minion:
    """A minion's scheduler and the loaders a state run gets, with its own directories."""

    def __init__(self, tmp_path, monkeypatch):
        self.tmp = tmp_path
        for name in ("conf", "cache", "sock", "pki", "ext/modules"):
            (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "ext" / "modules" / "redis_backup.py").write_text(FAKE_BACKUP_MODULE)
        opts = salt.config.minion_config(None)
        opts.update(
            id="node1", conf_dir=str(tmp_path / "conf"), conf_file=str(tmp_path / "conf" / "minion"),
            cachedir=str(tmp_path / "cache"), sock_dir=str(tmp_path / "sock"), pki_dir=str(tmp_path / "pki"),
            extension_modules=str(tmp_path / "ext"), file_client="local", schedule={}, pillar={},
            states_dirs=[str(ROOT / "_states")], multiprocessing=False, test=False,
            grains={"id": "node1", "os": "Debian", "os_family": "Debian", "kernel": "Linux"},
            redis_backup_calls=str(tmp_path / "calls.jsonl"),
        )
        opts["__role"] = "minion"
        self.opts = opts
        self.bus = Bus()
        monkeypatch.setattr(salt.utils.event, "get_event", self.bus.get_event)
        self.utils = salt.loader.utils(opts)
        self.functions = salt.loader.minion_mods(opts, utils=self.utils, whitelist=["schedule", "event", "config"])
        self.start_scheduler()

    def start_scheduler(self, schedule=None):
        """A (re)started salt-minion: its scheduler loads ``schedule`` (what it read from its
        configuration files)."""
        self.opts["schedule"] = schedule if schedule is not None else {}
        self.schedule = salt.utils.schedule.Schedule(self.opts, self.functions, returners={}, new_instance=True,
                                                     utils=self.utils)
        self.bus.minion = self
        return self.schedule

    def restart(self):
        return self.start_scheduler(self.saved()["schedule"] or {})

    def state(self, pillar=None, test=False, **kwargs):
        self.opts["test"] = test
        self.opts["pillar"] = {"redis": pillar} if pillar is not None else {}
        states = salt.loader.states(self.opts, self.functions, self.utils, salt.loader.serializers(self.opts),
                                    whitelist=["redis_backup"])
        return states["redis_backup.scheduled"]("redis-backup-schedule", **kwargs)

    def jobs(self):
        return self.functions["schedule.list"](show_all=True, return_yaml=False, where="opts")

    def ours(self):
        return {name: job for name, job in self.jobs().items() if name.startswith("redis-backup-")}

    def saved(self):
        path = self.tmp / "conf" / "minion.d" / "_schedule.conf"
        return yaml.safe_load(path.read_text()) if path.exists() else {"schedule": {}}

    def calls(self):
        path = self.tmp / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def tick(self, now):
        """The minion's loop at ``now`` and a second later (when a job that just ran gets its
        next time); waits for the jobs it started."""
        for moment in (now, now + datetime.timedelta(seconds=1)):
            self.bus.now = moment
            before = set(threading.enumerate())
            self.schedule.eval(now=moment)
            for thread in set(threading.enumerate()) - before:
                thread.join(30)


@pytest.fixture
def minion(tmp_path, monkeypatch):
    return Minion(tmp_path, monkeypatch)


def server(**backup):
    return {"role": "master", "mode": "sentinel", "backup": dict({"compress": "gzip", "retention_days": 7}, **backup)}


def shape(job):
    return (job["function"], job["cron"], job.get("kwargs", {}))


# ---------------------------------------------------------------- the default plan


def test_absent_schedule_installs_the_original_plan_persisted_and_idempotent(minion):
    ret = minion.state(server())
    assert ret["result"] is True, ret["comment"]
    assert sorted(ret["changes"]) == sorted(DEFAULT_JOBS)
    assert ret["changes"]["redis-backup-rdb-1"] == {
        "old": None, "new": "redis_backup.create type=rdb compress=gzip retention_days=30 at cron '0 3 * * *'"}
    assert {name: shape(job) for name, job in minion.ours().items()} == DEFAULT_JOBS
    for job in minion.ours().values():
        assert job["maxrunning"] == 1 and job["enabled"] is True
    # persisted: a restarted salt-minion has them
    assert {name: shape(job) for name, job in minion.saved()["schedule"].items()} == DEFAULT_JOBS

    again = minion.state(server())
    assert again["result"] is True and again["changes"] == {}, again
    assert "in place" in again["comment"]

    minion.restart()
    after_restart = minion.state(server())
    assert after_restart["result"] is True and after_restart["changes"] == {}, after_restart


def test_the_scheduler_runs_the_jobs_at_their_cron_times(minion):
    saturday = datetime.datetime(2026, 1, 3, 12, 0, 30)  # a Saturday
    minion.bus.now = saturday
    assert minion.state(server())["result"] is True
    minion.tick(saturday)
    assert minion.calls() == []
    fire = {name: minion.functions["schedule.show_next_fire_time"](name)["next_fire_time"] for name in DEFAULT_JOBS}
    assert fire == {
        "redis-backup-aof-1": "2026-01-03T18:00:00",
        "redis-backup-both-1": "2026-01-04T02:00:00",
        "redis-backup-rdb-1": "2026-01-04T03:00:00",
        "redis-backup-prune-1": "2026-01-04T04:30:00",
    }
    for moment in ("2026-01-03T18:00:00", "2026-01-04T00:00:00", "2026-01-04T02:00:00", "2026-01-04T03:00:00",
                   "2026-01-04T04:30:00"):
        minion.tick(datetime.datetime.fromisoformat(moment))
    assert minion.calls() == [
        ["create", {"type": "aof", "compress": "gzip", "retention_days": 7}],
        ["create", {"type": "aof", "compress": "gzip", "retention_days": 7}],
        ["create", {"type": "both", "compress": "gzip", "retention_days": 60}],
        ["create", {"type": "rdb", "compress": "gzip", "retention_days": 30}],
        ["prune", {}],
    ]


def test_pillar_defaults_for_compress_and_retention(minion):
    ret = minion.state(server(compress="zstd", retention_days=14, schedule=[
        {"cron": "15 1 * * *", "type": "rdb"},
        {"cron": "45 1 * * *", "type": "rdb", "compress": "none", "retention_days": 3},
        {"prune": True, "retention_days": 20},
    ]))
    assert ret["result"] is True, ret["comment"]
    assert {name: shape(job) for name, job in minion.ours().items()} == {
        "redis-backup-rdb-1": ("redis_backup.create", "15 1 * * *", {"type": "rdb", "compress": "zstd",
                                                                     "retention_days": 14}),
        "redis-backup-rdb-2": ("redis_backup.create", "45 1 * * *", {"type": "rdb", "compress": "none",
                                                                     "retention_days": 3}),
        "redis-backup-prune-1": ("redis_backup.prune", "30 4 * * *", {"retention_days": 20}),
    }


# ---------------------------------------------------------------- changes touch our jobs only


def _foreign_jobs(minion):
    add = minion.functions["schedule.add"]
    assert add("nightly-report", function="test.ping", cron="0 1 * * *", persist=True)["result"]
    # our prefix, but not our function: not ours either
    assert add("redis-backup-offsite", function="cmd.run", job_args=["true"], seconds=3600, persist=True)["result"]
    return {name: job for name, job in minion.jobs().items() if name in ("nightly-report", "redis-backup-offsite")}


def test_a_changed_plan_changes_exactly_our_jobs(minion):
    foreign = _foreign_jobs(minion)
    assert minion.state(server())["result"] is True
    ret = minion.state(server(schedule=[
        {"cron": "0 4 * * *", "type": "rdb", "retention_days": 30},   # rdb-1: new time
        {"cron": "0 */6 * * *", "type": "aof"},                        # aof-1: unchanged
        {"cron": "0 5 * * 6", "type": "both", "retention_days": 90},   # both-1: new time and retention
        {"cron": "0 12 * * *", "type": "rdb", "compress": "zstd"},     # rdb-2: new
    ]))                                                                # prune-1: removed
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {
        "redis-backup-rdb-1": {
            "old": "redis_backup.create type=rdb compress=gzip retention_days=30 at cron '0 3 * * *'",
            "new": "redis_backup.create type=rdb compress=gzip retention_days=30 at cron '0 4 * * *'"},
        "redis-backup-both-1": {
            "old": "redis_backup.create type=both compress=gzip retention_days=60 at cron '0 2 * * 0'",
            "new": "redis_backup.create type=both compress=gzip retention_days=90 at cron '0 5 * * 6'"},
        "redis-backup-rdb-2": {
            "old": None, "new": "redis_backup.create type=rdb compress=zstd retention_days=7 at cron '0 12 * * *'"},
        "redis-backup-prune-1": {"old": "redis_backup.prune at cron '30 4 * * *'", "new": None},
    }
    assert "(1 added, 2 changed, 1 removed)" in ret["comment"]
    assert sorted(minion.ours()) == ["redis-backup-aof-1", "redis-backup-both-1", "redis-backup-offsite",
                                     "redis-backup-rdb-1", "redis-backup-rdb-2"]
    assert {name: job for name, job in minion.jobs().items() if name in foreign} == foreign
    assert set(foreign) <= set(minion.saved()["schedule"])
    assert minion.saved()["schedule"]["redis-backup-rdb-1"]["cron"] == "0 4 * * *"
    assert minion.state(server(schedule=[
        {"cron": "0 4 * * *", "type": "rdb", "retention_days": 30}, {"cron": "0 */6 * * *", "type": "aof"},
        {"cron": "0 5 * * 6", "type": "both", "retention_days": 90},
        {"cron": "0 12 * * *", "type": "rdb", "compress": "zstd"}]))["changes"] == {}


def test_an_empty_schedule_removes_our_jobs_only(minion):
    foreign = _foreign_jobs(minion)
    assert minion.state(server())["result"] is True
    ret = minion.state(server(schedule=[]))
    assert ret["result"] is True, ret["comment"]
    assert sorted(ret["changes"]) == sorted(DEFAULT_JOBS)
    assert all(change["new"] is None for change in ret["changes"].values())
    assert minion.jobs() == foreign
    assert set(minion.saved()["schedule"]) == set(foreign)
    again = minion.state(server(schedule=[]))
    assert again["result"] is True and again["changes"] == {}
    assert "empty" in again["comment"]


def test_a_minion_without_redis_server_gets_no_job(minion):
    foreign = _foreign_jobs(minion)
    untouched = minion.state({"role": "sentinel-only", "mode": "sentinel", "backup": {}})
    assert untouched["result"] is True and untouched["changes"] == {}
    assert minion.state(server())["result"] is True
    demoted = minion.state({"role": "none", "mode": "none"})
    assert demoted["result"] is True and sorted(demoted["changes"]) == sorted(DEFAULT_JOBS)
    assert "runs no Redis server" in demoted["comment"]
    assert minion.jobs() == foreign


def test_the_schedule_argument_wins_over_pillar(minion):
    ret = minion.state(server(schedule=[]), schedule=[{"cron": "@daily", "type": "rdb"}])
    assert ret["result"] is True
    assert {name: shape(job) for name, job in minion.ours().items()} == {
        "redis-backup-rdb-1": ("redis_backup.create", "@daily", {"type": "rdb", "compress": "gzip",
                                                                 "retention_days": 7})}


# ---------------------------------------------------------------- test=True


def test_test_mode_says_what_would_change_and_changes_nothing(minion):
    foreign = _foreign_jobs(minion)
    saved = minion.saved()
    ret = minion.state(server(), test=True)
    assert ret["result"] is None
    assert sorted(ret["changes"]) == sorted(DEFAULT_JOBS)
    assert "would change (4 added)" in ret["comment"]
    assert minion.jobs() == foreign and minion.saved() == saved

    assert minion.state(server())["result"] is True
    saved = minion.saved()
    ret = minion.state(server(schedule=[{"cron": "0 3 * * *", "type": "rdb", "retention_days": 30}]), test=True)
    assert ret["result"] is None
    assert sorted(ret["changes"]) == ["redis-backup-aof-1", "redis-backup-both-1", "redis-backup-prune-1"]
    assert {name: shape(job) for name, job in minion.ours().items() if name in DEFAULT_JOBS} == DEFAULT_JOBS
    assert minion.saved() == saved

    unchanged = minion.state(server(), test=True)
    assert unchanged["result"] is True and unchanged["changes"] == {}


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "entry, key, expected",
    [
        ({"cron": "0 3 * *", "type": "rdb"}, "[1].cron", 'expected 5 fields "minute hour day-of-month month'),
        ({"cron": "0 24 * * *", "type": "rdb"}, "[1].cron", "field 2 (hour) of '0 24 * * *': '24' is outside 0-23"),
        ({"cron": "60 3 * * *", "type": "rdb"}, "[1].cron", "field 1 (minute)"),
        ({"cron": "0 3 0 * *", "type": "rdb"}, "[1].cron",
         "field 3 (day of month) of '0 3 0 * *': '0' is outside 1-31"),
        ({"cron": "0 3 * 13 *", "type": "rdb"}, "[1].cron", "field 4 (month)"),
        ({"cron": "0 3 * * 8", "type": "rdb"}, "[1].cron", "field 5 (day of week)"),
        ({"cron": "0 3 * * xyz", "type": "rdb"}, "[1].cron", "'xyz' is outside 0-7 or sun-sat"),
        ({"cron": "*/0 3 * * *", "type": "rdb"}, "[1].cron", "has a step outside 1-59"),
        ({"cron": "0 5-2 * * *", "type": "rdb"}, "[1].cron", "a range that ends before it starts"),
        ({"cron": "0 3 ? * *", "type": "rdb"}, "[1].cron", "'?' is not *, a value"),
        ({"cron": "@sometimes", "type": "rdb"}, "[1].cron", "expected one of @yearly"),
        ({"cron": 3, "type": "rdb"}, "[1].cron", "expected a cron expression as a string"),
        ({"type": "rdb"}, "[1].cron", 'expected a cron expression such as "0 3 * * *"'),
        ({"cron": "0 3 * * *", "type": "full"}, "[1].type", "expected one of rdb, aof, both, got 'full'"),
        ({"cron": "0 3 * * *"}, "[1].type", "expected one of rdb, aof, both, got None"),
        ({"cron": "0 3 * * *", "type": "rdb", "compress": "bzip2"}, "[1].compress",
         "expected one of gzip, zstd, none, got 'bzip2'"),
        ({"cron": "0 3 * * *", "type": "rdb", "retention_days": -1}, "[1].retention_days",
         "expected a whole number of days (0 or more), got -1"),
        ({"cron": "0 3 * * *", "type": "rdb", "retention_days": "30"}, "[1].retention_days",
         "expected a whole number of days"),
        ({"cron": "0 3 * * *", "type": "rdb", "retention": 30}, "[1]", "unknown key retention (expected cron, type"),
        ({"prune": True, "type": "rdb"}, "[1]", "unknown key type (expected prune, cron, retention_days)"),
        ({"prune": "yes"}, "[1].prune", "expected true or false, got 'yes'"),
        ("daily", "[1]", "expected a mapping like {cron:"),
    ],
)
def test_a_bad_entry_changes_nothing_and_names_its_key(minion, entry, key, expected):
    assert minion.state(server())["result"] is True
    before, saved = minion.jobs(), minion.saved()
    pillar = server(schedule=[{"cron": "0 3 * * *", "type": "rdb"}, entry])
    pillar["deployment_file"] = "/etc/salt/my_multihead_cluster.yaml"
    ret = minion.state(pillar)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"].startswith("Backup schedule not changed (/etc/salt/my_multihead_cluster.yaml): ")
    assert f"cache.redis.backup.schedule{key}: " in ret["comment"]
    assert expected in ret["comment"]
    assert minion.jobs() == before and minion.saved() == saved


def test_every_error_is_reported_at_once(minion):
    ret = minion.state(server(schedule=[{"cron": "0 25 * * *", "type": "rdb"}, {"cron": "0 3 * * *", "type": "x"}]))
    assert ret["result"] is False
    assert "schedule[0].cron" in ret["comment"] and "schedule[1].type" in ret["comment"]
    assert minion.jobs() == {}


def test_a_schedule_that_is_not_a_list(minion):
    ret = minion.state(server(schedule={"cron": "0 3 * * *", "type": "rdb"}))
    assert ret["result"] is False
    assert "cache.redis.backup.schedule: expected a list of entries" in ret["comment"]
    assert minion.jobs() == {}


def test_a_failed_deployment_pillar_changes_nothing(minion):
    ret = minion.state({"error": "my_multihead_cluster.yaml: cache.redis.port: expected 1-65535", "role": "none"})
    assert ret["result"] is False
    assert ret["comment"] == "deployment pillar failed: my_multihead_cluster.yaml: cache.redis.port: expected 1-65535"


def test_croniter_missing_on_the_minion(minion, monkeypatch):
    real = importlib.import_module

    def without_croniter(name, *args, **kwargs):
        if name == "croniter":
            raise ImportError("No module named 'croniter'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_croniter)
    ret = minion.state(server())
    assert ret["result"] is False and ret["changes"] == {}
    assert "the Python module croniter is missing on this minion" in ret["comment"]
    assert "pip install croniter" in ret["comment"]
    assert minion.jobs() == {}
    # an empty plan needs no croniter: removing jobs still works
    assert minion.state(server(schedule=[]))["result"] is True


def test_a_salt_minion_started_without_croniter_is_reported(minion, monkeypatch):
    monkeypatch.setattr(salt.utils.schedule, "_CRON_SUPPORTED", False)
    ret = minion.state(server(), wait=1)
    assert ret["result"] is False
    assert "Missing python-croniter. Ignoring job redis-backup-rdb-1." in ret["comment"]
    assert "restart salt-minion" in ret["comment"]
    monkeypatch.setattr(salt.utils.schedule, "_CRON_SUPPORTED", True)
    minion.restart()
    ret = minion.state(server())
    assert ret["result"] is True and ret["changes"] == {}, ret


def test_a_disabled_scheduler_is_said(minion):
    assert minion.functions["schedule.disable"]()["result"]
    ret = minion.state(server())
    assert ret["result"] is True and len(ret["changes"]) == 4
    assert "scheduler is disabled" in ret["comment"]


# ---------------------------------------------------------------- the cron check agrees with croniter


@pytest.mark.parametrize("expression", [
    "0 3 * * *", "0 */6 * * *", "0 2 * * 0", "30 4 * * *", "*/15 * * * *", "0 0 1 jan *", "0 9-17/2 * * mon-fri",
    "5,35 1,13 * * 7", "0 0 31 12 *", "@daily", "@hourly", "@weekly", "0 3 1-7 * sun",
])
def test_valid_cron_expressions_are_valid_for_croniter_too(expression):
    import croniter

    state = _state_module()
    assert state._cron_problem(expression) is None
    assert croniter.croniter.is_valid(expression)


def _state_module():
    spec = importlib.util.spec_from_file_location("redis_backup_state", ROOT / "_states" / "redis_backup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
