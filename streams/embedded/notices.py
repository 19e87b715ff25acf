"""Notices (お知らせ配信) in the embedded store: committed with their recipients, delivered in the background.

    notices            one row per notice: what it says (and the LINE messages, as committed), who
                       sent it, its segment, and its progress: total, sent, failed, state
                       (sending | done)
    notice_chunks      one row per LINE request: a multicast of ≤ 500 users or a push to one group;
                       pending until LINE accepted it (200, or 409: accepted before) or refused it
    notice_recipients  who is in each chunk, fixed when the notice is sent

The recipient list is fixed in the same transaction as the notice, so progress has a fixed
denominator and a restart resumes the same list. `NoticeDelivery` sends the pending chunks through
the tenant's Sender (its rate limiters and retry policy) with retry keys derived from the notice id
and the chunk index (agents/notices.retry_key), and commits each chunk's outcome with the notice's
counts: after a crash the chunks in flight go again with the same keys, LINE answers 409 to those
it had accepted, and nobody gets the notice twice.

Which subjects a segment reaches is read from their states, in a thread on a connection of its
own (a consistent snapshot of the WAL file) so the event loop keeps serving webhooks meanwhile.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable
from typing import NamedTuple

from agents import notices as nt
from agents import outbound as ob
from agents import readside as rs
from streams import codec
from streams.embedded.store import Store
from streams.sender import Report

log = logging.getLogger("anpi.notices")

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
SENDING, DONE = "sending", "done"
PENDING, SENT, FAILED = "pending", "sent", "failed"
COLUMNS = ("id", "tenant", "kind", "title", "body", "segment", "messages", "created_by", "created_at", "total",
           "sent", "failed", "state", "finished_at")


def install(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def new_id() -> str:
    """A notice id (also the draft's, so a form sent twice commits one notice): random, never reused."""
    return uuid.uuid4().hex


def valid_id(notice_id: str) -> bool:
    try:
        return uuid.UUID(hex=notice_id).hex == notice_id
    except (ValueError, TypeError, AttributeError):
        return False


# --- choosing the recipients --------------------------------------------------------------------------


def recipients(db: sqlite3.Connection, tenant: str, segment: nt.Segment) -> tuple[list[str], list[str]]:
    """(user ids, group ids) the segment reaches now, from the subjects' committed states."""
    users, groups = [], []
    for subject, raw in db.execute("SELECT subject, state FROM states WHERE tenant = ?", (tenant,)):
        try:
            state = codec.state_from_obj(json.loads(raw))
        except (ValueError, KeyError, TypeError, IndexError):
            continue   # a state this code cannot read is no recipient (the read side skips it too)
        if nt.selects(segment, rs.safe_label(state), getattr(state, "active", True)):
            (groups if hasattr(state, "roster") else users).append(subject)
    return users, groups


async def choose(store: Store, tenant: str, segment: nt.Segment) -> tuple[list[str], list[str]]:
    """`recipients` in a thread, on a read connection of its own (a snapshot), for a file store."""
    if store.path in ("", ":memory:") or store.path.startswith("file:"):
        return recipients(store.db, tenant, segment)

    def read() -> tuple[list[str], list[str]]:
        db = sqlite3.connect(store.path)
        try:
            db.execute("BEGIN")   # one snapshot for the whole scan
            return recipients(db, tenant, segment)
        finally:
            db.close()
    return await asyncio.get_running_loop().run_in_executor(None, read)


# --- committing a notice ------------------------------------------------------------------------------


def commit(store: Store, tenant: str, notice_id: str, d: nt.Draft, users: list[str], groups: list[str],
           created_by: str, at: int, also: Callable[[sqlite3.Connection], None] | None = None) -> bool:
    """The notice, its chunks and recipients in one transaction (with `also`: the audit row).
    False if this id was committed before (the same form sent twice): nothing is added."""
    plan = nt.chunks(users, groups)
    total = sum(len(c.recipients) for c in plan)
    db = store.db
    install(db)   # a file no admin screen or delivery loop has opened yet
    with store.transaction():
        added = db.execute(
            "INSERT OR IGNORE INTO notices (id, tenant, kind, title, body, segment, messages, created_by, created_at, "
            "total, state, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (notice_id, tenant, d.kind, d.title, d.body, _dump({**d.segment.to_obj(), "ok_button": d.ok_button}),
             _dump(nt.messages(d)), created_by, at, total, SENDING if plan else DONE, None if plan else at))
        if added.rowcount == 0:
            return False
        db.executemany("INSERT INTO notice_chunks (notice, chunk, endpoint, size) VALUES (?, ?, ?, ?)",
                       [(notice_id, c.index, c.endpoint, len(c.recipients)) for c in plan])
        db.executemany("INSERT INTO notice_recipients VALUES (?, ?, ?)",
                       [(notice_id, c.index, to) for c in plan for to in c.recipients])
        if also is not None:
            also(db)
    return True


# --- reading ------------------------------------------------------------------------------------------


def get(db: sqlite3.Connection, tenant: str, notice_id: str) -> dict | None:
    """One notice of this tenant (another tenant's id finds nothing)."""
    row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM notices WHERE tenant = ? AND id = ?",
                     (tenant, notice_id)).fetchone()
    return _row(row) if row else None


def recent(db: sqlite3.Connection, tenant: str, limit: int = 30) -> list[dict]:
    rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM notices WHERE tenant = ? ORDER BY created_at DESC, id "
                      f"LIMIT ?", (tenant, limit))
    return [_row(r) for r in rows]


def chunk_states(db: sqlite3.Connection, notice_id: str) -> dict[str, int]:
    return {state: n for state, n in db.execute("SELECT state, COUNT(*) FROM notice_chunks WHERE notice = ? "
                                                "GROUP BY state", (notice_id,))}


def _row(row) -> dict:
    out = dict(zip(COLUMNS, row))
    out["segment"] = json.loads(out["segment"])
    out["messages"] = json.loads(out["messages"])
    return out


# --- delivering ---------------------------------------------------------------------------------------


class Work(NamedTuple):
    notice: str
    chunk: int
    endpoint: str
    size: int


def pending(db: sqlite3.Connection, tenant: str, limit: int) -> list[Work]:
    """The tenant's chunks not yet handed to LINE, oldest notice first, in chunk order."""
    rows = db.execute("SELECT c.notice, c.chunk, c.endpoint, c.size FROM notices n JOIN notice_chunks c "
                      "ON c.notice = n.id AND c.state = 'pending' WHERE n.tenant = ? AND n.state = 'sending' "
                      "ORDER BY n.created_at, n.id, c.chunk LIMIT ?", (tenant, limit))
    return [Work(*r) for r in rows]


def finish_chunk(store: Store, tenant: str, work: Work, accepted: bool, status: int | None, at: int) -> None:
    """One chunk's outcome and the notice's counts, together; the notice is done with its last chunk.
    A chunk already finished (a second loop, say) changes nothing."""
    db = store.db
    with store.transaction():
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


class NoticeDelivery:
    """The background task of one tenant: pending chunks to LINE, a few at a time, each committed.

    `window` chunks are in flight at once (the Sender's limiter keeps to LINE's 200 multicasts a
    second); a chunk LINE did not take (no answer, 429 of the rate limit, 5xx: after the Sender's
    own retries) waits `retry_seconds` and goes again with the same key; one LINE refused (400,
    the month's quota spent) counts as failed. Cancel the task to stop it; a new one resumes the rest.
    """

    def __init__(self, store: Store, tenant: str, sender, now_ms: Callable[[], int], *, window: int = 8,
                 idle_seconds: float = 0.25, retry_seconds: float = 5.0):
        self.store, self.tenant, self.sender, self.now_ms = store, tenant, sender, now_ms
        self.window, self.idle_seconds, self.retry_seconds = window, idle_seconds, retry_seconds
        self._messages: dict[str, list[dict]] = {}
        install(store.db)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        flying: dict[tuple[str, int], asyncio.Task] = {}
        later: dict[tuple[str, int], float] = {}     # chunks LINE did not answer: not before then
        try:
            while True:
                if len(flying) < self.window:
                    now = loop.time()
                    for work in pending(self.store.db, self.tenant, self.window + len(flying) + len(later)):
                        key = (work.notice, work.chunk)
                        if key in flying or later.get(key, 0.0) > now or len(flying) >= self.window:
                            continue
                        later.pop(key, None)
                        flying[key] = asyncio.create_task(self._one(work), name=f"notice {work.notice}:{work.chunk}")
                if not flying:
                    await asyncio.sleep(self.idle_seconds)
                    continue
                done, _ = await asyncio.wait(flying.values(), timeout=self.idle_seconds,
                                             return_when=asyncio.FIRST_COMPLETED)
                for key, task in list(flying.items()):
                    if task in done:
                        del flying[key]
                        if not task.cancelled() and task.exception() is None and task.result() is False:
                            later[key] = loop.time() + self.retry_seconds
                        elif not task.cancelled() and task.exception() is not None:
                            log.error("tenant %s: notice chunk %s failed: %r", self.tenant, key, task.exception())
                            later[key] = loop.time() + self.retry_seconds
        finally:
            for task in flying.values():
                task.cancel()
            await asyncio.gather(*flying.values(), return_exceptions=True)

    async def _one(self, work: Work) -> bool:
        """Deliver one chunk; False if LINE never answered (try again later, same key)."""
        db = self.store.db
        to = [r for (r,) in db.execute("SELECT recipient FROM notice_recipients WHERE notice = ? AND chunk = ? "
                                       "ORDER BY recipient", (work.notice, work.chunk))]
        messages = self._messages.get(work.notice)
        if messages is None:
            row = db.execute("SELECT messages FROM notices WHERE id = ?", (work.notice,)).fetchone()
            messages = self._messages[work.notice] = json.loads(row[0])
        key = nt.retry_key(self.tenant, work.notice, work.chunk)
        report = Report()
        verdict, status = await self.sender.send_prepared(work.endpoint, to if work.endpoint == ob.MULTICAST else to[0],
                                                          messages, key, report)
        reason = report.failed[-1].reason if report.failed else ""
        if verdict == ob.GIVE_UP and ob.classify(status, reason) == ob.RETRY:
            # no answer, busy (429 of the rate limit) or a server error, after the Sender's own retries:
            # not a refusal, so the chunk waits and goes again with the same key
            log.warning("tenant %s: notice %s chunk %d: LINE did not take it (status %s); will try again (key %s)",
                        self.tenant, work.notice, work.chunk, status, key)
            return False
        if verdict == ob.GIVE_UP:
            log.warning("tenant %s: notice %s chunk %d refused by LINE (status %s)", self.tenant, work.notice,
                        work.chunk, status)
        finish_chunk(self.store, self.tenant, work, verdict in (ob.OK, ob.DUPLICATE), status, self.now_ms())
        return True


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
