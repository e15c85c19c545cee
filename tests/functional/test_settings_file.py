"""The settings file Salt writes (salt/redis/files/redis-salt.conf.jinja, rendered as
Salt renders it) is what each server build runs after a start: otherwise every restart
would lose a setting and the next state.apply would have to set it live again."""

import jinja2
from conftest import PASSWORD, ROOT, RedisServer, load_execution_module, load_node_module

TEMPLATE = ROOT / "salt" / "redis" / "files" / "redis-salt.conf.jinja"


def render(redis_settings):
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)), keep_trailing_newline=True)
    pillar = {"redis:password": PASSWORD}
    salt = {"pillar.get": lambda key, default="": pillar.get(key, default)}
    return environment.get_template(TEMPLATE.name).render(
        config_file="redis.conf", mode="cluster", role="cluster-node", redis_settings=redis_settings, salt=salt
    )


def test_a_started_server_runs_every_setting_of_the_file(server_build, tmp_path, no_password):
    server = RedisServer(tmp_path, server_build)
    settings = dict(server.settings, save="900 1 300 10 60 10000", **{"maxmemory-policy": "allkeys-lru"})
    server.salt_conf.write_text(render(settings))
    server.start()
    try:
        diff = load_node_module(load_execution_module(server.port).__pillar__).config_diff(
            dict(settings, requirepass=PASSWORD)
        )
    finally:
        server.stop()

    assert diff["reachable"] is True, diff["error"]
    assert {d: (diff["running"][d], str(settings[d])) for d in diff["differs"]} == {}
    no_password(diff)
