"""settings_applied never restarts a server that is there but busy: stopped (no answer in
time), out of client slots, running a long script or loading its data. It restarts one
that nothing listens for, or that refuses the deployment's password, and only those.

Each test checks what an operator would: the state's result and comment, and that the
server process is the same one (PID, run_id) afterwards.
"""

import os
import signal
import threading
import time

import pytest
import redis

# A restart directive differs in every test: the old behaviour would have restarted.
CHANGED_LOGFILE = "redis-other.log"


def changed_settings(server):
    return dict(server.settings, logfile=str(server.dir / CHANGED_LOGFILE))


def test_stopped_server_times_out_and_is_not_restarted(fresh_redis_server, redis_node_state, no_password):
    server = fresh_redis_server
    run_id, pid = server.info()["run_id"], server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        ret = redis_node_state.settings_applied("node", changed_settings(server), "redis-server", socket_timeout=1)
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "does not answer within 1s" in ret["comment"]
    assert "redis-server not restarted" in ret["comment"]
    assert elapsed < 5, "waited as if the server were starting"
    assert server.process.pid == pid and server.process.poll() is None
    assert server.info()["run_id"] == run_id
    no_password(ret)


def test_server_at_maxclients_is_not_restarted(fresh_redis_server, redis_node_state, no_password):
    server = fresh_redis_server
    held = server.client()
    run_id = held.info("server")["run_id"]
    held.config_set("maxclients", 1)  # this connection is the one client allowed
    try:
        ret = redis_node_state.settings_applied("node", changed_settings(server), "redis-server")
    finally:
        held.config_set("maxclients", server.settings["maxclients"])

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "has reached maxclients" in ret["comment"]
    assert held.info("server")["run_id"] == run_id
    no_password(ret)


@pytest.fixture
def busy_script(fresh_redis_server):
    """A Lua script that loops until SCRIPT KILL: other clients get BUSY meanwhile."""
    server = fresh_redis_server
    server.client().config_set("lua-time-limit", 100)  # BUSY after 0.1 s instead of 5 s
    outcome = []

    def loop():
        try:
            server.client(timeout=60).eval("while true do end", 0)
        except redis.RedisError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            server.client().ping()
        except redis.ResponseError as exc:
            if str(exc).startswith("BUSY"):
                break
        assert time.monotonic() < deadline, "the script never made the server BUSY"
        time.sleep(0.05)
    yield server
    server.client().script_kill()
    thread.join(10)
    assert outcome and "killed" in str(outcome[0]).lower(), outcome


def test_server_busy_with_a_script_is_not_restarted(busy_script, redis_node_state, no_password):
    server = busy_script
    pid = server.process.pid

    ret = redis_node_state.settings_applied("node", changed_settings(server), "redis-server")

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "is busy (" in ret["comment"] and "BUSY" in ret["comment"]
    assert "redis-server not restarted" in ret["comment"]
    assert server.process.pid == pid and server.process.poll() is None
    no_password(ret)


def test_loading_server_is_waited_for_then_not_restarted(fresh_redis_server, redis_node_state, no_password):
    """A server loading its data answers CONFIG GET: the state waits (bounded), then fails."""
    server = fresh_redis_server
    # 40 values of 2 MiB, loaded with a delay of 0.2 s each: Redis answers clients between
    # values (every 2 MiB read), and loading takes about 8 s.
    server.settings.update(appendonly="no", maxmemory=0)
    server.write_salt_conf()
    client = server.client(timeout=30)
    client.config_set("appendonly", "no")
    client.config_set("maxmemory", 0)
    for index in range(40):
        client.set(f"key:{index}", os.urandom(2 << 20))
    client.save()
    server.main_conf.write_text("key-load-delay 200000\n" + server.main_conf.read_text())
    server.stop()
    server.spawn()
    deadline = time.monotonic() + 10
    while True:
        try:
            info = server.client(timeout=3).info()
            if info["loading"]:
                break
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, "the server never reported loading"
        time.sleep(0.05)
    run_id, pid = info["run_id"], server.process.pid

    ret = redis_node_state.settings_applied(
        "node", changed_settings(server), "redis-server", timeout=1, socket_timeout=3
    )

    assert ret["result"] is False, ret["comment"]
    assert ret["changes"] == {}
    assert "still loading its data after 1s" in ret["comment"]
    assert server.process.pid == pid and server.process.poll() is None
    info = server.client(timeout=3).info()
    assert (info["run_id"], info["loading"]) == (run_id, 1), "loading ended before the state did: too fast a test"
    no_password(ret)


def test_nothing_listening_is_restarted(fresh_redis_server, redis_node_state, no_password):
    server = fresh_redis_server
    run_id = server.info()["run_id"]
    server.stop()

    ret = redis_node_state.settings_applied("node", dict(server.settings), "redis-server", timeout=10)

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["restarted"] == "redis-server"
    assert ret["changes"]["reason"].startswith(f"nothing listens on 127.0.0.1:{server.port} (")
    assert "Connection refused" in ret["changes"]["reason"]
    assert server.info()["run_id"] != run_id
    no_password(ret)


def test_symlinked_data_directory_is_no_difference(fresh_redis_server, redis_node_state, tmp_path):
    server = fresh_redis_server
    run_id = server.info()["run_id"]
    link = tmp_path / "data-link"
    link.symlink_to(server.dir)

    ret = redis_node_state.settings_applied("node", dict(server.settings, dir=str(link)), "redis-server")

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {}
    assert server.info()["run_id"] == run_id


def test_test_mode_on_a_busy_server_says_why_and_restarts_nothing(
    fresh_redis_server, redis_node_state, no_password
):
    server = fresh_redis_server
    redis_node_state.__opts__["test"] = True
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        ret = redis_node_state.settings_applied("node", changed_settings(server), "redis-server", socket_timeout=1)
    finally:
        os.kill(pid, signal.SIGCONT)

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "does not answer within 1s" in ret["comment"]
    assert server.process.pid == pid and server.process.poll() is None
    no_password(ret)
