{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, redis_settings, supervised_by_systemd,
                                       custom_states_usable, host_states_usable %}
include:
  - {{ tplroot }}.config
{%- if redis_node and custom_states_usable %}

{%- if redis.mode == "cluster" %}
{%-   set nodes_file = redis.data_dir ~ "/" ~ redis_settings["cluster-config-file"] %}

{#- A member whose nodes.conf is gone lost its data: never start it bare while its old
    self still serves slots (its replica would copy the empty node). At boot systemd asks
    the guard; here Salt waits for the replica to take over, then lets it start. #}
redis-cluster-guard-installed:
  file.managed:
    - name: {{ redis.cluster_guard_cmd }}
    - source: salt://{{ tplroot }}/files/redis-cluster-guard
    - mode: "0755"
    - makedirs: True
    {#- Not on a Sentinel pair whose YAML now says cluster: shape_kept refuses that switch. #}
    - require:
      - redis_cluster: redis-deployment-shape-kept
{%-   if supervised_by_systemd %}

redis-server-guarded-at-start:
  file.managed:
    - name: /etc/systemd/system/{{ redis.service }}.service.d/salt-cluster-guard.conf
    - makedirs: True
    - mode: "0644"
    - contents: |
        # Managed by Salt (redis formula): see {{ redis.cluster_guard_cmd }}.
        # `+`: run as root outside the unit's sandbox (NoExecPaths), reading two paths only.
        [Service]
        ExecStartPre=+{{ redis.cluster_guard_cmd }} {{ redis.cluster_member_marker }} {{ nodes_file }}
    - require:
      - file: redis-cluster-guard-installed

redis-server-guard-loaded:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: redis-server-guarded-at-start
{%-   endif %}

redis-cluster-predecessor-handed-over:
  redis_cluster.predecessor_handed_over:
    - name: {{ redis.get("bind_ip", "127.0.0.1") }}:{{ redis.port }}
    - marker: {{ redis.cluster_member_marker }}
    - nodes_file: {{ nodes_file }}
    - timeout: {{ redis.get("cluster_form_timeout_s", 120) }}
    - service: {{ redis.service }}
    - require:
      - redis_node: redis-main-config-includes-salt-settings
{%- endif %}

{#- A restore cut short (killed job, power cut) left a journal: finish it or put the old
    data back before Redis may start, so a node never starts empty. #}
redis-restore-recovered:
  redis_backup.restore_recovered:
    - name: {{ redis.data_dir }}
    - journal_dir: {{ redis.salt_config_dir }}
    - require:
      - redis_cluster: redis-deployment-shape-kept
      - file: redis-salt-settings-directory
    - require_in:
      - {{ "redis_host" if host_states_usable else "service" }}: redis-server-running
{%- if redis.mode == "cluster" %}
      - redis_cluster: redis-cluster-predecessor-handed-over
{%- endif %}

{#- No `watch` on the config files: a changed setting is applied live where Redis
    allows it and the server is restarted only for the rest (next state). Salt's
    service.running when one `systemctl show` finds the unit not active and enabled. #}
redis-server-running:
{%- if host_states_usable %}
  redis_host.service_running:
{%- else %}
  service.running:
{%- endif %}
    - name: {{ redis.service }}
    - enable: True
{%- if not supervised_by_systemd %}
    - init_delay: {{ redis.sysvinit_start_delay }}
{%- endif %}
    - require:
      - redis_node: redis-main-config-includes-salt-settings
{%- if redis.mode == "cluster" %}
      - redis_cluster: redis-cluster-predecessor-handed-over
{%-   if supervised_by_systemd %}
      - file: redis-server-guarded-at-start
{%-   endif %}
{%- endif %}

redis-server-runs-the-managed-settings:
  redis_node.settings_applied:
    - name: {{ redis.get("bind_ip", "127.0.0.1") }}:{{ redis.port }}
    - settings: {{ redis_settings | json }}
    - service: {{ redis.service }}
    - require:
      - id: redis-server-running

{#- Live, never a restart: default accepts the password (and, during a rotation, the previous
    one), replication logs in as its own user. #}
redis-server-logins:
  redis_node.logins_converged:
    - name: {{ redis.get("bind_ip", "127.0.0.1") }}:{{ redis.port }}
    - require:
      - redis_node: redis-server-runs-the-managed-settings

{%- if redis.mode == "cluster" %}

{#- Debian's redis-sentinel package starts a Sentinel; a Redis Cluster has no use for it. #}
redis-sentinel-not-running-in-cluster-mode:
{%-   if host_states_usable %}
  redis_host.service_dead:
{%-   else %}
  service.dead:
{%-   endif %}
    - name: {{ redis.sentinel_service }}
    - enable: False
    {#- Not on a Sentinel pair whose YAML now says cluster: shape_kept refuses that switch. #}
    - require:
      - redis_cluster: redis-deployment-shape-kept
{%- endif %}
{%- endif %}
