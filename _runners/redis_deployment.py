"""
Preflight for the Redis deployment: what ``salt '*' state.apply redis`` would build from
my_multihead_cluster.yaml, checked before anything changes.

.. code-block:: bash

    salt-run redis_deployment.check

It needs neither the password (``${VAR}`` references are reported, not expanded) nor a
running Redis: it reads the YAML the ``redis_deployment`` ext_pillar reads, validates it
with the same code, and asks the connected minions for their ``mem_total`` and address
grains, as pillar rendering would.

A controller's minion is found as the pillar finds it (``_matching_controllers`` of the
ext_pillar): the minion whose id is the controller's ``minion_id`` (default: its
hostname) or whose id's first label is (``server1.example.org`` is ``server1``).
``shape`` resolves every controller to that minion among the master's accepted keys,
so the other runners and ``redis.orchestrate`` target real minion ids.
"""

import atexit
import importlib.util
import logging
import re
import sys
from pathlib import Path

try:
    import salt.cli.run
    import salt.client
    import salt.exceptions
    import salt.key
    import salt.minion
    import salt.runner

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


def _accepted_minions():
    """The ids of the master's accepted minion keys. A key is what makes a minion id
    real (the pillar goes by it), reading them costs no round trip, and a minion that is
    down keeps its key: the runners still know which minion a dead host was."""
    return list(salt.key.get_key(__opts__).list_status("accepted").get("minions", []))


def _resolve_minions(module, deployment, minion_ids):
    """Give every controller of `deployment` (the ext_pillar's shape) the minion that is it:
    ``minion`` (an id of `minion_ids`, or None) and ``minion_problem`` (None, or why it has
    none), matched with the ext_pillar's own ``_matching_controllers``.

    A minion that matches two controllers is neither's: the ext_pillar gives it an error
    and no Redis role. A controller that two minions match has no minion either: the
    runner cannot tell which one is the host (a stale key, or two hosts with one name).
    """
    candidates = {c["index"]: [] for c in deployment["controllers"]}
    shared = {c["index"]: [] for c in deployment["controllers"]}
    for minion in sorted(minion_ids):
        matches = module._matching_controllers(deployment, minion)
        for controller in matches:
            (candidates if len(matches) == 1 else shared)[controller["index"]].append((minion, matches))
    for controller in deployment["controllers"]:
        key = f"nodes.controllers[{controller['index']}] ({controller['hostname']})"
        found = [minion for minion, _ in candidates[controller["index"]]]
        controller["minion"], controller["minion_problem"] = (found[0], None) if len(found) == 1 else (None, None)
        if len(found) > 1:
            controller["minion_problem"] = (
                f"{key}: minions {' and '.join(found)} both match minion_id {controller['minion_id']}: expected "
                "one minion per controller; delete the stale key (salt-key -d ID) or set the controller's "
                "minion_id to the whole id of the right one"
            )
        elif not found and shared[controller["index"]]:
            minion, matches = shared[controller["index"]][0]
            others = " and ".join(f"nodes.controllers[{c['index']}] ({c['hostname']})" for c in matches)
            controller["minion_problem"] = (
                f"{key}: minion {minion} matches {others}: expected one controller per minion; give the "
                "controllers distinct minion_id values"
            )
        elif not found:
            controller["minion_problem"] = (
                f"{key}: no accepted minion key has id {controller['minion_id']} (or "
                f"{controller['minion_id']}.<domain>): accept the minion's key (salt-key -a ID) or set the "
                "controller's minion_id"
            )
    minions = {c["hostname"]: c["minion"] for c in deployment["controllers"]}
    for peer in deployment["peers"] + [deployment["initial_master"]]:
        peer["minion"] = minions.get(peer["hostname"])
    return deployment


def _close_salt_clients_at_exit():
    """Destroy, when salt-run exits, the Salt clients it leaves open around our runners.

    Salt 3008's salt-run never destroys the Runner it runs a runner in (salt/cli/run.py),
    nor the MasterMinion that Runner makes for its job cache after the runner returned;
    ``saltutil.runner`` (which redis.orchestrate uses to call ``shape``) never destroys its
    RunnerClient, nor ``state.orchestrate`` its MasterMinion. Their finalizers then print
    "unclosed Runner ...; call ``destroy()``" (and MasterMinion, RunnerClient) after our
    output: ``salt-run test.arg`` prints the same. In the salt-run process those objects
    live until it exits anyway, so they are kept here and destroyed at exit (atexit runs
    before the finalizers). A daemon (salt-master's reactor, salt-api) is left to Salt:
    keeping its objects until it exits would keep every job's client.
    """
    if not HAS_SALT_CLIENT:
        return
    kinds = (salt.runner.RunnerClient, salt.minion.MasterMinion)
    found, in_salt_run = [], False
    frame = sys._getframe(1)  # pylint: disable=protected-access
    while frame is not None:
        for value in list(frame.f_locals.values()):
            # Salt's own salt-run command (salt.cli.run.SaltRun) is up the stack: this process
            # is salt-run, whatever its argv[0], and ends when the runner has returned.
            in_salt_run = in_salt_run or isinstance(value, salt.cli.run.SaltRun)
            if isinstance(value, kinds) and all(value is not kept for kept in _LEFT_OPEN + found):
                found.append(value)
        frame = frame.f_back
    if not in_salt_run:
        return
    _LEFT_OPEN.extend(found)
    if _LEFT_OPEN and not _LEFT_OPEN_REGISTERED:
        _LEFT_OPEN_REGISTERED.append(True)
        atexit.register(_destroy_left_open)


_LEFT_OPEN, _LEFT_OPEN_REGISTERED = [], []


def _destroy_left_open():
    """At salt-run's exit: each kept client destroyed (its event bus connection closed), then
    every MasterMinion, so that no finalizer finds one open and warns."""
    minions = []
    for obj in reversed(_LEFT_OPEN):
        try:
            if isinstance(obj, salt.runner.RunnerClient):
                minion = vars(obj).pop("_mminion", None)  # made by the job cache, after our runner returned
                minions += [minion] if minion is not None else []
                obj.destroy()
            else:
                minions.append(obj)
        except Exception:  # pylint: disable=broad-except
            log.debug("redis_deployment: destroying %r at exit failed", obj, exc_info=True)
    for minion in minions:
        try:
            minion.destroy()
            # MasterMinion.destroy() leaves {} where its finalizer looks for None (torn down).
            minion.returners = minion.functions = minion.utils = None
        except Exception:  # pylint: disable=broad-except
            log.debug("redis_deployment: destroying %r at exit failed", minion, exc_info=True)
    _LEFT_OPEN.clear()


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
    _close_salt_clients_at_exit()
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
    references show as placeholders). Other runners and ``redis.orchestrate`` use it to
    find the nodes to act on.

    Each controller, peer and the initial master also carry ``minion``: the id of the
    accepted minion key that is that controller, matched as the ext_pillar matches
    (the id equals its ``minion_id``, the YAML's or its hostname, or the id's first label
    does: ``server1.example.org``). Target that, not ``minion_id``. Each controller has
    ``minion_problem`` too: None, or why ``minion`` is None (no such key; two keys match
    it; its only minion also matches another controller).

    CLI Example:

    .. code-block:: bash

        salt-run redis_deployment.shape
    """
    _close_salt_clients_at_exit()
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
    try:
        minions = _accepted_minions()
    except Exception as exc:  # pylint: disable=broad-except
        # The shape itself is still right; say why no controller has its minion.
        log.warning("redis_deployment: could not list the accepted minion keys: %s", exc)
        _resolve_minions(module, deployment, [])
        for controller in deployment["controllers"]:
            controller["minion_problem"] = f"the master's accepted minion keys could not be read: {exc}"
        return deployment
    return _resolve_minions(module, deployment, minions)


def _finish(result):
    # salt-run exits with the returned "retcode"; the job's success flag follows __context__.
    result["retcode"] = 1 if result["problems"] else 0
    __context__["retcode"] = result["retcode"]
    return result
