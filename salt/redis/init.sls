{#- The whole job on one minion: install, configure and run its Redis server, form the
    cluster or the Sentinel pair, schedule backups and health checks, export metrics
    (opt-in); a witness runs a Sentinel (and its health check and exporter) only.
    Minions without a Redis role in my_multihead_cluster.yaml are left untouched. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node with context %}
{%- set exporter = (redis.get("monitoring") or {}).get("exporter", False) %}
include:
{%- if redis_node %}
  - {{ tplroot }}.install
  - {{ tplroot }}.sysctl
  - {{ tplroot }}.firewall
{%-   if redis.get("tls") %}
  - {{ tplroot }}.tls
{%-   endif %}
  - {{ tplroot }}.config
  - {{ tplroot }}.service
{%-   if redis.mode == "cluster" %}
  - {{ tplroot }}.cluster
{%-   elif redis.mode == "sentinel" %}
  - {{ tplroot }}.sentinel
{%-   endif %}
  - {{ tplroot }}.acl
  - {{ tplroot }}.backup
  - {{ tplroot }}.health
{%-   if exporter %}
  - {{ tplroot }}.monitoring
{%-   endif %}
{%- elif sentinel_node %}
  - {{ tplroot }}.firewall
{%-   if redis.get("tls") %}
  - {{ tplroot }}.tls
{%-   endif %}
  - {{ tplroot }}.sentinel
  - {{ tplroot }}.acl
  - {{ tplroot }}.health
{%-   if exporter %}
  - {{ tplroot }}.monitoring
{%-   endif %}
{%- else %}
  - {{ tplroot }}.inactive
{%- endif %}
