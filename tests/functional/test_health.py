"""``redis_cluster.health`` (_modules/redis_cluster.py, rules in _utils/redis_health.py)
against real redis-server and redis-sentinel processes (Debian's Redis 7.0) on 127.0.0.1:
a healthy node, memory under noeviction, a stopped and a SIGSTOPped server, the slow log,
a cluster of three losing a master, and the Sentinel pair with its witness."""

import json
import os
import signal
import threading
import time

import pytest
import redis
from cluster_support import node_modules
from conftest import PASSWORD, SERVERS, assert_no_password, cluster_nodes, load_module

pytest.register_assert_rewrite("sentinel_fixtures")  # before its import below
from sentinel_fixtures import wait_for  # noqa: E402

# The session's Sentinel deployment (alpha, beta and the witness gamma).
pytest_plugins = ["sentinel_fixtures"]

BUILD = SERVERS["redis-7.0"]
NO_BACKUPS = {"schedule": []}  # the backup check has its own unit tests


def scheduled(*jobs):
    """What ``schedule.list`` answers on a minion where the state redis_backup.scheduled
    installed ``jobs`` ((cron, type) pairs); the lab modules run Salt's real scheduler."""
    table = {f"redis-backup-{kind}-{n}": {"function": "redis_backup.create", "cron": cron, "kwargs": {"type": kind}}
             for n, (cron, kind) in enumerate(jobs, 1)}
    return lambda **kwargs: table


def health_module(pillar, cachedir, salt=None, name="redis_cluster_health"):
    mod = load_module(name, "_modules/redis_cluster.py")
    mod.__pillar__ = {"redis": pillar}
    mod.__opts__ = {"cachedir": str(cachedir)}
    mod.__salt__ = {"schedule.list": scheduled(), **(salt or {})}
    return mod


def by_name(result):
    return {c["name"]: c for c in result["checks"]}


@pytest.fixture
def node(server, tmp_path):
    """The health function of the server's minion (standalone role, as a Sentinel-mode
    server's own checks without its Sentinels)."""
    pillar = {"role": "cluster-node", "mode": "cluster", "hostname": "n0", "port": server.port,
              "password": PASSWORD, "backup": NO_BACKUPS, "monitoring": {"slowlog_new_entries": 2}}
    return health_module(pillar, tmp_path / "cache")


def test_a_healthy_node_is_ok(node):
    result = node.health()

    assert (result["status"], result["code"]) == ("OK", 0), result
    checks = by_name(result)
    assert {"ping", "memory", "clients", "rejected_connections", "hit_rate", "rdb_last_bgsave",
            "rdb_changes_since_last_save", "aof_last_write", "aof_last_bgrewrite", "slowlog", "backups"} <= set(checks)
    assert all(set(c) == {"name", "value", "threshold", "status", "detail"} for c in result["checks"])
    assert_no_password(result)


def test_no_role_and_a_failed_pillar(tmp_path):
    assert health_module({"role": "none", "mode": "cluster"}, tmp_path).health() == {
        "status": "OK", "code": 0, "checks": [], "comment": "not a Redis node"}
    failed = health_module({"role": "none", "mode": "none", "error": "/etc/salt/x.yaml: cache.redis.port: bad"},
                           tmp_path).health()
    assert (failed["status"], failed["code"]) == ("CRITICAL", 2)
    assert "cache.redis.port: bad" in failed["checks"][0]["detail"]


def test_memory_under_noeviction_warns_at_95_and_is_critical_at_99_percent(server, node):
    client = server.client()
    client.config_set("maxmemory-policy", "noeviction")
    pipe = client.pipeline(transaction=False)
    for number in range(160):
        pipe.set(f"fill:{number}", "x" * 100_000)
    pipe.execute()
    used = client.info("memory")["used_memory"]

    client.config_set("maxmemory", int(used / 0.95))
    warned = node.health()
    client.config_set("maxmemory", int(used / 0.99))
    critical = node.health()

    assert warned["status"] == "WARNING", by_name(warned)["memory"]
    assert by_name(warned)["memory"]["status"] == "WARNING"
    assert 93 <= by_name(warned)["memory"]["value"] <= 97
    assert critical["status"] == "CRITICAL", by_name(critical)["memory"]
    assert by_name(critical)["memory"]["status"] == "CRITICAL"


def test_a_sigstopped_server_is_critical_with_a_timeout_within_seconds(server, node):
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = node.health()
        elapsed = time.monotonic() - started
    finally:
        os.kill(server.process.pid, signal.SIGCONT)

    assert (result["status"], result["code"]) == ("CRITICAL", 2)
    ping = by_name(result)["ping"]
    assert ping["status"] == "CRITICAL" and ping["value"] == "timeout"
    assert ping["detail"].startswith("timeout:") and "Traceback" not in ping["detail"]
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert_no_password(result)


def test_a_stopped_server_is_critical_refused(server, node):
    server.stop()

    result = node.health()

    assert (result["status"], result["code"]) == ("CRITICAL", 2)
    ping = by_name(result)["ping"]
    assert ping["status"] == "CRITICAL" and ping["detail"].startswith("refused: connection refused")


def test_a_wrong_password_is_critical_auth(server, tmp_path):
    pillar = {"role": "cluster-node", "mode": "cluster", "port": server.port, "password": "not-the-password",
              "backup": NO_BACKUPS}
    result = health_module(pillar, tmp_path / "cache").health()
    assert by_name(result)["ping"]["status"] == "CRITICAL"
    assert by_name(result)["ping"]["detail"].startswith("auth:")


SLOW_SCRIPT = "for i = 1, 5000000 do end return 1"


def test_new_slowlog_entries_warn_once(server, node):
    client = server.client()
    client.config_set("slowlog-log-slower-than", 5000)  # 5 ms; the loop takes far longer
    assert by_name(node.health())["slowlog"]["status"] == "OK"  # the baseline

    for _ in range(3):
        client.eval(SLOW_SCRIPT, 0)
    warned = by_name(node.health())["slowlog"]
    again = by_name(node.health())["slowlog"]

    assert warned["status"] == "WARNING" and warned["value"] == 3, warned
    assert "slowest EVAL" in warned["detail"]
    assert again["status"] == "OK" and again["value"] == 0, again


# ---------------------------------------------------------------- cluster mode


def test_a_cluster_of_three_is_ok_and_critical_on_another_node_when_a_master_stops(tmp_path_factory):
    with cluster_nodes(tmp_path_factory, BUILD, 3) as servers:
        loaded = node_modules(servers, backup=NO_BACKUPS)
        first_state = loaded[0][1]
        assert first_state.formed("cluster", timeout=30)["result"] is True
        mods = [mod for mod, _, _ in loaded]
        for mod in mods:
            mod.__salt__ = {"schedule.list": scheduled()}
            wait_for(lambda mod=mod: mod.health()["status"] == "OK", 10, message="every node sees the cluster ok")
        healthy = mods[1].health()
        assert {"cluster_state", "cluster_slots", "cluster_failing_nodes", "cluster_open_slots",
                "cluster_replicas"} <= set(by_name(healthy))

        servers[2].stop()
        failed = wait_for(lambda: (lambda r: r if by_name(r)["cluster_state"]["status"] == "CRITICAL" else None)(
            mods[0].health()), 15, interval=0.3, message="n0 sees cluster_state:fail")

    assert (failed["status"], failed["code"]) == ("CRITICAL", 2)
    assert by_name(failed)["cluster_state"]["detail"].startswith("cluster_state:fail")
    assert by_name(failed)["cluster_failing_nodes"]["status"] == "WARNING"
    assert_no_password(failed)


# ---------------------------------------------------------------- Sentinel mode


def sentinel_health(minion, tmp_path):
    pillar = dict(minion.pillar()["redis"], backup=NO_BACKUPS)
    return health_module(pillar, tmp_path / f"cache-{minion.hostname}",
                         salt={"redis_sentinel.status": minion.mod.status}, name=f"health_{minion.hostname}")


def test_a_sentinel_pair_with_its_witness_is_ok(deployment, tmp_path):
    deployment.wait_converged()
    results = {m.hostname: sentinel_health(m, tmp_path).health() for m in deployment.minions}

    for hostname, result in results.items():
        assert (result["status"], result["code"]) == ("OK", 0), (hostname, result)
    assert "replication_lag" in by_name(results["alpha"]) and "master_link" in by_name(results["beta"])
    # The witness checks its Sentinel and the others', nothing else.
    assert set(by_name(results["gamma"])) == {"sentinel_local", "sentinel_agreement", "sentinel_majority"}
    assert by_name(results["gamma"])["sentinel_agreement"]["detail"].startswith("all 3 Sentinels name")
    assert_no_password(results)


def test_a_stopped_sentinel_is_a_warning_and_critical_on_its_own_host(deployment, tmp_path):
    deployment.wait_converged()
    beta_sentinel = deployment.sentinels[1]
    beta_sentinel.stop()
    try:
        alpha = sentinel_health(deployment.minions[0], tmp_path).health()
        beta = sentinel_health(deployment.minions[1], tmp_path).health()
        gamma = sentinel_health(deployment.minions[2], tmp_path).health()
    finally:
        beta_sentinel.start()
        deployment.wait_converged()

    assert alpha["status"] == "WARNING", alpha
    assert by_name(alpha)["sentinel_agreement"]["status"] == "WARNING"
    assert "beta:" in by_name(alpha)["sentinel_agreement"]["detail"]
    assert by_name(alpha)["sentinel_majority"]["status"] == "OK"  # 2 of 3 still elect a leader
    assert gamma["status"] == "WARNING"
    assert beta["status"] == "CRITICAL" and by_name(beta)["sentinel_local"]["status"] == "CRITICAL"


# ---------------------------------------------------------------- backups


def test_backups_of_a_schedule_none_after_a_due_run_critical_then_a_real_backup_ok(server, tmp_path):
    backups = load_module("redis_backup_for_health", "_modules/redis_backup.py")
    backup_settings = {"dir": str(tmp_path / "backups"), "compress": "none",
                       "schedule": [{"cron": "0 3 * * *", "type": "rdb"}]}
    backups.__pillar__ = {"redis": {"role": "master", "mode": "sentinel", "port": server.port, "password": PASSWORD,
                                    "hostname": "n0", "backup": backup_settings}}
    backups.__grains__ = backups.__opts__ = {"id": "n0"}
    backups.__salt__ = {"event.send": lambda tag, data: True}
    pillar = {"role": "cluster-node", "mode": "cluster", "port": server.port, "password": PASSWORD,
              "backup": backup_settings}
    mod = health_module(pillar, tmp_path / "cache", salt={"redis_backup.list": backups.list_,
                                                          "schedule.list": scheduled(("0 3 * * *", "rdb"))})

    first = by_name(mod.health())["backup_rdb"]
    # The schedule was first seen two days ago: its 03:00 run has been due since.
    state_file = tmp_path / "cache" / "redis_health" / f"{server.port}.json"
    state = json.loads(state_file.read_text())
    state["schedule"]["first_seen"] = "2000-01-01T00:00:00+00:00"
    state_file.write_text(json.dumps(state))
    missing = mod.health()
    backups.create(type="rdb", compress="none", verify=False)
    made = by_name(mod.health())["backup_rdb"]

    assert first["status"] == "OK" and "no rdb backup yet" in first["detail"], first
    assert missing["status"] == "CRITICAL" and by_name(missing)["backup_rdb"]["status"] == "CRITICAL"
    assert by_name(missing)["backup_rdb"]["detail"].startswith("no good rdb backup at all")
    assert made["status"] == "OK" and made["detail"].startswith("newest good rdb backup"), made
    assert_no_password(missing)


def test_a_server_busy_running_a_script_is_critical_busy(server, node):
    client = server.client()
    client.config_set("busy-reply-threshold", 100)  # ms a script runs before others get BUSY
    runner = threading.Thread(target=_run_forever, args=(server,))
    runner.start()
    try:
        wait_for(lambda: _busy(server), 5, interval=0.05, message="the script holds the server")
        result = node.health()
    finally:
        server.client().execute_command("SCRIPT", "KILL")
        runner.join(10)

    assert (result["status"], result["code"]) == ("CRITICAL", 2)
    assert by_name(result)["ping"]["detail"].startswith("busy:"), by_name(result)["ping"]


def _run_forever(server):
    try:
        server.client(timeout=30).eval("for i = 1, 1e12 do end return 1", 0)
    except redis.RedisError:
        pass  # SCRIPT KILL


def _busy(server):
    try:
        server.client(timeout=1).ping()
    except redis.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


# ---------------------------------------------------------------- events (the scheduled check)


def test_an_event_on_each_status_change_and_a_reminder_while_it_stays_critical(server, tmp_path):
    sent = []
    pillar = {"role": "cluster-node", "mode": "cluster", "hostname": "n0", "port": server.port,
              "password": PASSWORD, "backup": NO_BACKUPS}
    mod = health_module(pillar, tmp_path / "cache", salt={"event.send": lambda tag, data: sent.append((tag, data))})
    mod.__opts__["id"] = "n0.example.org"

    mod.health(fire_events=True)
    mod.health(fire_events=True)
    assert sent == []  # OK from the first check on: nothing to say
    server.stop()
    critical = mod.health(fire_events=True)
    mod.health(fire_events=True)  # still CRITICAL, within critical_reminder_minutes of the event
    assert [tag for tag, _ in sent] == ["redis/health/n0.example.org"]
    data = sent[0][1]
    assert (data["status"], data["code"], data["previous"]) == ("CRITICAL", 2, "OK")
    assert any(line.startswith("ping: ") for line in data["failing"]), data
    mod._health_events(critical, {"critical_reminder_minutes": 60}, now=time.time() + 3601)
    assert [tag for tag, _ in sent][1:] == ["redis/health/n0.example.org/still-critical"]
    server.start()
    back = mod.health(fire_events=True)

    assert back["status"] == "OK"
    assert [tag for tag, _ in sent][2:] == ["redis/health/n0.example.org"]
    assert (sent[2][1]["status"], sent[2][1]["previous"]) == ("OK", "CRITICAL")
    assert_no_password(sent)
