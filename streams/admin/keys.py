"""The admin application's shared objects (typed aiohttp app keys), in one place to avoid import cycles."""
from __future__ import annotations

from collections.abc import Callable

import jinja2
from aiohttp import web

from streams.embedded.store import Store

STORE = web.AppKey("store", Store)                    # the embedded store (absent on the Kafka runtime)
READSIDE = web.AppKey("readside", object)             # backends.ReadSide: SQLite or Redis
STAFF = web.AppKey("staff", object)                   # backends.Staff: accounts, sessions, audit
REGISTRY = web.AppKey("registry", object)             # tenants.registry.Registry: settings and look
NOTICES = web.AppKey("notices", object)               # notices.book.Notices: SQLite or Redis
PROFILES = web.AppKey("profiles", object)             # residents.book.Profiles: SQLite or Redis
TENANTS = web.AppKey("tenants", dict)                 # tenant id -> time zone (the runtime keeps it current)
CLOCK = web.AppKey("clock", Callable[[], int])        # the engine's time, ms
WALL = web.AppKey("wall", Callable[[], int])          # real time, ms: sessions and lockouts
TEMPLATES = web.AppKey("templates", jinja2.Environment)
SETTINGS_CHANGED = web.AppKey("settings_changed", Callable)  # (tenant id) after a commit (設定); may be async
SESSION = web.RequestKey("session", object)           # the logged-in staff member (accounts.Session)
FORM = web.RequestKey("form", object)                 # a POST's form, read (and CSRF-checked) by the guard
