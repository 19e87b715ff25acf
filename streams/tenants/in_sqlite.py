"""The registry in the embedded store's SQLite file (`anpi serve`, `anpi demo`, `anpi tenant --db`).

    tenants          (id, name, created_at): who is served
    tenant_settings  (tenant, check_text, quotes (JSON list), timezone, channel_secret,
                     channel_access_token, secret_updated_at, token_updated_at, updated_at)
    tenant_look      (tenant, top_image BLOB, image_type, terms, updated_at)
    tenant_version   one row: moves on every change (another process, `anpi tenant add`, may write)

Calls are short and synchronous (as the rest of the store's), made inline by the coroutines;
`settings_now`, `look_now` and `save_now` are the same for synchronous callers.
"""
from __future__ import annotations

import json

from streams.admin import accounts
from streams.embedded.store import Store
from streams.tenants import look as looks
from streams.tenants import settings as ts
from streams.tenants.registry import AuditRow, Entry, Exists

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenant_settings (tenant TEXT PRIMARY KEY, check_text TEXT, quotes TEXT, timezone TEXT,
                                            channel_secret TEXT, channel_access_token TEXT,
                                            secret_updated_at INTEGER, token_updated_at INTEGER,
                                            updated_at INTEGER NOT NULL, staff_call_limit_hours INTEGER,
                                            forbid_long_intervals INTEGER, hook_url TEXT, hook_secret TEXT,
                                            hook_updated_at INTEGER, quake TEXT, retention_days INTEGER,
                                            privacy_notice TEXT)
                                            WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenant_look (tenant TEXT PRIMARY KEY, top_image BLOB, image_type TEXT, terms TEXT,
                                        updated_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenant_version (one INTEGER PRIMARY KEY CHECK (one = 1), n INTEGER NOT NULL);
INSERT OR IGNORE INTO tenant_version VALUES (1, 0);
"""
SETTINGS_COLUMNS = ("check_text", "quotes", "timezone", "channel_secret", "channel_access_token",
                    "secret_updated_at", "token_updated_at", "updated_at", "staff_call_limit_hours",
                    "forbid_long_intervals", "hook_url", "hook_secret", "hook_updated_at", "quake", "retention_days",
                    "privacy_notice")


class SqliteRegistry:
    def __init__(self, store: Store):
        self.store, self.db = store, store.db
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(tenant_settings)")}
        for added, kind in (("staff_call_limit_hours", "INTEGER"), ("forbid_long_intervals", "INTEGER"),
                            ("hook_url", "TEXT"), ("hook_secret", "TEXT"), ("hook_updated_at", "INTEGER"),
                            ("quake", "TEXT"), ("retention_days", "INTEGER"),
                            ("privacy_notice", "TEXT")):
            if added not in columns:   # an older file
                self.db.execute(f"ALTER TABLE tenant_settings ADD COLUMN {added} {kind}")
        accounts.install(self.db)

    async def entries(self) -> list[Entry]:
        return [Entry(*row) for row in self.db.execute("SELECT id, name, created_at FROM tenants ORDER BY id")]

    async def entry(self, tenant):
        row = self.db.execute("SELECT id, name, created_at FROM tenants WHERE id = ?", (tenant,)).fetchone()
        return Entry(*row) if row else None

    async def add(self, entry, settings):
        with self.store.transaction():
            added = self.db.execute("INSERT OR IGNORE INTO tenants VALUES (?, ?, ?)",
                                    (entry.id, entry.name, entry.created_at))
            if added.rowcount == 0:
                raise Exists(entry.id)
            if settings is not None and self.settings_now(entry.id) is None:  # kept: from before the registry
                self._put_settings(entry.id, settings)
            self._bump()

    async def settings(self, tenant):
        return self.settings_now(tenant)

    def settings_now(self, tenant: str) -> ts.TenantSettings | None:
        row = self.db.execute(f"SELECT {', '.join(SETTINGS_COLUMNS)} FROM tenant_settings WHERE tenant = ?",
                              (tenant,)).fetchone()
        if row is None:
            return None
        obj = dict(zip(SETTINGS_COLUMNS, row))
        obj["quotes"] = json.loads(obj["quotes"]) if obj["quotes"] else None
        return ts.from_obj(obj)

    async def look(self, tenant):
        return self.look_now(tenant)

    def look_now(self, tenant: str) -> looks.Look | None:
        row = self.db.execute("SELECT top_image, image_type, terms, updated_at FROM tenant_look WHERE tenant = ?",
                              (tenant,)).fetchone()
        return looks.Look(*row) if row else None

    async def save(self, tenant, audit: AuditRow | None, *, settings=None, look=None):
        self.save_now(tenant, audit, settings=settings, look=look)

    def save_now(self, tenant: str, audit: AuditRow | None, *, settings: ts.TenantSettings | None = None,
                 look: looks.Look | None = None) -> None:
        with self.store.transaction():
            if settings is not None:
                self._put_settings(tenant, settings)
            if look is not None:
                self.db.execute("INSERT OR REPLACE INTO tenant_look VALUES (?, ?, ?, ?, ?)",
                                (tenant, look.top_image, look.image_type, look.terms, look.updated_at))
            if audit is not None:
                accounts.audit(self.db, tenant, audit.at, audit.login, audit.action, audit.target, audit.detail)
            self._bump()

    async def version(self) -> int:
        return self.db.execute("SELECT n FROM tenant_version").fetchone()[0]

    def _put_settings(self, tenant: str, s: ts.TenantSettings) -> None:
        obj = {column: None for column in SETTINGS_COLUMNS} | ts.to_obj(s)
        obj["quotes"] = json.dumps(obj["quotes"], ensure_ascii=False) if obj["quotes"] else None
        self.db.execute(f"INSERT OR REPLACE INTO tenant_settings (tenant, {', '.join(SETTINGS_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * (1 + len(SETTINGS_COLUMNS)))})",
                        (tenant, *(obj[c] for c in SETTINGS_COLUMNS)))

    def _bump(self) -> None:
        self.db.execute("UPDATE tenant_version SET n = n + 1")
