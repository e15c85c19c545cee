"""The lab reads hosts from a deployment YAML leniently: `lab config` accepts files Salt will refuse."""

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.hosts import Host, read_hosts  # noqa: E402


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
