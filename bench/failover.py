"""
Seconds from a failure of the master to the first write a Sentinel client gets accepted
on the new master, for process death (`systemctl stop redis-server`) and for host death
(`lab kill`: the witness makes the majority), against the deployment's down_after_ms, as
a ratio, in one run on the same lab hosts. After each round the old master is brought
back and rejoins as a replica.

Needs the lab up in sentinel mode with a witness:
`python -m lab up --config examples/lab-2.yaml`. Usage: .venv/bin/python bench/failover.py [ROUNDS]
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import yaml  # noqa: E402
from redis.sentinel import Sentinel  # noqa: E402

from bench.common import Result, lab_controller  # noqa: E402
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


def main(rounds):
    controller = lab_controller()
    if not controller.master_running():
        sys.exit("bench: the lab is not up; run `python -m lab up --config examples/lab-2.yaml` first")
    password = controller.password()
    hosts = read_hosts(controller.deployment_file)
    servers = {h.name: h.ip for h in hosts if h.redis}
    settings = yaml.safe_load(controller.deployment_file.read_text())["cache"]["redis"]
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
            if kind == "process death":
                subprocess.run(controller.lab.enter(old, ["systemctl", "stop", "redis-server"]), check=True)
            else:
                controller.lab.kill(old)
            written = wait(first_write_on(servers[new]), 120, f"a write accepted on {new}")
            results[kind].append(written - started)
            if kind == "process death":
                subprocess.run(controller.lab.enter(old, ["systemctl", "start", "redis-server"]), check=True)
            else:
                controller.lab.boot(old)
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
