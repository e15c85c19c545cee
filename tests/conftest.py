"""
Fixtures of pytest-salt-factories that every layer starting Salt daemons shares
(tests/integration, tests/drills). saltfactories' ``salt_factories`` lives for the whole run
and keeps the event listener and root directory it was first made with: one override of
each, here, so that every master of the run forwards its events to the listener the tests
read, whichever layer started first.
"""

import logging

import pytest
from saltfactories.plugins.event_listener import EventListener


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
