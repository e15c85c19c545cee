"""Shared by every test layer."""

import sys
from pathlib import Path

import pytest
import salt._logging.impl as salt_logging

TESTS = Path(__file__).resolve().parent
# tests/ for the test support package (`from support.lab import ...`), the repo for `lab`.
for _directory in (TESTS, TESTS.parent):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))
# Plain asserts in the support package report like the tests' own.
pytest.register_assert_rewrite("support")


def pytest_configure(config):
    # Importing Salt installs a deferred stderr handler that buffers every log record
    # and replays them at interpreter exit into pytest's already-closed capture stream
    # (hundreds of "--- Logging error ---" tracebacks). pytest's log capture keeps the
    # records that matter, shown with failing tests.
    salt_logging.shutdown_temp_handler()
