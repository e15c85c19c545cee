"""
What an idempotent `salt '*' state.apply redis` costs, against the cheapest state run
through the same master and minions (`salt '*' state.single test.succeed_without_changes`),
measured in one process. The bound to keep: at most 1.5x.

Needs the lab up (`make lab`). Usage: .venv/bin/python bench/second_apply.py [ROUNDS]
"""

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


def main(rounds):
    controller = Controller(REPO / ".lab")
    if not controller.master_running():
        sys.exit("bench: the lab is not up; run `make lab` first")
    timed(controller, "state.apply", "redis")  # settle: the run that may still change something
    pings, applies, changed = [], [], 0
    for _ in range(rounds):
        pings.append(timed(controller, "state.single", "test.succeed_without_changes", "name=baseline")[0])
        elapsed, returns = timed(controller, "state.apply", "redis")
        applies.append(elapsed)
        changed += sum(1 for states in returns.values() for s in states.values() if s["changes"])
    ping, apply = statistics.median(pings), statistics.median(applies)
    print(f"minions: {len(returns)}  rounds: {rounds}")
    print(f"salt '*' state.single test.succeed_without_changes  median {ping:6.2f}s")
    print(f"salt '*' state.apply redis (no-op)                 median {apply:6.2f}s  changes: {changed}")
    print(f"ratio no-op apply / one-state run: {apply / ping:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
