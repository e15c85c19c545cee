"""The health rules of ``redis_cluster.health`` (_utils/redis_health.py), each on INFO
outputs recorded from a real redis-server 7.0.15 (Debian's) as redis-py parses them,
trimmed to the fields the rules read; a test changes only the fields its case is about."""

import datetime

import pytest
from croniter import croniter
from support.lab import ROOT
from support.loaders import load_file

rules = load_file("redis_health_rules", ROOT / "_utils" / "redis_health.py")
LIMITS = rules.thresholds()
UTC = datetime.timezone.utc

# `redis-server --port 17001 --save "900 1 300 10 60 10000" --appendonly yes` with a replica,
# after 100 SETs, 100 GETs of those keys and 100 GETs of missing ones.
MASTER_INFO = {
    "redis_version": "7.0.15", "redis_mode": "standalone", "run_id": "b8ee64e7168120a78eeea29bff1fded1ca5f61d7",
    "uptime_in_seconds": 2, "connected_clients": 1, "maxclients": 10000, "blocked_clients": 0,
    "used_memory": 1101880, "used_memory_human": "1.05M", "maxmemory": 0, "maxmemory_human": "0B",
    "maxmemory_policy": "noeviction", "loading": 0, "rdb_changes_since_last_save": 100, "rdb_bgsave_in_progress": 0,
    "rdb_last_save_time": 1796552082, "rdb_last_bgsave_status": "ok", "aof_enabled": 1,
    "aof_rewrite_in_progress": 0, "aof_last_bgrewrite_status": "ok", "aof_last_write_status": "ok",
    "total_connections_received": 2, "rejected_connections": 0, "evicted_keys": 0, "keyspace_hits": 100,
    "keyspace_misses": 100, "role": "master", "connected_slaves": 1,
    "slave0": {"ip": "127.0.0.1", "port": 17002, "state": "online", "offset": 2913, "lag": 1},
    "master_replid": "5c2b661a0bb4d313f89813193d08c0792b27299f", "master_repl_offset": 2913, "cluster_enabled": 0,
    "db0": {"keys": 100, "expires": 0, "avg_ttl": 0},
}
# Its replica (`--replicaof "127.0.0.1 17001"`), in sync.
REPLICA_INFO = {
    "redis_version": "7.0.15", "redis_mode": "standalone", "run_id": "6d4d4f479c7268ad8660d24432d72869d06022d7",
    "connected_clients": 1, "maxclients": 10000, "used_memory": 917144, "used_memory_human": "895.65K",
    "maxmemory": 0, "maxmemory_human": "0B", "maxmemory_policy": "noeviction", "rdb_changes_since_last_save": 0,
    "rdb_bgsave_in_progress": 0, "rdb_last_save_time": 1796552082, "rdb_last_bgsave_status": "ok",
    "aof_enabled": 0, "rejected_connections": 0, "evicted_keys": 0, "keyspace_hits": 0, "keyspace_misses": 0,
    "role": "slave", "master_host": "127.0.0.1", "master_port": 17001, "master_link_status": "up",
    "master_last_io_seconds_ago": 1, "master_sync_in_progress": 0, "slave_read_repl_offset": 2913,
    "slave_repl_offset": 2913, "connected_slaves": 0, "master_repl_offset": 2913, "cluster_enabled": 0,
}
# The same replica one second after REPLICAOF: the master still forking its RDB.
REPLICA_SYNCING = dict(REPLICA_INFO, master_link_status="down", master_last_io_seconds_ago=-1,
                       master_sync_in_progress=1)
SAVE = "900 1 300 10 60 10000"  # CONFIG GET save of both
NOW = 1796552082 + 10


def info(**changes):
    return dict(MASTER_INFO, **changes)


def statuses(checks):
    return {c["name"]: c["status"] for c in checks}


# ---------------------------------------------------------------- summary


def test_the_worst_check_wins_with_nagios_codes():
    ok, warning, critical = (rules.check(n, s) for n, s in (("a", "OK"), ("b", "WARNING"), ("c", "CRITICAL")))
    assert rules.summary([]) == {"status": "OK", "code": 0, "checks": []}
    assert rules.summary([ok])["code"] == 0
    assert rules.summary([ok, warning]) == {"status": "WARNING", "code": 1, "checks": [ok, warning]}
    assert rules.summary([warning, critical, ok])["status"] == "CRITICAL"
    assert rules.summary([warning, critical, ok])["code"] == 2
    assert set(ok) == {"name", "value", "threshold", "status", "detail"}


def test_an_unreachable_server_is_critical_with_the_reason():
    refused = rules.unreachable("ping", "refused", "ConnectionError: Error 111 connecting to 127.0.0.1:6379.")
    assert refused["status"] == "CRITICAL" and refused["detail"].startswith("refused: connection refused")
    stopped = rules.unreachable("ping", "timeout", "TimeoutError: Timeout reading from socket", 2.0)
    assert stopped["status"] == "CRITICAL" and stopped["detail"].startswith("timeout:") and "2.0s" in stopped["detail"]
    for failure in ("auth", "loading", "busy", "maxclients"):
        assert rules.unreachable("ping", failure, "x")["detail"].startswith(failure + ":")


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize("used, expected", [(80, "OK"), (90, "WARNING"), (95, "WARNING"), (97.9, "WARNING"),
                                            (98, "CRITICAL"), (101, "CRITICAL")])
def test_memory_under_noeviction_warns_at_90_and_is_critical_at_98_percent(used, expected):
    got = rules.memory(info(maxmemory=1_000_000, used_memory=int(used * 10_000)), LIMITS)
    assert got["status"] == expected, got
    assert got["value"] == pytest.approx(used, abs=0.1)


def test_memory_under_an_eviction_policy_is_ok_when_full():
    got = rules.memory(info(maxmemory=1_000_000, used_memory=1_000_000, maxmemory_policy="allkeys-lru"), LIMITS)
    assert got["status"] == "OK" and "full cache is normal" in got["detail"]


def test_no_maxmemory_is_a_warning():
    assert rules.memory(MASTER_INFO, LIMITS)["status"] == "WARNING"  # recorded: maxmemory 0


def test_the_eviction_rate_is_measured_between_checks_of_one_server_process():
    lru = info(maxmemory_policy="allkeys-lru", evicted_keys=5000)
    assert rules.evictions(MASTER_INFO, None, NOW, LIMITS) is None  # noeviction: nothing to measure
    first = rules.evictions(lru, None, NOW, LIMITS)
    assert first["status"] == "OK" and "first check" in first["detail"]
    previous = {"run_id": lru["run_id"], "time": NOW - 10, "evicted_keys": 4000}
    assert rules.evictions(lru, previous, NOW, LIMITS)["value"] == 100.0
    assert rules.evictions(lru, previous, NOW, LIMITS)["status"] == "OK"
    busy = dict(lru, evicted_keys=4000 + 20_000)
    assert rules.evictions(busy, previous, NOW, LIMITS)["status"] == "WARNING"  # 2000/s > 1000/s
    restarted = dict(previous, run_id="another-process")
    assert "first check" in rules.evictions(busy, restarted, NOW, LIMITS)["detail"]


# ---------------------------------------------------------------- clients, hit rate


def test_clients_warn_at_90_percent_of_maxclients():
    assert rules.clients(MASTER_INFO, LIMITS)["status"] == "OK"
    assert rules.clients(info(connected_clients=8999), LIMITS)["status"] == "OK"
    assert rules.clients(info(connected_clients=9000), LIMITS)["status"] == "WARNING"


def test_rejected_connections_growing_is_a_warning():
    previous = {"run_id": MASTER_INFO["run_id"], "time": NOW - 60, "rejected_connections": 3}
    assert rules.rejected_connections(info(rejected_connections=3), previous, NOW)["status"] == "OK"
    grown = rules.rejected_connections(info(rejected_connections=7), previous, NOW)
    assert grown["status"] == "WARNING" and grown["value"] == 4
    assert rules.rejected_connections(info(rejected_connections=7), None, NOW)["status"] == "OK"


def test_the_hit_rate_is_judged_only_after_enough_lookups():
    idle = rules.hit_rate(MASTER_INFO, LIMITS)  # recorded: 100 hits, 100 misses
    assert idle["status"] == "OK" and "fewer than 1000" in idle["detail"]
    assert rules.hit_rate(info(keyspace_hits=790, keyspace_misses=210), LIMITS)["status"] == "WARNING"
    assert rules.hit_rate(info(keyspace_hits=800, keyspace_misses=200), LIMITS)["status"] == "OK"


# ---------------------------------------------------------------- persistence


def test_rdb_changes_are_judged_against_the_save_schedule_not_a_bare_age():
    saved_at = MASTER_INFO["rdb_last_save_time"]
    fine = {"rdb_last_bgsave": "OK", "rdb_changes_since_last_save": "OK"}
    assert statuses(rules.rdb(MASTER_INFO, SAVE, NOW)) == fine
    # An idle database: no change, a save days ago.
    assert statuses(rules.rdb(info(rdb_changes_since_last_save=0), SAVE, saved_at + 86400 * 3))[
        "rdb_changes_since_last_save"] == "OK"
    # 100 changes for longer than 300 s (+ slack): the "300 10" rule should have saved.
    late = rules.rdb(MASTER_INFO, SAVE, saved_at + 400)
    assert statuses(late)["rdb_changes_since_last_save"] == "WARNING"
    assert "after 300s once 10 keys changed" in late[1]["detail"]
    # 5 changes: only "900 1" applies.
    assert statuses(rules.rdb(info(rdb_changes_since_last_save=5), SAVE, saved_at + 400))[
        "rdb_changes_since_last_save"] == "OK"
    assert statuses(rules.rdb(info(rdb_changes_since_last_save=5), SAVE, saved_at + 1000))[
        "rdb_changes_since_last_save"] == "WARNING"
    # A save running, or no schedule at all: not late.
    assert statuses(rules.rdb(info(rdb_bgsave_in_progress=1), SAVE, saved_at + 4000))[
        "rdb_changes_since_last_save"] == "OK"
    assert statuses(rules.rdb(MASTER_INFO, "", saved_at + 4000))["rdb_changes_since_last_save"] == "OK"


def test_a_failed_bgsave_or_aof_write_is_critical_and_a_failed_rewrite_a_warning():
    assert statuses(rules.rdb(info(rdb_last_bgsave_status="err"), SAVE, NOW))["rdb_last_bgsave"] == "CRITICAL"
    assert statuses(rules.aof(MASTER_INFO)) == {"aof_last_write": "OK", "aof_last_bgrewrite": "OK"}
    assert statuses(rules.aof(info(aof_last_write_status="err")))["aof_last_write"] == "CRITICAL"
    assert statuses(rules.aof(info(aof_last_bgrewrite_status="err")))["aof_last_bgrewrite"] == "WARNING"
    assert rules.aof(REPLICA_INFO) == []  # AOF off


# ---------------------------------------------------------------- slow log


def test_new_slowlog_entries_warn_once_above_the_threshold():
    run_id = MASTER_INFO["run_id"]
    first = rules.slowlog(40, None, run_id, LIMITS)
    assert first["status"] == "OK" and "first check" in first["detail"]
    previous = {"run_id": run_id, "slowlog_last_id": 40}
    newest = [(52, 25000, "EVAL"), (51, 12000, "KEYS")]
    many = rules.slowlog(52, previous, run_id, LIMITS, newest)
    assert many["status"] == "WARNING" and many["value"] == 12 and "slowest EVAL 25.0 ms" in many["detail"]
    assert rules.slowlog(52, {"run_id": run_id, "slowlog_last_id": 52}, run_id, LIMITS)["status"] == "OK"
    assert rules.slowlog(45, previous, run_id, LIMITS)["status"] == "OK"  # 5 new, limit 10
    # The first entry ever (id 0) after an empty log.
    assert rules.slowlog(0, {"run_id": run_id, "slowlog_last_id": None}, run_id, dict(LIMITS, slowlog_new_entries=0))[
        "status"] == "WARNING"


# ---------------------------------------------------------------- replication


def test_a_replica_in_sync_is_ok_and_a_down_link_critical():
    assert statuses(rules.replication(REPLICA_INFO, LIMITS)) == {"master_link": "OK", "replication_lag": "OK"}
    assert statuses(rules.replication(REPLICA_SYNCING, LIMITS)) == {"master_link": "WARNING"}
    down = dict(REPLICA_SYNCING, master_sync_in_progress=0)
    assert statuses(rules.replication(down, LIMITS)) == {"master_link": "CRITICAL"}
    quiet = dict(REPLICA_INFO, master_last_io_seconds_ago=31)
    assert statuses(rules.replication(quiet, LIMITS))["replication_lag"] == "WARNING"


def test_a_master_watches_its_replicas_lag():
    assert statuses(rules.replication(MASTER_INFO, LIMITS)) == {"replication_lag": "OK"}
    lagging = info(slave0=dict(MASTER_INFO["slave0"], lag=45))
    assert statuses(rules.replication(lagging, LIMITS)) == {"replication_lag": "WARNING"}


# ---------------------------------------------------------------- Sentinels

# redis_sentinel.status on alpha of a converged pair with a witness (shape as it returns it).
SENTINEL_STATUS = {
    "mode": "sentinel", "role": "master", "master_name": "mymaster", "master": "127.0.0.1:17001",
    "master_host": "alpha", "decided": True, "latest": "127.0.0.1:17001", "agreeing": 3, "reachable": 3,
    "expected": 3, "quorum": 2, "host_death_fails_over": True, "warnings": [],
    "sentinels": {
        host: {"address": f"127.0.0.1:{port}", "master": "127.0.0.1:17001", "flags": ["master"],
               "known_sentinels": 2, "known_replicas": 1, "config_epoch": 0}
        for host, port in (("alpha", 26001), ("beta", 26002), ("gamma", 26003))
    },
}


def sentinel_status(**changes):
    status = dict(SENTINEL_STATUS, **changes)
    status["sentinels"] = {h: dict(e) for h, e in status["sentinels"].items()}
    return status


def test_agreeing_sentinels_with_a_witness_are_ok():
    got = rules.sentinels(SENTINEL_STATUS, me="gamma")
    assert statuses(got) == {"sentinel_local": "OK", "sentinel_agreement": "OK", "sentinel_majority": "OK"}


def test_a_stopped_sentinel_is_a_warning_and_too_few_critical():
    one_down = sentinel_status(reachable=2, agreeing=2)
    one_down["sentinels"]["beta"] = {"address": "127.0.0.1:26002", "error": "ConnectionError: refused"}
    assert statuses(rules.sentinels(one_down, me="alpha")) == {
        "sentinel_local": "OK", "sentinel_agreement": "WARNING", "sentinel_majority": "OK"}
    assert statuses(rules.sentinels(one_down, me="beta"))["sentinel_local"] == "CRITICAL"
    two_down = sentinel_status(reachable=1, agreeing=1, decided=False, master=None,
                               warnings=["the Sentinels have not decided: 1 of the 3 Sentinels name alpha"])
    two_down["sentinels"]["gamma"] = {"address": "127.0.0.1:26003", "error": "TimeoutError"}
    got = statuses(rules.sentinels(two_down, me="alpha"))
    assert got["sentinel_agreement"] == "CRITICAL" and got["sentinel_majority"] == "CRITICAL"


def test_no_witness_is_a_warning_and_two_masters_critical():
    pair = sentinel_status(expected=2, reachable=2, agreeing=2, host_death_fails_over=False)
    del pair["sentinels"]["gamma"]
    assert statuses(rules.sentinels(pair))["sentinel_majority"] == "WARNING"
    split = rules.sentinels(SENTINEL_STATUS, me="beta", local_role="master", my_address="127.0.0.1:17002")
    assert statuses(split)["sentinel_master"] == "CRITICAL"


def test_sentinels_naming_two_masters_are_a_warning():
    split = sentinel_status(agreeing=2)
    split["sentinels"]["gamma"]["master"] = "127.0.0.1:17002"
    assert statuses(rules.sentinels(split))["sentinel_agreement"] == "WARNING"


# ---------------------------------------------------------------- Redis Cluster

# CLUSTER NODES of a healthy 3-master cluster, parsed as redis_cluster._parse_cluster_nodes does.
NODES = [
    {"id": "a" * 40, "address": "127.0.0.1:7001", "flags": ["master", "myself"], "master": None,
     "slots": [[0, 5460]], "open_slots": []},
    {"id": "b" * 40, "address": "127.0.0.1:7002", "flags": ["master"], "master": None,
     "slots": [[5461, 10922]], "open_slots": []},
    {"id": "c" * 40, "address": "127.0.0.1:7003", "flags": ["master"], "master": None,
     "slots": [[10923, 16383]], "open_slots": []},
]
VIEW = {"state": "ok", "slots_assigned": 16384, "slots_ok": 16384, "known_nodes": 3, "nodes": NODES,
        "open_slots": [], "failing": []}


def test_a_healthy_cluster_is_ok():
    assert set(statuses(rules.cluster(VIEW)).values()) == {"OK"}


def test_a_failed_cluster_is_critical_and_a_failing_node_a_warning():
    failed_node = dict(NODES[2], flags=["fail", "master"])
    failed = dict(VIEW, state="fail", slots_ok=10923, failing=["127.0.0.1:7003"], nodes=[*NODES[:2], failed_node])
    got = statuses(rules.cluster(failed))
    assert got["cluster_state"] == "CRITICAL" and got["cluster_slots"] == "CRITICAL"
    assert got["cluster_failing_nodes"] == "WARNING"
    after_failover = dict(VIEW, failing=["127.0.0.1:7004"])
    assert statuses(rules.cluster(after_failover))["cluster_failing_nodes"] == "WARNING"


def test_open_slots_and_missing_replicas_are_warnings():
    migrating = dict(VIEW, open_slots=["[42->-" + "b" * 40 + "]"])
    assert statuses(rules.cluster(migrating))["cluster_open_slots"] == "WARNING"
    got = rules.cluster(VIEW, replicas_per_master=1)
    assert got[-1]["status"] == "WARNING" and got[-1]["value"] == 3
    replica = {"id": "d" * 40, "address": "127.0.0.1:7004", "flags": ["slave"], "master": "a" * 40, "slots": [],
               "open_slots": []}
    assert rules.cluster(dict(VIEW, nodes=[*NODES, replica]), replicas_per_master=1)[-1]["value"] == 2


# ---------------------------------------------------------------- backups


def backup(kind, when, damaged=False):
    return {"name": f"{kind}-{when:%Y%m%d-%H%M%S}", "type": kind, "time": when, "damaged": damaged}


NOON = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a Wednesday
PLAN = [{"cron": "0 3 * * *", "type": "rdb"}, {"cron": "0 */6 * * *", "type": "aof"}, {"prune": True}]
LONG_AGO = NOON - datetime.timedelta(days=30)


def test_fresh_backups_of_every_scheduled_type_are_ok():
    entries = [backup("rdb", NOON.replace(hour=3, minute=0, second=5)), backup("aof", NOON.replace(hour=6))]
    got = rules.backups(PLAN, entries, NOON, LONG_AGO, 60, croniter)
    assert statuses(got) == {"backup_aof": "OK", "backup_rdb": "OK"}


def test_a_backup_older_than_its_schedule_allows_is_a_warning():
    entries = [backup("rdb", NOON.replace(hour=3) - datetime.timedelta(days=1)), backup("aof", NOON.replace(hour=6)),
               backup("rdb", NOON.replace(hour=3, minute=1), damaged=True)]
    got = {c["name"]: c for c in rules.backups(PLAN, entries, NOON, LONG_AGO, 60, croniter)}
    assert got["backup_rdb"]["status"] == "WARNING"  # the damaged one does not count
    assert "before the last scheduled run (2026-12-02T03:00:00+00:00" in got["backup_rdb"]["detail"]
    # Within the grace after the run: the one before is still fine.
    just_after = NOON.replace(hour=6, minute=30)
    early = [backup("rdb", NOON.replace(hour=3)), backup("aof", NOON.replace(hour=0, minute=0, second=9))]
    assert statuses(rules.backups(PLAN, early, just_after, LONG_AGO, 60, croniter))["backup_aof"] == "OK"
    assert statuses(rules.backups(PLAN, early, just_after, LONG_AGO, 20, croniter))["backup_aof"] == "WARNING"


def test_no_backup_after_the_first_scheduled_run_is_critical():
    none = statuses(rules.backups(PLAN, [], NOON, LONG_AGO, 60, croniter))
    assert none == {"backup_aof": "CRITICAL", "backup_rdb": "CRITICAL"}
    fresh = statuses(rules.backups(PLAN, [], NOON, NOON - datetime.timedelta(hours=2), 60, croniter))
    assert fresh == {"backup_aof": "OK", "backup_rdb": "OK"}  # no run due since the schedule was first seen


def test_the_original_plan_and_no_plan():
    original = [{"cron": "0 3 * * *", "type": "rdb"}, {"cron": "0 */6 * * *", "type": "aof"},
                {"cron": "0 2 * * 0", "type": "both"}]
    got = statuses(rules.backups(original, [backup("rdb", NOON.replace(hour=3)), backup("aof", NOON.replace(hour=6))],
                                 NOON, LONG_AGO, 60, croniter))
    assert got == {"backup_aof": "OK", "backup_rdb": "OK"}  # "both" on Sundays is covered by the dailies
    assert statuses(rules.backups([], [], NOON, None, 60)) == {"backups": "OK"}


def test_without_croniter_the_cron_period_is_taken_conservatively_and_said():
    assert rules.cron_period("0 */6 * * *") == 6 * 3600
    assert rules.cron_period("0 3 * * *") == 86400
    assert rules.cron_period("0 2 * * 0") == 7 * 86400
    assert rules.cron_period("@hourly") == 3600
    entries = [backup("rdb", NOON - datetime.timedelta(hours=20)), backup("aof", NOON - datetime.timedelta(hours=8))]
    got = {c["name"]: c for c in rules.backups(PLAN, entries, NOON, LONG_AGO, 60)}
    assert got["backup_rdb"]["status"] == "OK" and "croniter missing" in got["backup_rdb"]["detail"]
    assert got["backup_aof"]["status"] == "WARNING"  # 8 h > 6 h + 1 h grace


# SENTINEL MASTER of Debian's redis-sentinel 7.0.15 watching a pair with two other Sentinels.
SENTINEL_MASTER = {"name": "mymaster", "ip": "10.0.0.1", "port": "6379", "flags": "master",
                   "num-other-sentinels": "2", "quorum": "2"}
CKQUORUM_OK = "OK 3 usable Sentinels. Quorum and failover authorization can be reached"


def test_the_scripts_local_sentinel_is_ok_with_a_quorum_and_three_sentinels():
    checks = {c["name"]: c for c in rules.local_sentinel("127.0.0.1:26379", SENTINEL_MASTER, CKQUORUM_OK)}

    assert [c["status"] for c in checks.values()] == ["OK", "OK"]
    assert checks["sentinel_local"]["detail"] == ("this host's Sentinel (127.0.0.1:26379) monitors mymaster at "
                                                  "10.0.0.1:6379, knows 2 other Sentinels")


@pytest.mark.parametrize("flags, expected", [("master,s_down", "WARNING"), ("master,s_down,o_down", "CRITICAL")])
def test_the_scripts_local_sentinel_seeing_the_master_down(flags, expected):
    checks = rules.local_sentinel("127.0.0.1:26379", dict(SENTINEL_MASTER, flags=flags), CKQUORUM_OK)

    assert checks[0]["status"] == expected and "sees the master down" in checks[0]["detail"]


def test_the_scripts_local_sentinel_without_quorum_is_critical_and_two_sentinels_a_warning():
    noquorum = "NOQUORUM 1 usable Sentinels. Not enough available Sentinels to reach the specified quorum"
    lost = rules.local_sentinel("127.0.0.1:26379", SENTINEL_MASTER, noquorum)[1]
    pair = rules.local_sentinel("127.0.0.1:26379", dict(SENTINEL_MASTER, **{"num-other-sentinels": "1"}),
                                "OK 2 usable Sentinels. Quorum and failover authorization can be reached")[1]

    assert (lost["status"], lost["detail"]) == ("CRITICAL", f"no failover can happen: {noquorum}")
    assert pair["status"] == "WARNING" and "Add a witness" in pair["detail"]


def test_a_sentinel_mode_master_without_its_replica_warns_and_refusing_writes_is_critical():
    alone = {k: v for k, v in MASTER_INFO.items() if k != "slave0"}
    alone["connected_slaves"] = 0

    warned = rules.replication(alone, LIMITS)[0]
    refusing = rules.replication(dict(alone, min_slaves_good_slaves=0), LIMITS)[0]

    assert (warned["status"], warned["detail"]) == (
        "WARNING", "master without a connected replica: no copy of the data to fail over to")
    assert refusing["status"] == "CRITICAL" and refusing["detail"].endswith("makes it refuse writes")
