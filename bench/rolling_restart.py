"""
`salt-run redis_deployment.rolling_restart` under a writing client: per server, the seconds
from the start of its step (its master role handed over first, where it had one) to back in
sync, from the runner's own return; the client's write throughput during the roll against
the same client writing without one (the bound to keep: at least 80 %), and the longest
stall between two acknowledged writes the client saw. In cluster mode the client is a
redis-py RedisCluster writing one key after the other; in Sentinel mode a redis-py Sentinel
client writing with WAIT 1 after each write (tests/support/sentinel.py).

Needs the lab up, in either mode: `python -m lab up --config examples/lab-6-replicas.yaml`
(cluster, three masters with a replica each) or `--config examples/lab-2.yaml` (Sentinel).
Usage: .venv/bin/python bench/rolling_restart.py [BASELINE_SECONDS [ROUNDS]]
"""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import redis  # noqa: E402
from redis.cluster import ClusterNode, RedisCluster  # noqa: E402

from bench.common import Result, lab_controller  # noqa: E402
from lab.hosts import read_hosts  # noqa: E402
from support.sentinel import WaitWriter  # noqa: E402
from support.writers import Writer  # noqa: E402


class ClusterTimedWriter(Writer):
    """A cluster client writing ``{prefix}:{n}`` one after the other; when each was acknowledged."""

    def __init__(self, addresses, password, prefix):
        super().__init__(prefix)
        self.client = RedisCluster(startup_nodes=[ClusterNode(ip, 6379) for ip in addresses], password=password,
                                   socket_timeout=5, decode_responses=True)

    def write(self, key, value):
        return self.client.set(key, value)


def last_json(text):
    """The last of the JSON documents salt-run printed (its progress events come first)."""
    decoder, position, found = json.JSONDecoder(), 0, None
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return found
        try:
            found, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return found


def writer_for(mode, hosts, password, prefix):
    if mode == "cluster":
        return ClusterTimedWriter([h.ip for h in hosts if h.redis], password, prefix)
    writer = WaitWriter([(h.ip, 26379) for h in hosts], password, prefix)
    return writer


def roll_once(controller, mode, hosts, password, baseline_seconds):
    """One baseline (the client writing without a roll), then one roll under the same client."""
    baseline = writer_for(mode, hosts, password, "bench:baseline")
    baseline.start()
    time.sleep(baseline_seconds)
    baseline.finish()
    if baseline.errors:
        sys.exit(f"bench: the client failed without a roll: {baseline.errors[0]}")
    base_rate = len(baseline.stamps) / baseline_seconds

    writer = writer_for(mode, hosts, password, "bench:roll")
    writer.start()
    started = time.monotonic()
    rolled = controller.salt("salt-run", "redis_deployment.rolling_restart", "--out=json", capture=True)
    elapsed = time.monotonic() - started
    writer.finish()
    result = last_json(rolled.stdout)
    if not isinstance(result, dict) or "restarted" not in result:
        sys.exit(f"bench: salt-run printed no result: {rolled.stdout}{rolled.stderr}")
    if rolled.returncode != 0 or not result.get("ok"):
        sys.exit(f"bench: the roll failed: {result.get('comment')}")
    during = [s for s in writer.stamps if started <= s <= started + elapsed]
    roll_rate = len(during) / elapsed

    print(f"mode: {mode}  servers: {len(result['restarted'])}  roll: {elapsed:.1f}s")
    for entry in result["restarted"]:
        how = f"failed over to {entry['failed_over_to']}, then restarted" if entry["failed_over_to"] else "restarted"
        print(f"  {entry['node']:8s} {how:40s} back in sync after {entry['seconds']:6.2f}s "
              f"(answering after {entry['seconds_down']:.2f}s of its restart)")
    print(f"writes/s without a roll: {base_rate:8.1f}  ({baseline_seconds:.0f}s)")
    print(f"writes/s during the roll: {roll_rate:8.1f}  ratio: {roll_rate / base_rate:.0%} (bound: >= 80%)")
    print(f"longest stall between two acknowledged writes: {writer.longest_stall():.2f}s "
          f"(without a roll: {baseline.longest_stall():.2f}s)")
    print(f"client errors after its retries: {len(writer.errors)}{': ' + writer.errors[0] if writer.errors else ''}")
    return {"base_rate": base_rate, "roll_rate": roll_rate, "elapsed": elapsed, "servers": len(result["restarted"]),
            "stall": writer.longest_stall(), "base_stall": baseline.longest_stall(), "errors": len(writer.errors),
            "per_server": [entry["seconds"] for entry in result["restarted"]]}


def main(baseline_seconds, rounds):
    controller = lab_controller()
    if not controller.master_running():
        sys.exit("bench: the lab is not up; run `python -m lab up --config examples/lab-6-replicas.yaml` first")
    password = controller.password()
    hosts = read_hosts(controller.deployment_file)
    first = next(h for h in hosts if h.redis)
    mode = "cluster" if redis.Redis(host=first.ip, password=password).info("cluster")["cluster_enabled"] else "sentinel"
    runs = [roll_once(controller, mode, hosts, password, baseline_seconds) for _ in range(rounds)]

    client = "a RedisCluster client, one SET after the other" if mode == "cluster" else \
        "a Sentinel client, SET then WAIT 1 after each write"
    result = Result(f"rolling_restart_{mode}", f"Rolling restart under a writing client, {mode} mode",
                    mode=mode, servers=runs[0]["servers"], rounds=rounds, baseline_seconds=baseline_seconds)
    result.measure("whole roll (salt-run redis_deployment.rolling_restart)", [r["elapsed"] for r in runs])
    result.measure("one server, step start to back in sync (all servers, all rounds)",
                   [s for r in runs for s in r["per_server"]])
    result.measure("writes/s without a roll", [r["base_rate"] for r in runs], unit="writes/s")
    result.measure("writes/s during the roll", [r["roll_rate"] for r in runs], unit="writes/s")
    result.ratio("throughput during the roll / without (bound: >= 0.8)", [r["roll_rate"] for r in runs],
                 [r["base_rate"] for r in runs])
    result.measure("longest stall between two acknowledged writes, during the roll", [r["stall"] for r in runs])
    result.measure("longest stall without a roll", [r["base_stall"] for r in runs])
    result.measure("client errors after its retries", [r["errors"] for r in runs], unit="errors")
    result.note(f"client: {client}; each round measures its own baseline ({baseline_seconds:g} s) just before its roll")
    result.save()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 20, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
