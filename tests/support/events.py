"""Events on a salt-master's bus, as saltfactories' ``event_listener`` fixture receives them
(every master a saltfactories factory starts runs its ``pytest`` engine, which forwards each
event of the master's bus to the listener, named by the master's id)."""

import time


def master_events(event_listener, master, pattern, after, count, timeout):
    """The first ``count`` events fired on ``master``'s bus after ``after`` (a ``time.time()``
    taken just before the action that fires them) whose tag matches ``pattern`` (fnmatch), in
    the order they were fired, as ``(tag, data)``: ``data`` is what the minion sent
    (``event.send``). Waits until ``count`` came or ``timeout`` seconds passed, as
    ``salt-run state.event PATTERN count=COUNT`` does, and returns those that came."""
    patterns = [(master.id, pattern)]
    deadline = time.monotonic() + timeout
    event_listener.wait_for_events(patterns, timeout=timeout, after_time=after)
    while True:
        events = sorted(event_listener.get_events(patterns, after_time=after), key=lambda event: event.stamp)
        if len(events) >= count or time.monotonic() >= deadline:
            return [(event.tag, event.data["data"]) for event in events[:count]]
        time.sleep(0.5)
