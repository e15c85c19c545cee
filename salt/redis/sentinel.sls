{#- Sentinel mode: the Redis pair replicates from the live master (the initial master only
    on bare hosts; after a failover, whoever the Sentinels chose), and a Sentinel runs on
    each Redis host and each witness. Sentinel's file is written once; later changes go to
    the running Sentinels. Salt never moves the master back. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node, supervised_by_systemd,
                                       custom_states_usable, host_states_usable %}
include:
{%- if redis_node %}
  - {{ tplroot }}.service
{%- else %}
  - {{ tplroot }}.install
{%- endif %}
{%- if redis.get("tls") %}
  - {{ tplroot }}.tls
{%- endif %}
{%- if sentinel_node and custom_states_usable %}

{#- A host that replace_hosts retired (its server and Sentinel stopped) is refused while the
    YAML still lists it: neither is started again. #}
redis-sentinel-host-not-retired:
  redis_sentinel.not_retired:
    - name: {{ redis.master_name }}
{%-   if redis_node %}
    - require_in:
      - {{ "redis_host" if host_states_usable else "service" }}: redis-server-running
{%-   endif %}
{%-   if redis_node %}

{#- The ACL user the Sentinels log in as (its hex password survives Sentinel's own file rewrites). #}
redis-sentinel-login-on-this-server:
  redis_sentinel.sentinel_user:
    - name: salt-sentinel
    - require:
      - redis_node: redis-server-logins

redis-replication-follows-the-live-master:
  redis_sentinel.replicating:
    - name: {{ redis.master_name }}
    - require:
      - redis_sentinel: redis-sentinel-login-on-this-server
    - require_in:
      - redis_sentinel: redis-sentinel-monitors-the-master
{%-   endif %}
{#- A witness runs its Sentinel only, and leaves any redis-server on its host alone: that
    one is not ours (the witness does not even install the server package). #}

{#- Running first: after the first apply, monitored talks to the running Sentinel (on a
    bare host this starts the package's Sentinel, which monitored then takes over). #}
redis-sentinel-running:
  service.running:
    - name: {{ redis.sentinel_service }}
    - enable: True
    - require:
      - id: redis-packages-installed
      - redis_sentinel: redis-sentinel-host-not-retired
{%-   if redis_node %}
      {#- Never on a formed cluster whose YAML now says sentinel: shape_kept refuses that. #}
      - redis_cluster: redis-deployment-shape-kept
{%-   endif %}

{#- Before monitored talks to it: a Sentinel taken over must accept the password, or change
    it in one step under force_password_change. #}
redis-sentinel-accepts-the-password:
  redis_sentinel.password_accepted:
    - name: {{ redis.master_name }}
    - config_file: {{ redis.sentinel_config_file }}
    - require:
      - service: redis-sentinel-running

redis-sentinel-monitors-the-master:
  redis_sentinel.monitored:
    - name: {{ redis.master_name }}
    - config_file: {{ redis.sentinel_config_file }}
    - service: {{ redis.sentinel_service }}
    - daemonize: {{ not supervised_by_systemd }}
    - user: {{ redis.user }}
    - group: {{ redis.group }}
    - logfile: {{ redis.sentinel_logfile }}
    - dir: {{ redis.data_dir }}
    - pidfile: {{ redis.sentinel_pidfile }}
    - require:
      - service: redis-sentinel-running
      - redis_sentinel: redis-sentinel-accepts-the-password
{%-   if redis.get("tls") %}
      {#- A Sentinel taken over starts with its TLS files (redis.tls). #}
      - file: redis-tls-key-file
      - file: redis-tls-cert-file
      - file: redis-tls-ca-file

{#- A renewed certificate: Sentinel cannot reload it, so it is restarted, one Sentinel at a
    time, each only while the others hold a majority. #}
redis-sentinel-serves-the-renewed-certificate:
  redis_sentinel.serves_current_certificate:
    - name: {{ redis.master_name }}
    - service: {{ redis.sentinel_service }}
    - require:
      - redis_sentinel: redis-sentinel-monitors-the-master
    - require_in:
      - redis_sentinel: redis-sentinel-logins
{%-   endif %}

{#- After monitored (which writes a bare host's Sentinel file): the Sentinel's own logins. #}
redis-sentinel-logins:
  redis_sentinel.logins_converged:
    - name: {{ redis.master_name }}
    - require:
      - redis_sentinel: redis-sentinel-monitors-the-master
{%- endif %}
