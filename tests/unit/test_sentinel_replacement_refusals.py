"""``salt-run redis_deployment.replace_hosts`` in Sentinel mode refuses, before it asks any
minion anything, names that are no node of the pair, a host named both old and new, and a
move that would leave fewer than two Redis servers. The accepted minion keys are faked; the
YAML and the ext_pillar's code are the real ones (tests/integration/test_sentinel_replacement.py
runs the whole move)."""

import pytest
import yaml
from support.loaders import controller, load_runner

HOSTS = [controller("old1", "10.0.0.11"), controller("old2", "10.0.0.12"), controller("oldw", "10.0.0.13", False),
         controller("new1", "10.0.0.21"), controller("new2", "10.0.0.22"), controller("neww", "10.0.0.23", False)]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    path = tmp_path / "my_multihead_cluster.yaml"
    path.write_text(yaml.safe_dump({"cache": {"redis": {"password": "${REDIS_PASSWORD}", "mode": "sentinel",
                                                        "sentinel": {"witnesses": ["oldw", "neww"]}}},
                                    "nodes": {"controllers": HOSTS}}))
    module = load_runner("redis_deployment")
    module.__opts__ = {"ext_pillar": [{"redis_deployment": {"config": str(path)}}], "conf_file": "/dev/null"}
    module.__context__ = {}
    monkeypatch.setattr(module, "_accepted_minions", lambda: [c["hostname"] for c in HOSTS])

    def no_minion_is_asked(*args, **kwargs):
        raise AssertionError("a refusal must come before any minion is asked")

    monkeypatch.setattr(module.salt.client, "get_local_client", no_minion_is_asked)
    return module


@pytest.mark.parametrize("old, new, expected", [
    ("old1,old9", "new1", "nothing changed: nodes: old9 names no Redis server of the deployment"),
    ("old1,old2", "old2,new1", "nothing changed: old2 named both old and new"),
    ("old1,old2,new1", "neww", "nothing changed: a Sentinel pair keeps at least 2 Redis servers, 4 minus 3 old "
                               "leaves 1"),
])
def test_a_sentinel_replacement_that_cannot_work_is_refused_before_anything_changes(runner, old, new, expected):
    result = runner.replace_hosts(old=old, new=new)
    assert result["ok"] is False and result["retcode"] == 1
    assert result["comment"].startswith(expected), result["comment"]
    assert result["mode"] == "sentinel" and result["progress"] == []


def test_an_unknown_name_says_how_to_list_the_new_hosts(runner):
    comment = runner.replace_hosts(old="old1", new="new9")["comment"]
    assert "a new witness in cache.redis.sentinel.witnesses" in comment
    assert "cache.redis.mode: sentinel" in comment
