"""Bounded waits: a condition polled until it holds or its deadline passes (never a fixed sleep)."""

import time

import redis

POLL_INTERVAL = 0.3


def wait_until(condition, timeout, what, interval=POLL_INTERVAL):
    """Poll ``condition()`` until it returns a true value; returns ``time.monotonic()`` then.

    A Redis or socket error counts as "not yet" (a node restarting, a host booting). After
    ``timeout`` seconds the wait fails with ``not within {timeout}s: {what}``; ``what`` may be
    a callable, called then, to describe what was seen instead.
    """
    errors = []

    def attempt():
        try:
            value = condition()
        except (redis.RedisError, OSError) as exc:
            errors[:] = [exc]
            return None
        errors.clear()
        return value

    if poll(attempt, bool, timeout, interval):
        return time.monotonic()
    raise AssertionError(f"not within {timeout}s: {_describe(what)}"
                         + (f" (last error: {errors[0]!r})" if errors else ""))


def poll(read, enough, timeout, interval=POLL_INTERVAL):
    """``read()`` until ``enough(value)`` holds or ``timeout`` seconds passed; the last value
    read (for waits whose caller judges what came, e.g. fewer events than hoped)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if enough(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def _describe(what):
    if not callable(what):
        return what
    try:
        return what()
    except (redis.RedisError, OSError) as exc:
        return f"(cannot tell: {exc!r})"
