"""
The session lab as the integration tests see it (tests/integration/conftest.py builds it):
host names and addresses, the password, the deployment file's content, Redis clients,
commands and files inside lab hosts, minions answering, and where the password must not be;
and labs (with a salt-master) of a test module's own.
"""

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
import yaml

from support.waits import wait_until

ROOT = Path(__file__).resolve().parents[2]

# Quotes, a backslash, a space and a '#': the password must survive Redis's config syntax.
PASSWORD = 'it "pass" \\ word #42'
SUBNET = "10.213.9"
REDIS_HOSTS = {"it1": f"{SUBNET}.11", "it2": f"{SUBNET}.12", "it3": f"{SUBNET}.13"}
PLAIN_HOST = ("it4", f"{SUBNET}.14")
# Hosts the session's lab grows by (test_replicas.py boots them): not in deployment().
SPARE_HOSTS = {"it5": f"{SUBNET}.15", "it6": f"{SUBNET}.16", "it7": f"{SUBNET}.17"}
ADDRESSES = {**REDIS_HOSTS, PLAIN_HOST[0]: PLAIN_HOST[1], **SPARE_HOSTS}
REDIS_PORT = 6379
SENTINEL_PORT = 26379

OTHER_FORMULA_GREETING = "hello from the web formula"


def deployment(**redis_settings):
    """The lab's my_multihead_cluster.yaml as a dict; keyword arguments go under cache.redis."""
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}} for h, ip in REDIS_HOSTS.items()]
    controllers.append({"hostname": PLAIN_HOST[0], "ip_address": PLAIN_HOST[1], "services": {"redis": False}})
    return {
        "cluster": {"name": "integration"},
        "cache": {"redis": {"password": "${REDIS_PASSWORD}", "host_baseline": "report", **redis_settings}},
        "nodes": {"controllers": controllers},
    }


# Redis clients


def redis_client(address, port=REDIS_PORT, password=PASSWORD, timeout=5, reconnect=True):
    """A client of the server (or Sentinel, on its port) at ``address``; ``password=None``: none.

    ``reconnect=False``: one connection that raises when it breaks, for tests that must know
    which server process answered: redis-py's default retries (and its pool's silent
    reconnect of a connection the server closed) would carry a command over to a restarted
    server unseen."""
    if reconnect:
        return redis.Redis(host=address, port=port, password=password, socket_timeout=timeout,
                           decode_responses=True)
    return redis.Redis(host=address, port=port, password=password, socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True, retry=Retry(NoBackoff(), 0),
                       single_connection_client=True)


def node_client(host, password=PASSWORD):
    """A client of the Redis server of the session lab's ``host`` (it1..it7)."""
    return redis_client(ADDRESSES[host], password=password)


def role(host):
    """``master`` or ``slave``: the replication role ``host``'s server reports."""
    return node_client(host).info("replication")["role"]


# Inside lab hosts (``lab`` is a lab.hosts.Lab: the first item of the lab_hosts fixture)


def host_run(lab, host, *argv, auth=False, check=False):
    """``argv`` run inside ``host``, output captured as text; ``auth``: redis-cli gets the
    password (PASSWORD, or the string ``auth`` is) from REDISCLI_AUTH (never from its command line)."""
    env = dict(os.environ, REDISCLI_AUTH=PASSWORD if auth is True else auth) if auth else None
    return subprocess.run(lab.enter(host, argv), capture_output=True, text=True, check=check, env=env)


def host_output(lab, host, *argv, auth=False):
    """What ``argv`` run inside ``host`` printed, stripped."""
    return host_run(lab, host, *argv, auth=auth).stdout.strip()


def host_file(lab, host, path):
    """A file inside a running lab host, as the host's own processes see it."""
    return lab.path(host, path)


def host_processes(lab, host):
    """The command lines of every process of ``host``."""
    commands = []
    for pid in lab.processes(host):
        try:
            commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return commands


def main_pid(lab, host, unit="redis-server"):
    """systemd's MainPID of ``unit`` inside ``host`` (0 when not running)."""
    return int(host_run(lab, host, "systemctl", "show", "-p", "MainPID", "--value", unit, check=True).stdout.strip())


def ps_output():
    """Every command line on the machine, as ``ps`` shows them."""
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


# Minions


def wait_for_minions(salt_cli, minions, timeout=90):
    """Until every minion of ``minions`` answers test.ping (``salt_cli`` of their master)."""
    missing = set(minions)

    def all_answered():
        answered = salt_cli.run("-L", "test.ping", "--timeout=2", minion_tgt=",".join(sorted(missing)))
        if isinstance(answered.data, dict):
            missing.difference_update(minion for minion, ok in answered.data.items() if ok is True)
        elif answered.data is True and len(missing) == 1:
            missing.clear()
        return not missing

    wait_until(all_answered, timeout, lambda: f"minions answering test.ping; silent: {sorted(missing)}", interval=0.5)


# The password


def password_forms(password=PASSWORD):
    """Every way the password could show up in text: as is, JSON-escaped, repr-escaped,
    and quoted as in a Redis config file."""
    return {
        password,
        json.dumps(password)[1:-1],
        repr(password)[1:-1],
        password.replace("\\", "\\\\").replace('"', '\\"'),
    }


def assert_no_password(text, where):
    """Fails when ``text`` (found in ``where``) holds the password in any of its forms."""
    for form in password_forms():
        if form in text:
            raise AssertionError(f"the password ({'raw' if form == PASSWORD else 'encoded'}) is in {where}")


@contextlib.contextmanager
def lab_of_its_own(tmp_path_factory, name, document):
    """A lab of a test module's own, named ``name``, whose my_multihead_cluster.yaml is
    ``document``: its bridge and namespaces (hosts boot once a master is up). Yields
    ``(lab, bridge_ip, config)``; everything is removed afterwards."""
    from lab.hosts import Lab, read_hosts  # pylint: disable=import-outside-toplevel

    state_dir = tmp_path_factory.mktemp(f"{name}-lab")
    config = state_dir / "my_multihead_cluster.yaml"
    config.write_text(yaml.safe_dump(document))
    lab = Lab(state_dir, name=name)
    lab.destroy()
    _, bridge_ip = lab.ensure_network(read_hosts(config))
    try:
        yield lab, bridge_ip, config
    finally:
        lab.destroy()


def boot_hosts(lab, master, config):
    """Every host of ``config`` (a my_multihead_cluster.yaml) booted, its salt-minion pointed at
    ``master`` (a saltfactories master)."""
    from lab.hosts import read_hosts  # pylint: disable=import-outside-toplevel
    from lab.saltconf import minion_settings  # pylint: disable=import-outside-toplevel

    ports = {"master_port": master.config["ret_port"], "publish_port": master.config["publish_port"]}
    lab.ensure_hosts(read_hosts(config), lambda name, bridge: minion_settings(name, bridge, **ports))


def booted_cli(master, own_lab, minions, timeout=600):
    """Every host of a lab of its own booted and its minion (``minions``) answering ``master``:
    the salt CLI (``timeout`` per command) that drives them."""
    lab, _, config = own_lab
    boot_hosts(lab, master, config)
    cli = master.salt_cli(timeout=timeout)
    wait_for_minions(cli, list(minions))
    return cli


@contextlib.contextmanager
def master_of_its_own(salt_factories, own_lab, master_id, password=PASSWORD):
    """A running salt-master (saltfactories) for a lab of its own, configured as `make lab`
    configures its master, with REDIS_PASSWORD (``password``) in its environment."""
    from lab.saltconf import master_settings  # pylint: disable=import-outside-toplevel

    _, bridge_ip, config = own_lab
    pillar_root = config.parent / "pillar"
    shutil.copytree(ROOT / "pillar", pillar_root)
    factory = salt_factories.salt_master_daemon(master_id, overrides=master_settings(bridge_ip, config, pillar_root))
    factory.environ = dict(factory.environ, REDIS_PASSWORD=password)
    with factory.started(start_timeout=120):
        yield factory


def pillar_versions(cli, minion):
    """``{host: version}`` of pillar ``redis:versions`` as ``minion`` gets it now (refreshed:
    the salt-master reads its peers' grains from its minion data cache), every entry with
    the RDB format its version writes."""
    assert cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt=minion).returncode == 0
    versions = cli.run("pillar.get", "redis:versions", "unmask=True", minion_tgt=minion).data
    assert versions and all(entry["rdb_format"] and entry["minion"] for entry in versions.values()), \
        f"pillar redis:versions on {minion}: {versions}"
    return {host: entry["version"] for host, entry in versions.items()}
