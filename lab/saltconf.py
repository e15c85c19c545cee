"""
Salt configuration of the lab: what the master and each minion need on top of Salt's
defaults. `python -m lab` and the integration tests (pytest-salt-factories) both use it,
so both run the product exactly as the README tells an operator to.
"""

from pathlib import Path

from lab.hosts import REPO

DEPLOYMENT_FILE = "my_multihead_cluster.yaml"


def master_settings(bridge_ip, deployment_file, pillar_root=REPO / "pillar"):
    """The README's master configuration, plus what a lab master needs (interface, keys)."""
    return {
        "interface": bridge_ip,
        "auto_accept": True,
        "file_roots": {"base": [str(REPO / "salt")]},
        "pillar_roots": {"base": [str(pillar_root)]},
        # _pillar/ and _runners/ load straight from the repo: nothing to sync, nothing stale.
        "module_dirs": [str(REPO / "salt")],
        "ext_pillar": [{"redis_deployment": {"config": str(deployment_file)}}],
        "timeout": 30,
        # How long the CLI waits for "are you still running it?" answers; lab hosts are near.
        "gather_job_timeout": 3,
        "log_level_logfile": "info",
    }


def minion_settings(minion_id, bridge_ip, master_port=4506, publish_port=4505):
    """A lab host's /etc/salt/minion: Salt's defaults but for where the master is."""
    return {
        "id": minion_id,
        "master": bridge_ip,
        "master_port": master_port,
        "publish_port": publish_port,
        "acceptance_wait_time": 1,
        "random_startup_delay": 0,
        "log_level_logfile": "info",
    }


def write_config(path, settings):
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, default_flow_style=False))
