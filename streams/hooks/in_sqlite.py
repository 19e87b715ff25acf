"""The outgoing webhook's queue (streams/hooks/queue.py) in the embedded store's file."""
from __future__ import annotations

from streams.embedded.store import Store
from streams.hooks.queue import HookItem

SCHEMA = """
CREATE TABLE IF NOT EXISTS hook_outbox (tenant TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL,
                                        first_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                                        next_at INTEGER NOT NULL, PRIMARY KEY (tenant, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hook_outbox_due ON hook_outbox (tenant, next_at);
"""


class SqliteHooks:
    def __init__(self, store: Store, tenant: str):
        self.store, self.db, self.tenant = store, store.db, tenant
        self.db.executescript(SCHEMA)

    async def add(self, items):
        with self.store.transaction():
            self.db.executemany("INSERT OR IGNORE INTO hook_outbox (tenant, key, body, first_at, attempts, next_at) "
                                "VALUES (?, ?, ?, ?, ?, ?)",
                                [(self.tenant, i.key, i.body, i.first_at, i.attempts, i.next_at) for i in items])

    async def due(self, now, limit=100):
        rows = self.db.execute("SELECT key, body, first_at, attempts, next_at FROM hook_outbox WHERE tenant = ? AND "
                               "next_at <= ? ORDER BY next_at, key LIMIT ?", (self.tenant, now, limit))
        return [HookItem(*row) for row in rows]

    async def again(self, item, attempts, next_at):
        with self.store.transaction():
            self.db.execute("UPDATE hook_outbox SET attempts = ?, next_at = ? WHERE tenant = ? AND key = ?",
                            (attempts, next_at, self.tenant, item.key))

    async def done(self, keys):
        with self.store.transaction():
            self.db.executemany("DELETE FROM hook_outbox WHERE tenant = ? AND key = ?", [(self.tenant, k) for k in keys])
