"""What the drills (tests/drills) share: their lab's names and shape, keys that land on a
chosen node's slots, watching a lab host from outside (its files, its processes) closely
enough to inject a fault at the moment that matters, and jobs published without waiting
(so that the drill can act while the job runs)."""

import contextlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

from redis.crc import key_slot

from support.lab import PASSWORD, redis_client
from support.waits import wait_until

SUBNET = "10.213.17"
HOSTS = {"dr1": f"{SUBNET}.11", "dr2": f"{SUBNET}.12", "dr3": f"{SUBNET}.13"}
# The slot plan of three masters (README: 0-5460 / 5461-10922 / 10923-16383).
SLOTS = {"dr1": (0, 5460), "dr2": (5461, 10922), "dr3": (10923, 16383)}
JOURNAL = "/etc/redis-salt/restore-journal.json"
BACKUP_DIR = "/var/backups/redis"
# Polling for the moment to strike: a restore's stop-to-start window is short.
STRIKE_INTERVAL = 0.01


def deployment():
    """The drills' my_multihead_cluster.yaml: three Redis hosts, a cluster of three masters
    without replicas (so a single node's restore is allowed: no replica would resync over it).
    No scheduled backups: a job firing at its hour would race the drills' own."""
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}} for h, ip in HOSTS.items()]
    return {
        "cluster": {"name": "drills"},
        "cache": {"redis": {"password": "${REDIS_PASSWORD}", "host_baseline": "report", "backup": {"schedule": []}}},
        "nodes": {"controllers": controllers},
    }


def server(host, timeout=5, reconnect=True):
    """A client of ``host``'s redis-server (not a cluster client: the drills address one node);
    ``reconnect``: see support.lab.redis_client."""
    return redis_client(HOSTS[host], password=PASSWORD, timeout=timeout, reconnect=reconnect)


def hash_tag(host, label):
    """``{label-N}``, the first such hash tag whose slot ``host`` serves: keys written with it
    to that node's server are its own (no MOVED)."""
    first, last = SLOTS[host]
    for number in range(100000):
        tag = f"{label}-{number}"
        if first <= key_slot(tag.encode()) <= last:
            return "{" + tag + "}"
    raise AssertionError(f"no hash tag for {host}")


def keys_for(host, label, count):
    """``{key: value}`` of ``count`` keys served by ``host``."""
    tag = hash_tag(host, label)
    return {f"{label}:{tag}:{number}": str(number) for number in range(count)}


def write_keys(host, keys):
    client = server(host)
    pipe = client.pipeline(transaction=False)
    for key, value in keys.items():
        pipe.set(key, value)
    pipe.execute()
    client.close()


def read_keys(host, keys):
    """``{key: value or None}`` of ``keys`` as ``host``'s server holds them now."""
    client = server(host)
    try:
        return dict(zip(keys, client.mget(list(keys)))) if keys else {}
    finally:
        client.close()


def missing(host, keys):
    """The keys of ``keys`` ({key: value}) that ``host``'s server does not hold as written."""
    held = read_keys(host, keys)
    return sorted(key for key, value in keys.items() if held[key] != value)


def write_ballast(host, label, megabytes):
    """``megabytes`` MiB of incompressible values on ``host`` (unless it holds them already): its
    backups then take a moment to copy and compress, and its server a moment to save and load."""
    tag = hash_tag(host, label)
    client = server(host, timeout=30)
    if client.exists(f"{label}:{tag}:{megabytes - 1}"):
        return
    pipe = client.pipeline(transaction=False)
    for number in range(megabytes):
        pipe.set(f"{label}:{tag}:{number}", os.urandom(1 << 20))
    pipe.execute()
    client.close()
    wait_aof_written(host, timeout=30)


def wait_aof_written(host, timeout=10):
    """Until ``host``'s server has written what it acknowledged to its append-only file (a power
    cut kills the host's processes, not the machine's page cache)."""

    def written():
        persistence = server(host).info("persistence")
        return not persistence["aof_buffer_length"] and not persistence["aof_pending_bio_fsync"]

    wait_until(written, timeout, f"the AOF of {host} has every acknowledged write")


def cluster_states():
    """``{host: its cluster_state line, or the error asking for it}``."""
    states = {}
    for host in HOSTS:
        try:
            states[host] = server(host, timeout=2).execute_command("CLUSTER", "INFO").split()[0]
        except Exception as exc:  # noqa: BLE001 - shown, not handled
            states[host] = repr(exc)
    return states


def wait_cluster_ok(timeout=60):
    """Until every node says ``cluster_state:ok`` (a node back from a power cut rejoins within
    seconds)."""
    wait_until(lambda: all(s == "cluster_state:ok" for s in cluster_states().values()), timeout,
               lambda: f"cluster_state:ok on every node: {cluster_states()}")


# Watching a lab host from outside


def command_lines(lab, host):
    """``{pid (as the machine numbers it): command line}`` of every process of ``host``."""
    found = {}
    for pid in lab.processes(host):
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            pass
    return found


def serving_redis(lab, host):
    """True while ``host``'s own redis-server (the one on port 6379, not a throwaway check
    server on a Unix socket) runs."""
    return any("redis-server" in line and ":6379" in line for line in command_lines(lab, host).values())


def job_pids(lab, host, jid):
    """Machine PIDs of the minion's process(es) running job ``jid`` (Salt titles a job's
    process ``ProcessPayload(jid=...)``)."""
    return [pid for pid, line in command_lines(lab, host).items() if f"jid={jid}" in line]


def sigkill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def partial_backups(lab, host, kind="rdb"):
    """The unfinished (``.partial-*``) backup directories of ``host``, with the bytes written so far."""
    directory = lab.path(host, f"{BACKUP_DIR}/{kind}")
    found = {}
    for entry in directory.glob(".partial-*") if directory.is_dir() else ():
        try:
            found[entry.name] = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
        except OSError:
            found[entry.name] = 0
    return found


def journal_exists(lab, host):
    return lab.path(host, JOURNAL).exists()


def journal_phase(lab, host):
    """The phase ``host``'s restore journal records, or None when there is none (it is
    replaced atomically: never read half-written)."""
    try:
        return json.loads(lab.path(host, JOURNAL).read_text()).get("phase")
    except (FileNotFoundError, ValueError):
        return None


# Stacks tmpfs mounts on /mnt of a private mount namespace (the machine's mounts stay as they
# are) until one gets the device number wanted, then holds them until killed.
_HOLD_DEVICE_NUMBER = r"""
for attempt in $(seq 1000); do
    mount -t tmpfs -o size=4k drill-hold /mnt
    got=$(awk '$5 == "/mnt" { found = $3 } END { print found }' /proc/self/mountinfo)
    if [ "$got" = "$1" ]; then echo held; exec sleep 600; fi
    sleep 0.01
done
echo "not held (last $got)"; exec sleep 600
"""


@contextlib.contextmanager
def device_number_held(device):
    """Hold the (anonymous) device number ``device`` once a host's power cut has freed it, so
    that the host's next boot mounts its filesystem under another number, as a device-mapper
    volume or an overlay may come back after a reboot. Yields once it is held."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", _HOLD_DEVICE_NUMBER,
                               "hold", wanted], stdout=subprocess.PIPE, text=True)
    try:
        said = holder.stdout.readline().strip()
        if said != "held":
            raise AssertionError(f"could not take device number {wanted} once the power cut freed it: {said}")
        yield
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


# Jobs published without waiting


def local_client(master):
    """Salt's LocalClient of ``master`` (a saltfactories master), in this process: it publishes a
    job in milliseconds, where the ``salt`` CLI needs a second to start."""
    import salt.client  # pylint: disable=import-outside-toplevel

    return salt.client.LocalClient(mopts=dict(master.config))


def publish(client, minion, function, *args, **kwargs):
    """Publish ``function`` to ``minion`` and return its jid, without waiting for the return."""
    jid = client.cmd_async(minion, function, list(args), kwarg=kwargs or None)
    if not jid or not re.fullmatch(r"\d{20}", str(jid)):
        raise AssertionError(f"could not publish {function} to {minion}: {jid!r}")
    return str(jid)
