"""A Sentinel client as an application would run it through a failover: a redis-py
``Sentinel`` master client with retries, writing ``{prefix}:{n}`` one key after the other
with ``WAIT 1`` after each write, so that a write counts as acknowledged only once the
replica has it."""

from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection
from support.lab import REDIS_PORT, SENTINEL_PORT, redis_client
from support.writers import Writer


class RediscoveringConnection(SentinelManagedConnection):
    """A Sentinel-managed connection that asks the Sentinels for the master on every
    reconnect. redis-py 7.0's retries reconnect a dropped connection to the address it had
    (``connect_check_health``, not the Sentinel-aware ``connect``: redis/redis-py#3874), so
    a write retried after a failover would go to the old master again, now a replica."""

    def connect_check_health(self, check_health=True, retry_socket_connect=True):
        if self._sock is None and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


def sentinel_master(addresses, password, master_name="mymaster", socket_timeout=2):
    """The master client of ``master_name`` through the Sentinels at ``addresses``
    ([(ip, port)]), with retries (a Sentinel-managed connection has none by default)."""
    sentinel = Sentinel(addresses, socket_timeout=socket_timeout, password=password,
                        sentinel_kwargs={"password": password, "socket_timeout": socket_timeout})
    return sentinel.master_for(master_name, decode_responses=True, connection_class=RediscoveringConnection,
                               retry=Retry(ExponentialBackoff(cap=1, base=0.05), 6),
                               retry_on_error=[RedisConnectionError])


class WaitWriter(Writer):
    """Writes ``{prefix}:{n}`` = n until :meth:`finish`, each followed by ``WAIT 1 1000``; a
    write the replica did not confirm is written again."""

    def __init__(self, addresses, password, prefix, master_name="mymaster"):
        super().__init__(prefix)
        self.client = sentinel_master(addresses, password, master_name)

    def write(self, key, value):
        self.client.set(key, value)
        return self.client.execute_command("WAIT", 1, 1000) >= 1

    def missing(self, client):
        """The acknowledged numbers whose key ``client`` (a server's client) does not hold as written."""
        keys = [f"{self.prefix}:{n}" for n in self.acknowledged]
        values = client.mget(keys) if keys else []
        return [n for n, value in zip(self.acknowledged, values) if value not in (str(n), str(n).encode())]


class PairView:
    """A Sentinel pair's servers and Sentinels seen from the test: ``servers`` ({host: ip}
    of the two Redis servers), ``everyone`` ({host: ip} of every Sentinel, witness
    included), the deployment's ``password``."""

    def __init__(self, servers, everyone, password, master_name="mymaster"):
        self.servers, self.everyone, self.password, self.master_name = servers, everyone, password, master_name

    def server(self, host):
        return redis_client(self.servers[host], REDIS_PORT, password=self.password)

    def sentinel(self, host):
        return redis_client(self.everyone[host], SENTINEL_PORT, password=self.password)

    def current_master(self):
        return next(h for h in self.servers if self.server(h).info("replication")["role"] == "master")

    def sentinels_agree_on(self, host):
        """Every Sentinel names ``host``'s server the master and knows the other Sentinels."""
        others = len(self.everyone) - 1
        return all(self.sentinel(h).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)[0]
                   == self.servers[host]
                   and len(self.sentinel(h).execute_command("SENTINEL", "SENTINELS", self.master_name)) == others
                   for h in self.everyone)

    def run_ids(self):
        return {h: self.server(h).info("server")["run_id"] for h in self.servers}
