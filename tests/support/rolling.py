"""Watching a rolling restart from outside: each server's ``(run_id, role)`` as it changes,
polled from its own INFO, and what that sequence must show."""

import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support.events import bus_events


class RoleWatcher(threading.Thread):
    """Polls every server of ``clients`` ({name: redis client}) until :meth:`finish` and keeps,
    per server, the sequence of distinct ``(run_id, role)`` it reported (a server that does
    not answer, restarting, adds nothing). It asks through copies of ``clients`` that never
    retry: a retry's backoff after a dropped connection (a server disconnects its clients
    when it becomes a replica) would blind it for a second."""

    def __init__(self, clients, interval=0.05):
        super().__init__(daemon=True)
        self.clients, self.interval = {}, interval
        for name, client in clients.items():
            kwargs = dict(client.connection_pool.connection_kwargs, retry=Retry(NoBackoff(), 0), retry_on_error=[])
            self.clients[name] = redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))
        self.seen = {name: [] for name in self.clients}
        self._stop_event = threading.Event()
        self.poll()

    def poll(self):
        for name, client in self.clients.items():
            try:
                info = client.info()
            except (redis.RedisError, OSError):
                continue
            entry = (info["run_id"], "replica" if info["role"] == "slave" else "master")
            if not self.seen[name] or self.seen[name][-1] != entry:
                self.seen[name].append(entry)

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.poll()

    def finish(self):
        self._stop_event.set()
        self.join(10)
        self.poll()

    def run_ids(self, name):
        """The distinct run_ids ``name`` had, in order."""
        found = []
        for run_id, _ in self.seen[name]:
            if run_id not in found:
                found.append(run_id)
        return found

    def problems(self, masters, roles=True):
        """What contradicts a rolling restart: a server whose run_id did not change exactly
        once, a master (of ``masters``, the masters at the start) that was not a replica
        before its restart, or one that is not a replica after it.
        ``roles=False``: the run_ids only (where a failover and the restart after it follow
        each other faster than the polls, the caller checks the roles another way)."""
        found = []
        for name, seen in self.seen.items():
            run_ids = self.run_ids(name)
            if len(run_ids) != 2:
                found.append(f"{name}: run_ids {run_ids} (expected one restart)")
                continue
            before = [role for run_id, role in seen if run_id == run_ids[0]]
            after = [role for run_id, role in seen if run_id == run_ids[1]]
            if not roles:
                continue
            if name in masters and before[-1] != "replica":
                found.append(f"{name}: restarted while still a master ({seen})")
            # (A restarted cluster replica reports role master for a moment, until its cluster
            # configuration makes it replicate: what counts is the role it settles in.)
            if name in masters and after[-1] != "replica":
                found.append(f"{name}: ended its restart as a master ({seen})")
        return found


def runner_events(event_listener, master, pattern, after, count, timeout):
    """:func:`support.events.bus_events` a runner fired (``event.send`` of the runner: the data
    is the event's own, not wrapped as a minion's), as ``(tag, data)``."""
    return [(event.tag, event.data) for event in bus_events(event_listener, master, pattern, after, count, timeout)]
