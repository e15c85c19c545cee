"""
A coordinated backup of the whole deployment (`salt-run redis_backup.run type=rdb
compress=zstd`: every node's `redis_backup.create` in parallel, then the set's manifest)
against its floor, the slowest single node: each node's `salt NODE redis_backup.create
type=rdb compress=zstd` alone, one after the other, in the same round. Then client
throughput during a set against without one: `redis-benchmark` (SET and GET, `--cluster`
in cluster mode, else against the master) in back-to-back chunks from this machine, first
for as long as a set took, with no backup, then while a set runs.

The masters are first filled with SIZE_MIB of 1 KiB values (half random, half text), split
evenly between them (replicas hold their copies). redis-benchmark reads no REDISCLI_AUTH and
would need the password on its command line (visible in `ps`): it logs in instead as a user
this script adds to every server for the run (`nopass`, live only, deleted at the end), with a
dummy -a.

Needs the lab up: `python -m lab up --config examples/lab-3.yaml` (or lab-6-replicas.yaml,
or lab-2.yaml for a Sentinel pair). Usage: .venv/bin/python bench/backup_set.py [SIZE_MIB [ROUNDS]]
"""

import csv
import io
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from bench.common import Result, fill, lab_or_exit, own_hash_tag  # noqa: E402
from lab.hosts import read_hosts  # noqa: E402

CHUNK_REQUESTS = 20000


def masters(servers, password):
    """{ip: client} of the servers that are masters."""
    clients = {ip: redis.Redis(host=ip, password=password, socket_timeout=60) for ip in servers}
    return {ip: c for ip, c in clients.items() if c.info("replication")["role"] == "master"}


def fill_masters(servers, password, size_mib, cluster):
    started, keys = time.monotonic(), 0
    primaries = masters(servers, password)
    for client in primaries.values():
        prefix = own_hash_tag(client) if cluster else "bench"
        keys += fill(client, (size_mib << 20) // len(primaries), prefix)[0]
    print(f"filled {len(primaries)} master(s) with {size_mib} MiB, {keys} keys, in {time.monotonic() - started:.1f}s")
    return keys


def timed_salt(controller, *args):
    started = time.monotonic()
    done = controller.salt(*args, "--out=json", *(["--static"] if args[0] == "salt" else []), capture=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed: {done.stdout[-3000:]}{done.stderr[-2000:]}")
    return elapsed, done.stdout


def the_set(controller):
    """Seconds of one `salt-run redis_backup.run`; exits unless its set is complete."""
    elapsed, output = timed_salt(controller, "salt-run", "redis_backup.run", "type=rdb", "compress=zstd")
    last = output[output.rfind('{\n    "set_id"') if '"set_id"' in output else 0:]
    if '"status": "complete"' not in output:
        raise SystemExit(f"bench: the set is not complete: {last[-3000:]}")
    return elapsed


def one_node(controller, minion):
    elapsed, output = timed_salt(controller, "salt", minion, "redis_backup.create", "type=rdb", "compress=zstd")
    if not json.loads(output).get(minion, {}).get("name"):
        raise SystemExit(f"bench: {minion}'s backup failed: {output[-3000:]}")
    return elapsed


BENCH_USER = "bench-backup-set"


def bench_user(servers, password, present):
    """Add (or delete) the passwordless user redis-benchmark logs in as, on every server."""
    for ip in servers:
        client = redis.Redis(host=ip, password=password, socket_timeout=60)
        if present:
            client.execute_command("ACL", "SETUSER", BENCH_USER, "on", "nopass", "~*", "+@all")
        else:
            client.execute_command("ACL", "DELUSER", BENCH_USER)


def benchmark_chunk(ip, password, cluster):
    """One redis-benchmark run: {"SET": requests/s, "GET": requests/s}. (``password`` unused:
    redis-benchmark logs in as BENCH_USER, see bench_user.)"""
    argv = ["redis-benchmark", "-h", ip, "-p", "6379", "--user", BENCH_USER, "-a", "unused", "-t", "set,get",
            "-n", str(CHUNK_REQUESTS), "-d", "256", "-r", "100000", "-c", "20", "--csv"]
    if cluster:
        argv.append("--cluster")
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    rows = [row for row in csv.reader(io.StringIO(done.stdout)) if len(row) > 1 and row[0] in ("SET", "GET")]
    if done.returncode != 0 or len(rows) != 2:
        raise SystemExit(f"bench: redis-benchmark failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
    return {row[0]: float(row[1]) for row in rows}


def chunks_while(ip, password, cluster, running):
    """redis-benchmark chunks back to back while ``running()``; their results."""
    found = []
    while running() or not found:
        found.append(benchmark_chunk(ip, password, cluster))
    return found


def measure_rounds(controller, servers, password, cluster, target, rounds, samples):
    """The set, each node alone, and redis-benchmark without and during a set, ROUNDS times."""
    sets, slowest, singles, during, without, loaded_sets = samples
    for number in range(rounds):
        sets.append(the_set(controller))
        for name in servers.values():
            singles[name].append(one_node(controller, name))
        slowest.append(max(times[-1] for times in singles.values()))
        # Throughput: as long as a set takes, without one; then during one.
        deadline = time.monotonic() + sets[-1]
        without += chunks_while(target, password, cluster, lambda: time.monotonic() < deadline)
        job = threading.Thread(target=lambda: loaded_sets.append(the_set(controller)), daemon=True)
        job.start()
        during += chunks_while(target, password, cluster, job.is_alive)
        job.join()
        if not loaded_sets:
            raise SystemExit("bench: the set under client load failed")
        print(f"round {number + 1}: set {sets[-1]:.2f}s, slowest single node {slowest[-1]:.2f}s "
              f"({', '.join(f'{n} {t[-1]:.2f}' for n, t in singles.items())})")


def main(size_mib, rounds):
    controller = lab_or_exit("lab-3.yaml")
    password = controller.password()
    hosts = read_hosts(controller.deployment_file)
    servers = {h.ip: h.name for h in hosts if h.redis}
    first = next(iter(servers))
    cluster = bool(redis.Redis(host=first, password=password).info("cluster")["cluster_enabled"])
    keys = fill_masters(servers, password, size_mib, cluster)
    target = first if cluster else next(iter(masters(servers, password)))
    sets, slowest, singles, during, without = [], [], {name: [] for name in servers.values()}, [], []
    loaded_sets = []
    bench_user(servers, password, present=True)
    try:
        measure_rounds(controller, servers, password, cluster, target, rounds,
                       (sets, slowest, singles, during, without, loaded_sets))
    finally:
        bench_user(servers, password, present=False)
    nodes = len(servers)
    result = Result(f"backup_set_{nodes}", f"Coordinated backup of {nodes} nodes, and clients during it",
                    nodes=nodes, mode="cluster" if cluster else "sentinel", size_mib=size_mib, keys=keys,
                    rounds=rounds)
    result.measure("salt-run redis_backup.run type=rdb compress=zstd (the set)", sets)
    for name, times in singles.items():
        result.measure(f"salt {name} redis_backup.create type=rdb compress=zstd, alone", times)
    result.measure("slowest single node", slowest)
    result.ratio("set / slowest single node", sets, slowest)
    result.measure("the set while redis-benchmark runs", loaded_sets)
    for command in ("SET", "GET"):
        base = [chunk[command] for chunk in without]
        load = [chunk[command] for chunk in during]
        result.measure(f"redis-benchmark {command}, no backup", base, unit="requests/s")
        result.measure(f"redis-benchmark {command}, during a set", load, unit="requests/s")
        result.ratio(f"{command} throughput during a set / without", load, base, per_round=False)
    result.note(f"redis-benchmark -t set,get -n {CHUNK_REQUESTS} -d 256 -r 100000 -c 20"
                f"{' --cluster' if cluster else ''} from this machine, chunks back to back (each chunk a sample); "
                "throughput ratios: median during / median without, spread: each chunk during / median without")
    result.note("each create runs its check (decompress + redis-check-rdb) and a verify load (throwaway server), "
                "as the set's do")
    print(f"set median {statistics.median(sets):.2f}s, slowest single node median {statistics.median(slowest):.2f}s")
    result.save()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
