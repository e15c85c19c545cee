{#- salt-run state.orchestrate redis.orchestrate

    The whole rollout in a controlled order, from the salt-master: every Redis node
    configured and running (on bare hosts one node at a time, replicas before masters),
    then the cluster or the Sentinel pair formed from the initial master alone, then
    `redis` on every node of the deployment (Sentinels, backups, joins), then the restarts
    a start-only setting left pending on a formed deployment, rolled one node at a time
    from the live roles with a failover before each master (redis_deployment.rolling_restart
    only_pending=True), then a check that every node is in the healthy deployment.
    The nodes come from my_multihead_cluster.yaml (runner redis_deployment.shape), each
    targeted as its real minion (`minion`: the accepted key that is the controller, e.g.
    server1.example.org for hostname server1), not as the YAML's `minion_id`. #}
{%- set shape = salt["saltutil.runner"]("redis_deployment.shape") %}
{%- set servers = shape.peers | map(attribute="minion") | list %}
{%- set replicas = shape.peers | selectattr("hostname", "in", shape.replica_of) | map(attribute="minion") | list %}
{%- set masters = servers | reject("in", replicas) | list %}
{%- set sentinels = shape.controllers | selectattr("hostname", "in", shape.sentinel.get("witnesses", []))
                                      | map(attribute="minion") | list %}
{%- set initial = shape.initial_master.minion %}
{#- A node without its minion (no accepted key, or an ambiguous one) would silently drop out
    of every target list: stop before anything changes, saying which and why. #}
{%- set unresolved = shape.controllers | selectattr("hostname", "in", shape.roles)
                                       | selectattr("minion_problem") | map(attribute="minion_problem") | list %}
{%- if unresolved %}

redis-every-node-has-its-minion:
  test.configurable_test_state:
    - changes: False
    - result: False
    - allow_test_mode_failure: True  # a dry run must fail too
    - comment: {{ ("nothing changed: " ~ unresolved | join("; ")) | json }}
{%- else %}

redis-nodes-configured:
  salt.state:
    - tgt: {{ (servers + sentinels) | json }}
    - tgt_type: list
    - sls:
      - redis.install
      - redis.config

{#- One node at a time: on bare hosts a start never takes two nodes down at once. On a formed
    deployment these steps restart nothing (settings_applied leaves a start-only change
    pending): the rolling restart below does that, from live roles. #}
{%- for group, minions in (("replicas", replicas), ("masters", masters)) if minions %}

redis-{{ group }}-running-one-at-a-time:
  salt.state:
    - tgt: {{ minions | json }}
    - tgt_type: list
    - sls:
      - redis.service
    - batch: 1
    - require:
      - salt: redis-nodes-configured
{%-   if group == "masters" and replicas %}
      - salt: redis-replicas-running-one-at-a-time
{%-   endif %}
{%- endfor %}

redis-deployment-formed-by-the-initial-master:
  salt.state:
    - tgt: {{ initial }}
    - sls:
      - redis
    - require:
      - salt: redis-masters-running-one-at-a-time

redis-every-node-applied:
  salt.state:
    - tgt: {{ (servers + sentinels) | json }}
    - tgt_type: list
    - sls:
      - redis
    - require:
      - salt: redis-deployment-formed-by-the-initial-master

{#- A master without a replica is restarted only when the operator accepts its downtime:
    salt-run state.orchestrate redis.orchestrate pillar='{"allow_downtime": true}' #}
redis-pending-restarts-rolled:
  salt.runner:
    - name: redis_deployment.rolling_restart
    - only_pending: True
    - allow_downtime: {{ salt["pillar.get"]("allow_downtime", False) | json }}
    - require:
      - salt: redis-every-node-applied

redis-deployment-verified:
  salt.function:
{%- if shape.mode == "cluster" %}
    - name: redis_cluster.wait_cluster_healthy
    - arg:
      - 60
{%- else %}
    - name: redis_sentinel.wait_replication_healthy
    - arg:
      - 60
{%- endif %}
    - tgt: {{ servers | json }}
    - tgt_type: list
    - require:
      - salt: redis-pending-restarts-rolled
{%- endif %}
