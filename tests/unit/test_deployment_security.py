"""
The YAML's security keys (cache.redis.previous_password, force_password_change, acl.users):
validated before anything reaches a host, each error naming the file and the key, no
secret in any message; a minion's pillar carries application users' passwords as SHA-256
only, and the previous password is hidden like the password outside the master daemon.
"""

import hashlib

import pytest
from test_deployment import ENV, load, make_doc, rd, write_yaml

APP_PASSWORD = "app 'pw' \"x\""
OLD_PASSWORD = "old pw #1"
ENVIRON = dict(ENV, APP_PASSWORD=APP_PASSWORD, REDIS_OLD_PASSWORD=OLD_PASSWORD)


def node_pillar_of(deployment, minion):
    return rd.node_pillar(deployment, minion, 4096)


def doc(**redis_settings):
    return make_doc(3, redis_settings)


def user(**entry):
    return {"name": "app", "password": "${APP_PASSWORD}", "rules": "~app:* +@read +@write", **entry}


def refused(tmp_path, document):
    with pytest.raises(rd.DeploymentError) as err:
        load(tmp_path, document, ENVIRON)
    message = str(err.value)
    for secret in (APP_PASSWORD, OLD_PASSWORD, ENV["REDIS_PASSWORD"]):
        assert secret not in message
    return message


def test_a_previous_password_reaches_every_node_and_is_hidden_from_salt_run(tmp_path):
    deployment = load(tmp_path, doc(previous_password="${REDIS_OLD_PASSWORD}"), ENVIRON)
    pillar = node_pillar_of(deployment, "server2")
    assert pillar["previous_password"] == OLD_PASSWORD
    assert pillar["password"] == ENV["REDIS_PASSWORD"]
    assert "previous_password" not in node_pillar_of(load(tmp_path, doc(), ENVIRON), "server2")


def test_a_previous_password_equal_to_the_password_is_refused(tmp_path):
    message = refused(tmp_path, doc(previous_password="${REDIS_PASSWORD}"))
    assert message.endswith(
        "cache.redis.previous_password: expected the password being replaced, got the same as cache.redis.password "
        "(remove previous_password once every node has been applied with the new password)"
    )


@pytest.mark.parametrize("value", ["", 12345, "two\nlines"])
def test_a_malformed_previous_password_is_refused_without_echoing_it(tmp_path, value):
    assert ": cache.redis.previous_password: expected " in refused(tmp_path, doc(previous_password=value))


def test_force_password_change_reaches_every_node_only_when_set(tmp_path):
    forced = load(tmp_path, doc(force_password_change=True), ENVIRON)
    assert node_pillar_of(forced, "server2")["force_password_change"] is True
    assert "force_password_change" not in node_pillar_of(load(tmp_path, doc(force_password_change=False), ENVIRON),
                                                         "server2")


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_force_password_change_must_be_true_or_false(tmp_path, value):
    assert refused(tmp_path, doc(force_password_change=value)).endswith(
        f"cache.redis.force_password_change: expected true or false, got {value!r}"
    )


def test_application_users_reach_minions_as_hashes_only(tmp_path):
    digest = hashlib.sha256(b"reports-pw").hexdigest()
    users = [user(), {"name": "reports", "password_sha256": digest.upper(), "rules": ["~*", "+@read"]}]
    deployment = load(tmp_path, doc(acl={"users": users}), ENVIRON)
    pillar = node_pillar_of(deployment, "server1")
    assert pillar["acl_users"] == [
        {"name": "app", "password_sha256": hashlib.sha256(APP_PASSWORD.encode()).hexdigest(),
         "rules": ["~app:*", "+@read", "+@write"]},
        {"name": "reports", "password_sha256": digest, "rules": ["~*", "+@read"]},
    ]
    assert APP_PASSWORD not in repr(pillar)


def test_a_selector_stays_one_rule(tmp_path):
    deployment = load(tmp_path, doc(acl={"users": [user(rules="+get (~cache:* +set +del) ~app:*")]}), ENVIRON)
    assert node_pillar_of(deployment, "server1")["acl_users"][0]["rules"] == ["+get", "(~cache:* +set +del)", "~app:*"]


@pytest.mark.parametrize(
    "entry, key, expected",
    [
        (user(name="default"), "acl.users[0].name", "expected a name of your own: 'default' is reserved"),
        (user(name="salt-monitor"), "acl.users[0].name", "expected a name of your own: 'salt-monitor' is reserved"),
        (user(name="has space"), "acl.users[0].name", "expected a user name"),
        (user(password_sha256="ab" * 32), "acl.users[0]", "expected exactly one of password or password_sha256"),
        ({"name": "app", "rules": "+get"}, "acl.users[0]", "expected exactly one of password or password_sha256"),
        ({"name": "app", "password_sha256": "xyz", "rules": "+get"}, "acl.users[0].password_sha256",
         "expected 64 hex digits"),
        (user(rules="+get >other"), "acl.users[0].rules", "expected no password rule"),
        (user(rules="nopass +get"), "acl.users[0].rules", "expected no password rule"),
        (user(rules="+get (~a* +set"), "acl.users[0].rules", "expected a selector closed by ')'"),
        (user(rules="+get plus"), "acl.users[0].rules", "expected Redis ACL rules, got 'plus'"),
        (user(rules=7), "acl.users[0].rules", "expected ACL rules as a string or a list of strings"),
        (user(colour="red"), "acl.users[0].colour", "unknown key"),
        (user(password=""), "acl.users[0].password", "expected a non-empty password"),
    ],
)
def test_a_wrong_application_user_is_refused_naming_its_key(tmp_path, entry, key, expected):
    message = refused(tmp_path, doc(acl={"users": [entry]}))
    assert f": cache.redis.{key}: {expected}" in message


def test_a_duplicate_application_user_is_refused(tmp_path):
    assert "cache.redis.acl.users[1].name: duplicate user 'app'" in refused(
        tmp_path, doc(acl={"users": [user(), user()]})
    )


def test_an_error_elsewhere_never_shows_an_application_users_password(tmp_path):
    # The YAML quotes a secret inside another value by mistake: the message hides it.
    message = refused(tmp_path, doc(acl={"users": [user()]}, master_name="${APP_PASSWORD}"))
    assert "cache.redis.master_name" in message and rd.PASSWORD_IN_MESSAGE in message


def test_the_yaml_file_is_named_in_every_security_error(tmp_path):
    path = write_yaml(tmp_path, doc(acl={"users": "app"}))
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENVIRON))
    assert str(err.value) == f"{path}: cache.redis.acl.users: expected a list of {{name, password, rules}}"


def test_the_firewall_reaches_every_node_with_the_deployments_hosts_and_the_client_networks(tmp_path):
    deployment = load(tmp_path, doc(firewall=True, client_networks=["10.0.20.7/24", "fd00:20::/64", "10.0.20.0/24"]),
                      ENVIRON)
    firewall = node_pillar_of(deployment, "server2")["firewall"]
    assert firewall == {"enabled": True, "members": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                        "client_networks": ["10.0.20.0/24", "fd00:20::/64"]}


def test_a_sentinel_pairs_firewall_members_include_the_witness(tmp_path):
    document = make_doc(2, {"firewall": True, "sentinel": {"witnesses": ["server3"]}}, witnesses_without_redis=1)
    firewall = node_pillar_of(load(tmp_path, document, ENVIRON), "server3")["firewall"]
    assert firewall["members"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


@pytest.mark.parametrize("value, key, expected", [
    ("yes", "cache.redis.firewall", "expected true or false, got 'yes'"),
])
def test_a_firewall_that_is_not_true_or_false_is_refused(tmp_path, value, key, expected):
    assert refused(tmp_path, doc(firewall=value)).endswith(f"{key}: {expected}")


@pytest.mark.parametrize("networks, key, expected", [
    ("10.0.0.0/8", "cache.redis.client_networks",
     "expected a list of networks (CIDR, e.g. 10.0.0.0/24), got '10.0.0.0/8'"),
    (["10.0.0.0/33"], "cache.redis.client_networks[0]",
     "expected a network in CIDR notation (10.0.0.0/24, fd00::/64), got '10.0.0.0/33'"),
    (["10.0.0.0/8", 7], "cache.redis.client_networks[1]",
     "expected a network in CIDR notation (10.0.0.0/24, fd00::/64), got 7"),
])
def test_client_networks_must_be_cidrs(tmp_path, networks, key, expected):
    assert refused(tmp_path, doc(firewall=True, client_networks=networks)).endswith(f"{key}: {expected}")
