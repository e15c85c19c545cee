"""Shared by every test layer."""

import salt._logging.impl as salt_logging


def pytest_configure(config):
    # Importing Salt installs a deferred stderr handler that buffers every log record
    # and replays them at interpreter exit into pytest's already-closed capture stream
    # (hundreds of "--- Logging error ---" tracebacks). pytest's log capture keeps the
    # records that matter, shown with failing tests.
    salt_logging.shutdown_temp_handler()
