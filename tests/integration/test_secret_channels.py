"""
No secret on any channel (issue 18, item 3), in the session's cluster lab: every secret of the
deployment (the password and the internal users' derived from it), in each of its forms
(raw, JSON-escaped, repr, Redis-quoted), is on no channel anyone but root and redis can read
while Salt applies, checks health and takes a backup set: the argv of every process started
meanwhile and of every process left running (every lab host and the master), every event on
the master's bus (the session's first apply included, while the listener keeps it), the job
returns and the master's job cache, the minion and master logs, the journal and
``systemctl show`` of every unit of every host, every file others can read under Redis's,
Salt's and the backups' directories and the master's root, the backups' metadata and the
set manifest. Root- and redis-only files may hold the password; the monitoring group may
read its own login's (derived) password. Failures list channel, host, place, secret and form,
never the secret.
"""

import time

import pytest
import yaml
from support.lab import deployment, node_client
from support.leaks import Watch, deployment_secrets, everything_seen, report
from support.states import states_with_changes

pytestmark = pytest.mark.integration


def drift(lab):
    """What the apply then has to put back, on the paths that handle secrets: a monitoring
    login gone from a server, the health script's settings (its login) gone, a setting changed
    by hand on a live server."""
    node_client("it1").execute_command("ACL", "DELUSER", "salt-monitor")
    lab.path("it2", "/etc/redis-monitoring/redis_health.json").unlink()
    node_client("it3").config_set("maxclients", 4321)


PREVIOUS_PASSWORD = "leak 'previous' \\ pw #3"
APP_PASSWORD = 'leak "app" pw #4'


def test_no_secret_on_any_channel(lab_hosts, deployment_file, salt_master, salt_cli, salt_run_cli, first_apply,
                                  event_listener, restore_deployment):
    lab = lab_hosts[0]
    hosts = [host for host in lab.hosts() if lab.running(host)]
    # Every kind of secret at once: a previous password (phase 1 of a rotation) and an
    # application user's password, besides the password and the derived ones.
    document = deployment(previous_password=PREVIOUS_PASSWORD,
                          acl={"users": [{"name": "app", "password": APP_PASSWORD, "rules": "~* +@read"}]})
    deployment_file.write_text(yaml.safe_dump(document))
    secrets = deployment_secrets(document)
    results = {"the session's first state.apply redis": first_apply}
    drift(lab)
    try:
        # since=0: the bus from the start of what the listener keeps (the first apply's events too).
        with Watch(event_listener, lab, hosts, salt_master, secrets, since=0) as watch:
            results["state.apply redis"] = salt_cli.run("state.apply", "redis", minion_tgt="*")
            results["redis_cluster.health"] = salt_cli.run("redis_cluster.health", minion_tgt="*")
            results["redis_cluster.status"] = salt_cli.run("redis_cluster.status", minion_tgt="*")
            results["salt-run redis_backup.run"] = salt_run_cli.run("redis_backup.run", "type=rdb")
    finally:
        deployment_file.write_text(yaml.safe_dump(deployment()))
        restored = salt_cli.run("state.apply", "redis", minion_tgt="*")
    assert restored.returncode == 0, restored.stdout
    started = time.monotonic()
    findings = everything_seen(watch, results, lab, hosts, salt_master, secrets)
    swept = time.monotonic() - started
    print(f"{watch}; hosts {hosts}; sweep {swept:.1f}s")

    assert not findings, "LEAK (product code): " + report(findings)
    assert watch.bus.events and watch.execs.execs, f"nothing observed: {watch}"
    failed = {what: result.returncode for what, result in results.items()
              if not what.startswith("redis_cluster.") and result.returncode != 0}
    assert not failed, f"the channels were swept but these runs failed (exit status): {failed}"
    assert states_with_changes(results["state.apply redis"]), "the apply changed nothing: nothing was exercised"
    assert swept < 60, f"the sweep took {swept:.0f}s"
