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
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            if condition():
                return time.monotonic()
            last_error = None
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {_describe(what)}"
                                 + (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval)


def _describe(what):
    if not callable(what):
        return what
    try:
        return what()
    except (redis.RedisError, OSError) as exc:
        return f"(cannot tell: {exc!r})"
