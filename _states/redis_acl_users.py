"""
The applications' ACL users of the deployment's YAML (``cache.redis.acl.users``; pillar
``redis:acl_users``, passwords as SHA-256 only) on the local Redis server, or the local
Sentinel: created, updated and removed live, then persisted the way the process keeps its
users. ACL users are not replicated: every server and every Sentinel runs this state.

Which users Salt created on this node (and so may delete once the YAML no longer has them) is
recorded in the minion's cache directory, ``redis_acl_users/<server|sentinel>-<port>.json``
(root only). Users Salt did not create, ``default`` and Salt's own ``salt-*`` users are never
deleted. The rules and what differs are checked by Redis itself
(``_utils/redis_acl_users.py``).
"""

import json
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "redis_acl_users"

RECORD_DIRECTORY = "redis_acl_users"


def __virtual__():
    if "redis_acl_users.check" not in __utils__:
        return (False, "redis_acl_users state: _utils/redis_acl_users.py is not available (redis-py missing?)")
    return __virtualname__


def _acl(function):
    return __utils__[f"redis_acl_users.{function}"]


def _record_path(on, port):
    return os.path.join(__opts__["cachedir"], RECORD_DIRECTORY, f"{on}-{int(port)}.json")


def _read_record(path):
    """``{"users": [names Salt created], "unsaved": bool}`` (nothing recorded yet: empty)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {"users": [], "unsaved": False}
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"the record of the ACL users Salt created, {path}, is unreadable "
                                    f"({type(exc).__name__}: {exc}): remove it once you know which users "
                                    "Salt created (Salt then deletes none of them)") from None
    if not isinstance(data, dict) or not isinstance(data.get("users"), list):
        raise CommandExecutionError(f"the record of the ACL users Salt created, {path}, is not Salt's: "
                                    "remove it (Salt then deletes none of the users)")
    return {"users": [str(name) for name in data["users"]], "unsaved": bool(data.get("unsaved"))}


def _write_record(path, users, unsaved):
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    text = json.dumps({"users": sorted(users), "unsaved": unsaved}, indent=2) + "\n"
    __utils__["redis_common.replace_file"](path, text, os.getuid(), os.getgid(), 0o600)


def present(name, sentinel=False):
    """
    Make the local Redis server (``sentinel: True``: the local Sentinel) hold exactly the
    application users of pillar ``redis:acl_users``, and persist them: ``CONFIG REWRITE`` (a
    server with an ``aclfile``: ``ACL SAVE``), a Sentinel's ``SENTINEL FLUSHCONFIG``.

    - Redis checks every user's rules first, under a temporary disabled name: a rule it refuses
      fails the state, naming the user and Redis's reason, and nothing changes.
    - A user is created or updated (``ACL SETUSER <name> reset on #<sha256> <rules>``) when
      Redis's ``ACL LIST`` line for it differs from the one Redis makes of the wanted rules.
    - A user Salt created here and the YAML no longer has is deleted.
    - On a Sentinel each user gets what a client needs to find the master
      (``redis_acl_users.SENTINEL_RULES``) instead of its data rules.

    With nothing wanted and nothing created before, nothing is asked of Redis.

    .. code-block:: yaml

        redis-application-users-on-this-server:
          redis_acl_users.present: []

        redis-application-users-on-this-sentinel:
          redis_acl_users.present:
            - sentinel: True
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    if not isinstance(sentinel, bool):
        raise SaltInvocationError(f"sentinel: expected true or false, got {sentinel!r}")
    settings = __pillar__.get("redis", {}) or {}
    if settings.get("error"):
        ret.update(result=False, comment=f"the Redis deployment's pillar failed: {settings['error']}; nothing changed")
        return ret
    on = "sentinel" if sentinel else "server"
    port = int(settings.get("sentinel_port", 26379) if sentinel else settings.get("port", 6379))
    where = f"the local {'Sentinel' if sentinel else 'Redis server'} (port {port})"
    try:
        users = _acl("wanted")(settings.get("acl_users") or [], on)
        path = _record_path(on, port)
        record = _read_record(path)
        if not users and not record["users"] and not record["unsaved"]:
            ret["comment"] = f"No application ACL users wanted on {where}, and none created by Salt there"
            return ret
        client = __utils__["redis_common.client"](settings, port)
        checked = _acl("check")(client, users)
    except (SaltInvocationError, CommandExecutionError) as exc:
        ret.update(result=False, comment=f"{exc}; nothing changed on {where}")
        return ret
    if checked["refused"]:
        refused = "; ".join(f"{user}: {reason}" for user, reason in sorted(checked["refused"].items()))
        ret.update(result=False,
                   comment=f"Redis refuses the rules of ACL user(s) {refused}; nothing changed on {where}")
        return ret
    todo = _acl("plan")(users, checked, record["users"])
    ret["changes"] = _acl("changes")(todo)
    if not ret["changes"] and not record["unsaved"]:
        if todo["record"] != sorted(record["users"]) and not __opts__["test"]:
            _write_record(path, todo["record"], unsaved=False)  # users deleted by hand: forgotten
        ret["comment"] = f"The application ACL users on {where} are as wanted ({', '.join(sorted(users)) or 'none'})"
        return ret
    if not ret["changes"]:
        ret["changes"] = {"saved": "the users a previous run changed"}
    if __opts__["test"]:
        ret.update(result=None, comment=f"ACL users on {where}, to do: {_acl('summary')(todo, done=False)}")
        return ret
    try:
        # The users about to be created are recorded first: a run cut short still knows them.
        _write_record(path, set(record["users"]) | set(todo["record"]), unsaved=True)
        _acl("apply")(client, users, todo)
    except (OSError, CommandExecutionError) as exc:
        ret.update(result=False, comment=f"{exc} on {where} (what went before changed live: the next run "
                                         "finishes and saves it)")
        return ret
    why = __utils__["redis_acl.persist"](client, on)
    _write_record(path, todo["record"], unsaved=bool(why))
    if why:
        ret.update(result=False, comment=f"ACL users on {where}: {_acl('summary')(todo)}, live only: {why} "
                                         "(the next run saves them again)")
    else:
        ret["comment"] = f"ACL users on {where}: {_acl('summary')(todo)}; saved in its own file"
    return ret
