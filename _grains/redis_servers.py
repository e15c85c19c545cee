"""
Grain ``redis_servers``: the Redis-protocol servers installed on this minion and their
versions, ``{"redis": "7.0.15"}``, ``{"valkey": "8.1.1"}`` (``{}`` when none is).

The salt-master keeps every minion's grains in its minion data cache (it stores them with
each pillar request), so the ext_pillar (``_pillar/redis_deployment.py``) can give every
node the version and RDB format of each of its peers: pillar ``redis:versions``. The
grain is computed when the minion starts and when grains are refreshed: ``state.apply
redis`` refreshes them after it installed or upgraded the server's packages, and so does
``salt-run redis_deployment.upgrade``.

Each server binary answers ``--version`` with its own name (``Redis server v=7.0.15``,
``Valkey server v=8.1.1``): a ``redis-server`` that is Valkey's compatibility link counts
as Valkey.
"""

import logging
import os
import re
import subprocess

log = logging.getLogger(__name__)

__virtualname__ = "redis_servers"

# Where the distributions' packages put the server binaries (Debian and RHEL alike).
BINARIES = ("/usr/bin/redis-server", "/usr/bin/valkey-server")
_VERSION = re.compile(r"^(Redis|Valkey|KeyDB) server v=(\d+\.\d+\.\d+)", re.IGNORECASE)


def __virtual__():
    return __virtualname__


def installed(binaries=BINARIES, timeout=5):
    """``{server: version}`` of the server binaries among ``binaries`` that run and say
    their version; one that does not is left out (logged)."""
    found = {}
    for binary in binaries:
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            continue
        try:
            output = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=timeout,
                                    check=False, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("redis_servers grain: %s --version: %s", binary, exc)
            continue
        match = _VERSION.match(output.strip())
        if match is None:
            log.warning("redis_servers grain: %s --version says %r, expected '<Server> server v=X.Y.Z'", binary,
                        output.strip()[:80])
            continue
        found.setdefault(match.group(1).lower(), match.group(2))
    return found


def redis_servers():
    """The grain: ``{"redis_servers": {server: version}}``."""
    return {"redis_servers": installed()}
