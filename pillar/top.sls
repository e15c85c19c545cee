# Pillar `redis` is computed from my_multihead_cluster.yaml by the redis_deployment
# ext_pillar. Keys set here under `redis:` override the computed ones.
base:
  '*':
    - redis
