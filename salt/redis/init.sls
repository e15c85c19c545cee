{#- The whole job on one minion: install, configure and run its Redis server.
    Minions without a Redis role in my_multihead_cluster.yaml are left untouched. #}
{%- from "redis/map.jinja" import redis, redis_node with context %}
{%- if redis_node %}
include:
  - redis.install
  - redis.config
  - redis.service
{%- else %}
redis-nothing-to-do-on-this-minion:
  test.succeed_without_changes:
    - comment: "role {{ redis.role }} in {{ redis.get('deployment_file', 'my_multihead_cluster.yaml') }}: no Redis server here"
{%- endif %}
