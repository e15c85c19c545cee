"""_runners/redis_backup.py without a master.

The set logic it calls through ``__utils__`` (slot coverage, set status, manifest, restore
plan, checks) is tests/unit/test_backup_set_logic.py's; here the runner gets ``__utils__`` as
Salt's loader gives it (tests/unit/test_backup_set_logic.py's ``utils_dunder``), and its own
parts (sets on disk, progress lines) take plain dicts. ``run`` and ``restore`` are driven
through their minion layer (``_call_many``/``_call_each``) with a fake deployment that
records every call and keeps each node's services and files, so the order of a restore
is checked step by step, and a fake ``redis_deployment.shape`` whose controllers carry
the ``minion`` (and ``minion_problem``) shape resolves: matching minion ids to
controllers is that runner's (tests/unit/test_runner_minions.py). The real path
(salt-run on the lab master) is the integration suite's.
"""

import datetime
import importlib.util
import json
import os
import pathlib
import types

import pytest
from salt.exceptions import SaltInvocationError
from test_backup_set_logic import (THIRDS, bs, cluster_nodes, live_cluster, live_sentinel, manifest_of, meta,
                                   sentinel_nodes, utils_dunder)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_runner():
    spec = importlib.util.spec_from_file_location("redis_backup_runner", ROOT / "_runners" / "redis_backup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__utils__ = utils_dunder()
    return module


rb = load_runner()


# ---------------------------------------------------------------- sets on disk


def test_set_ids_are_unique_and_listed_newest_first(tmp_path):
    moment = datetime.datetime(2025, 10, 27, 12, 0, tzinfo=datetime.timezone.utc)
    first = rb._make_set_dir(str(tmp_path), moment)
    second = rb._make_set_dir(str(tmp_path), moment)
    later = rb._make_set_dir(str(tmp_path), moment + datetime.timedelta(hours=1))
    assert [first[0], second[0], later[0]] == ["set_20251027_120000", "set_20251027_120000_2", "set_20251027_130000"]
    for set_id, path in (first, second, later):
        rb._write_manifest(path, {"set_id": set_id, "time": moment.isoformat()
                                  if set_id != later[0] else (moment + datetime.timedelta(hours=1)).isoformat()})
    (tmp_path / "junk").mkdir()
    (tmp_path / "set_20250101_000000").mkdir()
    (tmp_path / "set_20250101_000000" / "manifest.json").write_text("{not json")
    assert [m["set_id"] for m in rb._read_sets(str(tmp_path))] == [
        "set_20251027_130000", "set_20251027_120000_2", "set_20251027_120000"]
    assert not list(tmp_path.glob("*/*.tmp"))
    assert rb._read_sets(str(tmp_path / "absent")) == []


# ---------------------------------------------------------------- restore plan


def test_verification_counts_every_database_and_asks_replication_whether_replicas_are_in_sync():
    plan = bs.restore_plan(manifest_of("cluster", cluster_nodes()), live_cluster())
    live = live_cluster()
    for minion in live:
        live[minion]["keys"] = 0  # database 0 is empty: the data is in database 3
    answers = {m: (True, {"keys": 100 if m in THIRDS else 250, "loaded_keys": 100}) for m in live}
    answers["server3"] = (True, {"keys": 0, "loaded_keys": 0})
    answers["server2"] = (True, {"keys": 90, "loaded_keys": 100})
    answers["server4"][1].update(master_link_status="up", master_sync_in_progress=False)
    answers["server5"][1].update(master_link_status="down", master_sync_in_progress=True)
    answers["server6"] = (False, "'redis_backup.keyspace' is not available.")  # its keys compared, as before
    rb._merge_keyspace(live, answers)
    problems, warnings = bs.verify_restore("cluster", plan, live, {"server2": {"loaded_keys": 100}})
    assert problems == ["server3: no key in any database, the backup holds 100",
                        "server5: not in sync with its master server2 yet (link down, full sync running)"]
    assert warnings == ["server2: 90 keys (every database), the backup holds 100 (0 with a TTL); its server "
                        "loaded 100 at the start"]
    assert live["server1"]["keys"] == 100 and live["server4"]["keys"] == 250  # server4 writes: no problem


def test_progress_lines_from_events():
    wrapped = {"id": "server1", "cmd": "_minion_event", "tag": "redis/backup/server1/finished",
               "data": meta("server1") | {"duration_seconds": 12.3}}
    data = rb._event_payload(wrapped)
    assert data["name"] == "rdb_backup_20251027_120000"
    assert rb._event_line("redis/backup/server1/finished", data) == (
        "server1: rdb backup finished: rdb_backup_20251027_120000, 2.0K, 100 keys, 12.3s")
    assert rb._event_line("redis/backup/server1/started", {"type": "aof", "name": "aof_backup_x"}) == (
        "server1: aof backup started (aof_backup_x)")
    assert rb._event_line("redis/backup/server1/failed", {"type": "rdb", "error": "disk full"}) == (
        "server1: rdb backup FAILED: disk full")
    assert rb._event_line("redis/restore/server2/finished", {"backup": "b", "keys": 5}) == (
        "server2: restore of b finished, 5 keys")
    assert rb._event_line("salt/job/123/ret/server1", {}) is None
    assert rb._event_payload({"type": "rdb"}) == {"type": "rdb"}


# ---------------------------------------------------------------- run and restore, minions faked


class Deployment:
    """The minions as the runner sees them: calls recorded in order, services and files kept."""

    def __init__(self, mode, live, files=(), stop_fails=(), create=None, restore_fails=(), silent=(),
                 still_running=(), undo_fails=(), metadata=None, gone=()):
        self.mode, self.live, self.files = mode, live, set(files)
        self.calls, self.running = [], {}
        self.stop_fails, self.restore_fails, self.create = set(stop_fails), set(restore_fails), create or {}
        # restore jobs: a minion that stops answering find_job, one still at it when the runner stops waiting
        self.silent, self.still_running, self.undo_fails = set(silent), set(still_running), set(undo_fails)
        self.metadata = metadata or {}  # {minion: its backup's metadata}, else meta(minion)
        self.gone = set(gone)  # "minion:name" of backups deleted from their node

    def call(self, minion, function, kwarg):
        kwarg = kwarg or {}
        self.calls.append((minion, function, dict(kwarg)))
        if function == "redis_cluster.status":
            status = self.live.get(minion)
            return (True, dict(status)) if status else (False, "the minion did not answer")
        if function == "pillar.get":
            return True, kwarg["default"]
        if function == "file.file_exists":
            return True, f"{minion}:{kwarg['path']}" in self.files
        if function == "file.read":
            return True, json.dumps(self.metadata.get(minion) or meta(minion))
        if function == "redis_backup.list":
            names = [n for n in ("rdb_backup_20251027_120000",) if f"{minion}:{n}" not in self.gone]
            return True, {"backups": [{"name": n, "type": "rdb"} for n in names]}
        if function == "redis_backup.undo_restore":
            if minion in self.undo_fails:
                return False, "ERROR: Redis does not stop"
            return True, {"result": True, "changed": True, "safety_copy": kwarg["safety_copy"]}
        if function.startswith("service."):
            action = function.split(".")[1]
            if action == "stop" and (minion, kwarg["name"]) in self.stop_fails:
                return False, "ERROR: could not stop"
            self.running[(minion, kwarg["name"])] = action == "start"
            return True, True
        if function == "redis_backup.restore":
            if minion in self.restore_fails and kwarg["force"]:
                return False, "ERROR: restore failed: checksum; the previous data was put back"
            if not kwarg["force"]:
                return True, {"result": None, "would_replace": [{"name": "dump.rdb", "size": 1}], "data_dir": "/d"}
            return True, {"result": True, "backup": os.path.basename(kwarg["backup"]), "keys": 100,
                          "safety_copy": f"/var/lib/redis_backup_{minion}", "warnings": []}
        if function == "redis_backup.create":
            return self.create.get(minion, (False, "no answer"))
        if function == "redis_backup.keyspace":
            status = self.live.get(minion)
            if not status:
                return False, "the minion did not answer"
            ret = {"keys": status["keys"], "loaded_keys": status["keys"]}
            if status.get("cluster_role", status.get("replication_role")) in ("replica", "slave"):
                ret.update(master_link_status="up", master_sync_in_progress=False)
            return True, ret
        raise AssertionError(f"unexpected call {function}")

    def call_many(self, client, minions, function, timeout, kwarg=None, watch=None):
        return {minion: self.call(minion, function, kwarg) for minion in minions}

    def call_each(self, client, calls, timeout, watch=None):
        return {minion: self.call(minion, function, kwarg) for minion, (function, kwarg) in calls.items()}

    def run_jobs(self, client, calls, timeout, watch=None):
        """What Salt gathers of each job: its return, ``{"failed": True}`` (silent), None (running)."""
        answers = {}
        for minion, (function, kwarg) in calls.items():
            if function == "redis_backup.restore" and minion in self.silent:
                self.calls.append((minion, function, dict(kwarg)))
                answers[minion] = {"failed": True}
            elif function == "redis_backup.restore" and minion in self.still_running:
                self.calls.append((minion, function, dict(kwarg)))
                answers[minion] = None
            else:
                ok, ret = self.call(minion, function, kwarg)
                answers[minion] = {"ret": ret, "retcode": 0 if ok else 1}
        return answers

    def actions(self):
        """The calls that change something, in order."""
        return [(minion, function,
                 kwarg.get("name") or os.path.basename(kwarg.get("backup") or kwarg.get("safety_copy") or ""))
                for minion, function, kwarg in self.calls
                if function.startswith("service.") or function == "redis_backup.undo_restore"
                or (function == "redis_backup.restore" and kwarg["force"])]


class _Client:
    def destroy(self):
        pass


class _NoFollower:
    seen = []

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self):
        pass

    def close(self):
        pass


class _Progress:
    def __init__(self):
        self.lines = []

    def fire_event(self, data, suffix):
        assert suffix == "progress"
        self.lines.append(data["message"])


def shape(mode, copy_to=None, minions=None, prefix="server"):
    """What redis_deployment.shape returns: controllers ``<prefix>1``..., each with the
    ``minion`` shape resolved for it (its hostname, or ``minions[hostname]``; None: no
    minion, and ``minion_problem`` says why, in shape's words)."""
    minions = minions or {}
    count = 6 if mode == "cluster" else 3
    controllers = [{"hostname": f"{prefix}{n}", "minion_id": f"{prefix}{n}", "ip": f"10.0.0.{n}", "redis": True}
                   for n in range(1, count + 1)]
    roles = ({f"{prefix}{n}": "cluster-node" for n in range(1, 7)} if mode == "cluster" else
             {f"{prefix}1": "master", f"{prefix}2": "replica", f"{prefix}3": "replica"})
    if mode == "sentinel":
        controllers.append({"hostname": "witness1", "minion_id": "witness1", "ip": "10.0.0.9", "redis": False})
        roles["witness1"] = "sentinel-only"
    for index, controller in enumerate(controllers):
        controller["index"] = index
        controller["minion"] = minions.get(controller["hostname"], controller["hostname"])
        controller["minion_problem"] = None if controller["minion"] else (
            f"nodes.controllers[{index}] ({controller['hostname']}): no accepted minion key has id "
            f"{controller['minion_id']} (or {controller['minion_id']}.<domain>): accept the minion's key "
            "(salt-key -a ID) or set the controller's minion_id")
    sentinel = {}
    if mode == "sentinel":
        sentinel = {"hosts": [{"hostname": c["hostname"], "ip": c["ip"]} for c in controllers]}
    peers = [{"hostname": c["hostname"], "minion_id": c["minion_id"], "ip": c["ip"], "port": 6379,
              "minion": c["minion"]} for c in controllers if c["redis"]]
    return {
        "path": "/etc/salt/my_multihead_cluster.yaml", "mode": mode, "controllers": controllers, "roles": roles,
        "settings": {"port": 6379, "backup": {"dir": "/var/backups/redis", "copy_to": copy_to}},
        "peers": peers, "initial_master": peers[0], "sentinel": sentinel,
    }


@pytest.fixture
def runner(tmp_path, monkeypatch):
    module = load_runner()
    module.__opts__ = {"cachedir": str(tmp_path / "cache"), "sock_dir": str(tmp_path), "conf_file": "/dev/null",
                       "timeout": 5}
    module.__context__ = {}
    module.__jid_event__ = _Progress()
    monkeypatch.setattr(module, "_client", _Client)
    monkeypatch.setattr(module, "_Follower", _NoFollower)

    def use(deployment, mode, copy_to=None, **resolved):
        module.__salt__ = {"redis_deployment.shape": lambda: shape(mode, copy_to, **resolved)}
        monkeypatch.setattr(module, "_call_many", deployment.call_many)
        monkeypatch.setattr(module, "_call_each", deployment.call_each)
        monkeypatch.setattr(module, "_run_jobs", deployment.run_jobs)
        return module

    return use


def cluster_creates(failed=()):
    answers = {}
    for n in range(1, 7):
        minion = f"server{n}"
        if minion in failed:
            answers[minion] = (False, "ERROR: rdb: BGSAVE failed")
        else:
            answers[minion] = (True, dict(meta(minion, slots=THIRDS.get(minion, []),
                                               role="master" if n <= 3 else "slave"), pruned=[]))
    return answers


def test_run_writes_one_manifest_for_the_whole_set(runner, tmp_path):
    deployment = Deployment("cluster", live_cluster(), create=cluster_creates())
    module = runner(deployment, "cluster")
    result = module.run(type="rdb", compress="zstd")
    assert result["status"] == "complete" and result["retcode"] == 0 and module.__context__["retcode"] == 0
    creates = [c for c in deployment.calls if c[1] == "redis_backup.create"]
    assert [c[0] for c in creates] == [f"server{n}" for n in range(1, 7)]
    assert creates[0][2] == {"type": "rdb", "compress": "zstd", "timeout": 3600, "set_id": result["set_id"]}
    manifest = json.loads(pathlib.Path(result["manifest"]).read_text())
    assert manifest["set_id"] == result["set_id"] and result["set_id"].startswith("set_")
    assert pathlib.Path(result["manifest"]).parent.parent == tmp_path / "cache" / "redis_backup_sets"
    assert manifest["nodes"]["server1"]["slots"] == [[0, 5460]]
    assert manifest["deployment_file"] == "/etc/salt/my_multihead_cluster.yaml"
    assert module.__jid_event__.lines[0].startswith("backing up 6 Redis node(s) of the cluster deployment (rdb)")
    assert module.__jid_event__.lines[-1].startswith(f"set {result['set_id']}: complete; manifest ")
    listed = module.list_()
    assert [item["set_id"] for item in listed["sets"]] == [result["set_id"]]
    assert listed["sets"][0]["nodes"] == 6 and listed["sets"][0]["status"] == "complete"


def test_run_with_a_failed_master_is_partial(runner):
    deployment = Deployment("cluster", live_cluster(), create=cluster_creates(failed=("server3",)))
    module = runner(deployment, "cluster")
    result = module.run()
    assert result["status"] == "partial" and result["retcode"] == 1
    assert "slots 10923-16383" in result["reason"]
    assert result["nodes"]["server3"]["status"] == "failed"
    assert "server3: FAILED: ERROR: rdb: BGSAVE failed" in module.__jid_event__.lines


def test_an_fqdn_minion_is_targeted_as_shape_resolved_it(runner):
    """Controller s1's minion is s1.example.org (the ext_pillar's first-label match, as
    shape resolves it): the backup and the restore target that id, not the YAML's s1."""
    minion = {f"s{n}": f"s{n}" for n in range(2, 7)} | {"s1": "s1.example.org"}
    renamed = {f"server{n}": minion[f"s{n}"] for n in range(1, 7)}
    creates = {renamed[m]: answer for m, answer in cluster_creates().items()}
    live = {renamed[m]: status for m, status in live_cluster().items()}
    files = [f"{renamed[m]}:{LOCAL}" for m in ("server1", "server2", "server3")]
    deployment = Deployment("cluster", live, files=files, create=creates)
    module = runner(deployment, "cluster", minions={"s1": "s1.example.org"}, prefix="s")
    result = module.run()
    assert result["status"] == "complete" and result["retcode"] == 0, result
    assert [c[0] for c in deployment.calls if c[1] == "redis_backup.create"] == [
        "s1.example.org", "s2", "s3", "s4", "s5", "s6"]
    assert "s1" not in result["nodes"] and result["nodes"]["s1.example.org"]["hostname"] == "s1"
    restored = module.restore(set=result["set_id"])
    assert restored["retcode"] == 0, restored["comment"]
    assert {c[0] for c in deployment.calls if c[1] == "redis_cluster.status"} == set(live)
    assert [c[0] for c in deployment.calls if c[1] == "redis_backup.restore"] == ["s1.example.org", "s2", "s3"]
    assert restored["comment"].startswith("nothing changed (force=True restores): s1.example.org <- ")
    assert restored["plan"]["stop"] == ["s4", "s5", "s6"]


def test_a_node_without_a_minion_is_said_with_shapes_reason(runner):
    """server3 and witness1 have no minion: the backup records shape's minion_problem as
    server3's failure, and a restore refuses before anything changes (neither could be stopped)."""
    creates = {f"server{n}": (True, meta(f"server{n}", role="master" if n == 1 else "slave")) for n in (1, 2)}
    deployment = Deployment("sentinel", live_sentinel(), files=[f"server1:{LOCAL}"], create=creates)
    module = runner(deployment, "sentinel", minions={"server3": None, "witness1": None})
    result = module.run()
    why = ("nodes.controllers[2] (server3): no accepted minion key has id server3 (or server3.<domain>): accept "
           "the minion's key (salt-key -a ID) or set the controller's minion_id")
    assert [c[0] for c in deployment.calls if c[1] == "redis_backup.create"] == ["server1", "server2"]
    assert result["status"] == "complete"  # the master's backup is in it
    assert result["nodes"]["server3"]["status"] == "failed" and result["nodes"]["server3"]["error"] == why
    assert f"server3: NOT BACKED UP: {why}" in module.__jid_event__.lines
    restored = module.restore(set=_written_set(module, "sentinel", sentinel_nodes()), force=True)
    assert restored["retcode"] == 1 and deployment.actions() == []
    assert f"Redis node server3 has no minion, it could not be stopped: {why}" in restored["problems"]
    assert any(p.startswith("Sentinel host witness1 has no minion, its Sentinel could not be stopped: "
                            "nodes.controllers[3] (witness1): no accepted minion key") for p in restored["problems"])
    assert restored["comment"].startswith("nothing changed: ")


def test_run_refuses_an_unknown_type(runner):
    module = runner(Deployment("cluster", {}), "cluster")
    with pytest.raises(SaltInvocationError):
        module.run(type="full")


def _written_set(module, mode, nodes, copy_to=None):
    root = pathlib.Path(module._sets_dir())
    set_id, path = module._make_set_dir(str(root), datetime.datetime(2025, 10, 27, 12, tzinfo=datetime.timezone.utc))
    manifest = manifest_of(mode, nodes, copy_to=copy_to)
    manifest["set_id"] = set_id
    module._write_manifest(path, manifest)
    return set_id


LOCAL = "/var/backups/redis/rdb/rdb_backup_20251027_120000/backup_metadata.json"


def test_restore_without_force_changes_nothing_and_says_what_it_would_do(runner):
    deployment = Deployment("sentinel", live_sentinel(), files=[f"server1:{LOCAL}"])
    module = runner(deployment, "sentinel")
    set_id = _written_set(module, "sentinel", sentinel_nodes())
    result = module.restore(set=set_id)
    assert result["retcode"] == 0, result["comment"]
    assert deployment.actions() == []
    assert result["comment"].startswith("nothing changed (force=True restores): server1 <- "
                                        "/var/backups/redis/rdb/rdb_backup_20251027_120000")
    assert "stopped meanwhile: server2, server3, server1, server2, server3, witness1" in result["comment"]
    assert result["steps"][0] == "stop redis-sentinel on server1"
    dry = [c for c in deployment.calls if c[1] == "redis_backup.restore"]
    assert dry == [("server1", "redis_backup.restore", {"backup": "/var/backups/redis/rdb/rdb_backup_20251027_120000",
                                                        "force": False, "part_of_set": True, "timeout": 900})]


def test_forced_sentinel_restore_order(runner):
    deployment = Deployment("sentinel", live_sentinel(), files=[f"server1:{LOCAL}"])
    module = runner(deployment, "sentinel")
    set_id = _written_set(module, "sentinel", sentinel_nodes())
    result = module.restore(set=set_id, force=True)
    assert result["retcode"] == 0, result
    sentinels = ["server1", "server2", "server3", "witness1"]
    assert deployment.actions() == (
        [(m, "service.stop", "redis-sentinel") for m in sentinels]
        + [(m, "service.stop", "redis-server") for m in ("server2", "server3")]
        + [("server1", "redis_backup.restore", "rdb_backup_20251027_120000")]
        + [(m, "service.start", "redis-server") for m in ("server2", "server3")]
        + [(m, "service.start", "redis-sentinel") for m in sentinels])
    forced = [c for c in deployment.calls if c[1] == "redis_backup.restore" and c[2]["force"]]
    assert forced[0][2]["part_of_set"] is True
    assert result["verify"]["ok"] is True and "verified" in result["comment"]
    assert all(deployment.running[key] for key in deployment.running)


def test_forced_cluster_restore_takes_a_rebuilt_nodes_backup_from_copy_to(runner):
    shared = "/mnt/shared/server2/rdb/rdb_backup_20251027_120000/backup_metadata.json"
    files = [f"server1:{LOCAL}", f"server3:{LOCAL}", f"server2:{shared}"]  # server2 was rebuilt bare
    deployment = Deployment("cluster", live_cluster(), files=files)
    module = runner(deployment, "cluster", copy_to="/mnt/shared")
    set_id = _written_set(module, "cluster", cluster_nodes(), copy_to="/mnt/shared")
    result = module.restore(set=set_id, force=True)
    assert result["retcode"] == 0, result
    forced = {c[0]: c[2]["backup"] for c in deployment.calls if c[1] == "redis_backup.restore" and c[2]["force"]}
    assert forced == {"server1": "/var/backups/redis/rdb/rdb_backup_20251027_120000",
                      "server2": "/mnt/shared/server2/rdb/rdb_backup_20251027_120000",
                      "server3": "/var/backups/redis/rdb/rdb_backup_20251027_120000"}
    actions = deployment.actions()
    first_restore = next(i for i, a in enumerate(actions) if a[1] == "redis_backup.restore")
    assert {a[0] for a in actions[:first_restore]} == {"server4", "server5", "server6"}
    assert all(a[1] == "service.stop" for a in actions[:first_restore])
    assert all(a[1] == "service.start" for a in actions[first_restore + 3:])


def test_a_missing_backup_without_copy_to_is_refused_before_anything_changes(runner):
    deployment = Deployment("cluster", live_cluster(), files=[f"server1:{LOCAL}", f"server3:{LOCAL}"])
    module = runner(deployment, "cluster")
    set_id = _written_set(module, "cluster", cluster_nodes())
    result = module.restore(set=set_id, force=True)
    assert result["retcode"] == 1 and deployment.actions() == []
    assert result["comment"].startswith("nothing changed: server2: backup rdb_backup_20251027_120000 is not on this "
                                        "minion (tried /var/backups/redis/rdb/rdb_backup_20251027_120000) and "
                                        "cache.redis.backup.copy_to is not set")


def test_a_replica_that_does_not_stop_aborts_and_everything_is_started_again(runner):
    deployment = Deployment("sentinel", live_sentinel(), files=[f"server1:{LOCAL}"],
                            stop_fails=[("server3", "redis-server")])
    module = runner(deployment, "sentinel")
    set_id = _written_set(module, "sentinel", sentinel_nodes())
    result = module.restore(set=set_id, force=True)
    assert result["retcode"] == 1
    assert not any(a[1] == "redis_backup.restore" for a in deployment.actions())
    assert result["comment"] == "nothing restored: a replica could not be stopped (it could be promoted)"
    started = [a for a in deployment.actions() if a[1] == "service.start"]
    assert ("server2", "service.start", "redis-server") in started
    assert ("witness1", "service.start", "redis-sentinel") in started


def test_a_sentinel_that_does_not_stop_aborts_before_any_replica_stops(runner):
    deployment = Deployment("sentinel", live_sentinel(), files=[f"server1:{LOCAL}"],
                            stop_fails=[("witness1", "redis-sentinel")])
    module = runner(deployment, "sentinel")
    result = module.restore(set=_written_set(module, "sentinel", sentinel_nodes()), force=True)
    assert result["retcode"] == 1
    assert result["comment"] == "nothing restored: a Sentinel could not be stopped (a failover could happen)"
    assert not any(a[2] == "redis-server" for a in deployment.actions())
    assert [a for a in deployment.actions() if a[1] == "service.start"] == [
        (m, "service.start", "redis-sentinel") for m in ("server1", "server2", "server3", "witness1")]


def test_a_failed_restore_still_starts_the_replicas_and_fails(runner):
    deployment = Deployment("sentinel", live_sentinel(), files=[f"server1:{LOCAL}"], restore_fails=("server1",))
    module = runner(deployment, "sentinel")
    set_id = _written_set(module, "sentinel", sentinel_nodes())
    result = module.restore(set=set_id, force=True)
    assert result["retcode"] == 1
    assert "server1: restore failed: ERROR: restore failed: checksum" in result["problems"][0]
    assert deployment.actions()[-1] == ("witness1", "service.start", "redis-sentinel")


def _cluster_restore(runner, **faults):
    files = [f"server{n}:{LOCAL}" for n in (1, 2, 3)]
    deployment = Deployment("cluster", live_cluster(), files=files, **faults)
    module = runner(deployment, "cluster")
    return deployment, module.restore(set=_written_set(module, "cluster", cluster_nodes()), force=True)


def test_one_failed_master_rolls_the_others_back_before_anything_starts(runner):
    deployment, result = _cluster_restore(runner, restore_fails=("server2",))
    assert result["retcode"] == 1
    actions = deployment.actions()
    restores = [a for a in actions if a[1] == "redis_backup.restore"]
    undone = [a for a in actions if a[1] == "redis_backup.undo_restore"]
    assert [a[0] for a in restores] == ["server1", "server2", "server3"]
    assert undone == [("server1", "redis_backup.undo_restore", "redis_backup_server1"),
                      ("server3", "redis_backup.undo_restore", "redis_backup_server3")]
    # the replicas start only after every master is back on its own data
    first_start = next(i for i, a in enumerate(actions) if a[1] == "service.start")
    assert first_start > actions.index(undone[-1])
    assert [a[0] for a in actions[first_start:]] == ["server4", "server5", "server6"]
    undo_call = next(c for c in deployment.calls if c[1] == "redis_backup.undo_restore")
    assert undo_call[2] == {"safety_copy": "/var/lib/redis_backup_server1", "part_of_set": True, "timeout": 900}
    assert result["rolled_back"] == {"server1": "/var/lib/redis_backup_server1",
                                     "server3": "/var/lib/redis_backup_server3"}
    assert "server2: restore failed: ERROR: restore failed: checksum" in result["problems"][0]
    assert result["comment"].startswith("set restore failed on server2; rolled back to their data from before the "
                                        "restore: server1, server3")
    assert "verify" not in result  # nothing of the set to verify


def test_a_master_that_stops_answering_is_a_failed_master_by_name(runner):
    deployment, result = _cluster_restore(runner, silent=("server3",))
    assert result["retcode"] == 1
    assert any(p.startswith("server3: restore did not answer: the minion stopped answering (saltutil.find_job)")
               for p in result["problems"])
    assert sorted(result["rolled_back"]) == ["server1", "server2"]
    assert [a[0] for a in deployment.actions() if a[1] == "service.start"] == ["server4", "server5", "server6"]


def test_a_master_still_restoring_at_the_bound_leaves_replicas_and_sentinels_stopped(runner):
    deployment, result = _cluster_restore(runner, still_running=("server2",))
    assert result["retcode"] == 1
    assert not [a for a in deployment.actions() if a[1] == "service.start"]
    assert result["left_stopped"] == ["server4", "server5", "server6"]
    assert sorted(result["rolled_back"]) == ["server1", "server3"]
    assert "server2 still restoring: server4, server5, server6 left stopped" in result["comment"]
    assert any(p.startswith("server2: restore still running after 900s") for p in result["problems"])


def test_a_rollback_that_fails_is_said(runner):
    deployment, result = _cluster_restore(runner, restore_fails=("server2",), undo_fails=("server1",))
    assert result["retcode"] == 1
    assert result["rolled_back"] == {"server3": "/var/lib/redis_backup_server3"}
    assert "server1" in result["rollback_failed"]
    assert "NOT rolled back (they hold the set's data): server1" in result["comment"]


def test_a_member_whose_sums_differ_from_the_manifest_refuses_the_whole_set(runner):
    other = meta("server2", slots=THIRDS["server2"])
    other["files"] = [dict(other["files"][0], sha256="ef" * 32)]  # replaced since, metadata to match
    deployment, result = _cluster_restore(runner, metadata={"server2": other})
    assert result["retcode"] == 1 and deployment.actions() == []
    assert not [c for c in deployment.calls if c[1] == "redis_backup.restore"]  # refused before the dry run
    assert result["problems"] == [f"server2: rdb_backup_20251027_120000: file dump.rdb.gz sha256 {'ef' * 8}... on "
                                  f"the node, {'ab' * 8}... in the set manifest"]
    assert result["comment"].startswith("nothing changed: server2: rdb_backup_20251027_120000: file dump.rdb.gz")


def test_list_marks_a_set_whose_members_are_gone(runner):
    deployment = Deployment("cluster", live_cluster(), gone=("server2:rdb_backup_20251027_120000",))
    module = runner(deployment, "cluster")
    set_id = _written_set(module, "cluster", cluster_nodes())
    listed = module.list_()
    item = listed["sets"][0]
    assert item["set_id"] == set_id and item["status"] == "incomplete"
    assert item["missing"] == ["server2:rdb_backup_20251027_120000"]
    assert item["reason"] == "members missing: server2:rdb_backup_20251027_120000"
    assert listed["table"][1].endswith("members missing: server2:rdb_backup_20251027_120000")
    deployment.gone.clear()
    assert module.list_()["sets"][0]["status"] == "complete"


def test_restore_arguments(runner):
    module = runner(Deployment("cluster", {}), "cluster")
    result = module.restore(set="set_20991231_000000")
    assert result["retcode"] == 1 and "no backup set set_20991231_000000" in result["comment"]
    result = module.restore(set="latest")
    assert result["retcode"] == 1 and "name the set: set=set_YYYYmmdd_HHMMSS" in result["comment"]
    with pytest.raises(SaltInvocationError, match="unknown argument"):
        module.restore(sett="set_20991231_000000")
    # Salt's own keyword arguments are not ours to refuse
    assert module.restore(set="set_20991231_000000", __pub_user="root")["retcode"] == 1


def test_restore_refuses_a_set_of_another_mode(runner):
    deployment = Deployment("sentinel", live_sentinel())
    module = runner(deployment, "sentinel")
    set_id = _written_set(module, "cluster", cluster_nodes())
    result = module.restore(set=set_id, force=True)
    assert result["retcode"] == 1 and deployment.calls == []
    assert "the set was taken in cluster mode; the deployment runs in sentinel mode now" in result["comment"]


def test_every_public_runner_hands_salt_runs_clients_to_the_exit_tidy_up(tmp_path):
    """salt-run's own clients are destroyed at its exit by redis_deployment's runner (no
    "unclosed Runner" warning after our output); ours reach it through its loaded shape."""
    module = load_runner()
    called = []
    deployment_runner = {"_close_salt_clients_at_exit": lambda: called.append(True)}
    shape = types.FunctionType((lambda: None).__code__, deployment_runner)  # globals as the loader's module has
    module.__salt__ = {"redis_deployment.shape": shape}
    module.__opts__ = {"cachedir": str(tmp_path)}
    module.__context__ = {}
    module.list_()
    assert module.restore(set="latest")["retcode"] == 1
    with pytest.raises(SaltInvocationError):
        module.run(type="full")
    assert called == [True, True, True]
    module.__salt__ = {}  # redis_deployment not loaded: nothing to tidy, nothing fails
    assert module.list_()["sets"] == []


def test_after_a_failover_the_new_masters_own_backup_is_checked_against_its_own_record(runner):
    """server2 is master now and restores its own backup of the set (no copy_to): its sums are
    compared with server2's record in the manifest, not with server1's."""
    own = meta("server2", role="slave")
    own["files"] = [dict(own["files"][0], sha256="12" * 32)]
    nodes = sentinel_nodes()
    nodes["server2"] = bs.node_entry({"hostname": "server2", "ip": "10.0.0.2", "port": 6379, "role": "replica"},
                                     "server2", True, own)
    deployment = Deployment("sentinel", live_sentinel(master="server2"), files=[f"server2:{LOCAL}"],
                            metadata={"server2": own})
    module = runner(deployment, "sentinel")
    result = module.restore(set=_written_set(module, "sentinel", nodes))
    assert result["retcode"] == 0, result["problems"]
    assert result["plan"]["restore"][0]["backup_of"] == "server2"
