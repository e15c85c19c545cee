"""
Seconds from bare hosts to a Sentinel pair ready for failover, ours against by hand, on the
same lab hosts in one run. Each round first rebuilds every host bare (`Lab.rebuild`: a fresh
disk as Debian leaves it after installing redis-server and redis-sentinel, the packages'
own configuration, a new minion key), then times one of:

  ours:    `salt '*' state.apply redis`, then waiting for the shape below
  by hand: what an operator types at the least: on each server `bind`, `requirepass`,
           `masterauth` (and `replicaof` on the second) appended to redis.conf and a restart;
           on each Sentinel host (witness included) `sentinel monitor` with the deployment's
           quorum, `auth-pass`, `down-after-milliseconds` and `requirepass` in sentinel.conf
           and a (re)start; then waiting for the same shape

Ready for failover: every Sentinel names the first server as master, sees the replica with
its link up, knows every other Sentinel, and `SENTINEL CKQUORUM` says OK (enough Sentinels
reachable to authorise a failover).

Needs the lab up in Sentinel mode with a witness:
`python -m lab up --config examples/lab-2.yaml`. Usage: .venv/bin/python bench/sentinel_pair.py [ROUNDS]
"""

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from bench.common import Result, lab_or_exit, redis_settings  # noqa: E402
from lab.hosts import read_hosts  # noqa: E402

MASTER_NAME = "mymaster"


def rebuild_bare(controller, hosts):
    """Every host reinstalled bare, its minion (with a new key) answering."""
    for host in hosts:  # powered off before its key goes: a live minion would get its old key accepted again
        if controller.lab.running(host.name):
            controller.lab.kill(host.name)
    for host in hosts:
        controller.salt("salt-key", "-d", host.name, "-y", capture=True)
    for host in hosts:
        controller.lab.rebuild(host.name, controller.minion_config)
    controller.wait_for_minions([host.name for host in hosts], timeout=300)


def in_host(controller, host, script, stdin=None):
    """Run a shell script inside ``host`` (the password only ever on stdin)."""
    done = subprocess.run(controller.lab.enter(host, ["sh", "-c", script]), input=stdin, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: on {host}: {script}: {done.stdout}{done.stderr}")
    return done.stdout


def by_hand(controller, hosts, password, down_after_ms, quorum):
    servers = [h for h in hosts if h.redis]
    master = servers[0]
    for server in servers:
        lines = [f"bind {server.ip} 127.0.0.1", f"requirepass {password}", f"masterauth {password}"]
        if server is not master:
            lines.append(f"replicaof {master.ip} 6379")
        in_host(controller, server.name, "cat >> /etc/redis/redis.conf && systemctl restart redis-server",
                "\n".join(lines) + "\n")
    for host in hosts:
        current = in_host(controller, host.name, "cat /etc/redis/sentinel.conf")
        kept = [line for line in current.splitlines()
                if not line.startswith(("bind ", "user ", "sentinel monitor ", "sentinel auth-pass ", "requirepass ",
                                        "sentinel down-after-milliseconds ", "sentinel config-epoch ",
                                        "sentinel leader-epoch ", "sentinel known-", "sentinel current-epoch",
                                        "sentinel myid"))]
        kept += [f"bind {host.ip} 127.0.0.1", f"requirepass {password}",
                 f"sentinel monitor {MASTER_NAME} {master.ip} 6379 {quorum}",
                 f"sentinel auth-pass {MASTER_NAME} {password}",
                 f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}"]
        in_host(controller, host.name, "cat > /etc/redis/sentinel.conf && systemctl restart redis-sentinel",
                "\n".join(kept) + "\n")


def as_dict(reply):
    """A SENTINEL MASTER / REPLICAS entry (a flat list of names and values) as a dict."""
    return dict(zip(reply[::2], reply[1::2]))


def ready(hosts, password, master_ip):
    """True when every Sentinel could fail the pair over now."""
    sentinels = len(hosts)
    for host in hosts:
        client = redis.Redis(host=host.ip, port=26379, password=password, socket_timeout=1, decode_responses=True)
        try:
            master = as_dict(client.execute_command("SENTINEL", "MASTER", MASTER_NAME))
            replicas = [as_dict(r) for r in client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)]
            client.execute_command("SENTINEL", "CKQUORUM", MASTER_NAME)
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
        if master["ip"] != master_ip or int(master["num-other-sentinels"]) != sentinels - 1:
            return False
        if not any(r.get("master-link-status") == "ok" and r.get("flags") == "slave" for r in replicas):
            return False
    return True


def wait_ready(hosts, password, master_ip, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(hosts, password, master_ip):
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit("bench: the pair did not become ready for failover")


def main(rounds):
    controller = lab_or_exit("lab-2.yaml")
    password = controller.password()
    hosts = read_hosts(controller.deployment_file)
    master_ip = next(h.ip for h in hosts if h.redis)
    settings = redis_settings(controller)
    down_after_ms = (settings.get("sentinel") or {}).get("down_after_ms", 5000)
    quorum = len(hosts) // 2 + 1
    results = {"by hand": [], "ours": [], "apply": []}
    for number in range(rounds):
        rebuild_bare(controller, hosts)
        started = time.monotonic()
        by_hand(controller, hosts, password, down_after_ms, quorum)
        results["by hand"].append(wait_ready(hosts, password, master_ip) - started)

        rebuild_bare(controller, hosts)
        started = time.monotonic()
        applied = controller.salt("salt", "*", "state.apply", "redis", "--out=quiet", capture=True)
        if applied.returncode != 0:
            raise SystemExit(f"bench: state.apply failed: {applied.stdout}{applied.stderr}")
        results["apply"].append(time.monotonic() - started)
        results["ours"].append(wait_ready(hosts, password, master_ip) - started)
        print(f"round {number + 1}: by hand {results['by hand'][-1]:.2f}s, state.apply {results['ours'][-1]:.2f}s")

    print(f"hosts: {len(hosts)} (Sentinels), down_after_ms {down_after_ms}, rounds: {rounds}")
    result = Result("sentinel_pair", "Sentinel pair, bare hosts to ready for failover, vs by hand",
                    sentinels=len(hosts), down_after_ms=down_after_ms, rounds=rounds)
    hand = result.measure("by hand: redis.conf + sentinel.conf edits and restarts, to ready", results["by hand"])
    ours = result.measure("salt '*' state.apply redis, to ready", results["ours"])
    result.measure("of which until salt '*' state.apply redis returned", results["apply"])
    result.ratio("state.apply / by hand", results["ours"], results["by hand"])
    print(f"by hand to ready for failover: median {hand:.2f}s; state.apply: median {ours:.2f}s; "
          f"ratio {ours / hand:.2f}x")
    result.note("ready: every Sentinel names the first server as master, sees the replica's link up, knows every "
                "other Sentinel, and SENTINEL CKQUORUM answers OK; each run starts from hosts rebuilt bare")
    result.save()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
