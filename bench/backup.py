"""
What `redis_backup.create type=rdb` costs against doing it by hand, on one throwaway
redis-server (no password, temp dir) filled with pipelined writes:

  ours:   redis_backup.create(type="rdb", compress=zstd|gzip, verify=False): BGSAVE, streamed
          copy + compression + two sha256, then the check (decompress + redis-check-rdb)
  manual: BGSAVE, then `zstd -1 -T0` (our level) / `zstd -3 -T0` / `gzip -6` of the same dump
  verify: redis_backup.verify (throwaway server loads the backup, counts keys per type), apart

Each of our calls runs in a child process of its own, which reports its peak RSS growth
during the call (VmHWM, reset just before, minus VmRSS before) and its children's peak
(RUSAGE_CHILDREN: the compressor, redis-check-rdb, the throwaway server for verify). Ratios are
printed; nothing is asserted.

Usage: .venv/bin/python bench/backup.py [SIZE_MIB [ROUNDS]]   (SIZE_MIB also BENCH_BACKUP_MIB; default 1024, 1 round)
"""

import json
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.common import Result, fill  # noqa: E402
from support.loaders import load_file, utils_dunder  # noqa: E402

SERVER = "/usr/bin/redis-server"
MANUAL = (("zstd -1 -T0", ["zstd", "-1", "-T0", "-q", "-c"]),
          ("zstd -3 -T0", ["zstd", "-3", "-T0", "-q", "-c"]),
          ("gzip -6", ["gzip", "-6", "-c", "-n"]))
PAIRS = (("zstd", "zstd -1 -T0"), ("zstd", "zstd -3 -T0"), ("gzip", "gzip -6"))


def load_backup_module(pillar):
    """_modules/redis_backup.py with the dunders Salt would give it (no event bus, no service)."""
    mod = load_file("redis_backup", ROOT / "_modules" / "redis_backup.py")
    mod.__utils__ = utils_dunder()
    mod.__pillar__ = {"redis": pillar}
    mod.__grains__ = {"id": "bench"}
    mod.__opts__ = {"id": "bench"}
    mod.__salt__ = {"event.send": lambda tag, data: True}
    return mod


def status_kib(field):
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak():
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def child(arguments):
    """Run one of our calls in this process and print what it cost."""
    job = json.loads(arguments)
    mod = load_backup_module(job["pillar"])
    reset_peak()
    before = status_kib("VmRSS")
    started = time.monotonic()
    if job["call"] == "create":
        result = mod.create(type="rdb", compress=job["compress"], verify=False, prune=False)
    else:
        result = mod.verify(job["backup"])
    seconds = time.monotonic() - started
    print(json.dumps({
        "seconds": seconds,
        "rss_before_kib": before,
        "rss_growth_kib": status_kib("VmHWM") - before,
        "children_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "result": result,
    }))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(directory):
    port = free_port()
    config = directory / "redis.conf"
    config.write_text("\n".join([
        f"port {port}", "bind 127.0.0.1", f"dir {directory}", 'save ""', "appendonly no", "daemonize no",
        f"logfile {directory / 'redis.log'}", "maxmemory 0",
    ]) + "\n")
    proc = subprocess.Popen([SERVER, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=600)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, client, port
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                sys.exit("bench: redis-server did not start")
            time.sleep(0.05)


def bgsave(client):
    before = client.info("persistence")["rdb_saves"]
    started = time.monotonic()
    client.bgsave()
    while True:
        info = client.info("persistence")
        if not info["rdb_bgsave_in_progress"] and info["rdb_saves"] > before:
            return time.monotonic() - started
        time.sleep(0.05)


def timed(command, source, destination):
    started = time.monotonic()
    with open(source, "rb") as src, open(destination, "wb") as dst:
        subprocess.run(command, stdin=src, stdout=dst, check=True)
        dst.flush()
        os.fsync(dst.fileno())
    return time.monotonic() - started, os.path.getsize(destination)


def run_child(job):
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"bench: {job['call']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mib(size):
    return f"{size / 2**20:8.1f} MiB"


def one_round(client, work, data, pillar):
    """BGSAVE and the three compressors by hand, then our create with zstd and gzip, then verify."""
    manual = {"bgsave": bgsave(client)}
    dump = data / "dump.rdb"
    for label, command in MANUAL:
        manual[label] = timed(command, dump, work / f"manual.{label.split()[0]}{label.split()[1]}")
    ours = {}
    for compress in ("zstd", "gzip"):
        ours[compress] = run_child({"call": "create", "compress": compress, "pillar": pillar})
    verify = run_child({"call": "verify", "backup": ours["zstd"]["result"]["name"], "pillar": pillar})
    shutil.rmtree(pillar["backup"]["dir"], ignore_errors=True)  # the next round's space
    return manual, ours, verify, dump.stat().st_size


def print_round(manual, ours, verify, rdb_size):
    print()
    print(f"{'':34} {'seconds':>8} {'size':>12} {'ratio':>6}   peak RSS growth (self / children)")
    for label, _ in MANUAL:
        seconds, stored = manual[label]
        total = manual["bgsave"] + seconds
        print(f"manual BGSAVE + {label:<18} {total:8.2f} {mib(stored):>12} {stored / rdb_size:6.3f}")
    for compress, ret in ours.items():
        meta = ret["result"]
        copy = meta["snapshot_seconds"] + meta["copy_seconds"]
        print(f"ours create {compress:<5} (to listed)     {ret['seconds']:8.2f} {mib(meta['size']):>12} "
              f"{meta['size'] / meta['raw_size']:6.3f}   {ret['rss_growth_kib'] / 1024:.1f} MiB / "
              f"{ret['children_maxrss_kib'] / 1024:.1f} MiB")
        print(f"  of which BGSAVE + copy/compress   {copy:8.2f}   check (decompress + redis-check-rdb) "
              f"{meta['verify_seconds']:.2f}s")
    print(f"verify (throwaway server load + count) {verify['seconds']:8.2f}s   keys {verify['result']['keys']}   "
          f"peak RSS growth {verify['rss_growth_kib'] / 1024:.1f} MiB / "
          f"children {verify['children_maxrss_kib'] / 1024:.1f} MiB")
    print()
    for compress, label in PAIRS:
        meta = ours[compress]["result"]
        by_hand = manual["bgsave"] + manual[label][0]
        copy = meta["snapshot_seconds"] + meta["copy_seconds"]
        print(f"ratio ours {compress} / manual {label:<12}: BGSAVE+copy {copy / by_hand:5.2f}x   "
              f"whole create {ours[compress]['seconds'] / by_hand:5.2f}x   "
              f"size {meta['size'] / manual[label][1]:5.3f}x")


def report(rounds, size_mib, keys, used, rdb_size):
    """The result across rounds: medians, spreads, ratios of our create against each manual way."""
    result = Result("backup_create", "Backup `create` (rdb, zstd/gzip) vs BGSAVE + a compressor by hand",
                    size_mib=size_mib, rounds=len(rounds), keys=keys)
    for compress, label in PAIRS:
        by_hand = [m["bgsave"] + m[label][0] for m, _, _, _ in rounds]
        copy = [o[compress]["result"]["snapshot_seconds"] + o[compress]["result"]["copy_seconds"]
                for _, o, _, _ in rounds]
        whole = [o[compress]["seconds"] for _, o, _, _ in rounds]
        if label != "zstd -3 -T0":
            result.measure(f"by hand: BGSAVE + {label}", by_hand)
            result.measure(f"ours: create {compress}, BGSAVE + copy/compress", copy)
            result.measure(f"ours: create {compress}, whole (with the check)", whole)
        result.ratio(f"create {compress} BGSAVE+copy / by hand {label}", copy, by_hand)
        result.ratio(f"create {compress} whole / by hand {label}", whole, by_hand)
        result.ratio(f"create {compress} size / {label} size", [o[compress]["result"]["size"] for _, o, _, _ in rounds],
                     [m[label][1] for m, _, _, _ in rounds])
    result.measure("by hand: BGSAVE alone", [m["bgsave"] for m, _, _, _ in rounds])
    for compress in ("zstd", "gzip"):
        result.measure(f"copier's peak RSS growth, create {compress}",
                       [o[compress]["rss_growth_kib"] / 1024 for _, o, _, _ in rounds], unit="MiB")
        result.measure(f"its children's peak RSS (compressor, redis-check-rdb), create {compress}",
                       [o[compress]["children_maxrss_kib"] / 1024 for _, o, _, _ in rounds], unit="MiB")
    result.measure("verify (throwaway server loads the backup, counts keys)", [v["seconds"] for _, _, v, _ in rounds])
    result.measure("verify's throwaway server, peak RSS", [v["children_maxrss_kib"] / 1024 for _, _, v, _ in rounds],
                   unit="MiB")
    result.measure("dataset (used_memory_dataset)", used / 2**20, unit="MiB")
    result.measure("dump.rdb", rdb_size / 2**20, unit="MiB")
    result.note(f"{keys} keys of 1 KiB values, half random bytes and half repeated text (compressible like real "
                "data), on a throwaway redis-server on loopback")
    result.save()


def main(size_mib, rounds_wanted):
    size = size_mib << 20
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-backup-"))
    need = size * 5  # dump + 2 backups + 3 manual copies (compressed) + a decompressed check copy
    free = shutil.disk_usage(work).free
    if free < need:
        shutil.rmtree(work)
        sys.exit(f"bench: {free >> 20} MiB free in {work.parent}, about {need >> 20} MiB needed")
    data, backups = work / "data", work / "backups"
    data.mkdir()
    proc, client, port = start_server(data)
    rounds = []
    try:
        keys, written, fill_seconds = fill(client, size)
        used = client.info("memory")["used_memory_dataset"]
        print(f"dataset: {keys} keys, {mib(written)} written in {fill_seconds:.1f}s, used_memory_dataset {mib(used)}")
        pillar = {"role": "master", "mode": "sentinel", "port": port, "backup": {"dir": str(backups)}}
        for number in range(rounds_wanted):
            rounds.append(one_round(client, work, data, pillar))
            print(f"round {number + 1}: dump.rdb {mib(rounds[-1][3])}; BGSAVE by hand {rounds[-1][0]['bgsave']:.2f}s")
            print_round(*rounds[-1])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    report(rounds, size_mib, keys, used, rounds[-1][3])
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("BENCH_BACKUP_MIB", "1024")),
             int(sys.argv[2]) if len(sys.argv) > 2 else 1)
