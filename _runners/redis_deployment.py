"""
Preflight for the Redis deployment: what ``salt '*' state.apply redis`` would build from
my_multihead_cluster.yaml, checked before anything changes.

.. code-block:: bash

    salt-run redis_deployment.check
    salt-run redis_deployment.rolling_restart

``check`` needs neither the password (``${VAR}`` references are reported, not expanded) nor a
running Redis: it reads the YAML the ``redis_deployment`` ext_pillar reads, validates it
with the same code, and asks the connected minions for their ``mem_total`` and address
grains, as pillar rendering would.

A controller's minion is found as the pillar finds it (``_matching_controllers`` of the
ext_pillar): the minion whose id is the controller's ``minion_id`` (default: its
hostname) or whose id's first label is (``server1.example.org`` is ``server1``).
``shape`` resolves every controller to that minion among the master's accepted keys,
so the other runners and ``redis.orchestrate`` target real minion ids.

``rolling_restart`` restarts the deployment's Redis servers one at a time without losing a
write: replicas first, then each master after its role went to a replica. Like the other
runners it never sees the password: each step runs on a node's own minion
(``redis_node`` execution functions).
"""

import atexit
import importlib.util
import logging
import re
import sys
import time
from pathlib import Path

try:
    import salt.cache
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


# The server packages whose installed version the preflight shows (either server's).
SERVER_PACKAGES = ("redis-server", "valkey-server", "redis-sentinel", "valkey-sentinel")


def _connected_minions(timeout):
    """{minion id: grains} of every minion that answers now, each with ``packages``: the
    installed version of each of SERVER_PACKAGES ('' when not installed)."""
    client = salt.client.get_local_client(__opts__["conf_file"])
    grains = ["mem_total", "ipv4", "ipv6", *_deployment_module().OS_GRAINS]
    try:
        answers = client.cmd("*", ["grains.item", "pkg.version"], [grains, list(SERVER_PACKAGES)],
                             timeout=timeout) or {}
    finally:
        client.destroy()
    minions = {}
    for minion, answer in answers.items():
        found = answer.get("grains.item") if isinstance(answer, dict) else None
        packages = answer.get("pkg.version") if isinstance(answer, dict) else None
        minions[minion] = dict(found if isinstance(found, dict) else {},
                               packages=packages if isinstance(packages, dict) else {})
    return minions


def _server_shown(pillar, grains):
    """``redis 7.0.15`` / ``valkey 8.1.1`` (the installed package's upstream version), or the
    server with ``not installed yet``; with the distribution when its grains say it."""
    server = pillar.get("server", "redis")
    package = ("%s-sentinel" if pillar.get("role") == "sentinel-only" else "%s-server") % server
    installed = (grains.get("packages") or {}).get(package) or ""
    version = re.sub(r"^\d+:", "", installed).split("-")[0].split("+")[0]
    release = " ".join(str(grains[k]) for k in ("os", "osmajorrelease") if grains.get(k) is not None)
    return f"{server} {version or '(not installed yet)'}" + (f" on {release}" if release else "")


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
                    deployment, minion, grains.get("mem_total"), grains.get("ipv4"), grains.get("ipv6"),
                    os_grains={name: grains.get(name) for name in module.OS_GRAINS}
                    if grains.get("os_family") else None,
                )
            except module.DeploymentError as exc:
                plan.append(f"{line}: minion {minion}: PROBLEM")
                result["problems"].append(str(exc))
                continue
            memory = pillar.get("maxmemory")
            shown = f"maxmemory {_human(memory)} ({pillar.get('maxmemory_percent')}% of RAM)" if memory else ""
            plan.append(f"{line}: minion {minion}, {_server_shown(pillar, grains)}{', ' + shown if shown else ''}")
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


# ---------------------------------------------------------------- rolling restart

# Where the roll keeps the run_ids it saw at its start (Salt's cache on the master, bank/key).
ROLL_BANK, ROLL_KEY = "redis_deployment", "rolling_restart"


def _ranges(slots):
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in slots or [])


def _in_sync_replica(view):
    return view.get("reachable") and view.get("role") == "replica" and view.get("link") == "up" \
        and not view.get("sync_in_progress") and not view.get("loading")


def _roll_plan(servers, views, selected=None, allow_downtime=False, mode="cluster"):
    """
    Which server is restarted when, from the live roles: the pure part of rolling_restart.

    ``servers``: every Redis server of the deployment, file order, ``[{"hostname", "minion",
    "address"}]``; ``views``: ``{minion: redis_node.replication}``; ``selected``: the minions
    to restart (None: all). Returns ``{"steps": [...], "refused": [why, ...]}``; a refusal
    means nothing is to be restarted. Each step is ``{"minion", "hostname", "address",
    "role" (the role it is restarted in), "failover_to" (for a master: the server that takes
    over first, else None), "downtime" (a master without a replica in sync), "slots"}``:

    - every server must answer and have loaded its data (cluster: say ``cluster_state:ok``);
    - replicas first, one at a time, in file order;
    - then each master in file order: one with a replica in sync (link up, no full sync) is
      failed over to its first such replica (file order), then restarted as a replica;
    - a master without one is a step with ``downtime`` only when ``allow_downtime``, else a
      refusal saying which slots (cluster) or data set (Sentinel) would be unavailable. A
      cluster master that serves no slots is no downtime.
    """
    by_minion = {s["minion"]: s for s in servers}
    chosen = [s["minion"] for s in servers] if selected is None else [m for m in by_minion if m in set(selected)]
    refused = []
    for server in servers:
        view = views.get(server["minion"]) or {}
        if not view.get("reachable"):
            refused.append(f"{server['hostname']} ({server['address']}, minion {server['minion']}) does not answer: "
                           f"{view.get('error', 'no answer')}")
        elif view.get("loading"):
            refused.append(f"{server['hostname']} ({server['address']}) is still loading its data")
        elif mode == "cluster" and view.get("cluster_state") != "ok":
            refused.append(f"{server['hostname']} ({server['address']}) says cluster_state:{view.get('cluster_state')}")
    if refused:
        return {"steps": [], "refused": refused}
    replicas_of = {}
    for server in servers:
        view = views[server["minion"]]
        if _in_sync_replica(view):
            replicas_of.setdefault(view["master"], []).append(server)

    def step(server, role, failover_to=None, downtime=False):
        return {"minion": server["minion"], "hostname": server["hostname"], "address": server["address"],
                "role": role, "failover_to": failover_to, "downtime": downtime,
                "slots": views[server["minion"]].get("slots") or []}

    steps = [step(by_minion[m], "replica") for m in chosen if views[m]["role"] == "replica"]
    for minion in chosen:
        view, server = views[minion], by_minion[minion]
        if view["role"] != "master":
            continue
        takers = replicas_of.get(server["address"]) or []
        if takers:
            taker = takers[0]
            steps.append(step(server, "replica", failover_to={k: taker[k] for k in ("minion", "hostname", "address")}))
        elif mode == "cluster" and not view.get("slots"):
            steps.append(step(server, "master"))  # serves nothing: nobody waits for it
        elif allow_downtime:
            steps.append(step(server, "master", downtime=True))
        else:
            what = f"slots {_ranges(view.get('slots'))}" if mode == "cluster" else "the whole data set"
            refused.append(f"{server['hostname']} ({server['address']}) is a master without a replica in sync: "
                           f"restarting it makes {what} unavailable until it is back; pass allow_downtime=True, or "
                           "leave it out with nodes=")
    return {"steps": steps if not refused else [], "refused": refused}


def _pending_minions(record, views, statuses=None):
    """The minions a resumed roll (``only_pending=True``) restarts: those of the interrupted
    roll's ``record`` whose server still has the run_id it had when that roll started, and
    those whose ``redis_cluster.status`` (``statuses``: {minion: status}) lists settings that
    wait for a restart (``restart_pending``)."""
    pending = {minion for minion, run_id in ((record or {}).get("run_ids") or {}).items()
               if (views.get(minion) or {}).get("run_id") == run_id}
    pending |= {minion for minion, status in (statuses or {}).items()
                if isinstance(status, dict) and status.get("restart_pending")}
    return pending


def _select_nodes(module, deployment, servers, nodes):
    """(minions, None) of the servers ``nodes`` names (a list or a comma-separated string of
    hostnames, minion ids as the ext_pillar matches them, or addresses), or (None, why)."""
    if nodes is None:
        return [s["minion"] for s in servers], None
    names = [n.strip() for n in (nodes.split(",") if isinstance(nodes, str) else nodes) if str(n).strip()]
    chosen, unknown = [], []
    for name in map(str, names):
        matched = {c["hostname"] for c in module._matching_controllers(deployment, name)}
        found = [s for s in servers if s["hostname"] in matched or name.lower() == s["hostname"].lower()
                 or name == s["minion"] or name in (s["address"], s["address"].rsplit(":", 1)[0])]
        if not found:
            unknown.append(name)
        chosen += [s["minion"] for s in found if s["minion"] not in chosen]
    if unknown:
        known = ", ".join(s["hostname"] for s in servers)
        return None, f"nodes: {', '.join(unknown)} names no Redis server of the deployment (expected one of {known})"
    return chosen, None


def _roll_cache():
    return salt.cache.factory(__opts__)


def _roll_record():
    try:
        return _roll_cache().fetch(ROLL_BANK, ROLL_KEY) or None
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("redis_deployment: cannot read the rolling restart's record: %s", exc)
        return None


def _store_roll_record(record):
    if record and record.get("run_ids"):
        _roll_cache().store(ROLL_BANK, ROLL_KEY, record)
    else:
        _roll_cache().flush(ROLL_BANK, ROLL_KEY)


def _progress(result, line):
    """One progress line: printed by salt-run as the roll goes, kept in the return, logged."""
    result["progress"].append(line)
    log.info("redis_deployment: %s", line)
    event = globals().get("__jid_event__")
    if event is not None:
        try:
            event.fire_event({"message": line}, "progress")
        except Exception:  # pylint: disable=broad-except
            log.debug("redis_deployment: progress event not sent", exc_info=True)


def _fire(tag, data):
    try:
        __salt__["event.send"](tag, data)
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("redis_deployment: event %s not sent: %s", tag, exc)


def _unavailable_hint(minion, text):
    """A minion's error, with what to do when it lacks our modules."""
    if "is not available" in text:
        text += f" (sync the formula's modules to it: salt {minion} saltutil.sync_modules, or state.apply redis)"
    return text


def _minion_call(client, minion, function, wait, **kwargs):
    """One execution function on one minion; (True, return) or (False, why)."""
    answers = client.cmd([minion], function, kwarg=kwargs, timeout=wait, tgt_type="list", full_return=True) or {}
    answer = answers.get(minion)
    if answer is None:
        return False, f"minion {minion} did not answer {function} within {wait}s"
    ret = answer.get("ret")
    if answer.get("retcode", 0) != 0:
        return False, _unavailable_hint(minion, str(ret))
    return True, ret


def _minions_call(client, minions, function, wait, **kwargs):
    """One execution function on several minions at once: {minion: (ok, return or why)}."""
    answers = client.cmd(list(minions), function, kwarg=kwargs, timeout=wait, tgt_type="list",
                         full_return=True) or {}
    found = {}
    for minion in minions:
        answer = answers.get(minion)
        if answer is None:
            found[minion] = (False, f"minion {minion} did not answer {function} within {wait}s")
        elif answer.get("retcode", 0) != 0:
            text = str(answer.get("ret"))
            found[minion] = (False, _unavailable_hint(minion, text))
        else:
            found[minion] = (True, answer.get("ret"))
    return found


def _sentinel_refusal(client, servers, views):
    """Why the Sentinels' decision and the servers' roles do not allow a roll, or None."""
    masters = [s for s in servers if views[s["minion"]].get("role") == "master"]
    ok, live = _minion_call(client, servers[0]["minion"], "redis_sentinel.live_master", 60)
    if not ok:
        return f"cannot ask the Sentinels for the live master: {live}"
    if not live.get("master"):
        return f"the Sentinels have not decided on the master: {live.get('comment')}"
    if [s["address"] for s in masters] != [live["address"]]:
        return (f"the Sentinels name {live['master']} ({live['address']}) but the servers that say they are masters "
                f"are {', '.join(s['hostname'] for s in masters) or 'none'}: wait until they agree")
    return None


def _roll_nodes(deployment, nodes, witnesses=False):
    """``(servers, everyone, selected minions, None)`` of a roll, or ``(.., why not)``: the
    deployment's Redis servers (``[{hostname, minion, address}]``), with ``witnesses`` also
    its Sentinel-only nodes (everyone: each with ``witness``), and the minions ``nodes`` names."""
    port = deployment["settings"].get("port", 6379)
    servers = [{"hostname": p["hostname"], "minion": p.get("minion"), "address": f"{p['ip']}:{p.get('port') or port}"}
               for p in deployment["peers"]]
    everyone = [dict(s, witness=False) for s in servers] + [
        {"hostname": c["hostname"], "minion": c.get("minion"), "address": c["ip"], "witness": True}
        for c in deployment["controllers"] if witnesses and deployment["roles"].get(c["hostname"]) == "sentinel-only"]
    lost = [c["minion_problem"] for c in deployment["controllers"]
            if c["hostname"] in {n["hostname"] for n in everyone} and not c.get("minion")]
    if lost or not servers:
        return servers, everyone, None, "; ".join(lost) or "the deployment has no Redis server"
    selected, why = _select_nodes(_deployment_module(), deployment, everyone if witnesses else servers, nodes)
    return servers, everyone, selected, why


def _live_plan(client, servers, views, selected, allow_downtime, mode):
    """``_roll_plan`` from the live ``views``; in Sentinel mode also refused while the
    Sentinels and the servers' roles disagree."""
    plan = _roll_plan(servers, views, selected, allow_downtime, mode)
    if not plan["refused"] and mode == "sentinel":
        refusal = _sentinel_refusal(client, servers, views)
        plan["refused"] += [refusal] if refusal else []
    return plan


def rolling_restart(nodes=None, allow_downtime=False, only_pending=False, timeout=300, config=None):
    """
    Restart the deployment's Redis servers one at a time, in both modes, from their live
    roles: first every replica, each waited for until it is in sync again
    (``master_link_status:up``, its offset caught up with its master's and, in cluster mode,
    every server saying ``cluster_state:ok``); then each master that has a replica in sync
    hands its role over first (``CLUSTER FAILOVER`` on the replica, waited for until the two
    swapped; ``SENTINEL FAILOVER`` in Sentinel mode, waited for until the Sentinels agree),
    and is restarted and waited for in sync as a replica. Each restart goes through Salt's
    ``service.restart`` on the server's own minion (the service salt://redis/map.jinja names
    there). Nothing is restarted when a server does not answer, in cluster mode does not
    say ``cluster_state:ok``, or (Sentinel mode) the Sentinels have not decided.

    Each restarted server fires ``redis/rolling/<minion>/restarted`` (its node, address,
    roles and run_ids before and after, the server that took over, seconds) and prints a
    progress line. A failed step stops the roll: the return (exit status 1) and the event
    ``redis/rolling/<minion>/failed`` name the server and the reason; no other server is
    touched after it.

    nodes
        Only these servers (a list, or comma-separated: hostnames, minion ids, addresses);
        default all. The roles of all of them still decide the order, and a master of the
        list is still failed over to its replica, listed or not.
    allow_downtime
        Also restart a master that has no replica in sync (cluster: its slots, Sentinel
        mode: the data set are unavailable until it is back; the roll says which and, after,
        for how long; with ``cluster_require_full_coverage``, the default, a restart that
        outlasts ``cluster_node_timeout_ms`` makes every slot refuse until it is back).
        Without it such a master refuses the whole roll before anything is restarted;
        leave it out with ``nodes=`` instead.
    only_pending
        Restart only what is pending: the servers of an interrupted roll that still have the
        run_id they had when it started (the roll keeps those run_ids in the master's cache,
        Salt's ``salt.cache`` bank ``redis_deployment``, until a roll completes), and the
        servers whose ``redis_cluster.status`` lists settings waiting for a restart
        (``restart_pending``). Nothing pending: nothing is restarted.
    timeout
        Seconds for each step (a failover; a restart until in sync).

    Returns ``{"ok", "mode", "plan": [lines], "restarted": [{node, minion, ...}],
    "progress": [lines], "comment", "retcode"}``.

    CLI Example:

    .. code-block:: bash

        salt-run redis_deployment.rolling_restart
        salt-run redis_deployment.rolling_restart nodes=server4,server5
        salt-run redis_deployment.rolling_restart allow_downtime=True
        salt-run redis_deployment.rolling_restart only_pending=True
    """
    _close_salt_clients_at_exit()
    deployment = shape(config)
    mode = deployment["mode"]
    result = {"ok": False, "mode": mode, "plan": [], "restarted": [], "progress": [], "comment": ""}
    servers, _, selected, why = _roll_nodes(deployment, nodes)
    if why:
        result["comment"] = f"nothing restarted: {why}"
        return _finish_roll(result)
    timeout = float(timeout)
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        return _roll(client, result, deployment, servers, selected, bool(allow_downtime), bool(only_pending), timeout)
    finally:
        client.destroy()


def _roll(client, result, deployment, servers, selected, allow_downtime, only_pending, timeout):
    mode, minions = deployment["mode"], [s["minion"] for s in servers]
    views = {minion: ret if ok and isinstance(ret, dict) else {"reachable": False, "error": ret}
             for minion, (ok, ret) in _minions_call(client, minions, "redis_node.replication", 60).items()}
    record = _roll_record()
    if only_pending:
        statuses = {minion: ret for minion, (ok, ret) in
                    _minions_call(client, minions, "redis_cluster.status", 60).items() if ok}
        pending = _pending_minions(record, views, statuses)
        selected = [minion for minion in selected if minion in pending]
        if not selected:
            done = "every server of the interrupted roll was restarted since it began" if record \
                else "no interrupted roll is recorded"
            result.update(ok=True, comment=f"nothing pending: {done}, and no server waits for a restart")
            if record:
                _store_roll_record(None)
            return _finish_roll(result)
    plan = _live_plan(client, servers, views, selected, allow_downtime, mode)
    if plan["refused"]:
        result["comment"] = "nothing restarted: " + "; ".join(plan["refused"])
        return _finish_roll(result)
    steps = plan["steps"]
    for number, step in enumerate(steps, 1):
        line = f"{number}. {step['hostname']} ({step['address']}, {views[step['minion']]['role']})"
        if step["failover_to"]:
            line += f": fail over to {step['failover_to']['hostname']}, then restart as a replica"
        elif step["downtime"]:
            what = f"slots {_ranges(step['slots'])}" if mode == "cluster" else "the data set"
            line += f": restart WITHOUT a replica, {what} unavailable until it is back"
        else:
            line += ": restart"
        result["plan"].append(line)
    if not (only_pending and record):
        record = {"started": time.time(), "run_ids": {}}
    record["run_ids"].update({m: views[m]["run_id"] for m in selected if m not in record["run_ids"]})
    _store_roll_record(record)
    started = time.monotonic()
    _progress(result, f"rolling restart of {len(steps)} Redis servers ({mode} mode)")
    for number, step in enumerate(steps, 1):
        done, why = _roll_step(client, result, step, number, len(steps), mode, timeout)
        if not done:
            result["comment"] = (f"stopped at {step['hostname']} (minion {step['minion']}, step {number} of "
                                 f"{len(steps)}): {why}; the servers after it were not touched. Run again with "
                                 "only_pending=True to resume")
            _progress(result, f"[{number}/{len(steps)}] {step['hostname']}: FAILED: {why}")
            _fire(f"redis/rolling/{step['minion']}/failed", {"node": step["hostname"], "address": step["address"],
                                                             "step": number, "of": len(steps), "reason": why})
            return _finish_roll(result)
    # Done: what stays recorded is only what an earlier, interrupted roll still has pending.
    record["run_ids"] = {m: run_id for m, run_id in record["run_ids"].items()
                         if m not in selected and (views.get(m) or {}).get("run_id") == run_id}
    _store_roll_record(record)
    seconds = round(time.monotonic() - started, 1)
    result.update(ok=True, comment=f"restarted {len(steps)} Redis servers one at a time in {seconds}s")
    _progress(result, result["comment"])
    return _finish_roll(result)


def _roll_step(client, result, step, number, total, mode, timeout, upgrade=None):
    """Fail over (when the step says so) and restart one server: (True, None) or (False, why).
    ``upgrade`` ({package: version}): upgrade its packages where the restart would be, and let
    ``redis_node.upgrade`` restart it."""
    head = f"[{number}/{total}] {step['hostname']}"
    started = time.monotonic()
    failed_over = None
    if step["failover_to"]:
        taker = step["failover_to"]
        _progress(result, f"{head}: master; handing its role to {taker['hostname']} first")
        function = "redis_node.cluster_failover" if mode == "cluster" else "redis_node.sentinel_failover"
        ok, answer = _minion_call(client, taker["minion"], function, timeout + 30, timeout=timeout)
        if not ok:
            return False, f"failing over to {taker['hostname']}: {answer}"
        failed_over = taker["hostname"]
        _progress(result, f"{head}: {taker['hostname']} took over in {answer.get('seconds')}s")
    if step["downtime"]:
        earlier = [r["seconds"] for r in result["restarted"]]
        guess = f"about {max(earlier):.0f}s, as the longest restart so far" if earlier else "the restart's duration"
        what = f"slots {_ranges(step['slots'])}" if mode == "cluster" else "the data set"
        _progress(result, f"{head}: master without a replica: {what} unavailable for {guess}")
    if upgrade:
        _progress(result, f"{head}: upgrading {', '.join(f'{n} to {v}' for n, v in upgrade.items())}, restarting")
        ok, answer = _minion_call(client, step["minion"], "redis_node.upgrade", timeout + 300, packages=upgrade,
                                  role=step["role"], timeout=timeout + 270)
    else:
        _progress(result, f"{head}: restarting")
        ok, answer = _minion_call(client, step["minion"], "redis_node.restart", timeout + 30, role=step["role"],
                                  timeout=timeout)
    if not ok:
        return False, f"{'upgrading' if upgrade else 'restarting'} it: {answer}"
    entry = {"node": step["hostname"], "minion": step["minion"], "address": step["address"],
             "role_before": "master" if step["failover_to"] or step["downtime"] else step["role"],
             "role_after": answer.get("role_after"), "run_id_before": answer.get("run_id_before"),
             "run_id_after": answer.get("run_id_after"), "failed_over_to": failed_over,
             "downtime": step["downtime"], "seconds_down": answer.get("seconds_down"),
             "seconds": round(time.monotonic() - started, 2), "step": number, "of": total}
    if upgrade:
        entry.update({key: answer.get(key) for key in ("installed_before", "installed_after", "running_before",
                                                       "running_after", "restarted_by")})
    if step["downtime"]:
        entry["unavailable"] = {"slots": step["slots"], "seconds": answer.get("seconds")} if mode == "cluster" \
            else {"data_set": True, "seconds": answer.get("seconds")}
    result["restarted"].append(entry)
    _fire(f"redis/rolling/{step['minion']}/{'upgraded' if upgrade else 'restarted'}", entry)
    line = (f"{head}: back in sync as a {entry['role_after']} after {entry['seconds']}s "
            f"(run_id {str(entry['run_id_before'])[:8]} -> {str(entry['run_id_after'])[:8]})")
    if step["downtime"]:
        what = f"slots {_ranges(step['slots'])} were" if mode == "cluster" else "the data set was"
        line += f"; {what} unavailable for {answer.get('seconds')}s"
    _progress(result, line)
    return True, None


def _finish_roll(result):
    result["retcode"] = 0 if result["ok"] else 1
    __context__["retcode"] = result["retcode"]
    return result


# ---------------------------------------------------------------- upgrade


def _servers_module():
    """_utils/redis_servers.py, loaded by path as the ext_pillar loads it."""
    path = PILLAR_MODULE.parents[1] / "_utils" / "redis_servers.py"
    spec = importlib.util.spec_from_file_location("redis_servers_runner", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _versions_table(nodes, answers):
    """One line per node: its server, installed package version and running version."""
    lines = []
    width = max([len(n["hostname"]) for n in nodes] + [4])
    for node in nodes:
        ok, found = answers.get(node["minion"], (False, "no answer"))
        if not ok or not isinstance(found, dict):
            lines.append(f"{node['hostname']:<{width}}  {found}")
            continue
        running = found.get("running") or {}
        shown = f"running {running.get('server')} {running.get('version')}" if running else "no server running"
        lines.append(f"{node['hostname']:<{width}}  {found.get('server')} package {found.get('installed')}, "
                     f"{shown}" + (" (witness)" if node["witness"] else ""))
    return lines


def upgrade(version=None, nodes=None, allow_downtime=False, refresh=True, timeout=300, config=None):
    """
    Upgrade the server packages of the deployment in place, one node at a time through the
    rolling restart (``rolling_restart``'s order: replicas first, then each master after a
    failover to its replica in sync), each node's packages upgraded where its restart would
    be (a master's after its failover) and its server restarted once and waited for in sync
    (``redis_node.upgrade``: the packages' own restart of the server is denied while they
    install). Witnesses (Sentinel only) come last. Shows every node's installed and running
    version before, the plan (node: from -> to) and every node's versions after.

    Refused before anything changes, naming node and versions: a version the node's package
    archive does not offer; a version older than the installed one (a downgrade); an
    upgrade after which the servers would not all load each other's RDB format
    (``_utils/redis_servers.py``: a failover makes any of them the master). Nothing to
    upgrade: says every node runs the newest version, exit status 0.

    version
        The package version to go to on every node (default: the newest each archive offers).
    nodes
        Only these nodes (hostnames, minion ids, addresses), as ``rolling_restart``.
    allow_downtime
        As ``rolling_restart``: also a master without a replica in sync.
    refresh
        Update the nodes' package index first (default True).
    timeout
        Seconds for each step's failover and restart (the package install has 270 s more).

    Returns ``{"ok", "mode", "before": [lines], "plan": [lines], "upgraded": [...],
    "after": [lines], "progress", "comment", "retcode"}``.

    CLI Example:

    .. code-block:: bash

        salt-run redis_deployment.upgrade
        salt-run redis_deployment.upgrade version=5:8.0.2-3+deb13u4
        salt-run redis_deployment.upgrade nodes=server2
    """
    if version is not None and not re.match(r"^[0-9][A-Za-z0-9.+~:-]*$", str(version)):
        raise salt.exceptions.SaltInvocationError(
            f"version: expected a package version such as 5:8.0.2-3+deb13u3, got {version!r}")
    version = None if version is None else str(version)
    _close_salt_clients_at_exit()
    deployment = shape(config)
    mode = deployment["mode"]
    result = {"ok": False, "mode": mode, "before": [], "plan": [], "upgraded": [], "restarted": [], "after": [],
              "progress": [], "comment": ""}
    servers, everyone, selected, why = _roll_nodes(deployment, nodes, witnesses=True)
    if why:
        result["comment"] = f"nothing upgraded: {why}"
        return _finish_roll(result)
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        return _upgrade(client, result, deployment, servers, everyone, selected, version, bool(allow_downtime),
                        bool(refresh), float(timeout))
    finally:
        client.destroy()


def _upgrade(client, result, deployment, servers, everyone, selected, version, allow_downtime, refresh, timeout):
    mode, minions = deployment["mode"], [n["minion"] for n in everyone]
    kwargs = {"version": version} if version else {}
    answers = _minions_call(client, minions, "redis_node.packages", 300, refresh=refresh, **kwargs)
    result["before"] = _versions_table(everyone, answers)
    for line in ["before:"] + result["before"]:
        _progress(result, line)
    failed = [f"{n['hostname']} (minion {n['minion']}): {answers[n['minion']][1]}" for n in everyone
              if not answers[n["minion"]][0] or not isinstance(answers[n["minion"]][1], dict)]
    if failed:
        result["comment"] = "nothing upgraded: cannot read the packages of " + "; ".join(failed)
        return _finish_roll(result)
    found = {n["minion"]: answers[n["minion"]][1] for n in everyone}
    planned = _servers_module().upgrade_plan([
        {"name": n["hostname"], "server": found[n["minion"]]["server"], "installed": found[n["minion"]]["installed"],
         "target": found[n["minion"]]["target"], "cmp": found[n["minion"]]["cmp"],
         "version": (found[n["minion"]].get("running") or {}).get("version")
         or _servers_module().upstream(found[n["minion"]]["installed"]),
         "selected": n["minion"] in selected, "witness": n["witness"], "unavailable": found[n["minion"]]["unavailable"]}
        for n in everyone])
    if planned["refused"]:
        result["comment"] = "nothing upgraded: " + "; ".join(planned["refused"])
        return _finish_roll(result)
    chosen = [n for n in everyone if n["hostname"] in planned["upgrade"]]
    if not chosen:
        result.update(ok=True, comment="nothing to upgrade: every node runs the newest version its package "
                                       f"archive offers{' of those named' if len(selected) < len(everyone) else ''}"
                                       + (f" ({version} or newer)" if version else ""))
        _progress(result, result["comment"])
        return _finish_roll(result)
    targets = {n["minion"]: {name: p["target"] for name, p in found[n["minion"]]["packages"].items()
                             if p["cmp"] and p["cmp"] > 0} for n in chosen}
    views = {minion: ret if ok and isinstance(ret, dict) else {"reachable": False, "error": ret}
             for minion, (ok, ret) in _minions_call(client, [s["minion"] for s in servers], "redis_node.replication",
                                                    60).items()}
    plan = _live_plan(client, servers, views, [n["minion"] for n in chosen if not n["witness"]], allow_downtime, mode)
    if plan["refused"]:
        result["comment"] = "nothing upgraded: " + "; ".join(plan["refused"])
        return _finish_roll(result)
    steps = plan["steps"] + [{"minion": n["minion"], "hostname": n["hostname"], "address": n["address"],
                              "witness": True} for n in chosen if n["witness"]]
    for number, step in enumerate(steps, 1):
        versions = found[step["minion"]]
        line = f"{number}. {step['hostname']}: {versions['installed']} -> {versions['target']}"
        if step.get("failover_to"):
            line += f" (master: fail over to {step['failover_to']['hostname']} first)"
        elif step.get("witness"):
            line += " (witness: its Sentinel restarts with the package)"
        result["plan"].append(line)
    for line in ["plan:"] + result["plan"]:
        _progress(result, line)
    started = time.monotonic()
    for number, step in enumerate(steps, 1):
        if step.get("witness"):
            done, why = _upgrade_witness(client, result, step, number, len(steps), targets[step["minion"]], timeout)
        else:
            done, why = _roll_step(client, result, step, number, len(steps), mode, timeout,
                                   upgrade=targets[step["minion"]])
        if not done:
            result["comment"] = (f"stopped at {step['hostname']} (minion {step['minion']}, step {number} of "
                                 f"{len(steps)}): {why}; the nodes after it were not touched. Run again to resume")
            _progress(result, f"[{number}/{len(steps)}] {step['hostname']}: FAILED: {why}")
            _fire(f"redis/rolling/{step['minion']}/failed", {"node": step["hostname"], "step": number,
                                                             "of": len(steps), "reason": why})
            break
    else:
        seconds = round(time.monotonic() - started, 1)
        result.update(ok=True, comment=f"upgraded {len(steps)} nodes one at a time in {seconds}s")
    result["upgraded"] = result["restarted"]
    after = _minions_call(client, minions, "redis_node.packages", 120)
    result["after"] = _versions_table(everyone, after)
    for line in ["after:"] + result["after"] + ([result["comment"]] if result["ok"] else []):
        _progress(result, line)
    return _finish_roll(result)


def _upgrade_witness(client, result, step, number, total, packages, timeout):
    head = f"[{number}/{total}] {step['hostname']}"
    _progress(result, f"{head}: witness; upgrading {', '.join(f'{n} to {v}' for n, v in packages.items())}")
    ok, answer = _minion_call(client, step["minion"], "redis_node.upgrade", timeout + 300, packages=packages,
                              restart_server=False, timeout=timeout + 270)
    if not ok:
        return False, f"upgrading it: {answer}"
    entry = {"node": step["hostname"], "minion": step["minion"], "witness": True, "seconds": answer.get("seconds"),
             **{key: answer.get(key) for key in ("installed_before", "installed_after")}}
    result["restarted"].append(entry)
    _fire(f"redis/rolling/{step['minion']}/upgraded", entry)
    _progress(result, f"{head}: upgraded in {answer.get('seconds')}s, its Sentinel answers")
    return True, None


# ---------------------------------------------------------------- host replacement


def _host_names(value, what):
    names = value.split(",") if isinstance(value, str) else list(value or [])
    names = [str(n).strip() for n in names if str(n).strip()]
    if not names:
        raise salt.exceptions.SaltInvocationError(
            f"{what}: expected a list of hostnames, e.g. {what}=[server1,server2]")
    return names


def _old_and_new(deployment, old_names, new_names, witnesses=False):
    """``(servers, everyone, old minions, new minions, None)``, or ``(..., why nothing changed)``:
    a name that is no node of the deployment, or a host named both old and new."""
    servers, everyone, old_minions, why = _roll_nodes(deployment, old_names, witnesses)
    new_minions = None
    if not why:
        _, _, new_minions, why = _roll_nodes(deployment, new_names, witnesses)
    if why:
        return servers, everyone, old_minions, new_minions, f"nothing changed: {why}"
    both = set(old_minions) & set(new_minions)
    if both:
        return servers, everyone, old_minions, new_minions, f"nothing changed: {', '.join(sorted(both))} named both " \
            "old and new"
    return servers, everyone, old_minions, new_minions, None


def replace_hosts(old=None, new=None, timeout=3600, config=None):
    """
    Move the Redis Cluster off the hosts ``old`` onto the hosts ``new`` without losing a
    key, while clients keep writing: the way to new hardware, a new distribution or the
    other server (Debian 12's Redis 7.0 to Debian 13's Valkey 8.1 or Redis 8.0). The YAML
    lists both, each with ``services.redis: true`` (``cache.redis.server_by_host`` keeps
    the old hosts' server where it differs from ``cache.redis.server``). In order, each
    step checked before the next:

    1. refused before anything changes: a name that is no Redis controller, a host in both
       lists, fewer than 3 nodes left, the preflight's problems (``check``), and a new
       host whose server could not load an old one's RDB format (its installed version,
       else the one its package archive would install);
    2. growth: ``state.apply redis`` on every Redis host, which installs the new hosts and
       takes them into the cluster (masters and replicas by ``replicas_per_master``);
    3. every slot moves off the old hosts in one rebalance (``redis_cluster.drain_members``);
    4. each old host leaves the cluster (``redis_cluster.remove_member``, replicas first);
    5. each old host's Redis is stopped and disabled for good (``redis_node.retire``): a
       later ``state.apply`` that still finds it in the YAML refuses it.

    Then remove the old hosts from the YAML (or set ``services.redis: false``) and apply.
    Run again after a failure, it resumes; after success it changes nothing. Event
    ``redis/cluster/replaced``.

    In Sentinel mode (``cache.redis.mode: sentinel`` in the YAML, which lists the old and
    the new Redis hosts, and the old and new witness when it moves) a master/replica pair
    moves instead (``_replace_pair``): refused before anything changes as above (at least 2
    Redis servers left; the new servers must load the live master's RDB format); growth
    (``state.apply redis`` on every host: the new servers replicate the live master, their
    Sentinels join), each new server waited for in sync; a failover onto a server that
    stays (``redis_node.sentinel_failover to=...``: the old replicas at replica-priority 0,
    the master's writes paused until every possible taker has them) unless the master
    stays; each old host's server and Sentinel (a witness's Sentinel) stopped and disabled
    (``redis_node.retire sentinel=True``); each Sentinel left made to forget them, one after
    the other (``redis_sentinel.forget``: ``SENTINEL RESET``, the quorum set to the majority
    of the Sentinels left). Event ``redis/sentinel/replaced``.

    old
        The hosts to leave (hostnames, minion ids or addresses; a list or comma-separated).
    new
        The hosts to move onto.
    timeout
        Seconds for moving the slots (and for each removal).

    Returns ``{"ok", "old", "new", "before": [lines], "after": [lines], "progress",
    "keys_before", "keys_after", "comment", "retcode"}``.

    CLI Example:

    .. code-block:: bash

        salt-run redis_deployment.replace_hosts old=[server1,server2,server3] new=[server4,server5,server6]
    """
    old_names, new_names = _host_names(old, "old"), _host_names(new, "new")
    _close_salt_clients_at_exit()
    deployment = shape(config)
    result = {"ok": False, "mode": deployment["mode"], "old": [], "new": [], "before": [], "after": [],
              "progress": [], "comment": ""}
    if deployment["mode"] == "sentinel":
        return _replace_pair_hosts(result, deployment, old_names, new_names, config)
    servers, _, old_minions, new_minions, why = _old_and_new(deployment, old_names, new_names)
    if why:
        result["comment"] = why + ("" if " named both " in why else (
            f"; list the new hosts in {deployment['path']} with services.redis: true (and keep the old ones) first"))
        return _finish_roll(result)
    if len(servers) - len(old_minions) < 3:
        result["comment"] = (f"nothing changed: a cluster keeps at least 3 Redis nodes, {len(servers)} minus "
                             f"{len(old_minions)} old leaves {len(servers) - len(old_minions)}")
        return _finish_roll(result)
    by_minion = {s["minion"]: s for s in servers}
    result["old"] = [by_minion[m]["hostname"] for m in old_minions]
    result["new"] = [by_minion[m]["hostname"] for m in new_minions]
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        return _replace(client, result, deployment, servers, [by_minion[m] for m in old_minions],
                        [by_minion[m] for m in new_minions], float(timeout), config)
    finally:
        client.destroy()


def _cluster_of(client, nodes):
    """The view of the cluster (``redis_cluster.cluster_view``) that knows the most nodes,
    asked of ``nodes`` at once; None when none answers."""
    answers = _minions_call(client, [n["minion"] for n in nodes], "redis_cluster.cluster_view", 60)
    views = [ret for ok, ret in answers.values() if ok and isinstance(ret, dict)]
    return max(views, key=lambda v: (v["state"] == "ok", v["known_nodes"]), default=None)


def _members_table(view, names):
    lines = []
    for node in sorted(view["nodes"], key=lambda n: n["address"] or ""):
        name = names.get(node["address"], node["address"])
        slots = sum(b - a + 1 for a, b in node["slots"])
        role = "replica" if "slave" in node["flags"] else "master"
        lines.append(f"{name} ({node['address']}): {role}" + (f", {slots} slots" if slots else ""))
    return lines


def _door_refusals(client, old, new, what="slots"):
    """Why data could not move from an old host to a new one (RDB formats), per pair; a new
    host's server is the one installed, else the one its package archive would install.
    ``what`` names the data in the message (a Sentinel pair's: ``replication``)."""
    servers = _servers_module()
    statuses = _minions_call(client, [n["minion"] for n in old], "redis_cluster.status", 60)
    problems, sources = [], []
    for node in old:
        ok, status = statuses[node["minion"]]
        if not ok or not isinstance(status, dict) or not status.get("version"):
            problems.append(f"{node['hostname']}: cannot read its server's version: {status}")
            continue
        sources.append(dict(servers.node(status["server"], status["version"]), name=node["hostname"]))
    for node in new:
        server = node["server"]
        package = (servers.NAMES.get(server) or servers.REDIS_NAMES)["pkgs"][0]
        answers = client.cmd([node["minion"]], ["pkg.version", "pkg.latest_version"], [[package], [package]],
                             timeout=120, tgt_type="list") or {}
        found = answers.get(node["minion"]) or {}
        version = (found.get("pkg.latest_version") if isinstance(found.get("pkg.latest_version"), str) else "") \
            or (found.get("pkg.version") if isinstance(found.get("pkg.version"), str) else "")
        if not servers.upstream(version):
            problems.append(f"{node['hostname']}: cannot tell which {package} it would run (installed: none, its "
                            "package archive offers none)")
            continue
        target = dict(servers.node(server, servers.upstream(version)), name=node["hostname"])
        problems += [why for why in (servers.move_refused(source, target, what) for source in sources) if why]
        if what == "slots":  # a cluster: old and new nodes share its bus for a while
            problems += [why for why in (servers.bus_refused(source, target) for source in sources) if why]
    return list(dict.fromkeys(problems))


def _applied(client, nodes, wait):
    """``state.apply redis`` on ``nodes`` at once: ``["host: state id: comment"]`` of what failed."""
    answers = client.cmd([n["minion"] for n in nodes], "state.apply", ["redis"], timeout=wait, tgt_type="list",
                         full_return=True) or {}
    failed = []
    for node in nodes:
        answer = (answers.get(node["minion"]) or {}).get("ret")
        if not isinstance(answer, dict):
            failed.append(f"{node['hostname']}: {answer or 'no answer'}")
            continue
        failed += [f"{node['hostname']}: {state.get('__id__')}: {state.get('comment')}"
                   for state in answer.values() if isinstance(state, dict) and state.get("result") is False]
    return failed


def _replace(client, result, deployment, servers, old, new, timeout, config):
    started = time.monotonic()

    def step(line):
        _progress(result, f"[{time.monotonic() - started:.0f}s] {line}")

    module = _deployment_module()
    loaded = module.load_deployment(deployment["path"], environ=_Unexpanded())
    for node in old + new:
        node["server"] = module.server_of(loaded, node["hostname"])
    names = {s["address"]: s["hostname"] for s in servers}
    view = _cluster_of(client, old + new)
    if view is None:
        result["comment"] = "nothing changed: no host of old or new answered with its cluster's view"
        return _finish_roll(result)
    result["before"] = _members_table(view, names)
    for line in ["before:"] + result["before"]:
        _progress(result, line)
    members = {n["address"] for n in view["nodes"]}
    old_in = [n for n in old if n["address"] in members]
    new_in = [n for n in new if n["address"] in members]
    if not old_in and len(new_in) == len(new):
        retired = _minions_call(client, [n["minion"] for n in old], "redis_node.retire", 120)
        failed = [f"{m}: {why}" for m, (ok, why) in retired.items() if not ok]
        result.update(ok=not failed, comment="nothing to move: the old hosts are out of the cluster"
                      + (f"; could not stop their Redis: {'; '.join(failed)}" if failed else ""))
        return _finish_roll(result)
    if len(new_in) < len(new):
        preflight = check(config)
        problems = list(preflight.get("problems") or [])
        if any("cache.redis.server" in p for p in problems):
            problems.append("hosts that keep another server than cache.redis.server during the replacement are "
                            "named in cache.redis.server_by_host")
        problems += _door_refusals(client, old_in, [n for n in new if n not in new_in])
        if problems:
            result["comment"] = "nothing changed: " + "; ".join(problems)
            return _finish_roll(result)
        step(f"growth: state.apply redis on {', '.join(s['hostname'] for s in servers)}")
        failed = _applied(client, servers, int(timeout) + 600)
        if failed:
            result["comment"] = "stopped at growth (nothing was moved off the old hosts; run again): " + "; ".join(
                failed)
            return _finish_roll(result)
        view = _cluster_of(client, new)
        joined = {n["address"] for n in (view or {}).get("nodes", [])}
        missing = [n["hostname"] for n in new if n["address"] not in joined]
        if view is None or missing or view["state"] != "ok":
            result["comment"] = (f"stopped after growth: {', '.join(missing) or 'the cluster'} not in a cluster "
                                 "that says ok; run again")
            return _finish_roll(result)
        step("growth: every new host is in the cluster")
    executor = new[0]["minion"]
    ok, drained = _minion_call(client, executor, "redis_cluster.drain_members", timeout + 120,
                               addresses=[n["address"] for n in old_in], timeout=timeout)
    if not ok:
        result["comment"] = f"stopped while moving the slots off the old hosts (run again to resume): {drained}"
        return _finish_roll(result)
    result["keys_before"] = drained["keys_before"]
    step(f"moved: {drained['comment']}")
    view = _cluster_of(client, new)
    replicas = {n["address"] for n in (view or {}).get("nodes", []) if "slave" in n["flags"]}
    for node in sorted(old_in, key=lambda n: n["address"] not in replicas):
        ok, removed = _minion_call(client, executor, "redis_cluster.remove_member", timeout + 120,
                                   address=node["address"], timeout=min(timeout, 600))
        if not ok or (not removed.get("removed") and "nothing to do" not in removed.get("comment", "")):
            result["comment"] = f"stopped removing {node['hostname']} (run again to resume): " + (
                removed if not ok else removed.get("comment"))
            return _finish_roll(result)
        result["keys_after"] = removed.get("keys_after", result.get("keys_after"))
        step(f"removed: {removed['comment']}")
    for node in old:
        ok, retired = _minion_call(client, node["minion"], "redis_node.retire", 120)
        step(f"retired: {node['hostname']}: " + (
            f"{retired['service']} stopped and disabled" if ok else f"could not stop its Redis: {retired}"))
    view = _cluster_of(client, new)
    result["after"] = _members_table(view, names) if view else ["no new host answered"]
    for line in ["after:"] + result["after"]:
        _progress(result, line)
    left = [n["hostname"] for n in old if view and n["address"] in {m["address"] for m in view["nodes"]}]
    result["ok"] = bool(view) and view["state"] == "ok" and not left
    olds = ", ".join(n["hostname"] for n in old)
    result["comment"] = (
        f"replaced {olds} by {', '.join(n['hostname'] for n in new)}: {sum(drained['moved'].values())} slots moved, "
        f"keys before {result.get('keys_before')}, after {result.get('keys_after')}; now remove {olds} from "
        f"{deployment['path']} (or set services.redis: false) and apply"
        if result["ok"] else f"the cluster is not ok after the replacement, or still lists {', '.join(left)}")
    _fire("redis/cluster/replaced", {"old": result["old"], "new": result["new"], "ok": result["ok"],
                                     "keys_before": result.get("keys_before"), "keys_after": result.get("keys_after")})
    return _finish_roll(result)


# ---------------------------------------------------------------- host replacement, Sentinel pair


def _host_ip(node):
    """The host's ip: a server's ``ip:port`` address without the port, a witness's as is."""
    return node["address"].rsplit(":", 1)[0].strip("[]") if not node["witness"] else node["address"]


def _replace_pair_hosts(result, deployment, old_names, new_names, config):
    """replace_hosts in Sentinel mode: the checks on the names, then ``_replace_pair``."""
    servers, everyone, old_minions, new_minions, why = _old_and_new(deployment, old_names, new_names, True)
    if why:
        result["comment"] = why + ("" if " named both " in why else (
            f"; list the new hosts in {deployment['path']} (Redis servers with services.redis: true, a new witness in "
            "cache.redis.sentinel.witnesses), keep the old ones, and set cache.redis.mode: sentinel"))
        return _finish_roll(result)
    by_minion = {n["minion"]: n for n in everyone}
    old, new = [by_minion[m] for m in old_minions], [by_minion[m] for m in new_minions]
    left = [s for s in everyone if not s["witness"] and s["minion"] not in old_minions]
    if len(left) < 2:
        result["comment"] = (f"nothing changed: a Sentinel pair keeps at least 2 Redis servers, {len(servers)} minus "
                             f"{len([n for n in old if not n['witness']])} old leaves {len(left)}")
        return _finish_roll(result)
    result["old"], result["new"] = [n["hostname"] for n in old], [n["hostname"] for n in new]
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        return _replace_pair(client, result, deployment, everyone, old, new, left, config)
    finally:
        client.destroy()


def _pair_views(client, nodes):
    """{minion: redis_node.replication} of ``nodes`` (a server that does not answer: unreachable)."""
    return {m: ret if ok and isinstance(ret, dict) else {"reachable": False, "error": ret}
            for m, (ok, ret) in _minions_call(client, [n["minion"] for n in nodes], "redis_node.replication",
                                              60).items()}


def _pair_table(nodes, views, names):
    lines = []
    for node in nodes:
        view = views.get(node["minion"]) or {}
        if not view.get("reachable"):
            lines.append(f"{node['hostname']} ({node['address']}): not running")
        elif view["role"] == "master":
            lines.append(f"{node['hostname']} ({node['address']}): master, {len(view['replicas'])} replicas")
        else:
            lines.append(f"{node['hostname']} ({node['address']}): replica of "
                         f"{names.get(view.get('master'), view.get('master'))}, link {view.get('link')}")
    return lines


def _replace_pair(client, result, deployment, everyone, old, new, left, config):
    """Growth, a failover onto a server that stays, the old hosts retired, the Sentinels left
    made to forget them: each step checked before the next, resumable."""
    servers = [n for n in everyone if not n["witness"]]
    names = {s["address"]: s["hostname"] for s in servers}
    module = _deployment_module()
    loaded = module.load_deployment(deployment["path"], environ=_Unexpanded())
    for node in everyone:
        node["server"] = module.server_of(loaded, node["hostname"])
    views = _pair_views(client, servers)
    result["before"] = _pair_table(servers, views, names)
    for line in ["before:"] + result["before"]:
        _progress(result, line)
    records = _minions_call(client, [n["minion"] for n in old], "redis_node.retired", 60)
    retired = [n for n in old if records[n["minion"]][0] and records[n["minion"]][1]]
    masters = [s for s in servers if (views[s["minion"]].get("role") == "master")]
    if len(retired) == len(old) and masters and all(m in left for m in masters):
        done = _retire_and_forget(client, result, deployment, everyone, old, left)
        result.update(ok=done is None, comment=f"nothing to move: {', '.join(result['old'])} are retired and "
                      f"{masters[0]['hostname']} is the master" + (f"; {done}" if done else ""))
        return _finish_roll(result)
    if not retired:
        refused = _pair_refusals(client, deployment, config, servers, masters, new)
        if refused:
            result["comment"] = "nothing changed: " + "; ".join(refused)
            return _finish_roll(result)
        why = _pair_growth(client, result, everyone, new)
        if why:
            result["comment"] = why
            return _finish_roll(result)
        views = _pair_views(client, servers)
        masters = [s for s in servers if views[s["minion"]].get("role") == "master"]
    if len(masters) != 1:
        result["comment"] = (f"stopped: expected one master, the servers that say so are "
                             f"{', '.join(m['hostname'] for m in masters) or 'none'}; run again once they agree")
        return _finish_roll(result)
    if masters[0] not in left:
        taker = next((n for n in left if n in new), left[0])
        _progress(result, f"failover: {masters[0]['hostname']} hands the master's role to a server that stays "
                          f"({', '.join(n['hostname'] for n in left)}), asked on {taker['hostname']}")
        ok, answer = _minion_call(client, taker["minion"], "redis_node.sentinel_failover", 200, timeout=170,
                                  to=[n["address"] for n in left])
        if not ok:
            result["comment"] = (f"stopped at the failover (the old hosts still run; run again to resume): "
                                 f"{answer}")
            return _finish_roll(result)
        result["failover"] = answer
        _progress(result, f"failover: {answer['comment']}")
    else:
        _progress(result, f"failover: none needed, {masters[0]['hostname']} stays and is the master")
    views = _pair_views(client, servers)
    masters = [s for s in servers if views[s["minion"]].get("role") == "master"]
    if [m for m in masters if m not in left] or len(masters) != 1:
        result["comment"] = (f"stopped before retiring the old hosts: the servers that say they are masters are "
                             f"{', '.join(m['hostname'] for m in masters) or 'none'}, expected one host that stays; "
                             "run again")
        return _finish_roll(result)
    done = _retire_and_forget(client, result, deployment, everyone, old, left)
    views = _pair_views(client, left)
    result["after"] = _pair_table(left, views, names)
    for line in ["after:"] + result["after"]:
        _progress(result, line)
    masters = [s for s in left if views[s["minion"]].get("role") == "master"]
    in_sync = [s for s in left if views[s["minion"]].get("role") == "replica"
               and views[s["minion"]].get("link") == "up"]
    result["ok"] = done is None and len(masters) == 1 and len(in_sync) == len(left) - 1
    olds = ", ".join(result["old"])
    result["comment"] = (
        f"replaced {olds} by {', '.join(result['new'])}: {masters[0]['hostname']} is the master, "
        f"{', '.join(s['hostname'] for s in in_sync)} in sync; now remove {olds} from {deployment['path']} (and "
        "from cache.redis.server_by_host and cache.redis.sentinel.witnesses) and apply: the quorum then follows the "
        "Sentinels left" if result["ok"] else
        f"the pair is not whole after the replacement: {done or '; '.join(result['after'])}; run again")
    _fire("redis/sentinel/replaced", {"old": result["old"], "new": result["new"], "ok": result["ok"],
                                      "master": masters[0]["hostname"] if masters else None})
    return _finish_roll(result)


def _pair_refusals(client, deployment, config, servers, masters, new):
    """Why the pair must not move (the preflight's problems; a new server that could not load
    the live master's format), before anything changes."""
    problems = list(check(config).get("problems") or [])
    if any("cache.redis.server" in p for p in problems):
        problems.append("hosts (and witnesses) that keep another server than cache.redis.server during the "
                        "replacement are named in cache.redis.server_by_host")
    if len(masters) != 1:
        problems.append(f"expected one master among {', '.join(s['hostname'] for s in servers)}, found "
                        f"{', '.join(m['hostname'] for m in masters) or 'none'}")
        return problems
    targets = [n for n in new if not n["witness"]]
    problems += _door_refusals(client, masters, targets, "replication") if targets else []
    return problems


def _pair_growth(client, result, everyone, new):
    """``state.apply redis`` on every host of the pair; then each new server in sync as a
    replica. None, or why it stopped."""
    _progress(result, f"growth: state.apply redis on {', '.join(n['hostname'] for n in everyone)}")
    failed = _applied(client, everyone, 900)
    if failed:
        return "stopped at growth (the master did not move; run again): " + "; ".join(failed)
    targets = [n for n in new if not n["witness"]]
    synced = _minions_call(client, [n["minion"] for n in targets], "redis_node.wait_in_sync", 330, timeout=300,
                           role="replica")
    late = []
    for node in targets:
        ok, answer = synced[node["minion"]]
        if not ok or not isinstance(answer, dict) or not answer.get("in_sync"):
            late.append(f"{node['hostname']}: {answer.get('comment') if isinstance(answer, dict) else answer}")
    if late:
        return "stopped after growth (the master did not move; run again): " + "; ".join(late)
    _progress(result, "growth: " + (f"{', '.join(n['hostname'] for n in targets)} in sync as replicas"
                                    if targets else "the new Sentinels run"))
    return None


def _retire_and_forget(client, result, deployment, everyone, old, left):
    """Each old host's server and Sentinel stopped and disabled (``redis_node.retire``), then
    each Sentinel left made to forget them, one after the other. None, or what failed."""
    failed = []
    for node in old:
        kwargs = {"sentinel": True, "server": not node["witness"]}
        ok, retired = _minion_call(client, node["minion"], "redis_node.retire", 120, **kwargs)
        _progress(result, f"retired: {node['hostname']}: " + (
            f"{retired['service']} stopped and disabled" if ok else f"could not stop it: {retired}"))
        failed += [] if ok else [f"{node['hostname']}: {retired}"]
    if failed:
        return "could not retire " + "; ".join(failed)
    sentinels = [n for n in everyone if n not in old]
    quorum = len(sentinels) // 2 + 1
    gone = [_host_ip(n) for n in old]
    for node in sentinels:
        ok, forgot = _minion_call(client, node["minion"], "redis_sentinel.forget", 100, gone=gone, quorum=quorum,
                                  timeout=90)
        _progress(result, f"sentinel: {node['hostname']}: " + (forgot["comment"] if ok else f"FAILED: {forgot}"))
        if not ok or not forgot.get("complete"):
            why = forgot["comment"] if ok else forgot
            return f"the Sentinel on {node['hostname']} did not forget the old hosts: {why}"
    return None


# ---------------------------------------------------------------- health

HEALTH_CODES = {"OK": 0, "WARNING": 1, "CRITICAL": 2}
HEALTH_ROLES = ("cluster-node", "master", "replica", "sentinel-only")


def _health_rows(nodes, answers):
    """One row per node from the minions' ``redis_cluster.health`` answers: ``{hostname:
    {minion, role, status, code, failing: ["check: detail"]}}``; a node whose minion did not
    answer (or failed) is CRITICAL with why."""
    rows = {}
    for node in nodes:
        ok, ret = answers.get(node["minion"], (False, f"minion {node['minion']} did not answer"))
        if not ok or not isinstance(ret, dict) or ret.get("status") not in HEALTH_CODES:
            rows[node["hostname"]] = {"minion": node["minion"], "role": node["role"], "status": "CRITICAL",
                                      "code": 2, "failing": [f"health: {ret}"]}
            continue
        failing = [f"{c.get('name')}: {c.get('detail') or c.get('value')}" for c in ret.get("checks") or []
                   if c.get("status") != "OK"]
        rows[node["hostname"]] = {"minion": node["minion"], "role": node["role"], "status": ret["status"],
                                  "code": HEALTH_CODES[ret["status"]], "failing": failing}
    return rows


def _health_table(rows):
    """The rows as aligned lines, the worst first (then by name)."""
    ordered = sorted(rows.items(), key=lambda item: (-item[1]["code"], item[0]))
    width = max([len(name) for name in rows] + [4])
    lines = [f"{'node':<{width}}  {'role':<13} {'status':<8} failing checks"]
    for name, row in ordered:
        lines.append(f"{name:<{width}}  {row['role']:<13} {row['status']:<8} {'; '.join(row['failing']) or '-'}")
    return lines


def health(config=None, timeout=30):
    """
    Every node's health in one table, for operators who look from the master: the
    deployment's own ``redis_cluster.health`` run at once on each Redis server's and each
    witness's minion. A node whose minion does not answer within ``timeout`` seconds (or
    lacks the module) is CRITICAL, with why. Exit status: the worst code (0 OK, 1 WARNING,
    2 CRITICAL).

    Returns ``{"status", "code", "nodes": {hostname: {minion, role, status, code,
    failing: ["check: detail"]}}, "table": [lines], "retcode"}``.

    CLI Example:

    .. code-block:: bash

        salt-run redis_deployment.health
    """
    _close_salt_clients_at_exit()
    deployment = shape(config)
    nodes, problems = [], []
    for controller in deployment["controllers"]:
        role = deployment["roles"].get(controller["hostname"], "none")
        if role not in HEALTH_ROLES:
            continue
        if controller.get("minion"):
            nodes.append({"hostname": controller["hostname"], "minion": controller["minion"], "role": role})
        else:
            problems.append({"hostname": controller["hostname"], "minion": None, "role": role})
    answers = {}
    if nodes:
        client = salt.client.get_local_client(__opts__["conf_file"])
        try:
            answers = _minions_call(client, [n["minion"] for n in nodes], "redis_cluster.health", int(timeout))
        finally:
            client.destroy()
    rows = _health_rows(nodes, answers)
    for node in problems:
        controller = next(c for c in deployment["controllers"] if c["hostname"] == node["hostname"])
        rows[node["hostname"]] = {"minion": None, "role": node["role"], "status": "CRITICAL", "code": 2,
                                  "failing": [f"minion: {controller.get('minion_problem')}"]}
    code = max([row["code"] for row in rows.values()] + [0])
    status = next(name for name, value in HEALTH_CODES.items() if value == code)
    result = {"status": status, "code": code, "nodes": rows, "table": _health_table(rows), "retcode": code}
    __context__["retcode"] = code
    return result
