"""Loading the formula's Salt modules by file path, as the unit tests do (Salt's dunders are
then the test's to set)."""

import functools
import importlib.util
import inspect

from support.lab import ROOT


def load_file(name, path):
    """The Python file at ``path`` as a fresh module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The namespace the fake's modules are loaded under: Salt's loader packs a function only when its
# ``__module__`` is under its own (``salt.loaded``), i.e. defined in a loaded module, never one
# imported from the standard library or salt.utils.
LOADED_BASE = "utils_dunder"


def _salt_name(module, stem):
    """The name Salt's loader gives a ``_utils`` module (``salt.loader.lazy._process_virtual``):
    the file's stem without ``__virtual__``, else its ``__virtualname__`` or what ``__virtual__``
    returns; None when ``__virtual__`` refuses (Salt then loads none of its functions)."""
    virtual = getattr(module, "__virtual__", None)
    if not inspect.isfunction(virtual):
        return stem
    verdict = virtual()
    if isinstance(verdict, tuple):
        verdict = verdict[0]
    if not verdict:
        return None
    named = getattr(module, "__virtualname__", None)
    if isinstance(named, str) and named:
        return named
    return stem if verdict is True else verdict


def utils_dunder(stems=None):
    """``__utils__`` as Salt's loader gives it: ``{"redis_common.client": function, ...}`` for
    the public functions of ``_utils/*.py`` (or of the ``stems`` given), chosen by
    ``salt.loader.lazy.LazyLoader._load_module``'s rule: the names of ``__load__``, else
    ``__all__``, else ``dir()``, without a leading ``_``, that are plain functions (or
    ``functools.partial``) defined in a loaded module; never a class, an instance or a constant
    (a module asking ``__utils__`` for a class fails under real Salt with ``KeyError``)."""
    functions = {}
    paths = [ROOT / "_utils" / f"{stem}.py" for stem in stems] if stems else sorted((ROOT / "_utils").glob("*.py"))
    for path in paths:
        module = load_file(f"{LOADED_BASE}.{path.stem}", path)
        name = _salt_name(module, path.stem)
        if name is None:
            continue
        aliases = getattr(module, "__func_alias__", {})
        for attr in getattr(module, "__load__", getattr(module, "__all__", dir(module))):
            value = getattr(module, attr)
            if attr.startswith("_") or not (inspect.isfunction(value) or isinstance(value, functools.partial)):
                continue
            if not getattr(value, "__module__", "").startswith(LOADED_BASE):
                continue
            for module_name in (name, *getattr(module, "__virtual_aliases__", ())):
                functions.setdefault(f"{module_name}.{aliases.get(attr, attr)}", value)
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
