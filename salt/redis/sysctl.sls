{#- The host baseline Redis asks for at start (its own warnings: overcommit, transparent huge
    pages, somaxconn; maxclients cut to what the open-file limit allows), each setting
    switchable in pillar (redis:baseline:<name>: false):
    - vm.overcommit_memory = 1: a fork for BGSAVE or an AOF rewrite must not fail;
    - transparent huge pages `never`, across reboots: a oneshot unit before the server;
    - net.core.somaxconn at least tcp-backlog (raised, never lowered);
    - the server unit's LimitNOFILE at least maxclients + 32 (a drop-in), from its next start.
    The first two are global to a machine: with host_baseline `report` (a shared machine,
    the lab) they are only reported. somaxconn belongs to the host's network namespace and
    is always applied. Settings persist in one file of ours under /etc/sysctl.d. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, supervised_by_systemd %}
{%- set switches = redis.baseline %}
{%- set report = redis.get("host_baseline", "apply") == "report" %}
{%- if redis_node %}

{%-   if switches.overcommit_memory %}
{%-     set overcommit = salt["sysctl.get"]("vm.overcommit_memory") | string %}
{%-     if report %}
redis-host-overcommit-memory-reported:
  test.configurable_test_state:
    - name: vm.overcommit_memory
    - changes: False
    - result: True
    - comment: "vm.overcommit_memory is {{ overcommit }}{{ '' if overcommit == '1' else ' (Redis wants 1: a fork for a background save may fail)' }}; not changed: host_baseline is report"
{%-     else %}
redis-host-overcommit-memory:
  sysctl.present:
    - name: vm.overcommit_memory
    - value: 1
    - config: {{ redis.baseline_sysctl_file }}
{%-     endif %}
{%-   endif %}

{%-   if switches.somaxconn %}
{%-     set somaxconn = salt["sysctl.get"]("net.core.somaxconn") | int %}
{%-     if somaxconn < redis.tcp_backlog %}
redis-host-somaxconn:
  sysctl.present:
    - name: net.core.somaxconn
    - value: {{ redis.tcp_backlog }}
    - config: {{ redis.baseline_sysctl_file }}
{%-     endif %}
{%-   endif %}

{%-   if switches.transparent_hugepages and supervised_by_systemd %}
{%-     set thp_file = "/sys/kernel/mm/transparent_hugepage/enabled" %}
{%-     set thp_text = salt["file.read"](thp_file) if salt["file.file_exists"](thp_file) else "" %}
{%-     set thp = (thp_text.split("[")[1].split("]")[0]) if "[" in thp_text else "unknown" %}
{%-     if report %}
redis-host-transparent-hugepages-reported:
  test.configurable_test_state:
    - name: transparent huge pages
    - changes: False
    - result: True
    - comment: "transparent huge pages: {{ thp }}{{ '' if thp == 'never' else ' (Redis wants never: latency and memory use of forks)' }}; not changed: host_baseline is report"
{%-     else %}
redis-host-transparent-hugepages-unit:
  file.managed:
    - name: /etc/systemd/system/{{ redis.baseline_thp_unit }}.service
    - user: root
    - group: root
    - mode: "0644"
    - contents: |
        # Managed by Salt (redis.sysctl): transparent huge pages off for Redis, at every boot.
        [Unit]
        Description=Transparent huge pages off for Redis
        DefaultDependencies=no
        After=sysinit.target local-fs.target
        Before={{ redis.service }}.service

        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/sh -c 'echo never > /sys/kernel/mm/transparent_hugepage/enabled && echo never > /sys/kernel/mm/transparent_hugepage/defrag'

        [Install]
        WantedBy=basic.target

redis-host-transparent-hugepages-off:
  service.running:
    - name: {{ redis.baseline_thp_unit }}
    - enable: True
    - watch:
      - file: redis-host-transparent-hugepages-unit
{%-     endif %}
{%-   endif %}

{%-   if switches.open_files and supervised_by_systemd and redis.maxclients + 32 > redis.unit_open_files %}
redis-server-open-files:
  file.managed:
    - name: {{ redis.open_files_dropin }}
    - user: root
    - group: root
    - mode: "0644"
    - makedirs: True
    - contents: |
        # Managed by Salt (redis.sysctl): maxclients {{ redis.maxclients }} needs {{ redis.maxclients + 32 }} open files.
        [Service]
        LimitNOFILE={{ redis.maxclients + 32 }}

redis-server-open-files-from-next-start:
  test.show_notification:
    - text: "{{ redis.service }} gets LimitNOFILE={{ redis.maxclients + 32 }} from its next start (a formed deployment: salt-run redis_deployment.rolling_restart)"
    - onchanges:
      - file: redis-server-open-files
{%-   elif salt["file.file_exists"](redis.open_files_dropin) %}

{#- No longer needed (maxclients lowered, or the switch off): the unit's own limit again. #}
redis-server-open-files:
  file.absent:
    - name: {{ redis.open_files_dropin }}
{%-   endif %}
{%- else %}
include:
  - {{ tplroot }}.inactive
{%- endif %}
