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
import hashlib
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


PASSWORD_DIRECTIVES = ("requirepass", "masterauth")


def _is_hex(text):
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def _config_args(text):
    """The arguments of a Redis config line, unquoted as Redis reads them (sdssplitargs)."""
    args, i = [], 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        current, quote = "", text[i] if text[i] in "\"'" else None
        i += 1 if quote else 0
        while i < len(text):
            char = text[i]
            if quote == '"' and text[i : i + 2] == "\\x" and _is_hex(text[i + 2 : i + 4]):
                current += chr(int(text[i + 2 : i + 4], 16))
                i += 3
            elif quote == '"' and char == "\\" and i + 1 < len(text):
                i += 1
                current += {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}.get(text[i], text[i])
            elif quote == "'" and char == "\\" and text[i + 1 : i + 2] == "'":
                i += 1
                current += "'"
            elif char == quote or (not quote and char.isspace()):
                i += 1
                break
            else:
                current += char
            i += 1
        args.append(current)
    return args


def _quoted(value):
    """``value`` as one double-quoted Redis config argument."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _stale_password_line(directive, argument, password):
    """A password line Redis copied in (CONFIG REWRITE) that no longer holds the deployment's password.

    Redis applies ``user`` lines after the whole configuration, so a stale ``user default``
    would beat a new password wherever it stands.
    """
    if directive in PASSWORD_DIRECTIVES:
        return _config_args(argument) != [password]
    if directive == "user" and argument.split(None, 1)[:1] == ["default"]:
        digest = hashlib.sha256((password or "").encode()).hexdigest()
        return not password or f"#{digest}" not in argument.split()
    return False


def _stated(directive, value):
    """``directive value`` as CONFIG REWRITE writes it (one line per ``save`` pair), so that a
    later CONFIG REWRITE rewrites these lines in place instead of appending any."""
    if directive in PASSWORD_DIRECTIVES:
        return [f"{directive} {_quoted(value)}"]
    if directive == "save" and str(value).strip():
        pairs = str(value).split()
        return [f"save {pairs[i]} {pairs[i + 1]}" for i in range(0, len(pairs) - 1, 2)]
    return [f"{directive} {value}"]


def config_included(name, include, settings=None, user="redis", group="redis", mode="0640"):
    """
    Make sure the settings of the Salt-owned file ``include`` win in Redis's configuration
    file ``name`` (created when missing), without fighting Redis over its own lines.

    ``include`` must be the last directive that matters: no directive Salt manages may
    follow it. CONFIG REWRITE (Sentinel runs it on every failover) keeps lines in place
    and appends only directives the file lacks, so every managed directive is also
    stated in ``name`` before the include, with Salt's value (the include still wins
    when the two differ). After that a CONFIG REWRITE moves nothing, and a restart
    reads every managed setting from the include, once: Redis adds up ``save`` lines.
    Redis's own lines (``replicaof`` after a failover, other CONFIG REWRITE output, an
    operator's additions) are kept, except password lines (``requirepass``,
    ``masterauth``, ``user default``) that do not hold the deployment's password
    (pillar ``redis:password``). The file stays ``user:group`` with ``mode``.

    name
        Redis's main configuration file, e.g. ``/etc/redis/redis.conf``.
    include
        The Salt-managed file whose settings must win.
    settings
        The directives Salt manages (directive -> value), as written to ``include``.

    .. code-block:: yaml

        redis-main-config-includes-salt-settings:
          redis_cluster.config_included:
            - name: /etc/redis/redis.conf
            - include: /etc/redis/redis-salt.conf
            - settings: {port: 6379, maxclients: 10000}
    """
    ret = _ret(name)
    password = (__pillar__.get("redis") or {}).get("password")
    managed = dict(settings or {})
    if password:
        managed.update(requirepass=password, masterauth=password)
    exists = os.path.exists(name)
    if exists:
        with open(name, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    else:
        lines = MAIN_FILE_HEADER.splitlines()
    directives = list(_directives(lines))
    ours = [i for i, directive, arg in directives if directive == "include" and arg == include]
    stale = [i for i, directive, arg in directives if _stale_password_line(directive, arg, password)]
    after = [(i, d) for i, d, _ in directives if ours and i > ours[-1]]
    present = {directive for i, directive, _ in directives if i not in stale}
    unstated = [directive for directive in managed if directive not in present]

    include_wins = len(ours) == 1 and not any(directive in managed for _, directive in after)
    actions = []
    if not exists:
        actions.append("created")
    elif not include_wins:
        actions.append("include moved to the last line")
    if stale:
        actions.append(f"{len(stale)} stale password line(s) removed")
    if unstated:
        actions.append("stated before the include: " + ", ".join(unstated))
    if not actions:
        ret["comment"] = f"{name}: the settings of {include} win"
        return _ensure_owner_and_mode(ret, name, user, group, mode)

    # Where the include already wins it stays put, with what follows it (e.g. `user` lines).
    split = ours[0] if include_wins else len(lines)
    kept = [line for i, line in enumerate(lines[:split]) if i not in ours and i not in stale]
    tail = [line for i, line in enumerate(lines[split + 1 :], split + 1) if i not in stale]
    while kept and not kept[-1].strip():
        kept.pop()
    kept += [line for directive in unstated for line in _stated(directive, managed[directive])]
    ret["changes"] = {"include": include, "action": "; ".join(actions)}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"{name} would change: {'; '.join(actions)}"
        return ret
    os.makedirs(os.path.dirname(name), exist_ok=True)
    temporary = f"{name}.salt-tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(kept + [f"include {include}"] + tail) + "\n")
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
