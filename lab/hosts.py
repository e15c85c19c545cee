"""
Lab hosts: each controller of the config becomes a host that boots its own systemd.

A host is a network namespace (its own IP on one private bridge) plus, for its
systemd and everything it starts, its own PID, mount, UTS and cgroup namespaces.
Inside, `/etc`, `/usr/local` and `/var` are overlays of the machine's directories
whose writes land in the host's own directory (`hosts/NAME/upper`), `/tmp`,
`/var/tmp`, `/run` and `/dev/shm` are fresh tmpfs, and the host has its own
hostname, machine-id, `/etc/hosts` and `/etc/systemd/system` (so "enabled" is per
host). A host starts as Debian leaves one right after `apt-get install redis-server
redis-sentinel`: the packages' own configuration files and enabled units (disabled
on a controller without `services.redis`), plus a salt-minion unit.

A controller with `lab: {os: debian13}` (the pillar ignores `lab:`) becomes a Debian 13
host instead: its whole root is an overlay of the cached Debian 13 root file system
(lab/debian13.py) whose writes land in `hosts/NAME/upper`, with the same fresh tmpfs,
hostname, machine-id, masks and enabled units. That root holds both servers Debian 13
offers; before its first boot a host has the packages of the one its config does not ask
for (its `cache.redis.server_by_host` entry, else `cache.redis.server`, default redis)
purged, so it starts as if only the other's had been installed. Its salt-minion is the machine's: the venv
and the Python it was made from are bound read-only into the host at the same paths (that
Python runs on Debian 13's newer libc and libraries; the same Salt as the master's).

Power cut (`kill`): SIGKILL to the host's systemd, which takes every process of the
host with it. Boot (`boot`): systemd again, over the same upper directories.

The lab touches the machine's network only through one bridge (no routes, no
forwarding, no NAT), and its cgroups only through one directory per host below the
lab process's own; `destroy()` removes all of it.
"""

import hashlib
import importlib.util
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab import debian13

REPO = Path(__file__).resolve().parents[1]
SALT_BIN = Path(sys.executable).parent  # the venv's salt-minion runs inside the hosts

# The machine's directories a host sees through an overlay of its own.
OVERLAID = ("/etc", "/usr/local", "/var")
# Directories a host starts with empty (an opaque overlay directory hides the machine's
# content): what is enabled, Salt's and Redis's state, logs. Owner and mode are the
# machine's where it has the directory.
FRESH_DIRS = (
    "/etc/systemd/system",
    "/etc/salt",
    "/etc/redis",
    "/var/lib/redis",
    "/var/log/redis",
    "/var/lib/systemd",
    "/var/log/journal",
    "/var/log/salt",
    "/var/cache/salt",
    "/var/backups",
)
# The package's files a freshly installed host has (never the machine's possibly
# modified copies: a used sentinel.conf carries a `sentinel myid`).
PACKAGE_FILES = {"redis-server": ("/etc/redis/redis.conf",), "redis-sentinel": ("/etc/redis/sentinel.conf",)}
REDIS_UNITS = ("redis-server.service", "redis-sentinel.service")
# What `lab: {os: ...}` of a controller may say; the machine's own release is the default.
DEFAULT_OS = "debian12"
OSES = (DEFAULT_OS, "debian13")
# Kernel settings that belong to the whole machine (memory overcommit, transparent huge
# pages): mounted read-only in every host, so nothing run there can change them.
GLOBAL_KNOBS = ("/proc/sys/vm", "/sys/kernel/mm")
# What a lab host must not run: the machine's own services, consoles, anything that
# writes global kernel settings or the clock, or reaches outside the lab.
MASKED_UNITS = (
    "getty.target", "console-getty.service", "container-getty@.service", "getty-static.service",
    "serial-getty@.service", "getty@.service",
    "systemd-sysctl.service", "systemd-modules-load.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount", "kmod-static-nodes.service",
    "systemd-remount-fs.service", "systemd-timesyncd.service", "systemd-pstore.service",
    "sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
    "systemd-firstboot.service", "systemd-repart.service", "systemd-machine-id-commit.service",
    "ldconfig.service", "systemd-hwdb-update.service", "systemd-journal-catalog-update.service",
    "systemd-networkd.service", "systemd-networkd-wait-online.service", "networking.service",
    "postgresql.service", "cron.service", "ssh.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "dpkg-db-backup.timer", "logrotate.timer",
)  # fmt: skip
CGROUP_HIERARCHIES = ("systemd", "unified", "memory")
# A host's own tmpfs (mode): what a boot empties.
FRESH_TMPFS = {"/tmp": "1777", "/var/tmp": "1777", "/run": "0755", "/dev/shm": "1777"}
MINION_UNIT = """\
[Unit]
Description=The Salt Minion
After=network.target

[Service]
Type=simple
KillMode=process
LimitNOFILE=8192
ExecStart={salt_bin}/salt-minion -c /etc/salt
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


class LabError(RuntimeError):
    """Something the operator can fix (bad config, missing privilege, unknown host)."""


def deployment_module():
    """The product's shape computation (_pillar/redis_deployment.py), imported by path."""
    spec = importlib.util.spec_from_file_location("redis_deployment", REPO / "_pillar" / "redis_deployment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    redis: bool = False  # services.redis: the packages' units enabled
    os: str = DEFAULT_OS  # lab.os: the machine's Debian 12, or the cached Debian 13 root
    server: str = debian13.DEFAULT_SERVER  # cache.redis.server: whose packages a Debian 13 host keeps


def read_hosts(config_path):
    """Every controller of the YAML with a usable hostname and IP, in file order.

    Lenient on purpose: `lab config` accepts an invalid YAML (Salt will refuse it) and
    still creates the hosts it validly adds. Only the lab's own key, `lab.os`, is checked
    strictly: an unknown release is the operator's to fix, not a host to drop silently.
    `cache.redis.server` is read as is (the pillar may refuse it), and a host's own entry in
    `cache.redis.server_by_host` (by hostname, as the pillar reads it) over it: a value that
    names no server of Debian 13 counts as the default, redis.
    """
    import yaml

    try:
        document = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
        controllers = document["nodes"]["controllers"]
    except (OSError, yaml.YAMLError, TypeError, KeyError):
        return []
    hosts, seen = [], set()
    if not isinstance(controllers, list):
        return []
    name_pattern = deployment_module().HOSTNAME_PATTERN
    for index, entry in enumerate(controllers):
        if not isinstance(entry, dict):
            continue
        name, ip = entry.get("minion_id", entry.get("hostname")), entry.get("ip_address")
        try:
            address = ipaddress.IPv4Address(str(ip))
        except ValueError:
            continue
        if not isinstance(name, str) or not name_pattern.match(name) or name in seen or str(address) in seen:
            continue
        seen.update((name, str(address)))
        services = entry.get("services")
        lab = entry.get("lab", {})
        if not isinstance(lab, dict):
            raise LabError(f"nodes.controllers[{index}].lab: expected a mapping such as {{os: debian13}}, got {lab!r}")
        release = lab.get("os", DEFAULT_OS)
        if release not in OSES:
            raise LabError(f"nodes.controllers[{index}].lab.os: expected one of {', '.join(OSES)}, got {release!r}")
        hosts.append(Host(name, str(address), isinstance(services, dict) and services.get("redis") is True, release,
                          _server(document, entry.get("hostname"))))
    return hosts


def _server(document, hostname=None):
    """The server of `hostname` in the YAML (its `cache.redis.server_by_host` entry, else
    `cache.redis.server`): a server Debian 13 offers, else the default."""
    try:
        settings = document["cache"]["redis"]
        by_host = settings.get("server_by_host")
        server = settings.get("server")
        if isinstance(by_host, dict) and isinstance(hostname, str) and hostname in by_host:
            server = by_host[hostname]
    except (TypeError, KeyError, AttributeError):
        return debian13.DEFAULT_SERVER
    return server if isinstance(server, str) and server in debian13.SERVER_PACKAGES else debian13.DEFAULT_SERVER


def pid_alive(pid):
    """True for a running process; False for none or a zombie (PID 1 here may never reap)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError, TypeError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run(argv, check=True, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(map(str, argv))} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def package_file(package, path, cache_dir):
    """The content `path` has right after `apt-get install package`.

    The machine's copy when dpkg's checksum says it is unmodified, else the file from
    the package archive of the installed version.
    """
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", package]).stdout.split("\n")
    expected = {line.split()[0]: line.split()[1] for line in conffiles if len(line.split()) >= 2}
    try:
        content = Path(path).read_bytes()
        if hashlib.md5(content).hexdigest() == expected.get(path):
            return content
    except OSError:
        pass
    version = run(["dpkg-query", "-W", "-f=${Version}", package]).stdout.strip()
    archives = [Path("/var/cache/apt/archives"), Path(cache_dir)]
    name = f"{package}_{version.replace(':', '%3a')}_*.deb"
    found = [deb for directory in archives for deb in sorted(directory.glob(name))]
    if not found:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        run(["apt-get", "download", f"{package}={version}"], cwd=cache_dir)
        found = sorted(Path(cache_dir).glob(name))
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(found[0])], capture_output=True, check=True).stdout
    return subprocess.run(["tar", "-xO", f".{path}"], input=tar, capture_output=True, check=True).stdout


def _own_cgroup(hierarchy):
    """This process's cgroup in `hierarchy` (the lab's cgroups go below it)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",")
        if (hierarchy == "unified" and controllers == "") or f"name={hierarchy}" in names or hierarchy in names:
            return path
    return "/"


class Lab:
    """The hosts of one lab; `name` prefixes every namespace, link, bridge and cgroup it makes."""

    def __init__(self, state_dir, name="rlab"):
        if len(name) > 6:
            raise LabError("lab name must be at most 6 characters (Linux interface names are short)")
        self.name = name
        self.state_dir = Path(state_dir).resolve()
        self.hosts_dir = self.state_dir / "hosts"
        self.state_file = self.state_dir / "network.json"
        self.bridge = f"{name}-br"
        self._boots = {}  # host -> the Popen that boots it (reaped by boot()/kill())

    # ------------------------------------------------------------------ bookkeeping

    def _state(self):
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"hosts": {}}

    def _save(self, state):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))

    def bridge_ip(self):
        return self._state().get("bridge_ip")

    def hosts(self):
        return dict(self._state()["hosts"])

    def netns(self, host):
        return f"{self.name}-{host}"

    def host_root(self, host):
        return self.hosts_dir / host

    def _cgroups(self, host):
        """The host's cgroup in each hierarchy: below the cgroup of the process that created it."""
        recorded = (self._state()["hosts"].get(host) or {}).get("cgroups")
        if recorded:
            return [Path(path) for path in recorded]
        return [
            Path("/sys/fs/cgroup", hierarchy, _own_cgroup(hierarchy).lstrip("/"), f"{self.name}-{host}")
            for hierarchy in CGROUP_HIERARCHIES
            if Path("/sys/fs/cgroup", hierarchy).is_dir()
        ]

    # ------------------------------------------------------------------ network

    def _choose_network(self, hosts):
        state = self._state()
        if state.get("network"):
            network = ipaddress.ip_network(state["network"])
        else:
            network = ipaddress.ip_network(f"{hosts[0].ip}/24", strict=False)
        used = {h.ip for h in hosts} | {d["ip"] for d in state["hosts"].values()}
        for host in hosts:
            if ipaddress.ip_address(host.ip) not in network:
                raise LabError(
                    f"host {host.name} ({host.ip}) is outside the lab network {network}: the lab's subnet comes "
                    "from the config it was built with; run `python -m lab down` first to change it"
                )
        if state.get("bridge_ip"):
            return network, state["bridge_ip"]
        for route in json.loads(run(["ip", "-j", "route", "show"]).stdout or "[]"):
            dst = route.get("dst", "")
            if dst in ("", "default") or route.get("dev") == self.bridge:
                continue
            if ipaddress.ip_network(dst, strict=False).overlaps(network):
                raise LabError(
                    f"the lab network {network} overlaps {dst} on {route.get('dev')}: pick controller addresses "
                    "on a private subnet this machine does not use"
                )
        free = [str(a) for a in reversed(list(network.hosts())) if str(a) not in used]
        return network, free[0]

    def _ensure_bridge(self, network, bridge_ip):
        if run(["ip", "link", "show", self.bridge], check=False).returncode != 0:
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{bridge_ip}/{network.prefixlen}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])

    def _veth(self, index):
        return f"{self.name}-v{index}"

    def _create_network(self, host, index, network):
        ns, veth = self.netns(host.name), self._veth(index)
        run(["ip", "netns", "delete", ns], check=False)
        run(["ip", "link", "delete", veth], check=False)
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{host.ip}/{network.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    # ------------------------------------------------------------------ hosts

    def ensure_network(self, hosts):
        """The bridge the hosts of `hosts` will sit on (created if missing): (network, bridge IP)."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (namespaces, mounts, cgroups)")
        if not hosts:
            raise LabError("the config names no controller with a valid hostname and ip_address")
        network, bridge_ip = self._choose_network(hosts)
        self._ensure_bridge(network, bridge_ip)
        state = self._state()
        state.update(network=str(network), bridge_ip=bridge_ip)
        self._save(state)
        return network, bridge_ip

    def ensure_hosts(self, hosts, minion_config):
        """Create and boot every host of `hosts` that is not running; returns the bridge IP.

        `minion_config(name, bridge_ip)` gives the salt-minion settings of a new host.
        Hosts boot in parallel; this returns once each one's systemd is running.
        """
        network, bridge_ip = self.ensure_network(hosts)
        state = self._state()
        # Other releases' roots first (built when missing): no host half made if that fails.
        roots = {h.os: None for h in hosts if h.os != DEFAULT_OS and h.name not in state["hosts"]}
        roots = {release: self._os_root(release) for release in roots}
        booting = []
        for host in hosts:
            data = state["hosts"].get(host.name)
            if data and data["ip"] != host.ip:
                raise LabError(f"host {host.name} exists with IP {data['ip']}; run `python -m lab down` first")
            if data and data.get("os", DEFAULT_OS) != host.os:
                raise LabError(
                    f"host {host.name} exists as {data.get('os', DEFAULT_OS)}, the config says {host.os}; "
                    "run `python -m lab down` first"
                )
            if data and self._pid1_alive(host.name, data.get("pid1")):
                continue
            if not data:
                index = max([d["index"] for d in state["hosts"].values()] + [-1]) + 1
                data = state["hosts"][host.name] = {"ip": host.ip, "index": index, "redis": host.redis}
                if host.os != DEFAULT_OS:
                    # The root it boots from, kept for its later boots (a changed package
                    # list builds a new root; this host keeps its own), and the server whose
                    # packages it kept (a later config asking for the other one changes
                    # nothing installed: that is the states' job).
                    data.update(os=host.os, lower=str(roots[host.os]), server=host.server)
                data["cgroups"] = [str(path) for path in self._cgroups(host.name)]
                self._create_network(host, index, network)
                self._save(state)
                self._write_image(host, minion_config(host.name, bridge_ip))
            booting.append(host.name)
        self._save(state)
        self._write_etc_hosts(state)
        for name in booting:
            self._start_systemd(name)
        for name in booting:
            self._wait_booted(name)
        return bridge_ip

    @staticmethod
    def _os_root(release):
        """The cached root file system of `release` (built first when missing)."""
        try:
            root = debian13.root_fs()
        except debian13.BuildError as exc:
            raise LabError(f"cannot boot a {release} host: {exc}") from None
        missing = debian13.missing_libraries(root)
        if missing:
            raise LabError(
                f"the {release} root {root} lacks libraries the machine's Python (the hosts' salt-minion) loads: "
                f"{', '.join(missing)}; add the packages that ship them to PACKAGES in lab/debian13.py"
            )
        return root

    def _write_image(self, host, minion_settings):
        """The host's disk before its first boot: what Debian leaves after installing the packages."""
        if host.os != DEFAULT_OS:
            self._write_debian13_image(host, minion_settings)
            return
        import yaml

        root = self.host_root(host.name)
        upper = root / "upper"
        for layer in OVERLAID:
            (upper / layer.strip("/")).mkdir(parents=True, exist_ok=True)
            (root / "work" / layer.strip("/")).mkdir(parents=True, exist_ok=True)
        for directory in FRESH_DIRS:
            target = upper / directory.strip("/")
            target.mkdir(parents=True, exist_ok=True)
            if Path(directory).is_dir():
                machine = Path(directory).stat()
                os.chown(target, machine.st_uid, machine.st_gid)
                os.chmod(target, machine.st_mode & 0o7777)
            os.setxattr(target, "trusted.overlay.opaque", b"y")
        for package, paths in PACKAGE_FILES.items():
            for path in paths:
                target = upper / path.strip("/")
                target.write_bytes(package_file(package, path, self.state_dir / "debs"))
                machine = Path(path).stat()
                os.chown(target, machine.st_uid, machine.st_gid)
                os.chmod(target, machine.st_mode & 0o7777)
        etc = upper / "etc"
        (etc / "hostname").write_text(host.name + "\n")
        (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
        (etc / "fstab").write_text("# lab host: the machine mounts its file systems\n")
        (etc / "salt" / "minion").write_text(yaml.safe_dump(minion_settings, default_flow_style=False))
        (etc / "systemd" / "system" / "salt-minion.service").write_text(MINION_UNIT.format(salt_bin=SALT_BIN))
        enabled = ["salt-minion.service", *(REDIS_UNITS if host.redis else ())]
        # Run once, offline, inside the host's file systems before its first boot.
        (root / "first-boot").write_text(
            f"systemctl enable --quiet {' '.join(enabled)}\nsystemctl mask --quiet {' '.join(MASKED_UNITS)}\n"
        )

    def _write_debian13_image(self, host, minion_settings):
        """A Debian 13 host's disk before its first boot: an empty upper layer over the cached
        root (what debootstrap left after installing the packages, their enabled units
        included), the other server's packages purged, plus this host's name, machine-id,
        salt-minion and enable state."""
        import yaml

        root = self.host_root(host.name)
        for layer in ("upper", "work", "merged"):
            (root / layer).mkdir(parents=True, exist_ok=True)
        etc = root / "upper" / "etc"
        (etc / "salt").mkdir(parents=True, exist_ok=True)
        (etc / "systemd" / "system").mkdir(parents=True, exist_ok=True)
        (etc / "hostname").write_text(host.name + "\n")
        (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
        (etc / "salt" / "minion").write_text(yaml.safe_dump(minion_settings, default_flow_style=False))
        (etc / "systemd" / "system" / "salt-minion.service").write_text(MINION_UNIT.format(salt_bin=SALT_BIN))
        other = [name for server, names in debian13.SERVER_PACKAGES.items() if server != host.server
                 for name in names]
        # The packages' postinst enabled their units in the cached root; a controller
        # without services.redis has them disabled, as on a Debian 12 host. Enabling
        # (again) after the purge restores the links the purged packages' units had taken
        # (redis-sentinel and valkey-sentinel both claim the alias sentinel.service).
        units = debian13.SERVER_UNITS[host.server]
        redis = "enable" if host.redis else "disable"
        # Run once, offline (chroot), inside the host's root before its first boot. The
        # purge (about 1 s) runs the packages' own postrm: their files, configuration,
        # data and log directories, unit links and system user go, as on a real host.
        (root / "first-boot").write_text(
            "export PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive\n"
            f"dpkg --purge {' '.join(other)}\n"
            "systemctl enable --quiet salt-minion.service\n"
            f"systemctl {redis} --quiet {' '.join(units)}\n"
            f"systemctl mask --quiet {' '.join(MASKED_UNITS)}\n"
        )

    @staticmethod
    def _machine_paths():
        """What the host's salt-minion needs from the machine, bound read-only at the same
        paths: the repository, the venv (as named and where it really is) and the Python
        it was made from (its prefix, or for the distribution's own python in /usr, the
        interpreter and its standard library only)."""
        needed = {str(REPO), sys.prefix, os.path.realpath(sys.prefix)}
        base = os.path.realpath(sys.base_prefix)
        if base in ("/usr", "/"):
            needed.add(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
            needed.update(debian13.python_stdlib())
        else:
            needed.add(base)

        def below(path, other):
            return path != other and path.startswith(other.rstrip("/") + "/")

        return sorted(path for path in needed if not any(below(path, other) for other in needed))

    def _debian13_boot_script(self, host):
        """Boot a Debian 13 host: its root an overlay of the cached root, then pivot_root."""
        root, data = self.host_root(host), self._state()["hosts"][host]
        merged = root / "merged"
        quoted = shlex.quote(str(merged))
        lines = [
            "set -e",
            f"mount -t overlay overlay -o lowerdir={data['lower']},upperdir={root}/upper,workdir={root}/work "
            f"{quoted}",
            f"mount -t proc proc {quoted}/proc",
            # Its output (dpkg's) in first-boot.log, shown in boot.log only when it fails.
            f"if [ -f {root}/first-boot ]; then chroot {quoted} sh -e < {root}/first-boot > {root}/first-boot.log 2>&1"
            f" || {{ cat {root}/first-boot.log >&2; exit 1; }}; rm {root}/first-boot; fi",
            f"mount --rbind /dev {quoted}/dev",
            *(f"mount -t tmpfs -o mode={mode} tmpfs {quoted}{fresh}" for fresh, mode in FRESH_TMPFS.items()),
        ]
        for path in self._machine_paths():
            target = shlex.quote(f"{merged}{path}")
            make = f"mkdir -p {target}" if os.path.isdir(path) else f"mkdir -p $(dirname {target}) && touch {target}"
            lines.append(f"{make} && mount --bind {shlex.quote(path)} {target} && mount -o remount,bind,ro {target}")
        lines += [
            f"mount -t sysfs sysfs {quoted}/sys",
            *(f"mount --bind {quoted}{knob} {quoted}{knob} && mount -o remount,bind,ro {quoted}{knob}"
              for knob in GLOBAL_KNOBS),
            # systemd 257 refuses cgroup v1 (hybrid): the host gets the unified hierarchy only,
            # its own cgroup as the root (cgroup namespace).
            f"mount -t cgroup2 cgroup2 {quoted}/sys/fs/cgroup",
            f"hostname {shlex.quote(host)}",
            # The machine's root goes away under the host's: only the binds above stay.
            f"cd {quoted} && pivot_root . mnt && cd / && umount -l /mnt",
            "exec env -i container=lxc PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd --system",
        ]
        return "\n".join(lines)

    def _boot_script(self, host):
        if self._state()["hosts"][host].get("os", DEFAULT_OS) != DEFAULT_OS:
            return self._debian13_boot_script(host)
        root = self.host_root(host)
        lines = ["set -e"]
        for layer in OVERLAID:
            upper, work = root / "upper" / layer.strip("/"), root / "work" / layer.strip("/")
            lines.append(f"mount -t overlay overlay -o lowerdir={layer},upperdir={upper},workdir={work} {layer}")
        # The repository and the venv (the minion's Salt) may live below a directory the
        # host gets a fresh tmpfs of (a CI clone in /tmp): held aside, then moved back.

        def below(path, directory):
            return path == directory or path.startswith(directory.rstrip("/") + "/")

        needed = sorted({str(REPO), sys.prefix})
        kept = [
            path
            for path in needed
            if any(below(path, fresh) for fresh in FRESH_TMPFS)
            and not any(other != path and below(path, other) for other in needed)
        ]
        lines += [
            # Before /tmp is replaced: the lab's state directory may live there.
            f"if [ -f {root}/first-boot ]; then sh -e {root}/first-boot; rm {root}/first-boot; fi",
            *(f"mkdir -p /var/lib/lab-kept/{i} && mount --bind {shlex.quote(path)} /var/lib/lab-kept/{i}"
              for i, path in enumerate(kept)),
            *(f"mount -t tmpfs -o mode={mode} tmpfs {fresh}" for fresh, mode in FRESH_TMPFS.items()),
            *(f"mkdir -p {shlex.quote(path)} && mount --move /var/lib/lab-kept/{i} {shlex.quote(path)}"
              for i, path in enumerate(kept)),
            "mount -t sysfs sysfs /sys",
            # Kernel settings global to the machine stay the machine's: read-only inside a host
            # (a host's own network settings, /proc/sys/net, stay writable).
            *(f"mount --bind {knob} {knob} && mount -o remount,bind,ro {knob}" for knob in GLOBAL_KNOBS),
            "mount -t tmpfs -o mode=0755 cgroup-root /sys/fs/cgroup",
            "mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified",
            "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd",
            "mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified",
            f"hostname {shlex.quote(host)}",
            "exec env -i container=lxc PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd --system",
        ]
        return "\n".join(lines)

    def _start_systemd(self, host):
        """Boot `host`: PID 1 of a new PID namespace joins the host's cgroups, then becomes its systemd."""
        root = self.host_root(host)
        cgroups = self._cgroups(host)
        for cgroup in cgroups:
            cgroup.mkdir(exist_ok=True)
        # Only the new PID 1 (it writes its own PID, 1) joins: the `unshare` left outside to
        # wait for it stays in the machine's cgroups.
        join = "".join(f"echo 1 > {cgroup}/cgroup.procs\n" for cgroup in cgroups)
        namespaces = "unshare --mount-proc --mount --uts --cgroup --propagation private"
        inner = f"{join}exec {namespaces} sh -c {shlex.quote(self._boot_script(host))}"
        self._boots[host] = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns(host)}", "--", "unshare", "--pid", "--fork", "sh", "-ec", inner],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(root / "boot.log", "w"),
            start_new_session=True,
        )

    def _wait_booted(self, host, timeout=60):
        """Wait until `host`'s systemd has started its units; record its PID."""
        process, log = self._boots[host], self.host_root(host) / "boot.log"
        deadline = time.monotonic() + timeout
        pid1 = None
        while pid1 is None:
            try:
                child = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()[0]
                command = Path(f"/proc/{child}/comm").read_text().strip()
            except (OSError, IndexError):
                child = command = None
            if command == "systemd":
                pid1 = int(child)
            elif process.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"host {host} did not boot: {log.read_text().strip() or 'no output'}")
            else:
                time.sleep(0.05)
        state = self._state()
        state["hosts"][host]["pid1"] = pid1
        self._save(state)
        while True:
            result = run(self.enter(host, ["systemctl", "is-system-running"]), check=False)
            if result.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise LabError(f"host {host} did not finish booting: systemd is {result.stdout.strip()}")
            time.sleep(0.1)

    def _write_etc_hosts(self, state):
        lines = ["127.0.0.1\tlocalhost", f"{state['bridge_ip']}\tsalt lab-master"]
        lines += [f"{data['ip']}\t{name}" for name, data in state["hosts"].items()]
        for name, data in state["hosts"].items():
            # A running host sees it through its own overlay; a stopped one at next boot.
            running = self._pid1_alive(name, data.get("pid1"))
            target = Path(f"/proc/{data['pid1']}/root/etc/hosts") if running else None
            (target or self.host_root(name) / "upper" / "etc" / "hosts").write_text("\n".join(lines) + "\n")

    def _pid1_alive(self, host, pid):
        """True when `pid` is this host's systemd: PID 1 of a PID namespace, in the host's network."""
        if not pid_alive(pid):
            return False
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            netns = os.readlink(f"/proc/{pid}/ns/net")
            expected = os.stat(f"/run/netns/{self.netns(host)}").st_ino
        except OSError:
            return False
        nspid = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")]
        return bool(nspid) and nspid[0][-1] == "1" and netns == f"net:[{expected}]"

    def _host(self, host):
        data = self._state()["hosts"].get(host)
        if not data:
            raise LabError(f"no lab host named {host!r}; hosts: {', '.join(self._state()['hosts']) or 'none'}")
        if not self._pid1_alive(host, data.get("pid1")):
            raise LabError(f"lab host {host} is not running; run `python -m lab start {host}`")
        return data

    def running(self, host):
        data = self._state()["hosts"].get(host) or {}
        return self._pid1_alive(host, data.get("pid1"))

    def enter(self, host, argv):
        """argv wrapped to run inside `host` (all its namespaces: network, mounts, PIDs, hostname)."""
        pid1 = self._host(host)["pid1"]
        return ["nsenter", "-t", str(pid1), "-m", "-u", "-n", "-p", "-C", "--", *map(str, argv)]

    def path(self, host, path):
        """A path inside the running `host`, as its processes see it (readable and writable from here)."""
        return Path(f"/proc/{self._host(host)['pid1']}/root") / str(path).lstrip("/")

    def processes(self, host):
        """PIDs (as the machine numbers them) of every process of `host`, its systemd included."""
        data = self._state()["hosts"].get(host) or {}
        try:
            namespace = os.readlink(f"/proc/{data['pid1']}/ns/pid")
        except (OSError, KeyError):
            return []
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if os.readlink(proc / "ns" / "pid") == namespace and pid_alive(proc.name):
                    found.append(int(proc.name))
            except OSError:
                pass
        return found

    def memory(self, host):
        """Bytes of memory the host's processes use (its memory cgroup: RSS, page cache excluded)."""
        for cgroup in self._cgroups(host):
            if cgroup.parts[4] == "memory" and (cgroup / "memory.stat").exists():
                stats = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
                return int(stats.get("total_rss", 0)) + int(stats.get("total_shmem", 0))
        return None

    def kill(self, host):
        """A power cut: SIGKILL to the host's systemd, which takes every process of the host with it."""
        data = self._host(host)
        os.kill(data["pid1"], signal.SIGKILL)
        self._reap(host)

    def _reap(self, host):
        deadline = time.monotonic() + 10
        while self.processes(host):
            if time.monotonic() > deadline:
                raise LabError(f"processes of {host} survive its power cut: {self.processes(host)}")
            time.sleep(0.05)
        process = self._boots.pop(host, None)
        if process is not None:
            process.wait(timeout=10)
        self._remove_cgroups(host)

    def _remove_cgroups(self, host):
        """Remove the host's cgroups, deepest first, once its last (zombie) process is gone."""
        deadline = time.monotonic() + 10
        for cgroup in self._cgroups(host):
            while cgroup.exists():
                try:
                    for directory in sorted(
                        (p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
                    ):
                        directory.rmdir()
                    cgroup.rmdir()
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise LabError(f"cannot remove {cgroup}: {exc}") from None
                    time.sleep(0.05)

    def boot(self, host):
        """Power on a host that was cut: systemd starts every unit enabled on it."""
        data = self._state()["hosts"].get(host)
        if not data:
            raise LabError(f"no lab host named {host!r}")
        if self._pid1_alive(host, data.get("pid1")):
            return
        self._remove_cgroups(host)
        self._start_systemd(host)
        self._wait_booted(host)

    def rebuild(self, host, minion_config):
        """A host that died for good, reinstalled bare: same name, IP and network, a fresh
        disk (as Debian leaves it after installing the packages), booted."""
        data = self._state()["hosts"].get(host)
        if not data:
            raise LabError(f"no lab host named {host!r}")
        if self.running(host):
            self.kill(host)
        for layer in ("upper", "work"):
            shutil.rmtree(self.host_root(host) / layer, ignore_errors=True)
        image = Host(host, data["ip"], data["redis"], data.get("os", DEFAULT_OS),
                     data.get("server", debian13.DEFAULT_SERVER))
        self._write_image(image, minion_config(host, self.bridge_ip()))
        self._write_etc_hosts(self._state())
        self._start_systemd(host)
        self._wait_booted(host)

    def set_link(self, host, up):
        data = self._host(host)
        run(["ip", "link", "set", self._veth(data["index"]), "up" if up else "down"])

    def destroy(self):
        """Power off every host, remove namespaces, links, cgroups and the bridge.

        Works from the namespace names alone, so it also clears what an aborted run left.
        """
        listed = run(["ip", "netns", "list"], check=False).stdout.split("\n")
        namespaces = {line.split()[0] for line in listed if line.startswith(f"{self.name}-")}
        hosts = {ns[len(self.name) + 1 :] for ns in namespaces} | set(self._state()["hosts"])
        for ns in namespaces:
            for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for host in hosts:
            deadline = time.monotonic() + 10
            while run(["ip", "netns", "pids", self.netns(host)], check=False).stdout.split():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            process = self._boots.pop(host, None)
            if process is not None:
                process.wait(timeout=10)
            self._remove_cgroups(host)
            run(["ip", "netns", "delete", self.netns(host)], check=False)
        links = json.loads(run(["ip", "-j", "link", "show"], check=False).stdout or "[]")
        for link in links:
            if link.get("ifname", "").startswith(f"{self.name}-"):
                run(["ip", "link", "delete", link["ifname"]], check=False)
        if self.state_dir.exists():
            self._save({"hosts": {}})
