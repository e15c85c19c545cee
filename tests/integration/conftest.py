"""
The integration lab: real network-namespace hosts (lab/hosts.py, the code behind
`python -m lab`), a real salt-master and one real salt-minion per host started by
pytest-salt-factories, configured exactly as lab/saltconf.py configures `make lab`.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml
from saltfactories.daemons.minion import SaltMinion

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lab.hosts import Lab, read_hosts  # noqa: E402
from lab.saltconf import master_settings, minion_settings  # noqa: E402

# Quotes, a backslash, a space and a '#': the password must survive Redis's config syntax.
PASSWORD = 'it "pass" \\ word #42'
SUBNET = "10.213.9"
REDIS_HOSTS = {"it1": f"{SUBNET}.11", "it2": f"{SUBNET}.12", "it3": f"{SUBNET}.13"}
PLAIN_HOST = ("it4", f"{SUBNET}.14")


def deployment(**redis_settings):
    """The lab's my_multihead_cluster.yaml as a dict; keyword arguments go under cache.redis."""
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}} for h, ip in REDIS_HOSTS.items()]
    controllers.append({"hostname": PLAIN_HOST[0], "ip_address": PLAIN_HOST[1], "services": {"redis": False}})
    return {
        "cluster": {"name": "integration"},
        "cache": {"redis": {"password": "${REDIS_PASSWORD}", **redis_settings}},
        "nodes": {"controllers": controllers},
    }


class LabMinion(SaltMinion):
    """A salt-minion that runs inside its lab host (network, mounts, hostname)."""

    lab = None

    def cmdline(self, *args):
        return self.lab.enter(self.id, []) + list(super().cmdline(*args))


def _require(condition, what):
    # Under CI=true (and everywhere else) a missing prerequisite is a failure, never a skip.
    if not condition:
        pytest.fail(f"integration prerequisite missing: {what} (run `make setup` as root)")


@pytest.fixture(scope="session")
def lab_hosts(tmp_path_factory):
    _require(os.geteuid() == 0, "root privileges")
    for tool in ("ip", "nsenter", "unshare", "redis-server", "insserv"):
        _require(shutil.which(tool), f"the {tool} command")
    state_dir = tmp_path_factory.mktemp("lab")
    config = state_dir / "my_multihead_cluster.yaml"
    config.write_text(yaml.safe_dump(deployment()))
    lab = Lab(state_dir, name="rtest")
    lab.destroy()
    bridge_ip = lab.ensure_hosts(read_hosts(config))
    yield lab, bridge_ip, config
    lab.destroy()


@pytest.fixture(scope="session")
def deployment_file(lab_hosts):
    return lab_hosts[2]


@pytest.fixture(scope="session")
def pillar_root(lab_hosts):
    """The master's pillar_roots: the repo's pillar/, copied so a test can add overrides."""
    root = lab_hosts[2].parent / "pillar"
    shutil.copytree(ROOT / "pillar", root)
    return root


@pytest.fixture(scope="session")
def salt_master(salt_factories, lab_hosts, pillar_root):
    lab, bridge_ip, config = lab_hosts
    factory = salt_factories.salt_master_daemon(
        "it-master", overrides=master_settings(bridge_ip, config, pillar_root=pillar_root)
    )
    factory.environ = dict(factory.environ, REDIS_PASSWORD=PASSWORD)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="session")
def salt_minions(salt_master, lab_hosts):
    lab, bridge_ip, _ = lab_hosts
    LabMinion.lab = lab
    minions = [
        salt_master.salt_minion_daemon(
            name,
            factory_class=LabMinion,
            # The minion reaches the test's log server and event listener through the bridge.
            overrides=dict(
                minion_settings(name, bridge_ip),
                **{"pytest-minion": {"log": {"host": bridge_ip}, "returner_address": {"host": bridge_ip}}},
            ),
        )
        for name in [*REDIS_HOSTS, PLAIN_HOST[0]]
    ]
    for minion in minions:
        minion.environ = lab.host_environ(minion.environ)
        minion.start(start_timeout=120)
    yield {m.id: m for m in minions}
    for minion in minions:
        minion.terminate()


@pytest.fixture(scope="session")
def salt_cli(salt_master, salt_minions):
    return salt_master.salt_cli(timeout=600)


@pytest.fixture(scope="session")
def salt_run_cli(salt_master):
    """salt-run renders pillar itself: like the master, it needs REDIS_PASSWORD."""
    cli = salt_master.salt_run_cli(timeout=120)
    cli.environ = dict(cli.environ, REDIS_PASSWORD=PASSWORD)
    return cli


@pytest.fixture(scope="session")
def first_apply(salt_cli):
    """`salt '*' state.apply redis` once, as an operator would run it first."""
    return salt_cli.run("state.apply", "redis", minion_tgt="*")


def node_client(host, password=PASSWORD):
    return redis.Redis(host=REDIS_HOSTS[host], port=6379, password=password, socket_timeout=5, decode_responses=True)


def host_file(lab_hosts, host, path):
    """A file inside a lab host, read through the host's bind-mounted directory."""
    return lab_hosts[0].host_root(host) / "fs" / path.strip("/")


def host_processes(lab_hosts, host):
    lab = lab_hosts[0]
    commands = []
    for pid in lab.processes(host):
        try:
            commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return commands


def ps_output():
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
