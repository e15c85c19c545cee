{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, redis_settings, supervised_by_systemd,
                                       modules_need_sync, custom_states_usable %}
include:
  - {{ tplroot }}.install
  - {{ tplroot }}.shape
{%- if redis_node %}

{#- Owner and mode as the distribution's packages set them. The run directory is
    systemd's (RuntimeDirectory, recreated at every start) where systemd runs Redis.
    The backup directory is root's: root writes every backup, the redis group only reads
    (redis_backup's checkers and throwaway server run as redis); a tree an older version
    left the redis user's is taken over by the module itself, without following links. #}
{%- set directories = {
      "config": (redis.conf_dir, redis.group, "2770"),
      "data": (redis.data_dir, redis.group, "0750"),
      "log": (redis.log_dir, redis.log_group, "2750"),
      "backup": (redis.backup.dir, redis.group, "0750"),
    } %}
{%- if not supervised_by_systemd %}
{%-   do directories.update({"run": (redis.run_dir, redis.group, "0755")}) %}
{%- endif %}
{%- for purpose, (directory, dir_group, dir_mode) in directories | dictsort %}
redis-{{ purpose }}-directory:
  file.directory:
    - name: {{ directory }}
    - user: {{ "root" if purpose == "backup" else redis.user }}
    - group: {{ dir_group }}
    - mode: "{{ dir_mode }}"
    - makedirs: True
    - require:
      - id: redis-packages-installed
{%- endfor %}

{#- Salt's settings, in a file Redis never rewrites, in a directory only root writes.
    It holds the password: readable by the redis group only, never shown in a diff. #}
redis-salt-settings-directory:
  file.directory:
    - name: {{ redis.salt_config_dir }}
    - user: root
    - group: {{ redis.group }}
    - mode: "0750"
    - require:
      - id: redis-packages-installed

{%- if custom_states_usable %}

{#- Before the settings file changes: a formed deployment's server must accept the password
    or, during a two-phase rotation, the previous one. #}
redis-server-accepts-the-password:
  redis_node.password_accepted:
    - name: {{ redis.get("bind_ip", "127.0.0.1") }}:{{ redis.port }}
    - port: {{ redis.port }}
    - settings: {{ redis_settings | json }}
    - service: {{ redis.service }}
    - settings_file: {{ redis.salt_config_file }}
    - require:
      - redis_cluster: redis-deployment-shape-kept
{%- endif %}

redis-salt-settings-file:
  file.managed:
    - name: {{ redis.salt_config_file }}
    - source: salt://{{ tplroot }}/files/redis-salt.conf.jinja
    - template: jinja
    - context:
        config_file: {{ redis.config_file }}
        mode: {{ redis.mode }}
        role: {{ redis.role }}
        redis_settings: {{ redis_settings | json }}
    - user: root
    - group: {{ redis.group }}
    - mode: "0640"
    - show_changes: False
    - check_cmd: {{ redis.check_config_cmd }} {{ redis.server_binary }} {{ redis.cli }}
    - tmp_ext: .conf
    - require:
      - file: redis-salt-settings-directory
      - file: redis-config-checker-installed
{%- if custom_states_usable %}
      - redis_cluster: redis-deployment-shape-kept
      - redis_node: redis-server-accepts-the-password
{%- endif %}

{%- if custom_states_usable %}

redis-main-config-includes-salt-settings:
  redis_node.config_included:
    - name: {{ redis.config_file }}
    - include: {{ redis.salt_config_file }}
    - settings: {{ redis_settings | json }}
    - user: {{ redis.user }}
    - group: {{ redis.group }}
    - require:
      - file: redis-salt-settings-file
      - file: redis-config-directory
{%-   if modules_need_sync and not opts.get("test") %}
      - saltutil: redis-salt-utils-synced
      - saltutil: redis-salt-modules-synced
      - saltutil: redis-salt-states-synced
{%-   endif %}
{%- else %}

redis-salt-modules-present:
  test.configurable_test_state:
    - changes: False
    - result: False
    - allow_test_mode_failure: True  # a dry run must fail too, with this message
    - comment: >-
        this minion has never received the redis formula's custom modules, so a dry run
        cannot check the rest: run salt '*' saltutil.sync_all once (or a real state.apply
        redis), then the dry run
{%- endif %}
{%- endif %}
