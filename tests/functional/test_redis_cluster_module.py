"""Functional tests of _modules/redis_cluster.py against a real redis-server."""


import pytest


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
    # The server and its own version: Valkey's, not the redis_version 7.2.4 it keeps for clients.
    info = redis_server.info()
    if redis_server.build.name.startswith("valkey"):
        assert (status["server"], status["version"]) == ("valkey", info["valkey_version"])
        assert status["version"].startswith("9.")
    else:
        assert (status["server"], status["version"]) == ("redis", info["redis_version"])
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


def test_status_says_the_deployment_pillar_failed(redis_server, redis_cluster_mod):
    """The ext_pillar puts its validation error in pillar ``redis:error`` (and no Redis role)."""
    message = "/etc/salt/my_multihead_cluster.yaml: nodes.controllers[1].ip_address: duplicate ip_address"
    redis_cluster_mod.__pillar__["redis"] = {"error": message, "role": "none", "mode": "none"}
    client = redis_server.client()
    connections = client.info("stats")["total_connections_received"]

    status = redis_cluster_mod.status()

    assert status == {"role": "none", "mode": "none", "error": f"deployment pillar failed: {message}"}
    assert client.info("stats")["total_connections_received"] == connections
