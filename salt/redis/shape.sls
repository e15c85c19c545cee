{#- Before any file of the deployment changes (the firewall's rules, the TLS files, Salt's
    settings file): never turn a formed cluster into a Sentinel pair (or back), or move a
    formed cluster's port or dir.
    The states that change those files require this one (redis.firewall, redis.tls,
    redis.config). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, modules_need_sync, custom_states_usable %}
include:
  - {{ tplroot }}.install
{%- if redis_node and custom_states_usable %}

redis-deployment-shape-kept:
  redis_cluster.shape_kept:
    - name: {{ redis.mode }} deployment
    - mode: {{ redis.mode }}
    - port: {{ redis.port }}
    - dir: {{ redis.data_dir }}
    - settings_file: {{ redis.salt_config_file }}
    - require:
      - id: redis-packages-installed
{%-   if modules_need_sync and not opts.get("test") %}
      - saltutil: redis-salt-utils-synced
      - saltutil: redis-salt-modules-synced
      - saltutil: redis-salt-states-synced
{%-   endif %}
{%- endif %}
