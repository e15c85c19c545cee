"""The redis_sentinel beacon (_beacons/redis_sentinel.py) run directly against the three real
Sentinels of the session's deployment, with a recording ``event.send`` stand-in: a real
master death must give exactly one ``redis/sentinel/switch-master`` event, sent by the
minion whose Sentinel led the failover."""

import time

import pytest
from conftest import assert_no_password, load_module
pytest.register_assert_rewrite("sentinel_fixtures")  # before its import below
from sentinel_fixtures import MASTER_NAME, all_rets, changes_of, wait_for  # noqa: E402

# The session's deployment fixture, one for every test_sentinel*.py file.
pytest_plugins = ["sentinel_fixtures"]

CONFIG = [{"interval": 1}]


def load_beacon(minion, sent, pillar=True):
    beacon = load_module(f"redis_sentinel_beacon_{minion.hostname}", "_beacons/redis_sentinel.py")
    beacon.__pillar__ = minion.pillar() if pillar else {}
    beacon.__context__ = {}
    beacon.__salt__ = {"event.send": lambda tag, data: sent.append((minion.hostname, tag, data)) or True}
    return beacon


def run(beacon, config):
    """As Salt calls it: validate, then beacon() with the beacon's name appended."""
    valid, why = beacon.validate(config)
    assert valid, why
    assert beacon.beacon(config + [{"_beacon_name": "redis_sentinel"}]) == []


class Recorder:
    """Every message one Sentinel publishes, straight from its pub/sub (the ground truth)."""

    def __init__(self, sentinel):
        self.pubsub = sentinel.client().pubsub()
        self.pubsub.psubscribe("*")
        self.channels = []

    def drain(self):
        while True:
            message = self.pubsub.get_message(timeout=0)
            if message is None:
                return
            if message["type"] == "pmessage":
                self.channels.append(message["channel"])


def test_validate_accepts_salt_options_and_rejects_mistakes(deployment):
    beacon = load_beacon(deployment.minions[0], [])
    assert beacon.validate([{"interval": 2}, {"port": 26379}, {"events": ["+sdown", "-odown"]}])[0] is True
    assert beacon.validate({"port": 26379})[0] is False
    assert beacon.validate([{"port": "many"}])[0] is False
    assert beacon.validate([{"events": ["sdown"]}])[0] is False
    assert beacon.validate([{"pasword": "x"}])[0] is False


def test_a_master_death_gives_one_switch_master_event_from_the_leader(deployment):
    master, replica = deployment.wait_converged()
    sentinels = deployment.sentinels[:3]
    sent = []
    # gamma's beacon finds the password in its Sentinel's file (no pillar in its loader).
    beacons = [load_beacon(m, sent, pillar=m.hostname != "gamma") for m in deployment.minions]
    configs = [CONFIG if m.hostname != "gamma" else CONFIG + [{"port": m.sentinel.port},
                                                              {"config_file": str(m.sentinel.conf)}]
               for m in deployment.minions]
    recorders = [Recorder(s) for s in sentinels]
    for beacon, config in zip(beacons, configs):
        run(beacon, config)  # subscribes
    new_address = f"127.0.0.1:{replica.port}"

    master.stop()

    def switched():
        for beacon, config in zip(beacons, configs):
            run(beacon, config)
        return all(s.master_address() == new_address for s in sentinels)

    # (A split vote is retried after 2 x failover-timeout: 20 s here.)
    wait_for(switched, 45, interval=0.2, message="the Sentinels fail over")
    deadline = time.monotonic() + 2  # late messages
    while time.monotonic() < deadline:
        for beacon, config in zip(beacons, configs):
            run(beacon, config)
        time.sleep(0.2)
    for recorder in recorders:
        recorder.drain()

    # The leader that carried the failover out: it alone publishes +failover-end (a leader
    # whose attempt was aborted published +elected-leader too, then -failover-abort-*).
    leaders = [s.hostname for s, r in zip(sentinels, recorders) if "+failover-end" in r.channels]
    assert len(leaders) == 1
    assert "+elected-leader" in recorders[[s.hostname for s in sentinels].index(leaders[0])].channels
    assert all("+switch-master" in r.channels for r in recorders), "every Sentinel announces the new master"
    switches = [(host, data) for host, tag, data in sent if tag == "redis/sentinel/switch-master"]
    assert len(switches) == 1, sent
    host, data = switches[0]
    assert host == leaders[0]
    assert data["master_name"] == MASTER_NAME
    assert (data["old_ip"], data["old_port"], data["new_ip"], data["new_port"]) == (
        "127.0.0.1", master.port, "127.0.0.1", replica.port)
    tags = {tag for _, tag, _ in sent}
    assert {"redis/sentinel/sdown", "redis/sentinel/odown"} <= tags
    assert all(tag.startswith("redis/sentinel/") and "+" not in tag for tag in tags)
    sdown = next(data for _, tag, data in sent if tag == "redis/sentinel/sdown" and data["instance_type"] == "master")
    assert (sdown["instance"], sdown["port"], sdown["event"]) == (MASTER_NAME, master.port, "+sdown")
    assert_no_password(sent)

    # The old master comes back as a master; the state makes it follow the new one.
    master.start()
    minion = next(m for m in deployment.minions if m.server is master)
    rets = minion.apply()
    assert all(ret["result"] is True for ret in rets), rets
    deployment.wait_converged(timeout=30)
    assert not changes_of(all_rets(deployment.apply_all()))
    for beacon, config in zip(beacons, configs):
        beacon.close(config)
        assert all(state["pubsub"] is None for state in beacon.__context__.values())
    for recorder in recorders:
        recorder.pubsub.close()


def test_the_beacon_survives_a_sentinel_restart(deployment):
    minion = deployment.minions[2]
    sent = []
    beacon = load_beacon(minion, sent)
    config = CONFIG + [{"events": ["+set"]}]
    run(beacon, config)
    minion.sentinel.restart()
    minion.sentinel.restarts -= 1  # not the state's doing
    run(beacon, config)  # notices the lost subscription
    run(beacon, config)  # subscribes again
    state = next(iter(beacon.__context__.values()))
    assert state["pubsub"] is not None and state["error"] is None
    # SENTINEL SET publishes +set (the same value: nothing changes).
    minion.sentinel.client().execute_command("SENTINEL", "SET", MASTER_NAME, "parallel-syncs", "1")
    wait_for(lambda: run(beacon, config) or sent, 5, message="the +set event")
    assert [(tag, data["instance"]) for _, tag, data in sent] == [("redis/sentinel/set", MASTER_NAME)]
    beacon.close(config)
    deployment.wait_converged()


@pytest.mark.parametrize("channel, data, expected", [
    ("+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 6379", None),  # not the leader
    ("-failover-abort-no-good-slave", "master mymaster 10.0.0.1 6379",
     ("-failover-abort-no-good-slave", {"instance_type": "master", "instance": "mymaster", "ip": "10.0.0.1",
                                        "port": 6379, "master_name": "mymaster"})),
    ("+sdown", "slave 10.0.0.2:6379 10.0.0.2 6379 @ mymaster 10.0.0.1 6379",
     ("sdown", {"instance_type": "slave", "ip": "10.0.0.2", "port": 6379, "master_name": "mymaster",
                "master_ip": "10.0.0.1", "master_port": 6379})),
    ("+sentinel", "sentinel abc 10.0.0.3 26379 @ mymaster 10.0.0.1 6379", None),  # not forwarded by default
])
def test_messages_become_events(deployment, channel, data, expected):
    beacon = load_beacon(deployment.minions[0], [])
    state = {"leading": set()}
    outcome = beacon._handle(channel, data, state, set(beacon.DEFAULT_EVENTS), "alpha")
    if expected is None:
        assert outcome is None
    else:
        tag, fields = outcome
        assert tag == expected[0]
        assert {k: fields[k] for k in expected[1]} == expected[1]
