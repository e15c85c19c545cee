{#- What a minion without a Redis role gets from `redis` and from every sub-state:
    nothing changes. When the deployment's pillar failed (a YAML the deployment cannot
    use), one failing state with the ext_pillar's message, so the Redis states stop
    before any Redis host changes while other formulas' states still run. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, deployment_error %}
{%- if deployment_error %}
redis-deployment-pillar-is-usable:
  test.configurable_test_state:
    - changes: False
    - result: False
    - allow_test_mode_failure: True  # a dry run must fail too, with this message
    - comment: {{ ("the Redis deployment's pillar failed: " ~ deployment_error) | json }}
{%- else %}
redis-nothing-to-do-on-this-minion:
  test.succeed_without_changes:
    - comment: "role {{ redis.role }} in my_multihead_cluster.yaml: no Redis server here"
{%- endif %}
