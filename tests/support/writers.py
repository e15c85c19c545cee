"""The client that writes throughout a test or a benchmark: one thread writing
``{prefix}:{n}`` = n, one key after the other, until :meth:`Writer.finish`. What makes a
write acknowledged (a plain SET, SET then WAIT 1) is the subclass's :meth:`write`; the
first error the client could not retry ends the thread and is kept in ``errors``."""

import threading
import time


class Writer(threading.Thread):
    """``acknowledged``: the numbers whose write was acknowledged, in order; ``stamps``: when
    (``time.monotonic()``)."""

    def __init__(self, prefix, pause=0.0):
        super().__init__(daemon=True)
        self.prefix, self.acknowledged, self.stamps, self.errors = prefix, [], [], []
        # Seconds between writes: a client at a steady rate, where the keys a test makes the
        # cluster move would otherwise grow with the machine's speed.
        self.pause = pause
        self._stop_event = threading.Event()
        self._writing = None  # (number, since): the write under way, retries included

    def write(self, key, value):
        """Write one key; True when the write counts as acknowledged."""
        raise NotImplementedError

    def run(self):
        number = 0
        while not self._stop_event.is_set():
            self._writing = (number, time.monotonic())
            try:
                if not self.write(f"{self.prefix}:{number}", number):
                    continue
            except Exception as exc:  # noqa: BLE001 - what a client could not retry is the finding
                self.errors.append(repr(exc))
                return
            self.acknowledged.append(number)
            self.stamps.append(time.monotonic())
            number += 1
            if self.pause:
                self._stop_event.wait(self.pause)

    def in_flight(self):
        """The write under way, for a failure message: a client's retries (its own, inside
        the client library) show only here, not in ``errors``."""
        if self._writing is None or not self.is_alive():
            return "no write under way"
        number, since = self._writing
        return f"{self.prefix}:{number} tried for {time.monotonic() - since:.1f}s"

    def finish(self, timeout=10):
        """Stop writing, and wait for the write under way (up to ``timeout`` seconds)."""
        self._stop_event.set()
        self.join(timeout)

    def longest_stall(self):
        """The longest time between two acknowledged writes, in seconds."""
        return max((b - a for a, b in zip(self.stamps, self.stamps[1:])), default=0.0)
