"""
States for a Redis master/replica pair watched by Sentinels (pillar ``redis:mode`` =
``sentinel``), that never fight Sentinel over what it decided:

- :func:`not_retired`: a host ``replace_hosts`` retired is refused while the YAML lists it;
- :func:`sentinel_user`: the ACL user the Sentinels log in as, on each Redis server;
- :func:`replicating`: this node follows the *live* master (``REPLICAOF`` + ``CONFIG
  REWRITE``, persisted by Redis in its own file, never in Salt's), so a failover is never
  reverted;
- :func:`monitored`: the Sentinel's configuration file, written once and then left to
  Sentinel; later changes go to the running Sentinel (``SENTINEL SET``), and stale peers
  are forgotten (``SENTINEL RESET``).

The password (pillar ``redis:password``) never appears in a return, a log line or a
command line.
"""

import contextlib
import errno
import grp
import os
import pwd
import stat

from salt.exceptions import CommandExecutionError

__virtualname__ = "redis_sentinel"

# A comment line that marks a Sentinel file as ours. Sentinel's own config rewrite keeps
# comment lines, so the marker survives every failover.
MARKER = "# Managed by Salt: redis_sentinel.monitored (redis formula)"
BACKUP_SUFFIX = ".dpkg-salt-orig"
SERVER_ROLES = ("master", "replica")
SENTINEL_ROLES = ("master", "replica", "sentinel-only")


def __virtual__():
    if "redis_sentinel.live_master" not in __salt__:
        return (False, "redis_sentinel state: the redis_sentinel execution module is not available")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _pillar():
    return __pillar__.get("redis") or {}


def _refused(ret, settings, need_server):
    """A reason not to act (pillar failed, wrong mode, no Redis server here), or None."""
    if settings.get("error"):
        ret.update(result=False, comment=f"the Redis deployment's pillar failed: {settings['error']}; nothing changed")
        return ret
    if settings.get("mode") != "sentinel":
        ret["comment"] = f"not a Sentinel deployment (mode {settings.get('mode', 'none')}): nothing to do"
        return ret
    if settings.get("role") not in (SERVER_ROLES if need_server else SENTINEL_ROLES):
        what = "Redis server" if need_server else "Sentinel"
        ret["comment"] = f"this minion runs no {what} of the deployment (role {settings.get('role', 'none')})"
        return ret
    return None


# ---------------------------------------------------------------- not_retired


def not_retired(name):
    """
    Refuse, changing nothing, a host that ``salt-run redis_deployment.replace_hosts`` took
    out of the Sentinel pair (``redis_node.retire`` left its record) while the YAML still
    lists it: starting its Redis server or Sentinel again would bring a stale copy and a
    stale Sentinel back into the pair. The comment says to remove it from the YAML (or how
    to bring it back as a new host). Other hosts: nothing to do.

    .. code-block:: yaml

        redis-sentinel-host-not-retired:
          redis_sentinel.not_retired:
            - name: mymaster
    """
    ret, settings = _ret(name), _pillar()
    if _refused(ret, settings, need_server=False):
        return ret
    record = __salt__["redis_node.retired"]() if "redis_node.retired" in __salt__ else None
    if not record:
        ret["comment"] = "this host was not retired from the deployment"
        return ret
    ret.update(result=False, comment=(
        f"this host was taken out of the deployment by {record.get('by')} at {record.get('at')} and its Redis server "
        f"and Sentinel stopped: remove it from {settings.get('deployment_file') or 'the YAML'} (or set "
        f"services.redis: false, or drop it from cache.redis.sentinel.witnesses). To bring it back as a new host, "
        f"delete {record.get('path')} and apply again"))
    return ret


# ---------------------------------------------------------------- logins_converged


def logins_converged(name):
    """
    The local Sentinel's own logins as the deployment wants them, live
    (``redis_sentinel.sentinel_logins``): clients log in with the password (and the previous
    one during a two-phase rotation), the other Sentinels as ``salt-sentinel``, and this
    Sentinel logs in to them with the new secret once they accept it. No restart, no
    secret in the return.

    .. code-block:: yaml

        redis-sentinel-logins:
          redis_sentinel.logins_converged:
            - name: mymaster
    """
    ret = _ret(name)
    refused = _refused(ret, _pillar(), need_server=False)
    if refused:
        return refused
    try:
        outcome = __salt__["redis_sentinel.sentinel_logins"](dry_run=__opts__["test"])
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    return __utils__["redis_acl.logins_state_return"](ret, outcome, __opts__["test"])


# ---------------------------------------------------------------- password_accepted


def password_accepted(name, config_file="/etc/redis/sentinel.conf"):
    """
    Before the Sentinel is configured: a Sentinel Salt has taken over (its file in
    ``config_file`` carries Salt's marker) must accept the deployment's password, or the
    previous one during a two-phase rotation. One that refuses both fails the state with the
    two-phase recipe, nothing changed; with pillar ``redis:force_password_change`` the change
    is made instead, live and in one step (``redis_sentinel.forced_password_change``), and the
    comment says the downtime. A Sentinel not answering, or not taken over yet (a package's
    Sentinel on a bare host), passes: the takeover gives it the password.

    .. code-block:: yaml

        redis-sentinel-accepts-the-password:
          redis_sentinel.password_accepted:
            - name: mymaster
            - config_file: /etc/redis/sentinel.conf
    """
    ret = _ret(name)
    settings = _pillar()
    refused = _refused(ret, settings, need_server=False)
    if refused:
        return refused
    passwords = __utils__["redis_acl.secrets"](settings)
    answer = __salt__["redis_sentinel.accepts_password"]()
    if answer is not False:
        ret["comment"] = (__utils__["redis_acl.phase"](passwords) if answer
                          else "nothing to check: the local Sentinel does not answer")
        return ret
    try:
        content, _ = _read(config_file)
    except _Unsafe as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    if content is None or MARKER not in content.splitlines():
        ret["comment"] = "the local Sentinel refuses the password but Salt has not taken it over yet: the apply does"
        return ret
    if not settings.get("force_password_change"):
        ret.update(result=False, comment=(
            "the local Sentinel refuses the deployment's password: it differs from the one in use, nothing changed. "
            f"To change the password, {__utils__['redis_acl.rotation_recipe']()}"
        ))
        return ret
    try:
        outcome = __salt__["redis_sentinel.forced_password_change"](config_file=config_file,
                                                                    dry_run=__opts__["test"])
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    return __utils__["redis_acl.forced_state_return"](ret, outcome, "Sentinel", __opts__["test"])


# ---------------------------------------------------------------- sentinel_user


def sentinel_user(name="salt-sentinel"):
    """
    Make sure the local Redis server has the ACL user the Sentinels log in as: its
    password is derived from the deployment's (hex, so that Sentinel can persist it: Redis
    7.0's Sentinel writes ``sentinel auth-pass`` unquoted), it may run only what Sentinel
    sends, and Redis persists it in its own file (``CONFIG REWRITE``). ACL users are not
    replicated, so every Redis server of the pair needs this state.

    name
        The ACL user (keep the default: the Sentinels are configured with it).

    .. code-block:: yaml

        redis-sentinel-acl-user:
          redis_sentinel.sentinel_user: []
    """
    ret = _ret(name)
    refused = _refused(ret, _pillar(), need_server=True)
    if refused:
        return refused
    try:
        outcome = __salt__["redis_sentinel.sentinel_user"](user=name, dry_run=__opts__["test"])
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    return __utils__["redis_acl.state_return"](ret, name, outcome, __opts__["test"])


# ---------------------------------------------------------------- replicating


def _describe(view):
    if view["role"] == "master":
        return f"master ({view['connected_replicas']} replicas connected)"
    return f"replica of {view['master']}"


def _holds_data(view):
    return bool(view.get("keys") or view.get("connected_replicas"))


def replicating(name, timeout=30):
    """
    Make this node's Redis server follow the deployment's live master, as
    ``redis_sentinel.live_master`` finds it: the Sentinels' latest decision (highest config
    epoch) once a majority of all the deployment's Sentinels name it; on bare hosts (no
    Sentinel monitors the name yet) the servers' roles, then the pillar's initial master.
    Never restarts Redis, never writes Salt's files, and never undoes a failover:

    - this node is the live master, or replicates it already: nothing to do;
    - the Sentinels have not decided (a failover still spreading, a stale or unreachable
      Sentinel): waits for them, bounded; then a master or replica holding data is left as
      it is and the state says why (result True when this node is, or replicates, the
      master their latest decision names); only an empty master (nothing to lose: on the
      first apply the other Sentinels are not set up yet) follows that latest decision;
    - this node is a master that holds keys or has replicas while the Sentinels name
      another: Salt never demotes it (its keys would be replaced by a copy of the other).
      The Sentinels convert a returning old master themselves; this waits for that,
      bounded, and fails if it has not happened;
    - otherwise (a bare host, an empty node, a replica of a stale address): ``REPLICAOF ip
      port`` then ``CONFIG REWRITE`` (Redis keeps it in its own file), and a bounded wait
      for the link.

    With test=True it says what it would do and changes nothing.

    name
        Any label.
    timeout
        Seconds to wait for the Sentinels to decide or convert this node, and for the
        replication link after a change.

    .. code-block:: yaml

        redis-follows-the-live-master:
          redis_sentinel.replicating:
            - name: mymaster
    """
    ret = _ret(name)
    settings = _pillar()
    refused = _refused(ret, settings, need_server=True)
    if refused:
        return refused
    me = settings.get("hostname")
    local = __salt__["redis_sentinel.local_role"]()
    if not local["reachable"]:
        ret.update(result=False, comment=f"the local Redis server does not answer: {local['error']}")
        return ret
    live = __salt__["redis_sentinel.live_master"](settle=0 if __opts__["test"] else timeout)
    decided = bool(live["master"])
    if not decided and live.get("candidate"):
        # Undecided: the Sentinels' latest decision is all there is. Only an empty node may
        # act on it (nothing to lose: on the first apply the other Sentinels are not set up yet).
        ip, port = live["candidate_address"].rsplit(":", 1)
        live = dict(live, master=live["candidate"], address=live["candidate_address"], ip=ip, port=int(port))
    if not live["master"]:
        ret.update(result=False, comment=f"no live master: {live['comment']}; nothing changed")
        return ret
    why = f"({live['comment']})"
    if live["master"] == me:
        if local["role"] == "master":
            named = "the live master" if decided else "the master the Sentinels' latest decision names"
            ret["comment"] = f"this node is {named}, {_describe(local)} {why}"
        else:
            ret["comment"] = (f"the Sentinels name this node the master but it is a {_describe(local)}: a failover "
                              f"is in progress, left to Sentinel {why}")
        return ret
    if local["role"] == "replica" and local["master"] == live["address"]:
        link = local.get("link")
        named = "the live master" if decided else "the master the Sentinels' latest decision names,"
        ret["comment"] = f"replicates {named} {live['master']} ({live['address']}), link {link} {why}"
        return ret
    if local["role"] == "master" and _holds_data(local) and live.get("monitored"):
        if not decided:
            ret.update(result=False, comment=(
                f"this node is a master ({local['keys']} keys, {local['connected_replicas']} replicas connected) "
                f"and the Sentinels have not decided: nothing changed {why}"))
            return ret
        return _left_to_the_sentinels(ret, local, live, timeout, why)
    if not decided and local["role"] == "replica":
        ret.update(result=False, comment=f"this node is a {_describe(local)} and the Sentinels have not decided: "
                   f"nothing changed {why}")
        return ret
    ret["changes"] = {"replicaof": {"old": _describe(local), "new": f"replica of {live['master']} ({live['address']})"}}
    if __opts__["test"]:
        ret.update(result=None, comment=f"would REPLICAOF {live['address']} ({live['master']}) and CONFIG REWRITE "
                   f"{why}")
        return ret
    try:
        outcome = __salt__["redis_sentinel.replicate"](live["ip"], live["port"], timeout=timeout)
    except CommandExecutionError as exc:
        ret.update(result=False, changes={}, comment=str(exc))
        return ret
    ret["comment"] = f"{outcome['comment']} {why}"
    if not outcome["persisted"] or (outcome["link"] != "up" and not outcome["sync_in_progress"]):
        ret["result"] = False
    return ret


def _left_to_the_sentinels(ret, local, live, timeout, why):
    """A master holding data that the Sentinels no longer name: wait, bounded, until they
    convert it into a replica of the live master; never REPLICAOF it."""
    held = f"{local['keys']} keys, {local['connected_replicas']} replicas connected"
    if __opts__["test"]:
        ret.update(result=None, comment=(
            f"this node is a master ({held}) but the Sentinels name {live['master']} ({live['address']}): Salt "
            f"would wait for the Sentinels to convert it, never REPLICAOF it {why}"))
        return ret
    view = __salt__["redis_sentinel.wait_replica_of"](live["address"], timeout=timeout)
    if view.get("role") == "replica" and view.get("master") == live["address"]:
        ret["comment"] = (f"the Sentinels converted this old master ({held}) into a replica of {live['master']} "
                          f"({live['address']}), link {view.get('link')}: Salt waited, it never demotes a master "
                          f"that holds data {why}")
        return ret
    ret.update(result=False, comment=(
        f"this node is still a master ({held}) {timeout}s after the Sentinels named {live['master']} "
        f"({live['address']}); nothing changed: Salt never demotes a master that holds data while Sentinels watch "
        f"the pair (its keys would be replaced by a copy of {live['master']}'s). The Sentinels convert a returning "
        f"old master themselves: check that they reach this node (salt-call redis_sentinel.status). If this node's "
        f"data is not needed, `REPLICAOF {live['ip']} {live['port']}` on it by hand {why}"))
    return ret


# ---------------------------------------------------------------- monitored: the file


def _read(path):
    """``(text, stat)`` of ``path``, never through a link (``redis_config.read_file``)."""
    try:
        return __utils__["redis_config.read_file"](path)
    except OSError as exc:
        raise _Unsafe(exc.strerror) from None


class _Unsafe(Exception):
    """The Sentinel file is something root must not read or replace through its name."""


def _write(path, text, uid, gid, mode):
    """Put ``text`` at ``path`` through a private new file (``redis_common.write_temporary``),
    then rename(2): nothing planted is followed."""
    temporary = __utils__["redis_common.write_temporary"](path, text, uid, gid, mode)
    try:
        os.replace(temporary, path)
        temporary = None
    finally:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _restrict_mode(path, mode):
    """chmod through a descriptor of the regular file itself (never through a link)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.fchmod(descriptor, mode)
    finally:
        os.close(descriptor)


def _keep_copy(path, text, info, mode):
    """The package's file, kept once next to it (never overwritten, never through a link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, mode)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(text.encode("utf-8", "surrogateescape"))
        os.fchown(handle.fileno(), info.st_uid, info.st_gid)
        os.fchmod(handle.fileno(), mode)
    return True


def _quoted(value):
    """``value`` as one double-quoted Redis config argument (sdssplitargs reads it back)."""
    out = []
    for char in str(value):
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _speaks_tls(content):
    """Whether the Sentinel file ``content`` gives the Sentinel a TLS port."""
    lines = content.splitlines()
    return any(directive == "tls-port" and argument.strip() not in ("", "0")
               for _, directive, argument in __utils__["redis_config.directives"](lines))


# The lines of a Sentinel file that say which protocol it speaks, to clients, to the Redis
# servers and to the other Sentinels.
PROTOCOL_DIRECTIVES = frozenset(("port", "tls-port", "tls-cert-file", "tls-key-file", "tls-ca-cert-file",
                                 "tls-auth-clients", "tls-replication"))


def _protocol_lines(settings):
    """The Sentinel file's lines for the protocol of pillar ``redis`` (``settings``): with TLS,
    TLS only, to clients, to the Redis servers and to the other Sentinels
    (tls-replication), its own certificate being its client certificate too."""
    port = int(settings.get("sentinel_port", 26379))
    tls = settings.get("tls") or {}
    if not tls:
        return [f"port {port}"]
    return [
        "port 0",
        f"tls-port {port}",
        f"tls-cert-file {_quoted(tls['cert_file'])}",
        f"tls-key-file {_quoted(tls['key_file'])}",
        f"tls-ca-cert-file {_quoted(tls['ca_file'])}",
        "tls-auth-clients optional",
        "tls-replication yes",
    ]


def _with_protocol(content, settings):
    """The Sentinel file ``content`` with its protocol lines replaced by those of ``settings``
    (where the first of them was), everything Sentinel wrote left as it is."""
    lines = content.splitlines()
    found = {index for index, directive, _ in __utils__["redis_config.directives"](lines)
             if directive in PROTOCOL_DIRECTIVES}
    at = min(found) if found else len(lines)
    kept = [line for index, line in enumerate(lines) if index not in found]
    at -= sum(1 for index in found if index < at)
    return "\n".join(kept[:at] + _protocol_lines(settings) + kept[at:]) + "\n"


def _render(name, live, settings, quorum, paths, backup):
    """The Sentinel file Salt writes once. The login to the Redis servers (ACL user and
    derived password) is not in it: ``sentinel_configure`` sets it at run time right after
    the restart, and Sentinel persists it here itself."""
    sentinel = settings.get("sentinel") or {}
    bind_ip = settings.get("bind_ip") or "127.0.0.1"
    bind = " ".join(dict.fromkeys([bind_ip, "127.0.0.1"]))
    lines = [
        MARKER,
        "# Written once by Salt when it took this file over; from then on Sentinel owns it (it",
        "# rewrites it on every change and failover) and Salt changes the running Sentinel with",
        "# SENTINEL SET / RESET, never this file, but for its protocol lines when the deployment",
        "# switches between plain TCP and TLS (with Sentinel stopped). The package's file was",
        f"# kept as {backup} (if there was one).",
        *_protocol_lines(settings),
    ]
    lines += [
        f"bind {bind}",
        f"daemonize {'yes' if paths['daemonize'] else 'no'}",
    ]
    if paths["pidfile"]:
        lines.append(f"pidfile {_quoted(paths['pidfile'])}")
    lines += [
        f"logfile {_quoted(paths['logfile'])}",
        f"dir {_quoted(paths['dir'])}",
        # Sentinel requires the deployment's password from clients, and uses it to log in to
        # the other Sentinels. Sentinel keeps this line as written (quoted).
        f"requirepass {_quoted(settings.get('password') or '')}",
        # The other Sentinels know this one by the address in its hello messages: the
        # deployment's address for this host, not whatever source address the kernel picks.
        f"sentinel announce-ip {bind_ip}",
        f"sentinel monitor {name} {live['ip']} {int(live['port'])} {int(quorum)}",
        f"sentinel down-after-milliseconds {name} {int(sentinel.get('down_after_ms', 5000))}",
        f"sentinel failover-timeout {name} {int(sentinel.get('failover_timeout_ms', 60000))}",
        f"sentinel parallel-syncs {name} 1",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- monitored


def _switch_protocol(ret, name, settings, config_file, service, owner, wanted_mode, timeout):
    """Switch the local Sentinel to the pillar's protocol (plain TCP or TLS): once the Redis
    servers speak it and the other Sentinels can spare this one
    (``redis_sentinel.protocol_switch_refused``), stop it, rewrite the protocol lines of its
    file (stopped, it cannot rewrite the file over ours), start it. Returns the comment, or
    None after filling ``ret`` with a failure."""
    to = "tls" if settings.get("tls") else "plain"
    change = __utils__["redis_common.protocol_change"](to)
    ret["changes"] = {"protocol": change, "restarted": service}
    speaking = change["new"]
    if __opts__["test"]:
        ret["result"] = None
        return f"would restart {service} speaking {speaking} (one Sentinel at a time, once the servers speak it)"
    # The Sentinels go one after the other, each after the servers: longer than one restart.
    refused = __salt__["redis_sentinel.protocol_switch_refused"](to, timeout=max(timeout, 120))
    if refused:
        why = f"{service} not switched to {speaking}: {refused}; nothing changed"
        ret.update(result=False, changes={}, comment=why)
        return None
    try:
        __salt__["service.stop"](service)
        content, _ = _read(config_file)
        _write(config_file, _with_protocol(content, settings), owner[0], owner[1], wanted_mode)
    except (OSError, _Unsafe, CommandExecutionError) as exc:
        __salt__["service.start"](service)
        ret.update(result=False, changes={}, comment=f"{config_file}: cannot switch the Sentinel: {exc}")
        return None
    if __salt__["service.start"](service) is False or not __salt__["redis_sentinel.wait_sentinel"](
            name, timeout=timeout):
        ret.update(result=False, comment=f"{config_file} now says {speaking} but {service} does not answer with "
                                         f"the deployment's password and monitor {name} within {timeout}s")
        return None
    return f"{service} restarted speaking {speaking}"


def _take_over(ret, name, settings, config_file, content, info, service, owner, wanted_mode, paths, timeout):
    """Write our file over the package's (or a missing) one and restart the Sentinel.
    Returns the comment, or None after filling ``ret`` with a failure."""
    live = __salt__["redis_sentinel.live_master"](name)
    if not live["master"] and live.get("candidate"):
        # A new Sentinel needs a start: the Sentinels' latest decision. It learns any later
        # one from their hello messages (a higher config epoch wins).
        ip, port = live["candidate_address"].rsplit(":", 1)
        live = dict(live, master=live["candidate"], address=live["candidate_address"], ip=ip, port=int(port),
                    source="the Sentinels' latest decision")
    if not live["master"]:
        ret.update(result=False, comment=f"no live master to monitor: {live['comment']}; nothing changed")
        return None
    quorum = (settings.get("sentinel") or {}).get("quorum") or __salt__["redis_sentinel.failover_outlook"]()["quorum"]
    backup = config_file + BACKUP_SUFFIX
    action = "created" if content is None else f"took over the package's file (kept as {backup})"
    ret["changes"] = {
        "file": {"path": config_file, "action": action,
                 "monitor": f"{name} at {live['address']} ({live['master']}, per {live['source']}), quorum {quorum}"},
        "restarted": service,
    }
    if __opts__["test"]:
        ret["result"] = None
        return f"would write {config_file} ({action}) monitoring {name} at {live['address']} and restart {service}"
    text = _render(name, live, settings, quorum, paths, backup)
    try:
        if content is not None:
            _keep_copy(backup, content, info, wanted_mode)
        else:
            os.makedirs(os.path.dirname(config_file) or ".", exist_ok=True)
        _write(config_file, text, owner[0], owner[1], wanted_mode)
    except OSError as exc:
        ret.update(result=False, changes={}, comment=f"{config_file} cannot be written: {exc.strerror}")
        return None
    why = ""
    try:
        restarted = __salt__["service.restart"](service)
    except CommandExecutionError as exc:
        restarted, why = False, f": {exc}"
    if restarted is False:
        ret.update(result=False, comment=f"wrote {config_file} but {service} could not be restarted{why}")
        return None
    if not __salt__["redis_sentinel.wait_sentinel"](name, timeout=timeout):
        ret.update(result=False, comment=f"{service} restarted but does not answer with the deployment's password "
                   f"and monitor {name} within {timeout}s")
        return None
    return f"{config_file}: {action}; {service} restarted, monitoring {name} at {live['address']}"


def monitored(
    name,
    config_file="/etc/redis/sentinel.conf",
    service="redis-sentinel",
    user="redis",
    group="redis",
    mode="0640",
    logfile="/var/log/redis/redis-sentinel.log",
    dir="/var/lib/redis",  # pylint: disable=redefined-builtin
    pidfile="/run/sentinel/redis-sentinel.pid",
    daemonize=True,
    timeout=60,
):
    """
    Make the local Sentinel (the package's service, taken over: not a second one) monitor
    the deployment's master ``name``.

    - A Sentinel file without Salt's marker comment (the package's, or none) is replaced
      once: the package's file is kept as ``<config_file>.dpkg-salt-orig``, ours is written
      ``user:group`` with ``mode`` (it holds the password) with ``port`` (pillar
      ``sentinel_port``), ``bind <bind_ip> 127.0.0.1``, ``requirepass``, ``sentinel
      announce-ip``, ``sentinel monitor`` of the *live* master with the pillar's quorum,
      ``down-after-milliseconds``, ``failover-timeout``, ``parallel-syncs 1`` and the
      package's ``daemonize``/``pidfile``/``logfile``/``dir``; then ``service`` is
      restarted, the only restart this state ever does.
    - A file with the marker is never written again: Sentinel owns it. The one exception is
      a switch between plain TCP and TLS (``cache.redis.tls`` changed): once the servers
      speak the new protocol, the Sentinel is stopped, its protocol lines are rewritten and
      it is started, one Sentinel at a time while the others hold a majority
      (``redis_sentinel.protocol_switch_refused``). Differences from
      the pillar (down_after_ms, failover_timeout_ms, quorum, the login to the Redis
      servers, a renamed master) go to the running Sentinel with ``SENTINEL SET`` (or
      ``REMOVE`` + ``MONITOR``), which persists them itself.
    - The Sentinel must know exactly the other Sentinels of ``sentinel:hosts``: a stale
      entry (a removed or readdressed host) is dropped with ``SENTINEL RESET`` and the
      state waits, bounded, until the others are re-discovered. Peers not known yet are
      waited for, then reported (not a failure).
    - Fewer than 3 Sentinels (no witness): a loud warning in the comment, result True.

    The password never appears in changes or comments (``<hidden>``).

    name
        The master name Sentinel monitors (pillar ``redis:master_name``).
    config_file
        The Sentinel's configuration file, as its service starts it.
    service
        The Sentinel's service, restarted once after the takeover.
    logfile, dir, pidfile, daemonize
        Written into the file at the takeover, as the distribution's file has them
        (``daemonize yes`` for sysvinit hosts; systemd's unit overrides it).
    timeout
        Seconds to wait for the restarted Sentinel, and for its peers.

    .. code-block:: yaml

        redis-sentinel-monitors-the-master:
          redis_sentinel.monitored:
            - name: mymaster
            - config_file: /etc/redis/sentinel.conf
            - service: redis-sentinel
    """
    ret = _ret(name)
    settings = _pillar()
    refused = _refused(ret, settings, need_server=False)
    if refused:
        return refused
    if not settings.get("password"):
        ret.update(result=False, comment="pillar redis:password is empty: a Sentinel without a password is refused")
        return ret
    try:
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        ret.update(result=False, comment=f"{config_file}: no user {user!r} or no group {group!r} on this minion")
        return ret
    wanted_mode = int(str(mode), 8)
    outlook = __salt__["redis_sentinel.failover_outlook"]()
    try:
        content, info = _read(config_file)
    except _Unsafe as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    comments = []
    ours = content is not None and MARKER in content.splitlines()
    if ours and _speaks_tls(content) != bool(settings.get("tls")):
        done = _switch_protocol(ret, name, settings, config_file, service, (uid, gid), wanted_mode, timeout)
        if done is None:
            return ret
        comments.append(done)
        if __opts__["test"]:
            ret["comment"] = "; ".join(comments)
            return ret
    if not ours:
        paths = {"logfile": logfile, "dir": dir, "pidfile": pidfile, "daemonize": daemonize}
        done = _take_over(ret, name, settings, config_file, content, info, service, (uid, gid), wanted_mode,
                          paths, timeout)
        if done is None:
            return ret
        comments.append(done)
        if __opts__["test"]:
            ret["comment"] = "; ".join(comments + ([outlook["warning"]] if outlook["warning"] else []))
            return ret
    elif stat.S_IMODE(info.st_mode) & 0o007:
        # It holds the password: never readable by everyone.
        ret["changes"]["mode"] = {"old": f"{stat.S_IMODE(info.st_mode):04o}", "new": f"{wanted_mode:04o}"}
        if not __opts__["test"]:
            try:
                _restrict_mode(config_file, wanted_mode)
            except OSError as exc:
                ret.update(result=False, changes={}, comment=f"{config_file}: cannot set mode: {exc.strerror}")
                return ret
    try:
        configured = __salt__["redis_sentinel.sentinel_configure"](name, config_file=config_file,
                                                                   dry_run=__opts__["test"])
        comments.append(configured["comment"])
        ret["changes"].update(configured["changes"])
        peers = __salt__["redis_sentinel.sentinel_peers"](name, timeout=0 if __opts__["test"] else timeout,
                                                          reset=not __opts__["test"])
    except CommandExecutionError as exc:
        why = str(exc)
        if "AuthenticationError" in why or "WRONGPASS" in why or "NOAUTH" in why:
            why += (
                f". The local Sentinel refuses the deployment's password (was it changed?). Salt never rewrites "
                f"a Sentinel file it took over: to give the Sentinel the new password, remove {config_file} and "
                f"apply again (Salt writes it afresh and restarts {service}; it re-discovers its peers)"
            )
        ret.update(result=False, comment="; ".join(comments + [why]))
        return ret
    if peers["reset"]:
        ret["changes"]["reset"] = {"forgot": peers["forgot"], "knows": peers["known"]}
    elif peers["stale"] and __opts__["test"]:
        ret["changes"]["reset"] = {"would_forget": peers["stale"]}
    comments.append(peers["comment"])
    if outlook["warning"]:
        comments.append(outlook["warning"])
    ret["comment"] = "; ".join(comments)
    if __opts__["test"] and ret["changes"]:
        ret["result"] = None
    return ret


def serves_current_certificate(name, service="redis-sentinel", timeout=60):
    """
    The local Sentinel serves its TLS certificate as the file holds it now: after a renewal it
    is restarted (it cannot reload), one Sentinel at a time and only while the others hold a
    majority without it (``redis_sentinel.serve_current_certificate``). Nothing to do without
    TLS, or where it serves the current certificate already.

    .. code-block:: yaml

        redis-sentinel-serves-the-renewed-certificate:
          redis_sentinel.serves_current_certificate:
            - name: mymaster
            - service: redis-sentinel
    """
    ret = _ret(name)
    try:
        outcome = __salt__["redis_sentinel.serve_current_certificate"](
            name, service=service, dry_run=__opts__["test"], timeout=timeout)
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    ret["comment"] = outcome["comment"]
    if outcome["restarted"]:
        ret["changes"] = {"restarted": service}
        if __opts__["test"]:
            ret["result"] = None
    return ret
