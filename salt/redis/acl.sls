{#- The applications' ACL users of my_multihead_cluster.yaml (cache.redis.acl.users) on this
    node's Redis server and, in Sentinel mode, its Sentinel: created, updated, removed (only
    those Salt created) and persisted; Redis checks every rule before anything changes. ACL
    users are not replicated, so every server and every Sentinel runs this. Without users in
    the YAML, nor any Salt created before, the states ask nothing of Redis. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis_node, sentinel_node, custom_states_usable %}
{%- if redis_node or sentinel_node %}
include:
{%-   if redis_node %}
  - {{ tplroot }}.service
{%-   endif %}
{%-   if sentinel_node %}
  - {{ tplroot }}.sentinel
{%-   endif %}
{%-   if custom_states_usable %}
{%-     if redis_node %}

redis-application-users-on-this-server:
  redis_acl_users.present:
    - require:
      - redis_node: redis-server-runs-the-managed-settings
{%-     endif %}
{%-     if sentinel_node %}

redis-application-users-on-this-sentinel:
  redis_acl_users.present:
    - sentinel: True
    - require:
      - redis_sentinel: redis-sentinel-monitors-the-master
{%-     endif %}
{%-   endif %}
{%- else %}
include:
  - {{ tplroot }}.inactive
{%- endif %}
