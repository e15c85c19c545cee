{#- Health checks on every Redis server and witness (see README, Monitoring):
    - /usr/local/bin/redis_health for Nagios/NRPE and cron, logging in as the read-only ACL
      user salt-monitor; its settings file is readable by root and the monitoring group only;
    - the check on Salt's scheduler (salt '*' schedule.list): redis_cluster.health every
      monitoring.health_interval_minutes, firing redis/health/<minion> when the status
      changes; 0 removes the job. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node, custom_states_usable,
                                       host_states_usable, modules_need_sync %}
{%- if redis_node or sentinel_node %}
{#- What the monitoring logins need, so that redis.health and redis.monitoring apply alone. #}
include:
{%-   if redis_node %}
  - {{ tplroot }}.service
{%-   endif %}
{%-   if sentinel_node %}
  - {{ tplroot }}.sentinel
{%-   endif %}
{%-   set monitoring = redis.get("monitoring") or {} %}
{%-   set group = monitoring.get("group", "redis-monitoring") %}
{%-   set libdir = redis.health_script_library %}

redis-monitoring-group-present:
  group.present:
    - name: {{ group }}
    - system: True

{%-   if custom_states_usable %}
{%-     if redis_node %}

redis-monitoring-login-on-this-server:
  redis_node.monitoring_user:
    - name: salt-monitor
    - require:
      - redis_node: redis-server-runs-the-managed-settings
{%-     endif %}
{%-     if sentinel_node %}

redis-monitoring-login-on-this-sentinel:
  redis_node.monitoring_user:
    - name: salt-monitor
    - sentinel: True
    - require:
      - redis_sentinel: redis-sentinel-monitors-the-master
{%-     endif %}

redis-health-script-settings-directory:
  file.directory:
    - name: {{ salt["file.dirname"](redis.health_script_settings) }}
    - user: root
    - group: {{ group }}
    - mode: "0750"
    - require:
      - group: redis-monitoring-group-present

{#- The login and the facts the script cannot ask the monitoring user for: written once that
    login exists, so never on a node whose apply was refused (a YAML whose shape no longer
    fits the running deployment changes nothing). #}
redis-health-script-settings:
  redis_node.monitoring_login_file:
    - name: {{ redis.health_script_settings }}
    - group: {{ group }}
    - save: {{ redis.save | json }}
    - require:
      - file: redis-health-script-settings-directory
{%-     if redis_node %}
      - redis_node: redis-monitoring-login-on-this-server
{%-     endif %}
{%-     if sentinel_node %}
      - redis_node: redis-monitoring-login-on-this-sentinel
{%-     endif %}

{#- That file holds pillar redis:monitoring: when it changed, so did the pillar the minion keeps
    in memory for its scheduled jobs (health checks, backup metrics), which state.apply
    renders afresh but never stores. #}
redis-minion-pillar-refreshed-for-scheduled-jobs:
  module.run:
    - saltutil.refresh_pillar:
      - wait: True
    - onchanges:
      - redis_node: redis-health-script-settings
{%-   endif %}

redis-health-script-python-client:
{%-   if host_states_usable %}
  redis_host.packages_installed:
{%-   else %}
  pkg.installed:
{%-   endif %}
    - pkgs: {{ redis.health_script_pkgs | json }}
{%-   if modules_need_sync and not opts.get("test") %}
    - require:
      - saltutil: redis-salt-states-synced
{%-   endif %}
    - require_in:
      - file: redis-health-script-installed

{#- The rules of redis_cluster.health, for the script (one copy of them: _utils). Copied from
    this minion's synced _utils when map.jinja found those the master's (same digests: no
    request to the master), else from the master. #}
{%-   for module in ("redis_health", "redis_replies", "redis_common") %}

redis-health-script-rules-{{ module }}:
  file.managed:
    - name: {{ libdir }}/{{ module }}.py
{%-     if modules_need_sync %}
    - source: salt://_utils/{{ module }}.py
{%-     else %}
    - source: {{ opts.extension_modules }}/utils/{{ module }}.py
{%-     endif %}
    - mode: "0644"
    - makedirs: True
    - require_in:
      - file: redis-health-script-installed
{%-   endfor %}

redis-health-script-installed:
  file.managed:
    - name: /usr/local/bin/redis_health
    - source: salt://{{ tplroot }}/files/redis_health
    - mode: "0755"
{%-   set minutes = monitoring.get("health_interval_minutes", 5) | int %}
{%-   if minutes > 0 %}

redis-health-checks-scheduled:
{%-     if host_states_usable %}
  redis_host.schedule_present:
{%-     else %}
  schedule.present:
{%-     endif %}
    - name: redis-health
    - function: redis_cluster.health
    - job_kwargs:
        fire_events: True
    - minutes: {{ minutes }}
    - maxrunning: 1
{%-     if modules_need_sync and not opts.get("test") %}
    - require:
      - saltutil: redis-salt-states-synced
{%-     endif %}
{%-   else %}

redis-health-checks-unscheduled:
  schedule.absent:
    - name: redis-health
{%-   endif %}
{#- The Prometheus exporter turned off (monitoring.sls runs it while it is on): stop what Salt
    configured and remove its files, rendered only where one is left (nothing on a no-op run). #}
{%-   if not monitoring.get("exporter", False) %}
{%-     if salt["file.file_exists"](redis.exporter_dropin) %}

redis-exporter-stopped:
  service.dead:
    - name: prometheus-redis-exporter
    - enable: False

redis-exporter-unit-restored:
  file.absent:
    - name: {{ redis.exporter_dropin }}
    - require:
      - service: redis-exporter-stopped
{%-     endif %}
{%-     for leftover in (redis.exporter_environment_file, redis.backup_metrics_file)
            if salt["file.file_exists"](leftover) %}

redis-exporter-leftover-removed-{{ loop.index }}:
  file.absent:
    - name: {{ leftover }}
{%-     endfor %}
{%-   endif %}
{%- else %}
include:
  - {{ tplroot }}.inactive
{%- endif %}
