"""A plain apply never restarts a node of a formed deployment (issue 15, item 3).

`state.apply redis` runs on every node at once: settings_applied leaves a start-only change
pending on a formed cluster or pair (the live-settable ones still applied), and refuses to
restart a formed node for a password it does not run. ``redis_cluster.status`` shows the
pending restart until a restart has run. A node that is not formed is restarted as before.

Real servers on 127.0.0.1, each supported build; ``service.restart`` is the fixtures' stand-in
(same binary, same files, a new process), so ``run_id`` tells whether it ran.
"""

import pytest
from cluster_support import node_modules
from conftest import RedisServer, cluster_nodes, load_execution_module, load_module, load_node_module
from support.waits import wait_until

pytestmark = pytest.mark.usefixtures("server_build")

ROLLING = "a formed deployment is restarted one node at a time: salt-run redis_deployment.rolling_restart"
PENDING_LOGFILE = f"restart pending for logfile ({ROLLING})"


def wired_state(mod, server, cachedir):
    """_states/redis_node.py as the node's minion loads it, on ``mod``'s pillar."""
    state = load_module(f"restart_pending_state_{server.port}", "_states/redis_node.py")
    node = load_node_module(mod.__pillar__)
    state.__salt__ = {f"redis_node.{name}": getattr(node, name) for name in ("config_diff", "config_set", "wait_ready")}
    state.__salt__["redis_cluster.in_formed_deployment"] = mod.in_formed_deployment
    state.__salt__["service.restart"] = server.restart
    state.__opts__ = {"test": False, "cachedir": str(cachedir)}
    state.__pillar__ = mod.__pillar__
    return state


def change_settings(server, **changes):
    """New values in the node's Salt settings file, as file.managed writes them before the state runs."""
    server.settings.update(changes)
    server.write_salt_conf()
    return dict(server.settings)


def new_logfile(server):
    return str(server.dir / "redis-other.log")


@pytest.fixture
def formed_cluster(tmp_path_factory, server_build):
    """Three real nodes formed into one cluster as the deployment forms them: (servers, modules)."""
    with cluster_nodes(tmp_path_factory, server_build, 3) as servers:
        nodes = node_modules(servers)
        formed = nodes[0][1].formed("cluster", timeout=30)
        assert formed["result"] is True, formed["comment"]
        mods = [mod for mod, _, _ in nodes]
        for mod, server in zip(mods, servers):
            mod.__pillar__["redis"]["salt_config_file"] = str(server.salt_conf)
        yield servers, mods


def test_a_formed_cluster_node_applies_live_and_leaves_the_restart_pending(formed_cluster, tmp_path, no_password):
    servers, mods = formed_cluster
    server, mod = servers[1], mods[1]
    state = wired_state(mod, server, tmp_path / "cache")
    run_id = server.info()["run_id"]
    assert mod.status()["restart_pending"] == []
    settings = change_settings(server, logfile=new_logfile(server), **{"maxmemory-policy": "allkeys-lru"})

    ret = state.settings_applied("node", settings, "redis-server")

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {"maxmemory-policy": {"old": "noeviction", "new": "allkeys-lru"},
                              "restart_pending": ["logfile"]}
    assert ret["comment"] == f"applied live: maxmemory-policy; {PENDING_LOGFILE}"
    assert server.info()["run_id"] == run_id
    assert server.config("maxmemory-policy") == "allkeys-lru"
    assert server.config("logfile") != new_logfile(server)
    assert mod.status()["restart_pending"] == ["logfile"]

    again = state.settings_applied("node", settings, "redis-server")

    assert again == {"name": "node", "result": True, "changes": {}, "comment": PENDING_LOGFILE}
    assert server.info()["run_id"] == run_id

    # What the rolling restart does to this node: afterwards nothing is pending.
    server.restart()
    assert mod.status()["restart_pending"] == []
    after = state.settings_applied("node", settings, "redis-server")
    assert (after["result"], after["changes"]) == (True, {}), after["comment"]
    for shown in (ret, again, after):
        no_password(shown)


def test_a_dry_run_on_a_formed_node_says_what_would_be_applied_and_left_pending(formed_cluster, tmp_path):
    servers, mods = formed_cluster
    server, mod = servers[2], mods[2]
    state = wired_state(mod, server, tmp_path / "cache")
    run_id = server.info()["run_id"]
    settings = change_settings(server, logfile=new_logfile(server), **{"maxmemory-policy": "allkeys-lru"})
    state.__opts__["test"] = True

    dry = state.settings_applied("node", settings, "redis-server")

    assert dry["result"] is None
    assert dry["changes"] == {"maxmemory-policy": {"old": "noeviction", "new": "allkeys-lru"},
                              "restart_pending": ["logfile"]}
    assert dry["comment"] == f"would apply live: maxmemory-policy; {PENDING_LOGFILE}"
    assert server.config("maxmemory-policy") == "noeviction"

    state.__opts__["test"] = False
    assert state.settings_applied("node", settings, "redis-server")["result"] is True
    state.__opts__["test"] = True
    dry_again = state.settings_applied("node", settings, "redis-server")

    assert dry_again == {"name": "node", "result": True, "changes": {}, "comment": PENDING_LOGFILE}
    assert server.info()["run_id"] == run_id


@pytest.fixture(params=["standalone", "lone cluster node"])
def unformed_server(request, tmp_path_factory, server_build):
    """A server that belongs to no formed deployment (yet): standalone, or cluster-enabled but
    alone and without slots (a node before formation). (server, execution module)."""
    if request.param == "standalone":
        server = RedisServer(tmp_path_factory.mktemp("standalone"), server_build)
        server.start()
        mod = load_execution_module(server.port)
        try:
            yield server, mod
        finally:
            server.stop()
        return
    with cluster_nodes(tmp_path_factory, server_build, 1) as (server,):
        yield server, node_modules([server])[0][0]


def test_a_node_of_no_formed_deployment_is_restarted_as_before(unformed_server, tmp_path, no_password):
    server, mod = unformed_server
    mod.__pillar__["redis"]["salt_config_file"] = str(server.salt_conf)
    state = wired_state(mod, server, tmp_path / "cache")
    run_id = server.info()["run_id"]
    settings = change_settings(server, logfile=new_logfile(server))
    assert mod.status()["restart_pending"] == ["logfile"]

    ret = state.settings_applied("node", settings, "redis-server")

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {"restarted": "redis-server", "reason": "changed: logfile",
                              "logfile": {"old": str(server.dir / "redis.log"), "new": new_logfile(server)}}
    assert server.info()["run_id"] != run_id
    assert server.config("logfile") == new_logfile(server)
    assert mod.status()["restart_pending"] == []
    no_password(ret)


def test_a_formed_node_refusing_the_password_is_not_restarted(formed_cluster, tmp_path, wrong_password, no_password):
    servers, mods = formed_cluster
    server, mod = servers[1], mods[1]
    state = wired_state(mod, server, tmp_path / "cache")
    run_id = server.info()["run_id"]
    mod.__pillar__["redis"]["password"] = wrong_password  # a new password in the YAML

    ret = state.settings_applied("node", dict(server.settings), "redis-server")

    assert ret["result"] is False
    assert ret["changes"] == {}
    comment = ret["comment"]
    assert f"the server on 127.0.0.1:{server.port} does not accept the deployment's password" in comment
    assert "the deployment's password differs from the running server's" in comment
    assert f"{server.dir / 'nodes.conf'} lists 2 other nodes" in comment
    assert "would cut off every client: redis-server not restarted, nothing changed" in comment
    assert "set cache.redis.password to the new password and cache.redis.previous_password to the one in use" in comment
    assert server.info()["run_id"] == run_id
    no_password(ret)

    state.__opts__["test"] = True
    dry = state.settings_applied("node", dict(server.settings), "redis-server")
    assert (dry["result"], dry["changes"], dry["comment"]) == (False, {}, comment)


@pytest.fixture
def replicating_pair(tmp_path_factory, server_build):
    """A master and its replica (a Sentinel pair's servers; Sentinel-mode pillar): (servers, modules)."""
    servers = []
    try:
        for name in ("master", "replica"):
            server = RedisServer(tmp_path_factory.mktemp(name), server_build)
            servers.append(server)
            server.start()
        master, replica = servers
        master.client().config_set("repl-diskless-sync-delay", 0)  # else a full sync waits 5 s for more replicas
        replica.client().replicaof("127.0.0.1", master.port)
        wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", 30,
                   "the replica's link to its master is up")
        mods = []
        for role, server in zip(("master", "replica"), servers):
            mod = load_execution_module(server.port, role=role)
            mod.__salt__ = {}  # no redis_sentinel module: status says "no Sentinel view"
            mod.__pillar__["redis"].update(mode="sentinel", salt_config_file=str(server.salt_conf),
                                           config_file=str(server.main_conf),
                                           sentinel_config_file=str(server.dir / "sentinel.conf"))
            mods.append(mod)
        yield servers, mods
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("side", ["replica", "master"])
def test_either_side_of_a_replicating_pair_counts_as_formed(replicating_pair, side, tmp_path, no_password):
    servers, mods = replicating_pair
    server, mod = (servers[1], mods[1]) if side == "replica" else (servers[0], mods[0])
    state = wired_state(mod, server, tmp_path / "cache")
    run_id = server.info()["run_id"]
    settings = change_settings(server, logfile=new_logfile(server), maxclients=1200)

    ret = state.settings_applied("node", settings, "redis-server")

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {"maxclients": {"old": "1000", "new": "1200"}, "restart_pending": ["logfile"]}
    assert ret["comment"] == f"applied live: maxclients; {PENDING_LOGFILE}"
    assert server.info()["run_id"] == run_id
    assert mod.status()["restart_pending"] == ["logfile"]
    no_password(ret)


def test_a_replica_refusing_the_password_is_known_formed_by_its_replicaof_line(
    replicating_pair, tmp_path, wrong_password, no_password
):
    """Redis's own record (CONFIG REWRITE writes the replicaof line, as after a Sentinel's
    reconfiguration) tells a formed pair when the server cannot be asked."""
    (_, replica), (_, mod) = replicating_pair
    replica.client().config_rewrite()
    state = wired_state(mod, replica, tmp_path / "cache")
    run_id = replica.info()["run_id"]
    mod.__pillar__["redis"]["password"] = wrong_password

    ret = state.settings_applied("node", dict(replica.settings), "redis-server")

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert f"{replica.main_conf} makes this server a replica" in ret["comment"]
    assert "would cut off every client and the Sentinels' login: redis-server not restarted" in ret["comment"]
    assert replica.info()["run_id"] == run_id
    no_password(ret)
