"""
The Sentinel side of the deployment described in pillar ``redis`` (mode ``sentinel``): which
Redis server is the live master, this node's replication, and the local Sentinel.

Replication is never written into Salt's configuration files: Salt's settings file is
included last and would revert a Sentinel failover at the next restart. This module makes
a node follow the *live* master with ``REPLICAOF`` and lets Redis persist it in its own
file (``CONFIG REWRITE``), as Sentinel itself does on every failover.

Sentinels authenticate to the Redis servers as the ACL user ``salt-sentinel`` with a
password derived from the deployment's password (hex: HMAC-SHA256). Redis 7.0's Sentinel
writes ``sentinel auth-pass`` unquoted into its file, so the deployment's own password
(which may hold spaces or quotes) would make the Sentinel fail to start after its next
config rewrite; a hex password survives it. The user may run only what Sentinel sends.

The password comes from pillar ``redis:password`` and is handed to redis-py in memory: it
never appears on a command line, in a return value or in a log line.

:depends: redis (redis-py)
"""

import collections
import logging
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import redis

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_sentinel"

# The ACL user the Sentinels log in as on every Redis server of the deployment (what it may
# run and its derived password: _utils/redis_acl.py).
ACL_USER = "salt-sentinel"
# SENTINEL MASTER fields Salt manages, with their pillar key (sentinel:...) and default.
MANAGED = {
    "down-after-milliseconds": ("down_after_ms", 5000),
    "failover-timeout": ("failover_timeout_ms", 60000),
    "parallel-syncs": (None, 1),
}


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_sentinel: the redis Python library (redis-py) is not installed")
    return __virtualname__


# ---------------------------------------------------------------- helpers


def _settings():
    return __pillar__.get("redis", {}) or {}


def _error(exc):
    return __utils__["redis_common.error_text"](exc)


def _client(port=None, host="127.0.0.1", timeout=5):
    """A Redis server of the deployment (default: the local one), with the deployment's password."""
    return __utils__["redis_common.client"](_settings(), port, host=host, timeout=timeout)


def _sentinel_client(host="127.0.0.1", port=None, timeout=5):
    """A Sentinel of the deployment (default: the local one): Sentinels require the same password."""
    settings = _settings()
    return __utils__["redis_common.client"](settings, port or settings.get("sentinel_port", 26379),
                                            host=host, timeout=timeout)


def _wait(condition, timeout, interval=0.2):
    """``redis_common.wait``, run in this module's loader context (see redis_cluster._wait)."""
    wait = __utils__["redis_common.wait"]
    return getattr(wait, "func", wait)(condition, timeout, interval)


def _master_name(name=None):
    return name or _settings().get("master_name") or "mymaster"


def _peers():
    """The deployment's Redis servers, file order: [{hostname, ip, port}]."""
    settings = _settings()
    port = int(settings.get("port", 6379))
    return [{"hostname": p["hostname"], "ip": p["ip"], "port": int(p.get("port") or port)}
            for p in settings.get("peers") or []]


def _sentinel_hosts():
    """Every Sentinel of the deployment: [{hostname, ip, port}] (a host entry may give its own port)."""
    settings = _settings()
    port = int(settings.get("sentinel_port", 26379))
    return [{"hostname": h["hostname"], "ip": h["ip"], "port": int(h.get("port") or port)}
            for h in (settings.get("sentinel") or {}).get("hosts") or []]


def _address(ip, port):
    return f"{ip}:{int(port)}"


def _pairs(flat):
    """A Redis reply of alternating field names and values as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


def _sentinel_command(client, *args):
    """A SENTINEL subcommand's raw answer (redis-py would reshape some of them)."""
    return client.execute_command("SENTINEL", *args)


def _auth_password(password=None, user=ACL_USER):
    """The Sentinels' password for ``user``: hex, derived from the deployment's password."""
    return __utils__["redis_acl.derived_password"](password or _settings().get("password") or "", user)


def _tls():
    """Pillar ``redis:tls`` (None: plain TCP), for the connectors the ACL checks use."""
    return _settings().get("tls") or None


def _server_connects():
    connector = __utils__["redis_common.connector"]
    return {_address(p["ip"], p["port"]): connector(p["ip"], p["port"], tls=_tls()) for p in _peers()}


def _outgoing(current, connects, dry_run, wait=30, cautious=False):
    """The login (``(user, password)``) towards ``connects`` (``redis_acl.settled_outgoing_login``),
    waiting up to ``wait`` seconds for nodes not applied yet to accept the new one. Returns
    ``(login, waiting)``."""
    return __utils__["redis_acl.settled_outgoing_login"](__utils__["redis_acl.secrets"](_settings()), ACL_USER,
                                                         current, connects, 0 if dry_run else wait, cautious)


# ---------------------------------------------------------------- the live master


def _key_count(client):
    """Keys in every database of a server (``DBSIZE`` counts only the selected one)."""
    return sum(int(db.get("keys", 0)) for db in client.info("keyspace").values() if isinstance(db, dict))


def _replication(client):
    """What a Redis server says about its replication: ``{"role": master|replica,
    "connected_replicas", "keys", "offset"}``, and for a replica ``master``, ``link`` and
    ``sync_in_progress``."""
    info = client.info("replication")
    view = {"role": "replica" if info.get("role") == "slave" else "master",
            "connected_replicas": int(info.get("connected_slaves", 0)), "keys": _key_count(client),
            "offset": int(info.get("master_repl_offset", 0))}
    if view["role"] == "replica":
        view.update(master=_address(info.get("master_host"), info.get("master_port")),
                    link=info.get("master_link_status"),
                    sync_in_progress=bool(int(info.get("master_sync_in_progress", 0))),
                    replica_offset=int(info.get("slave_repl_offset", 0)))
    return view


def _role(peer, timeout):
    """What one Redis server says about its replication, or {"error": ...}."""
    try:
        return _replication(_client(peer["port"], host=peer["ip"], timeout=timeout))
    except redis.RedisError as exc:
        return {"error": _error(exc)}


def _sentinel_answers(name, timeout):
    """{hostname: what the Sentinel there says of ``name``}: ``{"address", "epoch",
    "failover"}`` (``SENTINEL MASTER``, one reply: its address and config epoch belong
    together), ``{"unmonitored": True}`` or ``{"error": text}``."""
    answers = {}
    for host in _sentinel_hosts():
        try:
            reply = _sentinel_command(_sentinel_client(host["ip"], host["port"], timeout), "MASTER", name)
        except redis.ResponseError as exc:
            if "No such master" in str(exc):
                answers[host["hostname"]] = {"unmonitored": True}
            else:
                answers[host["hostname"]] = {"error": _error(exc)}
            continue
        except redis.RedisError as exc:
            answers[host["hostname"]] = {"error": _error(exc)}
            continue
        answers[host["hostname"]] = _answer(_pairs(reply))
    return answers


def _answer(fields):
    """One Sentinel's answer from its ``SENTINEL MASTER`` fields."""
    return {"address": _address(fields["ip"], fields["port"]), "epoch": int(fields.get("config-epoch", 0)),
            "failover": "failover_in_progress" in fields.get("flags", "").split(",")}


def _shown(answer, name):
    if "error" in answer:
        return answer["error"]
    if answer.get("unmonitored"):
        return f"does not monitor {name}"
    busy = ", failover in progress" if answer["failover"] else ""
    return f"{answer['address']} (config epoch {answer['epoch']}{busy})"


def live_master(name=None, timeout=2, settle=0):
    """
    Find the deployment's live master: the Sentinels' latest decision, never an old one.

    Every Sentinel of ``sentinel:hosts`` (servers' and witnesses') is asked for ``name``
    (``SENTINEL MASTER``). The address given with the highest config epoch is the latest
    decision; it is the live master only when a majority of *all* configured Sentinels
    answer and name it, and none of them is in the middle of a failover. Otherwise the
    answer is undecided (``master`` None, ``candidate`` the latest decision) and the
    caller must change nothing: right after a failover the Sentinels that have not heard
    the new epoch yet still name the old master, and a stale or unreachable Sentinel is
    no vote.

    Only when no Sentinel monitors ``name`` at a peer's address (bare hosts) do the Redis
    servers' roles decide: a master with connected replicas wins; among masters without
    replicas, the only one that holds keys wins (two that hold keys: no answer, replicating
    either would wipe the other), else the pillar's ``initial_master``. Answers that are no
    peer's address (the package's own ``mymaster 127.0.0.1 6379``) are ignored.

    With ``settle`` seconds, an undecided answer is asked again, bounded, while the
    Sentinels that answer disagree or one is failing over (the new epoch spreads with the
    Sentinels' hello messages, every 2 s); too few answering is not waited for.

    Returns ``{"master": hostname or None, "address": "ip:port", "ip", "port", "source":
    "sentinels"|"roles"|"keys"|"initial_master"|None, "monitored": bool (a Sentinel
    monitors the name at a peer), "candidate" and "candidate_address": the latest decision,
    "settling": bool (undecided while the answers disagree), "sentinels": {hostname:
    answer}, "roles": {hostname: view} (when asked), "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.live_master
        salt '*' redis_sentinel.live_master settle=10
    """
    last = {}

    def decided():
        last["view"] = _live_master(_master_name(name), timeout)
        return last["view"]["master"] or not last["view"]["settling"]

    if float(settle) > 0:
        _wait(decided, settle, interval=0.2)
    else:
        decided()
    return last["view"]


def _live_master(name, timeout, answers=None):
    """``live_master``, asked once (or decided from ``answers`` already gathered)."""
    peers = _peers()
    by_address = {_address(p["ip"], p["port"]): p for p in peers}
    if answers is None:
        answers = _sentinel_answers(name, timeout)
    known = {host: a for host, a in answers.items() if a.get("address") in by_address}
    strangers = sorted({a["address"] for a in answers.values() if a.get("address") and a["address"] not in by_address})
    result = {"master": None, "address": None, "ip": None, "port": None, "source": None, "monitored": bool(known),
              "candidate": None, "candidate_address": None, "settling": False,
              "sentinels": {host: _shown(a, name) for host, a in answers.items()}}
    roles = {}

    def chosen(peer, source, comment):
        result.update(master=peer["hostname"], address=_address(peer["ip"], peer["port"]), ip=peer["ip"],
                      port=peer["port"], source=source, comment=comment)
        if roles:
            result["roles"] = roles
        return result

    def role_of(peer):
        if peer["hostname"] not in roles:
            roles[peer["hostname"]] = _role(peer, timeout)
        return roles[peer["hostname"]]

    ignored = f"; ignored answers that are no peer's address: {', '.join(strangers)}" if strangers else ""
    if known:
        total = len(answers)
        majority = total // 2 + 1
        latest = max(known.values(), key=lambda a: a["epoch"])
        candidate = by_address[latest["address"]]
        agreeing = sorted(host for host, a in known.items() if a["address"] == latest["address"])
        busy = sorted(host for host, a in known.items() if a["failover"])
        unreachable = sorted(host for host, a in answers.items() if "error" in a)
        result.update(candidate=candidate["hostname"], candidate_address=latest["address"])
        result["settling"] = bool(busy) or len({a["address"] for a in known.values()}) > 1
        said = (f"{len(agreeing)} of the {total} Sentinels ({', '.join(agreeing)}) name {candidate['hostname']} "
                f"(config epoch {latest['epoch']}, the latest)")
        if not busy and len(agreeing) >= majority:
            return chosen(candidate, "sentinels", said + ignored)
        others = sorted(f"{host}: {result['sentinels'][host]}" for host in answers if host not in agreeing)
        why = [f"a failover is in progress on {', '.join(busy)}"] if busy else []
        why.append(said + f", a majority is {majority}")
        if others:
            why.append("the others say " + "; ".join(others))
        if unreachable:
            why.append(f"{', '.join(unreachable)} unreachable")
        result["comment"] = "the Sentinels have not decided: " + ", ".join(why) + ignored
        return result
    for peer in peers:
        role_of(peer)
    masters = [p for p in peers if roles[p["hostname"]].get("role") == "master"]
    with_replicas = sorted((p for p in masters if roles[p["hostname"]]["connected_replicas"]),
                           key=lambda p: -roles[p["hostname"]]["connected_replicas"])
    if with_replicas:
        return chosen(with_replicas[0], "roles", f"no Sentinel knows {name}: {with_replicas[0]['hostname']} is "
                      "the master with connected replicas" + ignored)
    with_keys = [p for p in masters if roles[p["hostname"]]["keys"]]
    if len(with_keys) > 1:
        result.update(roles=roles, comment=(
            f"no Sentinel knows {name}, and {', '.join(p['hostname'] for p in with_keys)} are all masters without "
            "replicas that hold keys: making one replicate another would wipe its keys. Keep one (back up the "
            "other, FLUSHALL it), then apply again"))
        return result
    if with_keys:
        return chosen(with_keys[0], "keys", f"no Sentinel knows {name}: {with_keys[0]['hostname']} is the only "
                      "master that holds keys" + ignored)
    initial = (_settings().get("initial_master") or {}).get("hostname")
    peer = next((p for p in peers if p["hostname"] == initial), None)
    if peer is None:
        result.update(roles=roles, comment=f"no Sentinel knows {name} and the pillar names no initial master")
        return result
    answering = [p["hostname"] for p in peers if "error" not in roles[p["hostname"]]]
    seen = "no server has replicas or keys" if answering else "no server answers"
    return chosen(peer, "initial_master", f"no Sentinel knows {name} and {seen}: the initial master {initial}"
                  + ignored)


# ---------------------------------------------------------------- this node's replication


def local_role(port=None):
    """
    This node's Redis server's replication: ``{"reachable", "role": master|replica,
    "master": "ip:port", "link": up|down, "sync_in_progress", "connected_replicas",
    "keys" (in every database), "offset"}`` (``error`` when it does not answer with the
    deployment's password).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.local_role
    """
    try:
        return dict(_replication(_client(port)), reachable=True)
    except redis.RedisError as exc:
        return {"reachable": False, "error": _error(exc)}


def wait_replica_of(address, timeout=30, port=None):
    """
    Wait, bounded by ``timeout`` seconds, until the local Redis server replicates
    ``address`` ("ip:port"); for a returning old master, which its Sentinels convert
    themselves. Returns the last ``local_role``.

    CLI Example:

    .. code-block:: bash

        salt server1 redis_sentinel.wait_replica_of 10.0.0.12:6379 timeout=20
    """
    last = {}

    def follows():
        last["view"] = local_role(port)
        return last["view"].get("role") == "replica" and last["view"].get("master") == address

    _wait(follows, timeout, interval=0.5)
    return last["view"]


def replicate(ip, port, timeout=30):
    """
    Make the local Redis server a replica of ``ip:port`` (``REPLICAOF``), persist it in
    Redis's own configuration file (``CONFIG REWRITE``; never in Salt's files) and wait,
    bounded by ``timeout`` seconds, until the link is up or a sync is in progress. Never
    restarts anything.

    Returns ``{"link": up|down, "sync_in_progress": bool, "persisted": bool, "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt server2 redis_sentinel.replicate 10.0.0.11 6379
    """
    client = _client()
    try:
        client.execute_command("REPLICAOF", ip, int(port))
    except redis.RedisError as exc:
        raise CommandExecutionError(f"REPLICAOF {ip} {port} failed: {_error(exc)}") from None
    persisted, why = True, ""
    try:
        client.execute_command("CONFIG", "REWRITE")
    except redis.RedisError as exc:
        persisted, why = False, f"; not persisted (CONFIG REWRITE: {_error(exc)})"

    def linked():
        view = local_role()
        return view if view.get("link") == "up" else None

    view = _wait(linked, timeout, interval=0.2) or local_role()
    return {
        "link": view.get("link", "down"),
        "sync_in_progress": bool(view.get("sync_in_progress")),
        "persisted": persisted,
        "comment": f"replicates {ip}:{port}, link {view.get('link', 'down')}"
        + (", sync in progress" if view.get("sync_in_progress") else "") + why,
    }


# ---------------------------------------------------------------- the Sentinels' ACL user


def sentinel_user(user=ACL_USER, dry_run=False, port=None):
    """
    Make sure the local Redis server has the ACL user the Sentinels log in as (password
    derived from the deployment's, only the commands Sentinel sends), and persist it in
    Redis's own file (``CONFIG REWRITE``, or ``ACL SAVE`` when the server uses an
    ``aclfile``). ACL users are not replicated: every server needs this.

    Returns ``{"changed": bool, "differs": [...], "persisted": bool, "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.sentinel_user
    """
    try:
        return __utils__["redis_acl.converge"](_client(port), __utils__["redis_acl.secrets"](_settings()), user,
                                               dry_run=dry_run)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"ACL user {user} on the local Redis server: {_error(exc)}") from None


def sentinel_logins(dry_run=False, port=None):
    """
    Converge the local Sentinel's own logins, live: Redis's ``default`` user (what clients and
    our tools log in as) accepts the deployment's password, and the previous one during a
    two-phase rotation; the ACL user ``salt-sentinel`` (what the other Sentinels log in as)
    accepts the secrets derived from them; and this Sentinel logs in to the others as
    ``salt-sentinel`` (``sentinel-user``/``sentinel-pass``), with the new secret once they
    accept it. Persisted with ``SENTINEL FLUSHCONFIG``.

    Returns ``{"changed": bool, "changes": {...}, "comment"}``; no secret in it.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.sentinel_logins dry_run=True
    """
    settings = _settings()
    acl = __utils__["redis_acl.secrets"](settings)
    try:
        client = _sentinel_client(port=port)
        changes, comments, unsaved = __utils__["redis_acl.users_converged"](
            client, acl, [ACL_USER], on="sentinel", dry_run=dry_run)
        if unsaved:
            raise CommandExecutionError(unsaved)
        running = _pairs(_sentinel_command(client, "CONFIG", "GET", "sentinel-*"))
        current = (running.get("sentinel-user") or None, running.get("sentinel-pass") or None)
        me = _my_address()
        connector = __utils__["redis_common.connector"]
        peers = {address: connector(*address.rsplit(":", 1), tls=_tls())
                 for address in (_address(h["ip"], h["port"]) for h in _sentinel_hosts()) if address != me}
        login, waiting = _outgoing(current, peers, dry_run, cautious=True)
        note = f" (waiting for {', '.join(waiting)})" if waiting else ""
        if login != current:
            changes["peer_login"] = f"{login[0]} / <hidden>{note}"
            if not dry_run:
                _sentinel_command(client, "CONFIG", "SET", "sentinel-user", login[0])
                _sentinel_command(client, "CONFIG", "SET", "sentinel-pass", login[1])
                _sentinel_command(client, "FLUSHCONFIG")
        comments.append(f"the other Sentinels log in as {login[0] or 'default'}{note}")
    except redis.RedisError as exc:
        return __utils__["redis_common.logins_refused"]("Sentinel", exc, dry_run)
    process = f"sentinel-{port or settings.get('sentinel_port', 26379)}"
    return __utils__["redis_common.logins_converged"](process, settings.get("password"), changes, comments, dry_run)


def accepts_password(port=None, timeout=5):
    """
    Whether the local Sentinel lets the deployment's password in (or, during a two-phase
    rotation, the previous one): ``True``, ``False`` (refused) or ``None`` (no answer).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.accepts_password
    """
    settings = _settings()
    connect = __utils__["redis_common.connector"]("127.0.0.1", port or settings.get("sentinel_port", 26379), timeout,
                                                  tls=_tls())
    return __utils__["redis_acl.accepts_any"](connect, __utils__["redis_acl.secrets"](settings))


def forced_password_change(config_file="/etc/redis/sentinel.conf", dry_run=False, port=None):
    """
    ``force_password_change`` (pillar ``redis:force_password_change``) on the local Sentinel
    when it refuses the deployment's password: log in with the password last accepted on this
    host (Salt's root-only record, written at every apply, else ``requirepass`` in
    ``config_file``) and give Sentinel's ``default`` user the deployment's password, live
    (``ACL SETUSER``, ``SENTINEL FLUSHCONFIG``): no restart; every client still using the old
    password is refused from then on.

    Returns ``{"changed": bool, "persisted": bool, "comment": str}`` (no secret), or None when
    the Sentinel accepts neither of those passwords either.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.forced_password_change dry_run=True
    """
    settings = _settings()
    port = int(port or settings.get("sentinel_port", 26379))
    remembered = __utils__["redis_common.remembered_password"](__opts__.get("cachedir"), f"sentinel-{port}")
    candidates = [remembered, __utils__["redis_config.file_values"](config_file, {"requirepass"}).get("requirepass")]
    connect = __utils__["redis_common.connector"]("127.0.0.1", port, 5, tls=_tls())
    passwords = __utils__["redis_acl.secrets"](settings)
    try:
        return __utils__["redis_acl.forced_change"](connect, passwords, candidates, on="sentinel", dry_run=dry_run)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"the local Sentinel: {_error(exc)}") from None


# ---------------------------------------------------------------- the local Sentinel


def _sentinel_view(client, name):
    masters = {m["name"]: m for m in (_pairs(flat) for flat in _sentinel_command(client, "MASTERS"))}
    view = {"masters": masters, "run_id": client.info("server").get("run_id")}
    if name in masters:
        view["sentinels"] = [
            {"address": _address(s["ip"], s["port"]), "runid": s.get("runid"), "flags": s.get("flags", "").split(",")}
            for s in (_pairs(flat) for flat in _sentinel_command(client, "SENTINELS", name))
        ]
        view["replicas"] = [
            {"address": _address(r["ip"], r["port"]), "flags": r.get("flags", "").split(",")}
            for r in (_pairs(flat) for flat in _sentinel_command(client, "REPLICAS", name))
        ]
    return view


def sentinel_view(name=None, host="127.0.0.1", port=None, timeout=5):
    """
    What a Sentinel (default: the local one) says: ``{"reachable", "failure", "error",
    "run_id", "masters": {name: SENTINEL MASTER fields}, "sentinels": [{address, runid,
    flags}], "replicas": [{address, flags}]}`` (the last two for ``name``, when monitored).
    ``failure`` is ``redis_common.failure``'s word (``refused``, ``auth``...).

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.sentinel_view
    """
    name = _master_name(name)
    try:
        view = _sentinel_view(_sentinel_client(host, port, timeout), name)
    except redis.RedisError as exc:
        return {"reachable": False, "failure": __utils__["redis_common.failure"](exc), "error": _error(exc)}
    return dict(view, reachable=True, failure="", error="")


def wait_sentinel(name=None, timeout=30, port=None):
    """
    Wait, bounded, until the local Sentinel answers with the deployment's password and
    monitors ``name``. Returns True when it does.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.wait_sentinel timeout=10
    """
    name = _master_name(name)

    def ready():
        view = sentinel_view(name, port=port, timeout=1)
        return view["reachable"] and name in view["masters"]

    return bool(_wait(ready, timeout, interval=0.2))


def _certificate_file_fingerprint():
    """The SHA-256 of the certificate file the local Sentinel is configured with (pillar
    ``redis:tls:cert_file``), or None without TLS or without the file."""
    tls = _settings().get("tls") or {}
    if not tls.get("cert_file"):
        return None
    try:
        text, _ = __utils__["redis_config.read_file"](tls["cert_file"])
    except OSError:
        return None
    return __utils__["redis_common.pem_fingerprint"](text) if text else None


def _restart_refused(order_wait, timeout, done=None):
    """Why the local Sentinel may not restart now, or None when it may. Waits, up to
    ``timeout`` seconds, until the other Sentinels that answer (in either protocol: during a
    switch between plain TCP and TLS some speak the old one) hold a majority of all without
    this one (with fewer than three Sentinels: until all of them answer). The Sentinels
    listed before this host in ``sentinel:hosts`` restart first: for up to ``order_wait``
    seconds, each that answers must be ``done(host)`` (default: it serves its current
    certificate, pillar ``tls:sentinel_certificates``), so that two never restart at once; one
    whose minion is not being applied does not hold this one up for longer."""
    settings = _settings()
    me, hosts = settings.get("hostname"), _sentinel_hosts()
    if done is None:
        wanted = (settings.get("tls") or {}).get("sentinel_certificates") or {}
        served = __utils__["redis_common.served_fingerprint"]

        def done(host):
            return not wanted.get(host["hostname"]) or served(host["ip"], host["port"], 1) == wanted[host["hostname"]]

    listens_as = __utils__["redis_common.listens_as"]
    others = [h for h in hosts if h["hostname"] != me]
    position = next((i for i, h in enumerate(hosts) if h["hostname"] == me), len(hosts))
    earlier = hosts[:position]
    needed = len(hosts) // 2 + 1 if len(hosts) >= 3 else len(others)
    ordered_until = time.monotonic() + float(order_wait)
    seen = {}

    def may_restart():
        answering = [h for h in others if listens_as(h["ip"], h["port"], 1)]
        seen["answering"] = [h["hostname"] for h in answering]
        if len(answering) < needed:
            return False
        if time.monotonic() >= ordered_until:
            return True
        return all(done(h) for h in earlier if h in answering)

    if _wait(may_restart, timeout, interval=0.5):
        return None
    who = ", ".join(seen["answering"]) or "none"
    return (f"only {len(seen['answering'])} of the {len(others)} other Sentinels answer ({who}) after {timeout}s: "
            f"without this one they would not hold a majority ({needed} needed)")


def protocol_switch_refused(to, timeout=120, order_wait=None):
    """
    Why the local Sentinel may not be switched to ``to`` (``tls`` or ``plain``) now, or None
    when it may be: a Sentinel switches by a restart (it cannot change its ports while it
    runs), so this waits, up to ``timeout`` seconds, until

    - the deployment's Redis servers that answer speak ``to`` already (at least one does):
      their own apply switches them live; a Sentinel switched before them could reach none;
    - the other Sentinels that answer, in either protocol, hold a majority without this one,
      and those listed before this host in ``sentinel:hosts`` speak ``to`` already (up to
      ``order_wait`` seconds, by default the whole ``timeout``: an earlier Sentinel's apply
      may be slow to reach its own switch, and two Sentinels restarting at once would leave
      one of three), so that the Sentinels restart one at a time.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.protocol_switch_refused tls
    """
    if to not in ("tls", "plain"):
        raise SaltInvocationError(f"to: expected tls or plain, got {to!r}")
    listens_as = __utils__["redis_common.listens_as"]
    seen = {}

    def servers_switched():
        seen.update({_address(p["ip"], p["port"]): listens_as(p["ip"], p["port"], 1) for p in _peers()})
        speaking = [spoken for spoken in seen.values() if spoken]
        return bool(speaking) and all(spoken == to for spoken in speaking)

    if not _wait(servers_switched, timeout, interval=0.5):
        found = ", ".join(f"{address} {spoken or 'does not answer'}" for address, spoken in sorted(seen.items()))
        return f"the Redis servers do not all speak {to} after {timeout}s ({found})"
    return _restart_refused(timeout if order_wait is None else order_wait, timeout,
                            done=lambda host: listens_as(host["ip"], host["port"], 1) == to)


def serve_current_certificate(name=None, service="redis-sentinel", dry_run=False, timeout=60, order_wait=30):
    """
    Have the local Sentinel serve its TLS certificate as the file holds it now (a renewed
    one): Sentinel cannot load its TLS files again while it runs, so it is restarted, but
    only when the other Sentinels hold a majority without it, and after the Sentinels listed
    before this host in ``sentinel:hosts`` (see ``_restart_refused``). Nothing to do where
    it already serves that certificate, or does not speak TLS yet (a bare host's package
    Sentinel: its takeover starts it with the files).

    Returns ``{"restarted": bool, "comment": str}``; raises ``CommandExecutionError`` when a
    restart is due but would cost the majority, or the restarted Sentinel does not come back.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.serve_current_certificate dry_run=True
    """
    name = _master_name(name)
    port = int(_settings().get("sentinel_port", 26379))
    wanted = _certificate_file_fingerprint()
    serving = __utils__["redis_common.served_fingerprint"]("127.0.0.1", port, 2)
    if wanted is None or serving is None:
        return {"restarted": False, "comment": f"the Sentinel on port {port} does not speak TLS yet: its start reads "
                                               "the files"}
    if serving == wanted:
        return {"restarted": False, "comment": f"the Sentinel on port {port} serves the current certificate"}
    if dry_run:
        return {"restarted": True, "comment": f"would restart {service} (one Sentinel at a time, the others holding "
                                              "a majority): it serves an older certificate"}
    refused = _restart_refused(order_wait, timeout)
    if refused:
        raise CommandExecutionError(f"{service} serves an older certificate but was not restarted: {refused}")
    __salt__["service.restart"](service)
    if not _wait(lambda: __utils__["redis_common.served_fingerprint"]("127.0.0.1", port, 1) == wanted, timeout):
        raise CommandExecutionError(f"{service} restarted but does not serve the current certificate within {timeout}s")
    if not wait_sentinel(name, timeout=timeout, port=port):
        raise CommandExecutionError(f"{service} restarted but does not monitor {name} within {timeout}s")
    return {"restarted": True, "comment": f"restarted {service}: it serves the current certificate"}


def _auth_in_file(config_file, name):
    """``(auth-user, auth-pass)`` that the Sentinel persisted for ``name`` (it writes both unquoted)."""
    user = password = None
    try:
        with open(config_file, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for _, directive, argument in __utils__["redis_config.directives"](lines):
        words = __utils__["redis_config.config_args"](argument) if directive == "sentinel" else []
        if len(words) >= 3 and words[1] == name:
            if words[0].lower() == "auth-user":
                user = words[2]
            elif words[0].lower() == "auth-pass":
                password = " ".join(words[2:])
    return user, password


def sentinel_configure(name=None, quorum=None, config_file=None, dry_run=False, port=None):
    """
    Bring the local Sentinel's monitoring of ``name`` in line with the pillar, at run time
    (the Sentinel persists what it is told in its own file): ``SENTINEL SET`` for
    ``down-after-milliseconds``, ``failover-timeout``, ``parallel-syncs``, ``quorum`` and the
    login (``auth-user``/``auth-pass``, compared with what the Sentinel wrote to
    ``config_file``); ``SENTINEL REMOVE`` of the other names and ``SENTINEL MONITOR`` when
    it does not monitor ``name`` (a renamed master: at the address the old name had, else
    the live master). The master's address is never changed: Sentinel owns it.

    Returns ``{"changes": {...}, "comment"}``; the password is shown as ``<hidden>``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.sentinel_configure config_file=/etc/redis/sentinel.conf
    """
    settings = _settings()
    name = _master_name(name)
    sentinel = settings.get("sentinel") or {}
    quorum = int(quorum or sentinel.get("quorum") or len(_sentinel_hosts()) // 2 + 1)
    wanted = {directive: str(sentinel.get(key, default) if key else default)
              for directive, (key, default) in MANAGED.items()}
    wanted["quorum"] = str(quorum)
    try:
        client = _sentinel_client(port=port)
        view = _sentinel_view(client, name)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"the local Sentinel cannot be asked: {_error(exc)}") from None
    changes, commands = {}, []
    current = view["masters"].get(name)
    if current is None:
        others = sorted(view["masters"])
        if len(others) == 1:
            old = view["masters"][others[0]]
            ip, master_port, source = old["ip"], int(old["port"]), f"the address {others[0]} had"
        else:
            live = live_master(name)
            if not live["master"]:
                raise CommandExecutionError(f"the Sentinel does not monitor {name} and no live master is known: "
                                            + live["comment"])
            ip, master_port, source = live["ip"], live["port"], f"the live master, per {live['source']}"
        commands += [("REMOVE", other) for other in others]
        commands.append(("MONITOR", name, ip, master_port, quorum))
        changes["monitor"] = {"old": ", ".join(others) or None,
                              "new": f"{name} at {_address(ip, master_port)} ({source})"}
        differs = dict(wanted)
        del differs["quorum"]
        login = True
    else:
        differs = {d: value for d, value in wanted.items() if str(current.get(d)) != value}
        for directive, value in differs.items():
            changes[directive] = {"old": current.get(directive), "new": value}
        # Sentinel never shows the login; it persists it in its file, unquoted.
        login = bool(config_file)
    if login:
        current = (_auth_in_file(config_file, name) if config_file else None) or (None, None)
        wanted, waiting = _outgoing(current, _server_connects(), dry_run)
        if tuple(current) != wanted:
            differs.update({"auth-user": wanted[0], "auth-pass": wanted[1]})
            changes["auth"] = f"{ACL_USER} / <hidden>" + (f" (waiting for {', '.join(waiting)})" if waiting else "")
    if differs:
        commands.append(("SET", name, *[word for pair in differs.items() for word in pair]))
    if not changes:
        return {"changes": {}, "comment": f"the Sentinel monitors {name} as wanted"}
    described = ", ".join(k for k in changes)
    if dry_run:
        return {"changes": changes, "comment": f"would change the Sentinel's {name}: {described}"}
    for command in commands:
        try:
            _sentinel_command(client, *command)
        except redis.RedisError as exc:
            why = _error(exc)
            for secret in __utils__["redis_acl.secrets"](settings):
                why = why.replace(_auth_password(secret), "<hidden>")
            raise CommandExecutionError(f"SENTINEL {command[0]} {name} failed: {why}") from None
    return {"changes": changes, "comment": f"changed the Sentinel's {name} at run time: {described}"}


def _my_address():
    me = _settings().get("hostname")
    return next((_address(h["ip"], h["port"]) for h in _sentinel_hosts() if h["hostname"] == me), None)


def _expected_peers(hostname=None):
    """The other Sentinels of the deployment as seen from ``hostname`` (default: this host):
    {address: hostname}."""
    me = hostname or _settings().get("hostname")
    return {_address(h["ip"], h["port"]): h["hostname"] for h in _sentinel_hosts() if h["hostname"] != me}


def _reachable(address, timeout=1):
    """Something that speaks Redis answers at ``address`` (a password refusal is an answer)."""
    ip, port = address.rsplit(":", 1)
    try:
        __utils__["redis_common.client"]({"tls": _tls()}, int(port), host=ip, timeout=timeout).ping()
    except redis.RedisError as exc:
        return __utils__["redis_common.failure"](exc) == "auth"
    return True


def _monitoring(addresses, name):
    """Those of ``addresses`` whose Sentinel answers with our password and monitors ``name``."""
    found = set()
    for address in addresses:
        ip, port = address.rsplit(":", 1)
        view = sentinel_view(name, ip, int(port), timeout=1)
        if view["reachable"] and name in view["masters"]:
            found.add(address)
    return found


def _earlier_sentinels_settled(name):
    """True when no Sentinel listed before this host in ``sentinel:hosts`` still knows a
    Sentinel outside the deployment, or is still re-discovering after its own reset (it
    does not know this host's Sentinel yet). Unreachable ones are not waited for."""
    me, mine = _settings().get("hostname"), _my_address()
    for host in _sentinel_hosts():
        if host["hostname"] == me:
            return True
        view = sentinel_view(name, host["ip"], host["port"], timeout=1)
        if not view["reachable"] or name not in view["masters"]:
            continue
        known = {s["address"] for s in view["sentinels"]}
        if known - set(_expected_peers(host["hostname"])) or mine not in known:
            return False
    return True


def _healthy_replicas(view):
    return {r["address"] for r in view.get("replicas", []) if not {"s_down", "o_down"} & set(r["flags"])}


def sentinel_peers(name=None, timeout=30, reset=True):
    """
    Make the local Sentinel know exactly the deployment's other Sentinels
    (``sentinel:hosts``). Sentinels never forget a peer by themselves, and a stale entry
    counts in the majority that a failover needs. When the local Sentinel knows a Sentinel
    outside the deployment that no longer answers, it is reset (``SENTINEL RESET``) once
    the Sentinels listed before it have settled (so a rolling apply resets one at a time),
    and this waits, bounded by ``timeout`` seconds, until it re-discovered the other
    Sentinels and the replicas it knew. A stranger that still answers is reported, never
    reset (it would be re-discovered at once). Missing peers are waited for (bounded) only
    when their Sentinel already monitors ``name``: the others are still to be set up.

    Returns ``{"known", "expected", "missing", "stale", "forgot", "alive_strangers":
    [addresses], "reset": bool, "complete": bool, "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.sentinel_peers reset=False
    """
    name = _master_name(name)
    expected = _expected_peers()
    deadline = time.monotonic() + float(timeout)

    def own_view():
        view = sentinel_view(name)
        if not view["reachable"]:
            raise CommandExecutionError(f"the local Sentinel cannot be asked: {view['error']}")
        if name not in view["masters"]:
            raise CommandExecutionError(f"the local Sentinel does not monitor {name}")
        return view

    def remaining(at_least=0.0):
        return max(at_least, deadline - time.monotonic())

    view = own_view()
    strangers = sorted({s["address"] for s in view["sentinels"]} - set(expected))
    alive = [a for a in strangers if _reachable(a)]
    stale = [a for a in strangers if a not in alive]
    notes, replicas, did_reset = [], set(), False
    if stale and reset:
        if not _wait(lambda: _earlier_sentinels_settled(name), remaining(), interval=0.5):
            notes.append("the Sentinels listed before this one had not settled in time: reset anyway")
        log.debug("redis_sentinel: resetting %s to forget %s", name, ", ".join(stale))
        replicas = _healthy_replicas(view)
        try:
            _sentinel_command(_sentinel_client(), "RESET", name)
        except redis.RedisError as exc:
            raise CommandExecutionError(f"SENTINEL RESET {name} failed: {_error(exc)}") from None
        did_reset = True
    awaited = _monitoring(expected, name)

    def settled():
        fresh = own_view()
        known = {s["address"] for s in fresh["sentinels"]}
        if awaited <= known and replicas <= {r["address"] for r in fresh.get("replicas", [])}:
            return fresh
        return None

    view = settled() or _wait(settled, remaining(1.0 if did_reset else 0.0), interval=0.3) or own_view()
    log.debug("redis_sentinel: %s knows Sentinels %s, replicas %s", name,
              ", ".join(s["address"] for s in view["sentinels"]), ", ".join(r["address"] for r in view["replicas"]))
    known = sorted(s["address"] for s in view["sentinels"])
    missing = sorted(set(expected) - set(known))
    left = sorted(set(known) - set(expected) - set(alive))
    parts = [f"knows {len(set(known) & set(expected))} of the {len(expected)} other Sentinels"]
    if did_reset:
        parts.append(f"reset to forget {', '.join(stale)}")
    if missing:
        parts.append("not known yet: " + ", ".join(
            f"{expected[a]} ({a}{'' if a in awaited else ', not set up yet'})" for a in missing))
    if alive:
        parts.append(f"Sentinels outside the deployment still answer and monitor {name}: {', '.join(alive)} "
                     "(stop them: a reset would not forget them)")
    if left:
        parts.append("still knows stale Sentinels: " + ", ".join(left))
    return {
        "known": known,
        "expected": sorted(expected),
        "missing": missing,
        "stale": stale if not did_reset else left,
        "forgot": stale if did_reset else [],
        "alive_strangers": alive,
        "reset": did_reset,
        "complete": not missing and set(known) == set(expected),
        "comment": "; ".join(parts + notes),
    }


def _at(addresses, hosts):
    """Those of ``addresses`` (``ip:port``) whose ip is one of ``hosts``."""
    return {a for a in addresses if a.rsplit(":", 1)[0].strip("[]") in hosts}


def forget(gone, name=None, quorum=None, timeout=60):
    """
    Make the local Sentinel forget the Sentinels and replicas on the hosts ``gone`` (their
    ip addresses, a list or comma-separated: hosts that ``salt-run
    redis_deployment.replace_hosts`` retired, while the YAML still lists them): when it still
    knows one, ``SENTINEL RESET`` (Sentinels never forget a peer by themselves, and a stale
    one counts in the majority a failover needs), then wait, bounded by ``timeout`` seconds,
    until it knows again every other Sentinel of ``sentinel:hosts`` not on ``gone`` that
    monitors ``name``, and every replica not on ``gone`` that it saw healthy before. Run it
    on one Sentinel after the other (as Sentinel's documentation advises).

    quorum
        Also ``SENTINEL SET name quorum`` (the majority of the Sentinels left), so that the
        Sentinels left can fail over before the YAML is edited.

    Returns ``{"reset", "forgot", "known", "replicas", "quorum", "complete", "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt server4 redis_sentinel.forget gone=10.0.0.11,10.0.0.12,10.0.0.13 quorum=2
    """
    name = _master_name(name)
    hosts = {str(h).strip().strip("[]") for h in (gone.split(",") if isinstance(gone, str) else gone or [])
             if str(h).strip()}
    if not hosts:
        raise SaltInvocationError("forget: gone: expected the ip addresses of the retired hosts")
    deadline = time.monotonic() + float(timeout)
    view = sentinel_view(name)
    if not view["reachable"] or name not in view["masters"]:
        raise CommandExecutionError(f"the local Sentinel cannot be asked about {name}: "
                                    f"{view.get('error') or 'it does not monitor it'}")
    client = _sentinel_client()
    known = {s["address"] for s in view["sentinels"]} | {r["address"] for r in view["replicas"]}
    stale = sorted(_at(known, hosts))
    replicas = _healthy_replicas(view) - _at(_healthy_replicas(view), hosts)
    notes = []
    try:
        if stale:
            _sentinel_command(client, "RESET", name)
        if quorum and str(view["masters"][name].get("quorum")) != str(int(quorum)):
            _sentinel_command(client, "SET", name, "quorum", str(int(quorum)))
            notes.append(f"quorum {view['masters'][name].get('quorum')} -> {int(quorum)}")
    except redis.RedisError as exc:
        raise CommandExecutionError(f"SENTINEL RESET/SET {name} failed: {_error(exc)}") from None
    expected = set(_expected_peers()) - _at(_expected_peers(), hosts)
    awaited = _monitoring(expected, name)

    def settled():
        fresh = sentinel_view(name, timeout=1)
        if not fresh["reachable"] or name not in fresh["masters"]:
            return None
        sentinels = {s["address"] for s in fresh["sentinels"]}
        seen = {r["address"] for r in fresh["replicas"]}
        return fresh if awaited <= sentinels and replicas <= seen else None

    fresh = settled() or _wait(settled, max(0.5, deadline - time.monotonic()), interval=0.3) or sentinel_view(name)
    sentinels = sorted(s["address"] for s in fresh.get("sentinels", []))
    seen = sorted(r["address"] for r in fresh.get("replicas", []))
    complete = awaited <= set(sentinels) and replicas <= set(seen) and not _at(set(sentinels) | set(seen), hosts)
    parts = [f"reset to forget {', '.join(stale)}" if stale else "knew nothing on the retired hosts"]
    parts.append(f"knows {len(sentinels)} other Sentinels and replicas {', '.join(seen) or 'none'}")
    if not complete:
        parts.append(f"not re-discovered within {timeout}s: "
                     + ", ".join(sorted((awaited - set(sentinels)) | (replicas - set(seen))) or "-"))
    return {"reset": bool(stale), "forgot": stale, "known": sentinels, "replicas": seen,
            "quorum": (fresh.get("masters") or {}).get(name, {}).get("quorum"), "complete": complete,
            "comment": "; ".join(parts + notes)}


# ---------------------------------------------------------------- status


def failover_outlook(hosts=None, quorum=None):
    """
    Whether a Redis host's death can still be failed over, from the number of Sentinels
    (``sentinel:hosts``) and the quorum: a failover needs a majority of all Sentinels to
    elect a leader, and the dead host takes its Sentinel with it.

    Returns ``{"sentinels": n, "quorum": q, "majority": m, "host_death_fails_over": bool,
    "warning": str}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.failover_outlook
    """
    settings = _settings()
    count = int(hosts if hosts is not None else len(_sentinel_hosts()))
    quorum = int(quorum or (settings.get("sentinel") or {}).get("quorum") or count // 2 + 1)
    majority = count // 2 + 1
    survivors = count - 1
    ok = survivors >= majority and survivors >= quorum
    warning = ""
    if not ok:
        warning = (
            f"WARNING: {count} Sentinel(s), quorum {quorum}: when a Redis host dies, its Sentinel dies with it and "
            f"the {survivors} left cannot reach a majority of {majority} (or the quorum): NO automatic failover. "
            "Add a witness Sentinel (cache.redis.sentinel.witnesses in my_multihead_cluster.yaml)"
        )
    return {"sentinels": count, "quorum": quorum, "majority": majority, "host_death_fails_over": ok,
            "warning": warning}


def status(name=None, timeout=2):
    """
    The Sentinel view of the deployment: the master's address as each reachable Sentinel of
    ``sentinel:hosts`` sees it and the live master (``live_master``: the latest config
    epoch, named by a majority of all Sentinels; ``decided`` False otherwise), how many other Sentinels and
    replicas each knows, the local Sentinel's flags for the master and ``SENTINEL
    CKQUORUM``, the quorum, whether a host death could fail over, and warnings.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.status
    """
    settings = _settings()
    result = {"mode": settings.get("mode", "none"), "role": settings.get("role", "none")}
    if settings.get("error"):
        result["error"] = f"deployment pillar failed: {settings['error']}"
        return result
    if result["mode"] != "sentinel":
        result["comment"] = "not a Sentinel deployment"
        return result
    name = _master_name(name)
    hosts = _sentinel_hosts()
    outlook = failover_outlook()
    sentinels, answers, warnings = {}, {}, []
    for host in hosts:
        view = sentinel_view(name, host["ip"], host["port"], timeout)
        entry = {"address": _address(host["ip"], host["port"])}
        if not view["reachable"]:
            entry["error"] = view["error"]
            answers[host["hostname"]] = {"error": view["error"]}
        elif name not in view["masters"]:
            entry["error"] = f"does not monitor {name}"
            answers[host["hostname"]] = {"unmonitored": True}
        else:
            master = view["masters"][name]
            answers[host["hostname"]] = _answer(master)
            entry.update(master=_address(master["ip"], master["port"]), flags=master.get("flags", "").split(","),
                         known_sentinels=len(view["sentinels"]), known_replicas=len(view["replicas"]),
                         config_epoch=int(master.get("config-epoch", 0)))
        sentinels[host["hostname"]] = entry
    votes = collections.Counter(e["master"] for e in sentinels.values() if "master" in e)
    # The same decision replication follows: the latest config epoch, named by a majority of all.
    live = _live_master(name, timeout, answers)
    latest = live["address"] or live["candidate_address"]
    result.update(
        master_name=name,
        master=live["address"],
        master_host=live["master"],
        decided=bool(live["master"]),
        latest=latest,
        agreeing=votes.get(latest, 0),
        reachable=sum(1 for e in sentinels.values() if "master" in e),
        expected=len(hosts),
        quorum=outlook["quorum"],
        host_death_fails_over=outlook["host_death_fails_over"],
        sentinels=sentinels,
    )
    if live["monitored"] and not live["master"]:
        warnings.append(live["comment"])
    if outlook["warning"]:
        warnings.append(outlook["warning"])
    if len(votes) > 1:
        warnings.append("the Sentinels disagree on the master: " + ", ".join(f"{a} ({n})" for a, n in votes.items()))
    for hostname, entry in sentinels.items():
        if "error" in entry:
            warnings.append(f"Sentinel {hostname} ({entry['address']}): {entry['error']}")
        elif entry["known_sentinels"] != len(hosts) - 1:
            warnings.append(f"Sentinel {hostname} knows {entry['known_sentinels']} other Sentinels, "
                            f"expected {len(hosts) - 1}")
        elif {"s_down", "o_down"} & set(entry["flags"]):
            warnings.append(f"Sentinel {hostname} sees the master down ({','.join(entry['flags'])})")
    me = settings.get("hostname")
    if me in sentinels and "master" in sentinels[me]:
        result["flags"] = sentinels[me]["flags"]
        try:
            result["ckquorum"] = _sentinel_command(_sentinel_client(timeout=timeout), "CKQUORUM", name)
        except redis.RedisError as exc:
            result["ckquorum"] = _error(exc)
            warnings.append(f"local Sentinel: {result['ckquorum']}")
    result["warnings"] = warnings
    return result


def _replication_health(name, timeout):
    """``(healthy, what is missing)`` of the pair as every server and Sentinel sees it now."""
    live = _live_master(name, timeout)
    if not live["master"]:
        return False, live["comment"]
    peers = _peers()
    master = next(p for p in peers if p["hostname"] == live["master"])
    master_view = _role(master, timeout)
    if "error" in master_view:
        return False, f"the live master {master['hostname']} does not answer: {master_view['error']}"
    if master_view["role"] != "master":
        return False, f"the Sentinels name {master['hostname']} but it is a replica of {master_view['master']}"
    missing = []
    for peer in peers:
        if peer is master:
            continue
        view = _role(peer, timeout)
        if "error" in view:
            missing.append(f"{peer['hostname']} does not answer: {view['error']}")
        elif view["role"] != "replica" or view["master"] != live["address"]:
            missing.append(f"{peer['hostname']} does not replicate {master['hostname']}")
        elif view["link"] != "up":
            missing.append(f"{peer['hostname']}: master_link_status {view['link']}")
        elif view["replica_offset"] < master_view["offset"]:
            missing.append(f"{peer['hostname']} is {master_view['offset'] - view['replica_offset']} bytes behind")
    hosts = _sentinel_hosts()
    for host in hosts:
        view = sentinel_view(name, host["ip"], host["port"], timeout)
        if not view["reachable"] or name not in view["masters"]:
            missing.append(f"Sentinel {host['hostname']}: " + (view["error"] or f"does not monitor {name}"))
        elif len(view["sentinels"]) != len(hosts) - 1:
            missing.append(f"Sentinel {host['hostname']} knows {len(view['sentinels'])} other Sentinels, "
                           f"expected {len(hosts) - 1}")
        elif len(_healthy_replicas(view)) != len(peers) - 1:
            missing.append(f"Sentinel {host['hostname']} sees {len(_healthy_replicas(view))} healthy replicas, "
                           f"expected {len(peers) - 1}")
    return not missing, "; ".join(missing) or f"{master['hostname']} is the live master ({live['comment']})"


def wait_replication_healthy(timeout=60, name=None):
    """
    Wait, bounded, until the Sentinel pair is healthy: the Sentinels have decided on a live
    master (``live_master``) and it is a master, every other Redis server replicates it
    with its link up and its offset caught up, and every Sentinel monitors it, knows the
    other Sentinels and sees every replica healthy. Sets the job's return code to 1 when
    it is not (`salt` and orchestration see the failure).

    Returns ``{"healthy": bool, "comment": str}``.

    CLI Example:

    .. code-block:: bash

        salt '*' redis_sentinel.wait_replication_healthy timeout=30
    """
    name = _master_name(name)
    last = {}

    def check():
        last["healthy"], last["comment"] = _replication_health(name, 2)
        return last["healthy"]

    if _wait(check, timeout, interval=0.3):
        return {"healthy": True, "comment": last["comment"]}
    __context__["retcode"] = 1
    return {"healthy": False, "comment": last["comment"]}
