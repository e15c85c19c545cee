"""Events on a salt-master's bus, as saltfactories' ``event_listener`` fixture receives them
(every master a saltfactories factory starts runs its ``pytest`` engine, which forwards each
event of the master's bus to the listener, named by the master's id)."""

from support.waits import poll


def bus_events(event_listener, master, pattern, after, count, timeout):
    """The first ``count`` events on ``master``'s bus after ``after`` (a ``time.time()`` taken
    just before the action that fires them) whose tag matches ``pattern`` (fnmatch), in the
    order they were fired, as saltfactories' event objects. Waits until ``count`` came or
    ``timeout`` seconds passed, as ``salt-run state.event PATTERN count=COUNT`` does, and
    returns those that came."""
    patterns = [(master.id, pattern)]

    def fired():
        return sorted(event_listener.get_events(patterns, after_time=after), key=lambda event: event.stamp)

    return poll(fired, lambda events: len(events) >= count, timeout)[:count]


def master_events(event_listener, master, pattern, after, count, timeout):
    """:func:`bus_events` fired by minions (``event.send``) as ``(tag, data)``: ``data`` is
    what the minion sent."""
    return [(event.tag, event.data["data"])
            for event in bus_events(event_listener, master, pattern, after, count, timeout)]
