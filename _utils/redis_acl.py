"""
The deployment's internal ACL users (Salt's ``_utils``; modules reach them as
``__utils__["redis_acl.<name>"]``): the users Salt keeps on every Redis server (and, for
monitoring, every Sentinel) for its own tools, what each may run, its password and how one
is converged on a running server.

- ``salt-sentinel``: the Sentinels' login on the Redis servers (the commands Sentinel sends:
  monitoring, hello messages, failover, reconfiguration).
- ``salt-replication``: the replicas' login on their master (``masteruser``): ``PSYNC``,
  ``REPLCONF`` and ``PING``, nothing else.
- ``salt-monitor``: the read-only monitoring login of ``/usr/local/bin/redis_health`` and the
  Prometheus exporter: it can read ``INFO``, the cluster's and the Sentinels' views, the
  slow log and latency, and nothing else (no ``CONFIG``, no key, no write).

Passwords are derived from the deployment's password (hex HMAC-SHA256 with a label per user),
so every node computes the same one without another secret in pillar, a password rotation
rotates them too, and a hex password survives Sentinel's unquoted config rewrites.

A two-phase rotation (pillar ``redis:previous_password``) is a list of secrets: the password,
then the previous one. While both are there every user (``default`` and ours) accepts the
secret derived from either, and a node's own outgoing logins (``masterauth``, Sentinel's
``auth-pass`` and ``sentinel-pass``) move to the new one as soon as the node they log in
to accepts it: so nodes applied in any order keep talking to each other, and removing
``previous_password`` afterwards drops the old secret without cutting any link. Servers
store only its SHA-256 (``#<hash>`` rules). ACL users are not replicated: every server (and
every Sentinel) needs its own ``ACL SETUSER``.

:depends: redis (redis-py)
"""

import hashlib
import hmac
import time

__virtualname__ = "redis_acl"

SENTINEL_USER = "salt-sentinel"
MONITORING_USER = "salt-monitor"
REPLICATION_USER = "salt-replication"
SENTINEL_CHANNELS = ("&__sentinel__:hello",)

# What each internal user may run, on a Redis server and (monitoring only) on a Sentinel.
USERS = {
    SENTINEL_USER: {
        "label": "redis-sentinel",
        "server": ("+ping", "+info", "+role", "+subscribe", "+publish", "+multi", "+exec", "+slaveof",
                   "+replicaof", "+config|rewrite", "+client|setname", "+client|kill", "+script|kill"),
        # The same user on every Sentinel: the other Sentinels log in as it (sentinel-user).
        "sentinel": ("+ping", "+publish", "+client|setname", "+sentinel|is-master-down-by-addr"),
        "channels": SENTINEL_CHANNELS,
    },
    REPLICATION_USER: {
        "label": "redis-replication",
        "server": ("+psync", "+sync", "+replconf", "+ping"),
        "channels": (),
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


def secrets(settings):
    """The deployment's secrets from pillar ``redis`` (``settings``): ``[password]``, or during
    a two-phase rotation ``[password, previous_password]``."""
    found = [settings.get("password") or ""]
    if settings.get("previous_password"):
        found.append(settings["previous_password"])
    return found


def _secrets(secret_or_list):
    return [secret_or_list] if isinstance(secret_or_list, str) else list(secret_or_list)


def derived_password(password, user):
    """The internal ``user``'s password: hex, derived from the deployment's ``password``."""
    label = f"{USERS[user]['label']}:{user}"
    return hmac.new((password or "").encode("utf-8"), label.encode("utf-8"), hashlib.sha256).hexdigest()


def digest(password):
    """What Redis keeps of a password: its SHA-256, hex."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def digests(passwords, user=None):
    """The hashes ``user`` (None: ``default``) must accept, one per deployment secret."""
    return [digest(derived_password(p, user) if user else p) for p in _secrets(passwords)]


def commands(user, on="server"):
    """The command rules of ``user`` on a Redis ``server`` or a ``sentinel``."""
    return tuple(USERS[user][on])


def rules(passwords, user, on="server"):
    """``ACL SETUSER <user>`` arguments: everything reset, then on, its hashes (one per secret of
    ``passwords``: the password, or a list during a rotation), its channels, its commands; no key
    pattern."""
    hashes = [f"#{h}" for h in digests(passwords, user)]
    return ["reset", "on", *hashes, "resetchannels", *USERS[user]["channels"], "-@all", *commands(user, on)]


def _pairs(flat):
    return dict(zip(flat[::2], flat[1::2]))


def _words(value):
    return set(value.split() if isinstance(value, str) else value or ())


def differs(client, passwords, user, on="server"):
    """What differs between the server's ``user`` and the rules wanted (empty: nothing):
    ``missing``, ``disabled``, ``password``, ``commands``, ``channels``, ``keys``."""
    reply = client.execute_command("ACL", "GETUSER", user)
    if not reply:
        return ["missing"]
    current = _pairs(reply)
    found = []
    if "on" not in current.get("flags", []):
        found.append("disabled")
    if set(current.get("passwords", [])) != set(digests(passwords, user)):
        found.append("password")
    if _words(current.get("commands", "")) != {"-@all", *commands(user, on)}:
        found.append("commands")
    if _words(current.get("channels", "")) - {"resetchannels"} != set(USERS[user]["channels"]):
        found.append("channels")
    if _words(current.get("keys", "")):
        found.append("keys")
    return found


def persist(client, on="server"):
    """Write what the process runs to its own file, the way it keeps users: ``ACL SAVE`` where a
    server uses an ``aclfile``, else ``CONFIG REWRITE`` (a Sentinel: ``SENTINEL FLUSHCONFIG``).
    Returns ``""`` or why it could not."""
    try:
        if on == "sentinel":
            client.execute_command("SENTINEL", "FLUSHCONFIG")
        elif client.config_get("aclfile").get("aclfile"):
            client.execute_command("ACL", "SAVE")
        else:
            client.execute_command("CONFIG", "REWRITE")
    except Exception as exc:  # pylint: disable=broad-except
        return f"not persisted: {type(exc).__name__}: {exc}"
    return ""


def converge(client, passwords, user, on="server", dry_run=False):
    """Make ``user`` on the server (or Sentinel) behind ``client`` as wanted and persist it in
    the process's own file (:func:`persist`).

    Returns ``{"changed", "differs", "persisted", "comment"}``; redis-py errors propagate
    (the caller words them for its users)."""
    found = differs(client, passwords, user, on)
    if not found:
        return {"changed": False, "differs": [], "persisted": True, "comment": f"ACL user {user} is as wanted"}
    what = "created" if found == ["missing"] else "updated (" + ", ".join(found) + ")"
    if dry_run:
        return {"changed": True, "differs": found, "persisted": False, "comment": f"ACL user {user} would be {what}"}
    client.execute_command("ACL", "SETUSER", user, *rules(passwords, user, on))
    why = persist(client, on)
    return {"changed": True, "differs": found, "persisted": not why,
            "comment": f"ACL user {user} {what}" + (f"; {why}" if why else "")}


def phase(passwords):
    """Which phase of a rotation ``passwords`` (:func:`secrets`) describe, in words."""
    if len(_secrets(passwords)) > 1:
        return "password rotation phase 1: the password and the previous one are both accepted"
    return "one password accepted"


def password_hashes(client, user="default"):
    """The hashes of the passwords ``user`` accepts on the process behind ``client`` (one per
    password: two during a rotation)."""
    return list(_pairs(client.execute_command("ACL", "GETUSER", user) or []).get("passwords") or [])


def default_user_differs(client, passwords, on="server"):
    """``default``'s passwords (and a server's ``requirepass``) differ from the deployment's."""
    if set(password_hashes(client)) != set(digests(passwords)):
        return True
    return on == "server" and client.config_get("requirepass").get("requirepass") != _secrets(passwords)[0]


def converge_default_user(client, passwords, on="server", dry_run=False):
    """Give Redis's ``default`` user exactly the deployment's secrets (both during a rotation),
    live, and persist it. On a server ``requirepass`` (which a restart applies before the
    ``user`` lines, and which resets ``default`` to one password when set) and the user's
    hashes change in one MULTI, so no client is refused in between. Same return as
    :func:`converge`."""
    if not default_user_differs(client, passwords, on):
        return {"changed": False, "differs": [], "persisted": True, "comment": phase(passwords)}
    if dry_run:
        return {"changed": True, "differs": ["password"], "persisted": False,
                "comment": f"the default user's passwords would change ({phase(passwords)})"}
    hashes = [f"#{h}" for h in digests(passwords)]
    if on == "server":
        pipe = client.pipeline(transaction=True)
        pipe.execute_command("CONFIG", "SET", "requirepass", _secrets(passwords)[0])
        pipe.execute_command("ACL", "SETUSER", "default", "on", "resetpass", *hashes)
        pipe.execute()
    else:
        client.execute_command("ACL", "SETUSER", "default", "on", "resetpass", *hashes)
    why = persist(client, on)
    return {"changed": True, "differs": ["password"], "persisted": not why,
            "comment": f"the default user's passwords changed ({phase(passwords)})" + (f"; {why}" if why else "")}


ROTATION_RECIPE = (
    "rotate it in two phases, with no restart and no client refused: set cache.redis.password to the new "
    "password and cache.redis.previous_password to the one in use, apply; once every client uses the new one, "
    "remove previous_password and apply again (README, Security). Or, accepting that every client still using "
    "the old password is refused at once, set cache.redis.force_password_change: true and apply"
)
FORCED_CHANGE = (
    "the password changed in one step (force_password_change), live, no restart. Downtime: every client "
    "still using the old password is refused from now on; the other nodes' logins to this one move to the "
    "new password as they are applied"
)
FORCED_CHANGE_PLANNED = (
    "the password would change in one step (force_password_change), live, no restart. Downtime: every "
    "client still using the old password would be refused from then on"
)


def rotation_recipe():
    """How to change the password of a formed deployment, for a refused change's comment."""
    return ROTATION_RECIPE


def forced_change(connect, passwords, candidates, on="server", dry_run=False):
    """``force_password_change`` on the local node that refuses the deployment's ``passwords``:
    log in with the first of ``candidates`` (passwords it may still accept: the one Salt last
    saw accepted on this host, the one in a file Salt wrote) that it accepts, and give
    ``default`` the deployment's passwords (:func:`converge_default_user`). ``connect`` is
    ``redis_common.connector``'s factory. None when it accepts none of them."""
    for old in dict.fromkeys(secret for secret in candidates if secret):
        if accepts(connect, None, old) is not True:
            continue
        client = connect(None, old)
        try:
            outcome = converge_default_user(client, passwords, on, dry_run)
        finally:
            client.close()
        unsaved = "" if dry_run or outcome["persisted"] else f"; {outcome['comment']}"
        outcome["comment"] = (FORCED_CHANGE_PLANNED if dry_run else FORCED_CHANGE) + unsaved
        return outcome
    return None


def forced_state_return(ret, outcome, what, test):
    """A ``password_accepted`` state's return for :func:`forced_change`'s ``outcome`` on the
    local ``what`` ("server", "Sentinel")."""
    if outcome is None:
        ret.update(result=False, comment=(
            f"the local {what} refuses the deployment's password and the one Salt last applied on this host: "
            f"force_password_change cannot log in to change it, nothing changed. Set cache.redis.previous_password "
            f"to the password the {what} accepts and apply (README, Security)"
        ))
        return ret
    ret.update(comment=outcome["comment"], changes={"password": "changed in one step (force_password_change)"})
    if test:
        ret["result"] = None
    elif not outcome["persisted"]:
        ret["result"] = False
    return ret


def accepts(connect, user, password):
    """Whether the node that ``connect(username, password)`` (a redis-py client factory) reaches
    lets ``user`` (None: ``default``) in with ``password``: ``True``, ``False`` (refused) or
    ``None`` (no answer)."""
    try:
        connect(user, password).ping()
        return True
    except Exception as exc:  # pylint: disable=broad-except
        text = str(exc)
        if type(exc).__name__ == "AuthenticationError" or text.startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
            return False
        return None


def accepts_any(connect, passwords):
    """Whether the node behind ``connect`` lets ``default`` in with one of ``passwords`` (the
    pillar's: during a two-phase rotation the new and the previous one): ``True``, ``False``
    (every one refused) or ``None`` (no answer). Only ``passwords`` are tried, never a
    password remembered for a ``force_password_change``: a gate asks whether the node is
    already changed."""
    answers = [accepts(connect, None, secret) for secret in passwords]
    return True if True in answers else (False if False in answers else None)


def outgoing_login(passwords, user, current, connects, cautious=False):
    """The login ``(user, password)`` a node should use towards the nodes behind ``connects``
    (``{name: client factory}``): ``user`` with the password derived from the deployment's
    once every one of them accepts it; else ``current`` (the login in use) while it still works
    on those that refuse the new one (a peer not applied yet); else the new one anyway.
    ``cautious``: with no password in use, only once every node accepts the new login.
    Returns ``(login, waiting)``: ``waiting`` names the nodes that refused the new login."""
    wanted = (user, derived_password(_secrets(passwords)[0], user))
    if tuple(current) == wanted:
        return wanted, []
    answers = {name: accepts(connect, *wanted) for name, connect in connects.items()}
    if cautious and not current[1]:
        # A Sentinel's login to the other Sentinels, none in use yet (a Sentinel just taken over
        # on a bare host, or set up before these logins): its default login works until every
        # other Sentinel knows the new user, and one that does not answer yet (a package
        # Sentinel listening on 127.0.0.1 only) may be one that does not. A Sentinel never
        # logs in again on a link to another Sentinel whose first AUTH failed, so this login
        # is only switched when every one of them says yes.
        waiting = [name for name, answer in answers.items() if answer is not True]
        return (tuple(current), waiting) if waiting else (wanted, [])
    waiting = []
    for name in (name for name, answer in answers.items() if answer is False):
        if accepts(connects[name], *current) is True:
            waiting.append(name)
        elif accepts(connects[name], *wanted) is not True:
            # Neither login works there: the new one anyway. (One that takes the new login
            # now was applied between the two questions: it is no reason to wait, nor to
            # give up waiting for the others.)
            return wanted, []
    return (tuple(current), waiting) if waiting else (wanted, [])


def settled_outgoing_login(passwords, user, current, connects, wait, cautious=False, interval=0.2):
    """:func:`outgoing_login`, asked again every ``interval`` seconds for up to ``wait`` seconds
    while it waits for nodes not applied yet (``wait`` 0, a dry run: asked once). Returns the
    answer that ended the wait: the peers move while we ask, so asking once more afterwards
    could name the login in use again, kept without a word until the next apply."""
    deadline = time.monotonic() + float(wait)
    while True:
        login, waiting = outgoing_login(passwords, user, current, connects, cautious)
        if not waiting or time.monotonic() >= deadline:
            return login, waiting
        time.sleep(interval)


def users_converged(client, passwords, users, on="server", dry_run=False):
    """:func:`converge_default_user`, then :func:`converge` for each of ``users``, on the
    process behind ``client``. Returns ``(changes, comments, unsaved)``: ``{what: differs}``
    per user that changed, each one's comment, and the comment of a change that could not be
    persisted (``""``)."""
    changes, comments = {}, []
    outcomes = [("default_user", converge_default_user(client, passwords, on, dry_run))]
    outcomes += [(user, converge(client, passwords, user, on, dry_run)) for user in users]
    for what, outcome in outcomes:
        comments.append(outcome["comment"])
        if outcome["changed"]:
            changes[what] = ", ".join(outcome["differs"])
        if not outcome["persisted"] and not dry_run:
            return changes, comments, outcome["comment"]
    return changes, comments, ""


def logins_state_return(ret, outcome, test):
    """A ``logins_converged`` state's return for a module's ``{"changes", "comment"}``."""
    ret.update(changes=outcome["changes"], comment=outcome["comment"])
    if test and outcome["changes"]:
        ret["result"] = None
    return ret


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
