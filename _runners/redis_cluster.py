"""
Cluster operations that span several minions, run from the salt-master.

.. code-block:: bash

    salt-run redis_cluster.remove_node node=server4

A runner never sees the Redis password (pillar hides it from ``salt-run``): every step
that talks to Redis runs on a minion of the deployment, through the ``redis_cluster``
execution module, which has it.
"""

import logging

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


def _target(deployment, node):
    """The controller ``node`` names (hostname, minion id or IP), else None."""
    for controller in deployment["controllers"]:
        if node in (controller["hostname"], controller["minion_id"], controller["ip"]):
            return controller
    return None


def _call(client, minion, function, wait, **kwargs):
    """One execution function on one minion, waiting ``wait`` seconds; (True, return) or (False, why)."""
    answers = client.cmd(minion, function, kwarg=kwargs, timeout=wait, full_return=True) or {}
    answer = answers.get(minion)
    if answer is None:
        return False, f"minion {minion} did not answer within {wait}s"
    if answer.get("retcode", 0) != 0:
        return False, f"{minion}: {answer.get('ret')}"
    return True, answer.get("ret")


def remove_node(node, timeout=300):
    """
    Take a node out of the Redis Cluster without losing a key, after the YAML stopped
    listing it as a Redis controller (``services.redis: false``, or the controller
    removed): a staying node moves its slots to the other masters and makes every node
    forget it (``redis_cluster.remove_member``), then its own minion stops and disables its
    redis-server. A plain ``state.apply`` never does this; it fails on every staying node
    until this has run. Running it again changes nothing.

    node
        The node's hostname or minion id as the YAML knew it, or its IP (``ip`` or
        ``ip:port``) when the controller is gone from the YAML.
    timeout
        Seconds for moving the slots and for the cluster to settle.

    CLI Example:

    .. code-block:: bash

        salt-run redis_cluster.remove_node node=server4
    """
    deployment = __salt__["redis_deployment.shape"]()
    result = {"node": node, "actions": []}
    if deployment["mode"] != "cluster":
        result["comment"] = f"the deployment is in {deployment['mode']} mode: there is no cluster to remove {node} from"
        return _finish(result, False)
    port = deployment["settings"]["port"]
    controller = _target(deployment, node)
    if controller and controller["redis"]:
        result["comment"] = (
            f"{node} is still a Redis controller in {deployment['path']} (services.redis: true): set it to false "
            "(or remove the controller) first, or the next state.apply adds it back"
        )
        return _finish(result, False)
    if controller:
        address, minion = f"{controller['ip']}:{port}", controller["minion_id"]
    else:
        address, minion = (node if ":" in node else f"{node}:{port}"), None
    staying = [peer["minion_id"] for peer in deployment["peers"]]
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        removed, why = None, "no Redis controller of the deployment answered"
        for executor in staying:
            ok, answer = _call(client, executor, "redis_cluster.remove_member", int(timeout) + 30,
                               address=address, timeout=timeout)
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
        if minion:
            service = "redis-server"
            ok, answer = _call(client, minion, "service.stop", 60, name=service)
            disabled, _ = _call(client, minion, "service.disable", 60, name=service) if ok else (False, None)
            if ok and disabled:
                result["actions"].append(f"{minion}: {service} stopped and disabled")
            else:
                result["actions"].append(f"{minion}: could not stop {service} ({answer}); stop it by hand")
        result["comment"] = removed["comment"]
        return _finish(result, True)
    finally:
        client.destroy()
