{%- from "redis/map.jinja" import redis with context %}
include:
  - redis.install

{%- for directory, dir_mode in [(redis.conf_dir, "2770"), (redis.data_dir, "0750"), (redis.log_dir, "2750"), (redis.run_dir, "0755"), (redis.backup.dir, "0750")] %}
redis-directory-{{ directory }}:
  file.directory:
    - name: {{ directory }}
    - user: {{ redis.user }}
    - group: {{ redis.group }}
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
    - user: {{ redis.user }}
    - group: {{ redis.group }}
    - require:
      - file: redis-salt-settings-file
{%- if not opts.get("test") %}
      - saltutil: redis-salt-modules-synced
      - saltutil: redis-salt-states-synced
{%- endif %}
