"""Functional tests of _modules/redis_cluster.py against a real redis-server."""

import time

import pytest
from salt.exceptions import CommandExecutionError


@pytest.fixture
def wrong_password_mod(redis_cluster_mod, wrong_password):
    """The module with a pillar password the server does not accept."""
    redis_cluster_mod.__pillar__["redis"]["password"] = wrong_password
    return redis_cluster_mod


def test_status_reports_the_running_node(redis_server, redis_cluster_mod, no_password):
    client = redis_server.client()
    client.flushdb()
    client.mset({"a": 1, "b": 2, "c": 3})

    status = redis_cluster_mod.status()

    assert status["role"] == "cluster-node"
    assert status["address"] == f"127.0.0.1:{redis_server.port}"
    assert status["ping"] is True
    assert status["version"] == redis_server.info()["redis_version"]
    assert status["version"].startswith(redis_server.build.version)
    assert status["maxmemory"] == int(redis_server.config("maxmemory")) == 67108864
    assert status["keys"] == 3
    no_password(status)


def test_status_without_redis_role_does_not_connect(redis_server, redis_cluster_mod):
    redis_cluster_mod.__pillar__["redis"]["role"] = "none"
    client = redis_server.client()
    connections = client.info("stats")["total_connections_received"]

    status = redis_cluster_mod.status()

    assert status["comment"] == "this minion runs no Redis server of the deployment"
    assert "ping" not in status
    assert client.info("stats")["total_connections_received"] == connections


def test_status_with_wrong_password(wrong_password_mod, no_password):
    status = wrong_password_mod.status()

    assert status["ping"] is False
    assert "authentication" in status["error"].lower()
    assert "version" not in status
    no_password(status)


def test_config_diff_matching_settings(redis_cluster_mod):
    diff = redis_cluster_mod.config_diff({"maxclients": 1000, "appendonly": "yes"})

    assert diff == {
        "reachable": True,
        "auth_failed": False,
        "loading": False,
        "failure": "",
        "error": "",
        "differs": [],
        "running": {},
    }


def test_config_diff_names_the_differing_directive(redis_cluster_mod, no_password):
    diff = redis_cluster_mod.config_diff({"maxclients": 2000, "appendonly": "yes"})

    assert diff["reachable"] is True
    assert diff["differs"] == ["maxclients"]
    assert diff["running"] == {"maxclients": "1000"}
    no_password(diff)


def test_config_diff_with_wrong_password(wrong_password_mod, no_password):
    diff = wrong_password_mod.config_diff({"maxclients": 1000})

    assert diff["reachable"] is False
    assert diff["auth_failed"] is True
    assert diff["failure"] == "auth"
    no_password(diff)


def test_config_diff_on_closed_port(redis_cluster_mod, closed_port):
    diff = redis_cluster_mod.config_diff({"maxclients": 1000}, port=closed_port)

    assert diff["reachable"] is False
    assert diff["auth_failed"] is False
    assert diff["failure"] == "refused"
    assert diff["differs"] == ["maxclients"]


def test_config_set_changes_the_running_server(fresh_redis_server, redis_cluster_mod):
    redis_cluster_mod.__pillar__["redis"]["port"] = fresh_redis_server.port

    outcome = redis_cluster_mod.config_set({"maxclients": 1234})

    assert outcome == {"applied": ["maxclients"], "refused": {}}
    assert fresh_redis_server.config("maxclients") == "1234"


def test_config_set_reports_what_redis_refuses(fresh_redis_server, redis_cluster_mod, no_password):
    redis_cluster_mod.__pillar__["redis"]["port"] = fresh_redis_server.port

    outcome = redis_cluster_mod.config_set({"maxmemory-policy": "bogus", "maxclients": 1234})

    assert outcome["applied"] == ["maxclients"]
    assert list(outcome["refused"]) == ["maxmemory-policy"]
    assert fresh_redis_server.config("maxmemory-policy") == "noeviction"
    assert fresh_redis_server.config("maxclients") == "1234"
    no_password(outcome)


def test_wait_ready_on_live_server(redis_cluster_mod):
    assert redis_cluster_mod.wait_ready(timeout=5) is True


def test_wait_ready_gives_up_on_closed_port(redis_cluster_mod, closed_port):
    started = time.monotonic()

    assert redis_cluster_mod.wait_ready(timeout=1, port=closed_port) is False
    assert 0.9 <= time.monotonic() - started < 2


def test_status_says_the_deployment_pillar_failed(redis_server, redis_cluster_mod):
    """The ext_pillar puts its validation error in pillar ``redis:error`` (and no Redis role)."""
    message = "/etc/salt/my_multihead_cluster.yaml: nodes.controllers[1].ip_address: duplicate ip_address"
    redis_cluster_mod.__pillar__["redis"] = {"error": message, "role": "none", "mode": "none"}
    client = redis_server.client()
    connections = client.info("stats")["total_connections_received"]

    status = redis_cluster_mod.status()

    assert status == {"role": "none", "mode": "none", "error": f"deployment pillar failed: {message}"}
    assert client.info("stats")["total_connections_received"] == connections


def test_config_set_on_a_closed_port_raises_a_clear_error(redis_cluster_mod, closed_port, no_password):
    with pytest.raises(CommandExecutionError) as raised:
        redis_cluster_mod.config_set({"maxclients": 1234}, port=closed_port)

    assert str(raised.value).startswith(f"Redis on 127.0.0.1:{closed_port} cannot take CONFIG SET: ")
    assert "Connection refused" in str(raised.value)
    no_password(str(raised.value))


def test_config_set_with_wrong_password_raises_without_the_password(wrong_password_mod, no_password):
    with pytest.raises(CommandExecutionError) as raised:
        wrong_password_mod.config_set({"maxclients": 1234})

    assert "AuthenticationError" in str(raised.value)
    no_password(str(raised.value))


def test_config_diff_asks_every_build_for_several_names(redis_server, redis_cluster_mod):
    """Redis 6.2 takes one name per CONFIG GET: the answer is the same on every build."""
    wanted = dict(redis_server.settings, maxclients=999)

    diff = redis_cluster_mod.config_diff(wanted)

    assert (diff["reachable"], diff["differs"]) == (True, ["maxclients"]), diff["error"]
    assert diff["running"] == {"maxclients": "1000"}


def test_config_diff_compares_dir_by_real_path(redis_server, redis_cluster_mod, tmp_path):
    link = tmp_path / "data-link"
    link.symlink_to(redis_server.dir)

    assert redis_cluster_mod.config_diff({"dir": str(link)})["differs"] == []
    assert redis_cluster_mod.config_diff({"dir": str(tmp_path)})["differs"] == ["dir"]
