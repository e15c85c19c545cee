{#- Cluster mode: the nodes become one Redis Cluster, once. The initial master forms it
    (waiting, bounded, for its peers); the others wait until they are in it. A healthy
    cluster is left alone, whatever roles Redis gave its nodes since. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, custom_states_usable %}
include:
  - {{ tplroot }}.service
{%- if redis_node and redis.mode == "cluster" and custom_states_usable %}

redis-cluster-formed:
  redis_cluster.formed:
    - name: {{ redis.get("master_name", "cluster") }}
    - timeout: {{ redis.get("cluster_form_timeout_s", 120) }}
    - marker: {{ redis.cluster_member_marker }}
    - require:
      - redis_node: redis-server-logins
{%- endif %}
