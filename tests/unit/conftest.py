"""Fixtures shared by the unit tests of _pillar/redis_deployment.py."""

import logging

import pytest
from test_deployment import rd


@pytest.fixture
def module_log(monkeypatch, caplog):
    """Route the module's logger to caplog only.

    pytest-salt-factories (installed in the venv) buffers root-logger records in Salt's
    temporary handler and prints them at interpreter exit; keep ours out of it.
    """
    logger = logging.getLogger("unit-tests.redis_deployment")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(caplog.handler)
    monkeypatch.setattr(rd, "log", logger)
    yield caplog
    logger.removeHandler(caplog.handler)
