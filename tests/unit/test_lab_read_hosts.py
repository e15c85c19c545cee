"""The lab reads hosts from a deployment YAML leniently: `lab config` accepts files Salt will refuse."""

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab import debian13  # noqa: E402
from lab.hosts import Host, Lab, LabError, read_hosts  # noqa: E402


def write(tmp_path, document):
    path = tmp_path / "my_multihead_cluster.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def test_every_valid_controller_becomes_a_host_in_file_order(tmp_path):
    controllers = [
        {"hostname": "b", "ip_address": "10.1.2.2", "services": {"redis": True}},
        {"hostname": "a", "ip_address": "10.1.2.1", "services": {"redis": False}},
        {"hostname": "c", "minion_id": "c.example", "ip_address": "10.1.2.3"},
    ]
    hosts = read_hosts(write(tmp_path, {"nodes": {"controllers": controllers, "compute": [{"hostname": "x"}]}}))
    assert hosts == [Host("b", "10.1.2.2", redis=True), Host("a", "10.1.2.1"), Host("c.example", "10.1.2.3")]


def test_invalid_entries_are_skipped_and_valid_ones_kept(tmp_path):
    controllers = [
        "not a mapping",
        {"hostname": "bad name!", "ip_address": "10.1.2.9"},
        {"hostname": "noip"},
        {"hostname": "badip", "ip_address": "10.1.2.300"},
        {"hostname": "ok", "ip_address": "10.1.2.4"},
        {"hostname": "dup-ip", "ip_address": "10.1.2.4"},
        {"hostname": "ok", "ip_address": "10.1.2.5"},
    ]
    document = {"cache": {"redis": {"mode": "banana"}}, "nodes": {"controllers": controllers}}
    assert read_hosts(write(tmp_path, document)) == [Host("ok", "10.1.2.4")]


def test_unreadable_or_shapeless_files_give_no_hosts(tmp_path):
    assert read_hosts(tmp_path / "missing.yaml") == []
    assert read_hosts(write(tmp_path, "nodes: [unclosed")) == []
    assert read_hosts(write(tmp_path, {"nodes": {"controllers": "server1"}})) == []
    assert read_hosts(write(tmp_path, ["a", "list"])) == []


def test_lab_os_is_the_machines_debian12_unless_a_controller_says_debian13(tmp_path):
    controllers = [
        {"hostname": "a", "ip_address": "10.1.2.1", "services": {"redis": True}, "lab": {"os": "debian13"}},
        {"hostname": "b", "ip_address": "10.1.2.2", "lab": {"os": "debian12"}},
        {"hostname": "c", "ip_address": "10.1.2.3", "lab": {}},
        {"hostname": "d", "ip_address": "10.1.2.4"},
    ]
    hosts = read_hosts(write(tmp_path, {"nodes": {"controllers": controllers}}))
    assert [h.os for h in hosts] == ["debian13", "debian12", "debian12", "debian12"]
    assert hosts[0] == Host("a", "10.1.2.1", redis=True, os="debian13")


@pytest.mark.parametrize("lab, message", [
    ({"os": "debian11"}, "nodes.controllers[1].lab.os: expected one of debian12, debian13, got 'debian11'"),
    ("debian13", "nodes.controllers[1].lab: expected a mapping such as {os: debian13}, got 'debian13'"),
])
def test_an_unknown_lab_os_is_an_error_naming_the_key(tmp_path, lab, message):
    controllers = [{"hostname": "a", "ip_address": "10.1.2.1"}, {"hostname": "b", "ip_address": "10.1.2.2", "lab": lab}]
    with pytest.raises(LabError) as raised:
        read_hosts(write(tmp_path, {"nodes": {"controllers": controllers}}))
    assert str(raised.value) == message


def test_the_debian13_root_is_keyed_by_its_package_list(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    assert debian13.build_dir().parent == tmp_path
    assert debian13.key(("b", "a")) == debian13.key(("a", "b"))
    assert debian13.key((*debian13.PACKAGES, "keydb-server")) != debian13.key()
    assert {"valkey-server", "valkey-sentinel", "valkey-tools", "redis-server"} <= set(debian13.PACKAGES)


def test_the_debian13_mirror_is_the_one_apt_uses_for_the_machines_release(monkeypatch, tmp_path):
    monkeypatch.delenv("LAB_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# http://snapshot.debian.org/archive/debian-security/20250520T000000Z\n"
        "URIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian13.machine_mirror(tmp_path, codename="bookworm") == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("# deb http://old.example/debian bookworm main\n"
                                           "deb [arch=amd64] http://one.example/debian bookworm main\n")
    assert debian13.machine_mirror(tmp_path, codename="bookworm") == "http://one.example/debian"
    assert debian13.machine_mirror(tmp_path / "none", codename="bookworm") == debian13.DEFAULT_MIRROR
    monkeypatch.setenv("LAB_DEBIAN_MIRROR", "http://override.example/debian")
    assert debian13.machine_mirror(tmp_path, codename="bookworm") == "http://override.example/debian"


@pytest.mark.parametrize("redis, server", [
    ({}, "redis"),
    ({"server": "redis"}, "redis"),
    ({"server": "valkey"}, "valkey"),
    # The pillar refuses these; the lab still makes the hosts, as a default install would.
    ({"server": "keydb"}, "redis"),
    ({"server": ["valkey"]}, "redis"),
    ("not a mapping", "redis"),
])
def test_every_host_takes_the_server_of_cache_redis_server(tmp_path, redis, server):
    controllers = [{"hostname": "a", "ip_address": "10.1.2.1", "services": {"redis": True}, "lab": {"os": "debian13"}},
                   {"hostname": "b", "ip_address": "10.1.2.2"}]
    hosts = read_hosts(write(tmp_path, {"cache": {"redis": redis}, "nodes": {"controllers": controllers}}))
    assert [h.server for h in hosts] == [server, server]


def test_a_host_named_in_server_by_host_takes_its_own_server(tmp_path):
    controllers = [{"hostname": h, "ip_address": f"10.1.2.{i}", "lab": {"os": "debian13"}}
                   for i, h in enumerate(("a", "b", "c", "d"), 1)]
    by_host = {"a": "valkey", "b": "redis", "d": "keydb"}
    hosts = read_hosts(write(tmp_path, {"cache": {"redis": {"server": "valkey", "server_by_host": by_host}},
                                        "nodes": {"controllers": controllers}}))
    assert [h.server for h in hosts] == ["valkey", "redis", "valkey", "redis"]
    hosts = read_hosts(write(tmp_path, {"cache": {"redis": {"server_by_host": {"c": "valkey"}}},
                                        "nodes": {"controllers": controllers}}))
    assert [h.server for h in hosts] == ["redis", "redis", "valkey", "redis"]


@pytest.mark.parametrize("server, purged, units", [
    ("valkey", "redis-server redis-sentinel redis-tools", "valkey-server.service valkey-sentinel.service"),
    ("redis", "valkey-server valkey-sentinel valkey-tools", "redis-server.service redis-sentinel.service"),
])
@pytest.mark.parametrize("redis, verb", [(True, "enable"), (False, "disable")])
def test_a_debian13_host_has_the_other_servers_packages_purged_before_its_first_boot(
        tmp_path, server, purged, units, redis, verb):
    lab = Lab(tmp_path, name="unit")
    lab._write_image(Host("a", "10.1.2.1", redis=redis, os="debian13", server=server), {"id": "a"})
    script = (tmp_path / "hosts" / "a" / "first-boot").read_text().splitlines()
    assert f"dpkg --purge {purged}" in script
    # After the purge: it may have taken the alias both Sentinels' units claim (sentinel.service).
    assert script.index(f"systemctl {verb} --quiet {units}") > script.index(f"dpkg --purge {purged}")
