"""
States that keep a Redis node's configuration in line with the deployment without
fighting Redis over what it decides on its own.

Redis rewrites its main configuration file (CONFIG REWRITE, ``replicaof`` after a
Sentinel failover). Salt therefore owns a separate file that the main file includes as
its last directive (:func:`config_included`), and brings the running server in line with
live CONFIG SET where Redis allows it, restarting only for the rest
(:func:`settings_applied`).
"""

import grp
import os
import pwd

__virtualname__ = "redis_cluster"

# Directives Redis cannot change at run time (or that we refuse to change live).
RESTART_DIRECTIVES = frozenset(
    ("daemonize", "pidfile", "logfile", "dir", "cluster-enabled", "cluster-config-file", "port", "bind")
)
MAIN_FILE_HEADER = (
    "# Redis's own configuration file. Redis may rewrite it (CONFIG REWRITE, `replicaof`\n"
    "# after a Sentinel failover); Salt leaves those lines alone. Salt's settings live in\n"
    "# the file included on the last line, so they win over anything above it.\n"
)


def __virtual__():
    if "redis_cluster.config_diff" not in __salt__:
        return (False, "redis_cluster state: the redis_cluster execution module is not available")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _directives(lines):
    """(line index, directive, arguments) for every non-comment line of a Redis config."""
    for index, line in enumerate(lines):
        words = line.split(None, 1)
        if words and not words[0].startswith("#"):
            yield index, words[0].lower(), words[1].strip() if len(words) > 1 else ""


def _owned_by_salt(directive, argument):
    """Lines Redis copies into its own file that would beat or leak Salt's password.

    CONFIG REWRITE (Sentinel runs it on every failover) appends ``requirepass``,
    ``masterauth`` and ``user default ... #<hash>``; Redis applies ``user`` lines after
    the whole configuration, so a stale one would override a new password.
    """
    return directive in ("requirepass", "masterauth") or (
        directive == "user" and argument.split(None, 1)[:1] == ["default"]
    )


def config_included(name, include, user="redis", group="redis", mode="0640"):
    """
    Make sure the Redis configuration file ``name`` includes ``include`` as its last
    directive, creating ``name`` when it does not exist. Redis's own lines (``replicaof``
    after a failover, other CONFIG REWRITE output, an operator's additions) are kept,
    except the password lines Salt owns (``requirepass``, ``masterauth``,
    ``user default``). The file stays ``user:group`` with ``mode``.

    name
        Redis's main configuration file, e.g. ``/etc/redis/redis.conf``.
    include
        The Salt-managed file whose settings must win.

    .. code-block:: yaml

        redis-main-config-includes-salt-settings:
          redis_cluster.config_included:
            - name: /etc/redis/redis.conf
            - include: /etc/redis/redis-salt.conf
    """
    ret = _ret(name)
    exists = os.path.exists(name)
    if exists:
        with open(name, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    else:
        lines = MAIN_FILE_HEADER.splitlines()
    directives = list(_directives(lines))
    ours = [i for i, directive, arg in directives if directive == "include" and arg == include]
    dropped = [i for i, directive, arg in directives if _owned_by_salt(directive, arg)]
    include_last = len(ours) == 1 and ours[0] == directives[-1][0]

    actions = []
    if not exists:
        actions.append("created")
    elif not include_last:
        actions.append("include moved to the last line")
    if dropped:
        actions.append(f"{len(dropped)} password line(s) written by Redis removed")
    if not actions:
        ret["comment"] = f"{name} includes {include} last"
        return _ensure_owner_and_mode(ret, name, user, group, mode)

    kept = [line for i, line in enumerate(lines) if i not in ours and i not in dropped]
    while kept and not kept[-1].strip():
        kept.pop()
    ret["changes"] = {"include": include, "action": "; ".join(actions)}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"{name} would change: {'; '.join(actions)}"
        return ret
    os.makedirs(os.path.dirname(name), exist_ok=True)
    temporary = f"{name}.salt-tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(kept + [f"include {include}"]) + "\n")
    __salt__["file.chown"](temporary, user, group)
    os.chmod(temporary, int(str(mode), 8))
    os.replace(temporary, name)
    ret["comment"] = f"{name}: {'; '.join(actions)}"
    return ret


def _ensure_owner_and_mode(ret, name, user, group, mode):
    """CONFIG REWRITE may leave the file 0644: put back owner and mode."""
    wanted_mode = int(str(mode), 8)
    stat = os.stat(name)
    current = (pwd.getpwuid(stat.st_uid).pw_name, grp.getgrgid(stat.st_gid).gr_name)
    if current == (user, group) and stat.st_mode & 0o7777 == wanted_mode:
        return ret
    ret["changes"] = {"mode": f"{wanted_mode:04o}", "owner": f"{user}:{group}"}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"{name} would get owner {user}:{group} and mode {wanted_mode:04o}"
        return ret
    __salt__["file.chown"](name, user, group)
    os.chmod(name, wanted_mode)
    ret["comment"] = f"{name}: owner {user}:{group}, mode {wanted_mode:04o}"
    return ret


def settings_applied(name, settings, service, timeout=30):
    """
    Bring the running Redis server in line with ``settings`` (directive -> value): live
    with CONFIG SET where Redis allows it, by restarting ``service`` only when a
    directive that cannot change at run time differs (or the server does not accept the
    deployment's password). The password (pillar ``redis:password``) is checked too;
    no value appears in the state's return, only directive names.

    name
        Any label, e.g. the server's address.
    settings
        The directives Salt owns, as written to the included configuration file.
    service
        The service to restart when a restart is needed.

    .. code-block:: yaml

        redis-server-runs-the-managed-settings:
          redis_cluster.settings_applied:
            - settings: {maxmemory: 1073741824, maxclients: 10000}
            - service: redis-server
    """
    ret = _ret(name)
    port = settings.get("port")
    password = (__pillar__.get("redis") or {}).get("password")
    if password:
        # Compared and set like the rest, but taken from pillar, never from arguments.
        settings = dict(settings, requirepass=password, masterauth=password)
    diff = __salt__["redis_cluster.config_diff"](settings, port=port)
    if not diff["reachable"] and not diff["auth_failed"] and not __opts__["test"]:
        # Just started (not listening yet) or loading its data: give it a moment before
        # judging. Refused for seconds means it does not listen where it should: restart.
        __salt__["redis_cluster.wait_ready"](timeout=timeout if diff["loading"] else 3, port=port)
        diff = __salt__["redis_cluster.config_diff"](settings, port=port)
    if diff["reachable"] and not diff["differs"]:
        ret["comment"] = "the running server already uses every managed setting"
        return ret

    restart_for = sorted(set(diff["differs"]) & RESTART_DIRECTIVES) if diff["reachable"] else []
    restart = not diff["reachable"] or bool(restart_for)
    reason = diff["error"] if not diff["reachable"] else "changed: " + ", ".join(restart_for)
    if restart:
        ret["changes"] = {"restarted": service, "reason": reason}
    else:
        ret["changes"] = {"config_set": diff["differs"]}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = (
            f"{service} would be restarted ({reason})"
            if restart
            else ("would apply live: " + ", ".join(diff["differs"]))
        )
        return ret

    if restart:
        __salt__["service.restart"](service)
        if not __salt__["redis_cluster.wait_ready"](timeout=timeout, port=port):
            ret.update(result=False, comment=f"{service} restarted but does not answer within {timeout}s")
            return ret
    else:
        outcome = __salt__["redis_cluster.config_set"]({d: settings[d] for d in diff["differs"]}, port=port)
        if outcome["refused"]:
            ret["result"] = False
            ret["changes"] = {"config_set": outcome["applied"]} if outcome["applied"] else {}
            ret["comment"] = "Redis refused: " + "; ".join(f"{d}: {why}" for d, why in outcome["refused"].items())
            return ret

    still = __salt__["redis_cluster.config_diff"](settings, port=port)
    if not still["reachable"] or still["differs"]:
        ret["result"] = False
        ret["comment"] = "the running server still differs on: " + ", ".join(still["differs"] or ["(unreachable)"])
        return ret
    ret["comment"] = f"{service} restarted ({reason})" if restart else "applied live: " + ", ".join(diff["differs"])
    return ret
