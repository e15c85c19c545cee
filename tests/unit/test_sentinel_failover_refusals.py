"""_modules/redis_node.py: which replicas a Sentinel would promote (as sentinelSelectSlave in
Redis's sentinel.c decides, read from SENTINEL REPLICAS), and SENTINEL FAILOVER asked again
while a Sentinel answers NOGOODSLAVE, with what it sees when it still refuses. The Sentinel
is a stand-in here; tests/functional/test_rolling_restart.py runs real ones."""

import pytest
import redis
from salt.exceptions import CommandExecutionError
from support.lab import ROOT
from support.loaders import load_file, utils_dunder

PEERS = {"127.0.0.1:6379": "alpha", "127.0.0.1:6380": "beta"}
NOGOODSLAVE = redis.ResponseError("NOGOODSLAVE No suitable replica to promote")


def replica(**fields):
    """A SENTINEL REPLICAS entry of beta, fit to promote unless ``fields`` say otherwise."""
    entry = {"name": "127.0.0.1:6380", "ip": "127.0.0.1", "port": "6380", "flags": "slave",
             "last-ok-ping-reply": "300", "down-after-milliseconds": "1000", "info-refresh": "4000",
             "master-link-down-time": "0", "master-link-status": "ok", "slave-priority": "100"}
    entry.update({name.replace("_", "-"): value for name, value in fields.items()})
    return [item for pair in entry.items() for item in pair]


class Sentinel:
    """Answers SENTINEL FAILOVER with ``answers`` in turn (the last one from then on) and
    SENTINEL REPLICAS with ``replicas``."""

    def __init__(self, answers, replicas):
        self.answers, self.replicas, self.failovers = list(answers), replicas, 0

    def execute_command(self, *args):
        if args[:2] == ("SENTINEL", "REPLICAS"):
            return self.replicas
        assert args[:2] == ("SENTINEL", "FAILOVER"), args
        self.failovers += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def node():
    module = load_file("redis_node_refusals", ROOT / "_modules" / "redis_node.py")
    module.__utils__ = utils_dunder(["redis_common"])
    module.__pillar__ = {"redis": {"sentinel_port": 26379, "sentinel": {"hosts": []}}}
    return module


def asked(node, sentinel):
    node._sentinel_client = lambda host, port, timeout: sentinel
    return node._ask_failover("mymaster", PEERS, retry_for=0.5)


def test_a_replica_the_sentinel_sees_answering_in_sync_is_fit(node):
    assert node._unfit(dict(zip(replica()[::2], replica()[1::2]))) == []


@pytest.mark.parametrize("fields, why", [
    ({"flags": "slave,s_down"}, "flagged s_down"),
    ({"flags": "slave,disconnected,s_down"}, "flagged disconnected,s_down"),
    ({"master_link_status": "err"}, "its master link is not up"),
    ({"last_ok_ping_reply": "5001"}, "last ping answered 5001 ms ago"),
    ({"slave_priority": "0"}, "slave-priority 0"),
    ({"info_refresh": "30001"}, "INFO 30001 ms old"),
    ({"master_link_down_time": "10001"}, "master link down for 10001 ms"),
])
def test_what_keeps_a_sentinel_from_promoting_a_replica_is_named(node, fields, why):
    flat = replica(**fields)
    assert node._unfit(dict(zip(flat[::2], flat[1::2]))) == [why]


def test_nogoodslave_is_asked_again_until_the_sentinel_takes_the_failover(node):
    sentinel = Sentinel([NOGOODSLAVE, NOGOODSLAVE, "OK"], [replica()])

    assert asked(node, sentinel) == "local"
    assert sentinel.failovers == 3


def test_a_sentinel_that_keeps_answering_nogoodslave_is_given_up_on_with_what_it_sees(node):
    sentinel = Sentinel([NOGOODSLAVE], [replica(flags="slave,s_down", master_link_status="err",
                                                last_ok_ping_reply="6120")])

    with pytest.raises(CommandExecutionError) as refused:
        asked(node, sentinel)

    assert sentinel.failovers > 1
    assert str(refused.value) == (
        "SENTINEL FAILOVER mymaster refused by the local Sentinel for 0.5s: ResponseError: NOGOODSLAVE No suitable "
        "replica to promote; it sees beta (127.0.0.1:6380) flags slave,s_down, master link err: unfit (flagged "
        "s_down, its master link is not up, last ping answered 6120 ms ago)")


def test_any_other_refusal_fails_at_once(node):
    sentinel = Sentinel([redis.ResponseError("INPROG Failover already in progress")], [replica()])

    with pytest.raises(CommandExecutionError, match="refused: ResponseError: INPROG Failover already in progress"):
        asked(node, sentinel)
    assert sentinel.failovers == 1
