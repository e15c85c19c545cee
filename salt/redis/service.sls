{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, redis_settings, supervised_by_systemd,
                                       custom_states_usable with context %}
include:
  - {{ tplroot }}.config
{%- if redis_node and custom_states_usable %}

{#- No `watch` on the config files: a changed setting is applied live where Redis
    allows it and the server is restarted only for the rest (next state). #}
redis-server-running:
  service.running:
    - name: {{ redis.service }}
    - enable: True
{%- if not supervised_by_systemd %}
    - init_delay: {{ redis.sysvinit_start_delay }}
{%- endif %}
    - require:
      - redis_cluster: redis-main-config-includes-salt-settings

redis-server-runs-the-managed-settings:
  redis_cluster.settings_applied:
    - name: {{ redis.get("bind_ip", "127.0.0.1") }}:{{ redis.port }}
    - settings: {{ redis_settings | json }}
    - service: {{ redis.service }}
    - require:
      - service: redis-server-running

{%- if redis.mode == "cluster" %}

{#- Debian's redis-sentinel package starts a Sentinel; a Redis Cluster has no use for it. #}
redis-sentinel-not-running-in-cluster-mode:
  service.dead:
    - name: {{ redis.sentinel_service }}
    - enable: False
    {#- Not on a Sentinel pair whose YAML now says cluster: shape_kept refuses that switch. #}
    - require:
      - redis_cluster: redis-deployment-shape-kept
{%- endif %}
{%- endif %}
