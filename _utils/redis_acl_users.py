"""
The applications' ACL users (``cache.redis.acl.users`` in the YAML, pillar ``redis:acl_users``:
``[{name, password_sha256, rules}]``) on one Redis server or Sentinel: what Redis is asked to
hold, how it checks the rules first, how what it holds is compared and what a run changes
(Salt's ``_utils``; the state ``redis_acl_users.present`` reaches them as
``__utils__["redis_acl_users.<name>"]``).

- A user is sent as ``ACL SETUSER <name> reset on|off #<sha256> <rules...>``: Redis gets the
  password's hash only. ``on``/``off`` among the YAML's rules decide the flag (default on).
- Redis checks the rules before anything changes (:func:`check`): every wanted user is created
  under a temporary disabled name ``salt-check-<random>``, its ``ACL LIST`` line read, and
  every temporary user deleted again. A rule Redis refuses names its user and Redis's reason.
  A dry run (``test=True``) checks too: the temporary users are disabled and live for two
  commands, never saved.
- What Redis made of the wanted rules (that line, name and on/off left out) is compared with
  the real user's line (:func:`differences`): Redis's own normal form on both sides, so a
  re-apply changes nothing, whatever the server's version writes.
- On a Sentinel the YAML's rules mean nothing (no keys; Sentinel refuses the data commands,
  ``+get``, and grants nothing for ``+@read``): there each user gets ``SENTINEL_RULES``, what a
  client needs to find the master (``SENTINEL get-master-addr-by-name``, the replicas and
  Sentinels, the failover events), with its own password and on/off, so applications log in to
  the Sentinels with their own name instead of the deployment's password.
- Removed from the YAML, a user is deleted only where Salt created it (the caller keeps that
  record); ``default`` and ``salt-*`` never are, except temporary users a killed run left.

:depends: redis (redis-py)
"""

import re
import secrets

try:
    import redis

    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "redis_acl_users"

CHECK_PREFIX = "salt-check-"
RESERVED = re.compile(r"^(default|salt-.*)$")
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Rules that set or drop a password: the password comes from password_sha256 only.
_PASSWORD_RULE = re.compile(r"^([<>#!].*|nopass|resetpass|reset)$", re.IGNORECASE)
# An application user on a Sentinel: find the master, its replicas and the Sentinels, follow
# failovers (Sentinel's events are published on channels named after them), nothing else.
SENTINEL_RULES = (
    "resetchannels", "&*", "-@all", "+ping", "+role", "+info", "+client|setname", "+client|getname",
    "+sentinel|get-master-addr-by-name", "+sentinel|master", "+sentinel|masters", "+sentinel|replicas",
    "+sentinel|slaves", "+sentinel|sentinels", "+subscribe", "+psubscribe", "+unsubscribe", "+punsubscribe",
)


def __virtual__():
    if not HAS_REDIS:
        return (False, "redis_acl_users: the redis Python library (redis-py) is not installed")
    return __virtualname__


def wanted(users, on="server"):
    """Pillar ``redis:acl_users`` as ``{name: {"enabled": bool, "rules": [...]}}``: ``rules`` are
    the ``ACL SETUSER`` arguments after ``reset on|off`` (the hash first). Raises
    SaltInvocationError for an entry the ext_pillar would not have produced."""
    if on not in ("server", "sentinel"):
        raise SaltInvocationError(f"on: expected server or sentinel, got {on!r}")
    if not isinstance(users, list):
        raise SaltInvocationError("pillar redis:acl_users: expected a list of {name, password_sha256, rules}")
    result = {}
    for index, user in enumerate(users):
        where = f"pillar redis:acl_users[{index}]"
        if not isinstance(user, dict):
            raise SaltInvocationError(f"{where}: expected a mapping with name, password_sha256 and rules")
        name, digest, rules = user.get("name"), user.get("password_sha256"), user.get("rules") or []
        if not isinstance(name, str) or not _NAME.match(name) or RESERVED.match(name):
            raise SaltInvocationError(f"{where}.name: expected a user name of the application's, got {name!r}")
        if name in result:
            raise SaltInvocationError(f"{where}.name: duplicate user {name!r}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise SaltInvocationError(f"{where}.password_sha256: expected 64 lowercase hex digits")
        if not isinstance(rules, list) or not all(isinstance(rule, str) and rule for rule in rules):
            raise SaltInvocationError(f"{where}.rules: expected a list of ACL rules")
        if [rule for rule in rules if _PASSWORD_RULE.match(rule)]:
            raise SaltInvocationError(f"{where}.rules: expected no password rule (Salt sets the password)")
        flags = [rule.lower() for rule in rules if rule.lower() in ("on", "off")]
        kept = [rule for rule in rules if rule.lower() not in ("on", "off")]
        result[name] = {"enabled": flags[-1:] != ["off"],
                        "rules": [f"#{digest}", *(SENTINEL_RULES if on == "sentinel" else kept)]}
    return result


def setuser_args(name, user, enabled=None):
    """``ACL SETUSER`` arguments for ``user`` (an item of :func:`wanted`) under ``name``."""
    enabled = user["enabled"] if enabled is None else enabled
    return ["ACL", "SETUSER", name, "reset", "on" if enabled else "off", *user["rules"]]


def split_line(line):
    """An ``ACL LIST`` line as ``(name, enabled, [the other words])``."""
    words = line.split(" ")
    return words[1], "on" in words[2:], [word for word in words[2:] if word not in ("on", "off")]


def _password_words(words):
    return sorted(word for word in words if word.startswith("#") or word == "nopass")


def differences(current, enabled, described):
    """What differs between the ``ACL LIST`` line ``current`` of a user (None: no such user) and
    the one Redis ``described`` for the wanted rules, the wanted flag being ``enabled``:
    ``missing``, ``switched on``/``switched off``, ``password``, ``rules``. Empty: nothing."""
    if current is None:
        return ["missing"]
    _, is_on, words = split_line(current)
    _, _, wanted_words = split_line(described)
    found = []
    if is_on != enabled:
        found.append("switched on" if enabled else "switched off")
    if _password_words(words) != _password_words(wanted_words):
        found.append("password")
    if [w for w in words if w not in _password_words(words)] != [
            w for w in wanted_words if w not in _password_words(wanted_words)]:
        found.append("rules")
    return found


def _error(exc):
    return f"{type(exc).__name__}: {exc}"


def _listed(client):
    return {split_line(line)[0]: line for line in client.execute_command("ACL", "LIST")}


def check(client, users):
    """Let Redis check ``users`` (:func:`wanted`): each one created under a temporary disabled
    name, Redis's line for it read, every temporary user deleted again.

    Returns ``{"described": {name: line}, "refused": {name: Redis's reason}, "listed": {name:
    line}}``, ``listed`` being the users the process held (the temporary ones left out).
    Raises CommandExecutionError when the process does not answer as it should."""
    temporary, refused = {}, {}
    try:
        for name, user in users.items():
            check_name = CHECK_PREFIX + secrets.token_hex(8)
            temporary[name] = check_name
            try:
                client.execute_command(*setuser_args(check_name, user, enabled=False))
            except redis.ResponseError as exc:
                refused[name] = str(exc)
        listed = _listed(client)
    except redis.RedisError as exc:
        raise CommandExecutionError(f"checking the ACL users: {_error(exc)}") from None
    finally:
        if temporary:
            try:
                client.execute_command("ACL", "DELUSER", *temporary.values())
            except redis.RedisError as exc:
                raise CommandExecutionError(f"deleting the temporary ACL users: {_error(exc)}") from None
    described = {name: listed[check_name] for name, check_name in temporary.items()
                 if name not in refused and check_name in listed}
    ours = set(temporary.values())
    return {"described": described, "refused": refused,
            "listed": {name: line for name, line in listed.items() if name not in ours}}


def plan(users, checked, created):
    """What a run does (pure): ``users`` from :func:`wanted`, ``checked`` from :func:`check`,
    ``created`` the names Salt created on this process before.

    Returns ``{"create": [names], "update": {name: [what]}, "delete": [names], "record": [names
    Salt created that are left afterwards]}``: deleted are the users Salt created and the YAML
    no longer has, and temporary users a killed run left behind."""
    listed = checked["listed"]
    update = {}
    for name, user in users.items():
        found = differences(listed.get(name), user["enabled"], checked["described"][name])
        if found and found != ["missing"]:
            update[name] = found
    create = sorted(name for name in users if name not in listed)
    gone = sorted(name for name in created if name not in users and not RESERVED.match(name))
    leftovers = sorted(name for name in listed if name.startswith(CHECK_PREFIX))
    delete = [name for name in gone if name in listed] + leftovers
    record = sorted({name for name in created if name in users} | set(create))
    return {"create": create, "update": update, "delete": delete, "record": record}


def changes(todo):
    """The state's ``changes`` for a plan: ``created``, ``updated`` and ``removed`` (what differed
    is named, never a password or its hash)."""
    result = {}
    if todo["create"]:
        result["created"] = list(todo["create"])
    if todo["update"]:
        result["updated"] = {name: ", ".join(found) for name, found in todo["update"].items()}
    if todo["delete"]:
        result["removed"] = list(todo["delete"])
    return result


def summary(todo, done=True):
    """A plan in words: ``created app; updated reports (rules); removed old`` (``done=False``:
    ``create app; ...``)."""
    verbs = ("created", "updated", "removed") if done else ("create", "update", "remove")
    parts = []
    if todo["create"]:
        parts.append(f"{verbs[0]} " + ", ".join(todo["create"]))
    if todo["update"]:
        updated = (f"{name} ({', '.join(found)})" for name, found in todo["update"].items())
        parts.append(f"{verbs[1]} " + ", ".join(updated))
    if todo["delete"]:
        parts.append(f"{verbs[2]} " + ", ".join(todo["delete"]))
    return "; ".join(parts) or ("saved what a previous run changed" if done else "save what a previous run changed")


def apply(client, users, todo):
    """Carry out a plan: ``ACL SETUSER`` for every user created or updated, ``ACL DELUSER`` for
    the ones removed. Raises CommandExecutionError naming the user Redis refused."""
    for name in [*todo["create"], *todo["update"]]:
        try:
            client.execute_command(*setuser_args(name, users[name]))
        except redis.RedisError as exc:
            raise CommandExecutionError(f"ACL SETUSER {name}: {_error(exc)}") from None
    if todo["delete"]:
        try:
            client.execute_command("ACL", "DELUSER", *todo["delete"])
        except redis.RedisError as exc:
            raise CommandExecutionError(f"ACL DELUSER {' '.join(todo['delete'])}: {_error(exc)}") from None
