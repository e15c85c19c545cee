"""Every validation error of the deployment YAML that test_deployment.py's ERROR_CASES does
not already trigger: each case writes a YAML with one mistake and checks that
load_deployment's message is one line naming the file, the exact key path and what was
expected (and, where the module quotes it, the offending value).

Together with test_deployment.py this covers every ``raise DeploymentError`` of
_pillar/redis_deployment.py that reads the YAML; the per-minion errors are in
test_deployment_minions.py.
"""

import importlib.util
import json

import pytest
import yaml

from test_deployment import CTRL, ENV, REDIS, ROOT, _case_doc, make_doc, rd, write_yaml


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
        redis_setting("backup", {"keep_min": 0}),
        "cache.redis.backup.keep_min",
        "expected an integer from 1 to 1000, got 0",
        "keep-min-zero",
    ),
    case(
        redis_setting("backup", {"safety_copy_days": "7"}),
        "cache.redis.backup.safety_copy_days",
        "expected an integer from 0 to 36500, got '7'",
        "safety-copy-days-not-an-integer",
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


# ---------------------------------------------------------------- keys the formula does not read

SETTINGS_LISTED = (
    "acl, backup, client_networks, cluster_node_timeout_ms, cluster_rebalance_timeout_s, "
    "cluster_require_full_coverage, firewall, force_password_change, host_baseline, master_name, maxclients, "
    "maxmemory_percent, maxmemory_policy, min_replicas_max_lag, min_replicas_to_write, mode, monitoring, password, "
    "port, previous_password, replicas_per_master, sentinel, sentinel_port, server, server_by_host, tls"
)


def backup_entries(*entries):
    return redis_setting("backup", {"schedule": list(entries)})


UNREAD_KEYS = [
    case(redis_setting("maxmemroy_percent", 50), "cache.redis.maxmemroy_percent",
         "unknown key; did you mean maxmemory_percent?", "typo"),
    case(redis_setting("colour", "blue"), "cache.redis.colour",
         f"unknown key; expected one of {SETTINGS_LISTED}", "nothing-close"),
    # The mistyped key is the mistake, not the variable in its value nor the missing password.
    case(redis_setting("maxmemroy_percent", "${UNSET_PERCENT}"), "cache.redis.maxmemroy_percent",
         "unknown key; did you mean maxmemory_percent?", "typo-with-an-unset-variable"),
    case(_case_doc([(REDIS, {"pasword": "${REDIS_PASSWORD}"})]), "cache.redis.pasword",
         "unknown key; did you mean password?", "password-typo"),
    case(redis_setting("sentinel", {"down_after_msec": 3000}, count=2), "cache.redis.sentinel.down_after_msec",
         "unknown key; did you mean down_after_ms?", "sentinel-typo"),
    case(redis_setting("sentinel", {"quorum": 2}, count=2), "cache.redis.sentinel.quorum",
         "unknown key; expected one of down_after_ms, failover_timeout_ms, witnesses", "sentinel-nothing-close"),
    case(redis_setting("backup", {"retention": 3}), "cache.redis.backup.retention",
         "unknown key; did you mean retention_days?", "backup-typo"),
    case(redis_setting("backup", {"path": "/srv/bk"}), "cache.redis.backup.path",
         "unknown key; expected one of compress, copy_to, dir, keep_min, retention_days, safety_copy_days, "
         "schedule", "backup-nothing-close"),
    case(backup_entries({"cron": "0 3 * * *", "typ": "rdb"}), "cache.redis.backup.schedule[0].typ",
         "unknown key; did you mean type?", "schedule-entry-typo"),
    case(backup_entries({"cron": "0 3 * * *", "type": "rdb"}, {"prune": True, "type": "rdb"}),
         "cache.redis.backup.schedule[1].type",
         "unknown key in a prune entry; expected one of cron, prune, retention_days", "prune-entry-with-a-type"),
    case(backup_entries({"prune": "yes"}), "cache.redis.backup.schedule[0].prune",
         "expected true or false, got 'yes'", "prune-not-a-boolean"),
    case(redis_setting("maxmemory", "2gb"), "cache.redis.maxmemory",
         "is not read from this file: set redis:maxmemory in ordinary pillar instead (see pillar.example)",
         "pillar-only-maxmemory"),
    case(redis_setting("cluster_form_timeout_s", 300), "cache.redis.cluster_form_timeout_s",
         "is not read from this file: set redis:cluster_form_timeout_s in ordinary pillar instead "
         "(see pillar.example)", "pillar-only-form-timeout"),
    case(redis_setting("server", "memcached"), "cache.redis.server",
         "expected one of redis, valkey, got 'memcached'", "server-unknown"),
]


@pytest.mark.parametrize("build, key, expected", UNREAD_KEYS)
def test_a_key_the_formula_does_not_read_is_refused(tmp_path, build, key, expected):
    path = write_yaml(tmp_path, build())
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert str(err.value) == f"{path}: {key}: {expected}"


def test_the_first_unread_key_in_file_order_is_reported(tmp_path):
    path = write_yaml(tmp_path, _case_doc([(REDIS + ("colour",), "blue"), (REDIS + ("maxclient",), 5)])())
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert str(err.value).startswith(f"{path}: cache.redis.colour: unknown key")


def test_a_valid_backup_schedule_passes(tmp_path):
    entries = [
        {"cron": "0 3 * * *", "type": "rdb", "compress": "zstd", "retention_days": 30, "prune": False},
        {"prune": True, "cron": "30 4 * * *", "retention_days": 7},
        "not a mapping: _states/redis_backup.py says what an entry looks like",
    ]
    path = write_yaml(tmp_path, backup_entries(*entries)())
    assert rd.load_deployment(path, dict(ENV))["settings"]["backup"]["schedule"] == entries


def test_schedule_keys_are_the_ones_the_backup_state_reads():
    spec = importlib.util.spec_from_file_location("redis_backup_state", ROOT / "_states" / "redis_backup.py")
    state = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(state)
    assert set(rd.SCHEDULE_BACKUP_KEYS) == set(state.BACKUP_KEYS) | {"prune"}  # `prune: false` is a backup entry
    assert set(rd.SCHEDULE_PRUNE_KEYS) == set(state.PRUNE_KEYS)


def test_salt_run_redis_deployment_check_reports_the_same_error(tmp_path):
    spec = importlib.util.spec_from_file_location("redis_deployment_runner", ROOT / "_runners" / "redis_deployment.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    runner.__context__ = {}
    runner.__opts__ = {"__role": "master", "__cli": "salt-run-in-a-test", "ext_pillar": []}  # no salt-run clean-up
    path = write_yaml(tmp_path, redis_setting("maxmemroy_percent", 50)())
    result = runner.check(config=path)
    message = f"{path}: cache.redis.maxmemroy_percent: unknown key; did you mean maxmemory_percent?"
    assert result["problems"] == [message]
    assert result["ok"] is False
    assert runner.__context__["retcode"] == 1


# ---------------------------------------------------------------- backup.dir away from live data

LIVE = "restore and prune would work on live data"
OUTSIDE = "expected a directory outside Redis's data and configuration directories"


@pytest.mark.parametrize(
    "directory, relation",
    [
        ("/var/lib/redis", "is /var/lib/redis (Redis's data directory)"),
        ("/var/lib/redis/", "is /var/lib/redis (Redis's data directory)"),
        ("/var/lib/redis/bk", "is inside /var/lib/redis (Redis's data directory)"),
        ("//var/lib/redis/./bk", "is inside /var/lib/redis (Redis's data directory)"),
        ("//var/lib/redis", "is /var/lib/redis (Redis's data directory)"),
        ("/srv/../var/lib/redis/bk", "is inside /var/lib/redis (Redis's data directory)"),
        ("/etc/redis/backups", "is inside /etc/redis (Redis's configuration directory)"),
        ("/var/lib/valkey", "is /var/lib/valkey (Valkey's data directory)"),
        ("/etc/valkey/bk", "is inside /etc/valkey (Valkey's configuration directory)"),
        ("/etc/redis-salt", "is /etc/redis-salt (this formula's settings directory)"),
    ],
)
def test_a_backup_dir_among_the_live_files_is_refused(tmp_path, directory, relation):
    path = write_yaml(tmp_path, redis_setting("backup", {"dir": directory})())
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert str(err.value) == f"{path}: cache.redis.backup.dir: {OUTSIDE}, got {directory!r}, which {relation}: {LIVE}"


@pytest.mark.parametrize(
    "directory", ["/var/lib/redis/../backups", "/var/lib/redis-backups", "/etc/redis.bak", "/var/backups/redis"]
)
def test_a_backup_dir_next_to_the_live_files_is_accepted(tmp_path, directory):
    path = write_yaml(tmp_path, redis_setting("backup", {"dir": directory})())
    assert rd.load_deployment(path, dict(ENV))["settings"]["backup"]["dir"] == directory


# ---------------------------------------------------------------- cluster_rebalance_timeout_s


@pytest.mark.parametrize("value", [59, 86401, "3600", True, 600.5])
def test_a_rebalance_budget_out_of_range_is_refused(tmp_path, value):
    path = write_yaml(tmp_path, redis_setting("cluster_rebalance_timeout_s", value)())
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert str(err.value) == (
        f"{path}: cache.redis.cluster_rebalance_timeout_s: expected an integer from 60 to 86400, got {value!r}"
    )


@pytest.mark.parametrize("value, expected", [(None, 3600), (60, 60), (86400, 86400)])
def test_the_rebalance_budget_reaches_the_node_pillar(tmp_path, value, expected):
    settings = {} if value is None else {"cluster_rebalance_timeout_s": value}
    path = write_yaml(tmp_path, make_doc(3, settings))
    deployment = rd.load_deployment(path, dict(ENV))
    assert rd.node_pillar(deployment, "server1", 4096)["cluster_rebalance_timeout_s"] == expected


def test_pillar_example_documents_every_key_the_yaml_accepts(tmp_path):
    lines = (ROOT / "pillar.example").read_text().splitlines()
    start = lines.index("# cache:")
    block = "\n".join(line[2:] for line in lines[start:lines.index("# nodes:", start)])
    documented = yaml.safe_load(block)["cache"]["redis"]
    assert set(documented) == set(rd.SETTINGS_KEYS)
    assert set(documented["sentinel"]) == set(rd.SENTINEL_DEFAULTS)
    assert set(documented["backup"]) == set(rd.BACKUP_DEFAULTS)
    # ... and the documented values are valid ones.
    doc = make_doc(3)
    doc["cache"]["redis"] = documented
    environ = dict(ENV, REDIS_OLD_PASSWORD="old-pw")
    assert rd.load_deployment(write_yaml(tmp_path, doc), environ)["settings"]["cluster_rebalance_timeout_s"] == 3600
