"""The applications' ACL users, pure logic (_utils/redis_acl_users.py): what is sent to Redis,
how Redis's ACL LIST lines are compared and what a run creates, updates and deletes (against
real servers and a real Sentinel: tests/functional/test_acl_users.py)."""

import pytest
from salt.exceptions import SaltInvocationError
from support.lab import ROOT
from support.loaders import load_file

acl_users = load_file("redis_acl_users_under_test", ROOT / "_utils" / "redis_acl_users.py")

HASH = "a" * 64
OTHER_HASH = "b" * 64


def user(name="app", rules=("~app:*", "+@read"), digest=HASH):
    return {"name": name, "password_sha256": digest, "rules": list(rules)}


def line(name="app", flag="on", digest=HASH, rules="~app:* resetchannels -@all +@read"):
    return f"user {name} {flag} sanitize-payload #{digest} {rules}"


def test_redis_gets_the_hash_the_flag_and_the_rules_and_a_sentinel_its_discovery_rules():
    wanted = acl_users.wanted([user(), user("ro", ("~*", "+@read", "OFF", "(~x* +get)"))])
    on_sentinel = acl_users.wanted([user(rules=("~app:*", "+get"))], on="sentinel")

    assert wanted == {"app": {"enabled": True, "rules": [f"#{HASH}", "~app:*", "+@read"]},
                      "ro": {"enabled": False, "rules": [f"#{HASH}", "~*", "+@read", "(~x* +get)"]}}
    assert acl_users.setuser_args("app", wanted["app"]) == ["ACL", "SETUSER", "app", "reset", "on", f"#{HASH}",
                                                            "~app:*", "+@read"]
    checked_as = acl_users.setuser_args("salt-check-1", wanted["app"], enabled=False)
    assert checked_as[2:5] == ["salt-check-1", "reset", "off"]
    assert on_sentinel["app"]["rules"] == [f"#{HASH}", *acl_users.SENTINEL_RULES]
    assert "+sentinel|get-master-addr-by-name" in acl_users.SENTINEL_RULES
    assert not [rule for rule in acl_users.SENTINEL_RULES if rule.startswith(("~", "+@", "+sentinel|set"))]


@pytest.mark.parametrize("users, message", [
    ([user("default")], "name"),
    ([user("salt-monitor")], "name"),
    ([user("has space")], "name"),
    ([user(), user()], "duplicate user 'app'"),
    ([user(digest="A" * 64)], "password_sha256"),
    ([user(digest="secret")], "password_sha256"),
    ([user(rules=(">plaintext",))], "expected no password rule"),
    ([user(rules=("nopass",))], "expected no password rule"),
    ([user(rules=("resetpass",))], "expected no password rule"),
    ([{"name": "app", "password_sha256": HASH, "rules": "~* +@all"}], "rules"),
    ({"name": "app"}, "expected a list"),
])
def test_entries_the_ext_pillar_never_gives_are_refused_before_redis_sees_them(users, message):
    with pytest.raises(SaltInvocationError, match=message) as refused:
        acl_users.wanted(users)
    assert "plaintext" not in str(refused.value)


def test_only_server_or_sentinel():
    with pytest.raises(SaltInvocationError, match="server or sentinel"):
        acl_users.wanted([], on="cluster")


def test_a_line_is_compared_without_its_name_and_the_flag_is_compared_apart():
    described = line("salt-check-0f", flag="off")

    assert acl_users.split_line(line()) == ("app", True, ["sanitize-payload", f"#{HASH}", "~app:*",
                                                          "resetchannels", "-@all", "+@read"])
    assert acl_users.differences(line(), True, described) == []
    assert acl_users.differences(None, True, described) == ["missing"]
    assert acl_users.differences(line(flag="off"), True, described) == ["switched on"]
    assert acl_users.differences(line(), False, described) == ["switched off"]
    assert acl_users.differences(line(digest=OTHER_HASH), True, described) == ["password"]
    assert acl_users.differences(line(rules="~* resetchannels -@all +@read"), True, described) == ["rules"]
    nopass = "user app on sanitize-payload nopass ~app:* resetchannels -@all +@read"
    assert acl_users.differences(nopass, True, described) == ["password"]
    # Order counts: "+@all -get" is not "-get +@all".
    assert acl_users.differences(line(rules="~app:* resetchannels +@read -@all"), True, described) == ["rules"]


def checked(listed, described):
    return {"listed": {acl_users.split_line(text)[0]: text for text in listed},
            "described": described, "refused": {}}


def test_a_plan_creates_the_missing_updates_what_differs_and_deletes_only_what_salt_created():
    users = acl_users.wanted([user("app"), user("new"), user("ops")])
    described = {name: line(f"salt-check-{name}", flag="off") for name in users}
    listed = [line("default", rules="~* &* +@all"), line("app", digest=OTHER_HASH), line("ops", flag="off"),
              line("old"), line("hand"), line("gone-by-hand-too"), line("salt-monitor"),
              line("salt-check-deadbeef", flag="off")]

    todo = acl_users.plan(users, checked(listed, described), ["app", "old", "salt-monitor", "default", "lost"])

    assert todo == {"create": ["new"], "update": {"app": ["password"], "ops": ["switched on"]},
                    "delete": ["old", "salt-check-deadbeef"], "record": ["app", "new"]}
    assert acl_users.changes(todo) == {"created": ["new"], "updated": {"app": "password", "ops": "switched on"},
                                       "removed": ["old", "salt-check-deadbeef"]}
    assert acl_users.summary(todo) == ("created new; updated app (password), ops (switched on); "
                                       "removed old, salt-check-deadbeef")
    assert acl_users.summary(todo, done=False).startswith("create new; update app (password), ")


def test_a_plan_with_everything_as_wanted_changes_nothing():
    users = acl_users.wanted([user("app")])
    todo = acl_users.plan(users, checked([line("default"), line("app")], {"app": line("salt-check-1", "off")}),
                          ["app"])

    assert todo == {"create": [], "update": {}, "delete": [], "record": ["app"]}
    assert acl_users.changes(todo) == {}
    assert acl_users.summary(todo) == "saved what a previous run changed"
