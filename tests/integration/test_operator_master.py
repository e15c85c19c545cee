"""
The operator's own salt-master (README "Using it with your salt-master"): its own states
and pillar keep working beside ours, a broken YAML stops only the Redis states, and a
first dry run on a minion that never had our modules says what to do.
"""

import pytest
import yaml
from support.lab import (
    OTHER_FORMULA_GREETING,
    PLAIN_HOST,
    REDIS_HOSTS,
    assert_no_password,
    deployment,
    host_file,
    host_run,
    node_client,
)
from support.states import failed_comments

pytestmark = pytest.mark.integration


def test_the_masters_own_states_and_ours_both_apply(first_apply, salt_cli, lab_hosts):
    web = salt_cli.run("state.apply", "web", minion_tgt="*")

    assert web.returncode == 0, web.stdout
    for host in [*REDIS_HOSTS, PLAIN_HOST[0]]:
        assert host_file(lab_hosts[0], host, "/etc/motd-web").read_text().strip() == OTHER_FORMULA_GREETING
    assert first_apply.returncode == 0


def test_a_broken_yaml_stops_only_the_redis_states(
    first_apply, salt_cli, deployment_file, lab_hosts, restore_deployment
):
    broken = deployment()
    broken["nodes"]["controllers"][1]["ip_address"] = REDIS_HOSTS["it1"]
    deployment_file.write_text(yaml.safe_dump(broken))
    host_file(lab_hosts[0], "it2", "/etc/motd-web").unlink(missing_ok=True)
    run_id = node_client("it2").info("server")["run_id"]

    web = salt_cli.run("state.apply", "web", minion_tgt="it2")
    ours = salt_cli.run("state.apply", "redis", minion_tgt="it2")

    assert web.returncode == 0, web.stdout
    assert host_file(lab_hosts[0], "it2", "/etc/motd-web").read_text().strip() == OTHER_FORMULA_GREETING
    assert ours.returncode != 0
    failed = [v for v in ours.data.values() if v["result"] is False]
    assert [v["__id__"] for v in failed] == ["redis-deployment-pillar-is-usable"]
    assert "nodes.controllers[1].ip_address" in failed[0]["comment"]
    assert str(deployment_file) in failed[0]["comment"]
    assert node_client("it2").info("server")["run_id"] == run_id
    salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt="it2")  # as an operator would, after the YAML
    status = salt_cli.run("redis_cluster.status", minion_tgt="it2").data
    assert status["error"].startswith("deployment pillar failed: ")
    assert "nodes.controllers[1].ip_address" in status["error"]


def test_a_first_dry_run_on_a_never_synced_minion_says_what_to_do(first_apply, salt_cli, lab_hosts):
    lab = lab_hosts[0]
    # As on a minion that never had a real apply: none of our modules in its cache.
    host_run(lab, "it1", "rm", "-rf", "/var/cache/salt/minion/extmods", check=True)
    salt_cli.run("saltutil.refresh_modules", minion_tgt="it1")

    dry = salt_cli.run("state.apply", "redis", "test=True", minion_tgt="it1")

    assert dry.returncode != 0
    failed = failed_comments(dry.data)
    assert list(failed) == ["redis-salt-modules-present"]
    assert "saltutil.sync_all" in failed["redis-salt-modules-present"]
    assert all(not v["changes"] for v in dry.data.values())

    real = salt_cli.run("state.apply", "redis", minion_tgt="it1")
    assert real.returncode == 0, real.stdout
    again = salt_cli.run("state.apply", "redis", "test=True", minion_tgt="it1")
    assert [v["__id__"] for v in again.data.values() if v["result"] is not True] == []


@pytest.fixture
def preflight(salt_master):
    """salt-run as the operator runs it before anything changes: no REDIS_PASSWORD in its shell."""
    cli = salt_master.salt_run_cli(timeout=60)
    cli.environ = {k: v for k, v in cli.environ.items() if k != "REDIS_PASSWORD"}
    return cli


def test_preflight_shows_the_plan_without_the_password(first_apply, preflight):
    checked = preflight.run("redis_deployment.check")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    plan = checked.data["plan"]
    assert plan[:2] == ["Total Redis-enabled controllers: 3", "3 Redis nodes → Cluster mode (16384 hash slots)"]
    # Each node's server and the version installed, on its distribution.
    assert any(line.startswith("it1 (10.213.9.11): cluster-node slots 0-5460: minion it1, redis 7.0.")
               and ", maxmemory" in line and " on Debian 12" in line for line in plan), plan
    assert "it4 (10.213.9.14): none: nothing deployed" in plan
    assert checked.data["problems"] == []
    assert_no_password(checked.stdout, "the preflight's output")


def test_preflight_fails_on_a_broken_yaml(first_apply, preflight, deployment_file, restore_deployment):
    broken = deployment()
    broken["nodes"]["controllers"][1]["ip_address"] = REDIS_HOSTS["it1"]
    deployment_file.write_text(yaml.safe_dump(broken))

    checked = preflight.run("redis_deployment.check")

    assert checked.returncode != 0
    assert "nodes.controllers[1].ip_address: duplicate ip_address" in checked.data["problems"][0]
    assert "Traceback" not in checked.stdout + checked.stderr


def test_preflight_names_a_controller_without_a_minion(first_apply, preflight, deployment_file, restore_deployment):
    grown = deployment()
    extra = {"hostname": "it5", "ip_address": "10.213.9.15", "services": {"redis": True}}
    grown["nodes"]["controllers"].insert(3, extra)
    deployment_file.write_text(yaml.safe_dump(grown))

    checked = preflight.run("redis_deployment.check")

    assert checked.returncode != 0
    assert "it5 (10.213.9.15): cluster-node slots 12288-16383: NO CONNECTED MINION" in checked.data["plan"]
    assert checked.data["problems"][0].startswith("nodes.controllers[3] (it5): no connected minion")
