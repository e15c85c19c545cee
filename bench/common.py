"""
What every bench script shares: the lab it runs on (LAB_STATE_DIR / LAB_NAME, as
`python -m lab` reads them), medians with their spread, and the machine-readable result the
driver (`bench/run.py`, `make bench`) turns into docs/BENCHMARKS.md.

A script builds a :class:`Result`: rows of measurements (median, min, max over the rounds,
with their unit) and of ratios (unit "x": the ratio of the medians, with the spread of the
per-round ratios where rounds pair up), plus notes. It keeps printing for people; when
BENCH_JSON names a file, `Result.save` also writes the result there (a script measuring
several things writes one result per thing: the file holds a JSON list).
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab.__main__ import Controller  # noqa: E402
from lab.hosts import REPO  # noqa: E402

VALUE_BYTES = 1024
BATCH = 1000


def lab_controller(state_dir=None, name=None):
    """The lab the script runs on: arguments first, then LAB_STATE_DIR / LAB_NAME, then `make lab`'s."""
    state_dir = state_dir or os.environ.get("LAB_STATE_DIR") or REPO / ".lab"
    name = name or os.environ.get("LAB_NAME") or "rlab"
    return Controller(Path(state_dir), name=name)


def lab_or_exit(config):
    """The lab the script runs on, or exit saying how to bring up ``config`` (an examples/ file)."""
    controller = lab_controller()
    if not controller.master_running():
        sys.exit(f"bench: the lab is not up; run `python -m lab up --config examples/{config}` first")
    return controller


def redis_settings(controller):
    """cache.redis of the lab's deployment YAML."""
    import yaml

    return yaml.safe_load(controller.deployment_file.read_text())["cache"]["redis"]


def fill(client, size, prefix="key"):
    """Pipelined SETs of 1 KiB values ``{prefix}:{n}``, half random and half text (compressible
    like real data), until ``size`` bytes of values; (keys, bytes written, seconds)."""
    pool = os.urandom(64 << 20)
    text = (b"user:1234 status=active plan=standard region=eu-west " * 20)[: VALUE_BYTES // 2]
    written, key, started = 0, 0, time.monotonic()
    while written < size:
        pipe = client.pipeline(transaction=False)
        for _ in range(BATCH):
            offset = (key * 7919) % (len(pool) - VALUE_BYTES)
            pipe.set(f"{prefix}:{key}", pool[offset:offset + VALUE_BYTES // 2] + text)
            key += 1
        pipe.execute()
        written += BATCH * VALUE_BYTES
    return key, written, time.monotonic() - started


def own_hash_tag(client):
    """A ``{tag}`` whose slot the cluster master ``client`` serves: keys with it land there."""
    import redis

    for number in range(1000):
        tag = f"{{b{number}}}"
        try:
            client.set(f"{tag}:probe", 1)
        except redis.exceptions.MovedError:
            continue
        client.delete(f"{tag}:probe")
        return tag
    raise SystemExit("bench: this node serves no slot")


def spread(values):
    """(median, min, max) of a list of numbers."""
    return statistics.median(values), min(values), max(values)


class Result:
    """One benchmark's table: ``rows`` of {what, median, min, max, unit, n}, and ``notes``."""

    def __init__(self, name, title, **parameters):
        self.name, self.title, self.parameters = name, title, parameters
        self.rows, self.notes = [], []

    def measure(self, what, values, unit="s"):
        """A measurement over rounds (a list) or a single value."""
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        median, low, high = spread(values)
        self.rows.append({"what": what, "median": median, "min": low, "max": high, "unit": unit, "n": len(values)})
        return median

    def ratio(self, what, numerators, denominators, per_round=True):
        """median(numerators) / median(denominators); its spread from the rounds' own ratios
        when they pair up (``per_round``), else from min/max against the denominators' median."""
        numerators = list(numerators) if isinstance(numerators, (list, tuple)) else [numerators]
        denominators = list(denominators) if isinstance(denominators, (list, tuple)) else [denominators]
        value = statistics.median(numerators) / statistics.median(denominators)
        if per_round and len(numerators) == len(denominators):
            rounds = [a / b for a, b in zip(numerators, denominators)]
        else:
            rounds = [a / statistics.median(denominators) for a in numerators]
        self.rows.append({"what": what, "median": value, "min": min(rounds), "max": max(rounds), "unit": "x",
                          "n": len(rounds)})
        return value

    def note(self, text):
        self.notes.append(text)

    def as_dict(self):
        return {"name": self.name, "title": self.title, "parameters": self.parameters, "rows": self.rows,
                "notes": self.notes}

    def save(self):
        """Append this result to the file BENCH_JSON names (if any)."""
        path = os.environ.get("BENCH_JSON")
        if not path:
            return
        path = Path(path)
        results = json.loads(path.read_text()) if path.exists() and path.stat().st_size else []
        results.append(self.as_dict())
        path.write_text(json.dumps(results, indent=1))
