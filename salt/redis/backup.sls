{#- Scheduled backups of this node: Salt scheduler jobs (salt '*' schedule.list) from
    pillar redis:backup:schedule; absent, the original document's plan; [], none. Set-level
    backups of the whole deployment run from the salt-master (salt-run redis_backup.run). #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, custom_states_usable %}
include:
  - {{ tplroot }}.config
{%- if redis_node and custom_states_usable %}

{#- Salt's scheduler reads cron expressions with croniter (Salt 3008 depends on it; a
    minion that lacks it gets it here, and the next state says to restart salt-minion). #}
{%- set croniter_found = [] %}
{%- for directory in grains.pythonpath if salt["file.directory_exists"](directory ~ "/croniter") %}
{%-   do croniter_found.append(directory) %}
{%- endfor %}
{%- if not croniter_found %}
redis-backup-cron-support-installed:
  pip.installed:
    - name: croniter
    - bin_env: {{ grains.pythonexecutable }}
    - reload_modules: True
    - require_in:
      - redis_backup: redis-backup-jobs-scheduled
{%- endif %}

redis-backup-jobs-scheduled:
  redis_backup.scheduled:
    - name: redis backups
    - require:
      - file: redis-backup-directory
{%- endif %}
