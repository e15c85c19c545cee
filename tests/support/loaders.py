"""Loading the formula's Salt modules by file path, as the unit tests do (Salt's dunders are
then the test's to set)."""

import importlib.util

from support.lab import ROOT


def load_runner(name):
    """``_runners/<name>.py`` as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"{name}_runner_under_test", ROOT / "_runners" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def controller(hostname, ip, redis=True, **extra):
    """One entry of the YAML's nodes.controllers."""
    return {"hostname": hostname, "ip_address": ip, "services": {"redis": redis}, **extra}
