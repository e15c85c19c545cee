"""`redis` (salt/redis/init.sls) renders its parts in one Jinja environment instead of
listing them under `include:`. Whatever the minion's role, Salt must compile from it the
very highstate it compiled from the include-only init.sls it replaced (kept below as
LEGACY_INIT, the definition of Salt's own include semantics): the same IDs, arguments,
auto order, `__sls__` and `__sls_included_from__`, alone and next to other SLS files that
include parts of it.

Rendered by Salt's HighState with a local file client over the repository's salt/ tree,
pillar from the real ext_pillar (_pillar/redis_deployment.py) for the example deployment.
"""

import sys

import pytest
import salt.config
import salt.state
import yaml
from test_deployment import EXAMPLE_YAML, MASTER_OPTS, ROOT, minion_pillar_request, rd, write_yaml

PASSWORD = "one-render-test"

LEGACY_INIT = """\
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node with context %}
{%- set exporter = (redis.get("monitoring") or {}).get("exporter", False) %}
include:
{%- if redis_node %}
  - {{ tplroot }}.install
  - {{ tplroot }}.sysctl
  - {{ tplroot }}.firewall
{%-   if redis.get("tls") %}
  - {{ tplroot }}.tls
{%-   endif %}
  - {{ tplroot }}.config
  - {{ tplroot }}.service
{%-   if redis.mode == "cluster" %}
  - {{ tplroot }}.cluster
{%-   elif redis.mode == "sentinel" %}
  - {{ tplroot }}.sentinel
{%-   endif %}
  - {{ tplroot }}.acl
  - {{ tplroot }}.backup
  - {{ tplroot }}.health
{%-   if exporter %}
  - {{ tplroot }}.monitoring
{%-   endif %}
{%- elif sentinel_node %}
  - {{ tplroot }}.firewall
{%-   if redis.get("tls") %}
  - {{ tplroot }}.tls
{%-   endif %}
  - {{ tplroot }}.sentinel
  - {{ tplroot }}.acl
  - {{ tplroot }}.health
{%-   if exporter %}
  - {{ tplroot }}.monitoring
{%-   endif %}
{%- else %}
  - {{ tplroot }}.inactive
{%- endif %}
"""

GRAINS = {
    "kernel": "Linux",
    "os": "Debian",
    "os_family": "Debian",
    "osmajorrelease": 12,
    "init": "systemd",
    "mem_total": 8192,
    "pythonpath": sys.path,
    "pythonexecutable": sys.executable,
}


def deployment(tmp_path, mode):
    document = yaml.safe_load(EXAMPLE_YAML)
    redis = document["cache"]["redis"]
    controllers = document["nodes"]["controllers"]
    if mode == "sentinel":  # two Redis hosts and a witness
        redis["mode"] = "sentinel"
        redis["sentinel"] = dict(redis.get("sentinel") or {}, witnesses=[controllers[2]["hostname"]])
        controllers[2]["services"] = dict(controllers[2].get("services") or {}, redis=False)
    if mode == "firewall":
        redis["firewall"] = True
    return write_yaml(tmp_path, yaml.safe_dump(document), name="my_multihead_cluster.yaml"), controllers


def pillar_of(config, minion_id, address, monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)
    grains = dict(GRAINS, id=minion_id, ipv4=["127.0.0.1", address])
    monkeypatch.setattr(rd, "__grains__", grains, raising=False)
    monkeypatch.setattr(rd, "__opts__", dict(MASTER_OPTS), raising=False)
    with minion_pillar_request(minion_id):
        return rd.ext_pillar(minion_id, {}, config=config), grains


def highstate(tmp_path, pillar, grains, mods):
    legacy_root = tmp_path / "legacy"
    (legacy_root / "redis").mkdir(parents=True, exist_ok=True)
    (legacy_root / "redis" / "legacy.sls").write_text(LEGACY_INIT)
    other_root = legacy_root / "other"
    other_root.mkdir(exist_ok=True)
    (other_root / "init.sls").write_text("include:\n  - redis.config\n")
    opts = salt.config.minion_config(None)
    opts.update(
        id=grains["id"],
        file_client="local",
        file_roots={"base": [str(legacy_root), str(ROOT / "salt")]},
        pillar_roots={"base": [str(tmp_path / "pillar")]},
        cachedir=str(tmp_path / "cache"),
        extension_modules=str(tmp_path / "extmods"),
        grains=grains,
    )
    state = salt.state.HighState(opts, initial_pillar=pillar)
    high, errors = state.render_highstate({"base": mods})
    assert not errors
    return high


def normalized(high, legacy):
    """The highstate with the legacy file's name for the top SLS, as `redis`."""
    result = {}
    for state_id, body in high.items():
        if state_id.startswith("__"):
            continue
        body = dict(body)
        body["__sls_included_from__"] = [
            "redis" if sls == legacy else sls for sls in body.get("__sls_included_from__", [])
        ]
        result[state_id] = body
    return result


CASES = [
    ("cluster", 0),  # a cluster node, the firewall off
    ("firewall", 0),  # a cluster node with its firewall (its includes differ)
    ("sentinel", 0),  # the Sentinel pair's master
    ("sentinel", 2),  # the witness: a Sentinel only
    ("cluster", 3),  # a controller without Redis
]


@pytest.mark.parametrize("mode, index", CASES, ids=[f"{mode}-{index}" for mode, index in CASES])
@pytest.mark.parametrize(
    "mods",
    [["redis"], ["other", "redis"], ["redis", "other"], ["redis.health", "redis"]],
    ids=["alone", "after-an-includer", "before-an-includer", "after-a-part"],
)
def test_one_render_compiles_what_includes_compiled(tmp_path, monkeypatch, mode, index, mods):
    config, controllers = deployment(tmp_path, mode)
    assert index < len(controllers), f"examples/my_multihead_cluster.yaml has no controller {index}"
    controller = controllers[index]
    pillar, grains = pillar_of(config, controller["hostname"], controller["ip_address"], monkeypatch)
    assert not pillar["redis"].get("error")
    legacy_mods = ["redis.legacy" if sls == "redis" else sls for sls in mods]
    got = normalized(highstate(tmp_path / "new", pillar, grains, mods), "redis")
    want = normalized(highstate(tmp_path / "old", pillar, grains, legacy_mods), "redis.legacy")
    assert got == want  # each state with its `order`: the run order (dict order aside)
