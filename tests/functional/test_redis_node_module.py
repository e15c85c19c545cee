"""Functional tests of _modules/redis_node.py's configuration functions (config_diff,
config_set, wait_ready) against a real redis-server."""

import time

import pytest
from salt.exceptions import CommandExecutionError


@pytest.fixture
def wrong_password_node_mod(redis_node_mod, wrong_password):
    """The module with a pillar password the server does not accept."""
    redis_node_mod.__pillar__["redis"]["password"] = wrong_password
    return redis_node_mod


def test_config_diff_matching_settings(redis_node_mod):
    diff = redis_node_mod.config_diff({"maxclients": 1000, "appendonly": "yes"})

    assert diff == {
        "reachable": True,
        "auth_failed": False,
        "loading": False,
        "failure": "",
        "error": "",
        "differs": [],
        "running": {},
        "tls_switch": None,
    }


def test_config_diff_names_the_differing_directive(redis_node_mod, no_password):
    diff = redis_node_mod.config_diff({"maxclients": 2000, "appendonly": "yes"})

    assert diff["reachable"] is True
    assert diff["differs"] == ["maxclients"]
    assert diff["running"] == {"maxclients": "1000"}
    no_password(diff)


def test_config_diff_with_wrong_password(wrong_password_node_mod, no_password):
    diff = wrong_password_node_mod.config_diff({"maxclients": 1000})

    assert diff["reachable"] is False
    assert diff["auth_failed"] is True
    assert diff["failure"] == "auth"
    no_password(diff)


def test_config_diff_on_closed_port(redis_node_mod, closed_port):
    diff = redis_node_mod.config_diff({"maxclients": 1000}, port=closed_port)

    assert diff["reachable"] is False
    assert diff["auth_failed"] is False
    assert diff["failure"] == "refused"
    assert diff["differs"] == ["maxclients"]


def test_config_set_changes_the_running_server(fresh_redis_server, redis_node_mod):
    redis_node_mod.__pillar__["redis"]["port"] = fresh_redis_server.port

    outcome = redis_node_mod.config_set({"maxclients": 1234})

    assert outcome == {"applied": ["maxclients"], "refused": {}}
    assert fresh_redis_server.config("maxclients") == "1234"


def test_config_set_reports_what_redis_refuses(fresh_redis_server, redis_node_mod, no_password):
    redis_node_mod.__pillar__["redis"]["port"] = fresh_redis_server.port

    outcome = redis_node_mod.config_set({"maxmemory-policy": "bogus", "maxclients": 1234})

    assert outcome["applied"] == ["maxclients"]
    assert list(outcome["refused"]) == ["maxmemory-policy"]
    assert fresh_redis_server.config("maxmemory-policy") == "noeviction"
    assert fresh_redis_server.config("maxclients") == "1234"
    no_password(outcome)


def test_wait_ready_on_live_server(redis_node_mod):
    assert redis_node_mod.wait_ready(timeout=5) is True


def test_wait_ready_gives_up_on_closed_port(redis_node_mod, closed_port):
    started = time.monotonic()

    assert redis_node_mod.wait_ready(timeout=1, port=closed_port) is False
    assert 0.9 <= time.monotonic() - started < 2


def test_config_set_on_a_closed_port_raises_a_clear_error(redis_node_mod, closed_port, no_password):
    with pytest.raises(CommandExecutionError) as raised:
        redis_node_mod.config_set({"maxclients": 1234}, port=closed_port)

    assert str(raised.value).startswith(f"Redis on 127.0.0.1:{closed_port} cannot take CONFIG SET: ")
    assert "Connection refused" in str(raised.value)
    no_password(str(raised.value))


def test_config_set_with_wrong_password_raises_without_the_password(wrong_password_node_mod, no_password):
    with pytest.raises(CommandExecutionError) as raised:
        wrong_password_node_mod.config_set({"maxclients": 1234})

    assert "AuthenticationError" in str(raised.value)
    no_password(str(raised.value))


def test_config_diff_asks_every_build_for_several_names(redis_server, redis_node_mod):
    """Redis 6.2 takes one name per CONFIG GET: the answer is the same on every build."""
    wanted = dict(redis_server.settings, maxclients=999)

    diff = redis_node_mod.config_diff(wanted)

    assert (diff["reachable"], diff["differs"]) == (True, ["maxclients"]), diff["error"]
    assert diff["running"] == {"maxclients": "1000"}


def test_config_diff_compares_dir_by_real_path(redis_server, redis_node_mod, tmp_path):
    link = tmp_path / "data-link"
    link.symlink_to(redis_server.dir)

    assert redis_node_mod.config_diff({"dir": str(link)})["differs"] == []
    assert redis_node_mod.config_diff({"dir": str(tmp_path)})["differs"] == ["dir"]
