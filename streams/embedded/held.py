"""Held deliveries (streams/line/held.py) in the embedded store's file: one row per notice held.

    held_deliveries  tenant, key, release_at, to_user, effect_id, messages (JSON), cancelled

One sender loop per tenant in one process reads and writes them: no leases are needed.
"""
from __future__ import annotations

import json

from streams.embedded.store import Store
from streams.line.held import TOMBSTONE_MS, HeldItem

SCHEMA = """
CREATE TABLE IF NOT EXISTS held_deliveries (tenant TEXT NOT NULL, key TEXT NOT NULL, release_at INTEGER NOT NULL,
                                            to_user TEXT NOT NULL, effect_id TEXT NOT NULL, messages TEXT NOT NULL,
                                            cancelled INTEGER NOT NULL DEFAULT 0,
                                            PRIMARY KEY (tenant, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS held_deliveries_due ON held_deliveries (tenant, release_at);
"""


class SqliteHeld:
    def __init__(self, store: Store, tenant: str):
        self.store, self.db, self.tenant = store, store.db, tenant
        self.db.executescript(SCHEMA)

    async def hold(self, items):
        with self.store.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO held_deliveries (tenant, key, release_at, to_user, effect_id, messages) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(self.tenant, i.key, i.release_at, i.to, i.effect_id, json.dumps(i.messages, ensure_ascii=False))
                 for i in items])

    async def held(self, keys):
        found = set()
        for key in keys:
            if self.db.execute("SELECT 1 FROM held_deliveries WHERE tenant = ? AND key = ?",
                               (self.tenant, key)).fetchone():
                found.add(key)
        return found

    async def cancel(self, keys):
        with self.store.transaction():
            self.db.executemany("UPDATE held_deliveries SET cancelled = 1, release_at = release_at + ? "
                                "WHERE tenant = ? AND key = ? AND cancelled = 0",
                                [(TOMBSTONE_MS, self.tenant, key) for key in keys])

    async def due(self, now, limit=500):
        rows = self.db.execute("SELECT key, release_at, to_user, effect_id, messages, cancelled FROM held_deliveries "
                               "WHERE tenant = ? AND release_at <= ? ORDER BY release_at, key LIMIT ?",
                               (self.tenant, now, limit))
        return [HeldItem(key, release, to, effect_id, tuple(json.loads(messages)), bool(cancelled))
                for key, release, to, effect_id, messages, cancelled in rows]

    async def done(self, keys):
        with self.store.transaction():
            self.db.executemany("DELETE FROM held_deliveries WHERE tenant = ? AND key = ?",
                                [(self.tenant, key) for key in keys])
