"""
The integration lab: real network-namespace hosts (lab/hosts.py, the code behind
`python -m lab`), a real salt-master and one real salt-minion per host started by
pytest-salt-factories, configured exactly as lab/saltconf.py configures `make lab`.

Fixtures only: the helpers and constants the tests share are in tests/support/.
"""

import os
import shutil

import pytest
import yaml
from lab.hosts import Lab, read_hosts
from lab.saltconf import master_settings
from support.lab import (
    OTHER_FORMULA_GREETING,
    PASSWORD,
    PLAIN_HOST,
    REDIS_HOSTS,
    ROOT,
    boot_hosts,
    deployment,
    wait_for_minions,
)


def _require(condition, what):
    # Under CI=true (and everywhere else) a missing prerequisite is a failure, never a skip.
    if not condition:
        pytest.fail(f"integration prerequisite missing: {what} (run `make setup` as root)")


@pytest.fixture(scope="session")
def lab_hosts(tmp_path_factory):
    """The hosts' network: bridge and namespaces. The hosts boot once the master is up."""
    _require(os.geteuid() == 0, "root privileges")
    for tool in ("ip", "nsenter", "unshare", "redis-server", "/lib/systemd/systemd"):
        _require(shutil.which(tool), f"the {tool} command")
    state_dir = tmp_path_factory.mktemp("lab")
    config = state_dir / "my_multihead_cluster.yaml"
    config.write_text(yaml.safe_dump(deployment()))
    lab = Lab(state_dir, name="rtest")
    lab.destroy()
    _, bridge_ip = lab.ensure_network(read_hosts(config))
    yield lab, bridge_ip, config
    lab.destroy()


@pytest.fixture(scope="session")
def deployment_file(lab_hosts):
    return lab_hosts[2]


@pytest.fixture
def restore_deployment(deployment_file):
    """The session's my_multihead_cluster.yaml as it was before the test."""
    original = deployment_file.read_text()
    yield
    deployment_file.write_text(original)


@pytest.fixture(scope="session")
def pillar_root(lab_hosts):
    """The master's pillar_roots: the repo's pillar/, copied so a test can add overrides."""
    root = lab_hosts[2].parent / "pillar"
    shutil.copytree(ROOT / "pillar", root)
    return root


@pytest.fixture(scope="session")
def other_formula_root(lab_hosts):
    """An existing master's own states and pillar: a `web` formula the Redis one must not disturb."""
    root = lab_hosts[2].parent / "other-formula"
    (root / "web").mkdir(parents=True)
    (root / "web" / "init.sls").write_text(
        "web-motd:\n  file.managed:\n    - name: /etc/motd-web\n"
        "    - contents: \"{{ pillar['web']['greeting'] }}\"\n"
    )
    return root


@pytest.fixture(scope="session")
def salt_master(salt_factories, lab_hosts, pillar_root, other_formula_root):
    """The README's "existing master" setup: the master's own file root and ext_pillar stay,
    our paths are added to its lists."""
    lab, bridge_ip, config = lab_hosts
    settings = master_settings(bridge_ip, config, pillar_root=pillar_root)
    settings["file_roots"]["base"].insert(0, str(other_formula_root))
    greeting = yaml.safe_dump({"web": {"greeting": OTHER_FORMULA_GREETING}}, default_flow_style=True).strip()
    settings["ext_pillar"].insert(0, {"cmd_yaml": f"echo '{greeting}'"})
    factory = salt_factories.salt_master_daemon("it-master", overrides=settings)
    factory.environ = dict(factory.environ, REDIS_PASSWORD=PASSWORD)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="session")
def salt_minions(salt_master, lab_hosts):
    """Every host booted: its systemd starts its salt-minion unit, pointed at the test's master."""
    lab, bridge_ip, config = lab_hosts
    boot_hosts(lab, salt_master, config)
    names = [*REDIS_HOSTS, PLAIN_HOST[0]]
    wait_for_minions(salt_master.salt_cli(timeout=60), names)
    return names


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
