"""
python -m lab VERB ...: real hosts on one machine, a real salt-master, one real
salt-minion per host, and `salt '*' state.apply redis` on them. See README.md.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab.hosts import REPO, Lab, LabError, pid_alive, read_hosts
from lab.saltconf import DEPLOYMENT_FILE, master_settings, minion_settings, write_config

DEFAULT_CONFIG = REPO / "examples" / "lab-3.yaml"
BIN = Path(sys.executable).parent


class Controller:
    """The lab as `python -m lab` runs it: daemons in the background, state in one directory."""

    def __init__(self, state_dir, name="rlab"):
        self.lab = Lab(state_dir, name=name)
        self.state_dir = self.lab.state_dir
        self.master_dir = self.state_dir / "master"
        self.deployment_file = self.master_dir / DEPLOYMENT_FILE
        self.password_file = self.state_dir / "password"

    # ---------------------------------------------------------------- password

    def password(self, create=False):
        if os.environ.get("REDIS_PASSWORD"):
            return os.environ["REDIS_PASSWORD"]
        if self.password_file.exists():
            return self.password_file.read_text().strip()
        if not create:
            raise LabError("no password: set REDIS_PASSWORD or run `python -m lab up`")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        print(f"lab: generated a Redis password, kept in {self.password_file} (mode 0600)")
        return self.password_file.read_text().strip()

    # ---------------------------------------------------------------- daemons

    @staticmethod
    def _alive(pidfile):
        try:
            return pid_alive(Path(pidfile).read_text().strip())
        except OSError:
            return False

    def master_running(self):
        return self._alive(self.master_dir / "var/run/salt-master.pid")

    def start_master(self, bridge_ip):
        settings = dict(master_settings(bridge_ip, self.deployment_file), root_dir=str(self.master_dir))
        write_config(self.master_dir / "master", settings)
        if self.master_running():
            return
        self._forget_dead_daemon(self.master_dir, "salt-master")
        env = dict(os.environ, REDIS_PASSWORD=self.password(create=True))
        self._spawn([BIN / "salt-master", "-c", self.master_dir], self.master_dir / "console.log", env=env)
        deadline = time.monotonic() + 60
        while not self.master_running():
            if time.monotonic() > deadline:
                raise LabError(f"salt-master did not start; see {self.master_dir}/var/log/salt/master")
            time.sleep(0.2)

    def minion_config(self, host, bridge_ip):
        """A new host's /etc/salt/minion: its salt-minion unit starts at every boot."""
        return minion_settings(host, bridge_ip)

    @staticmethod
    def _forget_dead_daemon(root_dir, name):
        """Remove a dead daemon's pid files, as a reboot empties /var/run.

        Salt refuses to start while its files name a process that still exists, and a
        process killed here may linger as a zombie (PID 1 on this machine may not reap).
        """
        for stale in (Path(root_dir) / "var/run").glob(f"*{name}.pid"):
            stale.unlink()

    @staticmethod
    def _spawn(argv, console, env=None):
        # Not `salt-* -d`: Salt's daemonize races with its own "already running" check.
        console.parent.mkdir(parents=True, exist_ok=True)
        with open(console, "ab") as output:
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True, env=env
            )

    def salt(self, tool, *args, capture=False):
        argv = [BIN / tool, "-c", self.master_dir, *args]
        # salt-run renders pillar in its own process: it needs the master's environment.
        env = dict(os.environ)
        if self.password_file.exists() or "REDIS_PASSWORD" in env:
            env["REDIS_PASSWORD"] = self.password()
        return subprocess.run(argv, capture_output=capture, text=True, check=False, env=env)

    def wait_for_minions(self, hosts, timeout=90):
        deadline, missing = time.monotonic() + timeout, set(hosts)
        while missing and time.monotonic() < deadline:
            targets = ",".join(sorted(missing))
            result = self.salt("salt", "-L", targets, "test.ping", "--out=json", "--static", "-t", "2", capture=True)
            try:
                answered = json.loads(result.stdout or "{}")
            except json.JSONDecodeError:
                answered = {}
            missing -= {minion for minion, ok in answered.items() if ok is True}
            if missing:
                time.sleep(1)
        if missing:
            raise LabError(f"minions did not answer: {', '.join(sorted(missing))}")

    # ---------------------------------------------------------------- verbs

    def up(self, config):
        started = time.monotonic()
        if config or not self.deployment_file.exists():
            self._install_config(config or DEFAULT_CONFIG)
        hosts = self.ensure_hosts_and_minions()
        # state.apply redis syncs our modules itself on Redis hosts; this makes
        # `salt '*' redis_cluster.status` answer on every minion, as operators expect.
        self.salt("salt", "*", "saltutil.sync_all", "--out=quiet", capture=True)
        print(f"lab: {len(hosts)} hosts up in {time.monotonic() - started:.1f}s; running salt '*' state.apply redis")
        return self.apply()

    def ensure_hosts_and_minions(self):
        """Master first, then every host boots (its salt-minion is one of its units)."""
        hosts = read_hosts(self.deployment_file)
        _, bridge_ip = self.lab.ensure_network(hosts)
        self.password(create=True)
        self.start_master(bridge_ip)
        self.lab.ensure_hosts(hosts, self.minion_config)
        self.wait_for_minions([h.name for h in hosts])
        return hosts

    def apply(self):
        started = time.monotonic()
        result = self.salt("salt", "*", "state.apply", "redis", "--out=json", "--static", "-t", "600", capture=True)
        try:
            returns = json.loads(result.stdout)
        except json.JSONDecodeError:
            print(result.stdout + result.stderr)
            return 1
        failed = print_apply_summary(returns)
        print(f"lab: state.apply redis took {time.monotonic() - started:.1f}s")
        if not failed:
            self.print_status()
        return 1 if failed else 0

    def print_status(self):
        """One line per host, from `salt '*' redis_cluster.status` (our module, the password from pillar)."""
        result = self.salt("salt", "*", "redis_cluster.status", "--out=json", "--static", capture=True)
        try:
            statuses = json.loads(result.stdout or "{}")
        except json.JSONDecodeError:
            statuses = {}
        for minion in sorted(statuses):
            status = statuses[minion]
            memory = self.lab.memory(minion)
            host = f"  {minion:<12} host memory {memory / 2**20:4.0f} MiB " if memory else f"  {minion:<12} "
            if not isinstance(status, dict) or "ping" not in status:
                print(f"{host} {status.get('role', '?') if isinstance(status, dict) else status}: no Redis")
                continue
            answer = "PONG" if status["ping"] else f"NO ANSWER ({status.get('error')})"
            print(
                f"{host} {status['role']:<13} {status['address']:<21} {answer}  "
                f"{status.get('server', 'redis')} {status.get('version')}"
                f"  maxmemory {status.get('maxmemory_human')}  keys {status.get('keys')}"
            )

    def _install_config(self, path):
        """Make `path` the master's deployment YAML, as-is (even invalid)."""
        source = Path(path)
        if not source.exists():
            raise LabError(f"{source}: no such config file")
        self.master_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.deployment_file)
        return source

    def config(self, path):
        source = self._install_config(path)
        if self.master_running():
            self.ensure_hosts_and_minions()
        print(f"lab: {self.deployment_file} is now a copy of {source}; nothing applied")
        return 0

    def exec(self, host, argv):
        env = dict(os.environ, REDISCLI_AUTH=self.password())
        return subprocess.run(self.lab.enter(host, argv), env=env).returncode

    def start(self, host):
        started = time.monotonic()
        self.lab.boot(host)
        self.wait_for_minions([host])
        print(f"lab: {host} booted; its salt-minion answers after {time.monotonic() - started:.1f}s")
        return 0

    def down(self):
        self.lab.destroy()
        # The master and anything else started with our state directory on its command line.
        marker = str(self.state_dir).encode()
        # Not this process nor the shells that started it: `--state-dir DIR` puts the
        # marker on their command lines too.
        ours, pid = set(), os.getpid()
        while pid > 1 and pid not in ours:
            ours.add(pid)
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if int(proc.name) not in ours and marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        shutil.rmtree(self.state_dir, ignore_errors=True)
        print("lab: down; namespaces, bridge and state directory removed")
        return 0


def print_apply_summary(returns):
    """Print one line per minion, and every failed or changed state; True if anything failed."""
    failed = False
    for minion in sorted(returns):
        states = returns[minion]
        if not isinstance(states, dict):
            print(f"{minion}: ERROR\n    " + "\n    ".join(map(str, states if isinstance(states, list) else [states])))
            failed = True
            continue
        bad = {k: v for k, v in states.items() if not v.get("result")}
        changed = {k: v for k, v in states.items() if v.get("changes") and v.get("result")}
        print(f"{minion}: {len(states)} states, {len(changed)} changed, {len(bad)} failed")
        for key, value in sorted(changed.items(), key=lambda kv: kv[1].get("__run_num__", 0)):
            print(f"    changed  {value.get('__id__', key)}: {value.get('comment', '')}".rstrip())
        for key, value in sorted(bad.items(), key=lambda kv: kv[1].get("__run_num__", 0)):
            print(f"    FAILED   {value.get('__id__', key)}: {value.get('comment', '')}")
        failed = failed or bool(bad)
    return failed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("--state-dir", default=os.environ.get("LAB_STATE_DIR", REPO / ".lab"))
    parser.add_argument(
        "--name", default=os.environ.get("LAB_NAME", "rlab"), help="prefix of the lab's namespaces, links, cgroups"
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="create hosts, start salt, apply redis")
    up.add_argument("--config", help=f"deployment YAML (default {DEFAULT_CONFIG.relative_to(REPO)})")
    for tool in ("salt", "salt-run"):
        verbs.add_parser(tool, help=f"{tool} against the lab master", add_help=False)
    verbs.add_parser("config", help="make PATH the master's deployment YAML").add_argument("path")
    exec_ = verbs.add_parser("exec", help="run a command inside a host")
    exec_.add_argument("host")
    exec_.add_argument("command", nargs=argparse.REMAINDER)
    for verb in ("kill", "start", "partition", "heal"):
        verbs.add_parser(verb).add_argument("host")
    verbs.add_parser("down", help="stop everything and remove it")

    argv = sys.argv[1:] if argv is None else argv
    # salt and salt-run pass every argument through unchanged.
    state_args, rest = argv, []
    for tool in ("salt", "salt-run"):
        if tool in argv:
            position = argv.index(tool)
            state_args, rest = argv[: position + 1], argv[position + 1 :]
            break
    args = parser.parse_args(state_args)
    controller = Controller(args.state_dir, args.name)
    try:
        if args.verb in ("salt", "salt-run"):
            return controller.salt(args.verb, *rest).returncode
        if args.verb == "up":
            return controller.up(args.config)
        if args.verb == "config":
            return controller.config(args.path)
        if args.verb == "exec":
            if not args.command:
                parser.error("exec needs a command")
            return controller.exec(args.host, args.command)
        if args.verb == "kill":
            controller.lab.kill(args.host)
            print(f"lab: {args.host} lost power (SIGKILL to its systemd and with it every process of the host)")
            return 0
        if args.verb == "start":
            return controller.start(args.host)
        if args.verb in ("partition", "heal"):
            controller.lab.set_link(args.host, up=args.verb == "heal")
            print(f"lab: {args.host} {'reconnected' if args.verb == 'heal' else 'cut off the network'}")
            return 0
        return controller.down()
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
