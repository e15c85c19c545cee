"""Redis's text replies as data (_utils/redis_replies.py), on replies recorded from Debian's
redis-server 7.0.15: the one CLUSTER NODES parser of the modules and the health script."""

from support.lab import ROOT
from support.loaders import load_file

replies = load_file("redis_replies_under_test", ROOT / "_utils" / "redis_replies.py")

NODES = (
    "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 "
    "1426238317239 4 connected\n"
    "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002 master,fail - 0 1426238316232 2 connected "
    "5461-10922\n"
    "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 "
    "[5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]\n"
)
INFO = "cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:10923\r\ncluster_known_nodes:3\r\n"


def test_cluster_nodes_as_data():
    nodes = replies.cluster_nodes(NODES)

    assert [n["address"] for n in nodes] == ["127.0.0.1:30004", "127.0.0.1:30002", "127.0.0.1:30001"]
    assert nodes[0]["master"] == "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca" and nodes[0]["slots"] == []
    assert nodes[1]["flags"] == ["fail", "master"] and nodes[1]["slots"] == [[5461, 10922]]
    assert nodes[2]["slots"] == [[0, 5460]]
    assert nodes[2]["open_slots"] == ["[5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]"]


def test_the_health_view_of_a_cluster_with_a_failed_master_and_an_open_slot():
    view = replies.cluster_health_view(INFO, NODES)

    assert (view["state"], view["slots_assigned"], view["slots_ok"], view["known_nodes"]) == ("fail", 16384, 10923, 3)
    assert view["failing"] == ["127.0.0.1:30002"]
    assert view["open_slots"] == ["[5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]"]
    assert replies.cluster_health_view("", "") == {"state": None, "slots_assigned": 0, "slots_ok": 0,
                                                   "known_nodes": 0, "nodes": [], "open_slots": [], "failing": []}
