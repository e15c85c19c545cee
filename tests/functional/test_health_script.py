"""``/usr/local/bin/redis_health`` (salt/redis/files/redis_health) and its read-only
monitoring login ``salt-monitor`` (``redis_node.monitoring_user``, state
``redis_node.monitoring_login_file``), against real redis-server and redis-sentinel
processes: what the monitoring user may and may not run, the script's words and exit codes
on a healthy node, a stopped one, a cluster and the Sentinel pair with its witness."""

import grp
import json
import os
import re
import signal
import subprocess

import pytest
import redis
from cluster_support import node_modules
from conftest import PASSWORD, ROOT, SERVERS, assert_no_password, cluster_nodes, load_module

pytest.register_assert_rewrite("sentinel_fixtures")  # before its import below
from sentinel_fixtures import wait_for  # noqa: E402

pytest_plugins = ["sentinel_fixtures"]

BUILD = SERVERS["redis-7.0"]
MONITOR = "salt-monitor"
# What map.jinja runs the script with: the distribution's Python and redis-py (python3-redis,
# which `make setup` installs like the lab's other Debian packages).
HEALTH_SCRIPT_PYTHON = "/usr/bin/python3"


def node_module(pillar):
    mod = load_module(f"redis_node_monitoring_{pillar['hostname']}", "_modules/redis_node.py")
    mod.__pillar__ = {"redis": pillar}
    return mod


def state_module(pillar, node, test=False):
    state = load_module(f"redis_node_state_monitoring_{pillar['hostname']}", "_states/redis_node.py")
    state.__pillar__ = {"redis": pillar}
    state.__salt__ = {"redis_node.monitoring_user": node.monitoring_user}
    state.__opts__ = {"test": test}
    return state


def monitoring_password(node):
    return node.__utils__["redis_acl.derived_password"](PASSWORD, MONITOR)


class Script:
    """The health script as health.sls installs it, with its settings file written by the
    state, run as a monitoring system would run it."""

    def __init__(self, directory, pillar, save="900 1"):
        self.directory = directory
        self.settings = directory / "redis_health.json"
        self.last_check = directory / "health-last.json"
        # The installed file, its paths pointed at this test's files and the repository's rules.
        text = (ROOT / "salt/redis/files/redis_health").read_text()
        for constant, value in (("LIBRARY", ROOT / "_utils"), ("SETTINGS_FILE", self.settings),
                                ("LAST_SCHEDULED_CHECK", self.last_check)):
            text, count = re.subn(rf'^{constant} = ".*"$', f'{constant} = "{value}"', text, flags=re.M)
            assert count == 1, constant
        assert text.startswith(f"#!{HEALTH_SCRIPT_PYTHON}\n")
        self.path = directory / "redis_health"
        self.path.write_text(text)
        self.path.chmod(0o755)
        self.node = node_module(pillar)
        self.state = state_module(pillar, self.node)
        self.group = grp.getgrgid(os.getgid()).gr_name
        self.configured = self.state.monitoring_login_file(str(self.settings), group=self.group, save=save)

    def run(self, *args):
        done = subprocess.run([str(self.path), *args], capture_output=True, text=True, timeout=60, check=False)
        return done.returncode, done.stdout


def standalone_pillar(port, **extra):
    return {"role": "cluster-node", "mode": "cluster", "hostname": "n0", "bind_ip": "127.0.0.1", "port": port,
            "password": PASSWORD, "monitoring": {}, **extra}


def test_the_monitoring_user_reads_and_cannot_write(server):
    node = node_module(standalone_pillar(server.port))
    state = state_module(standalone_pillar(server.port), node, test=True)

    dry = state.monitoring_user()
    assert dry["result"] is None and dry["changes"], dry
    created = state_module(standalone_pillar(server.port), node).monitoring_user()
    again = state_module(standalone_pillar(server.port), node).monitoring_user()

    assert created["result"] is True and created["changes"]["acl_user"]["changed"] == "missing", created
    assert again == {"name": MONITOR, "result": True, "changes": {}, "comment": f"ACL user {MONITOR} is as wanted"}
    assert_no_password([dry, created, again])
    monitor = redis.Redis(port=server.port, username=MONITOR, password=monitoring_password(node),
                          decode_responses=True)
    assert monitor.ping() is True
    assert monitor.info("memory")["used_memory"] > 0
    assert isinstance(monitor.slowlog_get(1), list)
    for command in (("SET", "k", "v"), ("GET", "k"), ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"),
                    ("EVAL", "return 1", "0"), ("SHUTDOWN",), ("ACL", "LIST"), ("KEYS", "*"), ("SAVE",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            monitor.execute_command(*command)
    # Persisted in Redis's own file: a restart keeps the user (hash only, never the password).
    assert monitoring_password(node) not in server.main_conf.read_text()
    server.restart()
    assert redis.Redis(port=server.port, username=MONITOR, password=monitoring_password(node)).ping()


def test_the_script_on_a_healthy_node_then_a_stopped_one(server, tmp_path):
    pillar = standalone_pillar(server.port)
    node_module(pillar).monitoring_user()
    script = Script(tmp_path, pillar)

    code, out = script.run()
    stopped_code, stopped_out = None, None
    try:
        server.stop()
        stopped_code, stopped_out = script.run()
    finally:
        server.start()

    assert script.configured["result"] is True, script.configured
    assert_no_password(script.configured)
    mode = os.stat(script.settings).st_mode & 0o777
    assert mode == 0o640, oct(mode)
    assert (code, out.splitlines()[0]) == (0, "OK: Redis is running"), out
    assert out.splitlines()[1].startswith("Memory: ") and out.splitlines()[1].endswith(" / 67108864 bytes"), out
    assert stopped_code == 2, stopped_out
    assert stopped_out.startswith("CRITICAL: Redis is down: refused: connection refused"), stopped_out
    verbose = json.loads(script.run("--json")[1])
    assert verbose["status"] == "OK" and {"ping", "memory", "clients", "hit_rate"} <= {
        c["name"] for c in verbose["checks"]}


def test_the_script_on_a_full_noeviction_node_and_a_sigstopped_one(server, tmp_path):
    pillar = standalone_pillar(server.port)
    node_module(pillar).monitoring_user()
    script = Script(tmp_path, pillar)
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for number in range(160):
        pipe.set(f"fill:{number}", "x" * 100_000)
    pipe.execute()
    client.config_set("maxmemory", int(client.info("memory")["used_memory"] / 0.95))

    full = script.run()
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        stopped = script.run()
    finally:
        os.kill(server.process.pid, signal.SIGCONT)

    assert full[0] == 1 and full[1].splitlines()[0] == "WARNING: Redis is running (memory)", full[1]
    assert [line for line in full[1].splitlines() if line.startswith("WARNING: memory: ")], full[1]
    assert stopped[0] == 2 and stopped[1].startswith("CRITICAL: Redis is down: timeout:"), stopped[1]
    assert "Traceback" not in stopped[1]


def test_the_script_says_unknown_when_it_cannot_read_its_settings(server, tmp_path):
    script = Script(tmp_path, standalone_pillar(server.port))
    script.settings.unlink()

    code, out = script.run()

    assert code == 3 and out.startswith(f"UNKNOWN: cannot read {script.settings}: No such file"), out


def test_the_settings_file_is_rewritten_only_when_it_differs(server, tmp_path):
    pillar = standalone_pillar(server.port)
    script = Script(tmp_path, pillar)
    again = script.state.monitoring_login_file(str(script.settings), group=script.group, save="900 1")
    os.chmod(script.settings, 0o644)
    mended = script.state.monitoring_login_file(str(script.settings), group=script.group, save="900 1")

    assert script.configured["changes"]["file"]["what"] == "created"
    assert again["changes"] == {} and again["result"] is True, again
    assert mended["changes"]["file"]["what"] == "owner or mode set", mended
    assert os.stat(script.settings).st_mode & 0o777 == 0o640


def test_the_script_on_a_cluster_says_cluster_ok_then_critical_when_a_master_stops(tmp_path_factory, tmp_path):
    with cluster_nodes(tmp_path_factory, BUILD, 3) as servers:
        loaded = node_modules(servers, backup={"schedule": []})
        assert loaded[0][1].formed("cluster", timeout=30)["result"] is True
        pillar = dict(loaded[0][0].__pillar__["redis"], hostname="n0", bind_ip="127.0.0.1", monitoring={})
        node_module(pillar).monitoring_user()
        script = Script(tmp_path, pillar)
        wait_for(lambda: script.run()[0] == 0, 15, interval=0.3, message="the script sees the cluster ok")
        code, out = script.run()
        servers[2].stop()
        failed = wait_for(lambda: (lambda r: r if "Cluster state is fail" in r[1] else None)(script.run()), 20,
                          interval=0.3,
                          message="the script sees cluster_state:fail")

    assert code == 0 and "Cluster: OK" in out.splitlines(), out
    assert failed[0] == 2 and "CRITICAL: Cluster state is fail" in failed[1].splitlines(), failed[1]


def test_the_script_on_the_sentinel_pair_and_its_witness(deployment, tmp_path):
    deployment.wait_converged()
    results = {}
    for minion in deployment.minions:
        pillar = dict(minion.pillar()["redis"], monitoring={})
        node = node_module(pillar)
        if minion.server:
            node.monitoring_user()
        node.monitoring_user(sentinel=True)
        directory = tmp_path / minion.hostname
        directory.mkdir()
        results[minion.hostname] = Script(directory, pillar).run("--verbose")
    sentinel = deployment.sentinels[2].client()
    quorum_again = node_module(dict(deployment.minions[2].pillar()["redis"])).monitoring_user(sentinel=True)

    for hostname, (code, out) in results.items():
        assert code == 0, (hostname, out)
    assert results["alpha"][1].startswith("OK: Redis is running"), results["alpha"][1]
    assert "OK: replication_lag" in results["alpha"][1] and "OK: master_link" in results["beta"][1]
    assert results["gamma"][1].splitlines()[0] == "OK: Sentinel witness", results["gamma"][1]
    assert "OK: sentinel_majority: OK 3 usable Sentinels" in results["gamma"][1], results["gamma"][1]
    assert quorum_again["changed"] is False
    # The Sentinel keeps the user in its own file (a hash), and refuses it SENTINEL SET.
    monitor = redis.Redis(port=deployment.sentinels[2].port, username=MONITOR,
                          password=monitoring_password(node), decode_responses=True)
    with pytest.raises(redis.exceptions.NoPermissionError):
        monitor.execute_command("SENTINEL", "SET", "mymaster", "quorum", "1")
    assert f"user {MONITOR} on" in deployment.sentinels[2].conf.read_text()
    assert sentinel.ping()


def test_the_exporters_environment_file_is_roots_only_and_holds_the_login(server, tmp_path):
    pillar = standalone_pillar(server.port)
    node = node_module(pillar)
    node.monitoring_user()
    state = state_module(pillar, node)
    path = tmp_path / "redis-exporter.env"

    written = state.monitoring_login_file(str(path), form="exporter_environment", mode="0600")
    again = state.monitoring_login_file(str(path), form="exporter_environment", mode="0600")

    assert written["result"] is True and written["changes"]["file"]["what"] == "created", written
    assert again["changes"] == {}, again
    assert_no_password([written, again])
    assert monitoring_password(node) not in str([written, again]), "a return shows the monitoring password"
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(path).st_uid == 0
    values = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert values == {"REDIS_USER": MONITOR, "REDIS_PASSWORD": monitoring_password(node)}
    assert redis.Redis(port=server.port, username=values["REDIS_USER"], password=values["REDIS_PASSWORD"]).ping()


def test_the_script_shows_the_scheduled_checks_backup_verdict_while_it_is_recent(server, tmp_path):
    pillar = standalone_pillar(server.port, monitoring={"group": grp.getgrgid(os.getgid()).gr_name})
    node_module(pillar).monitoring_user()
    script = Script(tmp_path, pillar)
    health = load_module("redis_cluster_health_publisher", "_modules/redis_cluster.py")
    health.__pillar__ = {"redis": pillar}
    verdict = {"status": "WARNING", "code": 1, "checks": [
        {"name": "backup_rdb", "value": 30, "threshold": 26, "status": "WARNING",
         "detail": "the newest good rdb backup is 30h old"},
        {"name": "cluster_state", "value": "ok", "threshold": "ok", "status": "OK", "detail": "not the script's"}]}

    health._health_publish(verdict, {"group": script.group}, path=str(script.last_check))
    published_mode = os.stat(script.last_check).st_mode & 0o777
    recent = script.run()
    stale = json.loads(script.last_check.read_text())
    stale["time"] -= 3 * 5 * 60 + 60  # three scheduled intervals (5 minutes) and more
    script.last_check.write_text(json.dumps(stale))
    old = script.run()

    assert published_mode == 0o640
    assert recent[0] == 1 and "WARNING: backup_rdb: the newest good rdb backup is 30h old" in recent[1], recent[1]
    assert "not the script's" not in recent[1]
    assert old[0] == 1 and "WARNING: backups: Salt's scheduled health check (job redis-health) last ran" in old[1]
