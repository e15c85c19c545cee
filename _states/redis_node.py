"""
States that keep every Redis node's configuration in line with the deployment, in both
modes, without fighting Redis over what it decides on its own.

Redis rewrites its main configuration file (CONFIG REWRITE, ``replicaof`` after a
Sentinel failover). Salt therefore owns a separate file that the main file includes as
its last directive (:func:`config_included`), and brings the running server in line with
live CONFIG SET where Redis allows it, restarting only for the rest
(:func:`settings_applied`), and never a node of a formed deployment: a plain apply runs on
every node at once, so that restart is left to ``salt-run redis_deployment.rolling_restart``.
"""

import contextlib
import grp
import json
import logging
import os
import pwd
import stat

from salt.exceptions import CommandExecutionError

__virtualname__ = "redis_node"

log = logging.getLogger(__name__)

# How often config_included re-reads the main file when Redis rewrote it meanwhile.
WRITE_ATTEMPTS = 5
MAIN_FILE_HEADER = (
    "# Redis's own configuration file. Redis may rewrite it (CONFIG REWRITE, `replicaof`\n"
    "# after a Sentinel failover); Salt leaves those lines alone. Salt's settings live in\n"
    "# the file included on the last line, so they win over anything above it.\n"
)


def __virtual__():
    if "redis_node.config_diff" not in __salt__:
        return (False, "redis_node state: the redis_node execution module is not available")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


PASSWORD_DIRECTIVES = ("requirepass", "masterauth")


def _quoted(value):
    """``value`` as one double-quoted Redis config argument."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _stale_password_line(directive, argument, passwords):
    """A password line Redis copied in (CONFIG REWRITE) that holds none of the deployment's
    secrets (``passwords``: the password, and the previous one during a rotation).

    Redis applies ``user`` lines after the whole configuration, so a stale ``user default``
    would beat a new password wherever it stands. ``masterauth`` is Redis's to keep:
    ``logins_converged`` sets it live (the replication user's secret) and CONFIG REWRITE
    writes it.
    """
    if directive == "requirepass":
        return __utils__["redis_config.config_args"](argument)[:1] != passwords[:1]
    if directive == "user" and argument.split(None, 1)[:1] == ["default"]:
        hashes = {f"#{h}" for h in __utils__["redis_acl.digests"](passwords)}
        return not passwords[0] or not hashes & set(argument.split())
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


class _Unsafe(Exception):
    """The main file is something root must not read or change through its name."""


class _Snapshot:
    """What config_included read: the main file's bytes (None: the file did not exist)."""

    def __init__(self, content):
        self.content = content


def _pillar_failed(ret, error):
    ret.update(result=False, comment=f"the Redis deployment's pillar failed: {error}; nothing changed")
    return ret


def _open_main(name):
    """``(descriptor, stat)`` of Redis's main file, or ``(None, None)`` when it does not exist
    (``redis_config.open_file``: the directory is writable by the redis user, since CONFIG
    REWRITE needs that, so root opens only a regular file with one link, never a link)."""
    try:
        return __utils__["redis_config.open_file"](name)
    except OSError as exc:
        raise _Unsafe(exc.strerror) from None


def _read_descriptor(descriptor):
    chunks = []
    while True:
        chunk = os.read(descriptor, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _unchanged(name, snapshot):
    """The main file still holds what config_included read (or still does not exist)."""
    if snapshot.content is None:
        return not os.path.lexists(name)
    try:
        descriptor, _ = _open_main(name)
    except _Unsafe:
        return False
    if descriptor is None:
        return False
    try:
        return _read_descriptor(descriptor) == snapshot.content
    finally:
        os.close(descriptor)


def _replace(name, text, uid, gid, mode, snapshot):
    """Write ``text`` to a new file next to ``name`` and put it in place, unless the main file
    changed since it was read: returns False then, and the caller reads it again.

    The new file is written privately first (``redis_common.write_temporary``).
    """
    temporary = __utils__["redis_common.write_temporary"](name, text, uid, gid, mode)
    try:
        if not _unchanged(name, snapshot):
            return False
        if snapshot.content is None:
            try:
                os.link(temporary, name)  # never replaces a file that appeared meanwhile
            except FileExistsError:
                return False
        else:
            os.replace(temporary, name)  # rename(2): replaces the name, follows nothing
            temporary = None
        return True
    finally:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _plan(lines, include, managed, passwords, exists):
    """What config_included has to do to ``lines``: ``(actions, new lines)``."""
    directives = __utils__["redis_config.directives"](lines)
    ours = [i for i, directive, arg in directives if directive == "include" and arg == include]
    stale = [i for i, directive, arg in directives if _stale_password_line(directive, arg, passwords)]
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
    # Where the include already wins it stays put, with what follows it (e.g. `user` lines).
    split = ours[0] if include_wins else len(lines)
    kept = [line for i, line in enumerate(lines[:split]) if i not in ours and i not in stale]
    tail = [line for i, line in enumerate(lines[split + 1 :], split + 1) if i not in stale]
    while kept and not kept[-1].strip():
        kept.pop()
    kept += [line for directive in unstated for line in _stated(directive, managed[directive])]
    return actions, kept + [f"include {include}"] + tail


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
    operator's additions) are kept, except password lines (``requirepass``, ``user
    default``) that do not hold the deployment's password (pillar ``redis:password``; a
    ``user default`` line may hold ``redis:previous_password`` instead during a rotation).
    The file stays ``user:group`` with ``mode``.

    The directory of ``name`` is writable by the Redis user, so Salt never follows a
    link there: a symlink (or hard-linked file) at ``name`` fails the state and nothing
    changes. When Redis rewrites ``name`` while Salt prepares its version, Salt reads it
    again, so no line Redis wrote is lost.

    name
        Redis's main configuration file, e.g. ``/etc/redis/redis.conf``.
    include
        The Salt-managed file whose settings must win.
    settings
        The directives Salt manages (directive -> value), as written to ``include``.

    .. code-block:: yaml

        redis-main-config-includes-salt-settings:
          redis_node.config_included:
            - name: /etc/redis/redis.conf
            - include: /etc/redis-salt/redis-server.conf
            - settings: {port: 6379, maxclients: 10000}
    """
    ret = _ret(name)
    redis_pillar = __pillar__.get("redis") or {}
    if redis_pillar.get("error"):
        return _pillar_failed(ret, redis_pillar["error"])
    passwords = __utils__["redis_acl.secrets"](redis_pillar)
    managed = dict(settings or {})
    if passwords[0]:
        managed.update(requirepass=passwords[0])
    try:
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        ret.update(result=False, comment=f"{name}: no user {user!r} or no group {group!r} on this minion")
        return ret
    wanted_mode = int(str(mode), 8)

    for _attempt in range(WRITE_ATTEMPTS):
        try:
            descriptor, info = _open_main(name)
        except _Unsafe as exc:
            ret.update(result=False, changes={}, comment=str(exc))
            return ret
        try:
            snapshot = _Snapshot(None if descriptor is None else _read_descriptor(descriptor))
            if snapshot.content is None:
                lines = MAIN_FILE_HEADER.splitlines()
            else:
                lines = snapshot.content.decode("utf-8", "surrogateescape").splitlines()
            actions, new_lines = _plan(lines, include, managed, passwords, snapshot.content is not None)
            if not actions:
                ret["comment"] = f"{name}: the settings of {include} win"
                return _owner_and_mode(ret, name, descriptor, info, (uid, gid, user, group), wanted_mode)
        finally:
            if descriptor is not None:
                os.close(descriptor)

        ret["changes"] = {"include": include, "action": "; ".join(actions)}
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"{name} would change: {'; '.join(actions)}"
            return ret
        try:
            if snapshot.content is None:
                os.makedirs(os.path.dirname(name), exist_ok=True)
            if _replace(name, "\n".join(new_lines) + "\n", uid, gid, wanted_mode, snapshot):
                ret["comment"] = f"{name}: {'; '.join(actions)}"
                return ret
        except OSError as exc:
            ret.update(result=False, changes={}, comment=f"{name} cannot be written: {exc.strerror}")
            return ret
        # Redis (or someone) rewrote the file since we read it: start again from its new content.
    ret.update(
        result=False,
        changes={},
        comment=f"{name} changed while Salt rewrote it, {WRITE_ATTEMPTS} times: left as it is; apply again",
    )
    return ret


def _owner_and_mode(ret, name, descriptor, info, owner, wanted_mode):
    """CONFIG REWRITE may leave the file 0644 (or owned by whoever ran Redis): put back owner and
    mode, through the descriptor of the file that was checked, not through its name."""
    uid, gid, user, group = owner
    if (info.st_uid, info.st_gid) == (uid, gid) and stat.S_IMODE(info.st_mode) == wanted_mode:
        return ret
    ret["changes"] = {"mode": f"{wanted_mode:04o}", "owner": f"{user}:{group}"}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"{name} would get owner {user}:{group} and mode {wanted_mode:04o}"
        return ret
    try:
        os.fchown(descriptor, uid, gid)
        os.fchmod(descriptor, wanted_mode)
    except OSError as exc:
        ret.update(result=False, changes={}, comment=f"{name}: cannot set owner and mode: {exc.strerror}")
        return ret
    ret["comment"] = f"{name}: owner {user}:{group}, mode {wanted_mode:04o}"
    return ret


def _reason(failure, diff, port, socket_timeout):
    """Why the running server could not be compared, in words (no secret in Redis's errors)."""
    address = f"127.0.0.1:{port}"
    return {
        "refused": f"nothing listens on {address} ({diff['error']})",
        "auth": f"the server on {address} does not accept the deployment's password ({diff['error']})",
        "timeout": f"the server on {address} does not answer within {socket_timeout}s ({diff['error']})",
        "busy": f"the server on {address} is busy ({diff['error']})",
        "maxclients": f"the server on {address} has reached maxclients ({diff['error']})",
        "loading": f"the server on {address} is still loading its data",
    }.get(failure, f"the server on {address} cannot be compared ({diff['error']})")


def _changes(diff, settings):
    """``{directive: {"old", "new"}}`` for each differing directive; the password directives
    only say that they were set."""
    changes = {}
    for directive in diff["differs"]:
        if directive in PASSWORD_DIRECTIVES:
            changes[directive] = "set (value not shown)"
        else:
            changes[directive] = {"old": diff["running"].get(directive), "new": str(settings[directive])}
    return changes


# What a pending restart's comment tells the operator to run.
ROLLING_RESTART = "a formed deployment is restarted one node at a time: salt-run redis_deployment.rolling_restart"


def _nodes_file(settings):
    """Redis Cluster's nodes file where ``settings`` put it (None: the module's default)."""
    if not settings.get("dir"):
        return None
    return os.path.join(str(settings["dir"]), str(settings.get("cluster-config-file") or "nodes.conf"))


def _pending_record_path(port):
    """Where this minion notes the restart it last reported pending (Salt's cache: root's, not Redis's)."""
    cachedir = __opts__.get("cachedir") or "/var/cache/salt/minion"
    return os.path.join(cachedir, "redis_cluster", f"restart-pending-{port}.json")


def _pending_record(port, run_id):
    """``{directive: wanted}`` this minion last reported pending for the server process ``run_id``."""
    try:
        with open(_pending_record_path(port), encoding="utf-8") as handle:
            record = json.load(handle)
        return dict(record["pending"]) if run_id and record.get("run_id") == run_id else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _note_pending(port, run_id, wanted):
    """Record what was reported pending, so the next run reports it as no change. Only a note:
    a record that cannot be written makes the next run report the same pending restart again."""
    path = _pending_record_path(port)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        text = json.dumps({"run_id": run_id, "pending": wanted})
        os.replace(__utils__["redis_common.write_temporary"](path, text, os.getuid(), os.getgid(), 0o600), path)
    except OSError as exc:
        log.warning("cannot note the pending restart in %s: %s", path, exc.strerror)


def _journal_tail(service, lines=6):
    """``"; its journal: ..."``: the last lines the unit logged (Redis's own start-up errors,
    systemd's verdict), or ``""``."""
    found = __salt__["cmd.run_all"](
        ["journalctl", "--unit", f"{service}.service", "--lines", str(lines), "--no-pager", "--output", "cat"],
        python_shell=False, ignore_retcode=True, output_loglevel="quiet",
    )
    text = " | ".join(line.strip() for line in (found.get("stdout") or "").splitlines() if line.strip())
    return f"; its journal: {text}" if text else ""


def _password_not_rotated(ret, diff, member, port, socket_timeout, service):
    """The server refuses the deployment's password and belongs to a formed deployment."""
    sentinels = " and the Sentinels' login" if (__pillar__.get("redis") or {}).get("mode") == "sentinel" else ""
    ret.update(
        result=False,
        changes={},
        comment=(
            f"{_reason('auth', diff, port, socket_timeout)}: the deployment's password differs from the running "
            f"server's, and this node belongs to a formed deployment ({member['why']}). A plain apply restarts "
            f"every node at once, which would cut off every client{sentinels}: {service} not restarted, nothing "
            f"changed. To change the password, {__utils__['redis_acl.rotation_recipe']()}"
        ),
    )
    return ret


def password_accepted(name, port=None, settings=None, service="redis-server", socket_timeout=5, settings_file=None):
    """
    Before any file changes: the running server must accept the deployment's password, or
    the previous one during a two-phase rotation (pillar ``redis:previous_password``). A
    server of a formed deployment that refuses both fails the state with the two-phase
    recipe, so nothing else changes (not even Salt's settings file, which a later restart
    would read). A server that is down, or belongs to no formed deployment (a package's
    server on a bare host), passes: the first apply gives it the password. The comment says
    which phase of a rotation the deployment is in.

    With pillar ``redis:force_password_change`` the refused change is made instead, live and
    in one step (no restart): the state logs in with the password last accepted on this host
    (Salt's root-only record, or ``requirepass`` in ``settings_file``, Salt's settings file
    before this apply rewrites it) and says the downtime: clients still using the old
    password are refused from then on.

    ``settings`` (the managed directives) tells where Redis keeps its nodes file; ``service``
    is the server's unit, as the comment names it.

    .. code-block:: yaml

        redis-server-accepts-the-password:
          redis_node.password_accepted:
            - name: 127.0.0.1:6379
    """
    ret = _ret(name)
    redis_pillar = __pillar__.get("redis") or {}
    if redis_pillar.get("error"):
        return _pillar_failed(ret, redis_pillar["error"])
    port = port or redis_pillar.get("port", 6379)
    passwords = __utils__["redis_acl.secrets"](redis_pillar)
    answer = __salt__["redis_node.accepts_password"](port=port, timeout=socket_timeout)
    if answer is True:
        ret["comment"] = __utils__["redis_acl.phase"](passwords)
        return ret
    # Any directive makes the server answer (an empty comparison would not even log in).
    diff = __salt__["redis_node.config_diff"]({"port": port}, port=port, timeout=socket_timeout)
    if answer is None and diff["failure"] != "auth":
        ret["comment"] = ("nothing to check: " + (_reason(diff["failure"], diff, port, socket_timeout)
                                                  if not diff["reachable"] else "the server did not answer a PING"))
        return ret
    if diff["failure"] != "auth":
        # Refused the pillar's passwords, let in with the one a force_password_change replaces.
        diff = dict(diff, failure="auth", error="every password of the pillar refused")
    member = __salt__["redis_cluster.in_formed_deployment"](
        port=port, nodes_file=_nodes_file(settings or {}), timeout=socket_timeout
    )
    if member["formed"] and redis_pillar.get("force_password_change"):
        return _password_forced(ret, port, settings_file)
    if member["formed"]:
        return _password_not_rotated(ret, diff, member, port, socket_timeout, service)
    ret["comment"] = "the server refuses the password but belongs to no formed deployment: the apply sets it"
    return ret


def _password_forced(ret, port, settings_file):
    """``force_password_change`` on a formed deployment's server that refuses the password."""
    try:
        outcome = __salt__["redis_node.forced_password_change"](port=port, settings_file=settings_file,
                                                                dry_run=__opts__["test"])
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    return __utils__["redis_acl.forced_state_return"](ret, outcome, "server", __opts__["test"])


def logins_converged(name, port=None, wait=30):
    """
    The running server's own logins as the deployment wants them, live
    (``redis_node.logins``): ``default`` accepts the password (and the previous one during
    a rotation), the replication user ``salt-replication`` likewise, and the server logs in
    to its master as that user, with the new secret once the master accepts it. The comment
    says which phase of a rotation the node is in; no secret in the return.

    .. code-block:: yaml

        redis-server-logins:
          redis_node.logins_converged:
            - name: 127.0.0.1:6379
    """
    ret = _ret(name)
    redis_pillar = __pillar__.get("redis") or {}
    if redis_pillar.get("error"):
        return _pillar_failed(ret, redis_pillar["error"])
    try:
        outcome = __salt__["redis_node.logins"](dry_run=__opts__["test"], port=port, wait=wait)
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    return __utils__["redis_acl.logins_state_return"](ret, outcome, __opts__["test"])


def settings_applied(name, settings, service, timeout=30, socket_timeout=5):
    """
    Bring the running Redis server in line with ``settings`` (directive -> value): live
    with CONFIG SET where Redis allows it, by restarting ``service`` only when a
    directive that cannot change at run time differs, when nothing listens on the port,
    or when the server does not accept the deployment's password. The password (pillar
    ``redis:password``) is checked too; its value never appears in the state's return.

    A plain ``state.apply`` runs on every node at once, so on a node that belongs to a
    formed deployment (``redis_cluster.in_formed_deployment``: a cluster member that knows
    other nodes or serves slots, or one side of a replicating pair) it never restarts:

    - a differing start-only directive is left pending: the live-settable ones are
      applied, the state succeeds and its comment says which restart is pending and that
      ``salt-run redis_deployment.rolling_restart`` runs it (``redis_cluster.status``
      shows it as ``restart_pending`` until then). Changes list
      ``"restart_pending": [directives]`` only when something became pending that this
      minion had not reported yet for the same server process (noted in Salt's cache
      directory), so a second apply reports no changes, and the same warning;
    - a server that refuses the deployment's password fails the state: restarting every
      node at once with a new password would cut off every client (and the Sentinels).
      Which deployment such a server belongs to cannot be asked (no login), so its own
      records decide: in cluster mode Redis's nodes file (``dir``/``cluster-config-file``
      of ``settings``) listing another node or slots; in Sentinel mode a ``replicaof``
      line in Redis's main file, or a replica its Sentinel's file knows (see
      ``in_formed_deployment``). A server the package started without a password has
      none of these: it is restarted, as on a first apply.

    A server that is down, that belongs to no formed deployment, or whose differences are
    all live-settable is handled as before: started/restarted, or set live.

    A server that answers too slowly, is busy (a long script), has no free client slot
    (maxclients) or is still loading its data after ``timeout`` seconds is never
    restarted: the state fails, says why, and changes nothing.

    Changes: ``{directive: {"old": running, "new": wanted}}`` per differing directive
    (``requirepass``/``masterauth``: ``"set (value not shown)"``), plus
    ``"restarted": service`` and ``"reason"`` when the service was restarted, or
    ``"restart_pending"`` (above).

    name
        Any label, e.g. the server's address.
    settings
        The directives Salt owns, as written to the included configuration file.
    service
        The service to restart when a restart is needed.
    timeout
        Seconds to wait for a server that is loading its data, or restarting.
    socket_timeout
        Seconds to wait for an answer before judging the server unresponsive.

    .. code-block:: yaml

        redis-server-runs-the-managed-settings:
          redis_node.settings_applied:
            - settings: {maxmemory: 1073741824, maxclients: 10000}
            - service: redis-server
    """
    ret = _ret(name)
    redis_pillar = __pillar__.get("redis") or {}
    if redis_pillar.get("error"):
        return _pillar_failed(ret, redis_pillar["error"])
    # Clients use the TLS port when there is one; a plain port beside it (tls.plain_port) is
    # only for a migration. Before and after a switch, the server listens there in one protocol
    # or the other, and the local client speaks what it finds.
    port = settings.get("tls-port") or settings.get("port") or redis_pillar.get("port", 6379)
    nodes_file = _nodes_file(settings)
    # The password is in the settings file for a start; a running server gets it, with the
    # previous one during a rotation, from logins_converged (one MULTI, nobody refused).

    def compare():
        return __salt__["redis_node.config_diff"](settings, port=port, timeout=socket_timeout)

    diff = compare()
    if not __opts__["test"]:
        if diff["failure"] == "refused":
            # Just started, not listening yet? Refused for seconds: nothing listens where it should.
            __salt__["redis_node.wait_ready"](timeout=3, port=port)
            diff = compare()
        elif diff["loading"]:
            __salt__["redis_node.wait_ready"](timeout=timeout, port=port)
            diff = compare()
    if diff["reachable"] and not diff["differs"]:
        ret["comment"] = "the running server already uses every managed setting"
        return ret
    failure = "loading" if diff["loading"] else diff["failure"]
    if failure not in ("", "refused", "auth"):
        # Busy, slow or loading: a restart would cut it off mid-work. Say why, do nothing.
        waited = f" after {timeout}s" if failure == "loading" and not __opts__["test"] else ""
        why = _reason(failure, diff, port, socket_timeout)
        ret.update(result=False, comment=f"{why}{waited}: nothing applied, {service} not restarted")
        return ret

    switch = diff.get("tls_switch") if diff["reachable"] else None
    restart_for = __utils__["redis_config.start_only"](diff["differs"], switch) if diff["reachable"] else []
    restart = not diff["reachable"] or bool(restart_for)
    pending, run_id = [], None
    if restart and failure != "refused":
        # A down server is started whatever it belongs to; a running one of a formed
        # deployment is restarted one node at a time, never by a plain apply.
        member = __salt__["redis_cluster.in_formed_deployment"](
            port=port, nodes_file=nodes_file, timeout=socket_timeout
        )
        if member["formed"] and failure == "auth":
            return _password_not_rotated(ret, diff, member, port, socket_timeout, service)
        if member["formed"]:
            pending, run_id, restart = restart_for, member.get("run_id"), False
    live = [d for d in diff["differs"] if d not in pending] if diff["reachable"] else []
    reason = _reason(failure, diff, port, socket_timeout) if failure else "changed: " + ", ".join(restart_for)
    changes = _changes(diff, settings) if diff["reachable"] else {}
    wanted = {d: str(settings[d]) for d in pending}
    reported = _pending_record(port, run_id) if pending else {}
    note = f"restart pending for {', '.join(pending)} ({ROLLING_RESTART})" if pending else ""
    if restart:
        ret["changes"] = dict({"restarted": service, "reason": reason}, **changes)
    else:
        ret["changes"] = {d: changes[d] for d in live}
        if switch:
            ret["changes"]["protocol"] = __utils__["redis_common.protocol_change"](switch)
        if set(wanted.items()) - set(reported.items()):
            ret["changes"]["restart_pending"] = pending
    switching = ""
    if switch and not restart:
        switching = f"switch to {__utils__['redis_common.protocol_change'](switch)['new']} live (no restart)"
    if __opts__["test"]:
        ret["result"] = None if ret["changes"] else True
        ret["comment"] = (
            f"{service} would be restarted ({reason})"
            if restart
            else "; ".join(filter(None, [switching and "would " + switching,
                                         live and "would apply live: " + ", ".join(live), note]))
        )
        return ret

    if restart:
        try:
            restarted = __salt__["service.restart"](service)
        except CommandExecutionError as exc:
            restarted, reason = False, f"{reason}; {exc}"
        if restarted is False:
            # The unit's Restart= may start a server whose start failed once (for a passing
            # reason) again: wait for it before calling the restart failed. The journal says why.
            journal = _journal_tail(service)
            if not __salt__["redis_node.wait_ready"](timeout=timeout, port=port):
                ret.update(result=False, changes={},
                           comment=f"{service} could not be restarted (restart for: {reason}){journal}")
                return ret
            reason = f"{reason}; its first start failed and systemd started it again{journal}"
            ret["changes"]["reason"] = reason
        elif not __salt__["redis_node.wait_ready"](timeout=timeout, port=port):
            ret.update(result=False, comment=f"{service} restarted but does not answer within {timeout}s")
            return ret
    elif live:
        try:
            if switching:
                # One CONFIG SET for the switch; the other live settings after it, one by one.
                done = __salt__["redis_node.switch_tls"](switch, settings, port=port)["set"]
                live = [d for d in live if d not in done]
            outcome = __salt__["redis_node.config_set"]({d: settings[d] for d in live}, port=port)
        except CommandExecutionError as exc:
            ret.update(result=False, changes={}, comment=str(exc))
            return ret
        if outcome["refused"]:
            ret["result"] = False
            ret["changes"] = {d: change for d, change in changes.items() if d in outcome["applied"]}
            ret["comment"] = "Redis refused: " + "; ".join(f"{d}: {why}" for d, why in outcome["refused"].items())
            return ret

    still = compare()
    if not still["reachable"] or set(still["differs"]) - set(pending):
        ret["result"] = False
        ret["comment"] = "the running server still differs on: " + ", ".join(
            [d for d in still["differs"] if d not in pending]
            if still["reachable"]
            else [_reason(still["failure"], still, port, socket_timeout)]
        )
        return ret
    if pending and run_id and wanted != reported:
        _note_pending(port, run_id, wanted)
    ret["comment"] = (
        f"{service} restarted ({reason})"
        if restart
        else "; ".join(filter(None, [switching and "did " + switching, live and "applied live: " + ", ".join(live),
                                     note]))
    )
    return ret


# ---------------------------------------------------------------- monitoring


def tls_reloaded(name, port=None):
    """
    The running server serves the TLS files as they are now (``redis_node.reload_tls``):
    for ``onchanges`` of the key, certificate and CA files, so a renewed certificate is
    served without a restart.

    .. code-block:: yaml

        redis-server-serves-the-renewed-certificate:
          redis_node.tls_reloaded:
            - name: /etc/redis-salt/tls/redis.crt
            - onchanges:
              - file: redis-tls-cert-file
    """
    ret = _ret(name)
    try:
        outcome = __salt__["redis_node.reload_tls"](port=port, dry_run=__opts__["test"])
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    ret["comment"] = outcome["comment"]
    if outcome["reloaded"]:
        ret["changes"] = {"tls": "files loaded again"}
        if __opts__["test"]:
            ret["result"] = None
    return ret


def monitoring_user(name="salt-monitor", sentinel=False):
    """
    Make sure the local Redis server (``sentinel: True``: the local Sentinel) has the
    read-only monitoring ACL user that ``/usr/local/bin/redis_health`` and the Prometheus
    exporter log in as (``redis_node.monitoring_user``: what it may run; its password is
    derived from the deployment's, Redis keeps only its hash).

    .. code-block:: yaml

        redis-monitoring-login-on-this-server:
          redis_node.monitoring_user: []
    """
    ret = _ret(name)
    settings = __pillar__.get("redis", {}) or {}
    if settings.get("error"):
        return _pillar_failed(ret, settings["error"])
    try:
        outcome = __salt__["redis_node.monitoring_user"](dry_run=__opts__["test"], sentinel=sentinel)
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    return __utils__["redis_acl.state_return"](ret, name, outcome, __opts__["test"])


# What /usr/local/bin/redis_health reads besides its login: the deployment's facts that the
# read-only monitoring user cannot ask for.
HEALTH_SCRIPT_KEYS = ("mode", "role", "hostname", "bind_ip", "port", "sentinel_port", "master_name",
                      "replicas_per_master", "monitoring")
LOGIN_FORMATS = ("health_script", "exporter_environment")
MONITORING_USER = "salt-monitor"  # _utils/redis_acl.py says what it may run


def _login_text(settings, form, save):
    """A monitoring login file's text (it holds the monitoring user's password)."""
    password = __utils__["redis_acl.derived_password"](settings.get("password") or "", MONITORING_USER)
    if form == "exporter_environment":  # systemd's EnvironmentFile: the exporter reads REDIS_USER/REDIS_PASSWORD
        return f"REDIS_USER={MONITORING_USER}\nREDIS_PASSWORD={password}\n"
    data = {key: settings.get(key) for key in HEALTH_SCRIPT_KEYS}
    data.update(save=save, user=MONITORING_USER, password=password)
    if settings.get("tls"):
        # The script's user (nagios) reads the CA's certificate, never the host's key: it shows no
        # client certificate, which the servers allow (tls-auth-clients optional).
        data["tls"] = {"ca_file": settings["tls"]["ca_file"]}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def monitoring_login_file(name, form="health_script", group="root", save="", mode="0640"):
    """
    Write a file holding the monitoring user's login, owned by root and readable by
    ``group`` only, written privately and renamed into place; nothing in this state's
    arguments, return or log holds the password.

    form
        ``health_script``: the settings of ``/usr/local/bin/redis_health`` (JSON: the login,
        the node's role and addresses, the thresholds), readable by the monitoring group
        (Nagios's NRPE user joins it). ``exporter_environment``: the Prometheus exporter's
        systemd ``EnvironmentFile`` (``REDIS_USER``, ``REDIS_PASSWORD``), root's only: systemd
        reads it before the exporter drops to its own user.
    save
        The server's ``save`` schedule (map.jinja's ``save``): the monitoring user may not
        ``CONFIG GET`` it, and the script's unsaved-changes check needs it.

    .. code-block:: yaml

        redis-health-script-settings:
          redis_node.monitoring_login_file:
            - name: /etc/redis-monitoring/redis_health.json
            - group: redis-monitoring
    """
    ret = _ret(name)
    settings = __pillar__.get("redis", {}) or {}
    if settings.get("error"):
        return _pillar_failed(ret, settings["error"])
    if form not in LOGIN_FORMATS:
        ret.update(result=False, comment=f"form must be one of {', '.join(LOGIN_FORMATS)}, not {form!r}")
        return ret
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        if not __opts__["test"]:
            ret.update(result=False, comment=f"group {group} does not exist")
            return ret
        gid = None
    wanted_mode = int(str(mode), 8)
    text = _login_text(settings, form, save)
    try:
        info = os.lstat(name)
    except FileNotFoundError:
        info = None
    current = None
    if info is not None and stat.S_ISREG(info.st_mode):
        with contextlib.suppress(OSError), open(name, "rb") as handle:
            current = handle.read().decode("utf-8", "replace")
    if current == text and (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, gid, wanted_mode):
        ret["comment"] = f"{name} is as wanted"
        return ret
    what = "created" if info is None else ("updated" if current != text else "owner or mode set")
    ret["changes"] = {"file": {"name": name, "what": what, "owner": f"root:{group}", "mode": str(mode)}}
    if __opts__["test"]:
        ret.update(result=None, comment=f"{name} would be {what}")
        return ret
    try:
        os.makedirs(os.path.dirname(name), mode=0o755, exist_ok=True)
        __utils__["redis_common.replace_file"](name, text, 0, gid, wanted_mode)
    except OSError as exc:
        ret.update(result=False, changes={}, comment=f"{name}: {exc.strerror}")
        return ret
    ret["comment"] = f"{name} {what}"
    return ret
