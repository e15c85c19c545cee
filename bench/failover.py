"""
Seconds from a failure of a master to the first write accepted on the new master, for
process death (`systemctl stop redis-server`) and for host death (`lab kill`), against the
configured detection time, as a ratio, in one run on the same lab hosts. After each round
the old master is brought back and rejoins as a replica.

Sentinel mode: a Sentinel client writes; detection is the deployment's down_after_ms (the
witness makes the majority when a host dies). Cluster mode: a client writes a key of the
failed master's slots to its replica until the replica, promoted, accepts it; detection is
the servers' cluster-node-timeout.

Needs the lab up in sentinel mode with a witness (`python -m lab up --config
examples/lab-2.yaml`) or in cluster mode with replicas (`--config examples/lab-6-replicas.yaml`).
Usage: .venv/bin/python bench/failover.py [ROUNDS]
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
from redis.sentinel import Sentinel  # noqa: E402

from bench.common import Result, lab_or_exit, own_hash_tag, redis_settings  # noqa: E402
from lab.hosts import read_hosts  # noqa: E402


def wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return time.monotonic()
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.02)
    raise SystemExit(f"bench: not within {timeout}s: {what}")


def fail(controller, host, kind):
    if kind == "process death":
        subprocess.run(controller.lab.enter(host, ["systemctl", "stop", "redis-server"]), check=True)
    else:
        controller.lab.kill(host)


def bring_back(controller, host, kind):
    if kind == "process death":
        subprocess.run(controller.lab.enter(host, ["systemctl", "start", "redis-server"]), check=True)
    else:
        controller.lab.boot(host)


def cluster_rounds(controller, hosts, password, rounds):
    """{kind: [seconds]} and the detection time, in cluster mode."""
    servers = {h.name: h.ip for h in hosts if h.redis}
    names = {ip: name for name, ip in servers.items()}

    def server(name):
        return redis.Redis(host=servers[name], password=password, socket_timeout=0.5)

    first = next(name for name in servers if server(name).info("replication")["role"] == "master")
    tag = own_hash_tag(redis.Redis(host=servers[first], password=password))
    node_timeout = int(server(first).config_get("cluster-node-timeout")["cluster-node-timeout"]) / 1000
    key = f"{tag}:bench:failover"

    def master_of_key():
        for name in servers:
            try:
                server(name).set(key, time.time())
                return name
            except (redis.RedisError, OSError):
                continue
        raise SystemExit("bench: no server accepts the key")

    results = {"process death": [], "host death": []}
    for _ in range(rounds):
        for kind in results:
            old = master_of_key()
            new = names[server(old).info("replication")["slave0"]["ip"]]
            started = time.monotonic()
            fail(controller, old, kind)
            written = wait(lambda: server(new).set(key, time.time()), 120, f"a write accepted on {new}")
            results[kind].append(written - started)
            bring_back(controller, old, kind)
            wait(lambda: server(old).info("replication").get("master_link_status") == "up", 120,
                 f"{old} back as a replica")
    return results, node_timeout


def main(rounds):
    controller = lab_or_exit("lab-2.yaml")
    password = controller.password()
    hosts = read_hosts(controller.deployment_file)
    first = next(h for h in hosts if h.redis)
    if redis.Redis(host=first.ip, password=password).info("cluster")["cluster_enabled"]:
        results, node_timeout = cluster_rounds(controller, hosts, password, rounds)
        result = Result("failover_cluster", "Cluster failover vs the configured detection time",
                        cluster_node_timeout_ms=node_timeout * 1000, rounds=rounds)
        print(f"cluster-node-timeout: {node_timeout * 1000:.0f} ms  rounds: {rounds}")
        for kind, seconds in results.items():
            result.measure(f"{kind}: failure to the first write accepted on the promoted replica", seconds)
            result.ratio(f"{kind} / cluster-node-timeout ({node_timeout:g} s)", seconds, node_timeout,
                         per_round=False)
            print(f"{kind:14s} to the first accepted write: median {statistics.median(seconds):6.2f}s  "
                  f"(min {min(seconds):.2f}, max {max(seconds):.2f})")
        result.note("process death: `systemctl stop redis-server` on the master's host; host death: `lab kill` "
                    "(SIGKILL to the host's systemd); the writer polls the failed master's replica every 20 ms")
        result.save()
        return
    servers = {h.name: h.ip for h in hosts if h.redis}
    settings = redis_settings(controller)
    down_after = (settings.get("sentinel") or {}).get("down_after_ms", 5000) / 1000
    sentinel = Sentinel([(h.ip, 26379) for h in hosts], socket_timeout=0.5, password=password,
                        sentinel_kwargs={"password": password, "socket_timeout": 0.5})

    def server(name):
        return redis.Redis(host=servers[name], password=password, socket_timeout=0.5)

    def master():
        return next(name for name in servers if server(name).info("replication")["role"] == "master")

    def first_write_on(new_ip):
        client = sentinel.master_for("mymaster", socket_timeout=0.5)

        def accepted():
            client.set("bench:failover", time.time())
            return client.connection_pool.get_master_address()[0] == new_ip
        return accepted

    results = {"process death": [], "host death": []}
    for _ in range(rounds):
        for kind in results:
            old = master()
            new = next(name for name in servers if name != old)
            started = time.monotonic()
            fail(controller, old, kind)
            written = wait(first_write_on(servers[new]), 120, f"a write accepted on {new}")
            results[kind].append(written - started)
            bring_back(controller, old, kind)
            wait(lambda: server(old).info("replication").get("master_link_status") == "up", 120,
                 f"{old} back as a replica")
    print(f"down_after_ms: {down_after * 1000:.0f}  rounds: {rounds}")
    result = Result("failover_sentinel", "Sentinel failover vs the configured detection time",
                    down_after_ms=down_after * 1000, rounds=rounds)
    for kind, seconds in results.items():
        median = statistics.median(seconds)
        print(f"{kind:14s} to the first accepted write: median {median:6.2f}s  "
              f"(min {min(seconds):.2f}, max {max(seconds):.2f})  ratio to down_after_ms: {median / down_after:.2f}x")
        result.measure(f"{kind}: failure to the first write accepted on the new master", seconds)
        result.ratio(f"{kind} / down_after_ms ({down_after:g} s)", seconds, down_after, per_round=False)
    result.note("process death: `systemctl stop redis-server` on the master's host; host death: `lab kill` "
                "(SIGKILL to the host's systemd), the witness making the majority")
    result.save()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
