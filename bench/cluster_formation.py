"""
Seconds from `salt '*' state.apply redis` to the planned shape (`cluster_state:ok` on every
node and, with `replicas_per_master`, every replica replicating), against the operator's
manual way on the same lab hosts and the same running servers: `redis-cli --cluster create
[--cluster-replicas N]` (the original document's step 13), then waiting for the same shape.
Both start from servers that run with cluster-enabled and know no peer (FLUSHALL +
CLUSTER RESET HARD), so what is compared is forming the cluster, in one process.

Needs the lab up in cluster mode (`make lab`, or `python -m lab up --config
examples/lab-6-replicas.yaml` for 6 hosts with replicas). Usage:
.venv/bin/python bench/cluster_formation.py [ROUNDS]
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import yaml  # noqa: E402

from bench.common import Result, lab_controller  # noqa: E402
from lab.hosts import read_hosts  # noqa: E402


def clients(controller):
    password = controller.password()
    hosts = [h for h in read_hosts(controller.deployment_file) if h.redis]
    return {h.ip: redis.Redis(host=h.ip, port=6379, password=password, socket_timeout=5) for h in hosts}


def reset(nodes):
    """Every node bare: replicas reset first (a replica refuses FLUSHALL, a reset replica is
    emptied), then the masters emptied and reset."""
    replicas = [c for c in nodes.values() if c.info("replication")["role"] == "slave"]
    for client in replicas + [c for c in nodes.values() if c not in replicas]:
        if client not in replicas:
            client.flushall()
        client.execute_command("CLUSTER", "RESET", "HARD")


def replicas_per_master(controller):
    document = yaml.safe_load(Path(controller.deployment_file).read_text())
    return int(((document.get("cache") or {}).get("redis") or {}).get("replicas_per_master", 0))


def wait_ok(nodes, replicas, timeout=120):
    """Until every node says ok and ``replicas`` of them say they replicate a master."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO") for client in nodes.values()) \
                and sum(client.info("replication")["role"] == "slave" for client in nodes.values()) == replicas:
            return True
        time.sleep(0.05)
    raise SystemExit("bench: the cluster did not reach its shape")


def ours(controller, nodes, replicas):
    reset(nodes)
    started = time.monotonic()
    result = controller.salt("salt", "*", "state.apply", "redis", "--out=quiet", capture=True)
    if result.returncode != 0:
        raise SystemExit(f"bench: state.apply failed: {result.stdout}{result.stderr}")
    wait_ok(nodes, replicas)
    return time.monotonic() - started


def manual(controller, nodes, replicas):
    reset(nodes)
    first = read_hosts(controller.deployment_file)[0].name
    per_master = replicas_per_master(controller)
    argv = ["redis-cli", "--cluster", "create", *(f"{ip}:6379" for ip in nodes), "--cluster-yes",
            "--cluster-replicas", str(per_master)]
    env = dict(os.environ, REDISCLI_AUTH=controller.password())
    started = time.monotonic()
    created = subprocess.run(controller.lab.enter(first, argv), env=env, capture_output=True, text=True)
    if created.returncode != 0:
        raise SystemExit(f"bench: redis-cli --cluster create failed: {created.stdout}{created.stderr}")
    wait_ok(nodes, replicas)
    return time.monotonic() - started


def main(rounds):
    controller = lab_controller()
    if not controller.master_running():
        sys.exit("bench: the lab is not up; run `make lab` first")
    nodes = clients(controller)
    per_master = replicas_per_master(controller)
    replicas = len(nodes) - len(nodes) // (per_master + 1)
    results = {"ours": [], "manual": []}
    for _ in range(rounds):
        results["manual"].append(manual(controller, nodes, replicas))
        results["ours"].append(ours(controller, nodes, replicas))
    ours_s, manual_s = statistics.median(results["ours"]), statistics.median(results["manual"])
    print(f"nodes: {len(nodes)}  replicas_per_master: {per_master}  rounds: {rounds}")
    spread = {name: ", ".join(f"{value:.2f}" for value in values) for name, values in results.items()}
    print(f"redis-cli --cluster create, to the shape   median {manual_s:6.2f}s  ({spread['manual']})")
    print(f"salt '*' state.apply redis, to the shape   median {ours_s:6.2f}s  ({spread['ours']})")
    print(f"ratio state.apply / redis-cli --cluster create: {ours_s / manual_s:.2f}x")
    replicas_flag = f" --cluster-replicas {per_master}" if per_master else ""
    result = Result(f"cluster_formation_{len(nodes)}", f"Cluster formation, {len(nodes)} hosts"
                    f"{f' with {per_master} replica per master' if per_master else ''}",
                    nodes=len(nodes), replicas_per_master=per_master, rounds=rounds)
    result.measure(f"redis-cli --cluster create{replicas_flag}, to the shape", results["manual"])
    result.measure("salt '*' state.apply redis, to the shape", results["ours"])
    result.ratio("state.apply / redis-cli --cluster create", results["ours"], results["manual"])
    result.note("both from servers running with cluster-enabled that know no peer (FLUSHALL + CLUSTER RESET HARD); "
                "the shape: cluster_state:ok on every node and every replica replicating")
    result.save()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
