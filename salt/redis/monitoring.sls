{#- Prometheus metrics (opt-in: cache.redis.monitoring.exporter: true; see README, Monitoring):
    - Debian's prometheus-redis-exporter on the node's address, port 9121, logging in as the
      read-only ACL user salt-monitor (its password in a root-only EnvironmentFile that systemd
      reads, never on a command line). It exports this node's Redis at /metrics (a witness:
      its Sentinel) and, on a Sentinel-mode Redis host, its Sentinel at
      /scrape?target=redis://127.0.0.1:<sentinel_port>.
    - prometheus-node-exporter, whose textfile directory receives the backup metrics
      (redis_backup_*) after each backup.
    Turned off, health.sls stops and disables the exporter Salt configured and removes its
    files (the packages stay): init.sls includes this file only while it is on. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node, custom_states_usable,
                                       host_states_usable, modules_need_sync %}
{#- redis_host's states run once a fresh minion has them (the sync states of redis.install). #}
{%- set after_sync = modules_need_sync and not opts.get("test") %}
{%- set exporter = (redis.get("monitoring") or {}).get("exporter", False) %}
{%- set dropin = redis.exporter_dropin %}
{%- set environment_file = redis.exporter_environment_file %}
{%- if (redis_node or sentinel_node) and exporter %}
include:
  - {{ tplroot }}.health

redis-exporter-packages-installed:
{%-   if host_states_usable %}
  redis_host.packages_installed:
{%-   else %}
  pkg.installed:
{%-   endif %}
    - pkgs:
      - prometheus-redis-exporter
      - prometheus-node-exporter
{%-   if after_sync %}
    - require:
      - saltutil: redis-salt-states-synced
{%-   endif %}

{%-   if custom_states_usable %}

{#- After the health script's login file, which is written once the logins exist here. #}
redis-exporter-login:
  redis_node.monitoring_login_file:
    - name: {{ environment_file }}
    - form: exporter_environment
    - mode: "0600"
    - require:
      - redis_node: redis-health-script-settings
{%-   endif %}

{#- The package's unit, pointed at this node (a witness: its Sentinel) and at our login. #}
redis-exporter-points-at-this-node:
  file.managed:
    - name: {{ dropin }}
    - makedirs: True
    - mode: "0644"
    - contents: |
        # Salt (salt/redis/monitoring.sls): the exporter for this node, as ACL user salt-monitor.
        [Service]
        EnvironmentFile=
        EnvironmentFile={{ environment_file }}
        ExecStart=
{%-   if redis.get("tls") %}
{#-     TLS: at the node's own address, which its certificate names (127.0.0.1 it does not). #}
        ExecStart=/usr/bin/prometheus-redis-exporter --redis.addr=rediss://{{ redis.bind_ip }}:{{ redis.port if redis_node else redis.sentinel_port }} --tls-ca-cert-file={{ redis.tls.ca_file }} --web.listen-address={{ redis.bind_ip }}:9121 --config-command=-
{%-   else %}
        ExecStart=/usr/bin/prometheus-redis-exporter --redis.addr=redis://127.0.0.1:{{ redis.port if redis_node else redis.sentinel_port }} --web.listen-address={{ redis.bind_ip }}:9121 --config-command=-
{%-   endif %}

redis-exporter-running:
{%-   if host_states_usable %}
  redis_host.service_running:
{%-   else %}
  service.running:
{%-   endif %}
    - name: prometheus-redis-exporter
    - enable: True
    - require:
      - id: redis-exporter-packages-installed
    - watch:
      - file: redis-exporter-points-at-this-node
{%-   if custom_states_usable %}
      - redis_node: redis-exporter-login
{%-   endif %}

{#- node-exporter as Debian runs it; its textfile collector reads our backup metrics. #}
redis-node-exporter-running:
{%-   if host_states_usable %}
  redis_host.service_running:
{%-   else %}
  service.running:
{%-   endif %}
    - name: prometheus-node-exporter
    - enable: True
    - require:
      - id: redis-exporter-packages-installed
{%- elif redis_node or sentinel_node %}
{#- Off: health.sls removes what an earlier "on" left. #}
include:
  - {{ tplroot }}.health
{%- else %}
include:
  - {{ tplroot }}.inactive
{%- endif %}
