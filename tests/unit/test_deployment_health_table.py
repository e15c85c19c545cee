"""``salt-run redis_deployment.health`` without a master: every node's answer becomes one row
(the checks that are not OK, with their details), a node whose minion did not answer or
lacks the module is CRITICAL with why, and the table lists the worst first. The real path
(a master, minions, ``redis_cluster.health``) is in the lab modules."""

from support.loaders import load_runner

runner = load_runner("redis_deployment")

NODES = [{"hostname": "server1", "minion": "server1", "role": "cluster-node"},
         {"hostname": "server2", "minion": "server2.example.org", "role": "cluster-node"},
         {"hostname": "witness", "minion": "witness", "role": "sentinel-only"}]


def check(name, status, detail=""):
    return {"name": name, "value": 1, "threshold": 0, "status": status, "detail": detail}


def test_each_node_is_one_row_with_only_its_failing_checks():
    answers = {
        "server1": (True, {"status": "OK", "code": 0, "checks": [check("ping", "OK"), check("memory", "OK")]}),
        "server2.example.org": (True, {"status": "WARNING", "code": 1, "checks": [
            check("ping", "OK"), check("memory", "WARNING", "91 % of maxmemory (noeviction)")]}),
        "witness": (True, {"status": "OK", "code": 0, "checks": [check("sentinel", "OK")]}),
    }
    rows = runner._health_rows(NODES, answers)
    assert rows["server1"] == {"minion": "server1", "role": "cluster-node", "status": "OK", "code": 0, "failing": []}
    assert rows["server2"]["status"] == "WARNING" and rows["server2"]["code"] == 1
    assert rows["server2"]["failing"] == ["memory: 91 % of maxmemory (noeviction)"]
    table = runner._health_table(rows)
    assert table[1].split()[:3] == ["server2", "cluster-node", "WARNING"]
    assert table[1].endswith("memory: 91 % of maxmemory (noeviction)")
    assert [line.split()[0] for line in table] == ["node", "server2", "server1", "witness"]


def test_a_silent_minion_or_a_missing_module_is_critical_with_why():
    answers = {
        "server1": (False, "minion server1 did not answer redis_cluster.health within 30s"),
        "server2.example.org": (True, "'redis_cluster.health' is not available."),
    }
    rows = runner._health_rows(NODES, answers)
    assert rows["server1"]["status"] == "CRITICAL" and "did not answer" in rows["server1"]["failing"][0]
    assert rows["server2"]["code"] == 2 and "is not available" in rows["server2"]["failing"][0]
    assert rows["witness"]["status"] == "CRITICAL" and "did not answer" in rows["witness"]["failing"][0]
