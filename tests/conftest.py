"""
Fixtures of pytest-salt-factories that every layer starting Salt daemons shares
(tests/integration, tests/drills). saltfactories' ``salt_factories`` lives for the whole run
and keeps the event listener and root directory it was first made with: one override of
each, here, so that every master of the run forwards its events to the listener the tests
read, whichever layer started first.
"""

import logging
import os

import pytest
from saltfactories.plugins.event_listener import EventListener


# The session-scoped labs (tests/integration's hosts `rtest`, tests/drills' `rdrill`): each
# may start only once per run.
SESSION_LABS = ("lab_hosts", "drill_lab")


def _session_lab(item):
    return next((lab for lab in SESSION_LABS if lab in getattr(item, "fixturenames", ())), None)


def pytest_collection_modifyitems(config, items):
    """`make test` runs two pytest-xdist workers (``--dist loadgroup``). Every test of a
    session-scoped lab is one group, and any other test file is one, so that a lab (or a
    module's fixtures: a lab of its own, a shared server) starts once, on one worker, and its
    tests run in file order. Under xdist the labs' groups go first: the longest ones start
    at once, while the other worker takes the rest."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_session_lab(item) or item.nodeid.split("::", 1)[0]))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: SESSION_LABS.index(_session_lab(item)) if _session_lab(item) else len(SESSION_LABS))


def pytest_unconfigure(config):
    """Salt's log handlers flush once more at interpreter exit, into streams pytest has
    closed by then; each such record would print a "--- Logging error ---" traceback after
    pytest's summary and push the list of failed tests out of the last screen of the run."""
    logging.raiseExceptions = False


@pytest.fixture(scope="session")
def event_listener():
    """saltfactories' event listener (every master it starts forwards its bus there), keeping
    events 10 minutes instead of 2: a state run can take longer than that after its event."""
    with EventListener(timeout=600) as listener:
        yield listener


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    """Salt's daemons and scripts under pytest's temporary directory, not straight in /tmp."""
    return {"root_dir": tmp_path_factory.mktemp("salt")}
