{#- The whole job on one minion: install, configure and run its Redis server.
    Minions without a Redis role in my_multihead_cluster.yaml are left untouched. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis_node with context %}
include:
{%- if redis_node %}
  - {{ tplroot }}.install
  - {{ tplroot }}.config
  - {{ tplroot }}.service
{%- else %}
  - {{ tplroot }}.inactive
{%- endif %}
