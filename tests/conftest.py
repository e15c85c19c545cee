"""
Fixtures of pytest-salt-factories that every layer starting Salt daemons shares
(tests/integration, tests/drills). saltfactories' ``salt_factories`` lives for the whole run
and keeps the event listener and root directory it was first made with: one override of
each, here, so that every master of the run forwards its events to the listener the tests
read, whichever layer started first.
"""

import functools
import logging
import os
from pathlib import Path

import pytest
from saltfactories.plugins.event_listener import EventListener


ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def run_group(path):
    """What must run on one pytest-xdist worker, in file order, with the test file ``path``
    (relative to the repository): the session-scoped labs start only once per run, so every
    test of tests/drills (its lab `rdrill`) is one group, and every test of tests/integration
    but those of a module with a lab of its own (``lab_of_its_own``) is another (the shared
    hosts `rtest`); any other file is a group of its own (a module's own lab or server starts
    once)."""
    if path.startswith("tests/drills/"):
        return "drill-lab"
    if path.startswith("tests/integration/") and "lab_of_its_own(" not in (ROOT / path).read_text():
        return "shared-lab"
    return path


def _first(item):
    """The shared lab's tests first, then every other lab's (the drills', each module's own),
    then the rest: the long groups start early, the many short ones even the workers out."""
    path = item.nodeid.split("::", 1)[0]
    if run_group(path) == "shared-lab":
        return 0
    return 1 if run_group(path) == "drill-lab" or path.startswith("tests/integration/") else 2


def pytest_collection_modifyitems(config, items):
    """`make test` runs two pytest-xdist workers, each given whole run groups
    (``run_group``) in this order (``_first``): one worker starts on the shared lab at once
    while the other takes the other labs, then the rest."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=_first)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scope scheduling, a scope being a run group (``run_group``; xdist's own
    ``xdist_group`` marks do not reach its scheduler under pytest 9)."""
    from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

    class RunGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return run_group(nodeid.split("::", 1)[0])

    return RunGroupScheduling(config, log)


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
