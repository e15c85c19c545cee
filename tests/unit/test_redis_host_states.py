"""_states/redis_host.py: a converged host is answered from one look (no change, Salt's
state not called); anything else is Salt's own state's to decide, with the same arguments."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("redis_host_state", ROOT / "_states" / "redis_host.py")
rh = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rh)


class Salt:
    """Salt's states, recording each call."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, function):
        def call(*args, **kwargs):
            self.calls.append((function, args, kwargs))
            return {"name": kwargs.get("name", args[0] if args else None), "result": True, "changes": {},
                    "comment": f"{function} ran"}

        return call


@pytest.fixture
def host(monkeypatch):
    """``host(stdout, returncode=0)``: what the next commands print; returns Salt's states."""
    states = Salt()
    monkeypatch.setattr(rh, "__states__", states, raising=False)
    monkeypatch.setattr(rh, "__context__", {}, raising=False)
    monkeypatch.setattr(rh, "__opts__", {"test": False}, raising=False)
    monkeypatch.setattr(rh, "__salt__", {}, raising=False)
    monkeypatch.setattr(rh.salt.utils.systemd, "booted", lambda context=None: True)
    monkeypatch.setattr(rh.salt.utils.path, "which", lambda name: f"/usr/bin/{name}")
    commands = []

    def answer(stdout, returncode=0):
        def run(argv, **kwargs):
            commands.append(argv)
            return subprocess.CompletedProcess(argv, returncode, stdout=stdout, stderr="")

        monkeypatch.setattr(rh.subprocess, "run", run)
        return states

    answer.commands = commands
    return answer


UNIT = "LoadState={load}\nActiveState={active}\nUnitFileState={file}\nNeedDaemonReload={reload}\n"


def unit(load="loaded", active="active", file="enabled", reload="no"):
    return UNIT.format(load=load, active=active, file=file, reload=reload)


def test_a_running_enabled_service_is_left_alone_after_one_systemctl(host):
    states = host(unit())
    ret = rh.service_running("redis-server", enable=True)
    assert ret["result"] is True and ret["changes"] == {} and not states.calls
    assert len(host.commands) == 1 and host.commands[0][:2] == ["/usr/bin/systemctl", "show"]


@pytest.mark.parametrize("shown", [
    unit(active="inactive"), unit(active="activating"), unit(file="disabled"), unit(file="static"),
    unit(reload="yes"), unit(load="not-found"), "garbage",
])
def test_anything_else_goes_to_service_running_with_the_same_arguments(host, shown):
    states = host(shown)
    ret = rh.service_running("redis-server", enable=True, init_delay=1)
    assert ret["comment"] == "service.running ran"
    assert states.calls == [("service.running", (), {"name": "redis-server", "enable": True, "init_delay": 1})]


def test_without_systemd_salt_decides(host, monkeypatch):
    states = host(unit())
    monkeypatch.setattr(rh.salt.utils.systemd, "booted", lambda context=None: False)
    rh.service_running("redis-server", enable=True)
    assert states.calls[0][0] == "service.running" and not host.commands


@pytest.mark.parametrize("shown, alone", [
    (unit(active="inactive", file="disabled"), True),
    (unit(active="failed", file="disabled"), True),
    (unit(load="masked", active="inactive", file="masked"), True),
    (unit(active="active", file="disabled"), False),
    (unit(active="inactive", file="enabled"), False),
    (unit(load="not-found", active="inactive", file=""), False),
])
def test_a_dead_disabled_service_is_left_alone(host, shown, alone):
    states = host(shown)
    rh.service_dead("redis-sentinel", enable=False)
    assert (not states.calls) is alone
    if not alone:
        assert states.calls == [("service.dead", (), {"name": "redis-sentinel", "enable": False})]


def test_under_watch_salt_reloads_or_restarts(host):
    states = host(unit())
    rh.mod_watch("redis-salt-firewall", sfun="service_running", reload=True, enable=True)
    assert states.calls == [("service.mod_watch", ("redis-salt-firewall",),
                             {"sfun": "running", "reload": True, "enable": True})]


def test_installed_packages_are_one_query(host):
    states = host("installed\tredis-server\ninstalled\tredis-tools:amd64\n")
    ret = rh.packages_installed("redis-packages-installed", pkgs=["redis-server", "redis-tools"])
    assert ret["result"] is True and not states.calls and len(host.commands) == 1


@pytest.mark.parametrize("listed", [
    "installed\tredis-server\n", "installed\tredis-server\nconfig-files\tredis-tools\n", "",
])
def test_a_missing_package_goes_to_pkg_installed(host, listed):
    states = host(listed)
    rh.packages_installed("redis-packages-installed", pkgs=["redis-server", "redis-tools"], refresh=True)
    assert states.calls == [("pkg.installed", (), {"name": "redis-packages-installed",
                                                   "pkgs": ["redis-server", "redis-tools"], "refresh": True})]


def test_a_loaded_table_is_one_listing(host):
    host("table inet redis_salt {}")
    ret = rh.nft_table_loaded("inet redis_salt", rules_file="/etc/redis-salt/firewall.nft")
    assert ret["changes"] == {} and ret["result"] is True
    assert host.commands == [["/usr/bin/nft", "list", "table", "inet", "redis_salt"]]


def test_a_missing_table_is_loaded_from_the_file(host, monkeypatch):
    host("", returncode=1)
    ret = rh.nft_table_loaded("inet redis_salt", rules_file="/etc/redis-salt/firewall.nft")
    # both calls answered 1 here: the load failed, and says so
    assert ret["result"] is False and "nft -f /etc/redis-salt/firewall.nft failed" in ret["comment"]
    assert host.commands[1] == ["/usr/bin/nft", "-f", "/etc/redis-salt/firewall.nft"]
    monkeypatch.setattr(rh, "__opts__", {"test": True}, raising=False)
    host.commands.clear()
    ret = rh.nft_table_loaded("inet redis_salt", rules_file="/etc/redis-salt/firewall.nft")
    assert ret["result"] is None and ret["changes"] and len(host.commands) == 1


def test_an_absent_table_is_left_alone(host):
    host("", returncode=1)
    ret = rh.nft_table_absent("inet redis_salt")
    assert ret["changes"] == {} and len(host.commands) == 1


HEALTH_JOB = {"function": "redis_cluster.health", "minutes": 5, "kwargs": {"fire_events": True}, "maxrunning": 1,
              "name": "redis-health", "jid_include": True}


@pytest.fixture
def scheduler(host, monkeypatch):
    """``scheduler(jobs)``: the jobs redis_node.scheduled_jobs sees; returns Salt's states."""
    states = host("")

    def with_jobs(jobs):
        monkeypatch.setattr(rh, "__salt__", {
            "redis_node.scheduled_jobs": lambda: dict(jobs, enabled=True),
            "schedule.build_schedule_item": lambda name, **kwargs: dict(HEALTH_JOB),
        }, raising=False)
        return states

    return with_jobs


def test_a_scheduled_job_as_wanted_is_left_alone(scheduler):
    states = scheduler({"redis-health": dict(HEALTH_JOB, enabled=True)})
    ret = rh.schedule_present("redis-health", function="redis_cluster.health", minutes=5)
    assert ret["changes"] == {} and ret["comment"] == "Job redis-health in correct state" and not states.calls


@pytest.mark.parametrize("jobs", [{}, {"redis-health": dict(HEALTH_JOB, minutes=10, enabled=True)},
                                  {"redis-health": dict(HEALTH_JOB, enabled=False)}])
def test_a_missing_or_different_job_goes_to_schedule_present(scheduler, jobs):
    states = scheduler(jobs)
    rh.schedule_present("redis-health", function="redis_cluster.health", minutes=5)
    assert states.calls == [("schedule.present", ("redis-health",),
                             {"function": "redis_cluster.health", "minutes": 5})]
