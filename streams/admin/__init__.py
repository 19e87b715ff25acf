"""The admin screen for municipal staff: accounts and sessions, the overview, the call queue.

    app.py       the aiohttp application (mounted under /admin by `anpi serve` and `anpi demo`)
    auth.py      login, logout and the guard every route passes (tenant, session, role, CSRF)
    accounts.py  accounts (argon2id), sessions, lockout and the audit log, in SQLite
    redis_accounts.py  the same in Redis (the Kafka runtime)
    backends.py  what the pages read and write through: the read side and the staff store, per runtime
    pages.py     the pages, reading the read side (SQLite: streams/embedded/readside.py; Redis:
                 streams/kafka/readside.py) through app[READSIDE]
    chart.py     the 30-day chart's geometry (pure)
    view.py      templates to responses; times and durations in Japanese
    cli.py       `anpi admin create-user` (SQLite, or Redis with --redis) and `anpi admin serve` (Kafka)
"""
