"""The municipalities a deployment serves, as data: who they are, their LINE channel, settings and look.

    settings.py   TenantSettings: wording, zone, channel credentials; their checks (pure)
    look.py       Look: My Page's top image and terms; their checks (pure)
    registry.py   Registry, the one interface every process reads tenants through, and `running`:
                  the tenants as a process runs them (stored settings over the environment's seed)
    in_sqlite.py  SqliteRegistry: the embedded store's file (`anpi serve`, `anpi demo`)
    in_redis.py   RedisRegistry: the Kafka deployment's Redis (every Kafka process)
    from_env.py   the one-tenant environment of earlier deployments (ANPI_TENANT + the channel's)
    cli.py        `anpi tenant add | list`
"""
