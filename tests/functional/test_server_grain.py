"""Grain ``redis_servers`` (_grains/redis_servers.py) on real server binaries: each says its
own name and version (Redis 6.2 and 7.0, Valkey 9 whatever its file is called); a binary
that is no server, or is missing, is left out. The grain through Salt's own loader, and the
pillar built from it, are checked in the lab (tests/support/replacement.py)."""

import importlib.util
import os
from pathlib import Path

import pytest
from conftest import SERVERS

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("redis_servers_grain", ROOT / "_grains" / "redis_servers.py")
grain = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(grain)


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_each_server_binary_says_its_server_and_version(name):
    build = SERVERS[name]
    build.require()
    found = grain.installed([build.server])
    server = "valkey" if name.startswith("valkey") else "redis"
    assert list(found) == [server]
    major = name.split("-")[1].split(".")[0]
    assert found[server].split(".")[0] == major and found[server].count(".") == 2, found


def test_a_valkey_binary_named_redis_server_counts_as_valkey(tmp_path):
    SERVERS["valkey-9"].require()
    link = tmp_path / "redis-server"
    link.symlink_to(SERVERS["valkey-9"].server)
    assert list(grain.installed([str(link)])) == ["valkey"]


def test_what_is_no_server_or_missing_is_left_out(tmp_path, caplog):
    assert grain.installed(["/bin/true", str(tmp_path / "missing")]) == {}
    assert "/bin/true --version says 'true (GNU coreutils)" in caplog.text


def test_the_grain_lists_the_machines_own_redis():
    SERVERS["redis-7.0"].require()
    assert os.access("/usr/bin/redis-server", os.X_OK)
    assert grain.redis_servers()["redis_servers"]["redis"].startswith("7.0.")
