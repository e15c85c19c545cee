"""Every validation error of the deployment YAML that test_deployment.py's ERROR_CASES does
not already trigger: each case writes a YAML with one mistake and checks that
load_deployment's message is one line naming the file, the exact key path and what was
expected (and, where the module quotes it, the offending value).

Together with test_deployment.py this covers every ``raise DeploymentError`` of
_pillar/redis_deployment.py that reads the YAML; the per-minion errors are in
test_deployment_minions.py.
"""

import json

import pytest

from test_deployment import CTRL, ENV, REDIS, _case_doc, rd, write_yaml


def case(build, key, expectation, case_id):
    return pytest.param(build, key, expectation, id=case_id)


def redis_setting(name, value, count=3, **kwargs):
    return _case_doc([(REDIS + (name,), value)], count=count, **kwargs)


CASES = [
    # ---- structure
    case(_case_doc([(("nodes",), ["server1"])]), "nodes", "expected a mapping, got list", "nodes-not-mapping"),
    case(_case_doc([(("cache",), "redis")]), "cache", "expected a mapping, got str", "cache-not-mapping"),
    case(_case_doc([(REDIS, ["x"])]), "cache.redis", "expected a mapping, got list", "cache-redis-not-mapping"),
    # ---- controllers
    case(
        _case_doc([(CTRL + (1, "hostname"), "server_2!")]),
        "nodes.controllers[1].hostname",
        "expected a valid host name, got 'server_2!'",
        "hostname-invalid",
    ),
    case(
        _case_doc([(CTRL + (1, "hostname"), "   ")]),
        "nodes.controllers[1].hostname",
        "is missing: expected the controller's host name",
        "hostname-blank",
    ),
    case(
        _case_doc([(CTRL + (1, "hostname"), 42)]),
        "nodes.controllers[1].hostname",
        "is missing: expected the controller's host name",
        "hostname-not-a-string",
    ),
    case(
        _case_doc([(CTRL + (1, "ip_address"), "224.0.0.1")]),
        "nodes.controllers[1].ip_address",
        "expected the controller's unicast IP address, got '224.0.0.1'",
        "ip-multicast",
    ),
    case(
        _case_doc([(CTRL + (1, "ip_address"), "${UNSET_IP}")]),
        "nodes.controllers[1].ip_address",
        "environment variable UNSET_IP is not set in the salt-master's environment",
        "ip-unset-variable",
    ),
    case(
        _case_doc([(CTRL + (1, "minion_id"), "")]),
        "nodes.controllers[1].minion_id",
        "expected a Salt minion id, got ''",
        "minion-id-empty",
    ),
    case(
        _case_doc([(CTRL + (1, "minion_id"), 42)]),
        "nodes.controllers[1].minion_id",
        "expected a Salt minion id, got 42",
        "minion-id-not-a-string",
    ),
    case(
        _case_doc([(CTRL + (1, "services"), "redis")]),
        "nodes.controllers[1].services",
        "expected a mapping, got str",
        "services-not-mapping",
    ),
    case(
        _case_doc([(CTRL + (0, "minion_id"), "shared"), (CTRL + (2, "minion_id"), "shared")]),
        "nodes.controllers[2].minion_id",
        "duplicate minion_id 'shared', already used by nodes.controllers[0]",
        "duplicate-minion-id",
    ),
    case(
        _case_doc([(CTRL + (2, "hostname"), "SERVER1")]),
        "nodes.controllers[2].hostname",
        "duplicate hostname 'server1', already used by nodes.controllers[0]",
        "duplicate-hostname-other-case",
    ),
    # ---- password
    case(
        redis_setting("password", 12345),
        "cache.redis.password",
        "expected a string, got int (quote the password in the YAML)",
        "password-a-number",
    ),
    case(
        redis_setting("password", "pass\nword"),
        "cache.redis.password",
        "expected a password without control characters or line breaks",
        "password-line-break",
    ),
    # ---- cache.redis settings
    case(
        redis_setting("port", "6379"),
        "cache.redis.port",
        "expected an integer from 1 to 65535, got '6379'",
        "port-text",
    ),
    case(redis_setting("port", True), "cache.redis.port", "expected an integer from 1 to 65535, got True", "port-bool"),
    case(
        redis_setting("sentinel_port", 0),
        "cache.redis.sentinel_port",
        "expected an integer from 1 to 65535, got 0",
        "sentinel-port-zero",
    ),
    case(
        redis_setting("sentinel_port", 6379),
        "cache.redis.sentinel_port",
        "expected a port different from cache.redis.port",
        "sentinel-port-equals-port",
    ),
    case(
        redis_setting("maxclients", 0),
        "cache.redis.maxclients",
        "expected an integer from 1 to 1000000, got 0",
        "maxclients-zero",
    ),
    case(
        redis_setting("replicas_per_master", 6),
        "cache.redis.replicas_per_master",
        "expected an integer from 0 to 5, got 6",
        "replicas-per-master-six",
    ),
    case(
        redis_setting("cluster_node_timeout_ms", 50),
        "cache.redis.cluster_node_timeout_ms",
        "expected an integer from 100 to 600000, got 50",
        "cluster-node-timeout-too-short",
    ),
    case(
        redis_setting("cluster_require_full_coverage", "no"),
        "cache.redis.cluster_require_full_coverage",
        "expected true or false, got 'no'",
        "full-coverage-not-a-boolean",
    ),
    case(
        redis_setting("maxmemory_percent", 0),
        "cache.redis.maxmemory_percent",
        "expected a number above 0 and at most 100, got 0",
        "maxmemory-percent-zero",
    ),
    case(
        redis_setting("maxmemory_percent", 150),
        "cache.redis.maxmemory_percent",
        "expected a number above 0 and at most 100, got 150",
        "maxmemory-percent-150",
    ),
    case(
        redis_setting("maxmemory_percent", "25%"),
        "cache.redis.maxmemory_percent",
        "expected a number above 0 and at most 100, got '25%'",
        "maxmemory-percent-text",
    ),
    case(
        redis_setting("master_name", "my master"),
        "cache.redis.master_name",
        "expected letters, digits, '.', '_' or '-', got 'my master'",
        "master-name-space",
    ),
    case(
        redis_setting("master_name", 5),
        "cache.redis.master_name",
        "expected letters, digits, '.', '_' or '-', got 5",
        "master-name-number",
    ),
    case(
        redis_setting("master_name", "${UNSET_NAME}"),
        "cache.redis.master_name",
        "environment variable UNSET_NAME is not set",
        "setting-unset-variable",
    ),
    # ---- cache.redis.sentinel
    case(
        redis_setting("sentinel", "yes"), "cache.redis.sentinel", "expected a mapping, got str", "sentinel-not-mapping"
    ),
    case(
        redis_setting("sentinel", {"down_after_ms": 10}),
        "cache.redis.sentinel.down_after_ms",
        "expected an integer from 100 to 3600000, got 10",
        "down-after-too-short",
    ),
    case(
        redis_setting("sentinel", {"failover_timeout_ms": 999}),
        "cache.redis.sentinel.failover_timeout_ms",
        "expected an integer from 1000 to 86400000, got 999",
        "failover-timeout-too-short",
    ),
    case(
        redis_setting("sentinel", {"witnesses": "server3"}, count=2, witnesses_without_redis=1),
        "cache.redis.sentinel.witnesses",
        "expected a list of controller hostnames",
        "witnesses-not-a-list",
    ),
    case(
        redis_setting("sentinel", {"witnesses": [3]}, count=2),
        "cache.redis.sentinel.witnesses",
        "expected a list of controller hostnames",
        "witness-not-a-name",
    ),
    case(
        redis_setting("sentinel", {"witnesses": ["server2"]}, count=2),
        "cache.redis.sentinel.witnesses[0]",
        "expected a controller without services.redis, 'server2' runs Redis",
        "witness-runs-redis",
    ),
    # ---- cache.redis.backup
    case(redis_setting("backup", []), "cache.redis.backup", "expected a mapping, got list", "backup-not-mapping"),
    case(
        redis_setting("backup", {"dir": "backups"}),
        "cache.redis.backup.dir",
        "expected an absolute path, got 'backups'",
        "backup-dir-relative",
    ),
    case(
        redis_setting("backup", {"retention_days": -1}),
        "cache.redis.backup.retention_days",
        "expected an integer from 0 to 36500, got -1",
        "retention-negative",
    ),
    case(
        redis_setting("backup", {"schedule": "daily"}),
        "cache.redis.backup.schedule",
        "expected a list of schedule entries",
        "schedule-not-a-list",
    ),
    # ---- the deployment as a whole
    case(
        redis_setting("port", 60000),
        "cache.redis.port",
        "expected a port of at most 55535 in cluster mode (the bus uses port + 10000)",
        "cluster-port-above-55535",
    ),
]


@pytest.mark.parametrize("build, key, expectation", CASES)
def test_validation_error_names_file_key_and_expectation(tmp_path, build, key, expectation):
    path = write_yaml(tmp_path, build())
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert expectation in message
    assert err.value.key == key
    assert "\n" not in message


def test_a_yaml_syntax_error_names_line_and_column(tmp_path):
    path = write_yaml(tmp_path, "cache:\n  redis:\n    password: x\nnodes: controllers: []\n")
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert str(err.value) == f"{path}: line 4, column 19: is not valid YAML: mapping values are not allowed here"


def test_empty_file_is_not_a_deployment(tmp_path):
    path = write_yaml(tmp_path, "")
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert str(err.value) == f"{path}: (top level): expected a mapping with nodes.controllers and cache.redis"


def test_a_directory_cannot_be_read(tmp_path):
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(str(tmp_path), dict(ENV))
    assert str(err.value) == f"{tmp_path}: (file): cannot be read: Is a directory"


def test_the_password_is_not_echoed_when_it_is_a_number(tmp_path):
    path = write_yaml(tmp_path, "cache:\n  redis:\n    password: 987654321\nnodes:\n  controllers: []\n")
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert err.value.key == "cache.redis.password"
    assert "expected a string" in str(err.value)
    assert "987654321" not in str(err.value)


# A password that reads differently as is, in repr() and in JSON: quotes, a backslash,
# a space and a non-ASCII letter.
TRICKY_PASSWORD = "pa ss\"wo'r\\dé"
PASSWORD_SPELLINGS = (TRICKY_PASSWORD, repr(TRICKY_PASSWORD)[1:-1], json.dumps(TRICKY_PASSWORD)[1:-1])


@pytest.mark.parametrize(
    "where, key, expectation",
    [
        (REDIS + ("port",), "cache.redis.port", "expected an integer from 1 to 65535, got '(the password)'"),
        (REDIS + ("master_name",), "cache.redis.master_name", "expected letters, digits"),
        (CTRL + (1, "hostname"), "nodes.controllers[1].hostname", "expected a valid host name, got '(the password)'"),
        (CTRL + (1, "ip_address"), "nodes.controllers[1].ip_address", "expected the controller's unicast IP address"),
        (REDIS + ("backup",), "cache.redis.backup.dir", "expected an absolute path, got '(the password)'"),
    ],
    ids=["port", "master-name", "hostname", "ip-address", "backup-dir"],
)
def test_a_value_that_holds_the_password_is_not_quoted(tmp_path, where, key, expectation):
    # An operator pastes ${REDIS_PASSWORD} into the wrong line: the message must still
    # name the key, and show no spelling of the password.
    value = {"dir": "${REDIS_PASSWORD}"} if key.endswith(".dir") else "${REDIS_PASSWORD}"
    path = write_yaml(tmp_path, _case_doc([(where, value)])())
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, {"REDIS_PASSWORD": TRICKY_PASSWORD})
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: ")
    assert expectation in message
    for spelling in PASSWORD_SPELLINGS:
        assert spelling not in message


def test_a_password_quoted_inside_a_longer_value_is_not_shown(tmp_path):
    # The value holds both quote characters, so repr() escapes the password's ' as \'.
    value = '"${REDIS_PASSWORD}'
    path = write_yaml(tmp_path, _case_doc([(CTRL + (1, "hostname"), value)])())
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, {"REDIS_PASSWORD": "it's-a-secret"})
    assert str(err.value) == (
        f"{path}: nodes.controllers[1].hostname: expected a valid host name, got '\"(the password)'"
    )
