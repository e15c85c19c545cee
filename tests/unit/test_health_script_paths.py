"""/usr/local/bin/redis_health is a plain file (a template would be rendered at every apply):
its interpreter and paths must stay map.jinja's and the health module's."""

import re

import yaml
from support.lab import ROOT

SCRIPT = (ROOT / "salt" / "redis" / "files" / "redis_health").read_text()


def constant(name):
    return re.search(rf'^{name} = "(.*)"$', SCRIPT, flags=re.M).group(1)


def map_defaults():
    text = (ROOT / "salt" / "redis" / "map.jinja").read_text()
    block = text.split("{%- load_yaml as defaults %}", 1)[1].split("{%- endload %}", 1)[0]
    return yaml.safe_load(block)["redis"]


def test_the_script_uses_map_jinjas_interpreter_library_and_settings_file():
    defaults = map_defaults()

    assert SCRIPT.splitlines()[0] == f"#!{defaults['health_script_python']}"
    assert constant("LIBRARY") == defaults["health_script_library"]
    assert constant("SETTINGS_FILE") == defaults["health_script_settings"]


def test_the_script_reads_the_verdict_where_the_scheduled_check_publishes_it():
    module = (ROOT / "_modules" / "redis_cluster.py").read_text()

    assert f'HEALTH_LAST_CHECK = "{constant("LAST_SCHEDULED_CHECK")}"' in module
