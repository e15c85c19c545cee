{#- The member-only firewall (opt-in: cache.redis.firewall: true; README, Firewall): an
    nftables table of Salt's own, `inet redis_salt`, accepts the Redis port, the cluster bus
    port (port + 10000, members only) and the Sentinel port from the deployment's hosts, the
    client networks (cache.redis.client_networks) and loopback, and drops them from anyone
    else. Other ports and other tables are never touched (Salt's 4505/4506, SSH). The table
    is one file loaded atomically (nft -f: delete and create in one transaction), by a
    oneshot unit at boot and live at each change. Turned off, the unit and the table go. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node, custom_states_usable,
                                       host_states_usable, modules_need_sync %}
{#- redis_host's states run once a fresh minion has them (the sync states of redis.install). #}
{%- set after_sync = modules_need_sync and not opts.get("test") %}
{%- set firewall = redis.get("firewall") or {} %}
{%- set rules_file = redis.firewall_rules_file %}
{%- set unit = redis.firewall_unit %}
{%- set unit_file = "/etc/systemd/system/" ~ unit ~ ".service" %}
{%- if (redis_node or sentinel_node) and firewall.get("enabled") %}
{%-   set member_ports = [redis.port] %}
{%-   set client_ports = [redis.port] %}
{#-   TLS with plain TCP kept during a migration: its port is a Redis port too. #}
{%-   set plain_port = (redis.get("tls") or {}).get("plain_port") %}
{%-   if plain_port %}
{%-     do member_ports.append(plain_port) %}
{%-     do client_ports.append(plain_port) %}
{%-   endif %}
{%-   if redis.mode == "cluster" %}
{%-     do member_ports.append(redis.port + 10000) %}
{%-   else %}
{%-     do member_ports.append(redis.sentinel_port) %}
{%-     do client_ports.append(redis.sentinel_port) %}
{%-   endif %}
{%-   set members = firewall.get("members", []) %}
{%-   set networks = firewall.get("client_networks", []) %}
{%-   set members4, members6, clients4, clients6 = [], [], [], [] %}
{%-   for address in members %}
{%-     do (members6 if ":" in address else members4).append(address) %}
{%-   endfor %}
{%-   for network in networks %}
{%-     do (clients6 if ":" in network else clients4).append(network) %}
{%-   endfor %}

{%-   if redis_node %}
include:
  - {{ tplroot }}.shape
{%-   endif %}

redis-firewall-package:
{%-   if host_states_usable %}
  redis_host.packages_installed:
{%-   else %}
  pkg.installed:
{%-   endif %}
    - name: nftables
{%-   if after_sync %}
    - require:
      - saltutil: redis-salt-states-synced
{%-   endif %}

redis-firewall-rules:
  file.managed:
    - name: {{ rules_file }}
    - user: root
    - group: root
    - mode: "0640"
    - makedirs: True
    - contents: |
        # Managed by Salt (redis.firewall). Loaded by {{ unit }}.service; edit the YAML instead.
        table inet redis_salt
        delete table inet redis_salt
        table inet redis_salt {
          set members_ipv4 {
            type ipv4_addr
{%-   if members4 %}
            elements = { {{ members4 | join(", ") }} }
{%-   endif %}
          }
          set members_ipv6 {
            type ipv6_addr
{%-   if members6 %}
            elements = { {{ members6 | join(", ") }} }
{%-   endif %}
          }
          set clients_ipv4 {
            type ipv4_addr
            flags interval
{%-   if clients4 %}
            elements = { {{ clients4 | join(", ") }} }
{%-   endif %}
          }
          set clients_ipv6 {
            type ipv6_addr
            flags interval
{%-   if clients6 %}
            elements = { {{ clients6 | join(", ") }} }
{%-   endif %}
          }
          chain input {
            type filter hook input priority filter; policy accept;
            tcp dport != { {{ member_ports | join(", ") }} } accept
            iif "lo" accept
            ip saddr @members_ipv4 accept
            ip6 saddr @members_ipv6 accept
            tcp dport { {{ client_ports | join(", ") }} } ip saddr @clients_ipv4 accept
            tcp dport { {{ client_ports | join(", ") }} } ip6 saddr @clients_ipv6 accept
            counter drop
          }
        }
    - check_cmd: /usr/sbin/nft --check -f
    - require:
      - id: redis-firewall-package
{%-   if redis_node and custom_states_usable %}
      - redis_cluster: redis-deployment-shape-kept
{%-   endif %}

redis-firewall-unit:
  file.managed:
    - name: {{ unit_file }}
    - user: root
    - group: root
    - mode: "0644"
    - contents: |
        # Managed by Salt (redis.firewall): the Redis ports open to the deployment only.
        [Unit]
        Description=Redis ports open to the deployment's hosts and client networks only
        Wants=network-pre.target
        Before=network-pre.target {{ redis.service }}.service {{ redis.sentinel_service }}.service
        After=nftables.service

        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/usr/sbin/nft -f {{ rules_file }}
        ExecReload=/usr/sbin/nft -f {{ rules_file }}
        ExecStop=/usr/sbin/nft delete table inet redis_salt

        [Install]
        WantedBy=multi-user.target

{#- reload: the file replaces the table in one transaction, never a moment without it. #}
redis-firewall-active:
{%-   if host_states_usable %}
  redis_host.service_running:
{%-   else %}
  service.running:
{%-   endif %}
    - name: {{ unit }}
    - enable: True
    - reload: True
    - watch:
      - file: redis-firewall-rules
      - file: redis-firewall-unit
{%-   if after_sync %}
    - require:
      - saltutil: redis-salt-states-synced
{%-   endif %}

{#- The table, also when something flushed the ruleset since (nft flush ruleset): listed
    once by redis_host (a cmd.run's `unless` cost 2 s a run). #}
redis-firewall-table-loaded:
{%-   if host_states_usable %}
  redis_host.nft_table_loaded:
    - name: inet redis_salt
    - rules_file: {{ rules_file }}
{%-   else %}
  cmd.run:
    - name: /usr/sbin/nft -f {{ rules_file }}
    - unless: /usr/sbin/nft list table inet redis_salt
{%-   endif %}
    - require:
      - id: redis-firewall-active
{%- elif salt["file.file_exists"](unit_file) or salt["file.file_exists"](rules_file) %}

{#- Turned off (or this host left the deployment): the unit, the file and the table go. #}
{%-   if redis_node %}
include:
  - {{ tplroot }}.shape
{%-   endif %}

redis-firewall-stopped:
{%-   if host_states_usable %}
  redis_host.service_dead:
{%-   else %}
  service.dead:
{%-   endif %}
    - name: {{ unit }}
    - enable: False
{%-   if (redis_node and custom_states_usable) or after_sync %}
    - require:
{%-     if redis_node and custom_states_usable %}
      - redis_cluster: redis-deployment-shape-kept
{%-     endif %}
{%-     if after_sync %}
      - saltutil: redis-salt-states-synced
{%-     endif %}
{%-   endif %}

redis-firewall-files-removed:
  file.absent:
    - names:
      - {{ unit_file }}
      - {{ rules_file }}
    - require:
      - id: redis-firewall-stopped

redis-firewall-table-removed:
{%-   if host_states_usable %}
  redis_host.nft_table_absent:
    - name: inet redis_salt
{%-   else %}
  cmd.run:
    - name: /usr/sbin/nft delete table inet redis_salt
    - onlyif: /usr/sbin/nft list table inet redis_salt
{%-   endif %}
    - require:
      - id: redis-firewall-stopped
{%- elif redis_node or sentinel_node %}

redis-firewall-off:
  test.succeed_without_changes:
    - comment: "cache.redis.firewall is false: Salt's table inet redis_salt is not on this host"
{%- else %}
include:
  - {{ tplroot }}.inactive
{%- endif %}
