"""
The Debian 13 root file system lab hosts with `lab: {os: debian13}` boot from.

Built once with `debootstrap` (minbase plus the packages below) and cached outside any
lab's state directory, so `python -m lab down` keeps it: in `$LAB_CACHE_DIR`, default
`/var/cache/redis-salt-lab` (the lab runs as root; one build serves every clone and test
run on the machine). Each build lives in a directory named after a hash of what it holds
(suite, variant, package list): a changed package list builds a new root beside the old
one, which a running lab may still use as its overlay's lower layer, and never changes it.
`stamp.json` in that directory says what was built, from where and how long it took.

Hosts never write to it: each one boots from an overlay whose writes land in its own
directory. The salt-minion of such a host is the machine's own (the venv and the Python
it was made from, bound read-only into the host at the same paths; see lab/hosts.py):
the same Salt, the same dependencies as the master's, reading the host's own OS files.
"""

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

SUITE = "trixie"
VARIANT = "minbase"
# What a Debian 13 server running our states starts with: systemd and dbus to boot,
# iproute2 for Salt's ipv4 grain (the pillar cross-checks it), procps (`ps`), the
# packages our states install (the Makefile's APT_PACKAGES that a Debian 12 host finds on
# the machine: lab hosts reach no archive), and the one shared library the machine's
# Python (the hosts' salt-minion) loads that the rest does not bring: libffi (ctypes,
# which Salt imports at start). `missing_libraries` checks them all before a host boots.
# Both servers' packages (`cache.redis.server`): a host keeps those of the server its config
# asks for and has the other's purged before its first boot (lab/hosts.py).
SERVER_PACKAGES = {
    "redis": ("redis-server", "redis-sentinel", "redis-tools"),
    "valkey": ("valkey-server", "valkey-sentinel", "valkey-tools"),
}
DEFAULT_SERVER = "redis"
# The units each server's packages enable (their postinst) and the lab enables or disables.
SERVER_UNITS = {
    "redis": ("redis-server.service", "redis-sentinel.service"),
    "valkey": ("valkey-server.service", "valkey-sentinel.service"),
}
PACKAGES = ("systemd", "dbus", "iproute2", "procps", "psmisc", "libffi8",
            *SERVER_PACKAGES["redis"], *SERVER_PACKAGES["valkey"], "python3-redis", "zstd", "nftables",
            "prometheus-redis-exporter", "prometheus-node-exporter")
# Bumped when the way the root is built changes (not only its package list).
# 2: the servers' .deb files stay in the root's apt cache.
BUILD_FORMAT = 2
# Standard library extension modules Salt never loads (GUI, terminals, NIS, dbm, tests):
# their libraries need not be in the root.
UNUSED_MODULES = ("_tkinter", "_curses", "_curses_panel", "readline", "nis", "_dbm", "_gdbm", "ossaudiodev",
                  "_test", "xx", "_ctypes_test", "_xxtestfuzz")
LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib", "lib", "usr/lib64", "lib64")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class BuildError(RuntimeError):
    """The root could not be built (debootstrap missing, mirror unreachable...)."""


def cache_dir():
    return Path(os.environ.get("LAB_CACHE_DIR") or "/var/cache/redis-salt-lab")


def key(packages=PACKAGES):
    """What a build holds, as a short hash: its cache directory's name."""
    wanted = {"suite": SUITE, "variant": VARIANT, "packages": sorted(packages), "format": BUILD_FORMAT}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]


def build_dir(packages=PACKAGES):
    return cache_dir() / f"debian13-{key(packages)}"


def _machine_codename():
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def machine_mirror(sources=Path("/etc/apt"), codename=None):
    """The Debian archive apt already uses on this machine (the suite of the machine's own
    release, not its -security or -updates suites); LAB_DEBIAN_MIRROR overrides it."""
    if os.environ.get("LAB_DEBIAN_MIRROR"):
        return os.environ["LAB_DEBIAN_MIRROR"]
    codename = codename or _machine_codename()
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    name, colon, value = line.partition(":")
                    if colon and not line.startswith(("#", " ", "\t")):
                        fields[name.strip().lower()] = value.strip()
                if "deb" in fields.get("types", "").split() and codename in fields.get("suites", "").split():
                    return fields.get("uris", "").split()[0]
        else:
            for line in text.splitlines():
                # deb [options] URI SUITE COMPONENTS...
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                    return words[1]
    return DEFAULT_MIRROR


def root_fs(packages=PACKAGES, log=print):
    """The cached Debian 13 root file system (built first when missing): its path."""
    directory = build_dir(packages)
    root = directory / "root"
    if (directory / "stamp.json").exists():
        return root
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is missing: run `make setup` (it installs it) as root")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / "debian13.lock", "w") as lock:
        # One build at a time on the machine; whoever waited finds it done.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (directory / "stamp.json").exists():
            return root
        _build(directory, packages, log)
    return root


def _build(directory, packages, log):
    mirror = machine_mirror()
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    partial.mkdir(parents=True)
    log(f"lab: building the Debian 13 root file system once ({SUITE} from {mirror}) into {directory}")
    started = time.monotonic()
    argv = ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(packages)}", SUITE,
            str(partial / "root"), mirror]
    with open(partial / "debootstrap.out", "w") as output:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        out = (partial / "debootstrap.out").read_text(errors="replace").strip().splitlines()
        detail = (partial / "root" / "debootstrap" / "debootstrap.log")
        tail = detail.read_text(errors="replace").strip().splitlines()[-5:] if detail.exists() else []
        raise BuildError(
            f"debootstrap of Debian 13 from {mirror} failed (exit {result.returncode}): "
            + " | ".join(out[-5:] + tail) + f"; full output in {partial}"
        )
    # The downloaded packages: installed already, 100 MB the cache need not keep. Only the
    # servers' stay (a few MB): a host that had the other server's purged can install it
    # again with apt, offline, as a host that reaches the archive would.
    kept = {name for names in SERVER_PACKAGES.values() for name in names}
    for deb in (partial / "root" / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        if deb.name.split("_", 1)[0] not in kept:
            deb.unlink()
    seconds = time.monotonic() - started
    stamp = {"suite": SUITE, "variant": VARIANT, "packages": sorted(packages), "format": BUILD_FORMAT,
             "mirror": mirror, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(seconds, 1)}
    (partial / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
    partial.rename(directory)
    log(f"lab: Debian 13 root file system built in {seconds:.0f}s")


def python_stdlib():
    """The machine's Python's standard library and its extension modules' directory (those
    of the Python the venv was made from, not the venv's own lib/)."""
    return os.path.realpath(os.path.dirname(os.__file__)), os.path.realpath(sysconfig.get_config_var("DESTSHARED"))


@functools.lru_cache(maxsize=None)
def _python_libraries():
    """Sonames the machine's Python (interpreter, its extension modules but UNUSED_MODULES,
    the venv's compiled packages) loads from the system: neither bundled in a wheel nor
    part of the Python installation."""
    own = (os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix))
    if own[1] in ("/usr", "/"):
        own = (own[0], *python_stdlib())
    binaries = [os.path.realpath(getattr(sys, "_base_executable", sys.executable))]
    dynload = Path(python_stdlib()[1])
    binaries += [str(p) for p in dynload.glob("*.so") if not p.name.startswith(UNUSED_MODULES)]
    binaries += [str(p) for p in Path(os.path.realpath(sys.prefix)).rglob("*.so")]
    needed = set()
    for chunk in range(0, len(binaries), 64):
        listing = subprocess.run(["ldd", *binaries[chunk:chunk + 64]], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            name, arrow, target = line.strip().partition(" => ")
            resolved = target.split(" (")[0].strip()
            if arrow and resolved.startswith("/") and not os.path.realpath(resolved).startswith(own):
                needed.add(name)
    return frozenset(needed)


def missing_libraries(root):
    """The sonames the machine's Python needs that the root file system `root` lacks."""
    return sorted(name for name in _python_libraries()
                  if not any((Path(root) / directory / name).exists() for directory in LIBRARY_DIRS))
