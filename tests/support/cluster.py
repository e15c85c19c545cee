"""Redis Cluster helpers: clients, health, a writer thread that keeps what the cluster
acknowledged, and the AOF having what a node acknowledged."""

from redis.cluster import ClusterNode, RedisCluster

from support.lab import ADDRESSES, PASSWORD, REDIS_HOSTS, REDIS_PORT, node_client
from support.waits import wait_until
from support.writers import Writer


def cluster_client(hosts=REDIS_HOSTS, decode_responses=True, socket_timeout=5, addresses=ADDRESSES,
                   password=PASSWORD):
    """A cluster client (it follows MOVED/ASK) that starts from the servers of ``hosts``
    (``addresses``: {host: IP} of a lab of a test's own; the session lab's by default)."""
    return RedisCluster(
        startup_nodes=[ClusterNode(addresses[host], REDIS_PORT) for host in hosts],
        password=password,
        socket_timeout=socket_timeout,
        decode_responses=decode_responses,
    )


def cluster_info(host):
    """``CLUSTER INFO`` of ``host``'s server, as text."""
    return node_client(host).execute_command("CLUSTER", "INFO")


def cluster_ok(hosts=REDIS_HOSTS):
    """Every server of ``hosts`` says ``cluster_state:ok``."""
    return all("cluster_state:ok" in cluster_info(host) for host in hosts)


def cluster_states(hosts=REDIS_HOSTS):
    """``{host: its cluster_state line, or the error asking for it}``: what a failed wait shows."""
    states = {}
    for host in hosts:
        try:
            states[host] = cluster_info(host).split()[0]
        except Exception as exc:  # noqa: BLE001 - shown, not handled
            states[host] = repr(exc)
    return states


def slots_served(client):
    """How many slots the server of ``client`` serves, from its own CLUSTER NODES line."""
    line = next(line for line in client.execute_command("CLUSTER", "NODES").splitlines() if "myself" in line)
    ranges = [item.split("-") for item in line.split()[8:] if not item.startswith("[")]
    return sum(int(r[-1]) - int(r[0]) + 1 for r in ranges)


def wait_cluster_ok(hosts=REDIS_HOSTS, timeout=30):
    """Until every server of ``hosts`` says ``cluster_state:ok`` (earlier tests restart nodes;
    a restarted master rejoins its cluster within seconds)."""
    hosts = list(hosts)
    wait_until(lambda: cluster_ok(hosts), timeout, lambda: f"cluster_state:ok on {hosts}: {cluster_states(hosts)}")


def wait_aof_written(hosts=REDIS_HOSTS, timeout=10):
    """Until every server of ``hosts`` has written what it acknowledged to its append-only file:
    nothing left in its AOF buffer (``appendfsync everysec`` holds writes back while an fsync
    runs) and no fsync pending. A lab power cut kills the host's processes, not the machine's
    page cache: what the server wrote survives it."""

    def written():
        for host in hosts:
            persistence = node_client(host).info("persistence")
            if persistence["aof_buffer_length"] or persistence["aof_pending_bio_fsync"]:
                return False
        return True

    wait_until(written, timeout, f"the AOF of {list(hosts)} has every acknowledged write")


# Writes tried again after redis-py's ASK to a node it does not know (ClusterWriter.write).
CLIENT_BUG_RETRIES = 5


class ClusterWriter(Writer):
    """A cluster client writing ``{prefix}:{n}`` = n, one key after the other, until
    :meth:`finish`. ``written`` counts the writes the cluster acknowledged. ``hosts`` and
    ``addresses`` as for :func:`cluster_client`."""

    def __init__(self, prefix, hosts=REDIS_HOSTS, addresses=ADDRESSES, password=PASSWORD, pause=0.0):
        super().__init__(prefix, pause)
        self.addresses, self.password = addresses, password
        self.cluster = cluster_client(hosts, addresses=addresses, password=password)
        self.client_bug_retries = 0

    @property
    def written(self):
        return len(self.acknowledged)

    def write(self, key, value):
        for _ in range(CLIENT_BUG_RETRIES):
            try:
                return self.cluster.set(key, value)
            except AttributeError as exc:
                # redis-py 7.0's ASK redirection towards a node its slot cache does not know
                # yet (one just added, a rebalance moving slots onto it) reaches for the
                # connection of None before sending anything: nothing was written. A client
                # would refresh its view of the cluster and write again. A node that serves
                # no slot yet is in no refreshed view (CLUSTER SLOTS lists owners only): while
                # a slot moves onto it, every ASK there would fail the same way, so the client
                # is also told every node's address.
                if "redis_connection" not in str(exc):
                    raise
                self.client_bug_retries += 1
                self.cluster.nodes_manager.initialize()
                self._know_every_node()
        return self.cluster.set(key, value)

    def _know_every_node(self):
        manager = self.cluster.nodes_manager
        missing = [ClusterNode(ip, REDIS_PORT) for ip in self.addresses.values()
                   if f"{ip}:{REDIS_PORT}" not in manager.nodes_cache]
        manager.create_redis_connections(missing)
        for node in missing:
            manager.nodes_cache[node.name] = node

    def finish(self, timeout=10):
        super().finish(timeout)
        if not self.is_alive():
            self.cluster.close()

    def acknowledged_keys(self):
        """``{key: value}`` of every write the cluster acknowledged."""
        return {f"{self.prefix}:{number}": str(number) for number in range(self.written)}

    def read_back(self, host):
        """``{key: value}`` of the acknowledged keys as a new client, starting from ``host``'s
        server, reads them now (None for a key that is gone)."""
        keys = list(self.acknowledged_keys())
        reader = cluster_client([host], addresses=self.addresses, password=self.password)
        try:
            return dict(zip(keys, reader.mget_nonatomic(keys)))
        finally:
            reader.close()
