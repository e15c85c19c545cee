"""ext_pillar as the salt-master runs it for one minion: which controller a minion is
(its id, or its id's first label), the cross-check with the minion's own address grains,
the mem_total grain, ``redis:maxmemory`` overrides with Redis's units, and the error
contract: on any mistake pillar ``redis`` is ``{error: <one line>, role: none, mode: none}``
and holds no password, so the pillar render succeeds and other formulas still run.

Salt gives a pillar module its grains and options as the module globals ``__grains__``
and ``__opts__``; the tests set them the same way.
"""

import json

import pytest

from test_deployment import CTRL, EXAMPLE_YAML, MASTER_OPTS, _case_doc, make_doc, minion_pillar_request, rd, write_yaml

PASSWORD = "pa ss\"wo'r\\dé"  # reads differently as is, in repr() and in JSON
SPELLINGS = (PASSWORD, repr(PASSWORD)[1:-1], json.dumps(PASSWORD)[1:-1])

# Grains of the example's hosts: RAM in MiB and the addresses the minion reports.
SERVER1 = {"mem_total": 8192, "ipv4": ["127.0.0.1", "192.168.1.101"]}

# Pillar redis of minion server1 for the example before minion matching changed
# (computed by the previous version of the module), without formula_modules.
EXAMPLE_SERVER1 = {
    "mode": "cluster",
    "role": "cluster-node",
    "deployment_file": None,  # the test's path
    "hostname": "server1",
    "bind_ip": "192.168.1.101",
    "port": 6379,
    "sentinel_port": 26379,
    "server": "redis",
    "password": PASSWORD,
    "acl_users": [],
    "peers": [
        {"hostname": "server1", "minion_id": "server1", "ip": "192.168.1.101", "port": 6379},
        {"hostname": "server2", "minion_id": "server2", "ip": "192.168.1.102", "port": 6379},
        {"hostname": "server3", "minion_id": "server3", "ip": "192.168.1.103", "port": 6379},
    ],
    "initial_master": {"hostname": "server1", "minion_id": "server1", "ip": "192.168.1.101", "port": 6379},
    "master_name": "mymaster",
    "replicas_per_master": 0,
    "cluster_node_timeout_ms": 5000,
    "cluster_rebalance_timeout_s": 3600,
    "cluster_require_full_coverage": True,
    "min_replicas_to_write": 0,
    "min_replicas_max_lag": 10,
    "maxmemory_percent": 25,
    "maxmemory": 2147483648,
    "maxmemory_policy": "allkeys-lru",
    "maxclients": 10000,
    "host_baseline": "apply",
    "firewall": {"enabled": False, "members": ["192.168.1.101", "192.168.1.102", "192.168.1.103"],
                 "client_networks": []},
    "sentinel": {"down_after_ms": 5000, "failover_timeout_ms": 60000, "witnesses": []},
    "backup": {"dir": "/var/backups/redis", "retention_days": 7, "compress": "gzip", "schedule": None,
               "copy_to": None, "keep_min": 2, "safety_copy_days": 7},
    "monitoring": {"memory_warning_percent": 90, "memory_critical_percent": 98, "evictions_per_second": 1000,
                   "clients_warning_percent": 90, "hit_rate_minimum": 0.8, "hit_rate_min_lookups": 1000,
                   "replication_lag_seconds": 30, "slowlog_new_entries": 10, "socket_timeout_seconds": 2,
                   "backup_grace_minutes": 60, "health_interval_minutes": 5, "critical_reminder_minutes": 60,
                   "exporter": False, "group": "redis-monitoring"},
    "slot_plan": {"server1": [[0, 5460]], "server2": [[5461, 10922]], "server3": [[10923, 16383]]},
    "replica_plan": {},
    "slots": [[0, 5460]],
}


@pytest.fixture
def render(monkeypatch, module_log):
    """``render(config, minion_id, grains, pillar=None, process="salt-master")``: ext_pillar's
    result, rendered by the salt-master daemon for the minion that asks for its pillar, or
    by salt-run (``process="salt-run"``: pillar.show_pillar)."""
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)

    def run(config, minion_id, grains, pillar=None, process="salt-master"):
        monkeypatch.setattr(rd, "__grains__", dict(grains), raising=False)
        monkeypatch.setattr(rd, "__opts__", dict(MASTER_OPTS, __cli=process), raising=False)
        pillar = pillar if pillar is not None else {}
        if process != "salt-master":
            return rd.ext_pillar(minion_id, pillar, config=config)
        with minion_pillar_request(minion_id):
            return rd.ext_pillar(minion_id, pillar, config=config)

    return run


@pytest.fixture
def example(tmp_path):
    return write_yaml(tmp_path, EXAMPLE_YAML, name="my_multihead_cluster.yaml")


def error_pillar(message):
    return {"redis": {"error": message, "role": "none", "mode": "none"}}


def assert_no_password(result, module_log):
    shown = json.dumps(result) + repr(result) + "\n".join(r.getMessage() for r in module_log.records)
    shown += module_log.text  # the formatted records, tracebacks included
    for spelling in SPELLINGS:
        assert spelling not in shown


def without_formula_modules(result):
    """Pillar ``redis`` without what the master computes beside the YAML: our modules' digests
    and the peers' versions (none known here: these renders have no master cache)."""
    redis = dict(result["redis"])
    assert redis.pop("formula_modules")["modules/redis_cluster.py"]
    if redis.get("role") != "none":
        assert {entry["version"] for entry in redis.pop("versions").values()} == {None}
    return redis


# ---------------------------------------------------------------- which controller a minion is


def test_an_exact_id_minion_gets_the_same_pillar_as_before(render, example):
    result = render(example, "server1", SERVER1)
    assert without_formula_modules(result) == dict(EXAMPLE_SERVER1, deployment_file=example)


def test_an_fqdn_minion_is_the_controller_of_its_first_label(render, example):
    # Salt's default minion id is the FQDN; the YAML has short host names. Peers and the
    # initial master keep the controllers' own names.
    result = render(example, "server1.example.org", SERVER1)
    assert without_formula_modules(result) == dict(EXAMPLE_SERVER1, deployment_file=example)

    server2 = render(example, "server2.lab.example", {"mem_total": 8192, "ipv4": ["192.168.1.102"]})["redis"]
    assert (server2["role"], server2["hostname"], server2["slots"]) == ("cluster-node", "server2", [[5461, 10922]])


@pytest.mark.parametrize("minion_id", ["server10", "server1x.example.org", "example.server1", "server4.example.org"])
def test_other_minions_get_no_redis_role(render, example, minion_id):
    redis = render(example, minion_id, {"mem_total": 8192, "ipv4": ["192.168.1.101"]})["redis"]
    assert (redis["role"], redis["mode"]) == ("none", "cluster")
    assert "error" not in redis
    assert "password" not in redis


def test_a_minion_matching_two_controllers_gets_an_error_naming_both(render, tmp_path):
    doc = make_doc(3)
    doc["nodes"]["controllers"][2]["minion_id"] = "server1.example.org"
    path = write_yaml(tmp_path, doc)
    grains = {"mem_total": 4096, "ipv4": ["10.0.0.1", "10.0.0.3"]}

    result = render(path, "server1.example.org", grains)

    assert result == error_pillar(
        f"{path}: nodes.controllers[0], nodes.controllers[2]: minion server1.example.org matches "
        "nodes.controllers[0] (minion_id server1, its first label) and "
        "nodes.controllers[2] (minion_id server1.example.org, its whole id): "
        "expected one controller per minion; give the controllers distinct minion_id values"
    )
    # the minion whose id is exactly server1 is only nodes.controllers[0]
    assert render(path, "server1", grains)["redis"]["hostname"] == "server1"


def test_node_pillar_refuses_a_minion_matching_two_controllers(tmp_path):
    doc = make_doc(3)
    doc["nodes"]["controllers"][1]["minion_id"] = "server1.example.org"
    dep = rd.load_deployment(write_yaml(tmp_path, doc), {"REDIS_PASSWORD": "pw"})
    with pytest.raises(rd.DeploymentError) as err:
        rd.node_pillar(dep, "server1.example.org", 4096)
    assert err.value.key == "nodes.controllers[0], nodes.controllers[1]"


# ---------------------------------------------------------------- the minion's address grains


def test_a_matched_minion_without_the_controllers_address_gets_an_error(render, example):
    result = render(example, "server1.example.org", {"mem_total": 8192, "ipv4": ["127.0.0.1", "10.1.2.3"]})
    assert result == error_pillar(
        f"{example}: nodes.controllers[0].ip_address: minion server1.example.org matches nodes.controllers[0] "
        "(server1) but has no address 192.168.1.101 (its ipv4 grain: 127.0.0.1, 10.1.2.3): expected the "
        "controller's address on that minion; fix ip_address or set the controller's minion_id"
    )


def test_a_minion_without_an_ipv4_grain_gets_an_error(render, example):
    result = render(example, "server2", {"mem_total": 8192})
    assert "(its ipv4 grain: empty)" in result["redis"]["error"]
    assert result["redis"]["error"].startswith(f"{example}: nodes.controllers[1].ip_address: minion server2 ")
    assert result["redis"]["role"] == "none"


def test_an_ipv6_controller_is_checked_against_the_ipv6_grain(render, tmp_path):
    doc = _case_doc([(CTRL + (0, "ip_address"), "fd00::1")])()
    path = write_yaml(tmp_path, doc)
    # the grain may spell the address differently; it is the same address
    ok = render(path, "server1", {"mem_total": 4096, "ipv4": ["10.0.0.1"], "ipv6": ["::1", "fd00:0:0::1"]})
    assert (ok["redis"]["role"], ok["redis"]["bind_ip"]) == ("cluster-node", "fd00::1")

    bad = render(path, "server1", {"mem_total": 4096, "ipv4": ["10.0.0.1"], "ipv6": ["::1"]})
    assert bad["redis"]["error"].startswith(f"{path}: nodes.controllers[0].ip_address: ")
    assert "has no address fd00::1 (its ipv6 grain: ::1)" in bad["redis"]["error"]


def test_a_witness_is_checked_too(render, tmp_path):
    path = write_yaml(tmp_path, make_doc(2, {"sentinel": {"witnesses": ["server3"]}}, witnesses_without_redis=1))
    assert render(path, "server3", {"mem_total": 4096, "ipv4": ["10.0.0.3"]})["redis"]["role"] == "sentinel-only"
    bad = render(path, "server3", {"mem_total": 4096, "ipv4": ["10.0.0.1"]})["redis"]
    assert bad["role"] == "none"
    assert "minion server3 matches nodes.controllers[2] (server3) but has no address 10.0.0.3" in bad["error"]


def test_a_controller_without_redis_needs_no_matching_address(render, example):
    # server4 runs no Redis: its pillar is the same whatever its addresses.
    redis = render(example, "server4", {"mem_total": 8192, "ipv4": ["10.1.2.3"]})["redis"]
    assert (redis["role"], redis["mode"]) == ("none", "cluster")
    assert "error" not in redis


# ---------------------------------------------------------------- the mem_total grain


@pytest.mark.parametrize(
    "grains, shown",
    [
        ({}, "missing"),
        ({"mem_total": 0}, "0"),
        ({"mem_total": "lots"}, "'lots'"),
        ({"mem_total": -1024}, "-1024"),
        ({"mem_total": True}, "True"),
        ({"mem_total": 0.5}, "0.5"),
    ],
    ids=["missing", "zero", "text", "negative", "bool", "below-one-mib"],
)
def test_a_redis_minion_without_a_usable_mem_total_gets_an_error(render, example, grains, shown):
    result = render(example, "server3.example.org", dict(grains, ipv4=["192.168.1.103"]))
    assert result == error_pillar(
        f"{example}: nodes.controllers[2]: minion server3.example.org runs Redis (role cluster-node) but its "
        f"mem_total grain is {shown}: expected the host's RAM in MiB (a positive number) to compute maxmemory "
        "(25% of it); maxmemory 0 would mean unlimited"
    )


def test_node_pillar_refuses_mem_total_zero(example):
    dep = rd.load_deployment(example, {"REDIS_PASSWORD": "pw"})
    with pytest.raises(rd.DeploymentError) as err:
        rd.node_pillar(dep, "server1", 0)
    assert err.value.key == "nodes.controllers[0]"
    assert "mem_total grain is 0" in str(err.value)


def test_a_maxmemory_override_makes_mem_total_unnecessary(render, example):
    # An operator who sets maxmemory needs no grain to compute it from.
    redis = render(example, "server1", {"ipv4": ["192.168.1.101"]}, pillar={"redis": {"maxmemory": "1gb"}})["redis"]
    assert (redis["role"], redis["maxmemory"]) == ("cluster-node", 1024**3)


def test_mem_total_as_text_digits_is_read(render, example):
    redis = render(example, "server1", {"mem_total": "8192", "ipv4": ["192.168.1.101"]})["redis"]
    assert redis["maxmemory"] == 2147483648


def test_a_percentage_that_rounds_to_zero_bytes_is_an_error(render, tmp_path):
    path = write_yaml(tmp_path, make_doc(3, {"maxmemory_percent": 0.00000001}))
    result = render(path, "server1", {"mem_total": 1, "ipv4": ["10.0.0.1"]})
    assert result["redis"]["error"].startswith(f"{path}: cache.redis.maxmemory_percent: ")
    assert "is 0 bytes, which Redis reads as unlimited: expected a larger percentage" in result["redis"]["error"]


def test_minions_without_redis_server_need_no_mem_total(render, tmp_path):
    path = write_yaml(tmp_path, make_doc(2, {"sentinel": {"witnesses": ["server3"]}}, witnesses_without_redis=2))
    witness = render(path, "server3", {"ipv4": ["10.0.0.3"]})["redis"]
    assert witness["role"] == "sentinel-only"
    assert "maxmemory" not in witness and "error" not in witness
    other = render(path, "server4", {"ipv4": ["10.0.0.4"]})["redis"]
    assert without_formula_modules({"redis": other}) == {"mode": "sentinel", "role": "none", "deployment_file": path}


# ---------------------------------------------------------------- redis:maxmemory overrides


@pytest.mark.parametrize(
    "override, expected",
    [
        (1048576, 1048576),
        ("1048576", 1048576),
        (0, 0),
        ("100b", 100),
        ("512k", 512 * 1000),
        ("512kb", 512 * 1024),
        ("100m", 100 * 1000**2),
        ("100mb", 100 * 1024**2),
        ("2g", 2 * 1000**3),
        ("2gb", 2 * 1024**3),
        ("2GB", 2 * 1024**3),
        ("2Gb", 2 * 1024**3),
        (" 3 mb ", 3 * 1024**2),
    ],
)
def test_a_maxmemory_override_is_normalised_to_bytes(render, example, override, expected):
    redis = render(example, "server1", SERVER1, pillar={"redis": {"maxmemory": override}})["redis"]
    assert redis["maxmemory"] == expected
    assert redis["role"] == "cluster-node"


@pytest.mark.parametrize(
    "override",
    ["2 GiB", "1.5gb", "-1", "-1gb", "lots", "", "2tb", "99999999999999999999gb", 1.5, True, -5, ["2gb"]],
)
def test_a_maxmemory_override_redis_cannot_read_is_refused(render, example, override):
    result = render(example, "server1", SERVER1, pillar={"redis": {"maxmemory": override}})
    assert result == error_pillar(
        "pillar: redis:maxmemory: expected bytes as Redis reads them: a whole number, optionally followed by "
        f"one of Redis's units k, kb, m, mb, g, gb (for example 2gb), got {override!r}"
    )


# ---------------------------------------------------------------- the error pillar


def test_the_error_pillar_replaces_the_whole_redis_pillar(render, tmp_path):
    # Ordinary pillar overrides stay where Salt merged them; what we return is only the
    # error, no role, no mode and no password.
    doc = make_doc(3, {"mode": "banana"})
    path = write_yaml(tmp_path, doc)
    result = render(path, "server1", {"mem_total": 4096, "ipv4": ["10.0.0.1"]}, pillar={"redis": {"maxclients": 5}})
    assert result == error_pillar(
        f"{path}: cache.redis.mode: expected one of auto, cluster, sentinel, got 'banana'"
    )


@pytest.mark.parametrize("process", ["salt-master", "salt-run"])
def test_an_unknown_key_gives_every_minion_the_error_pillar(render, module_log, tmp_path, process):
    # `maxmemroy_percent: 50` must not run with 25 %: no Redis role, so every Redis state stops.
    doc = make_doc(3, {"maxmemroy_percent": 50})
    path = write_yaml(tmp_path, doc)
    message = f"{path}: cache.redis.maxmemroy_percent: unknown key; did you mean maxmemory_percent?"
    for minion_id, grains in (("server1", {"mem_total": 4096, "ipv4": ["10.0.0.1"]}), ("web1", {})):
        assert render(path, minion_id, grains, process=process) == error_pillar(message)
    assert_no_password(message, module_log)


def test_a_numeric_password_says_expected_a_string(render, tmp_path):
    doc = make_doc(3)
    doc["cache"]["redis"]["password"] = 12345
    path = write_yaml(tmp_path, doc)
    result = render(path, "server1", {"mem_total": 4096, "ipv4": ["10.0.0.1"]})
    assert result == error_pillar(
        f"{path}: cache.redis.password: expected a string, got int (quote the password in the YAML)"
    )


def _ambiguous(doc):
    doc["nodes"]["controllers"][2]["minion_id"] = "server1.example.org"


def _port_is_the_password(doc):
    doc["cache"]["redis"]["port"] = "${REDIS_PASSWORD}"


def _hostname_is_the_password(doc):
    doc["nodes"]["controllers"][1]["hostname"] = "${REDIS_PASSWORD}"


@pytest.mark.parametrize(
    "change, grains, pillar, key",
    [
        (_port_is_the_password, {}, {}, "cache.redis.port"),
        (_hostname_is_the_password, {}, {}, "nodes.controllers[1].hostname"),
        (_ambiguous, {"ipv4": ["10.0.0.1"]}, {}, "nodes.controllers[0], nodes.controllers[2]"),
        (None, {"ipv4": ["10.0.0.9"]}, {}, "nodes.controllers[0].ip_address"),
        (None, {"ipv4": ["10.0.0.1"], "mem_total": 0}, {}, "nodes.controllers[0]"),
        (None, {"ipv4": ["10.0.0.1"]}, {"redis": {"maxmemory": "lots"}}, "redis:maxmemory"),
        (None, {"ipv4": ["10.0.0.1"]}, {"redis": {"maxmemory": PASSWORD}}, "redis:maxmemory"),
    ],
    ids=[
        "bad-port",
        "bad-hostname",
        "two-controllers",
        "wrong-address",
        "no-mem-total",
        "bad-maxmemory",
        "password-as-maxmemory",
    ],
)
@pytest.mark.parametrize("process", ["salt-master", "salt-run"])
def test_no_error_pillar_or_log_line_holds_the_password(
    render, module_log, tmp_path, change, grains, pillar, key, process
):
    doc = make_doc(3)
    if change:
        change(doc)
    path = write_yaml(tmp_path, doc)
    result = render(path, "server1.example.org", dict({"mem_total": 4096}, **grains), pillar=pillar, process=process)
    message = result["redis"]["error"]
    assert f": {key}: " in message
    assert result == error_pillar(message)
    assert any(message in r.getMessage() for r in module_log.records)
    assert_no_password(result, module_log)


def test_a_successful_render_in_salt_run_hides_the_password(render, example, module_log):
    shown = render(example, "server1.example.org", SERVER1, process="salt-run")["redis"]
    assert shown["password"] == rd.PASSWORD_HIDDEN
    assert without_formula_modules({"redis": shown}) == dict(
        EXAMPLE_SERVER1, deployment_file=example, password=rd.PASSWORD_HIDDEN
    )
    assert_no_password(shown, module_log)


def test_an_internal_failure_still_renders_an_error_pillar(monkeypatch, example, module_log):
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)
    monkeypatch.setattr(rd, "__grains__", dict(SERVER1), raising=False)
    monkeypatch.setattr(rd, "__opts__", dict(MASTER_OPTS), raising=False)
    # Salt always passes the pillar as a dict; None makes our code fail where it reads overrides.
    result = rd.ext_pillar("server1", None, config=example)
    assert result == error_pillar(
        f"{example}: (internal): redis_deployment failed with AttributeError; see the salt-master log"
    )
    assert any(r.exc_info for r in module_log.records)
    assert_no_password(result, module_log)
