"""The admin screen for municipal staff: accounts and sessions, the overview, the call queue.

    app.py       the aiohttp application (mounted under /admin by `anpi serve` and `anpi demo`)
    auth.py      login, logout and the guard every route passes (tenant, session, role, CSRF)
    accounts.py  accounts (argon2id), sessions, lockout and the audit log, in SQLite
    pages.py     the pages, reading the read side (streams/embedded/readside.py)
    chart.py     the 30-day chart's geometry (pure)
    view.py      templates to responses; times and durations in Japanese
    cli.py       `anpi admin create-user`
"""
