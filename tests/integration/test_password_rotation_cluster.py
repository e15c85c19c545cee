"""
A two-phase password rotation on the session's Redis Cluster under a client that opens a
new connection for every write, alternating the old and the new password:

- phase 1 (`password` new, `previous_password` the old one): not one write refused with the
  old password while the apply runs, not one refused with either once it is done;
- phase 2 (`previous_password` removed): not one write refused with the new password while
  the apply runs; afterwards the old one is refused everywhere, the new one accepted;
- no server restarted (`run_id`), every acknowledged write there, `redis_cluster.status`
  naming the phase; a second apply of each phase changes nothing.

The rotation then goes back the same way, so the session's other tests keep their password.
A change without `previous_password` is refused with the recipe, nothing changed; with
`force_password_change` it is made in one step, live: the old password refused at once, no
restart, the data there.
"""

import pytest
import redis
import yaml
from redis.crc import key_slot
from support.cluster import wait_cluster_ok
from support.lab import PASSWORD, REDIS_HOSTS, deployment, node_client, redis_client
from support.rotation import AlternatingWriter
from support.states import state_by_id, states_with_changes

pytestmark = pytest.mark.integration

NEW_PASSWORD = "rotated 'pw' \\ #2"


def slot_owners():
    """``slot -> "ip:port"`` of the cluster as it is (a rotation moves no slot)."""
    owners = {}
    for start, end, master, *_ in node_client(next(iter(REDIS_HOSTS))).execute_command("CLUSTER", "SLOTS"):
        address = f"{master[0]}:{master[1]}"
        owners.update({slot: address for slot in range(int(start), int(end) + 1)})
    return owners


def run_ids(password):
    return {host: redis_client(ip, password=password).info("server")["run_id"] for host, ip in REDIS_HOSTS.items()}


def apply_phase(salt_cli, deployment_file, writer, phase, **redis_settings):
    deployment_file.write_text(yaml.safe_dump(deployment(**redis_settings)))
    writer.phase = f"{phase} apply"
    applied = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    writer.phase = f"{phase} done"
    writer.wait_for(f"{phase} done")
    assert applied.returncode == 0, applied.stdout
    again = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    assert states_with_changes(again) == [], again.stdout
    return applied


def status_phases(salt_cli):
    statuses = salt_cli.run("redis_cluster.status", minion_tgt="*").data
    return {minion: statuses[minion].get("password_phase") for minion in REDIS_HOSTS}


def test_a_two_phase_rotation_under_alternating_clients_refuses_no_one_and_restarts_nothing(
        first_apply, salt_cli, deployment_file, restore_deployment):
    wait_cluster_ok()
    owners = slot_owners()
    before = run_ids(PASSWORD)
    writer = AlternatingWriter(lambda key: owners[key_slot(key.encode())], {"old": PASSWORD, "new": NEW_PASSWORD})
    writer.start()
    try:
        apply_phase(salt_cli, deployment_file, writer, "phase 1",
                    password=NEW_PASSWORD, previous_password="${REDIS_PASSWORD}")
        assert status_phases(salt_cli) == {host: "rotating" for host in REDIS_HOSTS}
        apply_phase(salt_cli, deployment_file, writer, "phase 2", password=NEW_PASSWORD)
        assert status_phases(salt_cli) == {host: "one password" for host in REDIS_HOSTS}
    finally:
        writer.stop()
        # Back to the session's password, the same two phases.
        deployment_file.write_text(yaml.safe_dump(deployment(previous_password=NEW_PASSWORD)))
        salt_cli.run("state.apply", "redis", minion_tgt="it*")
        deployment_file.write_text(yaml.safe_dump(deployment()))
        back = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    assert back.returncode == 0, back.stdout

    writer.assert_no_client_refused()
    assert run_ids(PASSWORD) == before
    stored = {}
    for host in REDIS_HOSTS:
        client = node_client(host)
        for write in writer.acknowledged():
            if owners[key_slot(write.key.encode())].startswith(f"{REDIS_HOSTS[host]}:"):
                stored[write.key] = client.get(write.key)
    assert stored == {w.key: w.phase for w in writer.acknowledged()}
    assert len(stored) > 100


def test_a_password_change_without_the_previous_one_is_refused_and_changes_nothing(
        first_apply, salt_cli, deployment_file, restore_deployment):
    wait_cluster_ok()
    before = run_ids(PASSWORD)
    deployment_file.write_text(yaml.safe_dump(deployment(password=NEW_PASSWORD)))

    refused = salt_cli.run("state.apply", "redis", minion_tgt="it*")

    assert refused.returncode != 0
    for minion in REDIS_HOSTS:
        gate = state_by_id(refused, minion, "redis-server-accepts-the-password")
        assert gate["result"] is False
        assert "cache.redis.previous_password to the one in use" in gate["comment"], minion
    assert states_with_changes(refused) == []
    assert NEW_PASSWORD not in refused.stdout
    assert run_ids(PASSWORD) == before


def test_a_forced_change_refuses_the_old_password_at_once_and_restarts_nothing(
        first_apply, salt_cli, deployment_file, restore_deployment):
    wait_cluster_ok()
    owners = slot_owners()
    before = run_ids(PASSWORD)
    key = "forced:kept"
    owner = next(host for host, ip in REDIS_HOSTS.items() if owners[key_slot(key.encode())].startswith(f"{ip}:"))
    node_client(owner).set(key, "yes")
    deployment_file.write_text(yaml.safe_dump(deployment(password=NEW_PASSWORD, force_password_change=True)))
    try:
        forced = salt_cli.run("state.apply", "redis", minion_tgt="it*")
        assert forced.returncode == 0, forced.stdout
        for minion in REDIS_HOSTS:
            gate = state_by_id(forced, minion, "redis-server-accepts-the-password")
            assert gate["changes"] == {"password": "changed in one step (force_password_change)"}, minion
            assert "Downtime: every client still using the old password is refused" in gate["comment"]
        for ip in REDIS_HOSTS.values():
            with pytest.raises(redis.AuthenticationError):
                redis_client(ip, password=PASSWORD).ping()
            assert redis_client(ip, password=NEW_PASSWORD).cluster("info")["cluster_state"] == "ok"
        assert run_ids(NEW_PASSWORD) == before
        assert node_client(owner, password=NEW_PASSWORD).get(key) == "yes"
        again = salt_cli.run("state.apply", "redis", minion_tgt="it*")
        assert states_with_changes(again) == [], again.stdout
        assert NEW_PASSWORD not in forced.stdout
    finally:
        # Back to the session's password, forced too.
        deployment_file.write_text(yaml.safe_dump(deployment(force_password_change=True)))
        back = salt_cli.run("state.apply", "redis", minion_tgt="it*")
        deployment_file.write_text(yaml.safe_dump(deployment()))
    assert back.returncode == 0, back.stdout
    assert run_ids(PASSWORD) == before
    wait_cluster_ok()
