"""The node-level steps of a rolling restart (_modules/redis_node.py) against real servers on
127.0.0.1: a six-node Redis Cluster (three masters, a replica each; Redis 7.0) and a
Sentinel pair with a witness of this module's own (Redis 7.0). A replica restarted comes
back with a new run_id and in sync while a cluster client writes; CLUSTER FAILOVER swaps a
master and its replica under a writing client without an error or a lost write; SENTINEL
FAILOVER under a client writing with WAIT 1 loses no acknowledged write and leaves the
Sentinels agreeing, also asked while the Sentinel still sees the replica unfit (it waits for
it) or right after the replica's restart; a step whose node is not what the caller expected
changes nothing.

``service.restart`` is the fixtures' stand-in (same binary, same files, a new process).
"""

import pytest
from cluster_support import ClusterWriter, node_modules
from conftest import SERVERS, cluster_nodes, load_module
from salt.exceptions import CommandExecutionError
from support.rolling import RoleWatcher
from support.sentinel import WaitWriter
from support.waits import wait_until

pytest.register_assert_rewrite("sentinel_fixtures")  # before its import below
from sentinel_fixtures import MASTER_NAME, Deployment  # noqa: E402

SLOTS = {"n0": [[0, 5460]], "n1": [[5461, 10922]], "n2": [[10923, 16383]]}
REPLICAS = {"n3": "n0", "n4": "n1", "n5": "n2"}


def node_module(name, pillar, restart):
    """_modules/redis_node.py as a node's minion loads it, ``service.restart`` its stand-in."""
    mod = load_module(f"redis_node_{name}", "_modules/redis_node.py")
    mod.__pillar__ = pillar
    # What salt://redis/map.jinja renders to on a Debian minion.
    mod.__salt__ = {"service.restart": restart, "slsutil.renderer": lambda string, default_renderer: "redis-server\n"}
    return mod


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Six real cluster nodes formed as the deployment forms them: (servers, redis_node modules)."""
    build = SERVERS["redis-7.0"]
    build.require()
    with cluster_nodes(tmp_path_factory, build, 6) as servers:
        nodes = node_modules(servers, SLOTS, replicas_per_master=1, replica_plan=REPLICAS)
        formed = nodes[0][1].formed("cluster", timeout=60)
        assert formed["result"] is True, formed["comment"]
        mods = [node_module(f"n{i}", mod.__pillar__, server.restart) for i, ((mod, _, _), server)
                in enumerate(zip(nodes, servers))]
        for mod in mods:
            assert mod.wait_in_sync(timeout=30)["in_sync"]
        yield servers, mods


def run_id(server):
    return server.client().info("server")["run_id"]


def role(server):
    return "replica" if server.client().info("replication")["role"] == "slave" else "master"


def test_replication_says_what_each_node_is(cluster):
    servers, mods = cluster
    views = [mod.replication() for mod in mods]

    assert [v["role"] for v in views] == ["master"] * 3 + ["replica"] * 3
    for number, view in enumerate(views):
        assert view["reachable"] and view["cluster_enabled"] and view["cluster_state"] == "ok"
        assert view["address"] == f"127.0.0.1:{servers[number].port}"
        assert view["run_id"] == run_id(servers[number])
    for replica, master in ((3, 0), (4, 1), (5, 2)):
        assert views[replica]["master"] == views[master]["address"]
        assert views[replica]["master_id"] == views[master]["node_id"] and views[replica]["link"] == "up"
        assert [r["address"] for r in views[master]["replicas"]] == [views[replica]["address"]]
    assert views[0]["slots"] == [[0, 5460]] and views[3]["slots"] == []


def test_a_replica_restarted_is_back_in_sync_with_a_new_run_id_while_a_client_writes(cluster):
    servers, mods = cluster
    before = run_id(servers[3])
    writer = ClusterWriter(servers[0], prefix="replica-restart")
    writer.start()
    wait_until(lambda: writer.written > 50, 10, "the writer writes")

    restarted = mods[3].restart(service="redis-server", role="replica", timeout=60)

    writer.finish()
    assert restarted["run_id_before"] == before != restarted["run_id_after"] == run_id(servers[3])
    assert restarted["role_before"] == restarted["role_after"] == "replica"
    assert 0 < restarted["seconds_down"] <= restarted["seconds"]
    info = servers[3].client().info("replication")
    assert info["master_link_status"] == "up" and info["master_port"] == servers[0].port
    # Its master synced it at once, and has its own repl-diskless-sync-delay back.
    assert servers[0].config("repl-diskless-sync-delay") == "5"
    assert writer.errors == [] and writer.missing(servers[0]) == []


def test_a_restart_of_a_node_whose_role_is_not_the_expected_one_changes_nothing(cluster):
    servers, mods = cluster
    before = run_id(servers[0])

    with pytest.raises(CommandExecutionError, match="is a master now, expected a replica: nothing restarted"):
        mods[0].restart(service="redis-server", role="replica")

    assert run_id(servers[0]) == before
    with pytest.raises(CommandExecutionError, match="CLUSTER FAILOVER runs on one of its replicas"):
        mods[0].cluster_failover(timeout=5)


def test_cluster_failover_swaps_a_master_and_its_replica_under_a_writing_client(cluster):
    servers, mods = cluster
    runs = [run_id(server) for server in servers]
    writer = ClusterWriter(servers[2], prefix="failover")
    writer.start()
    wait_until(lambda: writer.written > 50, 10, "the writer writes")

    swapped = mods[4].cluster_failover(timeout=30)

    assert swapped["failed_over"] and swapped["old_master"] == f"127.0.0.1:{servers[1].port}"
    assert role(servers[4]) == "master" and role(servers[1]) == "replica"
    assert servers[1].client().info("replication")["master_port"] == servers[4].port
    count = writer.written
    wait_until(lambda: writer.written > count + 50, 10, "the writer writes on")
    back = mods[1].cluster_failover(timeout=30)  # and back: the planned shape again
    writer.finish()

    assert back["old_master"] == f"127.0.0.1:{servers[4].port}" and role(servers[1]) == "master"
    assert writer.errors == [] and writer.missing(servers[0]) == []
    assert [run_id(server) for server in servers] == runs  # nothing restarted
    assert mods[4].wait_in_sync(timeout=30, role="replica")["in_sync"]


def test_wait_in_sync_says_why_a_node_is_not_and_fails_the_job(cluster):
    servers, mods = cluster
    servers[5].stop()
    try:
        waited = mods[5].wait_in_sync(timeout=0.5)
        assert waited["in_sync"] is False and "does not answer" in waited["comment"], waited
        assert mods[5].__context__["retcode"] == 1
        peer = mods[0].wait_in_sync(timeout=0.5)
        assert peer["in_sync"] is False and f"127.0.0.1:{servers[5].port} does not answer" in peer["comment"]
    finally:
        mods[5].__context__.clear()
        servers[5].start()
    assert mods[5].wait_in_sync(timeout=30, role="replica")["in_sync"]


# ---------------------------------------------------------------- Sentinel mode


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A Sentinel deployment of this module's own (alpha master, beta replica, witness gamma),
    applied as `state.apply redis` would, with a redis_node module per Redis host."""
    deployment = Deployment(tmp_path_factory)
    try:
        deployment.start()
        deployment.apply_all()
        deployment.apply_all()
        deployment.wait_converged()
        mods = {}
        for minion in deployment.minions:
            if minion.server is None:
                continue
            mod = node_module(f"pair_{minion.hostname}", minion.pillar(), minion.server.restart)
            mod.__salt__["redis_sentinel.live_master"] = minion.mod.live_master
            mods[minion.hostname] = mod
        yield deployment, mods
    finally:
        deployment.stop()


def wait_writer(deployment, prefix):
    return WaitWriter([("127.0.0.1", s.port) for s in deployment.sentinels[:3]], deployment.servers[0].password,
                      prefix, MASTER_NAME)


def agreed(deployment):
    """The address every Sentinel names, when they all name the same one."""
    addresses = {s.master_address() for s in deployment.sentinels[:3]}
    return addresses.pop() if len(addresses) == 1 else None


def test_sentinel_failover_under_a_client_writing_with_wait_1_loses_nothing_and_the_sentinels_agree(pair):
    deployment, mods = pair
    alpha, beta = deployment.servers
    runs = [run_id(alpha), run_id(beta)]
    writer = wait_writer(deployment, "sentinel-failover")
    writer.start()
    wait_until(lambda: len(writer.acknowledged) > 50, 10, "the writer writes")

    swapped = mods["beta"].sentinel_failover(timeout=30)

    assert (swapped["old_master"], swapped["new_master"]) == ("alpha", "beta"), swapped
    assert agreed(deployment) == f"127.0.0.1:{beta.port}"
    assert role(beta) == "master" and role(alpha) == "replica"
    assert alpha.client().info("replication")["master_port"] == beta.port
    count = len(writer.acknowledged)
    wait_until(lambda: len(writer.acknowledged) > count + 50, 15, lambda: f"the writer writes on: {writer.errors}")
    writer.finish()
    assert writer.errors == [] and writer.missing(beta.client()) == []
    assert [run_id(alpha), run_id(beta)] == runs  # nothing restarted

    restarted = mods["alpha"].restart(service="redis-server", role="replica", timeout=60)

    assert restarted["run_id_before"] == runs[0] != restarted["run_id_after"] and restarted["role_after"] == "replica"
    assert alpha.client().info("replication")["master_port"] == beta.port  # persisted by CONFIG REWRITE
    assert writer.missing(alpha.client()) == []
    deployment.wait_converged()


def host_of(deployment, server):
    return next(m.hostname for m in deployment.minions if m.server is server)


def sentinel_sees(sentinel, server):
    """``server``'s SENTINEL REPLICAS entry as ``sentinel`` sees it."""
    for flat in sentinel.client().execute_command("SENTINEL", "REPLICAS", MASTER_NAME):
        fields = dict(zip(flat[::2], flat[1::2]))
        if int(fields["port"]) == server.port:
            return fields
    return None


def test_a_failover_asked_while_the_sentinel_still_sees_the_replica_unfit_waits_for_it_and_loses_nothing(pair):
    """Redis calls the replica fit while the Sentinel asked still sees it as it last read it
    (it would answer NOGOODSLAVE: promote nothing). Deterministically: the replica had
    replica-priority 0 at the Sentinel's last INFO; the Sentinel reads INFO every 10s. Until
    then a failover with little time left gives up before pausing any write, naming what the
    Sentinel sees; with the priority back to 100, a failover waits until the Sentinel sees
    it, then hands the master role over under a client writing with WAIT 1."""
    deployment, mods = pair
    master, replica = deployment.wait_converged()
    taker = next(m for m in deployment.minions if m.server is replica)
    writer = wait_writer(deployment, "sentinel-unfit")
    writer.start()
    try:
        wait_until(lambda: len(writer.acknowledged) > 50, 10, "the writer writes")
        replica.client().config_set("replica-priority", 0)
        # Just read by the Sentinel's INFO: it sees the priority 0 for its next 10 seconds.
        wait_until(lambda: sentinel_sees(taker.sentinel, replica)["slave-priority"] == "0", 15,
                   lambda: f"the Sentinel reads the replica's priority 0: {sentinel_sees(taker.sentinel, replica)}",
                   interval=0.05)
        with pytest.raises(CommandExecutionError) as refused:
            mods[taker.hostname].sentinel_failover(timeout=1)
        message = str(refused.value)
        assert f"the local Sentinel sees no replica of {host_of(deployment, master)} fit to promote" in message
        assert f"{taker.hostname} (127.0.0.1:{replica.port}) flags slave, master link ok: unfit (slave-priority 0)" \
            in message, message
        assert message.endswith("nothing failed over"), message
        assert role(master) == "master" and agreed(deployment) == f"127.0.0.1:{master.port}"
        count = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) > count + 10, 5, "the writes were never paused")

        replica.client().config_set("replica-priority", 100)
        assert sentinel_sees(taker.sentinel, replica)["slave-priority"] == "0"

        swapped = mods[taker.hostname].sentinel_failover(timeout=60)

        assert (swapped["old_master"], swapped["new_master"]) == (host_of(deployment, master), taker.hostname)
        assert swapped["sentinel"] == "local", swapped
        assert agreed(deployment) == f"127.0.0.1:{replica.port}"
        count = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) > count + 50, 15, lambda: f"the writer writes on: {writer.errors}")
    finally:
        writer.finish()
        replica.client().config_set("replica-priority", 100)
    assert writer.errors == [] and writer.missing(replica.client()) == []
    deployment.wait_converged()


def test_a_failover_right_after_the_replicas_restart_loses_nothing(pair):
    """The rolling restart's two steps back to back, as the runner runs them: the replica is
    restarted (back in sync for Redis), then at once takes the master role over, while the
    Sentinels may not have seen it answer again yet."""
    deployment, mods = pair
    master, replica = deployment.wait_converged()
    taker = host_of(deployment, replica)
    writer = wait_writer(deployment, "sentinel-restarted")
    writer.start()
    try:
        wait_until(lambda: len(writer.acknowledged) > 50, 10, "the writer writes")
        restarted = mods[taker].restart(service="redis-server", role="replica", timeout=60)
        assert restarted["role_after"] == "replica", restarted

        swapped = mods[taker].sentinel_failover(timeout=60)

        assert (swapped["old_master"], swapped["new_master"]) == (host_of(deployment, master), taker)
        assert agreed(deployment) == f"127.0.0.1:{replica.port}"
        count = len(writer.acknowledged)
        wait_until(lambda: len(writer.acknowledged) > count + 50, 15, lambda: f"the writer writes on: {writer.errors}")
    finally:
        writer.finish()
    assert writer.errors == [] and writer.missing(replica.client()) == []
    deployment.wait_converged()


# ---------------------------------------------------------------- the runner, on real servers


def recording(name, server, seen):
    """The stand-in of ``service.restart`` for ``server``, noting ``(name, its role)`` at the
    moment it is restarted."""

    def restart(service):
        seen.append((name, role(server)))
        return server.restart(service)

    return restart


class Minions:
    """A fake LocalClient whose minions are redis_node (and redis_sentinel) modules loaded
    for real servers: each call runs the function as that minion would."""

    def __init__(self, functions):
        self.functions, self.calls = functions, []

    def cmd(self, tgt, fun, kwarg=None, timeout=None, tgt_type="glob", full_return=False):
        answers = {}
        for minion in tgt:
            self.calls.append((minion, fun))
            module = self.functions[minion][fun.split(".")[0]]
            module.__context__.clear()
            try:
                ret = getattr(module, fun.split(".")[1])(**(kwarg or {}))
            except CommandExecutionError as exc:
                answers[minion] = {"ret": f"ERROR: {exc}", "retcode": 1}
                continue
            answers[minion] = {"ret": ret, "retcode": module.__context__.get("retcode", 0)}
        return answers

    def destroy(self):
        pass


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """``use(mode, peers, functions)`` -> rolling_restart over fake minions and a real Salt
    cache (the roll's record) under tmp_path; ``use.events`` the events it fired."""
    import salt.config  # pylint: disable=import-outside-toplevel

    mod = load_module("redis_deployment_runner_rolling", "_runners/redis_deployment.py")
    mod.__opts__ = dict(salt.config.DEFAULT_MASTER_OPTS, cachedir=str(tmp_path), conf_file="/etc/salt/master")
    mod.__context__ = {}
    events = []
    mod.__salt__ = {"event.send": lambda tag, data: events.append((tag, data)) or True}

    def use(mode, peers, functions):
        controllers = [{"hostname": p["hostname"], "minion": p["hostname"], "minion_problem": None} for p in peers]
        monkeypatch.setattr(mod, "shape", lambda config=None: {
            "mode": mode, "settings": {"port": 6379}, "controllers": controllers,
            "peers": [dict(p, minion=p["hostname"]) for p in peers]})
        fleet = Minions(functions)
        monkeypatch.setattr(mod.salt.client, "get_local_client", lambda *args, **kwargs: fleet)
        return mod.rolling_restart

    use.events = events
    return use


def test_the_runner_rolls_the_cluster_under_a_writing_client(cluster, runner):
    servers, mods = cluster
    peers = [{"hostname": f"n{i}", "ip": "127.0.0.1", "port": s.port} for i, s in enumerate(servers)]
    roll = runner("cluster", peers, {f"n{i}": {"redis_node": mod} for i, mod in enumerate(mods)})
    restarted_as = []
    for number, (mod, server) in enumerate(zip(mods, servers)):
        mod.__salt__["service.restart"] = recording(f"n{number}", server, restarted_as)
    masters = {f"n{i}" for i, s in enumerate(servers) if role(s) == "master"}
    watcher = RoleWatcher({f"n{i}": s.client() for i, s in enumerate(servers)})
    watcher.start()
    writer = ClusterWriter(servers[0], prefix="roll")
    writer.start()
    wait_until(lambda: writer.written > 50, 10, "the writer writes")

    result = roll(timeout=60)

    writer.finish()
    watcher.finish()
    assert result["retcode"] == 0, result["comment"]
    assert [entry["node"] for entry in result["restarted"]] == ["n3", "n4", "n5", "n0", "n1", "n2"]
    assert [tag for tag, _ in runner.events] == [f"redis/rolling/n{i}/restarted" for i in (3, 4, 5, 0, 1, 2)]
    assert watcher.problems(masters, roles=False) == []
    assert restarted_as == [(f"n{i}", "replica") for i in (3, 4, 5, 0, 1, 2)]  # every master failed over first
    assert writer.errors == [] and writer.missing(servers[0]) == []
    assert {f"n{i}" for i, s in enumerate(servers) if role(s) == "master"} == {"n3", "n4", "n5"}


def test_the_runner_rolls_the_sentinel_pair_under_a_client_writing_with_wait_1(pair, runner):
    deployment, mods = pair
    peers = [{"hostname": m.hostname, "ip": "127.0.0.1", "port": m.server.port} for m in deployment.minions
             if m.server]
    functions = {m.hostname: {"redis_node": mods[m.hostname], "redis_sentinel": m.mod} for m in deployment.minions
                 if m.server}
    roll = runner("sentinel", peers, functions)
    restarted_as = []
    for minion in deployment.minions:
        if minion.server:
            mods[minion.hostname].__salt__["service.restart"] = recording(minion.hostname, minion.server, restarted_as)
    masters = {m.hostname for m in deployment.minions if m.server and role(m.server) == "master"}
    watcher = RoleWatcher({m.hostname: m.server.client() for m in deployment.minions if m.server})
    watcher.start()
    writer = wait_writer(deployment, "sentinel-roll")
    writer.start()
    wait_until(lambda: len(writer.acknowledged) > 50, 10, "the writer writes")

    result = roll(timeout=60)

    assert result["retcode"] == 0, result["comment"]
    count = len(writer.acknowledged)
    wait_until(lambda: len(writer.acknowledged) > count + 20, 15,
               lambda: f"the writer writes on: errors {writer.errors}, {writer.in_flight()}; roles "
                       f"{[(host_of(deployment, s), role(s)) for s in deployment.servers]}, the Sentinels name "
                       f"{[s.master_address() for s in deployment.sentinels]}; the roll: {result['progress']}")
    writer.finish()
    watcher.finish()
    replicas = sorted({p["hostname"] for p in peers} - masters)
    assert [entry["node"] for entry in result["restarted"]] == replicas + sorted(masters)
    assert watcher.problems(masters, roles=False) == []
    assert restarted_as == [(host, "replica") for host in replicas + sorted(masters)]
    new = next(s for s in deployment.servers if role(s) == "master")
    assert writer.errors == [] and writer.missing(new.client()) == []
    assert agreed(deployment) == f"127.0.0.1:{new.port}"
    deployment.wait_converged()
