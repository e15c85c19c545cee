"""Every ``module.function`` an SLS file or map.jinja names exists: our own in _states,
_modules and _runners, Salt's in the installed Salt (a missing one fails only when an
operator runs that path, e.g. the last step of `redis.orchestrate`)."""

import ast
import re
from pathlib import Path

import pytest
import salt

ROOT = Path(__file__).resolve().parents[2]
SALT_ROOT = Path(salt.__file__).parent
TEMPLATES = sorted((ROOT / "salt" / "redis").glob("*.sls")) + sorted((ROOT / "salt" / "redis").glob("*.jinja"))

STATE_CALL = re.compile(r"^ {2}([A-Za-z0-9_]+)\.([A-Za-z0-9_]+):\s*$")
NAME_ARG = re.compile(r"^\s+- name: ([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\s*$")
MODULE_RUN_ARG = re.compile(r"^\s+- ([A-Za-z0-9_]+)\.([A-Za-z0-9_]+):")
JINJA_CALL = re.compile(r"""\bsalt\[["']([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)["']\]""")
RUNNER_CALL = re.compile(r"""saltutil\.runner(?:["']\])?\(["']([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)["']""")


def named_functions(path):
    """[(kind, module, function, line number)] named in one template; kind: state,
    execution or runner."""
    found, current = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        state = STATE_CALL.match(line)
        if state:
            current = ".".join(state.groups())
            found.append(("state", *state.groups(), number))
            continue
        name = NAME_ARG.match(line)
        if name and current == "salt.function":
            found.append(("execution", *name.groups(), number))
        if name and current == "salt.runner":
            found.append(("runner", *name.groups(), number))
        argument = MODULE_RUN_ARG.match(line)
        if argument and current == "module.run":
            found.append(("execution", *argument.groups(), number))
        found += [("execution", *m.groups(), number) for m in JINJA_CALL.finditer(line)]
        found += [("runner", *m.groups(), number) for m in RUNNER_CALL.finditer(line)]
    return found


def _public_functions(path):
    """``(virtual name, {public function names})`` of a loader module file."""
    tree = ast.parse(path.read_text())
    virtual = path.stem
    functions = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__virtualname__" for t in node.targets):
            if isinstance(node.value, ast.Constant):
                virtual = node.value.value
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            functions.add(node.name)
    return virtual, functions


def _index(*directories):
    index = {}
    for directory in directories:
        for path in sorted(directory.glob("*.py")):
            virtual, functions = _public_functions(path)
            index.setdefault(virtual, set()).update(functions)
    return index


DIRECTORIES = {
    "state": (ROOT / "_states", SALT_ROOT / "states"),
    "execution": (ROOT / "_modules", SALT_ROOT / "modules"),
    "runner": (ROOT / "_runners", SALT_ROOT / "runners"),
}


@pytest.fixture(scope="module")
def defined():
    return {kind: _index(*directories) for kind, directories in DIRECTORIES.items()}


def test_the_templates_name_functions_at_all():
    kinds = {kind for path in TEMPLATES for kind, *_ in named_functions(path)}
    assert kinds == {"state", "execution", "runner"}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_function_a_template_names_exists(path, defined):
    missing = [f"{path.name}:{number}: {kind} function {module}.{function}"
               for kind, module, function, number in named_functions(path)
               if function not in defined[kind].get(module, set())]
    assert not missing, "named but not defined:\n" + "\n".join(missing)
