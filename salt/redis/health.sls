{#- The health check on Salt's scheduler (salt '*' schedule.list): redis_cluster.health every
    monitoring.health_interval_minutes on each Redis server and witness, firing
    redis/health/<minion> when the status changes (see README, Monitoring); 0 removes the job. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node with context %}
{%- if redis_node or sentinel_node %}
{%-   set minutes = (redis.get("monitoring") or {}).get("health_interval_minutes", 5) | int %}
{%-   if minutes > 0 %}
redis-health-checks-scheduled:
  schedule.present:
    - name: redis-health
    - function: redis_cluster.health
    - job_kwargs:
        fire_events: True
    - minutes: {{ minutes }}
    - maxrunning: 1
{%-   else %}
redis-health-checks-unscheduled:
  schedule.absent:
    - name: redis-health
{%-   endif %}
{%- endif %}
