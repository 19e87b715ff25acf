"""The watcher's store in the embedded runtime's SQLite file (`anpi jma watch --db FILE`).

    jma_memory  (tenant, memory): each tenant's trigger.Memory, as JSON (Memory.to_obj)
    jma_seen    (id, at): the feed's entry ids already handled, the newest SEEN_KEEP by `at`

Tenants and their areas are the registry's (streams/tenants/in_sqlite.py); a roll-call goes into
the tenant's inbox as one row with no subject, as the admin screen's does, and the engine of
`anpi serve` (another process: the file is in WAL mode) applies it at its next step. A memory and
the audit rows of what it decided commit in one transaction.
"""
from __future__ import annotations

import json
from collections.abc import Iterable

from schemas.events import RollCall
from streams.admin import accounts
from streams.embedded.store import Store
from streams.jma.trigger import Memory
from streams.jma.watch import SEEN_KEEP, quake_tenants
from streams.tenants.in_sqlite import SqliteRegistry
from streams.tenants.registry import AuditRow
from streams.tenants.settings import QuakeConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS jma_memory (tenant TEXT PRIMARY KEY, memory TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jma_seen (id TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jma_seen_at ON jma_seen (at);
"""


class SqliteQuakeStore:
    def __init__(self, store: Store, keep: int = SEEN_KEEP):
        self.store, self.db, self.keep = store, store.db, keep
        self.registry = SqliteRegistry(store)   # its tables (and the audit log's) exist from here on
        self.db.executescript(SCHEMA)

    async def tenants(self) -> list[tuple[str, QuakeConfig]]:
        return await quake_tenants(self.registry)

    async def memory(self, tenant: str) -> Memory:
        row = self.db.execute("SELECT memory FROM jma_memory WHERE tenant = ?", (tenant,)).fetchone()
        return Memory.from_obj(json.loads(row[0])) if row else Memory()

    async def save(self, tenant: str, memory: Memory, audit: Iterable[AuditRow] = ()) -> None:
        with self.store.transaction():
            self.db.execute("INSERT OR REPLACE INTO jma_memory VALUES (?, ?)",
                            (tenant, json.dumps(memory.to_obj(), ensure_ascii=False, separators=(",", ":"))))
            for row in audit:
                accounts.audit(self.db, tenant, row.at, row.login, row.action, row.target, row.detail)

    async def seen(self) -> set[str]:
        return {entry for (entry,) in self.db.execute("SELECT id FROM jma_seen")}

    async def mark_seen(self, ids: Iterable[str], at: int) -> None:
        with self.store.transaction():
            self.db.executemany("INSERT INTO jma_seen VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET at = "
                                "MAX(at, excluded.at)", [(entry, at) for entry in ids])
            self.db.execute("DELETE FROM jma_seen WHERE id IN (SELECT id FROM jma_seen ORDER BY at DESC, id "
                            "LIMIT -1 OFFSET ?)", (self.keep,))

    async def start(self, tenant: str, rollcall: RollCall) -> None:
        self.store.accept(tenant, None, [("", rollcall)])   # committed when it returns
