"""
The deployment's internal ACL users (Salt's ``_utils``; modules reach them as
``__utils__["redis_acl.<name>"]``): the users Salt keeps on every Redis server (and, for
monitoring, every Sentinel) for its own tools, what each may run, its password and how one
is converged on a running server.

- ``salt-sentinel``: the Sentinels' login on the Redis servers (the commands Sentinel sends:
  monitoring, hello messages, failover, reconfiguration).
- ``salt-monitor``: the read-only monitoring login of ``/usr/local/bin/redis_health`` and the
  Prometheus exporter: it can read ``INFO``, the cluster's and the Sentinels' views, the
  slow log and latency, and nothing else (no ``CONFIG``, no key, no write).

Passwords are derived from the deployment's password (hex HMAC-SHA256 with a label per user),
so every node computes the same one without another secret in pillar, a password rotation
rotates them too, and a hex password survives Sentinel's unquoted config rewrites. Servers
store only its SHA-256 (``#<hash>`` rules). ACL users are not replicated: every server (and
every Sentinel) needs its own ``ACL SETUSER``.

:depends: redis (redis-py)
"""

import hashlib
import hmac

__virtualname__ = "redis_acl"

SENTINEL_USER = "salt-sentinel"
MONITORING_USER = "salt-monitor"
SENTINEL_CHANNELS = ("&__sentinel__:hello",)

# What each internal user may run, on a Redis server and (monitoring only) on a Sentinel.
USERS = {
    SENTINEL_USER: {
        "label": "redis-sentinel",
        "server": ("+ping", "+info", "+role", "+subscribe", "+publish", "+multi", "+exec", "+slaveof",
                   "+replicaof", "+config|rewrite", "+client|setname", "+client|kill", "+script|kill"),
        "channels": SENTINEL_CHANNELS,
    },
    MONITORING_USER: {
        "label": "redis-monitoring",
        "server": ("+ping", "+info", "+role", "+client|setname", "+cluster|info", "+cluster|nodes", "+slowlog|get",
                   "+slowlog|len", "+latency|latest", "+latency|history", "+latency|doctor"),
        "sentinel": ("+ping", "+info", "+role", "+client|setname", "+sentinel|masters", "+sentinel|master",
                     "+sentinel|replicas", "+sentinel|slaves",
                     "+sentinel|sentinels", "+sentinel|ckquorum", "+sentinel|get-master-addr-by-name"),
        "channels": (),
    },
}


def __virtual__():
    return __virtualname__


def derived_password(password, user):
    """The internal ``user``'s password: hex, derived from the deployment's ``password``."""
    label = f"{USERS[user]['label']}:{user}"
    return hmac.new((password or "").encode("utf-8"), label.encode("utf-8"), hashlib.sha256).hexdigest()


def commands(user, on="server"):
    """The command rules of ``user`` on a Redis ``server`` or a ``sentinel``."""
    return tuple(USERS[user][on])


def rules(password, user, on="server"):
    """``ACL SETUSER <user>`` arguments: everything reset, then on, its hash, its channels, its
    commands; no key pattern."""
    digest = hashlib.sha256(derived_password(password, user).encode("utf-8")).hexdigest()
    return ["reset", "on", f"#{digest}", "resetchannels", *USERS[user]["channels"], "-@all", *commands(user, on)]


def _pairs(flat):
    return dict(zip(flat[::2], flat[1::2]))


def _words(value):
    return set(value.split() if isinstance(value, str) else value or ())


def differs(client, password, user, on="server"):
    """What differs between the server's ``user`` and the rules wanted (empty: nothing):
    ``missing``, ``disabled``, ``password``, ``commands``, ``channels``, ``keys``."""
    reply = client.execute_command("ACL", "GETUSER", user)
    if not reply:
        return ["missing"]
    current = _pairs(reply)
    digest = rules(password, user, on)[2][1:]
    found = []
    if "on" not in current.get("flags", []):
        found.append("disabled")
    if list(current.get("passwords", [])) != [digest]:
        found.append("password")
    if _words(current.get("commands", "")) != {"-@all", *commands(user, on)}:
        found.append("commands")
    if _words(current.get("channels", "")) - {"resetchannels"} != set(USERS[user]["channels"]):
        found.append("channels")
    if _words(current.get("keys", "")):
        found.append("keys")
    return found


def converge(client, password, user, on="server", dry_run=False):
    """Make ``user`` on the server (or Sentinel) behind ``client`` as wanted and persist it in
    the process's own file: ``ACL SAVE`` where the server uses an ``aclfile``, else
    ``CONFIG REWRITE`` (a Sentinel: ``SENTINEL FLUSHCONFIG``).

    Returns ``{"changed", "differs", "persisted", "comment"}``; redis-py errors propagate
    (the caller words them for its users)."""
    found = differs(client, password, user, on)
    if not found:
        return {"changed": False, "differs": [], "persisted": True, "comment": f"ACL user {user} is as wanted"}
    what = "created" if found == ["missing"] else "updated (" + ", ".join(found) + ")"
    if dry_run:
        return {"changed": True, "differs": found, "persisted": False, "comment": f"ACL user {user} would be {what}"}
    client.execute_command("ACL", "SETUSER", user, *rules(password, user, on))
    try:
        if on == "sentinel":
            client.execute_command("SENTINEL", "FLUSHCONFIG")
        elif client.config_get("aclfile").get("aclfile"):
            client.execute_command("ACL", "SAVE")
        else:
            client.execute_command("CONFIG", "REWRITE")
        persisted, why = True, ""
    except Exception as exc:  # pylint: disable=broad-except
        persisted, why = False, f"; not persisted: {type(exc).__name__}: {exc}"
    return {"changed": True, "differs": found, "persisted": persisted, "comment": f"ACL user {user} {what}{why}"}


def state_return(ret, name, outcome, test):
    """A state's return for ``converge``'s ``outcome`` (the states ``redis_sentinel.sentinel_user``
    and ``redis_node.monitoring_user``): changes name the user and what differed, ``result``
    None under test, False when the change could not be persisted."""
    ret["comment"] = outcome["comment"]
    if outcome["changed"]:
        ret["changes"] = {"acl_user": {"user": name, "changed": ", ".join(outcome["differs"])}}
        if test:
            ret["result"] = None
        elif not outcome["persisted"]:
            ret["result"] = False
    return ret
