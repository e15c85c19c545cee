# Overrides of the computed pillar `redis`, for example:
# redis:
#   maxclients: 20000
{}
