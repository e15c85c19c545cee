"""
Application ACL users on the session's Redis Cluster (cache.redis.acl.users): an `app` user
added to the YAML reaches every node with one `state.apply redis` (ACL users are not
replicated), can read and write its keys through a cluster client and on each node, is refused
the admin commands, a second apply changes nothing, and removed from the YAML it is gone from
every node and from Redis's own files.
"""

import pytest
import redis
import yaml
from redis.cluster import ClusterNode, RedisCluster
from support.acl import ADMIN_COMMANDS, APP_PASSWORD, APP_RULES, app_client, own_key
from support.cluster import wait_cluster_ok
from support.lab import REDIS_HOSTS, REDIS_PORT, assert_no_password, deployment, host_file, node_client, password_forms
from support.states import state_by_id

pytestmark = pytest.mark.integration

STATE = "redis-application-users-on-this-server"


def test_an_application_user_reaches_every_node_then_goes_when_the_yaml_drops_it(
        first_apply, salt_cli, deployment_file, lab_hosts, restore_deployment):
    lab = lab_hosts[0]
    wait_cluster_ok()
    users = [{"name": "app", "password": APP_PASSWORD, "rules": APP_RULES}]
    deployment_file.write_text(yaml.safe_dump(deployment(acl={"users": users})))

    added = salt_cli.run("state.apply", "redis", minion_tgt="it*")
    again = salt_cli.run("state.apply", "redis", minion_tgt="it*")

    assert added.returncode == 0, added.stdout
    cluster = RedisCluster(startup_nodes=[ClusterNode(ip, REDIS_PORT) for ip in REDIS_HOSTS.values()],
                           username="app", password=APP_PASSWORD, socket_timeout=5, decode_responses=True)
    try:
        for number in range(30):
            cluster.set(f"acl-app:{number}", number)
        assert [cluster.get(f"acl-app:{number}") for number in range(30)] == [str(n) for n in range(30)]
    finally:
        cluster.close()
    for host, address in REDIS_HOSTS.items():
        assert state_by_id(added, host, STATE)["changes"] == {"created": ["app"]}, host
        assert state_by_id(again, host, STATE)["changes"] == {}, host
        app = app_client(address)
        key = own_key(app, f"acl-{host}")
        assert app.get(key) == key.split(":")[1]
        for command in ADMIN_COMMANDS:
            with pytest.raises(redis.exceptions.NoPermissionError):
                app.execute_command(*command)
        with pytest.raises(redis.ResponseError):
            app.execute_command("DEBUG", "SLEEP", "0")
        verdict = node_client(host).execute_command("ACL", "DRYRUN", "app", "DEBUG", "SLEEP", "0")
        assert "no permissions to run the 'debug' command" in verdict, verdict
        # Redis's own file keeps the user: its password's hash, never the password.
        text = host_file(lab, host, "/etc/redis/redis.conf").read_text()
        assert "\nuser app on " in text and APP_PASSWORD not in text
    assert_no_password(added.stdout + again.stdout, "the applies' output")
    assert not [form for form in password_forms(APP_PASSWORD) if form in added.stdout + again.stdout]

    deployment_file.write_text(yaml.safe_dump(deployment()))
    removed = salt_cli.run("state.apply", "redis", minion_tgt="it*")

    assert removed.returncode == 0, removed.stdout
    for host, address in REDIS_HOSTS.items():
        assert state_by_id(removed, host, STATE)["changes"] == {"removed": ["app"]}, host
        assert "app" not in node_client(host).acl_users()
        with pytest.raises(redis.AuthenticationError):
            app_client(address).ping()
        assert "\nuser app " not in host_file(lab, host, "/etc/redis/redis.conf").read_text()
