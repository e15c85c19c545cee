{#- TLS (cache.redis.tls): with issue: true, the host's key and certificate and the deployment
    CA's certificate, issued on the master (pillar redis:tls:issued), into a directory that
    the monitoring users may enter: the key readable by root and the redis group only, never
    shown in a diff.
    A renewed certificate reaches the running server without a restart (Redis reloads its
    TLS files on CONFIG SET); a Sentinel cannot reload, so redis.sentinel restarts it, one
    Sentinel at a time. With the YAML's own files, they must be there. A witness (Sentinel
    only) gets its own certificate too. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node, custom_states_usable %}
{%- set tls = redis.get("tls") or {} %}
{%- if (redis_node or sentinel_node) and tls %}
include:
  - {{ tplroot }}.install
  - {{ tplroot }}.shape

{%-   if tls.issue %}
{%-     set directory = tls.key_file.rsplit("/", 1)[0] %}

redis-tls-directory:
  file.directory:
    - name: {{ directory }}
    - user: root
    - group: root
    - mode: "0755"
    - makedirs: True
    - require:
      - id: redis-packages-installed

{%-     for purpose, path, mode in [("key", tls.key_file, "0640"), ("cert", tls.cert_file, "0644"),
                                   ("ca", tls.ca_file, "0644")] %}

redis-tls-{{ purpose }}-file:
  file.managed:
    - name: {{ path }}
    - contents_pillar: redis:tls:issued:{{ purpose }}
    - user: root
    - group: {{ redis.group }}
    - mode: "{{ mode }}"
    - show_changes: False
    - require:
      - file: redis-tls-directory
{%-       if redis_node and custom_states_usable %}
      - redis_cluster: redis-deployment-shape-kept
{%-       endif %}
{%-       if purpose != "key" %}
      - file: redis-tls-key-file
{%-       endif %}
{%-     endfor %}
{%-     if redis_node and custom_states_usable %}

redis-server-serves-the-renewed-certificate:
  redis_node.tls_reloaded:
    - name: {{ tls.cert_file }}
    - port: {{ redis.port }}
    - onchanges:
      - file: redis-tls-key-file
      - file: redis-tls-cert-file
      - file: redis-tls-ca-file
{%-     endif %}
{%-   else %}
{%-     for purpose, path in [("key", tls.key_file), ("cert", tls.cert_file), ("ca", tls.ca_file)] %}

redis-tls-{{ purpose }}-file:
  file.exists:
    - name: {{ path }}
{%-     endfor %}
{%-   endif %}
{%- elif redis_node or sentinel_node %}

redis-tls-off:
  test.succeed_without_changes:
    - comment: "cache.redis.tls is not set: the Redis ports speak plain TCP"
{%- else %}
include:
  - {{ tplroot }}.inactive
{%- endif %}
