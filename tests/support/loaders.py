"""Loading the formula's Salt modules by file path, as the unit tests do (Salt's dunders are
then the test's to set)."""

import importlib.util

from support.lab import ROOT


def load_file(name, path):
    """The Python file at ``path`` as a fresh module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def utils_dunder(stems=None):
    """``__utils__`` as Salt's loader gives it: ``{"redis_common.client": function, ...}`` for
    the public functions of ``_utils/*.py`` (or of the ``stems`` given)."""
    functions = {}
    paths = [ROOT / "_utils" / f"{stem}.py" for stem in stems] if stems else sorted((ROOT / "_utils").glob("*.py"))
    for path in paths:
        module = load_file(f"utils_{path.stem}", path)
        name = getattr(module, "__virtualname__", path.stem)
        functions.update({f"{name}.{attr}": value for attr, value in vars(module).items()
                          if callable(value) and not attr.startswith("_")
                          and getattr(value, "__module__", None) == module.__name__})
    return functions


def load_runner(name):
    """``_runners/<name>.py`` as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"{name}_runner_under_test", ROOT / "_runners" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def controller(hostname, ip, redis=True, **extra):
    """One entry of the YAML's nodes.controllers."""
    return {"hostname": hostname, "ip_address": ip, "services": {"redis": redis}, **extra}
