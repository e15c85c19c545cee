"""
Cluster operations that span several minions, run from the salt-master.

.. code-block:: bash

    salt-run redis_cluster.remove_node node=server4

Nodes are found as ``salt-run redis_deployment.shape`` resolves them: each controller's
``minion`` is the accepted minion key that is it (``server4`` or ``server4.example.org``).

A runner never sees the Redis password (pillar hides it from ``salt-run``): every step
that talks to Redis runs on a minion of the deployment, through the ``redis_cluster``
execution module, which has it.
"""

import ipaddress
import logging
import re

try:
    import salt.client

    HAS_SALT_CLIENT = True
except ImportError:  # pragma: no cover - a master always has it
    HAS_SALT_CLIENT = False

log = logging.getLogger(__name__)

__virtualname__ = "redis_cluster"


def __virtual__():
    if not HAS_SALT_CLIENT:
        return (False, "redis_cluster runner: salt.client is not importable")
    return __virtualname__


def _finish(result, ok):
    # salt-run exits with the returned "retcode".
    result["retcode"] = 0 if ok else 1
    __context__["retcode"] = result["retcode"]
    return result


def _deployment_runner():
    """The redis_deployment runner's module namespace, as Salt's loader loaded it: its
    ``_deployment_module()`` is the ext_pillar's own code, whose matcher decides which
    minion is which controller (``__salt__`` gives only public functions, so the way in is
    the globals of its ``shape``)."""
    return __salt__["redis_deployment.shape"].__globals__


def _address(node, port):
    """``ip:port`` for a node given as an IP or ``ip:port``, as CLUSTER NODES shows it; else None."""
    text = str(node).strip()
    try:
        return f"{ipaddress.ip_address(text)}:{port}"
    except ValueError:
        pass
    host, sep, tail = text.rpartition(":")
    if sep and tail.isdigit():
        try:
            return f"{ipaddress.ip_address(host.strip('[]'))}:{int(tail)}"
        except ValueError:
            return None
    return None


def _named(module, deployment, node, port):
    """The controllers ``node`` names: by hostname, ip_address (or ``ip:port``), the id of
    its minion, or as the ext_pillar matches a minion id (``_matching_controllers``: the
    controller's minion_id, or the first label of ``node``)."""
    text = str(node).strip()
    address = _address(text, port)
    ip = address.rsplit(":", 1)[0] if address else None
    matched = {c["index"] for c in module._matching_controllers(deployment, text)}
    return [
        c for c in deployment["controllers"]
        if c["index"] in matched or text.lower() == c["hostname"].lower() or text == c.get("minion") or c["ip"] == ip
    ]


def _call(client, minion, function, wait, **kwargs):
    """One execution function on one minion, waiting ``wait`` seconds; (True, return) or (False, why)."""
    # A list target: a minion id is a name, never a glob pattern.
    answers = client.cmd([minion], function, kwarg=kwargs, timeout=wait, tgt_type="list", full_return=True) or {}
    answer = answers.get(minion)
    if answer is None:
        return False, f"minion {minion} did not answer within {wait}s"
    if answer.get("retcode", 0) != 0:
        return False, f"{minion}: {answer.get('ret')}"
    return True, answer.get("ret")


# What the removed node's minion renders to learn its Redis service's name: the formula's
# map.jinja (OS family table merged with pillar), the same file every state reads.
SERVICE_TEMPLATE = '{%- from "redis/map.jinja" import redis with context %}{{ redis.service }}'
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9@._-]+$")


def _service_name(client, minion):
    """(name, None) of the Redis server's service on ``minion`` as map.jinja gives it there
    (``redis-server`` on Debian, ``redis`` on RHEL, or pillar ``redis:service``), else
    (None, why)."""
    ok, answer = _call(client, minion, "slsutil.renderer", 60, string=SERVICE_TEMPLATE, default_renderer="jinja")
    name = answer.strip() if ok and isinstance(answer, str) else None
    if name and _SERVICE_NAME.match(name):
        return name, None
    return None, answer if not ok else f"salt://redis/map.jinja gave {answer!r} as redis.service"


def _members(client, executors):
    """(``[ip:port, ...]`` of the cluster's members as the first staying node that answers
    sees them, None) or (None, why)."""
    why = "no Redis controller of the deployment answered"
    for executor in executors:
        ok, view = _call(client, executor, "redis_cluster.cluster_view", 60)
        if ok and isinstance(view, dict):
            return sorted(n["address"] for n in view.get("nodes") or [] if n.get("address")), None
        why = view
    return None, why


def remove_node(node, timeout=300, force=False):
    """
    Take a node out of the Redis Cluster without losing a key, after the YAML stopped
    listing it as a Redis controller (``services.redis: false``, or the controller
    removed): a staying node moves its slots to the other masters and makes every node
    forget it (``redis_cluster.remove_member``), then its own minion stops and disables its
    Redis server (the service ``salt://redis/map.jinja`` names on that minion). A plain
    ``state.apply`` never does this; it fails on every staying node until this has run.
    Running it again changes nothing.

    A name or address that is neither a controller of the YAML nor a member of the
    cluster (as a staying node's ``redis_cluster.cluster_view`` lists them) is an error,
    exit status 1.

    node
        The node's hostname, minion id (``server4`` or ``server4.example.org``: minions are
        matched as the ext_pillar matches them) or IP, or its IP (``ip`` or ``ip:port``)
        when the controller is gone from the YAML.
    timeout
        Seconds for moving the slots and for the cluster to settle.
    force
        Remove it even when ``redis_cluster.remove_member`` refuses because the node is a
        master's last replica (that shard is then left without a copy: a failure of its
        master loses its keys). Passed to ``remove_member`` as is; without it such a
        removal changes nothing and exits 1 with the refusal.

    CLI Example:

    .. code-block:: bash

        salt-run redis_cluster.remove_node node=server4
        salt-run redis_cluster.remove_node node=server4.example.org
        salt-run redis_cluster.remove_node node=192.168.1.104
        salt-run redis_cluster.remove_node node=server4 force=True
    """
    deployment = __salt__["redis_deployment.shape"]()
    result = {"node": node, "actions": []}
    if deployment["mode"] != "cluster":
        result["comment"] = f"the deployment is in {deployment['mode']} mode: there is no cluster to remove {node} from"
        return _finish(result, False)
    port = deployment["settings"]["port"]
    named = _named(_deployment_runner()["_deployment_module"](), deployment, node, port)
    if len(named) > 1:
        result["comment"] = (
            f"{node} names " + " and ".join(f"nodes.controllers[{c['index']}] ({c['hostname']})" for c in named)
            + f" of {deployment['path']}: expected one controller; give its hostname or ip_address"
        )
        return _finish(result, False)
    controller = named[0] if named else None
    if controller and controller["redis"]:
        result["comment"] = (
            f"{node} is still a Redis controller in {deployment['path']} (services.redis: true): set it to false "
            "(or remove the controller) first, or the next state.apply adds it back"
        )
        return _finish(result, False)
    executors = [peer["minion"] for peer in deployment["peers"] if peer.get("minion")]
    if not executors:
        problems = [c["minion_problem"] for c in deployment["controllers"] if c["redis"] and c.get("minion_problem")]
        result["comment"] = "no staying Redis controller has a minion to run the removal on: " + "; ".join(problems)
        return _finish(result, False)
    address = f"{controller['ip']}:{port}" if controller else _address(node, port)
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        if controller is None:
            members, why = _members(client, executors)
            if members is None:
                result["comment"] = f"could not read the cluster's members to find {node}: {why}"
                return _finish(result, False)
            if address not in members:
                result["comment"] = (
                    f"{node} is neither a controller of {deployment['path']} (expected the hostname, minion id or "
                    f"ip_address of one) nor a member of the cluster (expected the address of one: "
                    f"{', '.join(members) or 'none'})"
                )
                return _finish(result, False)
        removed, why = None, "no Redis controller of the deployment answered"
        for executor in executors:
            ok, answer = _call(client, executor, "redis_cluster.remove_member", int(timeout) + 30,
                               address=address, timeout=timeout, force=bool(force))
            if ok:
                removed = answer
                result["actions"] += [f"{executor}: {action}" for action in answer.get("actions", [])]
                break
            why = answer
            if "did not answer" not in answer:
                break  # the node answered with a refusal: another node would refuse the same
        if removed is None:
            result["comment"] = f"could not remove {address}: {why}"
            return _finish(result, False)
        result.update({k: removed[k] for k in ("keys_before", "keys_after") if k in removed})
        if not removed["removed"] and "nothing to do" not in removed["comment"]:
            result["comment"] = removed["comment"]
            return _finish(result, False)
        result["comment"] = removed["comment"]
        _stop_server(client, deployment, controller, address, result)
        return _finish(result, True)
    finally:
        client.destroy()


def _stop_server(client, deployment, controller, address, result):
    """Stop and disable the removed node's Redis server through its own minion. The node
    is out of the cluster by now: what fails here is said, with what to do by hand."""
    minion = controller.get("minion") if controller else None
    if controller and not minion:
        result["actions"].append(f"{controller['hostname']}: {controller['minion_problem']}; stop its Redis by hand")
        return
    if not minion:
        result["actions"].append(
            f"{address}: no controller of {deployment['path']} has this address, so there is no minion to stop its "
            "Redis: stop it on that host"
        )
        return
    service, why = _service_name(client, minion)
    if service is None:
        result["actions"].append(f"{minion}: could not learn its Redis service's name ({why}); stop Redis by hand")
        return
    ok, answer = _call(client, minion, "service.stop", 60, name=service)
    disabled, _ = _call(client, minion, "service.disable", 60, name=service) if ok else (False, None)
    if ok and disabled:
        result["actions"].append(f"{minion}: {service} stopped and disabled")
    else:
        result["actions"].append(f"{minion}: could not stop {service} ({answer}); stop it by hand")
