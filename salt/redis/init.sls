#!jinja|json
{#- The whole job on one minion: install, configure and run its Redis server, form the
    cluster or the Sentinel pair, schedule backups and health checks, export metrics
    (opt-in); a witness runs a Sentinel (and its health check and exporter) only.
    Minions without a Redis role in my_multihead_cluster.yaml are left untouched. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import redis, redis_node, sentinel_node %}
{%- set exporter = (redis.get("monitoring") or {}).get("exporter", False) %}
{%- set parts = [] %}
{%- if redis_node %}
{%-   do parts.extend(["install", "sysctl", "firewall"]) %}
{%-   if redis.get("tls") %}
{%-     do parts.append("tls") %}
{%-   endif %}
{%-   do parts.extend(["config", "service"]) %}
{%-   if redis.mode == "cluster" %}
{%-     do parts.append("cluster") %}
{%-   elif redis.mode == "sentinel" %}
{%-     do parts.append("sentinel") %}
{%-   endif %}
{%-   do parts.extend(["acl", "backup", "health"]) %}
{%-   if exporter %}
{%-     do parts.append("monitoring") %}
{%-   endif %}
{%- elif sentinel_node %}
{%-   do parts.append("firewall") %}
{%-   if redis.get("tls") %}
{%-     do parts.append("tls") %}
{%-   endif %}
{%-   do parts.extend(["sentinel", "acl", "health"]) %}
{%-   if exporter %}
{%-     do parts.append("monitoring") %}
{%-   endif %}
{%- else %}
{%-   do parts.append("inactive") %}
{%- endif %}
{#- The parts are rendered here, in this one Jinja environment, rather than listed under
    `include:` for Salt to render one by one: Salt gives every SLS file a Jinja environment
    of its own, so each part compiled map.jinja again (11 compilations, about half the
    render's CPU). Every SLS file imports map.jinja without context (it reads only what
    Salt gives every template: salt, grains, pillar, opts), so Jinja also runs it once
    here, not once per part. Salt's include is followed as Salt follows it: depth first, a
    part's own includes before its states (the same auto order), each part once, one that
    another SLS of the run already rendered skipped, and each rendered part recorded in
    `rendered_sls` (as Salt and its pydsl renderer do) so none is rendered twice. Every
    state keeps its part's name in `__sls__` (`require: - sls: redis.config`, `exclude`,
    `state.show_sls` see what they saw before) and in `__sls_included_from__` the parts
    that included it, nearest first. Applied alone, a part renders as ever. #}
{%- set done = rendered_sls if rendered_sls is defined else [] %}
{%- set high = {} %}
{%- set foreign_includes = [] %}
{%- macro render_part(part_sls, included_from) %}
{%-   set key = saltenv ~ ":" ~ part_sls %}
{%-   if key not in done %}
{%-     do done.append(key) if done is sequence else done.add(key) %}
{%-     set text %}{% include part_sls.replace(".", "/") ~ ".sls" %}{% endset %}
{%-     set data = text | load_yaml or {} %}
{%-     for include in data.pop("include", []) %}
{%-       if include is string and include.startswith(tplroot ~ ".") %}
{%-         do render_part(include, [part_sls] + included_from) %}
{%-       elif include not in foreign_includes %}
{%-         do foreign_includes.append(include) %}
{%-       endif %}
{%-     endfor %}
{%-     for id, body in data.items() %}
{%-       if id in high %}
{%-         do raise("Detected conflicting IDs: " ~ id ~ " in SLS " ~ part_sls ~ " and " ~ high[id].__sls__) %}
{%-       endif %}
{%-       do body.update({"__sls__": part_sls, "__sls_included_from__": included_from | list}) %}
{%-       do high.update({id: body}) %}
{%-     endfor %}
{%-   endif %}
{%- endmacro %}
{%- for part in parts %}
{%-   do render_part(tplroot ~ "." ~ part, [sls]) %}
{%- endfor %}
{%- if foreign_includes %}
{%-   do high.update({"include": foreign_includes}) %}
{%- endif %}
{{ high | json(sort_keys=False) }}
