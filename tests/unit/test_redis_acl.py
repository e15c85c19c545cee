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
