{%- from "redis/map.jinja" import redis with context %}

{#- `state.apply redis` on a fresh minion: bring our custom modules (_modules, _states)
    before the states that use them. Reports changes only when a module changed.
    Skipped under test=True, where Salt's sync states always answer "would run"; a
    minion that never had a real apply needs `saltutil.sync_all` before a dry run. #}
{%- if not opts.get("test") %}
redis-salt-modules-synced:
  saltutil.sync_modules:
    - refresh: False
    - reload_modules: True

redis-salt-states-synced:
  saltutil.sync_states:
    - refresh: False
    - reload_modules: True
{%- endif %}

redis-packages-installed:
  pkg.installed:
    - pkgs: {{ redis.pkgs | json }}

{#- The packages' own helper for config checks: Salt runs it before any new
    configuration reaches the server. #}
redis-config-checker-installed:
  file.managed:
    - name: {{ redis.check_config_cmd }}
    - source: salt://redis/files/redis-check-config
    - mode: "0755"
    - makedirs: True

{#- redis-py, for the redis_cluster modules (they load only when it imports). #}
{%- if "redis_cluster.status" not in salt %}
redis-python-client-installed:
  pip.installed:
    - name: redis
    - bin_env: {{ grains.pythonexecutable }}
    - unless: {{ grains.pythonexecutable }} -c "import redis"
    - reload_modules: True
{%- endif %}
