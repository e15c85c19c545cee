"""Which minion is which controller, as the runners see it: ``salt-run redis_deployment.shape``
resolves every controller to one of the master's accepted minion keys with the ext_pillar's
own matcher (the id is the controller's minion_id, or its first label is), and
redis.orchestrate targets those ids. Also: salt-run's own clients are destroyed at exit,
so no "unclosed Runner ..." warning follows our output.

The accepted keys are faked (``_accepted_minions``); the matcher, the YAML and the
orchestrate SLS are the real ones.
"""

import getpass
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import salt.cli.run
import salt.minion
import salt.runner
import salt.utils.templates
import yaml
from support.loaders import controller, load_runner

ROOT = Path(__file__).resolve().parents[2]


def write_deployment(tmp_path, controllers, **settings):
    path = tmp_path / "my_multihead_cluster.yaml"
    path.write_text(yaml.safe_dump({"cache": {"redis": {"password": "${REDIS_PASSWORD}", **settings}},
                                    "nodes": {"controllers": controllers}}))
    return path


FOUR = [controller("server1", "10.0.0.1"), controller("server2", "10.0.0.2"), controller("server3", "10.0.0.3"),
        controller("server4", "10.0.0.4", redis=False)]


@pytest.fixture
def deployment_runner(tmp_path, monkeypatch):
    """The redis_deployment runner with ``accepted`` as the master's accepted minion keys."""

    def use(controllers=FOUR, accepted=(), **settings):
        module = load_runner("redis_deployment")
        path = write_deployment(tmp_path, controllers, **settings)
        module.__opts__ = {"ext_pillar": [{"redis_deployment": {"config": str(path)}}]}
        module.__context__ = {}
        if isinstance(accepted, Exception):
            def fail():
                raise accepted
            monkeypatch.setattr(module, "_accepted_minions", fail)
        else:
            monkeypatch.setattr(module, "_accepted_minions", lambda: list(accepted))
        return module

    return use


def minions(shape):
    return {c["hostname"]: c["minion"] for c in shape["controllers"]}


def problems(shape):
    return {c["hostname"]: c["minion_problem"] for c in shape["controllers"] if c["minion_problem"]}


# ---------------------------------------------------------------- shape: each controller's minion


def test_fqdn_minion_ids_resolve_to_their_controllers(deployment_runner):
    accepted = ["server1.example.org", "server2.example.org", "server3.example.org", "server4.example.org"]
    shape = deployment_runner(accepted=accepted).shape()
    assert minions(shape) == {f"server{n}": f"server{n}.example.org" for n in range(1, 5)}
    assert problems(shape) == {}
    # The YAML's minion_id keeps its meaning (what the ext_pillar matches on); `minion` is the target.
    assert [c["minion_id"] for c in shape["controllers"]] == ["server1", "server2", "server3", "server4"]
    assert [p["minion"] for p in shape["peers"]] == ["server1.example.org", "server2.example.org",
                                                     "server3.example.org"]
    assert shape["initial_master"]["minion"] == "server1.example.org"


def test_exact_ids_and_a_configured_minion_id(deployment_runner):
    controllers = FOUR[:3] + [controller("server4", "10.0.0.4", redis=False, minion_id="cache-4.dc1.example.org")]
    shape = deployment_runner(controllers, accepted=["server1", "server2", "server3.dc1", "cache-4.dc1.example.org",
                                                     "web1"]).shape()
    assert minions(shape) == {"server1": "server1", "server2": "server2", "server3": "server3.dc1",
                              "server4": "cache-4.dc1.example.org"}
    assert problems(shape) == {}


def test_a_controller_without_a_minion_says_which_id_it_expected(deployment_runner):
    shape = deployment_runner(accepted=["server1", "server2", "server4"]).shape()
    assert minions(shape)["server3"] is None
    assert problems(shape) == {"server3": (
        "nodes.controllers[2] (server3): no accepted minion key has id server3 (or server3.<domain>): accept the "
        "minion's key (salt-key -a ID) or set the controller's minion_id")}
    assert [p["minion"] for p in shape["peers"]] == ["server1", "server2", None]


def test_a_minion_that_matches_two_controllers_is_neither_ones(deployment_runner):
    # server1.example.org is cache1 by its whole id and server1 by its first label: the
    # ext_pillar gives that minion an error, so the runners must not target it either.
    controllers = [controller("server1", "10.0.0.1"), controller("server2", "10.0.0.2"),
                   controller("cache1", "10.0.0.3", minion_id="server1.example.org")]
    shape = deployment_runner(controllers, accepted=["server1", "server1.example.org", "server2"]).shape()
    assert minions(shape) == {"server1": "server1", "server2": "server2", "cache1": None}
    assert problems(shape) == {"cache1": (
        "nodes.controllers[2] (cache1): minion server1.example.org matches nodes.controllers[0] (server1) and "
        "nodes.controllers[2] (cache1): expected one controller per minion; give the controllers distinct "
        "minion_id values")}


def test_two_minions_that_match_one_controller_leave_it_without_one(deployment_runner):
    shape = deployment_runner(accepted=["server1", "server1.example.org", "server2", "server3", "server4"]).shape()
    assert minions(shape)["server1"] is None
    assert problems(shape)["server1"].startswith(
        "nodes.controllers[0] (server1): minions server1 and server1.example.org both match minion_id server1: "
        "expected one minion per controller; delete the stale key (salt-key -d ID)")


def test_unreadable_keys_leave_the_shape_and_say_why(deployment_runner):
    shape = deployment_runner(accepted=PermissionError("[Errno 13] Permission denied: '/etc/salt/pki/master'")).shape()
    assert shape["mode"] == "cluster" and minions(shape) == {f"server{n}": None for n in range(1, 5)}
    assert set(problems(shape).values()) == {
        "the master's accepted minion keys could not be read: [Errno 13] Permission denied: '/etc/salt/pki/master'"}


def test_shape_never_holds_the_password(deployment_runner, monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret-of-the-test")
    shape = deployment_runner(accepted=["server1"]).shape()
    assert "s3cret-of-the-test" not in repr(shape)


# ---------------------------------------------------------------- redis.orchestrate's targets


def render_orchestrate(shape, tmp_path, pillar=None):
    """salt/redis/orchestrate.sls as state.orchestrate renders it, with ``shape`` from the runner
    and ``pillar`` as `salt-run state.orchestrate ... pillar=` gives it."""
    text = (ROOT / "salt" / "redis" / "orchestrate.sls").read_text()
    runners = {"redis_deployment.shape": shape}
    opts = {"cachedir": str(tmp_path / "cache"), "file_client": "local", "file_roots": {"base": [str(ROOT / "salt")]}}
    functions = {"saltutil.runner": lambda name: runners[name],
                 "pillar.get": lambda key, default=None: (pillar or {}).get(key, default)}
    rendered = salt.utils.templates.render_jinja_tmpl(text, {"opts": opts, "saltenv": "base", "salt": functions})
    return yaml.safe_load(rendered)


def arguments(states, state_id, function):
    """A state's arguments as one dict (an SLS lists them as one-key mappings)."""
    return {key: value for item in states[state_id][function] if isinstance(item, dict) for key, value in item.items()}


def test_orchestrate_targets_the_resolved_minions(deployment_runner, tmp_path):
    accepted = ["server1.example.org", "server2.example.org", "server3.example.org", "server4.example.org"]
    states = render_orchestrate(deployment_runner(accepted=accepted).shape(), tmp_path)
    servers = ["server1.example.org", "server2.example.org", "server3.example.org"]
    assert arguments(states, "redis-nodes-configured", "salt.state")["tgt"] == servers
    assert arguments(states, "redis-deployment-formed-by-the-initial-master", "salt.state")["tgt"] == servers[0]
    assert arguments(states, "redis-every-node-applied", "salt.state")["tgt"] == servers
    assert arguments(states, "redis-deployment-verified", "salt.function")["tgt"] == servers
    rolled = arguments(states, "redis-pending-restarts-rolled", "salt.runner")
    assert rolled == {"name": "redis_deployment.rolling_restart", "only_pending": True, "allow_downtime": False,
                      "require": [{"salt": "redis-every-node-applied"}]}


def test_orchestrate_rolls_masters_without_replicas_only_when_the_operator_allows_downtime(deployment_runner,
                                                                                           tmp_path):
    states = render_orchestrate(deployment_runner(accepted=["server1", "server2", "server3"]).shape(), tmp_path,
                                pillar={"allow_downtime": True})
    assert arguments(states, "redis-pending-restarts-rolled", "salt.runner")["allow_downtime"] is True


def test_orchestrate_with_a_node_without_its_minion_fails_before_anything_runs(deployment_runner, tmp_path):
    states = render_orchestrate(deployment_runner(accepted=["server1", "server2"]).shape(), tmp_path)
    assert list(states) == ["redis-every-node-has-its-minion"]
    state = arguments(states, "redis-every-node-has-its-minion", "test.configurable_test_state")
    assert state["result"] is False and state["allow_test_mode_failure"] is True
    assert state["comment"] == (
        "nothing changed: nodes.controllers[2] (server3): no accepted minion key has id server3 (or "
        "server3.<domain>): accept the minion's key (salt-key -a ID) or set the controller's minion_id")


# ---------------------------------------------------------------- salt-run's clients destroyed at exit


class _Event:
    destroyed = False

    def destroy(self):
        self.destroyed = True


def _bare(cls, **attributes):
    """An instance of a Salt class without its constructor (no loaders, no sockets)."""
    obj = object.__new__(cls)
    vars(obj).update(attributes)
    return obj


def test_clients_around_our_runner_are_destroyed_at_salt_runs_exit(monkeypatch):
    module = load_runner("redis_deployment")
    module.__opts__ = {}
    registered = []
    monkeypatch.setattr(module.atexit, "register", registered.append)
    event = _Event()
    client = _bare(salt.runner.RunnerClient, event=event)
    minion = _bare(salt.minion.MasterMinion, returners={}, functions={}, utils={}, opts={})

    def salt_runs_our_runner(self, minion):  # noqa: ARG001 - the locals are what is looked for
        module._close_salt_clients_at_exit()

    def salt_run_command(self, client, minion):  # noqa: ARG001 - Salt's salt-run (SaltRun) up the stack
        salt_runs_our_runner(client, minion)
        salt_runs_our_runner(client, minion)  # kept once

    salt_run_command(_bare(salt.cli.run.SaltRun), client, minion)
    assert registered == [module._destroy_left_open] and module._LEFT_OPEN == [client, minion]
    # Salt's job cache makes the client's MasterMinion after the runner returned.
    job_cache = _bare(salt.minion.MasterMinion, returners={}, functions={}, utils={}, opts={})
    vars(client)["_mminion"] = job_cache
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module._destroy_left_open()
        assert client.event is None and event.destroyed
        assert (minion.returners, minion.functions, minion.utils) == (None, None, None)
        assert (job_cache.returners, job_cache.functions, job_cache.utils) == (None, None, None)
        del client, minion, job_cache
    assert [str(w.message) for w in caught if "unclosed" in str(w.message)] == []


@pytest.mark.parametrize("program", ["salt-master", "salt-run", "salt-api", None])
def test_a_daemon_keeps_its_clients(monkeypatch, program):
    """Without Salt's salt-run command up the stack (a daemon's reactor, salt-api), whatever
    the process is called."""
    module = load_runner("redis_deployment")
    module.__opts__ = {"__cli": program}
    monkeypatch.setattr(module.atexit, "register", lambda fn: pytest.fail("registered in a daemon"))
    client = _bare(salt.runner.RunnerClient, event=None)  # noqa: F841 - found on the stack
    module._close_salt_clients_at_exit()
    assert module._LEFT_OPEN == []


def test_salt_run_prints_no_unclosed_warning_after_our_runner(tmp_path):
    """The real salt-run (no master needed for ``shape``): Salt's own ``test.arg`` prints
    "unclosed Runner" and "unclosed MasterMinion" (salt-run never destroys them); ours does not."""
    root = tmp_path / "salt"
    for sub in ("pki", "cache/proc", "sock"):
        (root / sub).mkdir(parents=True)
    (tmp_path / "master").write_text(yaml.safe_dump({
        "root_dir": str(root), "pki_dir": str(root / "pki"), "cachedir": str(root / "cache"),
        "sock_dir": str(root / "sock"), "log_file": str(root / "master.log"), "user": getpass.getuser(),
        "module_dirs": [str(ROOT / "salt")]}))
    config = write_deployment(tmp_path, FOUR)
    salt_run = [sys.executable, str(Path(sys.executable).with_name("salt-run")), "-c", str(tmp_path)]
    env = dict(os.environ, REDIS_PASSWORD="unused")
    ours = subprocess.Popen(salt_run + ["redis_deployment.shape", f"config={config}"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    theirs = subprocess.Popen(salt_run + ["test.arg"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ours_output, theirs_output = ours.communicate(timeout=120)[0], theirs.communicate(timeout=120)[0]
    assert ours.returncode == 0 and "server4" in ours_output, ours_output
    # If this fails, Salt destroys its clients itself now: _close_salt_clients_at_exit can go.
    assert "unclosed Runner" in theirs_output and "unclosed MasterMinion" in theirs_output, theirs_output
    # (Without a running master Salt also drops one event publisher unclosed mid-run:
    # "unclosed SyncWrapper", not ours and not printed when the master runs.)
    for kind in ("Runner", "RunnerClient", "MasterMinion"):
        assert f"unclosed {kind} " not in ours_output, ours_output
