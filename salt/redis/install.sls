{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node, modules_need_sync,
                                       host_states_usable %}
{%- if not (redis_node or sentinel_node) %}
include:
  - {{ tplroot }}.inactive
{%- else %}

{#- `state.apply redis` on a fresh minion, or after our modules changed on the master:
    bring our custom modules (_utils, _modules, _states, _beacons) before the states that use them.
    Skipped when every module is current (map.jinja compares digests: no master round
    trip), and under test=True, where Salt's sync states always answer "would run"; a
    minion that never had a real apply needs `saltutil.sync_all` before a dry run. #}
{%- if modules_need_sync and not opts.get("test") %}
redis-salt-utils-synced:
  saltutil.sync_utils:
    - refresh: False
    - reload_modules: True

redis-salt-modules-synced:
  saltutil.sync_modules:
    - refresh: False
    - reload_modules: True

redis-salt-states-synced:
  saltutil.sync_states:
    - refresh: False
    - reload_modules: True

redis-salt-beacons-synced:
  saltutil.sync_beacons:
    - refresh: False

redis-salt-grains-synced:
  saltutil.sync_grains:
    - refresh: False
{%- endif %}

{#- Checked in the package database for these packages only (redis_host: Salt's pkg.installed
    lists every package installed, a tenth of a second per apply), once our states are here. #}
redis-packages-installed:
{%- if host_states_usable %}
  redis_host.packages_installed:
{%- else %}
  pkg.installed:
{%- endif %}
    {#- A witness runs a Sentinel only: no redis-server package. #}
    - pkgs: {{ (redis.pkgs if redis_node else redis.sentinel_pkgs) | json }}
{%- if modules_need_sync and not opts.get("test") %}
    - require:
      - saltutil: redis-salt-states-synced
{%- endif %}

{#- Grain redis_servers (_grains/redis_servers.py) says which server version is installed; the
    salt-master learns it with the next pillar request (refresh_grains asks for pillar too) and
    gives every node its peers' versions (pillar redis:versions). Only after the packages
    changed (or our grain module arrived): a converged run changes nothing here. #}
redis-server-version-grain-refreshed:
  module.run:
    - saltutil.refresh_grains: []
    - onchanges:
      - redis-packages-installed
{%- if modules_need_sync and not opts.get("test") %}
      - redis-salt-grains-synced
{%- endif %}

{#- The packages' own helper for config checks: Salt runs it before any new
    configuration reaches the server. #}
redis-config-checker-installed:
  file.managed:
    - name: {{ redis.check_config_cmd }}
    - source: salt://{{ tplroot }}/files/redis-check-config
    - mode: "0755"
    - makedirs: True

{#- redis-py, for the redis_cluster modules (they load only when it imports). Looked up
    on the minion Python's path: asking the loader (`"redis_cluster.status" in salt`)
    would load every module and cost more than the rest of a no-op run. #}
{%- set redis_py_found = [] %}
{%- for directory in grains.pythonpath if salt["file.file_exists"](directory ~ "/redis/__init__.py") %}
{%-   do redis_py_found.append(directory) %}
{%- endfor %}
{%- if not redis_py_found %}
redis-python-client-installed:
  pip.installed:
    # Below 8: redis-py 8 imports the OpenTelemetry SDK (which Salt 3008 ships) on every
    # import, a tenth of a second of CPU in every Salt job that uses our modules.
    - name: "redis>=4.5,<8"
    - bin_env: {{ grains.pythonexecutable }}
    - unless: {{ grains.pythonexecutable }} -c "import redis"
    - reload_modules: True
{%- endif %}
{%- endif %}
