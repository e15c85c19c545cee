"""The deployment's internal ACL users (_utils/redis_acl.py): their derived passwords and
rules (what each may run is checked against real servers in tests/functional)."""

import hashlib
import hmac

from support.lab import ROOT
from support.loaders import load_file

acl = load_file("redis_acl_under_test", ROOT / "_utils" / "redis_acl.py")


def test_the_sentinels_password_is_the_one_every_deployment_already_has():
    # Derived as before the ACL users moved to _utils: a formed pair's Sentinels keep their login.
    expected = hmac.new(b"s3cret", b"redis-sentinel:salt-sentinel", hashlib.sha256).hexdigest()

    assert acl.derived_password("s3cret", "salt-sentinel") == expected


def test_each_user_has_its_own_password_and_no_key_or_write_rule():
    monitor = acl.derived_password("s3cret", "salt-monitor")
    rules = acl.rules("s3cret", "salt-monitor")

    assert monitor != acl.derived_password("s3cret", "salt-sentinel") != acl.derived_password("other", "salt-sentinel")
    assert rules[:4] == ["reset", "on", "#" + hashlib.sha256(monitor.encode()).hexdigest(), "resetchannels"]
    assert not [r for r in rules if r.startswith(("~", "%", "+@", "allkeys", "+set", "+config", "+flush"))]
    assert "+sentinel|ckquorum" in acl.rules("s3cret", "salt-monitor", on="sentinel")


class Node:
    """A peer that accepts the logins in ``accepted`` (``(user, password)``), refuses the rest."""

    def __init__(self, *accepted):
        self.accepted = set(accepted)

    def connect(self, user, password):
        node = self

        class Client:
            def ping(self):
                if (user, password) not in node.accepted:
                    raise PermissionError("WRONGPASS invalid username-password pair")
                return True

        return Client()


NEW, OLD = "new pw", "old pw"
WANTED = ("salt-replication", acl.derived_password(NEW, "salt-replication"))
IN_USE = ("salt-replication", acl.derived_password(OLD, "salt-replication"))


def test_a_rotation_lists_both_secrets_and_both_hashes():
    settings = {"password": NEW, "previous_password": OLD}
    assert acl.secrets(settings) == [NEW, OLD]
    assert acl.secrets({"password": NEW}) == [NEW]
    assert [r for r in acl.rules(acl.secrets(settings), "salt-replication") if r.startswith("#")] == [
        "#" + hashlib.sha256(acl.derived_password(p, "salt-replication").encode()).hexdigest() for p in (NEW, OLD)]


def test_the_outgoing_login_moves_once_every_peer_accepts_the_new_one():
    peers = {"a": Node(WANTED, IN_USE).connect, "b": Node(WANTED).connect}
    assert acl.outgoing_login([NEW, OLD], "salt-replication", IN_USE, peers) == (WANTED, [])


def test_the_login_in_use_stays_while_a_peer_not_applied_yet_refuses_the_new_one():
    peers = {"a": Node(WANTED, IN_USE).connect, "b": Node(IN_USE).connect}
    assert acl.outgoing_login([NEW, OLD], "salt-replication", IN_USE, peers) == (IN_USE, ["b"])
    # No password in use yet: a Sentinel's login to the others stays too (cautious).
    assert acl.outgoing_login([NEW], "salt-replication", (None, None), peers, cautious=True)[1] == ["b"]


def test_a_login_that_works_nowhere_gives_way_to_the_new_one():
    peers = {"b": Node(("salt-replication", "something else")).connect}
    assert acl.outgoing_login([NEW], "salt-replication", IN_USE, peers) == (WANTED, [])


class Applied(Node):
    """A peer whose own apply switches it from the login in use to the new one right before
    it is asked the login in use (between the two questions of one round)."""

    def connect(self, user, password):
        if (user, password) == IN_USE and IN_USE in self.accepted:
            self.accepted = {WANTED}
        return super().connect(user, password)


def test_a_peer_switched_between_the_two_questions_is_no_login_that_works_nowhere():
    peers = {"a": Applied(IN_USE).connect, "b": Node(IN_USE).connect}
    # a took the new login: still waiting for b, not the new login at once.
    assert acl.outgoing_login([NEW], "salt-replication", IN_USE, peers) == (IN_USE, ["b"])


def test_the_wait_ends_on_the_answer_it_ended_with():
    class Late(Node):
        """Accepts the new login only from its third question on, then not at all (gone)."""

        asked = 0

        def connect(self, user, password):
            Late.asked += 1
            self.accepted = {WANTED} if Late.asked == 3 else set() if Late.asked > 3 else {IN_USE}
            return super().connect(user, password)

    peers = {"a": Late().connect}
    # Asked: new (no), in use (yes) -> wait; new (yes) -> the new login, not a fourth question.
    assert acl.settled_outgoing_login([NEW], "salt-replication", IN_USE, peers, wait=5, interval=0) == (WANTED, [])
    assert Late.asked == 3
    # A dry run asks once.
    Late.asked = 0
    assert acl.settled_outgoing_login([NEW], "salt-replication", IN_USE, peers, wait=0) == (IN_USE, ["a"])


class Silent:
    """A peer that does not answer (down, or listening elsewhere)."""

    def connect(self, user, password):
        class Client:
            def ping(self):
                raise ConnectionRefusedError("Connection refused")

        return Client()


def test_without_a_password_in_use_a_silent_peer_keeps_the_login_waiting():
    peers = {"a": Node(WANTED).connect, "c": Silent().connect}
    assert acl.outgoing_login([NEW], "salt-replication", (None, None), peers, cautious=True) == ((None, None), ["c"])
    assert acl.outgoing_login([NEW], "salt-replication", (None, None), peers) == (WANTED, [])
    # With a password in use, a peer that does not answer does not hold the new login back.
    assert acl.outgoing_login([NEW], "salt-replication", IN_USE, peers) == (WANTED, [])


def test_the_login_check_factory_builds_its_client_itself():
    # redis_acl.outgoing_login calls it from the utils loader's context: loaded here without
    # __utils__, calling the factory raises NameError if it needs it.
    common = load_file("redis_common_under_test", ROOT / "_utils" / "redis_common.py")
    made = common.connector("10.0.0.9", "26379", timeout=2)("salt-sentinel", "pw")
    kwargs = made.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["username"], kwargs["password"]) == (
        "10.0.0.9", 26379, "salt-sentinel", "pw")
