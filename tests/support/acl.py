"""An application ACL user as the lab tests define it (cache.redis.acl.users), and what such a
user may and may not do on a Redis Cluster node."""

import pytest
import redis
from support.lab import REDIS_PORT

APP_PASSWORD = 'app "pass" \\ word #7'
# What an application on a Redis Cluster needs besides its data commands: the cluster's
# topology (CLUSTER SLOTS/SHARDS) and the connection commands (PING, COMMAND...); -@dangerous
# last, so that it wins over @connection's CLIENT KILL.
APP_RULES = "~* +@read +@write +@connection +cluster|slots +cluster|shards -@dangerous"
APP_USERS = [{"name": "app", "password": APP_PASSWORD, "rules": APP_RULES}]
# Refused to the app user on every node. DEBUG is refused to every client before the ACLs
# are asked (enable-debug-command no): the ACLs' own verdict is checked with ACL DRYRUN.
ADMIN_COMMANDS = (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("SHUTDOWN",), ("ACL", "LIST"))


def app_client(address):
    return redis.Redis(host=address, port=REDIS_PORT, username="app", password=APP_PASSWORD, socket_timeout=5,
                       decode_responses=True)


def own_key(client, prefix):
    """A key of ``prefix`` that the node behind ``client`` serves (the others answer MOVED), set."""
    for number in range(200):
        try:
            client.set(f"{prefix}:{number}", number)
            return f"{prefix}:{number}"
        except redis.exceptions.MovedError:
            continue
    raise AssertionError(f"no key of {prefix} on this node")


def assert_app_user_limited(address, prefix):
    """On the node at ``address`` the app user reads and writes a key it serves and is
    refused every admin command."""
    app = app_client(address)
    try:
        key = own_key(app, prefix)
        assert app.get(key) is not None
        for command in ADMIN_COMMANDS:
            with pytest.raises(redis.exceptions.NoPermissionError):
                app.execute_command(*command)
    finally:
        app.close()
