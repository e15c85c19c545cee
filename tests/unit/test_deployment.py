"""Unit tests for _pillar/redis_deployment.py (the deployment-shape ext_pillar).

The module is imported by file path: it lives in Salt's ``_pillar`` directory, which is
not a Python package. Every test writes its own YAML under ``tmp_path`` and passes an
explicit ``environ`` so nothing depends on the real environment.
"""

import contextlib
import importlib.util
import itertools
import pathlib

import pytest
import salt.config
import salt.utils.ctx
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("redis_deployment", ROOT / "_pillar" / "redis_deployment.py")
rd = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rd)

ENV = {"REDIS_PASSWORD": "s3cret-pw"}

# The operator-facing example (the same file as the product documentation shows).
EXAMPLE_YAML = (ROOT / "examples" / "my_multihead_cluster.yaml").read_text()


# ---------------------------------------------------------------- helpers


def write_yaml(tmp_path, document, name="cluster.yaml"):
    """Write `document` (a dict, or raw text) to tmp_path/name and return the path as str."""
    path = tmp_path / name
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return str(path)


def controller(n, redis=True, **extra):
    entry = {"hostname": f"server{n}", "ip_address": f"10.0.0.{n}", "services": {"redis": redis}}
    entry.update(extra)
    return entry


def make_doc(count=3, redis_settings=None, witnesses_without_redis=0):
    """A document with `count` Redis controllers, then `witnesses_without_redis` non-Redis ones."""
    redis = {"password": "${REDIS_PASSWORD}"}
    redis.update(redis_settings or {})
    controllers = [controller(n) for n in range(1, count + 1)]
    controllers += [controller(n, redis=False) for n in range(count + 1, count + 1 + witnesses_without_redis)]
    return {"cache": {"redis": redis}, "nodes": {"controllers": controllers}}


@pytest.fixture
def base_doc():
    """The minimal valid 3-node document; tests mutate it before writing."""
    return make_doc(3)


@pytest.fixture
def example_path(tmp_path):
    return write_yaml(tmp_path, EXAMPLE_YAML, name="my_multihead_cluster.yaml")


def load(tmp_path, document, environ=ENV):
    return rd.load_deployment(write_yaml(tmp_path, document), dict(environ))


# __opts__ of every program that loads the master's configuration (salt-master, salt-run,
# salt-api): ``__role`` is master, ``__cli`` the name of argv[0] (salt/config/__init__.py).
MASTER_OPTS = {"__role": "master", "__cli": "salt-master"}


@contextlib.contextmanager
def minion_pillar_request(minion_id):
    """What a salt-master worker runs a minion's request for its pillar in: Salt's request
    context holding the request (MWorker._handle_aes; test_deployment_password.py drives
    the real one)."""
    request = {"cmd": "_pillar", "id": minion_id, "grains": {}}
    # Salt's logging reads its log_fmt_* options from the context's opts.
    opts = dict(salt.config.DEFAULT_MASTER_OPTS, **MASTER_OPTS)
    with salt.utils.ctx.request_context({"data": request, "opts": opts}):
        yield


# ---------------------------------------------------------------- 1. shape of the example


def test_example_is_a_three_node_cluster(example_path):
    dep = rd.load_deployment(example_path, dict(ENV))
    assert dep["mode"] == "cluster"
    assert dep["roles"] == {"server1": "cluster-node", "server2": "cluster-node", "server3": "cluster-node"}
    assert "server4" not in dep["roles"]
    assert dep["settings"]["password"] == "s3cret-pw"


def test_example_peers_in_file_order_with_ip_and_port(example_path):
    dep = rd.load_deployment(example_path, dict(ENV))
    assert [(p["hostname"], p["ip"], p["port"]) for p in dep["peers"]] == [
        ("server1", "192.168.1.101", 6379),
        ("server2", "192.168.1.102", 6379),
        ("server3", "192.168.1.103", 6379),
    ]
    assert dep["initial_master"]["hostname"] == "server1"
    assert dep["initial_master"]["ip"] == "192.168.1.101"


def test_example_slot_plan(example_path):
    dep = rd.load_deployment(example_path, dict(ENV))
    assert dep["slot_plan"] == {
        "server1": [[0, 5460]],
        "server2": [[5461, 10922]],
        "server3": [[10923, 16383]],
    }
    assert dep["replica_of"] == {}


@pytest.mark.parametrize("masters", range(3, 11))
def test_slot_ranges_cover_all_slots_evenly(masters):
    ranges = rd.slot_ranges(masters)
    assert len(ranges) == masters
    assert ranges[0][0] == 0
    assert ranges[-1][1] == 16383
    for (_, prev_last), (first, _) in itertools.pairwise(ranges):
        assert first == prev_last + 1, f"gap or overlap in {ranges}"
    sizes = [last - first + 1 for first, last in ranges]
    assert all(size > 0 for size in sizes)
    assert sum(sizes) == 16384
    assert max(sizes) - min(sizes) <= 1, sizes


# ---------------------------------------------------------------- 2. sentinel mode


def test_two_nodes_give_sentinel_master_and_replica(tmp_path):
    dep = load(tmp_path, make_doc(2))
    assert dep["mode"] == "sentinel"
    assert dep["roles"] == {"server1": "master", "server2": "replica"}
    assert dep["replica_of"] == {"server2": "server1"}
    assert dep["slot_plan"] == {}
    assert [h["hostname"] for h in dep["sentinel"]["hosts"]] == ["server1", "server2"]
    assert dep["sentinel"]["quorum"] == 2  # majority of 2


def test_witness_gets_sentinel_only_and_quorum_two_of_three(tmp_path):
    doc = make_doc(2, {"sentinel": {"witnesses": ["server3"]}}, witnesses_without_redis=1)
    dep = load(tmp_path, doc)
    assert dep["mode"] == "sentinel"
    assert dep["roles"] == {"server1": "master", "server2": "replica", "server3": "sentinel-only"}
    assert [h["hostname"] for h in dep["sentinel"]["hosts"]] == ["server1", "server2", "server3"]
    assert dep["sentinel"]["quorum"] == 2
    assert dep["sentinel"]["witnesses"] == ["server3"]
    # the witness runs no Redis, so it is not a peer
    assert [p["hostname"] for p in dep["peers"]] == ["server1", "server2"]


# ---------------------------------------------------------------- 3. forced mode / replicas


def test_forced_sentinel_with_three_nodes(tmp_path):
    dep = load(tmp_path, make_doc(3, {"mode": "sentinel"}))
    assert dep["mode"] == "sentinel"
    assert dep["roles"] == {"server1": "master", "server2": "replica", "server3": "replica"}
    assert dep["replica_of"] == {"server2": "server1", "server3": "server1"}
    assert dep["sentinel"]["quorum"] == 2
    assert dep["slot_plan"] == {}


def test_forced_cluster_with_two_nodes_is_an_error(tmp_path):
    with pytest.raises(rd.DeploymentError) as err:
        load(tmp_path, make_doc(2, {"mode": "cluster"}))
    assert "cache.redis.mode" in str(err.value)


def test_one_replica_per_master_needs_six_nodes(tmp_path):
    with pytest.raises(rd.DeploymentError) as err:
        load(tmp_path, make_doc(3, {"replicas_per_master": 1}))
    assert "cache.redis.mode" in str(err.value)
    assert "6" in str(err.value)


def test_one_replica_per_master_with_six_nodes(tmp_path):
    dep = load(tmp_path, make_doc(6, {"replicas_per_master": 1}))
    assert dep["mode"] == "cluster"
    assert dep["slot_plan"] == {
        "server1": [[0, 5460]],
        "server2": [[5461, 10922]],
        "server3": [[10923, 16383]],
    }
    assert dep["replica_of"] == {"server4": "server1", "server5": "server2", "server6": "server3"}
    assert set(dep["roles"].values()) == {"cluster-node"}
    assert len(dep["roles"]) == 6
    # Every node's pillar carries the whole replica plan: the initial master forms it all.
    assert rd.node_pillar(dep, "server1", 4096)["replica_plan"] == dep["replica_of"]
    assert rd.node_pillar(dep, "server5", 4096)["replica_of"] == "server2"


# ---------------------------------------------------------------- 4. node_pillar


def test_node_pillar_maxmemory_is_a_quarter_of_ram(example_path):
    dep = rd.load_deployment(example_path, dict(ENV))
    pillar = rd.node_pillar(dep, "server1", 8192)
    assert pillar["maxmemory"] == 2147483648
    assert pillar["maxmemory_percent"] == 25
    assert pillar["role"] == "cluster-node"
    assert pillar["bind_ip"] == "192.168.1.101"
    assert pillar["password"] == "s3cret-pw"


@pytest.mark.parametrize("minion", ["server4", "not-a-controller"])
def test_node_pillar_role_none_has_no_password(example_path, minion):
    dep = rd.load_deployment(example_path, dict(ENV))
    pillar = rd.node_pillar(dep, minion, 8192)
    assert pillar["role"] == "none"
    assert pillar["mode"] == "cluster"
    assert "password" not in pillar
    assert "peers" not in pillar


def test_minion_id_key_selects_the_minion(tmp_path, base_doc):
    base_doc["nodes"]["controllers"][1]["minion_id"] = "redis-b.lab"
    dep = load(tmp_path, base_doc)
    pillar = rd.node_pillar(dep, "redis-b.lab", 4096)
    assert pillar["role"] == "cluster-node"
    assert pillar["hostname"] == "server2"
    assert pillar["bind_ip"] == "10.0.0.2"
    assert rd.node_pillar(dep, "server2", 4096)["role"] == "none"
    assert dep["peers"][1]["minion_id"] == "redis-b.lab"


def test_lab_key_of_a_controller_is_ignored(tmp_path, base_doc):
    """Lab configs may say `lab: {os: debian13}` per controller: not the pillar's business."""
    plain = load(tmp_path, base_doc)
    for entry in base_doc["nodes"]["controllers"]:
        entry["lab"] = {"os": "debian13"}
    assert load(tmp_path, base_doc) == plain


def test_cluster_node_pillar_has_own_slots_and_full_plan(example_path):
    dep = rd.load_deployment(example_path, dict(ENV))
    pillar = rd.node_pillar(dep, "server2", 4096)
    assert pillar["slots"] == [[5461, 10922]]
    assert pillar["slot_plan"] == {
        "server1": [[0, 5460]],
        "server2": [[5461, 10922]],
        "server3": [[10923, 16383]],
    }
    assert "replica_of" not in pillar


def test_node_pillar_carries_no_setting_that_nothing_reads(tmp_path, base_doc):
    # acl becomes acl_users (hashes only): a deployment that still holds it passes it on no more.
    dep = load(tmp_path, base_doc)
    dep["settings"].update(acl={"users": []})
    pillar = rd.node_pillar(dep, "server1", 4096)
    assert "acl" not in pillar


def test_sentinel_replica_pillar_names_its_master(tmp_path):
    dep = load(tmp_path, make_doc(2))
    pillar = rd.node_pillar(dep, "server2", 4096)
    assert pillar["role"] == "replica"
    assert pillar["replica_of"] == "server1"
    assert "slots" not in pillar
    assert pillar["sentinel"]["quorum"] == 2


# ---------------------------------------------------------------- 5. validation errors


def _parent(doc, keys):
    """The container holding the last of `keys` (a tuple of dict keys / list indices)."""
    for part in keys[:-1]:
        doc = doc[part]
    return doc


def _case_doc(mutations=(), delete=(), count=3, **kwargs):
    """A builder for make_doc(count, **kwargs) with `mutations` set and `delete` removed."""

    def build():
        doc = make_doc(count, **kwargs)
        for keys, value in mutations:
            _parent(doc, keys)[keys[-1]] = value
        for keys in delete:
            del _parent(doc, keys)[keys[-1]]
        return doc

    return build


CTRL = ("nodes", "controllers")
REDIS = ("cache", "redis")

ERROR_CASES = [
    pytest.param(_case_doc(delete=[("nodes", "controllers")]), "nodes.controllers", "is missing", id="no-controllers"),
    pytest.param(_case_doc([(CTRL, "server1")]), "nodes.controllers", "expected a list", id="controllers-not-list"),
    pytest.param(
        _case_doc([(CTRL + (1,), "server2")]), "nodes.controllers[1]", "expected a mapping", id="controller-not-mapping"
    ),
    pytest.param(
        _case_doc(delete=[CTRL + (1, "hostname")]), "nodes.controllers[1].hostname", "is missing", id="no-hostname"
    ),
    pytest.param(
        _case_doc([(CTRL + (1, "ip_address"), "10.0.0.300")]),
        "nodes.controllers[1].ip_address",
        "expected",
        id="ip-out-of-range",
    ),
    pytest.param(
        _case_doc([(CTRL + (1, "ip_address"), "abc")]), "nodes.controllers[1].ip_address", "expected", id="ip-not-an-ip"
    ),
    pytest.param(
        _case_doc(delete=[CTRL + (1, "ip_address")]), "nodes.controllers[1].ip_address", "expected", id="ip-missing"
    ),
    pytest.param(
        _case_doc([(CTRL + (1, "ip_address"), "0.0.0.0")]),
        "nodes.controllers[1].ip_address",
        "unicast",
        id="ip-unspecified",
    ),
    pytest.param(
        _case_doc([(CTRL + (2, "ip_address"), "10.0.0.1")]),
        "nodes.controllers[2].ip_address",
        "duplicate",
        id="duplicate-ip",
    ),
    pytest.param(
        _case_doc([(CTRL + (2, "hostname"), "server1")]),
        "nodes.controllers[2].hostname",
        "duplicate",
        id="duplicate-hostname",
    ),
    pytest.param(
        _case_doc([(REDIS + ("password",), "${NOT_SET_ANYWHERE}")]),
        "cache.redis.password",
        "NOT_SET_ANYWHERE",
        id="unset-variable",
    ),
    pytest.param(_case_doc([(REDIS + ("password",), "")]), "cache.redis.password", "non-empty", id="empty-password"),
    pytest.param(_case_doc([(REDIS + ("password",), "   ")]), "cache.redis.password", "non-empty", id="blank-password"),
    pytest.param(
        _case_doc(delete=[REDIS + ("password",)]), "cache.redis.password", "is missing", id="missing-password"
    ),
    pytest.param(_case_doc([(REDIS + ("mode",), "banana")]), "cache.redis.mode", "expected one of", id="unknown-mode"),
    pytest.param(
        _case_doc(count=0, witnesses_without_redis=2), "nodes.controllers", "at least 2", id="zero-redis-nodes"
    ),
    pytest.param(_case_doc(count=1, witnesses_without_redis=1), "nodes.controllers", "at least 2", id="one-redis-node"),
    pytest.param(
        _case_doc(count=2, redis_settings={"mode": "cluster"}),
        "cache.redis.mode",
        "at least 3",
        id="forced-cluster-two-nodes",
    ),
    pytest.param(
        _case_doc([(CTRL + (0, "services", "redis"), "yes")]),
        "nodes.controllers[0].services.redis",
        "expected true or false",
        id="redis-not-bool",
    ),
    pytest.param(
        _case_doc([(REDIS + ("maxmemory_policy",), "lru-please")]),
        "cache.redis.maxmemory_policy",
        "expected one of",
        id="bad-maxmemory-policy",
    ),
    pytest.param(
        _case_doc([(REDIS + ("port",), 70000)]),
        "cache.redis.port",
        "expected an integer from 1 to 65535",
        id="port-70000",
    ),
    pytest.param(
        _case_doc([(REDIS + ("backup",), {"compress": "lz4"})]),
        "cache.redis.backup.compress",
        "expected one of",
        id="compress-lz4",
    ),
    pytest.param(
        _case_doc(count=2, redis_settings={"sentinel": {"witnesses": ["ghost"]}}),
        "cache.redis.sentinel.witnesses[0]",
        "expected the hostname of a controller",
        id="witness-not-a-controller",
    ),
    pytest.param(
        _case_doc(count=3, redis_settings={"sentinel": {"witnesses": ["server4"]}}, witnesses_without_redis=1),
        "cache.redis.sentinel.witnesses[0]",
        "sentinel mode",
        id="witness-in-cluster-mode",
    ),
]


@pytest.mark.parametrize("build, key, expectation", ERROR_CASES)
def test_validation_error_names_file_key_and_expectation(tmp_path, build, key, expectation):
    path = write_yaml(tmp_path, build())
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    message = str(err.value)
    assert path in message
    assert key in message
    assert expectation in message
    assert err.value.key == key  # the exact key path, not just a prefix of it
    assert isinstance(err.value, ValueError)


def test_error_key_is_exact_for_bad_ip(tmp_path, base_doc):
    base_doc["nodes"]["controllers"][1]["ip_address"] = "10.0.0.300"
    path = write_yaml(tmp_path, base_doc)
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert err.value.path == path
    assert err.value.key == "nodes.controllers[1].ip_address"
    assert "10.0.0.300" in err.value.expected


def test_yaml_syntax_error_reports_line(tmp_path):
    path = write_yaml(tmp_path, "cache:\n  redis:\n    password: x\nnodes:\n  controllers: [unclosed\n")
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    message = str(err.value)
    assert path in message
    assert "line " in message
    assert "not valid YAML" in message


def test_missing_file(tmp_path):
    path = str(tmp_path / "does-not-exist.yaml")
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert path in str(err.value)
    assert "(file)" in str(err.value)
    assert "cannot be read" in str(err.value)


def test_top_level_list(tmp_path):
    path = write_yaml(tmp_path, "- server1\n- server2\n")
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, dict(ENV))
    assert path in str(err.value)
    assert "(top level)" in str(err.value)
    assert "expected a mapping" in str(err.value)


# ---------------------------------------------------------------- 6. ${VAR} expansion


def test_set_variable_is_expanded_and_other_sections_ignored(tmp_path, base_doc):
    base_doc["cache"]["redis"]["password"] = "pre-${REDIS_PASSWORD}-post"
    base_doc["network"] = {"vip": "${UNSET_VIP}", "subnet": "192.168.1.0/24"}
    base_doc["storage"] = {"glusterfs": {"volume": "${UNSET_VOLUME}", "bricks": [1, 2]}}
    base_doc["nodes"]["compute"] = [{"hostname": "node001", "ip_address": "${UNSET_COMPUTE_IP}"}]
    base_doc["cluster"] = "anything"
    # Only cache.redis is checked key by key: other caches and a controller's other keys are not Redis's.
    base_doc["cache"]["memcached"] = {"maxmemroy": "${UNSET_MEMCACHED}"}
    base_doc["nodes"]["controllers"][0].update({"lab": {"os": "debian13"}, "rack": "${UNSET_RACK}"})
    base_doc["nodes"]["controllers"][0]["services"]["slurm"] = True
    dep = load(tmp_path, base_doc, environ={"REDIS_PASSWORD": "abc"})
    assert dep["settings"]["password"] == "pre-abc-post"
    assert dep["mode"] == "cluster"
    assert "network" not in dep and "storage" not in dep


def test_variable_expanded_in_controller_fields(tmp_path, base_doc):
    base_doc["nodes"]["controllers"][0]["ip_address"] = "${IP1}"
    dep = load(tmp_path, base_doc, environ={"REDIS_PASSWORD": "pw", "IP1": "10.9.9.9"})
    assert dep["peers"][0]["ip"] == "10.9.9.9"


def test_environ_is_not_read_from_process(tmp_path, base_doc, monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", "from-process")
    dep = load(tmp_path, base_doc, environ={"REDIS_PASSWORD": "from-argument"})
    assert dep["settings"]["password"] == "from-argument"


# ---------------------------------------------------------------- 7. ext_pillar


@pytest.fixture
def grains(monkeypatch):
    """The grains of minion server1 of make_doc(): its RAM and its addresses (10.0.0.1)."""
    monkeypatch.setattr(rd, "__grains__", {"mem_total": 4096, "ipv4": ["127.0.0.1", "10.0.0.1"]}, raising=False)
    monkeypatch.setattr(rd, "__opts__", dict(MASTER_OPTS), raising=False)


def test_ext_pillar_carries_the_password_only_into_the_minions_own_pillar_request(
    tmp_path, base_doc, grains, monkeypatch
):
    base_doc["cache"]["redis"]["password"] = "literal-pw"
    path = write_yaml(tmp_path, base_doc)
    # The salt-master daemon answering server1, whatever its argv[0] (pytest-salt-factories
    # starts it as cli_salt_master.py).
    for program in ("salt-master", "cli_salt_master.py", "python3"):
        monkeypatch.setattr(rd, "__opts__", dict(MASTER_OPTS, __cli=program), raising=False)
        with minion_pillar_request("server1"):
            assert rd.ext_pillar("server1", {}, config=path)["redis"]["password"] == "literal-pw", program

    # Every other render is for display: hidden (fail closed), also in a program called
    # salt-master that is not answering the minion (a runner the master forks for salt-api).
    for program in ("salt-master", "salt-run", "cli_salt_run.py", "salt-api", "/usr/bin/salt-call", None):
        monkeypatch.setattr(rd, "__opts__", dict(MASTER_OPTS, __cli=program), raising=False)
        shown = rd.ext_pillar("server1", {}, config=path)["redis"]

        assert "literal-pw" not in repr(shown), program
        assert shown["password"] == "(hidden: only minions receive the password)"
        assert shown["role"] == "cluster-node"


def test_ext_pillar_overrides_win(tmp_path, base_doc, grains):
    base_doc["cache"]["redis"]["password"] = "literal-pw"  # ext_pillar reads os.environ; avoid it
    path = write_yaml(tmp_path, base_doc)
    overrides = {"redis": {"maxclients": 5, "sentinel": {"down_after_ms": 1234}}}
    with minion_pillar_request("server1"):
        result = rd.ext_pillar("server1", overrides, config=path)
    assert "_errors" not in result
    redis = result["redis"]
    assert redis["maxclients"] == 5
    assert redis["sentinel"]["down_after_ms"] == 1234
    assert redis["sentinel"]["failover_timeout_ms"] == 60000
    assert redis["sentinel"]["witnesses"] == []
    assert redis["role"] == "cluster-node"
    assert redis["maxmemory"] == 4096 * 1024 * 1024 // 4
    assert redis["password"] == "literal-pw"


def test_ext_pillar_bad_file_gives_the_error_pillar(tmp_path, base_doc, grains, module_log):
    # The pillar render itself succeeds (no _errors: other formulas' states still run);
    # pillar redis carries the one-line message and no Redis role.
    base_doc["cache"]["redis"]["password"] = "literal-pw"
    base_doc["nodes"]["controllers"][1]["ip_address"] = "abc"
    path = write_yaml(tmp_path, base_doc)
    result = rd.ext_pillar("server1", {}, config=path)
    message = f"{path}: nodes.controllers[1].ip_address: expected the controller's unicast IP address, got 'abc'"
    assert result == {"redis": {"error": message, "role": "none", "mode": "none"}}
    # the salt-master log names the problem too
    assert any(message in r.getMessage() for r in module_log.records)


def test_ext_pillar_without_config_gives_the_error_pillar(grains):
    result = rd.ext_pillar("server1", {})
    assert result == {
        "redis": {
            "error": "ext_pillar redis_deployment: expected option 'config' with the YAML's path",
            "role": "none",
            "mode": "none",
        }
    }
