"""
`redis_backup.restore force=True` of one node's RDB backup against Redis's own cold start
on the same RDB, on the same lab host, in one run:

  ours:       `salt NODE redis_backup.restore backup=NAME force=True`: the checks
              (checksums, redis-check-rdb on the decompressed data), the restore journal,
              the service masked and stopped (its shutdown SAVE included), the swap, the
              start, and the loader's key counts compared with the backup's
  cold start: the backup's RDB decompressed once beforehand (not timed) into the host's
              /var/tmp, then a plain `redis-server --dir that --appendonly no` started in
              the host, timed to its first PONG (the RDB loaded)

The node (the first Redis host, a cluster master without replicas: it may be restored
alone) is first filled with SIZE_MIB of 1 KiB values (half random, half text) in its own
slots, and backed up once (`redis_backup.create type=rdb compress=zstd`).

Needs the lab up in cluster mode: `python -m lab up --config examples/lab-3.yaml`.
Usage: .venv/bin/python bench/restore.py [SIZE_MIB [ROUNDS]]
"""

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from bench.common import Result, fill, lab_or_exit, own_hash_tag  # noqa: E402
from lab.hosts import read_hosts  # noqa: E402

COLD_DIR = "/var/tmp/bench-cold"
COLD_PORT = 7379


def salt_json(controller, minion, *args):
    started = time.monotonic()
    done = controller.salt("salt", minion, *args, "--out=json", "--static", "-t", "3600", capture=True)
    elapsed = time.monotonic() - started
    try:
        answer = json.loads(done.stdout)[minion]
    except (json.JSONDecodeError, KeyError):
        raise SystemExit(f"bench: salt {minion} {' '.join(args)}: {done.stdout[-3000:]}{done.stderr[-2000:]}")
    return elapsed, answer


def in_host(controller, host, script):
    done = subprocess.run(controller.lab.enter(host, ["sh", "-c", script]), capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: on {host}: {script}: {done.stdout}{done.stderr}")
    return done.stdout


def cold_start(controller, host, ip):
    """Seconds from starting redis-server on the RDB to its first PONG."""
    argv = ["redis-server", "--port", COLD_PORT, "--bind", ip, "--protected-mode", "no", "--dir", COLD_DIR,
            "--dbfilename", "dump.rdb", "--appendonly", "no", "--save", "", "--daemonize", "no",
            "--logfile", f"{COLD_DIR}/redis.log"]
    client = redis.Redis(host=ip, port=COLD_PORT, socket_timeout=5)
    started = time.monotonic()
    server = subprocess.Popen(controller.lab.enter(host, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                if server.poll() is not None:
                    raise SystemExit(f"bench: the cold start's redis-server exited; see {COLD_DIR}/redis.log")
                time.sleep(0.01)
        elapsed = time.monotonic() - started
        keys = client.dbsize()
    finally:
        try:
            client.shutdown(nosave=True)
        except redis.RedisError:
            pass
        server.wait(timeout=60)
    return elapsed, keys


def main(size_mib, rounds):
    controller = lab_or_exit("lab-3.yaml")
    password = controller.password()
    node = next(h for h in read_hosts(controller.deployment_file) if h.redis)
    client = redis.Redis(host=node.ip, password=password, socket_timeout=120)
    keys = fill(client, size_mib << 20, own_hash_tag(client))[0]
    print(f"{node.name}: {keys} keys written, {client.dbsize()} in all")
    _, backup = salt_json(controller, node.name, "redis_backup.create", "type=rdb", "compress=zstd", "verify=False")
    if not isinstance(backup, dict) or not backup.get("name"):
        raise SystemExit(f"bench: the backup failed: {backup}")
    in_host(controller, node.name, f"rm -rf {COLD_DIR} && mkdir -p {COLD_DIR} && "
            f"zstd -d -q -c \"$(find {backup['path']} -name '*.zst' | head -1)\" > {COLD_DIR}/dump.rdb")
    print(f"backup {backup['name']}: {backup['size'] / 2**20:.1f} MiB stored, RDB {backup['raw_size'] / 2**20:.1f} MiB")
    colds, ours = [], []
    for number in range(rounds):
        seconds, cold_keys = cold_start(controller, node.name, node.ip)
        colds.append(seconds)
        seconds, answer = salt_json(controller, node.name, "redis_backup.restore", f"backup={backup['name']}",
                                    "force=True")
        if not isinstance(answer, dict) or answer.get("result") is not True:
            raise SystemExit(f"bench: the restore failed: {answer}")
        ours.append(seconds)
        print(f"round {number + 1}: cold start {colds[-1]:.2f}s ({cold_keys} keys), "
              f"redis_backup.restore {ours[-1]:.2f}s ({answer.get('loaded_keys')} keys loaded)")
    in_host(controller, node.name, f"rm -rf {COLD_DIR}")
    result = Result("restore", "Restore of one node vs Redis's own cold start on the same RDB", node=node.name,
                    size_mib=size_mib, keys=cold_keys, rounds=rounds)
    result.measure("redis-server cold start on the RDB, to its first PONG", colds)
    result.measure(f"salt {node.name} redis_backup.restore backup=NAME force=True", ours)
    result.ratio("restore / cold start", ours, colds)
    result.measure("the RDB", backup["raw_size"] / 2**20, unit="MiB")
    result.measure("the backup (zstd)", backup["size"] / 2**20, unit="MiB")
    result.note("the restore's time is the salt CLI's wall time: the job's publication and return included")
    result.save()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
