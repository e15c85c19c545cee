"""Real redis-sentinel processes and Sentinel-mode "minions" for the functional tests of
_modules/redis_sentinel.py, _states/redis_sentinel.py and _beacons/redis_sentinel.py.

Everything runs on 127.0.0.1 with Debian's /usr/bin/redis-server and /usr/bin/redis-sentinel
(Redis 7.0). The Sentinels start as the package starts its one: with a copy of the
package's /etc/redis/sentinel.conf (only ports and paths changed), which the state then
takes over. Passwords travel through files and redis-py only, never through argv.
"""

import os
import pathlib
import pwd
import re
import subprocess
import time

import pytest
import redis
from conftest import PASSWORD, SERVERS, RedisServer, free_port, give_opts, load_module, stop_process
from redis.backoff import NoBackoff
from redis.retry import Retry

SENTINEL_BINARY = "/usr/bin/redis-sentinel"
PACKAGE_FILE = pathlib.Path("/etc/redis/sentinel.conf")
MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10000


def sentinel_client(port, password=PASSWORD, timeout=5):
    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True, retry=Retry(NoBackoff(), 0))


def wait_for(condition, timeout, interval=0.1, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except redis.RedisError:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{message}: not within {timeout}s", pytrace=False)
        time.sleep(interval)


class SentinelProcess:
    """One real redis-sentinel, started like the package's service: ``<binary> <config file>``."""

    def __init__(self, directory, port=None):
        self.dir = pathlib.Path(os.path.realpath(directory))
        self.port = port or free_port()
        self.conf = self.dir / "sentinel.conf"
        self.paths = {"logfile": str(self.dir / "sentinel.log"), "dir": str(self.dir),
                      "pidfile": str(self.dir / "sentinel.pid"), "daemonize": False}
        self.process = None
        self.restarts = 0

    def write_package_conf(self):
        """The package's file with this test's port and paths, monitoring nothing of ours
        (the package's `mymaster 127.0.0.1 6379`, moved to a closed port), 0640 redis:redis."""
        text = PACKAGE_FILE.read_text()
        replacements = {
            r"(?m)^port .*$": f"port {self.port}",
            r"(?m)^daemonize .*$": "daemonize no",
            r"(?m)^pidfile .*$": f"pidfile {self.paths['pidfile']}",
            r"(?m)^logfile .*$": f"logfile {self.paths['logfile']}",
            r"(?m)^dir .*$": f"dir {self.dir}",
            r"(?m)^sentinel monitor mymaster .*$": f"sentinel monitor mymaster 127.0.0.1 {free_port()} 2",
        }
        for pattern, line in replacements.items():
            text, count = re.subn(pattern, line, text)
            assert count == 1, f"the package's sentinel.conf has no single line for {pattern}"
        self.conf.write_text(text)
        redis_user = pwd.getpwnam("redis")
        os.chown(self.conf, redis_user.pw_uid, redis_user.pw_gid)
        os.chmod(self.conf, 0o640)
        self.package_text = text

    def spawn(self):
        log = open(self.dir / "stderr.log", "ab")
        with log:
            # The package's units run Sentinel with umask 007 (systemd UMask=, start-stop-daemon --umask).
            self.process = subprocess.Popen([SENTINEL_BINARY, str(self.conf)], cwd=self.dir, stdout=log, stderr=log,
                                            preexec_fn=lambda: os.umask(0o007))

    def start(self, timeout=10):
        self.spawn()

        def answers():
            if self.process.poll() is not None:
                pytest.fail(f"redis-sentinel exited with {self.process.returncode}:\n{self.logs()}", pytrace=False)
            try:
                sentinel_client(self.port, password=None, timeout=1).ping()
            except redis.AuthenticationError:
                pass  # up, and wants a password
            except redis.ResponseError as exc:
                if "NOAUTH" not in str(exc):
                    raise
            return True

        wait_for(answers, timeout, message=f"redis-sentinel on port {self.port} answers")

    def stop(self):
        stop_process(self.process)

    def restart(self, service=None):
        """Stand-in for ``service.restart``: same binary, same config file, new process."""
        self.restarts += 1
        self.stop()
        self.start()
        return True

    def client(self, password=PASSWORD):
        return sentinel_client(self.port, password)

    def master(self):
        reply = self.client().execute_command("SENTINEL", "MASTER", MASTER_NAME)
        return dict(zip(reply[::2], reply[1::2]))

    def master_address(self):
        reply = self.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return f"{reply[0]}:{reply[1]}" if reply else None

    def known_sentinels(self):
        reply = self.client().execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
        return sorted(dict(zip(s[::2], s[1::2]))["port"] for s in reply)

    def identity(self):
        info = self.client().info("server")
        return info["process_id"], info["run_id"]

    def logs(self):
        texts = []
        for name in ("stderr.log", "sentinel.log"):
            path = self.dir / name
            if path.exists():
                texts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(texts)


class Minion:
    """One host of the deployment as its minion sees it: pillar, execution module, state
    module (``__salt__`` wired to the execution module and to its Sentinel's restart)."""

    def __init__(self, hostname, role, deployment, sentinel, server=None):
        self.hostname, self.role, self.deployment = hostname, role, deployment
        self.sentinel, self.server = sentinel, server
        self.overrides = {}
        self.mod = load_module(f"redis_sentinel_mod_{hostname}", "_modules/redis_sentinel.py")
        self.state = load_module(f"redis_sentinel_state_{hostname}", "_states/redis_sentinel.py")
        self.state.__salt__ = {
            f"redis_sentinel.{name}": getattr(self.mod, name)
            for name in dir(self.mod) if not name.startswith("_") and callable(getattr(self.mod, name))
            and getattr(getattr(self.mod, name), "__module__", None) == self.mod.__name__
        }
        self.state.__salt__["service.restart"] = sentinel.restart
        self.state.__opts__ = {"test": False}
        # One minion per host: its Redis server's and its Sentinel's modules share the cache.
        give_opts(self.mod, {"cachedir": str((server or sentinel).dir / "minion-cache")})
        self.refresh_pillar()

    def pillar(self):
        deployment = self.deployment
        settings = {
            "mode": "sentinel",
            "role": self.role,
            "hostname": self.hostname,
            "bind_ip": "127.0.0.1",
            "port": self.server.port if self.server else 6379,
            "sentinel_port": self.sentinel.port,
            "password": PASSWORD,
            "master_name": MASTER_NAME,
            "peers": deployment.peers(),
            "initial_master": deployment.peers()[0],
            "sentinel": {
                "down_after_ms": DOWN_AFTER_MS,
                "failover_timeout_ms": FAILOVER_TIMEOUT_MS,
                "witnesses": [m.hostname for m in deployment.minions if m.role == "sentinel-only"],
                "hosts": deployment.sentinel_hosts(),
                "quorum": len(deployment.sentinel_hosts()) // 2 + 1,
            },
        }
        if self.role == "replica":
            settings["replica_of"] = deployment.peers()[0]["hostname"]
        for key, value in self.overrides.items():
            if isinstance(value, dict):
                settings[key] = dict(settings.get(key, {}), **value)
            else:
                settings[key] = value
        return {"redis": settings}

    def refresh_pillar(self):
        self.mod.__pillar__ = self.state.__pillar__ = self.pillar()

    def monitored(self, test=False, name=MASTER_NAME, **kwargs):
        self.state.__opts__ = {"test": test}
        arguments = dict(config_file=str(self.sentinel.conf), service="redis-sentinel", timeout=20,
                         **self.sentinel.paths)
        arguments.update(kwargs)
        return self.state.monitored(name, **arguments)

    def apply(self, test=False):
        """The SLS order on this host: ACL user and replication (Redis hosts), then the Sentinel."""
        self.refresh_pillar()
        self.state.__opts__ = {"test": test}
        rets = []
        if self.server:
            rets.append(self.state.sentinel_user())
            rets.append(self.state.replicating(MASTER_NAME))
        rets.append(self.monitored(test=test))
        return rets


class Deployment:
    """Two Redis servers (alpha: initial master, beta: replica) and three Sentinels (alpha,
    beta, and the witness gamma), each Sentinel first running the package's file."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.servers, self.sentinels, self.minions = [], [], []

    def start(self):
        build = SERVERS["redis-7.0"]
        build.require()
        for hostname in ("alpha", "beta"):
            server = RedisServer(self.tmp.mktemp(f"redis-{hostname}"), build)
            self.servers.append(server)
            server.start()
        for hostname in ("alpha", "beta", "gamma"):
            self.add_sentinel(hostname)
        self.minions = [
            Minion("alpha", "master", self, self.sentinels[0], self.servers[0]),
            Minion("beta", "replica", self, self.sentinels[1], self.servers[1]),
            Minion("gamma", "sentinel-only", self, self.sentinels[2]),
        ]
        for minion in self.minions:
            minion.refresh_pillar()
        return self

    def add_sentinel(self, hostname, package=True):
        sentinel = SentinelProcess(self.tmp.mktemp(f"sentinel-{hostname}"))
        sentinel.hostname = hostname
        self.sentinels.append(sentinel)
        if package:
            sentinel.write_package_conf()
            sentinel.start()
        return sentinel

    def peers(self):
        return [{"hostname": name, "minion_id": name, "ip": "127.0.0.1", "port": server.port}
                for name, server in zip(("alpha", "beta"), self.servers)]

    def sentinel_hosts(self):
        return [{"hostname": s.hostname, "ip": "127.0.0.1", "port": s.port} for s in self.sentinels[:3]]

    def stop(self):
        for process in self.sentinels + self.servers:
            process.stop()

    def server_by_address(self, address):
        return next(s for s in self.servers if f"127.0.0.1:{s.port}" == address)

    def apply_all(self, test=False):
        # Salt applies every host at once: each server's login for the Sentinels exists before
        # a Sentinel (which waits for the servers to accept its login) is applied.
        for minion in self.minions:
            if minion.server and not test:
                minion.refresh_pillar()
                minion.state.__opts__ = {"test": False}
                minion.state.sentinel_user()
        return {minion.hostname: minion.apply(test=test) for minion in self.minions}

    def wait_converged(self, timeout=20):
        """Every Sentinel names the same master, knows the two others and the replica, and
        the replica's link is up."""

        def converged():
            addresses = {s.master_address() for s in self.sentinels[:3]}
            if len(addresses) != 1 or None in addresses:
                return False
            master = self.server_by_address(addresses.pop())
            replica = next(s for s in self.servers if s is not master)
            info = replica.client().info("replication")
            if info.get("master_link_status") != "up" or info.get("master_port") != master.port:
                return False
            return all(len(s.known_sentinels()) == 2 and int(s.master()["num-slaves"]) == 1
                       for s in self.sentinels[:3]) and (master, replica)

        return wait_for(converged, timeout, interval=0.2, message="the deployment converges")


def changes_of(rets):
    return [ret["changes"] for ret in rets if ret["changes"]]


def all_rets(applied):
    return [ret for rets in applied.values() for ret in rets]


@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    """The deployment, applied like a first `state.apply redis` would (a dry run first, then
    twice for real), and converged. Tests that change it leave it converged."""
    deployment = Deployment(tmp_path_factory)
    try:
        deployment.start()
        for sentinel in deployment.sentinels:
            # The package's Sentinel rewrote its file when it started (its id, epochs).
            sentinel.package_text = sentinel.conf.read_text()
        dry = deployment.apply_all(test=True)
        deployment.after_dry_run = {
            "files_untouched": all(s.conf.read_text() == s.package_text for s in deployment.sentinels),
            "restarts": sum(s.restarts for s in deployment.sentinels),
            "beta_role": deployment.servers[1].client().info("replication")["role"],
            "acl_users": [s.client().execute_command("ACL", "USERS") for s in deployment.servers],
        }
        first = deployment.apply_all()
        second = deployment.apply_all()
        deployment.wait_converged()
        deployment.runs = {"dry": dry, "first": first, "second": second}
        yield deployment
    finally:
        deployment.stop()
