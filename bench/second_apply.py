"""
What an idempotent `salt '*' state.apply redis` costs, against the cheapest state run
through the same master and minions (`salt '*' state.single test.succeed_without_changes`),
measured in one process, the two alternating round by round. The bound to keep: at most
1.5x (the ratio of the medians; each round's own ratio is shown for the spread).

`--profile` adds where a no-op apply's time goes: the CPU each run cost (each lab host's
cgroup, the salt-master's processes and the salt CLI: on a machine that others load too,
the steadier measure), per minion the sum of Salt's per-state `duration` and the slowest
states, and the render alone (`state.show_low_sls redis`, timed the same way).

Needs the lab up (`make lab`, or `python -m lab --state-dir DIR --name NAME up`); the lab is
--state-dir/--name, else LAB_STATE_DIR/LAB_NAME (as `python -m lab` reads them), else `make lab`'s.
Usage: .venv/bin/python bench/second_apply.py [--state-dir DIR] [--name NAME] [--profile] [ROUNDS]
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Result, lab_controller  # noqa: E402
from lab.hosts import read_hosts  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def timed(controller, *args):
    started = time.monotonic()
    result = controller.salt("salt", "*", *args, "--out=json", "--static", capture=True)
    elapsed = time.monotonic() - started
    return elapsed, json.loads(result.stdout)


def _session_cpu(session):
    """CPU seconds of every process of a session, with the children they reaped."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            total += sum(int(value) for value in fields[11:15])
    return total / TICK


def cpu_counters(controller, hosts):
    """{part: CPU seconds so far}: each lab host (its cgroup), the salt-master, the CLIs we ran."""
    counters = {}
    for host in hosts:
        for cgroup in controller.lab._cgroups(host):
            if (cgroup / "cpu.stat").exists():
                usage = (cgroup / "cpu.stat").read_text().split()
                counters[host] = int(usage[usage.index("usage_usec") + 1]) / 1e6
    master = int((controller.master_dir / "var/run/salt-master.pid").read_text())
    counters["master"] = _session_cpu(master)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    counters["cli"] = children.ru_utime + children.ru_stime
    return counters


def cpu_of(controller, hosts, *args):
    """(wall seconds, returns, {part: CPU seconds}) of one run."""
    before = cpu_counters(controller, hosts)
    elapsed, returns = timed(controller, *args)
    after = cpu_counters(controller, hosts)
    return elapsed, returns, {part: after[part] - before.get(part, 0) for part in after}


def spread(values):
    return f"median {statistics.median(values):6.2f}s  (min {min(values):.2f}, max {max(values):.2f})"


def state_durations(returns):
    """{minion: {state id: milliseconds}} from state.apply's JSON."""
    return {
        minion: {s.get("__id__", key): float(s.get("duration") or 0) for key, s in states.items()}
        for minion, states in returns.items()
        if isinstance(states, dict)
    }


def print_cpu(label, samples):
    parts = list(samples[0])
    totals = [sum(sample.values()) for sample in samples]
    each = "  ".join(f"{part} {statistics.median(s[part] for s in samples):.2f}" for part in parts)
    print(f"  CPU s per run, {label}: total {spread(totals).replace('s ', ' ', 1)}")
    print(f"      {each}")
    return statistics.median(totals)


def print_profile(profiles, renders, cpu_floor, cpu_apply):
    print("profile (medians over the rounds):")
    floor = print_cpu("state.single (floor)", cpu_floor)
    apply = print_cpu("state.apply redis   ", cpu_apply)
    print(f"  CPU ratio no-op apply / one-state run: {apply / floor:.2f}x")
    print(f"  render alone, salt '*' state.show_low_sls redis   {spread(renders)}")
    minions = sorted({m for p in profiles for m in p})
    for minion in minions:
        per_round = [p[minion] for p in profiles if minion in p]
        totals = [sum(d.values()) / 1000 for d in per_round]
        print(f"  {minion}: {len(per_round[0])} states, sum of state durations {spread(totals)}")
        ids = per_round[0].keys()
        medians = {i: statistics.median(d.get(i, 0) for d in per_round) for i in ids}
        for state_id, ms in sorted(medians.items(), key=lambda item: -item[1])[:8]:
            print(f"      {ms:8.1f} ms  {state_id}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=5)
    parser.add_argument("--state-dir", help="the lab's state directory (default: LAB_STATE_DIR, else .lab)")
    parser.add_argument("--name", help="the lab's name (default: LAB_NAME, else rlab)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    controller = lab_controller(args.state_dir, args.name)
    if not controller.master_running():
        sys.exit("bench: the lab is not up; run `make lab` first")
    timed(controller, "state.apply", "redis")  # settle: the run that may still change something
    hosts = [host.name for host in read_hosts(controller.deployment_file)]
    pings, applies, ratios, renders, profiles, changed = [], [], [], [], [], 0
    cpu_floor, cpu_apply = [], []
    for _ in range(args.rounds):
        ping, _, cpu = cpu_of(controller, hosts, "state.single", "test.succeed_without_changes", "name=baseline")
        cpu_floor.append(cpu)
        elapsed, returns, cpu = cpu_of(controller, hosts, "state.apply", "redis")
        cpu_apply.append(cpu)
        pings.append(ping)
        applies.append(elapsed)
        ratios.append(elapsed / ping)
        changed += sum(1 for states in returns.values() for s in states.values() if s["changes"])
        if args.profile:
            profiles.append(state_durations(returns))
            renders.append(timed(controller, "state.show_low_sls", "redis")[0])
    ping, apply = statistics.median(pings), statistics.median(applies)
    print(f"minions: {len(returns)}  rounds: {args.rounds}")
    print(f"salt '*' state.single test.succeed_without_changes  {spread(pings)}")
    print(f"salt '*' state.apply redis (no-op)                 {spread(applies)}  changes: {changed}")
    print(
        f"ratio no-op apply / one-state run: {apply / ping:.2f}x"
        f"  (per round: median {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
    )
    result = Result("second_apply", "No-op re-apply vs Salt's floor", minions=len(returns), rounds=args.rounds)
    result.measure("salt '*' state.single test.succeed_without_changes (floor)", pings)
    result.measure("salt '*' state.apply redis (no-op)", applies)
    result.ratio("no-op apply / one-state run (wall)", applies, pings)
    totals_floor = [sum(sample.values()) for sample in cpu_floor]
    totals_apply = [sum(sample.values()) for sample in cpu_apply]
    result.measure("CPU of the floor run (hosts + master + CLI)", totals_floor, unit="CPU s")
    result.measure("CPU of the no-op apply (hosts + master + CLI)", totals_apply, unit="CPU s")
    result.ratio("no-op apply / one-state run (CPU)", totals_apply, totals_floor)
    result.note(f"changes reported by the no-op applies: {changed}; aim (README): at most 1.5x")
    result.save()
    if args.profile:
        print_profile(profiles, renders, cpu_floor, cpu_apply)


if __name__ == "__main__":
    main()
