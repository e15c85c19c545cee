"""
What an idempotent `salt '*' state.apply redis` costs, against the cheapest state run
through the same master and minions (`salt '*' state.single test.succeed_without_changes`),
measured in one process, the two alternating round by round. The bound to keep: at most
1.5x (the ratio of the medians; each round's own ratio is shown for the spread).

`--profile` adds where a no-op apply's time goes: per minion, the sum of Salt's per-state
`duration` (the states' own run time) against the minion's job time, the slowest states,
and the render alone (`state.show_low_sls redis`, timed the same way).

Needs the lab up (`make lab`, or `python -m lab --state-dir DIR --name NAME up`).
Usage: .venv/bin/python bench/second_apply.py [--state-dir DIR] [--name NAME] [--profile] [ROUNDS]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.__main__ import Controller  # noqa: E402
from lab.hosts import REPO  # noqa: E402


def timed(controller, *args):
    started = time.monotonic()
    result = controller.salt("salt", "*", *args, "--out=json", "--static", capture=True)
    elapsed = time.monotonic() - started
    return elapsed, json.loads(result.stdout)


def spread(values):
    return f"median {statistics.median(values):6.2f}s  (min {min(values):.2f}, max {max(values):.2f})"


def state_durations(returns):
    """{minion: {state id: milliseconds}} from state.apply's JSON."""
    return {
        minion: {s.get("__id__", key): float(s.get("duration") or 0) for key, s in states.items()}
        for minion, states in returns.items()
        if isinstance(states, dict)
    }


def print_profile(profiles, renders):
    print("profile (medians over the rounds):")
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
    parser.add_argument("--state-dir", default=str(REPO / ".lab"))
    parser.add_argument("--name", default="rlab")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    controller = Controller(Path(args.state_dir), name=args.name)
    if not controller.master_running():
        sys.exit("bench: the lab is not up; run `make lab` first")
    timed(controller, "state.apply", "redis")  # settle: the run that may still change something
    pings, applies, ratios, renders, profiles, changed = [], [], [], [], [], 0
    for _ in range(args.rounds):
        ping = timed(controller, "state.single", "test.succeed_without_changes", "name=baseline")[0]
        elapsed, returns = timed(controller, "state.apply", "redis")
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
    if args.profile:
        print_profile(profiles, renders)


if __name__ == "__main__":
    main()
