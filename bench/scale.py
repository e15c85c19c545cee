"""
Does anything grow faster than the fleet? The same three operations on a lab of 3 Redis hosts
and on one of 12 (each formed from bare hosts, as a cluster of masters), in one process, one
lab after the other on the same subnet:

  formation  `salt '*' state.apply redis` on bare hosts, until every node is in the cluster
  no-op      `salt '*' state.apply redis` again (ROUNDS times, the median)
  backup     `salt-run redis_backup.run` (a set backup of every node)

For each: wall seconds; CPU seconds per minion (each lab host's cgroup: its salt-minion, its
redis-server and whatever they ran) with the spread between hosts; the salt-master's CPU per
minion; the CLI's own CPU (salt / salt-run); and the wall time against what two shared cores
allow (all CPU spent / cores: 1.0x means the run only waited for CPU). Then each host's
memory after the runs (its cgroup's RSS + shmem). Ratios are 12 hosts against 3; the aim for
CPU per minion is at most 1.1x. Nothing is asserted.

Usage: .venv/bin/python bench/scale.py [--sizes 3,12] [--rounds 3] [--json PATH]
(root, as the lab; lab name `rscale`, subnet 10.213.49, its own state directory, brought down
again at the end, also when a step fails.)
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from lab.__main__ import Controller  # noqa: E402
from second_apply import cpu_counters  # noqa: E402

SUBNET = "10.213.49"
CORES = os.cpu_count() or 1


def deployment(size):
    controllers = [{"hostname": f"sc{n:02d}", "ip_address": f"{SUBNET}.{10 + n}", "services": {"redis": True}}
                   for n in range(1, size + 1)]
    return {"cache": {"redis": {"password": "${REDIS_PASSWORD}", "host_baseline": "report"}},
            "nodes": {"controllers": controllers}}


def measured(controller, hosts, tool, *args):
    """{wall, per_minion, master, cli, returns} of one salt / salt-run call."""
    before = cpu_counters(controller, hosts)
    started = time.monotonic()
    static = ["--static"] if tool == "salt" else []  # (salt-run has no --static)
    result = controller.salt(tool, *args, "--out=json", *static, capture=True)
    wall = time.monotonic() - started
    after = cpu_counters(controller, hosts)
    used = {part: after[part] - before.get(part, 0) for part in after}
    if result.returncode != 0:
        raise SystemExit(f"bench: {tool} {' '.join(args)} failed ({result.returncode}):\n"
                         f"{result.stdout[-3000:]}{result.stderr[-2000:]}")
    per_minion = [used[h] for h in hosts]
    return {"wall": wall, "per_minion": statistics.median(per_minion), "min_minion": min(per_minion),
            "max_minion": max(per_minion), "master": used["master"] / len(hosts), "cli": used["cli"],
            "allowed": sum(used.values()) / CORES}


def cluster_ok(controller):
    result = controller.salt("salt", "*", "redis_cluster.status", "--out=json", "--static", capture=True)
    statuses = json.loads(result.stdout or "{}")
    return all(isinstance(s, dict) and s.get("cluster_state") == "ok" for s in statuses.values()), statuses


def one_size(size, rounds):
    state_dir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{size}-"))
    controller = Controller(state_dir, name="rscale")
    config = state_dir / "deployment.yaml"
    config.write_text(yaml.safe_dump(deployment(size)))
    try:
        controller._install_config(config)
        started = time.monotonic()
        hosts = [h.name for h in controller.ensure_hosts_and_minions()]
        boot = time.monotonic() - started
        controller.salt("salt", "*", "saltutil.sync_all", "--out=quiet", capture=True)
        results = {"hosts": size, "boot_wall": boot}
        results["formation"] = measured(controller, hosts, "salt", "*", "state.apply", "redis", "-t", "900")
        ok, statuses = cluster_ok(controller)
        if not ok:
            raise SystemExit(f"bench: the {size}-host cluster is not ok after its apply: {statuses}")
        noops = [measured(controller, hosts, "salt", "*", "state.apply", "redis") for _ in range(rounds)]
        results["noop"] = {key: statistics.median(n[key] for n in noops) for key in noops[0]}
        results["noop"]["rounds"] = [round(n["wall"], 2) for n in noops]
        results["backup"] = measured(controller, hosts, "salt-run", "redis_backup.run")
        memory = [controller.lab.memory(h) or 0 for h in hosts]
        results["memory_mib"] = {"median": statistics.median(memory) / 2**20, "max": max(memory) / 2**20}
        return results
    finally:
        controller.down()


def row(name, small, large):
    ratio = large["per_minion"] / small["per_minion"] if small["per_minion"] else float("nan")
    master = large["master"] / small["master"] if small["master"] else float("nan")
    return (f"{name:<10} {small['wall']:7.1f} {large['wall']:7.1f}   "
            f"{small['per_minion']:6.2f} {large['per_minion']:6.2f} ({large['min_minion']:.2f}-"
            f"{large['max_minion']:.2f})  {ratio:5.2f}x   {small['master']:5.2f} {large['master']:5.2f} {master:5.2f}x"
            f"   {small['wall'] / small['allowed']:4.2f} {large['wall'] / large['allowed']:4.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--sizes", default="3,12")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = {}
    for size in sizes:
        print(f"bench: {size} hosts ...", flush=True)
        runs[size] = one_size(size, args.rounds)
        print(json.dumps(runs[size]), flush=True)
    small, large = runs[sizes[0]], runs[sizes[-1]]
    print(f"\n{sizes[0]} vs {sizes[-1]} Redis hosts, {CORES} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':<10} {'wall s':>15}   {'CPU s per minion (spread)':<30} {'ratio':>6}   "
          f"{'master CPU/minion':<19}  wall/allowed")
    for name in ("formation", "noop", "backup"):
        print(row(name, small[name], large[name]))
    print(f"memory per host (MiB, median/max): {small['memory_mib']['median']:.0f}/{small['memory_mib']['max']:.0f}"
          f" vs {large['memory_mib']['median']:.0f}/{large['memory_mib']['max']:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
