"""Notices in the embedded store's SQLite file (book.Notices).

    notices            one row per notice: what it says (and the LINE messages, as committed), who
                       sent it, its segment, and its progress: total, sent, failed, state
                       (sending | done)
    notice_chunks      one row per LINE request, pending until LINE took it (200, or 409: taken
                       before) or refused it
    notice_recipients  who is in each chunk, fixed when the notice is sent

Recipients are read from the subjects' states in a thread, on a connection of its own (a
consistent snapshot of the WAL file), so the event loop keeps serving webhooks meanwhile.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3

from agents import notices as nt
from agents import outbound as ob
from agents import readside as rs
from streams import codec
from streams.admin import accounts
from streams.embedded.store import Store
from streams.notices.book import COLUMNS, DONE, FAILED, SENDING, SENT, Work, segment_record
from streams.tenants.registry import AuditRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL,
                                    title TEXT NOT NULL, body TEXT NOT NULL, segment TEXT NOT NULL,
                                    messages TEXT NOT NULL, created_by TEXT NOT NULL,
                                    created_at INTEGER NOT NULL, total INTEGER NOT NULL,
                                    sent INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
                                    state TEXT NOT NULL DEFAULT 'sending', finished_at INTEGER) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notices_by_tenant ON notices (tenant, created_at);
CREATE TABLE IF NOT EXISTS notice_chunks (notice TEXT NOT NULL, chunk INTEGER NOT NULL, endpoint TEXT NOT NULL,
                                          size INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
                                          status INTEGER, PRIMARY KEY (notice, chunk)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notice_chunks_pending ON notice_chunks (notice, chunk) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS notice_recipients (notice TEXT NOT NULL, chunk INTEGER NOT NULL, recipient TEXT NOT NULL,
                                              PRIMARY KEY (notice, chunk, recipient)) WITHOUT ROWID;
"""


def install(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def recipients_in(db: sqlite3.Connection, tenant: str, segment: nt.Segment) -> tuple[list[str], list[str]]:
    """(user ids, group ids) the segment reaches now, from the subjects' committed states."""
    users, groups = [], []
    for subject, raw in db.execute("SELECT subject, state FROM states WHERE tenant = ?", (tenant,)):
        try:
            state = codec.state_from_obj(json.loads(raw))
        except (ValueError, KeyError, TypeError, IndexError):
            continue   # a state this code cannot read is no recipient (the read side skips it too)
        label = rs.safe_label(state)
        if nt.selects(segment, label):
            (groups if label.startswith(nt.GROUP + ":") else users).append(subject)
    return users, groups


class SqliteNotices:
    def __init__(self, store: Store):
        self.store = store
        self._messages: dict[str, list[dict]] = {}
        install(store.db)

    async def choose(self, tenant, segment):
        store = self.store
        if store.path in ("", ":memory:") or store.path.startswith("file:"):
            return recipients_in(store.db, tenant, segment)

        def read() -> tuple[list[str], list[str]]:
            db = sqlite3.connect(store.path)
            try:
                db.execute("BEGIN")   # one snapshot for the whole scan
                return recipients_in(db, tenant, segment)
            finally:
                db.close()
        return await asyncio.get_running_loop().run_in_executor(None, read)

    async def commit(self, tenant, notice_id, d, users, groups, created_by, at, audit: AuditRow | None = None):
        return self.commit_now(tenant, notice_id, d, users, groups, created_by, at, audit)

    def commit_now(self, tenant: str, notice_id: str, d: nt.Draft, users: list[str], groups: list[str],
                   created_by: str, at: int, audit: AuditRow | None = None) -> bool:
        plan = nt.chunks(users, groups)
        total = sum(len(c.recipients) for c in plan)
        db = self.store.db
        with self.store.transaction():
            added = db.execute(
                "INSERT OR IGNORE INTO notices (id, tenant, kind, title, body, segment, messages, created_by, "
                "created_at, total, state, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (notice_id, tenant, d.kind, d.title, d.body, _dump(segment_record(d)), _dump(nt.messages(d)),
                 created_by, at, total, SENDING if plan else DONE, None if plan else at))
            if added.rowcount == 0:
                return False
            db.executemany("INSERT INTO notice_chunks (notice, chunk, endpoint, size) VALUES (?, ?, ?, ?)",
                           [(notice_id, c.index, c.endpoint, len(c.recipients)) for c in plan])
            db.executemany("INSERT INTO notice_recipients VALUES (?, ?, ?)",
                           [(notice_id, c.index, to) for c in plan for to in c.recipients])
            if audit is not None:
                accounts.audit(db, tenant, audit.at, audit.login, audit.action, audit.target, audit.detail)
        return True

    async def get(self, tenant, notice_id):
        row = self.store.db.execute(f"SELECT {', '.join(COLUMNS)} FROM notices WHERE tenant = ? AND id = ?",
                                    (tenant, notice_id)).fetchone()
        return _row(row) if row else None

    async def recent(self, tenant, limit=30):
        rows = self.store.db.execute(f"SELECT {', '.join(COLUMNS)} FROM notices WHERE tenant = ? "
                                     f"ORDER BY created_at DESC, id LIMIT ?", (tenant, limit))
        return [_row(r) for r in rows]

    async def pending(self, tenant, limit):
        rows = self.store.db.execute(
            "SELECT c.notice, c.chunk, c.endpoint, c.size FROM notices n JOIN notice_chunks c "
            "ON c.notice = n.id AND c.state = 'pending' WHERE n.tenant = ? AND n.state = 'sending' "
            "ORDER BY n.created_at, n.id, c.chunk LIMIT ?", (tenant, limit))
        return [Work(*r) for r in rows]

    async def recipients(self, tenant, work):
        return [r for (r,) in self.store.db.execute(
            "SELECT r.recipient FROM notice_recipients r JOIN notices n ON n.id = r.notice AND n.tenant = ? "
            "WHERE r.notice = ? AND r.chunk = ? ORDER BY r.recipient", (tenant, work.notice, work.chunk))]

    async def messages(self, tenant, notice_id):
        messages = self._messages.get(notice_id)
        if messages is None:
            row = self.store.db.execute("SELECT messages FROM notices WHERE tenant = ? AND id = ?",
                                        (tenant, notice_id)).fetchone()
            messages = self._messages[notice_id] = json.loads(row[0])
        return messages

    async def claim(self, tenant, work, ttl_ms):
        return True   # one process serves the file: its one delivery loop per tenant

    async def finish(self, tenant, work, accepted, status, at):
        db = self.store.db
        with self.store.transaction():
            moved = db.execute("UPDATE notice_chunks SET state = ?, status = ? WHERE notice = ? AND chunk = ? "
                               "AND state = 'pending'", (SENT if accepted else FAILED, status, work.notice, work.chunk))
            if moved.rowcount == 0:
                return
            column = "sent" if accepted else "failed"
            db.execute(f"UPDATE notices SET {column} = {column} + ? WHERE id = ?", (work.size, work.notice))
            if accepted:
                _bill(db, tenant, work, at)
            left = db.execute("SELECT 1 FROM notice_chunks WHERE notice = ? AND state = 'pending' LIMIT 1",
                              (work.notice,)).fetchone()
            if left is None:
                db.execute("UPDATE notices SET state = ?, finished_at = ? WHERE id = ?", (DONE, at, work.notice))

    async def chunk_states(self, tenant, notice_id):
        return {state: n for state, n in self.store.db.execute(
            "SELECT c.state, COUNT(*) FROM notice_chunks c JOIN notices n ON n.id = c.notice "
            "WHERE n.tenant = ? AND c.notice = ? GROUP BY c.state", (tenant, notice_id))}


def _bill(db: sqlite3.Connection, tenant: str, work: Work, at: int) -> None:
    """The month's LINE quota on the overview (rs_usage): one message per person, a group its members."""
    n = work.size
    if work.endpoint == ob.PUSH:
        group = db.execute("SELECT recipient FROM notice_recipients WHERE notice = ? AND chunk = ?",
                           (work.notice, work.chunk)).fetchone()
        found = db.execute("SELECT roster FROM rs_groups WHERE tenant = ? AND grp = ?",
                           (tenant, group[0] if group else "")).fetchone()
        n = max(1, found[0]) if found else 1
    db.execute("INSERT INTO rs_usage VALUES (?, ?, ?) ON CONFLICT (tenant, month) DO UPDATE SET n = n + ?",
               (tenant, rs.month_of(at), n, n))


def _row(row) -> dict:
    out = dict(zip(COLUMNS, row))
    out["segment"] = json.loads(out["segment"])
    out["messages"] = json.loads(out["messages"])
    return out


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
