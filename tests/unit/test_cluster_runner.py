"""``salt-run redis_cluster.remove_node`` without a master: which node a name means (hostname,
minion id as the ext_pillar matches it, IP), the exit status of a name that is neither a
controller nor a member, ``force`` passed to ``remove_member``, and the Redis service's
name taken from salt://redis/map.jinja as the removed node's minion renders it.

Salt's LocalClient is faked (it is not ours): every minion call is recorded and answered
from a small model of the cluster. The redis_deployment runner (shape, matcher) is the
real one, with faked accepted keys. The real path is tests/integration/test_runner_minion_ids.py.
"""

import tempfile
from pathlib import Path

import pytest
import salt.config
import salt.modules.slsutil
import salt.utils.templates
import yaml
from support.loaders import controller, load_runner

ROOT = Path(__file__).resolve().parents[2]


FQDN = [f"server{n}.example.org" for n in range(1, 5)]


class Cluster:
    """A fake LocalClient over a cluster of ``members`` (ip:port); records every call."""

    def __init__(self, members, services=None, refuse=None, down=()):
        self.members, self.calls = list(members), []
        self.services = services or {}  # minion -> what map.jinja renders to there
        self.refuse, self.down, self.destroyed = refuse, set(down), False

    def cmd(self, tgt, fun, kwarg=None, timeout=None, tgt_type="glob", full_return=False):
        assert tgt_type == "list" and full_return and len(tgt) == 1, "one minion by its exact id"
        minion, kwarg = tgt[0], dict(kwarg or {})
        self.calls.append((minion, fun, kwarg))
        if minion in self.down:
            return {}
        ret, retcode = self.answer(minion, fun, kwarg)
        return {minion: {"ret": ret, "retcode": retcode}}

    def answer(self, minion, fun, kwarg):
        if fun == "redis_cluster.cluster_view":
            return {"state": "ok", "nodes": [{"id": f"id{n}", "address": a, "flags": ["master"]}
                                             for n, a in enumerate(self.members)]}, 0
        if fun == "redis_cluster.remove_member":
            address = kwarg["address"]
            if address not in self.members:
                return {"removed": False, "actions": [], "comment": f"{address} is not a member of this cluster: "
                                                                    "nothing to do"}, 0
            if self.refuse and not kwarg.get("force"):
                return {"removed": False, "actions": [], "keys_before": 10, "comment": self.refuse}, 0
            self.members.remove(address)
            return {"removed": True, "actions": [f"moved 4096 slots off {address}"], "keys_before": 10,
                    "keys_after": 10, "comment": f"{address} left the cluster; keys before 10, after 10"}, 0
        if fun == "slsutil.renderer":
            return self.services.get(minion, "redis-server"), 0
        if fun in ("service.stop", "service.disable"):
            return True, 0
        raise AssertionError(f"unexpected call {fun}")

    def functions(self):
        return [(minion, fun) for minion, fun, _ in self.calls]

    def destroy(self):
        self.destroyed = True


@pytest.fixture
def remove_node(tmp_path, monkeypatch):
    """``use(controllers, accepted, cluster)`` -> (remove_node, the runner's __context__)."""

    def use(controllers, accepted, cluster):
        deployment = load_runner("redis_deployment")
        path = tmp_path / "my_multihead_cluster.yaml"
        path.write_text(yaml.safe_dump({"cache": {"redis": {"password": "${REDIS_PASSWORD}"}},
                                        "nodes": {"controllers": controllers}}))
        deployment.__opts__ = {"ext_pillar": [{"redis_deployment": {"config": str(path)}}]}
        deployment.__context__ = {}
        monkeypatch.setattr(deployment, "_accepted_minions", lambda: list(accepted))
        runner = load_runner("redis_cluster")
        runner.__opts__ = {"conf_file": "/etc/salt/master"}
        runner.__context__ = {}
        runner.__salt__ = {"redis_deployment.shape": deployment.shape}
        monkeypatch.setattr(runner.salt.client, "get_local_client", lambda *args, **kwargs: cluster)
        return runner.remove_node, runner.__context__

    return use


FOUR = [controller("server1", "10.0.0.1"), controller("server2", "10.0.0.2"), controller("server3", "10.0.0.3"),
        controller("server4", "10.0.0.4", redis=False)]
MEMBERS = ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379", "10.0.0.4:6379"]


def test_a_node_with_an_fqdn_minion_id_is_removed_and_its_redis_stopped(remove_node):
    cluster = Cluster(MEMBERS, services={"server4.example.org": "redis"})
    run, context = remove_node(FOUR, FQDN, cluster)
    result = run(node="server4.example.org")
    assert result["retcode"] == 0 and context["retcode"] == 0, result
    # The removal runs on a staying node, by its real minion id; then the node's own minion.
    assert cluster.calls[0] == ("server1.example.org", "redis_cluster.remove_member",
                                {"address": "10.0.0.4:6379", "timeout": 300, "force": False})
    assert cluster.functions()[1:] == [("server4.example.org", "slsutil.renderer"),
                                       ("server4.example.org", "service.stop"),
                                       ("server4.example.org", "service.disable")]
    assert cluster.calls[2][2] == {"name": "redis"} and cluster.calls[3][2] == {"name": "redis"}
    assert result["actions"] == ["server1.example.org: moved 4096 slots off 10.0.0.4:6379",
                                 "server4.example.org: redis stopped and disabled"]
    assert result["keys_before"] == result["keys_after"] == 10 and cluster.destroyed


@pytest.mark.parametrize("node", ["server4", "SERVER4", "server4.example.org", "server4.other.domain", "10.0.0.4",
                                  "10.0.0.4:6379"])
def test_every_name_of_the_controller_finds_it(remove_node, node):
    cluster = Cluster(MEMBERS)
    run, _ = remove_node(FOUR, FQDN, cluster)
    result = run(node=node)
    assert result["retcode"] == 0, result
    assert cluster.calls[0][2]["address"] == "10.0.0.4:6379"
    assert ("server4.example.org", "service.stop") in cluster.functions()


def test_exact_minion_ids_work_as_before(remove_node):
    cluster = Cluster(MEMBERS)
    run, _ = remove_node(FOUR, ["server1", "server2", "server3", "server4"], cluster)
    result = run(node="server4")
    assert result["retcode"] == 0 and "server4: redis-server stopped and disabled" in result["actions"]
    assert cluster.calls[0][0] == "server1"


@pytest.mark.parametrize("node", ["nosuchhost", "10.9.9.9", "server9.example.org"])
def test_a_name_that_is_neither_a_controller_nor_a_member_fails(remove_node, node):
    cluster = Cluster(MEMBERS)
    run, context = remove_node(FOUR, FQDN, cluster)
    result = run(node=node)
    assert result["retcode"] == 1 and context["retcode"] == 1
    path = result["comment"].split(" of ", 1)[1].split(" (", 1)[0]
    assert result["comment"] == (
        f"{node} is neither a controller of {path} (expected the hostname, minion id or ip_address of one) nor a "
        "member of the cluster (expected the address of one: 10.0.0.1:6379, 10.0.0.2:6379, 10.0.0.3:6379, "
        "10.0.0.4:6379)")
    # Asked the members of a staying node, changed nothing.
    assert cluster.functions() == [("server1.example.org", "redis_cluster.cluster_view")]


def test_the_member_list_comes_from_the_first_staying_node_that_answers(remove_node):
    cluster = Cluster(MEMBERS, down={"server1.example.org"})
    run, _ = remove_node(FOUR, FQDN, cluster)
    assert run(node="nosuchhost")["retcode"] == 1
    assert cluster.functions() == [("server1.example.org", "redis_cluster.cluster_view"),
                                   ("server2.example.org", "redis_cluster.cluster_view")]


def test_a_member_gone_from_the_yaml_is_removed_by_its_ip(remove_node):
    cluster = Cluster(MEMBERS + ["10.0.0.5:6379"])
    run, _ = remove_node(FOUR, FQDN, cluster)
    result = run(node="10.0.0.5")
    assert result["retcode"] == 0, result
    assert cluster.calls[1][1:] == ("redis_cluster.remove_member",
                                    {"address": "10.0.0.5:6379", "timeout": 300, "force": False})
    assert result["actions"][-1].startswith("10.0.0.5:6379: no controller of ")
    assert result["actions"][-1].endswith("has this address, so there is no minion to stop its Redis: stop it on "
                                          "that host")
    assert "service.stop" not in [fun for _, fun in cluster.functions()]


def test_a_second_run_has_nothing_to_do_and_exits_0(remove_node):
    cluster = Cluster(MEMBERS[:3])
    run, context = remove_node(FOUR, FQDN, cluster)
    result = run(node="server4.example.org")
    assert result["retcode"] == 0 and context["retcode"] == 0
    assert result["comment"] == "10.0.0.4:6379 is not a member of this cluster: nothing to do"
    # Stopping Redis again is harmless, and finishes a first run whose stop had failed.
    assert ("server4.example.org", "service.stop") in cluster.functions()


def test_force_is_passed_to_remove_member_and_a_refusal_fails(remove_node):
    refusal = ("10.0.0.4:6379 is the last replica of 10.0.0.1:6379: removing it leaves that shard with no copy "
               "(a failure of that master then loses its keys); add a replica first, or pass force=True")
    cluster = Cluster(MEMBERS, refuse=refusal)
    run, context = remove_node(FOUR, FQDN, cluster)
    refused = run(node="server4")
    assert refused["retcode"] == 1 and context["retcode"] == 1 and refused["comment"] == refusal
    assert "service.stop" not in [fun for _, fun in cluster.functions()]
    forced = run(node="server4", force=True)
    assert forced["retcode"] == 0 and cluster.calls[-4][2]["force"] is True


def test_a_redis_controller_is_refused(remove_node):
    cluster = Cluster(MEMBERS)
    run, _ = remove_node(FOUR, FQDN, cluster)
    result = run(node="server2.example.org")
    assert result["retcode"] == 1 and "is still a Redis controller" in result["comment"]
    assert cluster.calls == []


def test_a_name_of_two_controllers_is_refused(remove_node):
    controllers = FOUR[:3] + [controller("cache4", "10.0.0.4", redis=False, minion_id="server3.example.org")]
    run, _ = remove_node(controllers, ["server1", "server2", "server3"], Cluster(MEMBERS))
    result = run(node="server3.example.org")
    assert result["retcode"] == 1
    assert result["comment"].startswith("server3.example.org names nodes.controllers[2] (server3) and "
                                        "nodes.controllers[3] (cache4) of ")


def test_a_removed_controller_without_its_minion_is_said(remove_node):
    cluster = Cluster(MEMBERS)
    run, _ = remove_node(FOUR, FQDN[:3], cluster)
    result = run(node="server4")
    assert result["retcode"] == 0
    assert result["actions"][-1] == (
        "server4: nodes.controllers[3] (server4): no accepted minion key has id server4 (or server4.<domain>): "
        "accept the minion's key (salt-key -a ID) or set the controller's minion_id; stop its Redis by hand")


def test_no_staying_minion_is_an_error(remove_node):
    run, _ = remove_node(FOUR, ["server4"], Cluster(MEMBERS))
    result = run(node="server4")
    assert result["retcode"] == 1
    assert result["comment"].startswith("no staying Redis controller has a minion to run the removal on: "
                                        "nodes.controllers[0] (server1): no accepted minion key has id server1")


# ---------------------------------------------------------------- the service's name


def test_a_service_name_that_map_jinja_does_not_give_is_not_used(remove_node):
    cluster = Cluster(MEMBERS, services={"server4.example.org": "  \n"})
    run, _ = remove_node(FOUR, FQDN, cluster)
    result = run(node="server4")
    assert result["retcode"] == 0
    assert result["actions"][-1] == ("server4.example.org: could not learn its Redis service's name "
                                     "(salt://redis/map.jinja gave '  \\n' as redis.service); stop Redis by hand")
    assert "service.stop" not in [fun for _, fun in cluster.functions()]


@pytest.mark.parametrize("os_family, pillar, expected", [
    ("Debian", {}, "redis-server"),
    ("RedHat", {}, "redis"),
    ("Debian", {"service": "valkey-server"}, "valkey-server"),
])
def test_the_service_template_reads_map_jinja(os_family, pillar, expected):
    """What the removed node's minion renders (SERVICE_TEMPLATE through slsutil.renderer),
    rendered here by Salt's Jinja renderer over the real salt://redis/map.jinja."""
    runner = load_runner("redis_cluster")
    with tempfile.TemporaryDirectory() as cache:
        opts = salt.config.minion_config(None)
        opts.update({"file_client": "local", "file_roots": {"base": [str(ROOT / "salt")]}, "cachedir": cache,
                     "extension_modules": f"{cache}/extmods"})
        redis_pillar = {"role": "none", "mode": "none", **pillar}
        functions = {
            "slsutil.merge": salt.modules.slsutil.merge,
            "pillar.get": lambda key, default=None: redis_pillar if key == "redis" else default,
            "file.file_exists": lambda path: False,
            "file.get_hash": lambda path, form: "",
        }
        grains = {"os_family": os_family, "init": "systemd"}
        rendered = salt.utils.templates.render_jinja_tmpl(runner.SERVICE_TEMPLATE, {
            "opts": opts, "saltenv": "base", "salt": functions, "grains": grains, "pillar": {"redis": redis_pillar}})
    assert rendered.strip() == expected
