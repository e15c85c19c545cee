"""
Seconds from `salt '*' state.apply redis` to `cluster_state:ok` on every node, against the
operator's manual way on the same lab hosts and the same running servers:
`redis-cli --cluster create` (the original document's step 13), then waiting for `ok`.
Both start from servers that run with cluster-enabled and know no peer (FLUSHALL +
CLUSTER RESET HARD), so what is compared is forming the cluster, in one process.

Needs the lab up in cluster mode (`make lab`, or `python -m lab up --config ...` with 6
controllers for 6 hosts). Usage: .venv/bin/python bench/cluster_formation.py [ROUNDS]
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from lab.__main__ import Controller  # noqa: E402
from lab.hosts import REPO, read_hosts  # noqa: E402


def clients(controller):
    password = controller.password()
    hosts = [h for h in read_hosts(controller.deployment_file) if h.redis]
    return {h.ip: redis.Redis(host=h.ip, port=6379, password=password, socket_timeout=5) for h in hosts}


def reset(nodes):
    for client in nodes.values():
        client.flushall()
        client.execute_command("CLUSTER", "RESET", "HARD")


def wait_ok(nodes, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO") for client in nodes.values()):
            return True
        time.sleep(0.05)
    raise SystemExit("bench: the cluster did not become ok")


def ours(controller, nodes):
    reset(nodes)
    started = time.monotonic()
    result = controller.salt("salt", "*", "state.apply", "redis", "--out=quiet", capture=True)
    if result.returncode != 0:
        raise SystemExit(f"bench: state.apply failed: {result.stdout}{result.stderr}")
    wait_ok(nodes)
    return time.monotonic() - started


def manual(controller, nodes):
    reset(nodes)
    first = read_hosts(controller.deployment_file)[0].name
    argv = ["redis-cli", "--cluster", "create", *(f"{ip}:6379" for ip in nodes), "--cluster-yes"]
    env = dict(os.environ, REDISCLI_AUTH=controller.password())
    started = time.monotonic()
    created = subprocess.run(controller.lab.enter(first, argv), env=env, capture_output=True, text=True)
    if created.returncode != 0:
        raise SystemExit(f"bench: redis-cli --cluster create failed: {created.stdout}{created.stderr}")
    wait_ok(nodes)
    return time.monotonic() - started


def main(rounds):
    controller = Controller(Path(os.environ.get("LAB_STATE_DIR", REPO / ".lab")), os.environ.get("LAB_NAME", "rlab"))
    if not controller.master_running():
        sys.exit("bench: the lab is not up; run `make lab` first")
    nodes = clients(controller)
    results = {"ours": [], "manual": []}
    for _ in range(rounds):
        results["manual"].append(manual(controller, nodes))
        results["ours"].append(ours(controller, nodes))
    ours_s, manual_s = statistics.median(results["ours"]), statistics.median(results["manual"])
    print(f"nodes: {len(nodes)}  rounds: {rounds}")
    print(f"redis-cli --cluster create, to cluster_state:ok   median {manual_s:6.2f}s")
    print(f"salt '*' state.apply redis, to cluster_state:ok   median {ours_s:6.2f}s")
    print(f"ratio state.apply / redis-cli --cluster create: {ours_s / manual_s:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
