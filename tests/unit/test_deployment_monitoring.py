"""cache.redis.monitoring in the deployment YAML (_pillar/redis_deployment.py): the thresholds
of ``redis_cluster.health``, validated with their defaults, reaching pillar redis:monitoring."""

import pytest

from test_deployment import ENV, make_doc, rd, write_yaml

DEFAULTS = {
    "memory_warning_percent": 90, "memory_critical_percent": 98, "evictions_per_second": 1000,
    "clients_warning_percent": 90, "hit_rate_minimum": 0.8, "hit_rate_min_lookups": 1000,
    "replication_lag_seconds": 30, "slowlog_new_entries": 10, "socket_timeout_seconds": 2,
    "backup_grace_minutes": 60, "health_interval_minutes": 5, "critical_reminder_minutes": 60, "exporter": False,
    "group": "redis-monitoring",
}


def monitoring_doc(monitoring):
    return make_doc(3, {"monitoring": monitoring})


def load(tmp_path, document):
    return rd.load_deployment(write_yaml(tmp_path, document), dict(ENV))


def refused(tmp_path, monitoring):
    path = write_yaml(tmp_path, monitoring_doc(monitoring))
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert str(err.value).startswith(f"{path}: ")
    return str(err.value)[len(path) + 2:]


def test_absent_monitoring_gives_the_defaults_in_every_redis_minions_pillar(tmp_path):
    deployment = load(tmp_path, make_doc(3))
    assert deployment["settings"]["monitoring"] == DEFAULTS
    pillar = rd.node_pillar(deployment, "server2", 4096)
    assert pillar["monitoring"] == DEFAULTS
    assert "monitoring" not in rd.node_pillar(deployment, "elsewhere", 4096)  # no Redis role: nothing


def test_the_defaults_are_the_health_rules_own():
    from support.lab import ROOT
    from support.loaders import load_file

    rules = load_file("redis_health_defaults", ROOT / "_utils" / "redis_health.py")
    assert rd.MONITORING_DEFAULTS == rules.DEFAULTS == DEFAULTS


def test_given_thresholds_override_the_defaults_one_by_one(tmp_path):
    given = {"memory_warning_percent": 80, "hit_rate_minimum": 0.95, "socket_timeout_seconds": 0.5,
             "slowlog_new_entries": 0, "exporter": False}
    monitoring = load(tmp_path, monitoring_doc(given))["settings"]["monitoring"]
    assert monitoring == dict(DEFAULTS, **given)
    assert load(tmp_path, monitoring_doc(None))["settings"]["monitoring"] == DEFAULTS


@pytest.mark.parametrize("monitoring, expected", [
    ({"memroy_warning_percent": 80}, "cache.redis.monitoring.memroy_warning_percent: unknown key; "
                                     "did you mean memory_warning_percent?"),
    ({"colour": 1}, "cache.redis.monitoring.colour: unknown key; expected one of " + ", ".join(sorted(DEFAULTS))),
    ({"memory_warning_percent": 0}, "cache.redis.monitoring.memory_warning_percent: expected a number from 1 to 100, "
                                    "got 0"),
    ({"memory_critical_percent": "98"}, "cache.redis.monitoring.memory_critical_percent: expected a number from 1 "
                                        "to 100, got '98'"),
    ({"memory_warning_percent": 98}, "cache.redis.monitoring.memory_warning_percent: expected a level below "
                                     "memory_critical_percent (98), got 98"),
    ({"hit_rate_minimum": 80}, "cache.redis.monitoring.hit_rate_minimum: expected a number from 0 to 1, got 80"),
    ({"hit_rate_min_lookups": 1.5}, "cache.redis.monitoring.hit_rate_min_lookups: expected an integer from 0 to "
                                    "1000000000000, got 1.5"),
    ({"slowlog_new_entries": True}, "cache.redis.monitoring.slowlog_new_entries: expected an integer from 0 to "
                                    "1000000000, got True"),
    ({"socket_timeout_seconds": 0}, "cache.redis.monitoring.socket_timeout_seconds: expected a number from 0.1 to "
                                    "60, got 0"),
    ({"exporter": "yes"}, "cache.redis.monitoring.exporter: expected true or false, got 'yes'"),
    ({"group": "Nagios Users"}, "cache.redis.monitoring.group: expected a system group name (lower-case letters, "
                                "digits, - and _), got 'Nagios Users'"),
], ids=["typo", "nothing-close", "below-range", "a-string", "warning-not-below-critical", "ratio-not-percent",
        "not-an-integer", "a-boolean", "zero-timeout", "exporter-not-a-boolean", "group-with-a-space"])
def test_a_bad_monitoring_key_names_itself_and_what_was_expected(tmp_path, monitoring, expected):
    assert refused(tmp_path, monitoring) == expected


def test_monitoring_that_is_not_a_mapping_is_refused(tmp_path):
    assert refused(tmp_path, [90]) == "cache.redis.monitoring: expected a mapping, got list"
