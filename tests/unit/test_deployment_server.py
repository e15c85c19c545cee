"""cache.redis.server: which server a node runs, the names the pillar gives its parts, and the
distributions that cannot provide it (refused naming the host, before anything changes)."""

import pytest
import yaml

from test_deployment import ENV, load, make_doc, rd, write_yaml

DEBIAN_12 = {"os": "Debian", "os_family": "Debian", "osmajorrelease": 12}
DEBIAN_13 = {"os": "Debian", "os_family": "Debian", "osmajorrelease": 13}


def deployment(tmp_path, server=None, count=3, **settings):
    if server is not None:
        settings["server"] = server
    return load(tmp_path, make_doc(count, settings))


def test_redis_is_the_default_and_keeps_the_os_names(tmp_path):
    pillar = rd.node_pillar(deployment(tmp_path), "server1", 4096, os_grains=DEBIAN_13)
    assert pillar["server"] == "redis"
    # Redis's names are map.jinja's OS defaults: the pillar overrides none of them.
    for key in ("service", "pkgs", "data_dir", "config_file", "user", "cli"):
        assert key not in pillar


def test_valkey_on_debian_13_gets_valkeys_names(tmp_path):
    pillar = rd.node_pillar(deployment(tmp_path, "valkey"), "server2", 4096, os_grains=DEBIAN_13)
    assert pillar["server"] == "valkey"
    assert pillar["pkgs"] == ["valkey-server", "valkey-sentinel", "valkey-tools"]
    assert (pillar["service"], pillar["sentinel_service"]) == ("valkey-server", "valkey-sentinel")
    assert (pillar["config_file"], pillar["sentinel_config_file"]) == ("/etc/valkey/valkey.conf",
                                                                       "/etc/valkey/sentinel.conf")
    assert (pillar["data_dir"], pillar["user"], pillar["group"]) == ("/var/lib/valkey", "valkey", "valkey")
    assert (pillar["cli"], pillar["server_binary"]) == ("valkey-cli", "/usr/bin/valkey-server")


def test_a_valkey_witness_installs_valkeys_sentinel(tmp_path):
    doc = make_doc(2, {"server": "valkey", "sentinel": {"witnesses": ["server3"]}}, witnesses_without_redis=1)
    pillar = rd.node_pillar(load(tmp_path, doc), "server3", 1024, os_grains=DEBIAN_13)
    assert pillar["role"] == "sentinel-only"
    assert pillar["sentinel_pkgs"] == ["valkey-sentinel", "valkey-tools"]


def test_valkey_on_debian_12_is_refused_naming_the_host_and_what_it_offers(tmp_path):
    dep = deployment(tmp_path, "valkey")
    with pytest.raises(rd.DeploymentError) as err:
        rd.node_pillar(dep, "server1", 4096, os_grains=DEBIAN_12)
    message = str(err.value)
    assert message.startswith(f"{dep['path']}: cache.redis.server: host server1 runs Debian 12")
    assert "offer redis only, not valkey" in message


def test_a_host_without_redis_is_never_refused_a_server(tmp_path):
    dep = load(tmp_path, make_doc(3, {"server": "valkey"}, witnesses_without_redis=1))
    assert rd.node_pillar(dep, "server4", 1024, os_grains=DEBIAN_12)["role"] == "none"


def test_a_distribution_the_table_does_not_know_is_not_refused(tmp_path):
    grains = {"os": "Fedora", "os_family": "RedHat", "osmajorrelease": 42}
    assert rd.node_pillar(deployment(tmp_path, "valkey"), "server1", 4096, os_grains=grains)["server"] == "valkey"


def test_the_ext_pillar_refuses_valkey_on_a_debian_12_minion_with_the_message(tmp_path, monkeypatch):
    path = write_yaml(tmp_path, make_doc(3, {"server": "valkey"}))
    monkeypatch.setattr(rd, "__grains__", {"mem_total": 4096, "ipv4": ["10.0.0.1"], **DEBIAN_12}, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    pillar = rd.ext_pillar("server1", {}, config=path)["redis"]
    assert pillar["role"] == "none"
    assert "host server1 runs Debian 12" in pillar["error"] and "cache.redis.server" in pillar["error"]


@pytest.mark.parametrize("password", ['with"quote', "back\\slash"])
def test_valkey_refuses_a_password_its_config_rewrite_would_break(tmp_path, password):
    doc = make_doc(3, {"server": "valkey"})
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(write_yaml(tmp_path, doc), {"REDIS_PASSWORD": password})
    message = str(err.value)
    assert ": cache.redis.password: expected a password without " in message
    assert "Valkey 8.1's CONFIG REWRITE" in message and password not in message


def test_redis_keeps_such_passwords(tmp_path):
    doc = make_doc(3)
    assert rd.load_deployment(write_yaml(tmp_path, doc), {"REDIS_PASSWORD": 'it "pass" \\ word'})["settings"]


def test_server_by_host_keeps_the_old_hosts_server_during_a_replacement(tmp_path):
    dep = deployment(tmp_path, "valkey", count=4, server_by_host={"server1": "redis", "server2": "redis"})
    old = rd.node_pillar(dep, "server1", 4096, os_grains=DEBIAN_12)
    assert old["server"] == "redis" and "service" not in old  # Redis's names: map.jinja's defaults
    new = rd.node_pillar(dep, "server3", 4096, os_grains=DEBIAN_13)
    assert (new["server"], new["service"]) == ("valkey", "valkey-server")


def test_server_by_host_keeps_an_old_witness_on_redis_while_the_new_one_runs_valkey(tmp_path):
    doc = make_doc(2, {"server": "valkey", "mode": "sentinel", "sentinel": {"witnesses": ["server3"]},
                       "server_by_host": {"server1": "redis", "server3": "redis"}}, witnesses_without_redis=1)
    dep = load(tmp_path, doc)
    old = rd.node_pillar(dep, "server3", 1024, os_grains=DEBIAN_12)
    assert (old["role"], old["server"]) == ("sentinel-only", "redis") and "sentinel_service" not in old


def test_server_by_host_is_refused_on_a_distribution_that_lacks_it_naming_the_key(tmp_path):
    dep = deployment(tmp_path, count=3, server_by_host={"server2": "valkey"})
    with pytest.raises(rd.DeploymentError) as err:
        rd.node_pillar(dep, "server2", 4096, os_grains=DEBIAN_12)
    assert str(err.value).startswith(f"{dep['path']}: cache.redis.server_by_host.server2: host server2 runs Debian 12")


@pytest.mark.parametrize("by_host, key, expected", [
    ({"server9": "redis"}, "cache.redis.server_by_host.server9", "expected the hostname of a controller with "
                                                                 "services.redis: true, or of a witness "
                                                                 "(cache.redis.sentinel.witnesses)"),
    ({"server1": "keydb"}, "cache.redis.server_by_host.server1", "expected one of redis, valkey, got 'keydb'"),
    (["server1"], "cache.redis.server_by_host", "expected a mapping, got list"),
])
def test_server_by_host_mistakes_name_the_key(tmp_path, by_host, key, expected):
    doc = make_doc(3, {"server_by_host": by_host})
    path = write_yaml(tmp_path, doc)
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(path, ENV)
    assert str(err.value) == f"{path}: {key}: {expected}"


def test_a_valkey_host_by_host_refuses_a_password_valkey_would_break(tmp_path):
    doc = make_doc(3, {"server_by_host": {"server3": "valkey"}})
    with pytest.raises(rd.DeploymentError) as err:
        rd.load_deployment(write_yaml(tmp_path, doc), {"REDIS_PASSWORD": 'with"quote'})
    assert ": cache.redis.password: expected a password without " in str(err.value)


# ---------------------------------------------------------------- pillar redis:versions


def installed(**servers):
    return {"redis_servers": servers}


def test_versions_give_each_host_its_servers_version_and_rdb_format_from_its_minions_grain(tmp_path):
    dep = deployment(tmp_path, "redis", count=4, server_by_host={"server3": "valkey"})
    grains = {"server1": installed(redis="7.0.15"), "server2.example.net": installed(redis="8.0.2"),
              # Both installed: the host's server (server_by_host) is the one that counts.
              "server3": installed(redis="8.0.2", valkey="8.1.1"),
              "unrelated": installed(redis="6.2.14")}
    versions = rd.node_versions(dep, grains)
    assert versions == {
        "server1": {"server": "redis", "version": "7.0.15", "rdb_format": 10, "minion": "server1"},
        "server2": {"server": "redis", "version": "8.0.2", "rdb_format": 12, "minion": "server2.example.net"},
        "server3": {"server": "valkey", "version": "8.1.1", "rdb_format": 11, "minion": "server3"},
        # No grains cached for it yet (its minion never asked for pillar): unknown, not guessed.
        "server4": {"server": "redis", "version": None, "rdb_format": None, "minion": None},
    }


def test_versions_believe_no_minion_when_two_match_one_host_nor_a_server_not_installed(tmp_path):
    dep = deployment(tmp_path, "redis")
    grains = {"server1": installed(redis="7.0.15"), "server1.stale": installed(redis="6.2.14"),
              "server2": installed(valkey="8.1.1"), "server3": {"os": "Debian"}}
    versions = rd.node_versions(dep, grains)
    assert versions["server1"] == {"server": "redis", "version": None, "rdb_format": None, "minion": None}
    assert versions["server2"] == {"server": "redis", "version": None, "rdb_format": None, "minion": "server2"}
    assert versions["server3"]["version"] is None


def test_ext_pillar_reads_the_peers_grains_from_the_masters_minion_data_cache(tmp_path, monkeypatch):
    import salt.cache
    import salt.config

    opts = dict(salt.config.DEFAULT_MASTER_OPTS, cachedir=str(tmp_path / "cache"), __role="master",
                __cli="salt-run")
    cache = salt.cache.factory(opts)
    monkeypatch.setattr(rd, "__opts__", opts, raising=False)
    monkeypatch.setattr(rd, "__grains__", {"mem_total": 4096, "ipv4": ["10.0.0.1"]}, raising=False)
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(make_doc(3, {"password": "literal-pw"})))
    # Salt 3006/3007 keep a minion's grains under minions/<id>, Salt 3008 in bank grains.
    for minion, version in (("server1", "7.0.15"), ("server2", "7.0.15"), ("server3", "7.2.4")):
        cache.store(f"minions/{minion}", "data", {"grains": installed(redis=version), "pillar": {}})
    pillar = rd.ext_pillar("server1", {}, config=str(path))["redis"]
    assert {host: (v["version"], v["rdb_format"]) for host, v in pillar["versions"].items()} == {
        "server1": ("7.0.15", 10), "server2": ("7.0.15", 10), "server3": ("7.2.4", 11)}

    for minion, version in (("server1", "8.0.2"), ("server2", "8.0.2"), ("server3", "8.0.2")):
        # As the salt-master stores them (salt/master.py, AESFuncs._pillar).
        cache.store("grains", minion, installed(redis=version))
    pillar = rd.ext_pillar("server1", {}, config=str(path))["redis"]
    assert {(v["version"], v["rdb_format"]) for v in pillar["versions"].values()} == {("8.0.2", 12)}
    # Without the master's cache (minion_data_cache: False) nothing is known, and nothing fails.
    monkeypatch.setattr(rd, "__opts__", dict(opts, minion_data_cache=False), raising=False)
    pillar = rd.ext_pillar("server1", {}, config=str(path))["redis"]
    assert {v["version"] for v in pillar["versions"].values()} == {None}
