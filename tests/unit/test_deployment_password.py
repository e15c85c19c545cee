"""Which pillar renders carry the real password: only the salt-master daemon's answer to a
minion that asks for its own pillar. Every other program that renders pillar (salt-run
pillar.show_pillar, salt-api, a runner the master forks, salt-call) shows it hidden.

Each test gives the module the ``__opts__`` that program really has (Salt's own
configuration loaders, with that program's argv[0]); the master worker's case runs through
Salt's own request handler (``salt.master.MWorker._handle_aes``), as a minion's ``_pillar``
request does.
"""

import asyncio
import sys
import types

import pytest
import salt.config
import salt.master

from test_deployment import make_doc, rd, write_yaml

PASSWORD = "literal-pw"
HIDDEN = "(hidden: only minions receive the password)"
GRAINS = {"mem_total": 4096, "ipv4": ["127.0.0.1", "10.0.0.1"]}


@pytest.fixture
def deployment(tmp_path, monkeypatch):
    """The YAML's path; server1 (10.0.0.1) is a cluster node."""
    doc = make_doc(3)
    doc["cache"]["redis"]["password"] = PASSWORD
    monkeypatch.setattr(rd, "__grains__", dict(GRAINS), raising=False)
    return write_yaml(tmp_path, doc)


@pytest.fixture
def opts_of(tmp_path, monkeypatch):
    """``opts_of(loader, argv0)``: the options Salt's `loader` gives a program started as
    `argv0`, from a master (or minion) configuration in tmp_path."""
    (tmp_path / "master").write_text(f"root_dir: {tmp_path}/root\n")
    (tmp_path / "minion").write_text(f"root_dir: {tmp_path}/root\nid: server1\nmaster: 127.0.0.1\n")

    def load(loader, argv0):
        monkeypatch.setattr(sys, "argv", [argv0])
        name = "minion" if loader == "minion_config" else "master"
        return getattr(salt.config, loader)(str(tmp_path / name))

    return load


def in_master_worker(opts, request, render, dispatch="sync"):
    """`render()` as the salt-master's worker runs the handler of minion `request`: called
    directly (Salt 3008's default) or awaited (``master_async_mworker: true``)."""

    class Handlers:
        def get_method(self, name):
            return render

        def run_func(self, name, load):
            if dispatch == "sync":
                return render()

            async def handler():
                return render()

            return handler()

    worker = types.SimpleNamespace(opts=opts, aes_funcs=Handlers())
    return asyncio.run(salt.master.MWorker._handle_aes(worker, dict(request, grains=dict(GRAINS))))


def show(minion_id, deployment):
    return rd.ext_pillar(minion_id, {}, config=deployment)["redis"]


@pytest.mark.parametrize("dispatch", ["sync", "async"])
@pytest.mark.parametrize(
    "argv0", ["/usr/bin/salt-master", "/tmp/scripts/cli_salt_master.py", "/opt/saltstack/salt/bin/python3.10"]
)
def test_the_master_daemon_answering_a_minions_pillar_request_gives_it_the_password(
    opts_of, deployment, monkeypatch, argv0, dispatch
):
    # cli_salt_master.py: how pytest-salt-factories starts the real salt-master.
    opts = opts_of("master_config", argv0)
    monkeypatch.setattr(rd, "__opts__", opts, raising=False)
    request = {"cmd": "_pillar", "id": "server1"}
    shown = in_master_worker(opts, request, lambda: show("server1", deployment), dispatch)
    assert shown["password"] == PASSWORD
    assert shown["role"] == "cluster-node"


@pytest.mark.parametrize(
    "loader, argv0",
    [
        ("client_config", "/usr/bin/salt-run"),  # salt-run pillar.show_pillar server1
        ("api_config", "/usr/bin/salt-api"),
        # A runner that the salt-master daemon forks for salt-api, salt-run --async or the
        # reactor: the daemon's options, outside of any minion's request.
        ("master_config", "/usr/bin/salt-master"),
        ("master_config", "/tmp/scripts/cli_salt_master.py"),
        ("minion_config", "/usr/bin/salt-call"),  # salt-call --local
    ],
    ids=["salt-run", "salt-api", "runner-forked-by-the-master", "runner-forked-by-the-test-master", "salt-call"],
)
def test_every_other_program_shows_the_password_hidden(opts_of, deployment, monkeypatch, loader, argv0):
    monkeypatch.setattr(rd, "__opts__", opts_of(loader, argv0), raising=False)
    shown = show("server1", deployment)
    assert shown["password"] == HIDDEN
    assert PASSWORD not in repr(shown)
    assert shown["role"] == "cluster-node"


@pytest.mark.parametrize(
    "request_",
    [
        # publish.runner pillar.show_pillar server1, sent by minion server1 (peer_run)
        {"cmd": "minion_runner", "id": "server1", "fun": "pillar.show_pillar"},
        # server2 asking for its pillar never gets server1's (Salt renders the asker's own)
        {"cmd": "_pillar", "id": "server2"},
    ],
    ids=["a-minions-runner-call", "another-minions-pillar-request"],
)
def test_other_requests_in_the_master_worker_show_the_password_hidden(opts_of, deployment, monkeypatch, request_):
    opts = opts_of("master_config", "/usr/bin/salt-master")
    monkeypatch.setattr(rd, "__opts__", opts, raising=False)
    shown = in_master_worker(opts, request_, lambda: show("server1", deployment))
    assert shown["password"] == HIDDEN


def test_without_salts_request_context_the_password_is_hidden(opts_of, deployment, monkeypatch):
    # Fail closed: a Salt that no longer has salt.utils.ctx hides the password everywhere.
    opts = opts_of("master_config", "/usr/bin/salt-master")
    monkeypatch.setattr(rd, "__opts__", opts, raising=False)
    monkeypatch.setitem(sys.modules, "salt.utils.ctx", None)
    shown = in_master_worker(opts, {"cmd": "_pillar", "id": "server1"}, lambda: show("server1", deployment))
    assert shown["password"] == HIDDEN
