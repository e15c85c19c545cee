"""A client that writes through a password rotation the way a fleet of clients does: every
write on a connection of its own, alternating the old and the new password, each result
recorded with the phase the test says the deployment is in."""

import collections
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

Write = collections.namedtuple("Write", "phase secret key outcome")


def _login(address, password):
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), password=password, socket_timeout=5, socket_connect_timeout=5,
                       retry=Retry(NoBackoff(), 0), single_connection_client=True, decode_responses=True)


class AlternatingWriter(threading.Thread):
    """Writes ``rotation:<n>`` to ``address_of(key)`` until stopped, with ``secrets[n % 2]``
    (a ``{label: password}`` of two), each on a new connection. ``phase`` is the test's label
    for what the deployment is doing now; ``writes`` what happened to each write."""

    def __init__(self, address_of, secrets, interval=0.02):
        super().__init__(daemon=True)
        self.address_of, self.secrets, self.interval = address_of, list(secrets.items()), interval
        self.phase, self.writes, self.stopped = "before", [], threading.Event()

    def run(self):
        number = 0
        while not self.stopped.is_set():
            label, password = self.secrets[number % len(self.secrets)]
            key, phase = f"rotation:{number}", self.phase
            try:
                client = _login(self.address_of(key), password)
                try:
                    outcome = "ok" if client.set(key, phase) else "not acknowledged"
                finally:
                    client.close()
            except redis.AuthenticationError:
                outcome = "refused"
            except redis.RedisError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            self.writes.append(Write(phase, label, key, outcome))
            number += 1
            time.sleep(self.interval)

    def stop(self):
        self.stopped.set()
        self.join(30)

    def outcomes(self, phase, secret):
        """``{outcome: count}`` of the writes made in ``phase`` with ``secret``."""
        return dict(collections.Counter(w.outcome for w in self.writes if w.phase == phase and w.secret == secret))

    def acknowledged(self):
        return [w for w in self.writes if w.outcome == "ok"]

    def wait_for(self, phase, count=20, timeout=60):
        """Until ``count`` writes of each secret were made in ``phase``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            made = collections.Counter(w.secret for w in self.writes if w.phase == phase)
            if all(made[label] >= count for label, _ in self.secrets):
                return
            time.sleep(0.1)
        raise AssertionError(f"the writer made fewer than {count} writes of each secret in {phase}")

    def assert_no_client_refused(self):
        """What a two-phase rotation promises the writer's clients (phases "phase 1" and
        "phase 2", each "apply" then "done"): the old password never refused while phase 1
        applies, neither refused in phase 1, the new one never refused from phase 2 on, the
        old one always refused once phase 2 is done; and nothing else went wrong."""
        expected = {("phase 1 apply", "old"): {"ok"}, ("phase 1 done", "old"): {"ok"}, ("phase 1 done", "new"): {"ok"},
                    ("phase 2 apply", "new"): {"ok"}, ("phase 2 done", "new"): {"ok"},
                    ("phase 2 done", "old"): {"refused"}}
        seen = {key: self.outcomes(*key) for key in expected}
        assert {key: set(outcomes) for key, outcomes in seen.items()} == expected, seen
        assert not [w for w in self.writes if w.outcome not in ("ok", "refused")], "writes failed otherwise"
