"""_utils/redis_backup_sets.py: the set logic of ``salt-run redis_backup.run``/``list``/
``restore`` as plain functions of plain data (no Salt, no Redis): slot coverage, set status
and spread, the manifest, the restore plan and order, the checks after a restore, a member's
sums against the manifest, members gone from their nodes, and what follows the masters'
restore jobs. The helpers here (a node's backup metadata, a cluster's or a Sentinel
deployment's live status) are shared with tests/unit/test_backup_runner.py.
"""

import datetime
import importlib.util
import json
import pathlib

from support.loaders import utils_dunder as support_utils_dunder

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(relative, name):
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bs = _load("_utils/redis_backup_sets.py", "redis_backup_sets_under_test")


def utils_dunder():
    """``__utils__`` as Salt's loader gives it to the runner, for the utils modules it reaches."""
    return support_utils_dunder(["redis_backup_sets", "redis_backup_retention", "redis_backup_files"])


THIRDS = {"server1": [[0, 5460]], "server2": [[5461, 10922]], "server3": [[10923, 16383]]}


def meta(minion, kind="rdb", slots=None, role="master", timestamp="2025-10-27T12:00:00+00:00", last_save=None,
         keys=100, with_ttl=0, copied_to=None):
    name = f"{kind}_backup_{timestamp[:10].replace('-', '')}_120000"
    data = {
        "name": name, "type": kind, "timestamp": timestamp, "minion": minion, "compress": "gzip",
        "path": f"/var/backups/redis/{kind}/{name}", "node_id": f"id-{minion}" if slots is not None else None,
        "slots": slots, "replication_role": role, "keys": keys, "keys_with_ttl": with_ttl, "size": 2048,
        "verified": True, "redis_version": "7.0.15",
        "files": [{"name": "dump.rdb.gz", "source": "dump.rdb", "kind": "rdb", "size": 2048,
                   "sha256": "ab" * 32, "raw_size": 4096, "raw_sha256": "cd" * 32}],
    }
    if last_save:
        data["last_save"] = last_save
    if copied_to:
        data["copied_to"] = copied_to
    return data


def peer(n, role):
    return {"hostname": f"server{n}", "minion_id": f"server{n}", "ip": f"10.0.0.{n}", "port": 6379, "role": role}


def cluster_nodes(failed=(), kinds=("rdb",), seconds=(0, 1, 3)):
    nodes = {}
    for n in range(1, 7):
        minion = f"server{n}"
        if minion in failed:
            nodes[minion] = bs.node_entry(peer(n, "cluster-node"), minion, False, "ERROR: BGSAVE failed")
            continue
        master = n <= 3
        ret = {kind: meta(minion, kind, THIRDS.get(minion, []), "master" if master else "slave",
                          f"2025-10-27T12:00:{seconds[(n - 1) % 3]:02d}+00:00") for kind in kinds}
        ret = ret[kinds[0]] if len(kinds) == 1 else dict(ret, pruned=[])
        nodes[minion] = bs.node_entry(peer(n, "cluster-node"), minion, True, ret)
    return nodes


def sentinel_nodes(failed=(), master="server1"):
    nodes = {}
    for n in range(1, 4):
        minion = f"server{n}"
        if minion in failed:
            nodes[minion] = bs.node_entry(peer(n, "replica"), minion, False, "ERROR: refused")
            continue
        nodes[minion] = bs.node_entry(peer(n, "master" if n == 1 else "replica"), minion, True,
                                      meta(minion, role="master" if minion == master else "slave"))
    return nodes


def manifest_of(mode, nodes, kinds=("rdb",), copy_to=None):
    started = datetime.datetime(2025, 10, 27, 12, 0, tzinfo=datetime.timezone.utc)
    return bs.build_manifest("set_20251027_120000", mode, list(kinds), nodes, started,
                             started + datetime.timedelta(seconds=30), "/etc/salt/my_multihead_cluster.yaml",
                             {"copy_to": copy_to})


def live_cluster(masters=None, down=()):
    """redis_cluster.status of a 6-node cluster: server1-3 masters (or ``masters``:
    {minion: slots}), server4-6 replicas of server1-3 (``master`` set by the test otherwise)."""
    masters = masters or THIRDS
    live = {}
    for n in range(1, 7):
        minion = f"server{n}"
        if minion in down:
            live[minion] = {"ping": False, "error": "connection refused"}
            continue
        status = {"ping": True, "cluster_enabled": True, "cluster_state": "ok", "address": f"10.0.0.{n}:6379",
                  "keys": 100, "node_id": f"id-{minion}"}
        if minion in masters:
            status.update(cluster_role="master", slots=masters[minion])
        else:
            status.update(cluster_role="replica", slots=[], master=f"10.0.0.{n - 3}:6379" if n > 3 else None)
        live[minion] = status
    return live


def live_sentinel(master="server1", down=()):
    live = {}
    for n in range(1, 4):
        minion = f"server{n}"
        if minion in down:
            live[minion] = {"ping": False, "error": "connection refused"}
        else:
            live[minion] = {"ping": True, "cluster_enabled": False, "keys": 100, "address": f"10.0.0.{n}:6379",
                            "replication_role": "master" if minion == master else "slave"}
    return live


# ---------------------------------------------------------------- slots and times


def test_slot_ranges_merge_and_gaps():
    assert bs.merge_ranges([[10923, 16383], [0, 5460], [5461, 10922]]) == [[0, 16383]]
    assert bs.merge_ranges([[0, 10], [5, 20], [30, 30]]) == [[0, 20], [30, 30]]
    assert bs.missing_slots([[0, 5460], [10923, 16383]]) == [[5461, 10922]]
    assert bs.missing_slots([]) == [[0, 16383]]
    assert bs.missing_slots([[0, 16383]]) == []
    assert bs.missing_slots([[1, 16382]]) == [[0, 0], [16383, 16383]]
    assert bs.format_ranges([[0, 0], [16383, 16383], [5, 9]]) == "0, 5-9, 16383"


def test_node_backups_reads_one_type_or_both():
    one = meta("server1")
    assert bs.node_backups(one) == {"rdb": one}
    both = {"rdb": meta("server1"), "aof": meta("server1", "aof"), "pruned": []}
    assert set(bs.node_backups(both)) == {"rdb", "aof"}
    assert bs.node_backups("ERROR: Redis does not run") == {}
    assert bs.node_backups({"unexpected": True}) == {}


def test_node_entry_records_identity_files_and_the_snapshot_moment():
    entry = bs.node_entry(peer(1, "cluster-node"), "server1", True,
                          meta("server1", slots=[[0, 5460]], last_save="2025-10-27T12:00:07+00:00"))
    assert entry["status"] == "ok"
    assert (entry["node_id"], entry["slots"], entry["replication_role"]) == ("id-server1", [[0, 5460]], "master")
    backup = entry["backups"]["rdb"]
    assert backup["files"][0]["sha256"] == "ab" * 32 and backup["keys"] == 100
    assert backup["path"] == "/var/backups/redis/rdb/rdb_backup_20251027_120000"
    assert backup["snapshot_time"] == "2025-10-27T12:00:07+00:00"  # LASTSAVE, not the start
    failed = bs.node_entry(peer(2, "cluster-node"), "server2", False, "ERROR: BGSAVE failed")
    assert failed["status"] == "failed" and failed["error"] == "ERROR: BGSAVE failed" and failed["backups"] == {}


# ---------------------------------------------------------------- set status and spread


def test_a_cluster_set_is_complete_when_the_masters_cover_every_slot():
    assert bs.assess("cluster", cluster_nodes(), ["rdb"]) == ("complete", None)
    # replicas' backups do not cover anything: a failed replica leaves the set complete
    assert bs.assess("cluster", cluster_nodes(failed=("server5",)), ["rdb"]) == ("complete", None)


def test_a_cluster_set_missing_a_master_is_partial_and_says_which_slots():
    status, reason = bs.assess("cluster", cluster_nodes(failed=("server2",)), ["rdb"])
    assert status == "partial"
    assert "rdb: slots 5461-10922 are in no master's backup" in reason
    assert "server2: ERROR: BGSAVE failed" in reason


def test_a_set_of_both_types_needs_both_covered():
    nodes = cluster_nodes(kinds=("rdb", "aof"))
    assert bs.assess("cluster", nodes, ["rdb", "aof"]) == ("complete", None)
    del nodes["server3"]["backups"]["aof"]
    status, reason = bs.assess("cluster", nodes, ["rdb", "aof"])
    assert status == "partial" and reason.startswith("aof: slots 10923-16383")


def test_a_sentinel_set_is_complete_with_the_masters_backup():
    assert bs.assess("sentinel", sentinel_nodes(), ["rdb"]) == ("complete", None)
    assert bs.assess("sentinel", sentinel_nodes(failed=("server3",)), ["rdb"]) == ("complete", None)
    status, reason = bs.assess("sentinel", sentinel_nodes(failed=("server1",)), ["rdb"])
    assert status == "partial"
    assert "no backup of the master" in reason and "server1: ERROR: refused" in reason


def test_a_set_where_nothing_worked():
    status, reason = bs.assess("sentinel", sentinel_nodes(failed=("server1", "server2", "server3")), ["rdb"])
    assert status == "partial" and reason.startswith("no node's backup succeeded")


def test_spread_is_between_the_first_and_the_last_snapshot():
    timing = bs.spread(cluster_nodes(seconds=(0, 1, 3)), ["rdb"])
    assert timing["seconds"] == 3.0
    assert timing["rdb"] == {"first": "2025-10-27T12:00:00+00:00", "last": "2025-10-27T12:00:03+00:00",
                             "seconds": 3.0}
    assert bs.spread({}, ["rdb"]) == {"seconds": None}


def test_the_manifest_holds_what_a_restore_needs_and_no_secret():
    manifest = manifest_of("cluster", cluster_nodes())
    assert manifest["set_id"] == "set_20251027_120000" and manifest["mode"] == "cluster"
    assert manifest["status"] == "complete" and "reason" not in manifest
    assert manifest["time"] == "2025-10-27T12:00:00+00:00" and manifest["spread_seconds"] == 3.0
    node = manifest["nodes"]["server2"]
    assert node["hostname"] == "server2" and node["node_id"] == "id-server2" and node["slots"] == [[5461, 10922]]
    assert node["backups"]["rdb"]["files"][0]["sha256"] == "ab" * 32
    text = json.dumps(manifest)
    assert "password" not in text.lower()
    partial = manifest_of("cluster", cluster_nodes(failed=("server1",)))
    assert partial["status"] == "partial" and "0-5460" in partial["reason"]


def test_cluster_restore_plan_restores_the_masters_and_stops_the_replicas():
    plan = bs.restore_plan(manifest_of("cluster", cluster_nodes(), copy_to="/mnt/shared"), live_cluster(),
                           copy_to="/mnt/shared")
    assert plan["problems"] == [] and plan["warnings"] == []
    assert [item["minion"] for item in plan["restore"]] == ["server1", "server2", "server3"]
    item = plan["restore"][1]
    assert item["from"] == "server2" and item["slots"] == [[5461, 10922]] and item["keys"] == 100
    assert [c["path"] for c in item["candidates"]] == [
        "/var/backups/redis/rdb/rdb_backup_20251027_120000",
        "/mnt/shared/server2/rdb/rdb_backup_20251027_120000"]
    assert plan["stop"] == ["server4", "server5", "server6"] and plan["sentinels"] == []
    steps = bs.restore_steps(plan, {})
    assert steps == [
        ("stop", "server4", "redis-server"), ("stop", "server5", "redis-server"), ("stop", "server6", "redis-server"),
        ("restore", "server1", "rdb_backup_20251027_120000"), ("restore", "server2", "rdb_backup_20251027_120000"),
        ("restore", "server3", "rdb_backup_20251027_120000"),
        ("start", "server4", "redis-server"), ("start", "server5", "redis-server"),
        ("start", "server6", "redis-server"),
    ]


def test_cluster_restore_after_a_failover_needs_copy_to():
    # server5 took over server2's slots; server2 is its replica now
    masters = {"server1": THIRDS["server1"], "server5": THIRDS["server2"], "server3": THIRDS["server3"]}
    live = live_cluster(masters)
    live["server2"].update(cluster_role="replica", slots=[], master="10.0.0.5:6379")
    plan = bs.restore_plan(manifest_of("cluster", cluster_nodes()), live)
    assert len(plan["problems"]) == 1
    assert "slots 5461-10922 moved from server2 to server5" in plan["problems"][0]
    assert "CLUSTER FAILOVER" in plan["problems"][0] and "copy_to" in plan["problems"][0]
    plan = bs.restore_plan(manifest_of("cluster", cluster_nodes()), live, copy_to="/mnt/shared")
    assert plan["problems"] == []
    item = next(i for i in plan["restore"] if i["from"] == "server2")
    assert item["minion"] == "server5"
    assert [c["path"] for c in item["candidates"]] == ["/mnt/shared/server2/rdb/rdb_backup_20251027_120000"]
    assert "server2" in plan["stop"] and "server5" not in plan["stop"]
    assert any("restores it from copy_to" in w for w in plan["warnings"])


def test_a_partial_or_resharded_set_is_refused():
    plan = bs.restore_plan(manifest_of("cluster", cluster_nodes(failed=("server3",))), live_cluster())
    assert any("is partial" in p for p in plan["problems"])
    resharded = {"server1": [[0, 6000]], "server2": [[6001, 10922]], "server3": THIRDS["server3"]}
    plan = bs.restore_plan(manifest_of("cluster", cluster_nodes()), live_cluster(resharded))
    assert any("slots 0-5460 (backed up on server1) are now served by server1 (resharded" in p
               for p in plan["problems"])


def test_a_down_node_is_left_alone_and_said():
    live = live_cluster(down=("server6",))
    plan = bs.restore_plan(manifest_of("cluster", cluster_nodes()), live)
    assert plan["problems"] == [] and plan["down"] == ["server6"] and plan["stop"] == ["server4", "server5"]
    assert any(w.startswith("server6 does not answer") for w in plan["warnings"])
    down_master = bs.restore_plan(manifest_of("cluster", cluster_nodes()), live_cluster(down=("server2",)))
    assert any("served by no running master now" in p for p in down_master["problems"])


def test_sentinel_restore_plan_stops_sentinels_then_replicas():
    plan = bs.restore_plan(manifest_of("sentinel", sentinel_nodes()), live_sentinel(),
                           ["server1", "server2", "server3", "witness1"])
    assert plan["problems"] == []
    assert [(i["minion"], i["from"]) for i in plan["restore"]] == [("server1", "server1")]
    assert plan["stop"] == ["server2", "server3"]
    services = {m: {"server": "redis-server", "sentinel": "redis-sentinel"} for m in ("server2", "server3")}
    steps = bs.restore_steps(plan, services)
    assert steps[:4] == [("stop", m, "redis-sentinel") for m in ("server1", "server2", "server3", "witness1")]
    assert steps[4:6] == [("stop", "server2", "redis-server"), ("stop", "server3", "redis-server")]
    assert steps[6] == ("restore", "server1", "rdb_backup_20251027_120000")
    assert steps[7:9] == [("start", "server2", "redis-server"), ("start", "server3", "redis-server")]
    assert steps[9:] == [("start", m, "redis-sentinel") for m in ("server1", "server2", "server3", "witness1")]


def test_sentinel_restore_after_a_failover_goes_to_the_current_master():
    manifest = manifest_of("sentinel", sentinel_nodes())
    plan = bs.restore_plan(manifest, live_sentinel(master="server2"), ["server1", "server2", "server3"],
                           copy_to="/mnt/shared")
    assert plan["problems"] == []
    item = plan["restore"][0]
    assert (item["minion"], item["from"]) == ("server2", "server1")
    assert [c["path"] for c in item["candidates"]] == [
        "/mnt/shared/server1/rdb/rdb_backup_20251027_120000",          # the master's backup, shared
        "/var/backups/redis/rdb/rdb_backup_20251027_120000",            # server2's own, taken as a replica
        "/mnt/shared/server2/rdb/rdb_backup_20251027_120000"]
    assert plan["stop"] == ["server1", "server3"]
    without_own = dict(manifest, nodes={m: n for m, n in manifest["nodes"].items() if m != "server2"})
    plan = bs.restore_plan(without_own, live_sentinel(master="server2"), ["server1"])
    assert any("fail back to server1" in p for p in plan["problems"])


def test_sentinel_restore_needs_one_master():
    live = live_sentinel()
    live["server3"]["replication_role"] = "master"
    plan = bs.restore_plan(manifest_of("sentinel", sentinel_nodes()), live, ["server1"])
    assert plan["problems"] == ["expected one running master, found 2 (server1, server3): let Sentinel settle first"]


def test_restore_type_choice():
    both = manifest_of("cluster", cluster_nodes(kinds=("rdb", "aof")), kinds=("rdb", "aof"))
    assert bs.choose_type(both) == "rdb" and bs.choose_type(both, "aof") == "aof"
    only_rdb = manifest_of("cluster", cluster_nodes())
    plan = bs.restore_plan(only_rdb, live_cluster(), kind="aof")
    assert plan["problems"] == ["the set holds no aof backups (it holds rdb)"]


# ---------------------------------------------------------------- verification


def test_verification_after_a_restore():
    plan = bs.restore_plan(manifest_of("cluster", cluster_nodes()), live_cluster())
    assert bs.verify_restore("cluster", plan, live_cluster()) == ([], [])
    live = live_cluster()
    live["server4"]["keys"] = 7
    live["server2"]["cluster_state"] = "fail"
    live["server3"]["keys"] = 101
    live["server1"]["keys"] = 90
    problems, warnings = bs.verify_restore("cluster", plan, live)
    assert "server4: 7 keys, its master server1 has 90 (still syncing?)" in problems
    assert "server2: cluster_state:fail" in problems
    # more keys than the backup on server3: clients wrote; its DBSIZE (database 0) alone says nothing of the restore
    assert not [problem for problem in problems if problem.startswith("server3")]
    assert warnings == []
    live = live_cluster()
    live["server5"] = {"ping": False, "error": "connection refused"}
    assert bs.verify_restore("cluster", plan, live)[0] == ["server5: Redis does not answer (connection refused)"]
    plan["down"] = ["server5"]
    assert bs.verify_restore("cluster", plan, live) == ([], [])


def test_sentinel_verification_wants_replicas_back():
    plan = bs.restore_plan(manifest_of("sentinel", sentinel_nodes()), live_sentinel(), ["server1"])
    live = live_sentinel()
    assert bs.verify_restore("sentinel", plan, live) == ([], [])
    live["server3"]["replication_role"] = "master"
    assert bs.verify_restore("sentinel", plan, live)[0] == ["server3: came back as master, not as a replica"]


# ---------------------------------------------------------------- minions and events


# ---------------------------------------------------------------- what follows the masters' restore jobs


def restored(minion):
    return {"ret": {"result": True, "backup": "rdb_backup_20251027_120000", "safety_copy": f"/var/lib/{minion}_old"},
            "retcode": 0}


def test_a_job_answer_is_done_only_when_the_restore_returned_its_result():
    assert bs.job_answer(restored("server1"))["state"] == "done"
    failed = bs.job_answer({"ret": "ERROR: restore of x failed: disk full", "retcode": 1})
    assert failed["state"] == "failed" and failed["error"] == "ERROR: restore of x failed: disk full"
    assert bs.job_answer({"ret": {"result": None}, "retcode": 0})["state"] == "failed"  # a dry run is no restore
    silent = bs.job_answer({"failed": True})
    assert silent["state"] == "silent" and "saltutil.find_job" in silent["error"]
    assert bs.job_answer(None)["state"] == "running"


def test_all_masters_restored_start_the_rest_and_roll_nothing_back():
    answers = {m: bs.job_answer(restored(m)) for m in ("server1", "server2", "server3")}
    decision = bs.set_restore_decision(answers)
    assert decision == {"ok": True, "start": True, "done": ["server1", "server2", "server3"], "failed": {},
                        "running": [], "rollback": {}}


def test_one_failed_master_rolls_the_others_back_to_their_safety_copies():
    answers = {m: bs.job_answer(restored(m)) for m in ("server1", "server3")}
    answers["server2"] = bs.job_answer({"ret": "ERROR: checksum", "retcode": 1})
    decision = bs.set_restore_decision(answers)
    assert decision["ok"] is False and decision["start"] is True
    assert decision["failed"] == {"server2": "ERROR: checksum"}
    assert decision["rollback"] == {"server1": "/var/lib/server1_old", "server3": "/var/lib/server3_old"}


def test_a_silent_master_is_a_failed_one():
    answers = {"server1": bs.job_answer(restored("server1")), "server2": bs.job_answer({"failed": True})}
    decision = bs.set_restore_decision(answers)
    assert decision["ok"] is False and list(decision["failed"]) == ["server2"]
    assert decision["rollback"] == {"server1": "/var/lib/server1_old"} and decision["start"] is True


def test_a_master_still_restoring_keeps_everything_else_stopped():
    answers = {"server1": bs.job_answer(restored("server1")), "server2": bs.job_answer(None)}
    decision = bs.set_restore_decision(answers)
    assert decision["ok"] is False and decision["start"] is False and decision["running"] == ["server2"]
    assert decision["rollback"] == {"server1": "/var/lib/server1_old"}


# ---------------------------------------------------------------- members against the manifest


def test_a_members_sums_are_compared_with_the_manifests_record():
    manifest = manifest_of("cluster", cluster_nodes())
    recorded = manifest["nodes"]["server2"]["backups"]["rdb"]
    node = meta("server2", slots=THIRDS["server2"])
    assert bs.sum_mismatches("server2", recorded, node) == []
    changed = dict(node, files=[dict(node["files"][0], raw_sha256="00" * 32)])
    assert bs.sum_mismatches("server2", recorded, changed) == [
        f"server2: rdb_backup_20251027_120000: file dump.rdb.gz raw_sha256 {'00' * 8}... on the node, {'cd' * 8}... "
        "in the set manifest"]
    other_file = dict(node, files=[dict(node["files"][0], name="dump.rdb.zst")])
    assert bs.sum_mismatches("server2", recorded, other_file) == [
        "server2: rdb_backup_20251027_120000: file dump.rdb.gz is in the set manifest, not in the node's backup",
        "server2: rdb_backup_20251027_120000: file dump.rdb.zst is in the node's backup, not in the set manifest"]
    assert bs.sum_mismatches("server2", recorded, "ERROR: No such file") == [
        "server2: rdb_backup_20251027_120000: its metadata cannot be read (ERROR: No such file)"]


def test_a_set_whose_member_backups_are_gone_is_marked_incomplete():
    manifest = manifest_of("cluster", cluster_nodes(failed=("server5",)))
    name = "rdb_backup_20251027_120000"
    present = {f"server{n}": [name] for n in range(1, 7)}
    present["server3"] = []
    present["server6"] = None  # did not answer
    check = bs.member_check(manifest, present)
    assert check == {"missing": [f"server3:{name}"], "unchecked": ["server6"]}
    listed = bs.mark_listed({"set_id": manifest["set_id"], "status": "complete", "reason": None}, check)
    assert listed["status"] == "incomplete" and listed["missing"] == [f"server3:{name}"]
    assert listed["reason"] == f"members missing: server3:{name}" and listed["unchecked"] == ["server6"]
    # its copy in copy_to still restores it
    assert bs.member_check(manifest, present, {f"server3:{name}"})["missing"] == []
    whole = bs.mark_listed({"status": "complete"}, bs.member_check(manifest, {m: [name] for m in present}))
    assert whole == {"status": "complete"}


# ---------------------------------------------------------------- a single node of a Sentinel deployment


def test_a_sentinel_deployments_master_is_restored_only_as_part_of_a_set():
    module = _load("_modules/redis_backup.py", "redis_backup_module_refusals")
    peers = [{"hostname": f"server{n}"} for n in (1, 2, 3)]
    live = {"cluster_enabled": False, "replication_role": "master", "connected_replicas": 0, "cluster_replicas": 0,
            "running": True}
    backup = {"type": "rdb"}
    module.__pillar__ = {"redis": {"mode": "sentinel", "role": "master", "peers": peers}}
    reasons = module._refusals(backup, live, False)  # no replica linked at this moment: refused all the same
    assert len(reasons) == 1 and "Sentinel" in reasons[0] and "salt-run redis_backup.restore" in reasons[0]
    assert module._refusals(backup, live, True) == []
    module.__pillar__["redis"]["role"] = "replica"  # a replica promoted by a failover
    assert "salt-run redis_backup.restore" in module._refusals(backup, live, False)[0]
    module.__pillar__ = {"redis": {"mode": "cluster", "role": "cluster-node", "peers": peers}}
    assert module._refusals(backup, live, False) == []
