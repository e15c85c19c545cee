{%- from "redis/map.jinja" import redis, redis_settings, supervised_by_systemd, modules_need_sync with context %}
include:
  - redis.install

{#- Owner and mode as the distribution's packages set them. The run directory is
    systemd's (RuntimeDirectory, recreated at every start) where systemd runs Redis. #}
{%- set directories = [(redis.conf_dir, redis.group, "2770"), (redis.data_dir, redis.group, "0750"),
                       (redis.log_dir, redis.log_group, "2750"), (redis.backup.dir, redis.group, "0750")] %}
{%- if not supervised_by_systemd %}
{%-   do directories.append((redis.run_dir, redis.group, "0755")) %}
{%- endif %}
{%- for directory, dir_group, dir_mode in directories %}
redis-directory-{{ directory }}:
  file.directory:
    - name: {{ directory }}
    - user: {{ redis.user }}
    - group: {{ dir_group }}
    - mode: "{{ dir_mode }}"
    - makedirs: True
    - require:
      - pkg: redis-packages-installed
{%- endfor %}

{#- Salt's settings, in a file Redis never rewrites. It holds the password: owner
    redis, not world-readable, and never shown in a diff. #}
redis-salt-settings-file:
  file.managed:
    - name: {{ redis.salt_config_file }}
    - source: salt://redis/files/redis-salt.conf.jinja
    - template: jinja
    - context:
        config_file: {{ redis.config_file }}
        mode: {{ redis.mode }}
        role: {{ redis.role }}
        redis_settings: {{ redis_settings | json }}
    - user: {{ redis.user }}
    - group: {{ redis.group }}
    - mode: "0640"
    - show_changes: False
    - check_cmd: {{ redis.check_config_cmd }}
    - tmp_ext: .conf
    - require:
      - file: redis-directory-{{ redis.conf_dir }}
      - file: redis-config-checker-installed

redis-main-config-includes-salt-settings:
  redis_cluster.config_included:
    - name: {{ redis.config_file }}
    - include: {{ redis.salt_config_file }}
    - settings: {{ redis_settings | json }}
    - user: {{ redis.user }}
    - group: {{ redis.group }}
    - require:
      - file: redis-salt-settings-file
{%- if modules_need_sync and not opts.get("test") %}
      - saltutil: redis-salt-modules-synced
      - saltutil: redis-salt-states-synced
{%- endif %}
