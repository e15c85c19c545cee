"""
The drills' lab (`rdrill`, subnet 10.213.17): three systemd hosts dr1..dr3 forming a Redis
Cluster of three masters without replicas, their own real salt-master and one real
salt-minion per host, started once for every drill of the session. Each drill leaves the
cluster healthy for the next (`healthy_lab` waits for it before a drill starts).
"""

import os
import shutil

import pytest
from support.drills import HOSTS, deployment, local_client, wait_cluster_ok
from support.lab import PASSWORD, boot_hosts, lab_of_its_own, master_of_its_own, wait_for_minions


def _require(condition, what):
    # Under CI=true (and everywhere else) a missing prerequisite is a failure, never a skip.
    if not condition:
        pytest.fail(f"drill prerequisite missing: {what} (run `make setup` as root)")


@pytest.fixture(scope="session")
def drill_lab(tmp_path_factory):
    _require(os.geteuid() == 0, "root privileges")
    for tool in ("ip", "nsenter", "unshare", "redis-server", "gzip", "/lib/systemd/systemd"):
        _require(shutil.which(tool), f"the {tool} command")
    with lab_of_its_own(tmp_path_factory, "rdrill", deployment()) as own_lab:
        yield own_lab


@pytest.fixture(scope="session")
def lab(drill_lab):
    """The drills' lab.hosts.Lab."""
    return drill_lab[0]


@pytest.fixture(scope="session")
def drill_master(salt_factories, drill_lab):
    with master_of_its_own(salt_factories, drill_lab, "drill-master") as master:
        yield master


@pytest.fixture(scope="session")
def cli(drill_master, drill_lab):
    lab, _, config = drill_lab
    boot_hosts(lab, drill_master, config)
    salt_cli = drill_master.salt_cli(timeout=600)
    wait_for_minions(salt_cli, list(HOSTS))
    return salt_cli


@pytest.fixture(scope="session")
def run_cli(drill_master):
    """salt-run renders pillar itself: like the master, it needs REDIS_PASSWORD."""
    cli = drill_master.salt_run_cli(timeout=300)
    cli.environ = dict(cli.environ, REDIS_PASSWORD=PASSWORD)
    return cli


@pytest.fixture(scope="session")
def publisher(drill_master):
    """Jobs published without waiting for their return (support.drills.publish)."""
    client = local_client(drill_master)
    yield client
    client.destroy()


@pytest.fixture(scope="session")
def formed(cli):
    """The first `salt '*' state.apply redis`: three bare hosts become one healthy cluster."""
    applied = cli.run("state.apply", "redis", minion_tgt="*")
    assert applied.returncode == 0, applied.stdout
    return applied


@pytest.fixture
def healthy_lab(formed, cli, lab):
    """Before each drill: every host up, its minion answering, the cluster ok on every node."""
    for host in HOSTS:
        if not lab.running(host):
            lab.boot(host)
    wait_for_minions(cli, list(HOSTS))
    wait_cluster_ok(timeout=60)
    return lab
