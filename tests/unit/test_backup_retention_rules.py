"""_utils/redis_backup_retention.py: the retention rules as plain functions. Damage and a
check that could not finish are recorded apart and only damage makes a backup not-good;
whatever the clock says, the newest good backup and ``keep_min`` good ones of each type
stay, so do the backup just made and the members of the newest complete set (until a newer
complete set exists); set manifests and safety copies follow the same rules."""

import datetime
import importlib.util
import pathlib

from test_backup_runner import Deployment, cluster_creates, live_cluster, runner  # noqa: F401 (runner: a fixture)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_retention():
    path = ROOT / "_utils" / "redis_backup_retention.py"
    spec = importlib.util.spec_from_file_location("redis_backup_retention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rules = load_retention()
NOW = datetime.datetime(2025, 10, 27, 12, tzinfo=datetime.timezone.utc)


def backup(name, days_ago, kind="rdb", good=True, days=7, set_id=None):
    return {"name": name, "type": kind, "time": NOW - datetime.timedelta(days=days_ago), "days": days, "good": good,
            "set_id": set_id}


def kept(decisions):
    return [entry["name"] for entry, keep, _ in decisions if keep]


def reasons(decisions):
    return {entry["name"]: reason for entry, _, reason in decisions}


def test_damage_and_a_transient_failure_are_recorded_apart():
    damaged = rules.verification("t1", damage="dump.rdb.gz: sha256 differs")
    assert damaged["damaged"] is True and damaged["verified"] is False and not rules.is_good(damaged)
    timed_out = rules.verification("t2", transient="redis-check-rdb did not finish within 1s")
    assert "damaged" not in timed_out and timed_out["verify_transient"] is True and timed_out["verified"] is False
    assert rules.is_good(timed_out)
    # a transient failure after damage does not make the backup good again
    meta = dict(damaged)
    meta.update(timed_out)
    assert not rules.is_good(meta)
    assert rules.verification("t3") == {"verified": True, "verified_at": "t3", "verify_error": None,
                                        "verify_transient": False}
    assert rules.is_good({"verified": False, "verify_error": "zstd is not installed"})  # older metadata: no damage


def test_only_damage_makes_a_backup_not_good_for_prune():
    entries = [backup("damaged-newest", 9, good=False), backup("unverified", 10), backup("older", 11)]
    decisions = rules.decide(entries, NOW, keep_min=1)
    assert kept(decisions) == ["unverified"]
    assert reasons(decisions)["damaged-newest"] == "older than its retention (7 days), damaged"
    assert reasons(decisions)["unverified"].startswith("newest good rdb")


def test_the_newest_good_backup_of_each_type_stays_past_its_retention():
    entries = [backup("rdb-new", 30), backup("rdb-old", 40), backup("aof-new", 50, kind="aof"),
               backup("aof-old", 60, kind="aof")]
    assert kept(rules.decide(entries, NOW, keep_min=1)) == ["rdb-new", "aof-new"]


def test_keep_min_good_backups_of_each_type_stay_whatever_the_clock_says():
    entries = [backup(f"rdb-{n}", n) for n in range(5)] + [backup(f"aof-{n}", n, kind="aof") for n in range(3)]
    jumped = NOW + datetime.timedelta(days=3650)  # a forward clock jump far past every retention
    assert kept(rules.decide(entries, jumped)) == ["rdb-0", "aof-0", "rdb-1", "aof-1"]  # default keep_min 2
    assert kept(rules.decide(entries, jumped, keep_min=3)) == ["rdb-0", "aof-0", "rdb-1", "aof-1", "rdb-2", "aof-2"]
    assert "among the 2 newest good rdb" in reasons(rules.decide(entries, jumped))["rdb-1"]
    # damaged backups do not count towards keep_min
    entries = [backup("bad-0", 0, good=False), backup("bad-1", 1, good=False), backup("ok-2", 2), backup("ok-3", 3)]
    assert kept(rules.decide(entries, jumped)) == ["ok-2", "ok-3"]


def test_a_clock_behind_the_backups_keeps_them_within_retention():
    entries = [backup("future", -5), backup("later", -4)]
    assert kept(rules.decide(entries, NOW, keep_min=1)) == ["future", "later"]


def test_the_backup_just_made_stays_with_retention_zero():
    entries = [backup("just-made", 0, good=True, days=0), backup("damaged", 0, good=False, days=0)]
    decisions = rules.decide(entries, NOW + datetime.timedelta(seconds=1), keep_min=1, keep_names=["just-made"])
    assert kept(decisions) == ["just-made"]
    assert reasons(decisions)["just-made"] == "the backup just made"
    # a damaged backup just made stays too (its caller returns it)
    decisions = rules.decide(entries, NOW, keep_min=1, keep_names=["damaged"])
    assert "damaged" in kept(decisions)


def test_members_of_the_newest_complete_set_stay_until_a_newer_complete_set_exists():
    a, b, c = "set_20251020_030000", "set_20251021_030000", "set_20251022_030000"
    entries = [backup("in-c", 20, set_id=c), backup("in-b", 21, set_id=b), backup("in-a", 22, set_id=a)]
    # the master last said A was the newest complete set; C is newer, its status unknown to the node
    keep_sets = rules.protected_sets([a, b, c], a)
    assert keep_sets == {a, c}
    decisions = rules.decide(entries, NOW, keep_min=1, keep_sets=keep_sets)
    assert kept(decisions) == ["in-c", "in-a"]
    assert reasons(decisions)["in-a"].startswith(f"member of set {a}, the newest complete set")
    # C turned out complete: A's members may go
    assert rules.protected_sets([a, b, c], c) == {c}
    assert kept(rules.decide(entries, NOW, keep_min=1, keep_sets=rules.protected_sets([a, b, c], c))) == ["in-c"]
    # nothing known from the master yet: only the node's newest set
    assert rules.protected_sets([a, b], None) == {b}
    assert rules.protected_sets([], None) == set()


def test_set_ids_order_with_their_suffix():
    assert rules.set_key("set_20251027_120000_10") > rules.set_key("set_20251027_120000_2")
    assert rules.set_key("set_20251027_120000_2") > rules.set_key("set_20251027_120000")
    assert rules.set_key("../etc") is None
    assert rules.newer_set("set_20251027_120000", "set_20251026_120000") == "set_20251027_120000"
    assert rules.newer_set(None, "set_20251026_120000") == "set_20251026_120000"
    assert rules.newer_set(None, "junk") is None


def test_set_manifests_keep_the_newest_complete_set_and_keep_min_complete_ones():
    entries = [backup("set-partial-new", 40, kind="set", good=False), backup("set-complete", 50, kind="set"),
               backup("set-complete-older", 60, kind="set"), backup("set-complete-oldest", 70, kind="set"),
               backup("set-partial-old", 80, kind="set", good=False)]
    assert kept(rules.decide(entries, NOW, keep_min=2)) == ["set-complete", "set-complete-older"]
    assert kept(rules.decide(entries, NOW, keep_min=2, keep_names=["set-partial-new"])) == [
        "set-partial-new", "set-complete", "set-complete-older"]


def test_safety_copies_keep_the_newest_one():
    entries = [backup(f"data_backup_{n}", n, kind="safety copy", days=0) for n in (3, 1, 2)]
    assert kept(rules.decide(entries, NOW, keep_min=1)) == ["data_backup_1"]


def test_no_readable_time_is_kept():
    entry = dict(backup("unknown", 0), time=None)
    assert kept(rules.decide([entry, backup("old", 30)], NOW, keep_min=0)) == ["old", "unknown"]


def test_the_runner_tells_the_nodes_the_newest_complete_set_and_records_each_sets_retention(runner):  # noqa: F811
    deployment = Deployment("cluster", live_cluster(), create=cluster_creates(failed=("server3",)))
    module = runner(deployment, "cluster")
    partial = module.run(type="rdb", retention_days=3)
    deployment = Deployment("cluster", live_cluster(), create=cluster_creates())
    module = runner(deployment, "cluster")
    complete = module.run(type="rdb")
    creates = [c[2] for c in deployment.calls if c[1] == "redis_backup.create"]
    assert partial["status"] == "partial" and complete["status"] == "complete"
    assert creates[0] == {"type": "rdb", "timeout": 3600, "set_id": complete["set_id"]}  # no complete set yet
    deployment = Deployment("cluster", live_cluster(), create=cluster_creates())
    module = runner(deployment, "cluster")
    third = module.run(type="rdb")
    creates = [c[2] for c in deployment.calls if c[1] == "redis_backup.create"]
    assert creates[0] == {"type": "rdb", "timeout": 3600, "set_id": third["set_id"], "complete_set": complete["set_id"]}
    sets = {m["set_id"]: m for m in module._read_sets(module._sets_dir())}
    assert sets[partial["set_id"]]["retention_days"] == 3 and sets[third["set_id"]]["retention_days"] == 7
    assert "pruned_sets" not in third and "warnings" not in third
