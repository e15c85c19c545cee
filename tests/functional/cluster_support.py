"""What the functional cluster tests share: each node's execution and state module as its
minion would load them, and a node's CLUSTER INFO."""

import pytest
import redis
from conftest import give_opts, load_module, load_node_module
from support.writers import Writer


def node_modules(servers, slots=None, replicas_per_master=0, replica_plan=None, **settings):
    """The execution and state module as each node's minion loads them, with its pillar
    (``settings``: more pillar keys) and a Salt cache directory of its own."""
    peers = [{"hostname": f"n{i}", "ip": "127.0.0.1", "port": s.port} for i, s in enumerate(servers)]
    slot_plan = slots or {"n0": [[0, 5460]], "n1": [[5461, 10922]], "n2": [[10923, 16383]]}
    loaded = []
    for number, server in enumerate(servers):
        mod = load_module(f"redis_cluster_mod{number}", "_modules/redis_cluster.py")
        mod.__pillar__ = {"redis": {"role": "cluster-node", "mode": "cluster", "hostname": f"n{number}",
                                    "port": server.port, "password": server.password, "peers": peers,
                                    "initial_master": peers[0], "slot_plan": slot_plan,
                                    "replica_plan": dict(replica_plan or {}),
                                    "replicas_per_master": replicas_per_master, **settings}}
        mod.__opts__ = {"cachedir": str(server.dir / "minion-cache")}
        state = load_module(f"redis_cluster_state{number}", "_states/redis_cluster.py")
        events = []
        state.__salt__ = {f"redis_cluster.{name}": getattr(mod, name) for name in
                          ("cluster_view", "cluster_plan", "form_cluster", "wait_cluster_healthy")}
        state.__salt__["event.send"] = lambda tag, data, events=events: events.append((tag, data)) or True
        node = load_module(f"redis_node_mod_c{number}", "_modules/redis_node.py")
        node.__opts__, node.__pillar__ = mod.__opts__, mod.__pillar__
        state.__salt__["redis_node.retired"] = node.retired
        state.__opts__ = {"test": False}
        state.__pillar__ = mod.__pillar__
        loaded.append((mod, state, events))
    return loaded


def cluster_info(server):
    return server.client().execute_command("CLUSTER", "INFO")


class ClusterWriter(Writer):
    """A cluster client writing keys ``PREFIX:N`` one by one, following MOVED/ASK; any error it
    could not retry is kept. ``written`` counts the writes Redis acknowledged."""

    def __init__(self, server, prefix="grow"):
        super().__init__(prefix)
        self.client = redis.RedisCluster(host="127.0.0.1", port=server.port, password=server.password,
                                         decode_responses=True)
        self.client_retries = 0  # writes retried after a client-side topology bug (see write)

    @property
    def written(self):
        return len(self.acknowledged)

    def write(self, key, value):
        try:
            return self.client.set(key, value)
        except AttributeError as exc:
            # redis-py's own bug while slots move onto a new master (redis/redis-py#2432: a
            # MOVED to a node its topology lacks gives no target node). Nothing reached Redis:
            # refresh the topology and write the same key again, as an application retries.
            if "redis_connection" not in str(exc) or self.client_retries >= 50:
                raise
            self.client_retries += 1
            self.client.nodes_manager.initialize()
            return False

    def missing(self, server):
        """Acknowledged keys a fresh cluster client cannot read back (with a wrong value or none)."""
        reader = redis.RedisCluster(host="127.0.0.1", port=server.port, password=server.password,
                                    decode_responses=True)
        try:
            keys = [f"{self.prefix}:{n}" for n in range(self.written)]
            values = reader.mget_nonatomic(keys)
            return [key for number, (key, value) in enumerate(zip(keys, values)) if value != str(number)]
        finally:
            reader.close()


def wired_state(mod, cachedir):
    """_states/redis_node.py as the node's minion loads it, on ``mod``'s pillar."""
    state = load_module(f"rotation_state_{id(mod)}", "_states/redis_node.py")
    node = load_node_module(mod.__pillar__)
    give_opts(node, {"cachedir": str(cachedir)})
    wired = ("config_diff", "config_set", "wait_ready", "logins", "accepts_password", "forced_password_change")
    state.__salt__ = {f"redis_node.{name}": getattr(node, name) for name in wired}
    state.__salt__["redis_cluster.in_formed_deployment"] = mod.in_formed_deployment
    state.__salt__["service.restart"] = lambda service: pytest.fail(f"{service} restarted during a rotation")
    state.__opts__ = {"test": False, "cachedir": str(cachedir)}
    state.__pillar__ = mod.__pillar__
    return state


def accepts(server, password, username=None):
    """Whether ``server`` lets ``username`` (None: ``default``) in with ``password``."""
    try:
        return redis.Redis(port=server.port, username=username, password=password, socket_timeout=5).ping()
    except redis.AuthenticationError:
        return False
