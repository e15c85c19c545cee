"""``salt-run redis_deployment.rolling_restart`` without a master: which server is restarted
when, from the live roles (``_roll_plan``: replicas first, each master after its replica took
over, a master without a replica in sync refused unless ``allow_downtime``), which servers
``nodes=`` names, what ``only_pending`` resumes (``_pending_minions``), and the roll itself
over a small model of the servers: a failed step stops it with the node and the reason,
touching nothing after it, and ``only_pending=True`` resumes with the servers not restarted.

Salt's LocalClient is faked (every minion call is recorded and answered from the model); the
real path is in tests/functional/test_rolling_restart.py and the lab modules.
"""

import itertools

import pytest
import yaml
from support.loaders import controller, load_runner

HOSTS = [f"cs{n}" for n in range(1, 7)]
IP = {host: f"10.0.0.{n}" for n, host in enumerate(HOSTS, 1)}
SLOTS = {"cs1": [[0, 5460]], "cs2": [[5461, 10922]], "cs3": [[10923, 16383]]}


def servers(hosts=HOSTS):
    return [{"hostname": h, "minion": f"{h}.example.org", "address": f"{IP[h]}:6379"} for h in hosts]


def master(host, slots=None):
    return {"reachable": True, "role": "master", "run_id": f"run-{host}", "slots": SLOTS.get(host, slots or []),
            "cluster_state": "ok", "address": f"{IP[host]}:6379"}


def replica(host, of, link="up"):
    return {"reachable": True, "role": "replica", "master": f"{IP[of]}:6379", "link": link, "run_id": f"run-{host}",
            "sync_in_progress": False, "slots": [], "cluster_state": "ok", "address": f"{IP[host]}:6379"}


def six():
    """cs1..cs3 masters, cs4..cs6 their replicas, keyed by minion id."""
    views = {f"{h}.example.org": master(h) for h in ("cs1", "cs2", "cs3")}
    views.update({f"{h}.example.org": replica(h, m) for h, m in (("cs4", "cs1"), ("cs5", "cs2"), ("cs6", "cs3"))})
    return views


@pytest.fixture(scope="module")
def runner():
    return load_runner("redis_deployment")


def order(plan):
    return [(s["hostname"], s["role"], (s["failover_to"] or {}).get("hostname"), s["downtime"]) for s in plan["steps"]]


def test_replicas_first_then_each_master_after_its_replica_took_over(runner):
    plan = runner._roll_plan(servers(), six())

    assert plan["refused"] == []
    assert order(plan) == [("cs4", "replica", None, False), ("cs5", "replica", None, False),
                           ("cs6", "replica", None, False), ("cs1", "replica", "cs4", False),
                           ("cs2", "replica", "cs5", False), ("cs3", "replica", "cs6", False)]


def test_live_roles_decide_not_the_file_order(runner):
    views = six()
    views["cs1.example.org"], views["cs4.example.org"] = replica("cs1", "cs4"), master("cs4", SLOTS["cs1"])

    plan = runner._roll_plan(servers(), views)

    assert [s["hostname"] for s in plan["steps"]] == ["cs1", "cs5", "cs6", "cs2", "cs3", "cs4"]
    assert plan["steps"][-1]["failover_to"]["hostname"] == "cs1"


def test_a_master_without_a_replica_in_sync_is_refused_without_allow_downtime(runner):
    views = six()
    views["cs5.example.org"] = replica("cs5", "cs2", link="down")

    refused = runner._roll_plan(servers(), views)

    assert refused["steps"] == []
    assert refused["refused"] == [
        "cs2 (10.0.0.2:6379) is a master without a replica in sync: restarting it makes slots 5461-10922 "
        "unavailable until it is back; pass allow_downtime=True, or leave it out with nodes="]
    allowed = runner._roll_plan(servers(), views, allow_downtime=True)
    assert allowed["refused"] == []
    assert order(allowed)[-2:] == [("cs2", "master", None, True), ("cs3", "replica", "cs6", False)]
    assert allowed["steps"][-2]["slots"] == [[5461, 10922]]
    # Left out with nodes=, the rest rolls.
    others = [f"{h}.example.org" for h in HOSTS if h != "cs2"]
    assert [s["hostname"] for s in runner._roll_plan(servers(), views, others)["steps"]] == [
        "cs4", "cs5", "cs6", "cs1", "cs3"]


def test_a_master_that_serves_no_slots_is_no_downtime(runner):
    views = {f"{h}.example.org": master(h) for h in ("cs1", "cs2", "cs3", "cs4")}
    views["cs4.example.org"]["slots"] = []

    plan = runner._roll_plan(servers(HOSTS[:4]), views)

    assert plan["refused"][0].startswith("cs1 ") and len(plan["refused"]) == 3
    assert order(runner._roll_plan(servers(HOSTS[:4]), views, ["cs4.example.org"])) == [
        ("cs4", "master", None, False)]


def test_sentinel_mode_says_the_data_set_is_unavailable(runner):
    pair = {"cs1.example.org": master("cs1"), "cs2.example.org": replica("cs2", "cs1")}
    for view in pair.values():
        del view["cluster_state"]

    plan = runner._roll_plan(servers(HOSTS[:2]), pair, mode="sentinel")

    assert order(plan) == [("cs2", "replica", None, False), ("cs1", "replica", "cs2", False)]
    alone = runner._roll_plan(servers(HOSTS[:1]), {"cs1.example.org": master("cs1")}, mode="sentinel")
    assert "makes the whole data set unavailable" in alone["refused"][0]


def test_nodes_filters_but_every_servers_role_still_decides(runner):
    assert order(runner._roll_plan(servers(), six(), ["cs5.example.org"])) == [("cs5", "replica", None, False)]
    # A listed master is failed over to its replica, listed or not.
    assert order(runner._roll_plan(servers(), six(), ["cs2.example.org", "cs1.example.org"])) == [
        ("cs1", "replica", "cs4", False), ("cs2", "replica", "cs5", False)]


def test_nothing_is_restarted_when_a_server_does_not_answer_or_the_cluster_is_not_ok(runner):
    views = six()
    views["cs6.example.org"] = {"reachable": False, "error": "ConnectionError: refused"}
    views["cs2.example.org"]["cluster_state"] = "fail"

    plan = runner._roll_plan(servers(), views, ["cs4.example.org"])

    assert plan["steps"] == []
    assert plan["refused"] == ["cs2 (10.0.0.2:6379) says cluster_state:fail",
                               "cs6 (10.0.0.6:6379, minion cs6.example.org) does not answer: ConnectionError: refused"]


def test_only_pending_means_not_restarted_since_the_interrupted_roll_began_or_a_restart_pending(runner):
    views = six()
    record = {"run_ids": {"cs4.example.org": "run-cs4", "cs5.example.org": "run-old", "cs1.example.org": "run-cs1"}}
    statuses = {"cs3.example.org": {"restart_pending": ["port"]}, "cs2.example.org": {"restart_pending": []}}

    assert runner._pending_minions(record, views, statuses) == {"cs4.example.org", "cs1.example.org",
                                                                "cs3.example.org"}
    assert runner._pending_minions(None, views, {}) == set()


@pytest.fixture
def deployment_of(runner, tmp_path, monkeypatch):
    """``use(hosts)`` -> the runner's ``shape`` of a YAML with these Redis controllers, whose
    minions have FQDN ids."""

    def use(hosts=HOSTS):
        path = tmp_path / "my_multihead_cluster.yaml"
        path.write_text(yaml.safe_dump({"cache": {"redis": {"password": "${REDIS_PASSWORD}"}},
                                        "nodes": {"controllers": [controller(h, IP[h]) for h in hosts]}}))
        runner.__opts__ = {"ext_pillar": [{"redis_deployment": {"config": str(path)}}], "conf_file": "/etc/salt/master"}
        runner.__context__ = {}
        monkeypatch.setattr(runner, "_accepted_minions", lambda: [f"{h}.example.org" for h in hosts])
        return runner.shape()

    return use


def test_nodes_names_servers_by_hostname_minion_id_or_address(runner, deployment_of):
    deployment = deployment_of()
    module, found = runner._deployment_module(), servers()

    assert runner._select_nodes(module, deployment, found, "cs1, cs2.example.org,10.0.0.3:6379,10.0.0.4") == (
        ["cs1.example.org", "cs2.example.org", "cs3.example.org", "cs4.example.org"], None)
    assert runner._select_nodes(module, deployment, found, ["CS5", "cs6.other.domain"])[0] == [
        "cs5.example.org", "cs6.example.org"]
    assert runner._select_nodes(module, deployment, found, None)[0] == [s["minion"] for s in found]
    chosen, why = runner._select_nodes(module, deployment, found, "cs1,cs9")
    assert chosen is None and why.startswith("nodes: cs9 names no Redis server of the deployment")


class Fleet:
    """A fake LocalClient over a model of the servers (live roles and run_ids); records every
    call. ``fail``: {(minion, function)} answered with an error."""

    def __init__(self, views, fail=()):
        self.views, self.fail, self.calls, self.runs = views, set(fail), [], itertools.count(1)

    def cmd(self, tgt, fun, kwarg=None, timeout=None, tgt_type="glob", full_return=False):
        assert tgt_type == "list" and full_return
        answers = {}
        for minion in tgt:
            self.calls.append((minion, fun, dict(kwarg or {})))
            if (minion, fun) in self.fail:
                answers[minion] = {"ret": f"ERROR: {fun} failed on {minion}", "retcode": 1}
            else:
                answers[minion] = {"ret": self.answer(minion, fun, dict(kwarg or {})), "retcode": 0}
        return answers

    def answer(self, minion, fun, kwarg):
        view = self.views[minion]
        if fun == "redis_node.replication":
            return dict(view)
        if fun == "redis_cluster.status":
            return {"restart_pending": []}
        if fun == "redis_node.cluster_failover":
            old = next(v for v in self.views.values() if v["address"] == view["master"])
            old.update(role="replica", master=view["address"], link="up", sync_in_progress=False)
            view.update(role="master", master=None, slots=old.pop("slots"))
            old["slots"] = []
            return {"failed_over": True, "seconds": 1.0}
        if fun == "redis_node.restart":
            assert view["role"] == kwarg["role"], (minion, view["role"], kwarg)
            before, view["run_id"] = view["run_id"], f"run-{next(self.runs)}"
            return {"run_id_before": before, "run_id_after": view["run_id"], "role_after": view["role"],
                    "seconds_down": 0.5, "seconds": 1.0}
        raise AssertionError(f"unexpected call {fun}")

    def destroy(self):
        pass


@pytest.fixture
def roll(runner, deployment_of, monkeypatch):
    """``use(fleet, **kwargs)`` -> (rolling_restart's return, events fired)."""
    stored, events = {}, []
    monkeypatch.setattr(runner, "_roll_record", lambda: stored.get("record"))
    monkeypatch.setattr(runner, "_store_roll_record",
                        lambda record: stored.update(record=dict(record, run_ids=dict(record["run_ids"])))
                        if record and record.get("run_ids") else stored.pop("record", None))
    deployment_of()

    def use(fleet, **kwargs):
        runner.__salt__ = {"event.send": lambda tag, data: events.append((tag, data)) or True}
        monkeypatch.setattr(runner.salt.client, "get_local_client", lambda *args, **kw: fleet)
        return runner.rolling_restart(**kwargs), events

    use.stored = stored
    return use


def restarts(fleet):
    return [minion.split(".")[0] for minion, fun, _ in fleet.calls if fun == "redis_node.restart"]


def test_a_roll_restarts_each_server_once_fires_an_event_each_and_forgets_its_record(roll):
    fleet = Fleet(six())

    result, events = roll(fleet)

    assert result["retcode"] == 0 and result["ok"], result["comment"]
    assert restarts(fleet) == ["cs4", "cs5", "cs6", "cs1", "cs2", "cs3"]
    failovers = [(m.split(".")[0], f) for m, f, _ in fleet.calls if f == "redis_node.cluster_failover"]
    assert failovers == [("cs4", "redis_node.cluster_failover"), ("cs5", "redis_node.cluster_failover"),
                         ("cs6", "redis_node.cluster_failover")]
    assert [tag for tag, _ in events] == [f"redis/rolling/{h}.example.org/restarted" for h in restarts(fleet)]
    assert events[3][1]["failed_over_to"] == "cs4" and events[3][1]["role_before"] == "master"
    assert len(result["progress"]) >= 6 and "record" not in roll.stored


def test_a_failed_step_stops_the_roll_and_only_pending_resumes_with_the_rest(roll):
    fleet = Fleet(six(), fail={("cs5.example.org", "redis_node.cluster_failover")})

    stopped, events = roll(fleet)

    assert stopped["retcode"] == 1
    assert stopped["comment"].startswith("stopped at cs2 (minion cs2.example.org, step 5 of 6): failing over to "
                                         "cs5: ERROR: redis_node.cluster_failover failed on cs5.example.org")
    assert restarts(fleet) == ["cs4", "cs5", "cs6", "cs1"]  # cs3 untouched
    assert events[-1][0] == "redis/rolling/cs2.example.org/failed"
    assert set(roll.stored["record"]["run_ids"]) == set(six())
    fleet.fail.clear()
    fleet.calls.clear()

    resumed, _ = roll(fleet, only_pending=True)

    assert resumed["retcode"] == 0, resumed["comment"]
    assert restarts(fleet) == ["cs2", "cs3"]
    assert "record" not in roll.stored
    fleet.calls.clear()
    again, _ = roll(fleet, only_pending=True)
    assert again["ok"] and again["comment"].startswith("nothing pending") and restarts(fleet) == []


def test_a_refused_roll_restarts_nothing_and_exits_1(roll):
    views = six()
    views["cs6.example.org"]["link"] = "down"
    fleet = Fleet(views)

    result, events = roll(fleet)

    assert result["retcode"] == 1 and result["comment"].startswith("nothing restarted: cs3 (10.0.0.3:6379) is a "
                                                                   "master without a replica in sync")
    assert restarts(fleet) == [] and events == [] and "record" not in roll.stored
