"""
`python -m lab` as an operator runs it (`make lab`): up, exec, kill, start, down, and the
machine outside the lab's state directory is as it was before.
"""

import os
import stat
import subprocess
import sys

import pytest
import yaml
from support.lab import PASSWORD, ROOT

pytestmark = pytest.mark.integration

# Quiet on this machine but for the lab: compared entry by entry. /tmp is shared with every
# other process (pytest itself, shells), so there the test checks that what it left survives.
WATCHED = ("/etc", "/usr/local", "/var/lib", "/var/log")
LAB_NAME = "rcli"
HOSTS = {"cli1": "10.213.11.11", "cli2": "10.213.11.12"}


def machine_snapshot(excluded):
    """Every path below WATCHED but `excluded`: type, mode, owner, and size and mtime of files."""
    entries = {}
    for top in WATCHED:
        for directory, subdirectories, files in os.walk(top):
            subdirectories[:] = [d for d in subdirectories if os.path.join(directory, d) not in excluded]
            for name in subdirectories + files:
                path = os.path.join(directory, name)
                try:
                    info = os.lstat(path)
                except FileNotFoundError:
                    continue
                regular = stat.S_ISREG(info.st_mode)
                entries[path] = (info.st_mode, info.st_uid, info.st_gid) + (
                    (info.st_size, info.st_mtime_ns) if regular else ()
                )
    return entries


def lab(state_dir, *argv):
    env = dict(os.environ, LAB_STATE_DIR=str(state_dir), LAB_NAME=LAB_NAME, REDIS_PASSWORD=PASSWORD)
    return subprocess.run(
        [sys.executable, "-m", "lab", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def lab_kernel_objects():
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    cgroups = [
        os.path.join(directory, name)
        for top in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory")
        for directory, names, _ in os.walk(top)
        for name in names
        if name.startswith(f"{LAB_NAME}-")
    ]
    return [line for line in (netns + links).splitlines() if f"{LAB_NAME}-" in line] + cgroups


def test_make_lab_then_down_leaves_the_machine_unchanged(tmp_path_factory):
    basetemp = str(tmp_path_factory.getbasetemp())
    state_dir = tmp_path_factory.mktemp("cli-lab")
    config = state_dir.parent / "cli-lab.yaml"
    controllers = [{"hostname": h, "ip_address": ip, "services": {"redis": True}} for h, ip in HOSTS.items()]
    config.write_text(
        yaml.safe_dump({"cache": {"redis": {"password": "${REDIS_PASSWORD}", "host_baseline": "report"}},
                        "nodes": {"controllers": controllers}})
    )
    # A host's systemd empties its /tmp at boot: never the machine's.
    markers = {"/tmp/lab-cli-test-marker": "still here\n", "/var/tmp/lab-cli-test-marker": "here too\n"}
    for path, content in markers.items():
        with open(path, "w") as handle:
            handle.write(content)
    before = machine_snapshot({basetemp})
    try:
        up = lab(state_dir, "up", "--config", str(config))
        assert up.returncode == 0, up.stdout + up.stderr
        assert "PONG" in up.stdout
        ping = lab(state_dir, "exec", "cli1", "redis-cli", "-h", HOSTS["cli1"], "PING")
        assert ping.stdout.strip() == "PONG", ping.stderr
        assert lab(state_dir, "kill", "cli1").returncode == 0
        assert lab(state_dir, "exec", "cli1", "true").returncode != 0  # no host to enter
        start = lab(state_dir, "start", "cli1")
        assert start.returncode == 0, start.stdout + start.stderr
        ping = lab(state_dir, "exec", "cli1", "redis-cli", "-h", HOSTS["cli1"], "PING")
        assert ping.stdout.strip() == "PONG", ping.stderr
    finally:
        down = lab(state_dir, "down")
    assert down.returncode == 0, down.stderr
    after = machine_snapshot({basetemp})
    survived = {path: open(path).read() for path in markers if os.path.exists(path)}
    for path in markers:
        os.unlink(path)

    changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    assert changed == []
    assert survived == markers
    assert lab_kernel_objects() == []
