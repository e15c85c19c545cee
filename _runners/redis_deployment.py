"""
Preflight for the Redis deployment: what ``salt '*' state.apply redis`` would build from
my_multihead_cluster.yaml, checked before anything changes.

.. code-block:: bash

    salt-run redis_deployment.check

It needs neither the password (``${VAR}`` references are reported, not expanded) nor a
running Redis: it reads the YAML the ``redis_deployment`` ext_pillar reads, validates it
with the same code, and asks the connected minions for their ``mem_total`` and address
grains, as pillar rendering would.
"""

import importlib.util
import logging
import re
from pathlib import Path

try:
    import salt.client
    import salt.exceptions

    HAS_SALT_CLIENT = True
except ImportError:  # pragma: no cover - a master always has it
    HAS_SALT_CLIENT = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_deployment"

PILLAR_MODULE = Path(__file__).resolve().parents[1] / "_pillar" / "redis_deployment.py"


def __virtual__():
    if not HAS_SALT_CLIENT:
        return (False, "redis_deployment runner: salt.client is not importable")
    if not PILLAR_MODULE.is_file():
        return (False, f"redis_deployment runner: {PILLAR_MODULE} not found (the formula's _pillar/)")
    return __virtualname__


def _deployment_module():
    """The ext_pillar's own code: one place decides what the YAML means."""
    spec = importlib.util.spec_from_file_location("redis_deployment_pillar", PILLAR_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Unexpanded(dict):
    """An environment in which every ${VAR} is set to a placeholder: the preflight runs
    without the secrets, which only the salt-master's environment holds."""

    def __contains__(self, name):
        return True

    def __getitem__(self, name):
        return f"<${{{name}}} from the salt-master's environment>"

    def get(self, name, default=None):
        return self[name]


def _configured_yaml():
    for entry in __opts__.get("ext_pillar") or []:
        if isinstance(entry, dict) and isinstance(entry.get("redis_deployment"), dict):
            return entry["redis_deployment"].get("config")
    return None


def _connected_minions(timeout):
    """{minion id: grains} of every minion that answers now."""
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        return client.cmd("*", "grains.item", ["mem_total", "ipv4", "ipv6"], timeout=timeout) or {}
    finally:
        client.destroy()


def _human(size):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def check(config=None, timeout=5):
    """
    Validate my_multihead_cluster.yaml and show the deployment's plan before anything
    changes: mode, each controller's role, the slot plan (cluster) or the
    master/replica/witness layout (Sentinel), the memory limit per host, and every
    controller without a connected minion. Exits non-zero on any problem.

    config
        The YAML's path; default: the ``config`` of the master's ``redis_deployment``
        ext_pillar.
    timeout
        Seconds to wait for the minions' grains.

    CLI Example:

    .. code-block:: bash

        salt-run redis_deployment.check
        salt-run redis_deployment.check config=/srv/new/my_multihead_cluster.yaml
    """
    path = config or _configured_yaml()
    result = {"ok": False, "config": path, "plan": [], "problems": []}
    if not path:
        result["problems"].append(
            "no YAML: give config=PATH, or configure the ext_pillar `redis_deployment: {config: PATH}`"
        )
        return _finish(result)
    module = _deployment_module()
    try:
        deployment = module.load_deployment(path, environ=_Unexpanded())
    except module.DeploymentError as exc:
        result["problems"].append(str(exc))
        return _finish(result)

    plan, roles = result["plan"], deployment["roles"]
    redis_nodes = [c for c in deployment["controllers"] if c["redis"]]
    plan.append(f"Total Redis-enabled controllers: {len(redis_nodes)}")
    if deployment["mode"] == "cluster":
        plan.append(f"{len(redis_nodes)} Redis nodes → Cluster mode (16384 hash slots)")
    else:
        plan.append(f"{len(redis_nodes)} Redis nodes → Sentinel mode (master/replica, automatic failover)")
    password = deployment["settings"].get("password", "")
    for name in sorted(set(re.findall(r"<\$\{([A-Za-z_][A-Za-z0-9_]*)\} from", password))):
        plan.append(f"cache.redis.password comes from ${{{name}}}: the salt-master's environment must set it")

    minions = _connected_minions(timeout)
    for controller in deployment["controllers"]:
        name, role = controller["hostname"], roles.get(controller["hostname"], "none")
        matched = [m for m in sorted(minions) if controller in module._matching_controllers(deployment, m)]
        line = f"{name} ({controller['ip']}): {role}"
        if deployment["mode"] == "cluster" and role == "cluster-node":
            slots = deployment["slot_plan"].get(name, [])
            line += " slots " + (", ".join(f"{a}-{b}" for a, b in slots) if slots else "none")
        if name in deployment["replica_of"]:
            line += f", replica of {deployment['replica_of'][name]}"
        if role == "master" and deployment["mode"] == "sentinel":
            line += " (the initial master)"
        if role == "none":
            plan.append(line + ": nothing deployed")
            continue
        if not matched:
            plan.append(line + ": NO CONNECTED MINION")
            result["problems"].append(
                f"nodes.controllers[{controller['index']}] ({name}): no connected minion has id "
                f"{controller['minion_id']} (or {controller['minion_id']}.<domain>); "
                "start its salt-minion and accept its key, or set the controller's minion_id"
            )
            continue
        for minion in matched:
            grains = minions[minion] if isinstance(minions[minion], dict) else {}
            try:
                pillar = module.node_pillar(
                    deployment, minion, grains.get("mem_total"), grains.get("ipv4"), grains.get("ipv6")
                )
            except module.DeploymentError as exc:
                plan.append(f"{line}: minion {minion}: PROBLEM")
                result["problems"].append(str(exc))
                continue
            memory = pillar.get("maxmemory")
            shown = f"maxmemory {_human(memory)} ({pillar.get('maxmemory_percent')}% of RAM)" if memory else ""
            plan.append(f"{line}: minion {minion}{', ' + shown if shown else ''}")
    if deployment["mode"] == "sentinel":
        witnesses = deployment["sentinel"].get("witnesses") or []
        sentinels = len([r for r in roles.values() if r in ("master", "replica", "sentinel-only")])
        plan.append(
            f"Sentinels: {sentinels} (quorum {sentinels // 2 + 1})"
            + ("" if witnesses else "; no witness: a dead master host cannot be failed over")
        )
    result["ok"] = not result["problems"]
    return _finish(result)


def shape(config=None):
    """
    What my_multihead_cluster.yaml means for Redis, as the ext_pillar computes it: mode,
    controllers (hostname, minion id, address, Redis or not), roles, peers, the initial
    master, the slot plan and the replicas' masters. Secrets are not expanded (``${VAR}``
    references show as placeholders). Other runners use it to find the nodes to act on.

    CLI Example:

    .. code-block:: bash

        salt-run redis_deployment.shape
    """
    path = config or _configured_yaml()
    if not path:
        raise salt.exceptions.SaltInvocationError(
            "no YAML: give config=PATH, or configure the ext_pillar `redis_deployment: {config: PATH}`"
        )
    module = _deployment_module()
    try:
        deployment = module.load_deployment(path, environ=_Unexpanded())
    except module.DeploymentError as exc:
        raise salt.exceptions.SaltInvocationError(str(exc)) from None
    deployment["settings"] = {k: v for k, v in deployment["settings"].items() if k != "password"}
    return deployment


def _finish(result):
    # salt-run exits with the returned "retcode"; the job's success flag follows __context__.
    result["retcode"] = 1 if result["problems"] else 0
    __context__["retcode"] = result["retcode"]
    return result
