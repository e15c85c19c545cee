"""
Lab hosts: one network namespace + mount namespace + UTS namespace per controller.

Each host has its own IP on a private bridge, its own hostname and its own
/etc/redis, /var/lib/redis, /var/log/redis, /run/redis, /var/backups/redis and
/etc/rc?.d (so "enabled at boot" is per host). A long-lived anchor process holds the
host's mounts; every command for the host enters the anchor's namespaces with nsenter
(a fresh `ip netns exec` would not see the bind mounts).

The lab touches the machine's network only through one bridge (no routes, no
forwarding, no NAT) and `destroy()` removes all of it.
"""

import importlib.util
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST_DIRS = ("/etc/redis", "/var/lib/redis", "/var/log/redis", "/run/redis", "/run/sentinel", "/var/backups/redis")
RUN_DIRS = ("/run/redis", "/run/sentinel")  # emptied on boot, like a tmpfs /run
RC_DIRS = tuple(f"/etc/rc{level}.d" for level in "0123456S")
MANAGED_SERVICES = ("redis-server", "redis-sentinel")
SYSVINIT_BIN = REPO / "lab" / "sysvinit-bin"  # first on a lab minion's PATH


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


def read_hosts(config_path):
    """Every controller of the YAML with a usable hostname and IP, in file order.

    Lenient on purpose: `lab config` accepts an invalid YAML (Salt will refuse it) and
    still creates the hosts it validly adds.
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
    for entry in controllers:
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
        hosts.append(Host(name, str(address)))
    return hosts


def pid_alive(pid):
    """True for a running process; False for none or a zombie (PID 1 here may never reap)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run(argv, check=True, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(map(str, argv))} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


class Lab:
    """The hosts of one lab; `name` prefixes every namespace, link and bridge it makes."""

    def __init__(self, state_dir, name="rlab"):
        if len(name) > 6:
            raise LabError("lab name must be at most 6 characters (Linux interface names are short)")
        self.name = name
        self.state_dir = Path(state_dir).resolve()
        self.hosts_dir = self.state_dir / "hosts"
        self.state_file = self.state_dir / "network.json"
        self.bridge = f"{name}-br"

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

    def netns(self, host):
        return f"{self.name}-{host}"

    def host_root(self, host):
        return self.hosts_dir / host

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

    # ------------------------------------------------------------------ hosts

    def ensure_hosts(self, hosts):
        """Create every host of `hosts` that does not exist yet; returns the bridge IP."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, bind mounts)")
        if not hosts:
            raise LabError("the config names no controller with a valid hostname and ip_address")
        network, bridge_ip = self._choose_network(hosts)
        self._ensure_bridge(network, bridge_ip)
        state = self._state()
        state.update(network=str(network), bridge_ip=bridge_ip)
        for host in hosts:
            data = state["hosts"].get(host.name)
            if data and data["ip"] != host.ip:
                raise LabError(f"host {host.name} exists with IP {data['ip']}; run `python -m lab down` first")
            if data and self._anchor_alive(host.name, data.get("anchor")):
                continue
            index = data["index"] if data else max([d["index"] for d in state["hosts"].values()] + [-1]) + 1
            anchor = self._create_host(host, index, network)
            state["hosts"][host.name] = {"ip": host.ip, "index": index, "anchor": anchor}
            self._save(state)
        self._save(state)
        self._write_etc_hosts(state)
        return bridge_ip

    def _create_host(self, host, index, network):
        ns, veth = self.netns(host.name), self._veth(index)
        run(["ip", "netns", "delete", ns], check=False)
        run(["ip", "link", "delete", veth], check=False)
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{host.ip}/{network.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

        root = self.host_root(host.name)
        mounts = []
        for target in HOST_DIRS:
            source = root / "fs" / target.strip("/")
            source.mkdir(parents=True, exist_ok=True)
            Path(target).mkdir(parents=True, exist_ok=True)
            mounts.append((source, target))
        for target in RC_DIRS:
            source = root / "fs" / target.strip("/")
            if not source.exists() and Path(target).is_dir():
                # A fresh host: the machine's boot links minus ours, so "enabled" starts false.
                shutil.copytree(target, source, symlinks=True)
                for link in source.iterdir():
                    if any(link.name.endswith(service) for service in MANAGED_SERVICES):
                        link.unlink()
            if source.exists():
                mounts.append((source, target))
        hosts_file = root / "etc-hosts"
        hosts_file.touch()
        mounts.append((hosts_file, "/etc/hosts"))

        ready = root / "anchor-ready"
        ready.unlink(missing_ok=True)
        script = f"hostname {host.name}\n"
        script += "".join(f"mount --bind '{source}' '{target}'\n" for source, target in mounts)
        script += f"touch '{ready}'\nexec sleep infinity\n"
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--propagation", "private", "sh", "-ec", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(root / "anchor.log", "w"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"host {host.name} did not come up: {(root / 'anchor.log').read_text()}")
            time.sleep(0.02)
        return process.pid

    def _write_etc_hosts(self, state):
        lines = ["127.0.0.1\tlocalhost", f"{state['bridge_ip']}\tsalt lab-master"]
        lines += [f"{data['ip']}\t{name}" for name, data in state["hosts"].items()]
        for name in state["hosts"]:
            (self.host_root(name) / "etc-hosts").write_text("\n".join(lines) + "\n")

    def _anchor_alive(self, host, pid):
        """True when `pid` is this host's anchor: a `sleep` inside the host's network namespace."""
        if not pid:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            netns = os.readlink(f"/proc/{pid}/ns/net")
            expected = os.stat(f"/run/netns/{self.netns(host)}").st_ino
        except OSError:
            return False
        return cmdline.startswith(b"sleep") and netns == f"net:[{expected}]"

    def _host(self, host):
        data = self._state()["hosts"].get(host)
        if not data:
            raise LabError(f"no lab host named {host!r}; hosts: {', '.join(self._state()['hosts']) or 'none'}")
        if not self._anchor_alive(host, data.get("anchor")):
            raise LabError(f"lab host {host} is not running; run `python -m lab up`")
        return data

    def enter(self, host, argv):
        """argv wrapped to run inside `host` (its network, mounts and hostname)."""
        anchor = self._host(host)["anchor"]
        return ["nsenter", "-t", str(anchor), "-m", "-n", "-u", "--", *map(str, argv)]

    @staticmethod
    def host_environ(environ):
        """The environment of a daemon inside a host: sysvinit's tools first on PATH."""
        return dict(environ, PATH=f"{SYSVINIT_BIN}:{environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")

    def processes(self, host):
        """PIDs of every process inside `host` but its anchor."""
        data = self._state()["hosts"].get(host, {})
        listed = run(["ip", "netns", "pids", self.netns(host)], check=False).stdout.split()
        return [int(pid) for pid in listed if int(pid) != data.get("anchor")]

    def kill(self, host):
        """kill -9 every process of `host`: a crash. Its disks (bind mounts) stay."""
        self._host(host)
        for _ in range(20):
            pids = self.processes(host)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        raise LabError(f"processes of {host} survive kill -9: {self.processes(host)}")

    def boot(self, host):
        """Start what a reboot would: clear /run, then every managed service enabled at boot."""
        self._host(host)
        for directory in RUN_DIRS:
            source = self.host_root(host) / "fs" / directory.strip("/")
            for item in source.iterdir() if source.exists() else ():
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        rc2 = self.host_root(host) / "fs" / "etc/rc2.d"
        started = []
        for link in sorted(rc2.glob("S*")):
            service = link.name.lstrip("S0123456789")
            if service in MANAGED_SERVICES:
                run(self.enter(host, [f"/etc/init.d/{service}", "start"]), check=False)
                started.append(service)
        return started

    def set_link(self, host, up):
        data = self._host(host)
        run(["ip", "link", "set", self._veth(data["index"]), "up" if up else "down"])

    def destroy(self):
        """Stop every process of every host, remove namespaces, links and the bridge.

        Works from the namespace names alone, so it also clears what an aborted run left.
        """
        listed = run(["ip", "netns", "list"], check=False).stdout.split("\n")
        namespaces = {line.split()[0] for line in listed if line.startswith(f"{self.name}-")}
        for ns in namespaces:
            for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            run(["ip", "netns", "delete", ns], check=False)
        links = json.loads(run(["ip", "-j", "link", "show"], check=False).stdout or "[]")
        for link in links:
            if link.get("ifname", "").startswith(f"{self.name}-"):
                run(["ip", "link", "delete", link["ifname"]], check=False)
        if self.state_dir.exists():
            self._save({"hosts": {}})
