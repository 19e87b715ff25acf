"""The admin screen as an aiohttp application, mounted under /admin (`anpi serve`, `anpi demo`,
and on the Kafka runtime `anpi admin serve`).

    /admin/                         → the login page of the only tenant (or a short note)
    /admin/{tenant}/login           GET form, POST credentials (public)
    /admin/{tenant}/settings        tenant settings (設定; administrators only: streams/admin/settings_pages.py)
    /admin/{tenant}/...             everything else: a session of that very tenant, and on POST its
                                    CSRF token (streams/admin/auth.py guards every route by default)

Two clocks: `now_ms` is the engine's (virtual and sped up in the demo): "today", "time since the
check" and the `at` of the events staff commit; `wall_ms` is real time: sessions and lockouts.

The pages read through four objects (streams/admin/backends.py, streams/tenants/registry.py,
streams/notices/book.py): the read side, the staff store, the tenant registry and the notices. `create_app` gives them the embedded store's
SQLite file; `create_kafka_app` gives them Redis (the read side `anpi readside` keeps, accounts and
sessions, the registry, the notices `anpi sender` delivers) and the inbound topic. `tenants` is the caller's mapping, read on every request: a runtime that
starts a new tenant adds it there.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import jinja2
from aiohttp import web

from streams import forwarded
from streams.admin import accounts, auth, pages, view
from streams.admin.backends import ReadSide, SqliteReadSide, SqliteStaff, Staff
from streams.admin.keys import CLOCK, NOTICES, PROFILES, READSIDE, REGISTRY, SETTINGS_CHANGED, STAFF, STORE, TEMPLATES, TENANTS, WALL
from streams.embedded.store import Store
from streams.notices.in_sqlite import SqliteNotices
from streams.residents.in_redis import RedisProfiles
from streams.residents.in_sqlite import SqliteProfiles
from streams.tenants.in_sqlite import SqliteRegistry


def create_app(store: Store, tenants: dict[str, str], now_ms: Callable[[], int],
               wall_ms: Callable[[], int] | None = None,
               on_settings: Callable[[str], None] | None = None) -> web.Application:
    """`tenants`: tenant id -> time zone, the tenants whose staff may log in here. `on_settings(tenant)`
    is called after the settings page (設定) has committed a change: the runtime reloads them."""
    accounts.install(store.db)
    app = _app(SqliteReadSide(store), SqliteStaff(store), SqliteRegistry(store), SqliteNotices(store), tenants,
               now_ms, wall_ms)
    app[STORE] = store
    app[PROFILES] = SqliteProfiles(store)
    app[SETTINGS_CHANGED] = on_settings or (lambda tenant: None)
    pages.add_routes(app.router)
    return app


def create_kafka_app(readside: ReadSide, staff: Staff, registry, notices, tenants: dict[str, str],
                     now_ms: Callable[[], int], wall_ms: Callable[[], int] | None = None) -> web.Application:
    """The admin screen of the Kafka runtime: backends.RedisReadSide, redis_accounts.RedisStaff,
    tenants.in_redis.RedisRegistry and notices.in_redis.RedisNotices."""
    app = _app(readside, staff, registry, notices, tenants, now_ms, wall_ms)
    app[PROFILES] = RedisProfiles(readside.redis)   # beside the read side, in the same Redis
    app[SETTINGS_CHANGED] = lambda tenant: None
    pages.add_routes(app.router)
    return app


def _app(readside, staff, registry, notices, tenants, now_ms, wall_ms) -> web.Application:
    app = web.Application(middlewares=[forwarded.middleware(), auth.headers, auth.guard], client_max_size=64 * 1024)
    app[READSIDE], app[STAFF], app[REGISTRY], app[NOTICES], app[CLOCK] = readside, staff, registry, notices, now_ms
    app[TENANTS] = tenants
    app[WALL] = wall_ms or (lambda: int(time.time() * 1000))
    app[TEMPLATES] = jinja2.Environment(loader=jinja2.PackageLoader("streams.admin", "templates"),
                                        autoescape=True, trim_blocks=True, lstrip_blocks=True)
    app[TEMPLATES].filters.update(view.FILTERS)
    return app
