"""
`make bench`: every bench/ script on the lab it needs, and docs/BENCHMARKS.md from what they measured.

For each benchmark: its lab config (examples/, its addresses moved to 10.213.45.0/24) is
brought up as its own lab (name `rbench`, state in .bench/lab: never `make lab`'s nor a
test's), the script runs against it, and the lab is brought down again whatever happened.
A script that needs no lab runs on loopback. Each script measures its own baseline in the
same run on the same hosts and writes its result (medians, min-max, ratios) to the file
BENCH_JSON names; those results are kept in docs/bench-results.json (one entry per
benchmark: a run of a subset replaces only its own entries) and docs/BENCHMARKS.md is
written from them.

Usage: .venv/bin/python bench/run.py [--only "NAME ..."] [--rounds N] [--size-mib MIB] [--lab-size-mib MIB]
       make bench [BENCH="NAME ..."] [ROUNDS=N] [SIZE_MIB=MIB] [LAB_SIZE_MIB=MIB]
A NAME selects every benchmark it starts (`cluster_formation` runs both sizes); --list lists them.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
# BENCH_LAB_NAME / BENCH_SUBNET: for a second run beside this one (another checkout).
LAB_NAME = os.environ.get("BENCH_LAB_NAME", "rbench")
SUBNET = os.environ.get("BENCH_SUBNET", "10.213.45")
STATE_DIR = ROOT / ".bench" / "lab"
WORK_DIR = ROOT / ".bench"
RESULTS = ROOT / "docs" / "bench-results.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
TIMEOUT = 3600
LAB_SIZED = ("backup_set.py", "restore.py", "throughput_backup.py")  # scripts taking --lab-size-mib


def _rounds(args):
    return [str(args.rounds)]


# name: (script, lab config under examples/ or None for loopback, its arguments from the knobs)
BENCHMARKS = {
    "second_apply": ("second_apply.py", "lab-3.yaml", _rounds),
    "cluster_formation_3": ("cluster_formation.py", "lab-3.yaml", _rounds),
    "cluster_formation_6": ("cluster_formation.py", "lab-6-replicas.yaml", _rounds),
    "sentinel_pair": ("sentinel_pair.py", "lab-2.yaml", _rounds),
    "backup_create": ("backup.py", None, lambda a: [str(a.size_mib), str(a.rounds)]),
    "backup_set_3": ("backup_set.py", "lab-3.yaml", lambda a: [str(a.lab_size_mib), str(a.rounds)]),
    "backup_set_6": ("backup_set.py", "lab-6-replicas.yaml", lambda a: [str(a.lab_size_mib), str(a.rounds)]),
    "restore": ("restore.py", "lab-3.yaml", lambda a: [str(a.lab_size_mib), str(a.rounds)]),
    "failover_sentinel": ("failover.py", "lab-2.yaml", _rounds),
    "failover_cluster": ("failover.py", "lab-6-replicas.yaml", _rounds),
    "rolling_restart_cluster": ("rolling_restart.py", "lab-6-replicas.yaml", lambda a: ["20", str(a.rounds)]),
    "rolling_restart_sentinel": ("rolling_restart.py", "lab-2.yaml", lambda a: ["20", str(a.rounds)]),
}


# ---------------------------------------------------------------------------- the machine


def machine():
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "?"
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.split()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(int(meminfo["MemTotal"].split()[0]) / 2**20, 1),
        "kernel": platform.release(),
        "debian": debian,
        "redis": next((word[2:] for word in redis if word.startswith("v=")), "?"),
        "python": platform.python_version(),
    }


def load_average():
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


def commit():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return head + ("+changes" if dirty else "")


# ---------------------------------------------------------------------------- the lab


def lab_config(example):
    """examples/EXAMPLE with its controllers moved to SUBNET (the lab's subnet comes from the config)."""
    text = (ROOT / "examples" / example).read_text()
    moved = re.sub(r"\b10\.213\.\d+\.(\d+)\b", rf"{SUBNET}.\1", text)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    path = WORK_DIR / f"lab-config-{example}"
    path.write_text(f"# examples/{example} on {SUBNET}.0/24, written by bench/run.py\n" + moved)
    return path


def lab(*argv, log=None):
    command = [PY, "-m", "lab", "--name", LAB_NAME, "--state-dir", str(STATE_DIR), *argv]
    return run_logged(command, log, cwd=ROOT)


def run_logged(command, log, env=None, cwd=None, timeout=TIMEOUT):
    """Run ``command``, its output both on our stdout and appended to ``log``; its exit status."""
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(map(str, command))}\n")
        handle.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=cwd, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            handle.write(line)
            if time.monotonic() > deadline:
                proc.kill()
                handle.write(f"bench: killed after {timeout}s\n")
                break
        return proc.wait()


# ---------------------------------------------------------------------------- one benchmark


def reproduce(name, args):
    knobs = f"BENCH={name} ROUNDS={args.rounds}"
    script, config, arguments = BENCHMARKS[name]
    if script == "backup.py":
        knobs += f" SIZE_MIB={args.size_mib}"
    elif script in LAB_SIZED:
        knobs += f" LAB_SIZE_MIB={args.lab_size_mib}"
    by_hand = f".venv/bin/python bench/{script} {' '.join(arguments(args))}".strip()
    if config:
        lab_cmd = f".venv/bin/python -m lab --name {LAB_NAME} --state-dir .bench/lab"
        by_hand = (f"{lab_cmd} up --config .bench/lab-config-{config} && LAB_NAME={LAB_NAME} "
                   f"LAB_STATE_DIR=.bench/lab {by_hand}; {lab_cmd} down")
    return f"make bench {knobs}", by_hand


def run_one(name, args, stamp):
    script, config, arguments = BENCHMARKS[name]
    log = WORK_DIR / f"{name}.log"
    log.write_text("")
    output = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".json", dir=WORK_DIR)[1])
    make_cmd, by_hand = reproduce(name, args)
    entry = {"benchmark": name, "script": f"bench/{script}", "lab": f"examples/{config}" if config else None,
             "lab_name": LAB_NAME, "subnet": f"{SUBNET}.0/24",
             "command": make_cmd, "by_hand": by_hand, "date": stamp, "commit": commit(), "machine": machine(),
             "load_before": load_average()}
    started = time.monotonic()
    status = "ok"
    print(f"\n=== bench {name}: bench/{script} on {f'examples/{config}' if config else 'loopback'}", flush=True)
    try:
        if config:
            lab("down", log=log)  # what an aborted run may have left
            # `up` is idempotent: on a loaded machine its 90 s wait for the minions may not be enough.
            if not any(lab("up", "--config", str(lab_config(config)), log=log) == 0 for _ in range(3)):
                raise RuntimeError("the lab did not come up")
        env = dict(os.environ, LAB_NAME=LAB_NAME, LAB_STATE_DIR=str(STATE_DIR), BENCH_JSON=str(output))
        if run_logged([PY, str(ROOT / "bench" / script), *arguments(args)], log, env=env, cwd=ROOT) != 0:
            raise RuntimeError(f"bench/{script} failed")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        status = f"failed: {exc}"
    finally:
        if config:
            lab("down", log=log)
    entry.update(status=status, seconds=round(time.monotonic() - started, 1), load_after=load_average())
    results = json.loads(output.read_text()) if output.stat().st_size else []
    output.unlink()
    if status != "ok":
        entry["output_tail"] = log.read_text().splitlines()[-15:]
    print(f"=== bench {name}: {status} in {entry['seconds']:.0f}s", flush=True)
    return [dict(entry, **result) for result in results] or [dict(entry, name=name, title=name, rows=[], notes=[])]


# ---------------------------------------------------------------------------- the document


def number(value, unit):
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("writes/s", "requests/s", "errors", "keys"):
        return f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.1f}"
    return f"{value:.2f}"


def table(entry):
    lines = ["| measured | median | min – max | unit | n |", "|---|---:|---:|---|---:|"]
    for row in entry["rows"]:
        unit = row["unit"]
        what = f"**{row['what']}**" if unit == "x" else row["what"]
        lines.append(f"| {what} | {number(row['median'], unit)} | {number(row['min'], unit)} – "
                     f"{number(row['max'], unit)} | {'ratio' if unit == 'x' else unit} | {row['n']} |")
    return lines


def render(entries, quick_note):
    order = {name: index for index, name in enumerate(BENCHMARKS)}
    entries = sorted(entries, key=lambda e: (order.get(e["benchmark"], 99), e["name"]))
    machines = {json.dumps(e["machine"], sort_keys=True) for e in entries}
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`) from `docs/bench-results.json`; do not edit by hand.",
        "Each benchmark runs on a lab of its own (`--name rbench`, subnet 10.213.45.0/24, brought up",
        "and down around it) and measures its baseline in the same run, on the same hosts. Times are",
        "in seconds; *median* is over the rounds, *min – max* their spread. A ratio (bold) is ours over",
        "the baseline: the ratio of the medians, its spread the rounds' own ratios where rounds pair up.",
        "Nothing is asserted: these are measurements, with the machine's load beside them.",
        "`.bench/lab-config-*.yaml` in a command is the examples/ file of that name with its",
        "addresses moved to 10.213.45.0/24, as `bench/run.py` writes it.",
        "",
    ]
    if quick_note:
        out += [quick_note, ""]
    out += ["## Machine", ""]
    for text in sorted(machines):
        m = json.loads(text)
        out += [f"- {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, kernel {m['kernel']}, "
                f"Debian {m['debian']}, Redis {m['redis']}, Python {m['python']}"]
    out += ["", "The machine is shared (other sessions run lab tests on it at the same time): the load",
            "average before and after each benchmark is given with it, and ratios measured in one run",
            "are steadier than the absolute times.", "", "## Summary", "",
            "| benchmark | ratio | median | min – max |", "|---|---|---:|---:|"]
    for entry in entries:
        for row in entry["rows"]:
            if row["unit"] == "x":
                out.append(f"| [{entry['name']}](#{entry['name']}) | {row['what']} | "
                           f"{row['median']:.2f}x | {row['min']:.2f}x – {row['max']:.2f}x |")
        if entry["status"] != "ok":
            out.append(f"| {entry['name']} | {entry['status']} | | |")
    for entry in entries:
        params = ", ".join(f"{key} {value}" for key, value in entry.get("parameters", {}).items())
        subnet = entry.get("subnet", f"{SUBNET}.0/24")
        where = f"{entry['lab']} (moved to {subnet})" if entry["lab"] else "loopback, no lab"
        out += ["", f"## {entry['name']}", "", f"**{entry['title']}**" + (f" ({params})" if params else ""), "",
                f"- run {entry['date']} at commit {entry['commit']}, {entry['seconds']:.0f} s with the lab's up and "
                f"down; load average {' '.join(map(str, entry['load_before']))} before, "
                f"{' '.join(map(str, entry['load_after']))} after",
                f"- on {where}; "
                f"script `{entry['script']}`",
                f"- reproduce: `{entry['command']}`",
                f"- by hand: `{entry['by_hand']}`", ""]
        if entry["status"] != "ok":
            out += [f"**{entry['status']}**; the end of its output:", "", "```", *entry.get("output_tail", []),
                    "```"]
            continue
        out += table(entry)
        if entry.get("notes"):
            out += [""] + [f"- {note}" for note in entry["notes"]]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--only", default="", help="space-separated names (or their starts); default: all")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per benchmark (default 3)")
    parser.add_argument("--size-mib", type=int, default=1024, help="backup_create's dataset (default 1024)")
    parser.add_argument("--lab-size-mib", type=int, default=512,
                        help="data written into the lab for backup_set and restore (default 512)")
    parser.add_argument("--note", default="", help="a line put at the top of the document (e.g. quick settings)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--render", action="store_true", help="only write docs/BENCHMARKS.md from the results")
    args = parser.parse_args()
    if args.list:
        for name, (script, config, _) in BENCHMARKS.items():
            print(f"{name:26s} bench/{script:22s} {config or 'loopback'}")
        return 0
    wanted = args.only.split()
    names = [n for n in BENCHMARKS if not wanted or any(n.startswith(w) for w in wanted)]
    unknown = [w for w in wanted if not any(n.startswith(w) for n in BENCHMARKS)]
    if unknown:
        sys.exit(f"bench: no benchmark named {', '.join(unknown)}; --list lists them")
    if os.geteuid() != 0 and any(BENCHMARKS[n][1] for n in names) and not args.render:
        sys.exit("bench: the lab needs root")
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"entries": [], "note": ""}
    entries = stored["entries"]
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names if not args.render else []:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        fresh = run_one(name, args, stamp)
        failed += [name] if fresh[0]["status"] != "ok" else []
        entries = [e for e in entries if e["benchmark"] != name] + fresh
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"entries": entries, "note": args.note or stored.get("note", "")}, indent=1))
        DOC.write_text(render(entries, args.note or stored.get("note", "")))
    if args.render:
        DOC.write_text(render(entries, args.note or stored.get("note", "")))
    print(f"bench: {DOC.relative_to(ROOT)} written ({len(entries)} tables)"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
