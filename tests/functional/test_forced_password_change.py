"""``force_password_change`` on real servers (issue 18, item 1): a password change without
``previous_password`` on a formed deployment, made live and in one step when the operator
accepts that clients holding the old password are refused. The old password comes from
Salt's root-only record of the password last accepted on the host (written by every apply),
else from Salt's settings file; no restart, and a node that accepts neither is left alone.
"""

import os
import stat

import pytest
import redis
from cluster_support import accepts, wired_state
from conftest import SERVERS, formed_cluster_of, load_module

NEW_PASSWORD = "forced 'new' password"


@pytest.fixture
def formed_on_one_build(tmp_path_factory):
    """The formed cluster on the first server build only: the paths below do not differ by build."""
    build = next(iter(SERVERS.values()))
    build.require()
    with formed_cluster_of(tmp_path_factory, build) as formed:
        yield formed


def gate(state, server):
    return state.password_accepted("node", port=server.port, settings=dict(server.settings),
                                   settings_file=str(server.salt_conf))


def force(mods):
    for mod in mods:
        mod.__pillar__["redis"].update(password=NEW_PASSWORD, force_password_change=True)


def test_a_forced_change_is_made_live_in_one_step_with_the_downtime_stated(formed_cluster, tmp_path, no_password):
    servers, mods = formed_cluster
    old = servers[0].password
    states = [wired_state(mod, tmp_path / f"cache{i}") for i, mod in enumerate(mods)]
    for state, server in zip(states, servers):
        # An earlier apply: it records the password the server accepts.
        assert state.logins_converged("node", port=server.port)["result"] is True
    record = tmp_path / "cache0" / "redis_logins" / f"server-{servers[0].port}"
    assert record.read_text() == old
    assert stat.S_IMODE(record.stat().st_mode) == 0o600 and record.stat().st_uid == os.geteuid()
    run_ids = [s.info()["run_id"] for s in servers]
    assert redis.RedisCluster(host="127.0.0.1", port=servers[0].port, password=old).set("kept", "yes")

    force(mods)
    states[1].__opts__["test"] = True
    dry = gate(states[1], servers[1])
    states[1].__opts__["test"] = False
    assert dry["result"] is None and "would change in one step" in dry["comment"], dry
    assert accepts(servers[1], old) and not accepts(servers[1], NEW_PASSWORD)

    for state, server in zip(states, servers):
        ret = gate(state, server)
        assert ret["result"] is True, ret["comment"]
        assert ret["changes"] == {"password": "changed in one step (force_password_change)"}
        assert "Downtime: every client still using the old password is refused" in ret["comment"]
        no_password(ret)
        assert not accepts(server, old) and accepts(server, NEW_PASSWORD)
    for state, server in zip(states, servers):
        ret = state.logins_converged("node", port=server.port)
        assert ret["result"] is True, ret["comment"]
    assert record.read_text() == NEW_PASSWORD

    again = [gate(state, server) for state, server in zip(states, servers)]
    assert [(ret["result"], ret["changes"]) for ret in again] == [(True, {})] * 3
    for server, run_id in zip(servers, run_ids):
        server.password = NEW_PASSWORD
        assert server.info()["run_id"] == run_id
        assert server.client().cluster("info")["cluster_state"] == "ok"
        # What a restart reads: Redis's own file no longer holds the old password.
        assert old not in server.main_conf.read_text()
    assert redis.RedisCluster(host="127.0.0.1", port=servers[0].port, password=NEW_PASSWORD).get("kept") == b"yes"


def test_without_a_record_the_settings_file_gives_the_old_password(formed_on_one_build, tmp_path):
    servers, mods = formed_on_one_build
    old = servers[0].password
    state = wired_state(mods[0], tmp_path / "fresh-cache")
    force(mods)

    ret = gate(state, servers[0])

    assert ret["result"] is True, ret["comment"]
    assert not accepts(servers[0], old) and accepts(servers[0], NEW_PASSWORD)
    assert accepts(servers[1], old), "only the node applied changed"


def test_a_node_that_accepts_no_known_password_is_left_alone(formed_on_one_build, tmp_path):
    servers, mods = formed_on_one_build
    old = servers[0].password
    state = wired_state(mods[0], tmp_path / "fresh-cache")
    force(mods)

    ret = state.password_accepted("node", port=servers[0].port, settings=dict(servers[0].settings))

    assert ret["result"] is False and ret["changes"] == {}
    assert "force_password_change cannot log in to change it, nothing changed" in ret["comment"]
    assert NEW_PASSWORD not in str(ret) and old not in str(ret)
    assert accepts(servers[0], old)


def test_the_record_is_refused_unless_only_its_owner_can_read_it(tmp_path):
    common = load_module("forced_common", "_utils/redis_common.py")
    assert common.remember_password(str(tmp_path), "server-6379", "s3cret") is True
    assert common.remember_password(str(tmp_path), "server-6379", "s3cret") is False, "written only when it differs"
    assert common.remember_password(str(tmp_path), "sentinel-26379", "other") is True
    assert common.remembered_password(str(tmp_path), "server-6379") == "s3cret"
    assert common.remembered_passwords(str(tmp_path)) == ["other", "s3cret"]
    record = tmp_path / "redis_logins" / "server-6379"
    assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700
    record.chmod(0o644)
    assert common.remembered_password(str(tmp_path), "server-6379") is None
    record.unlink()
    (tmp_path / "elsewhere").write_text("planted")
    (tmp_path / "elsewhere").chmod(0o600)
    record.symlink_to(tmp_path / "elsewhere")
    assert common.remembered_password(str(tmp_path), "server-6379") is None, "a link is never followed"
