"""The embedded runtime's durable state: one SQLite file in WAL mode.

What the Kafka runtime keeps in topics lives here in tables, and the same rule holds: a step's new
states, its effects and the inbox position it reached commit in one transaction, so a restart
resumes exactly where the last commit left off and nothing is applied or emitted twice.

    inbox     events as ingress accepted them (committed before the webhook's 200), each with the
              reply token that came with it, if any; one carrying a phone number is deleted once applied
    states    one row per subject: the engine's state (streams/codec.py JSON)
    cursors   per tenant: the last inbox row applied, the last tick, the number of steps committed
    effects   every effect, once (by id), with the step that decided it; `sent` marks those the
              sender has handed to LINE; `reply` the token an answer may use (streams/step.py)
    audit     what ingress kept but the engine does not apply (joins, unknown events, …)
    webhooks  webhookEventIds already accepted (LINE may redeliver)
    replied   answers claimed by the sender (at most once: a reply has no retry key, see claim_replies)
    quarantine inbox rows (or a subject's tick) the engine could not decode or apply, with the
              reason, set aside in the step that passed them (streams/quarantine.py)
    resident_profiles  staff's profile of a resident, sealed (streams/residents/), deleted when they withdraw
    resident_pending   imported residents not yet linked to a LINE: their row (sealed), by their code's hash
    rs_*      the admin screen's read side, updated in each step's transaction
              (streams/embedded/readside.py); admin_* tables belong to streams/admin
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from schemas.effects import Effect
from streams import codec
from streams.embedded import readside
from streams.quarantine import Entry

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
                                  subject TEXT NOT NULL, event TEXT NOT NULL, reply TEXT);
CREATE TABLE IF NOT EXISTS states (tenant TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL,
                                   PRIMARY KEY (tenant, subject)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (tenant TEXT PRIMARY KEY, inbox INTEGER NOT NULL DEFAULT 0,
                                    tick INTEGER, step INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
                                    step INTEGER NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL,
                                    at INTEGER NOT NULL, effect TEXT NOT NULL,
                                    sent INTEGER NOT NULL DEFAULT 0, reply TEXT, UNIQUE (tenant, id));
CREATE INDEX IF NOT EXISTS effects_unsent ON effects (tenant, sent, step, seq);
-- effects that are never messages (staff_call, group_confirmed, …) stay unsent forever: the sender's
-- "earliest unsent step of these kinds" must not read them all on every call
CREATE INDEX IF NOT EXISTS effects_unsent_kind ON effects (tenant, sent, kind, step);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
                                  record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhooks (tenant TEXT NOT NULL, event_id TEXT NOT NULL,
                                     PRIMARY KEY (tenant, event_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replied (tenant TEXT NOT NULL, effect TEXT NOT NULL,
                                    PRIMARY KEY (tenant, effect)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS resident_profiles (tenant TEXT NOT NULL, member TEXT NOT NULL, profile TEXT NOT NULL,
                                              PRIMARY KEY (tenant, member)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS resident_pending (tenant TEXT NOT NULL, hash TEXT NOT NULL, row TEXT NOT NULL,
                                             created_at INTEGER NOT NULL, valid_until INTEGER NOT NULL,
                                             used_by TEXT, PRIMARY KEY (tenant, hash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
                                       subject TEXT NOT NULL, event TEXT NOT NULL, kind TEXT NOT NULL,
                                       reason TEXT NOT NULL, at INTEGER, retried INTEGER NOT NULL DEFAULT 0);
"""
# columns added since the first files: (table, column, type); a file without them gains them at open
ADDED = (("inbox", "reply", "TEXT"), ("effects", "reply", "TEXT"))
# tables no longer used: the latest reply token per member (now each event carries its own)
DROPPED = ("replies",)


@dataclass(frozen=True, slots=True)
class Pending:
    """An inbox row not yet applied: its event as stored (JSON text), decoded by the engine, and the
    reply token that came with it."""
    seq: int
    subject: str
    event: str
    reply: tuple[str, int] | None = None


def _owner_only(path: str) -> None:
    """The file holds residents' data and the channels' secrets: readable by its owner only (0600),
    made so before SQLite opens it (its -wal and -shm files take the file's mode)."""
    if path == ":memory:" or path.startswith("file:"):
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name) and os.stat(name).st_mode & 0o077:
            os.chmod(name, 0o600)


class Store:
    def __init__(self, path: str):
        self.path = path
        _owner_only(path)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of the process (what a restart needs);
        # only a power cut may take back the last commits, as with an unflushed disk.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()
        self.db.executescript(SCHEMA)
        if readside.install(self.db):  # a file from before the read side: count what it already holds
            with self._transaction():
                readside.rebuild(self.db)
        self._queued: list[tuple[Callable[[], object], asyncio.Future]] = []

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        """Bring a file of an earlier version to this one's tables (before SCHEMA, which only adds)."""
        for table, column, kind in ADDED:
            columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if columns and column not in columns:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        for table in DROPPED:
            self.db.execute(f"DROP TABLE IF EXISTS {table}")

    # --- ingress ---------------------------------------------------------------------------------

    def accept(self, tenant: str, event_id: str | None, events: Iterable[tuple], audit: Iterable[dict] = ()) -> bool:
        """Commit one webhook event's engine events at once — (subject, event), or (subject, event,
        reply token and its time) — ; False if seen before."""
        with self._transaction():
            if event_id is not None:
                seen = self.db.execute("INSERT OR IGNORE INTO webhooks VALUES (?, ?)", (tenant, event_id))
                if seen.rowcount == 0:
                    return False
            self._accept_rows(tenant, events, audit)
        return True

    def _accept_rows(self, tenant: str, events: Iterable[tuple], audit: Iterable[dict] = ()) -> None:
        rows = [(tenant, subject, _dump(codec.event_to_obj(e)), _dump(reply[0]) if reply and reply[0] else None)
                for subject, e, *reply in events]
        if rows:
            self.db.executemany("INSERT INTO inbox (tenant, subject, event, reply) VALUES (?, ?, ?, ?)", rows)
        rows = [(tenant, _dump(record)) for record in audit]
        if rows:
            self.db.executemany("INSERT INTO audit (tenant, record) VALUES (?, ?)", rows)

    def enqueue(self, tenant: str, events: Iterable[tuple[str, object]]) -> None:
        """Engine events into the inbox inside the caller's transaction (staff's Resolve commits with
        its audit row, through `grouped`)."""
        self._accept_rows(tenant, events)

    async def accept_grouped(self, tenant: str, events: Iterable[tuple], audit: Iterable[dict] = ()) -> None:
        """`accept` without a webhook id, group-committed (see `grouped`); returns once committed."""
        rows = (list(events), list(audit))
        await self.grouped(lambda: self._accept_rows(tenant, *rows))

    async def claim_webhook(self, tenant: str, event_id: str) -> bool:
        """Claim a webhookEventId, group-committed (see `grouped`); False if it was claimed before."""
        return await self.grouped(
            lambda: self.db.execute("INSERT OR IGNORE INTO webhooks VALUES (?, ?)", (tenant, event_id)).rowcount == 1)

    async def grouped(self, write: Callable[[], object]):
        """Run `write` (statements on `db`, no transaction of its own) in one transaction with the writes
        other coroutines queue in the same turn of the event loop; its result once that has committed.

        Group commit for the ingress: a commit per webhook costs more than the webhook's own rows.
        Every caller still returns only after its rows are committed; each write runs under its own
        savepoint, so one that raises gets its exception and the others still commit. A caller
        cancelled before the group runs is left out of it.
        """
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._queued.append((write, done))
        if len(self._queued) == 1:
            loop.call_soon(self._commit_group)
        return await done

    def _commit_group(self) -> None:
        queued, self._queued = [(w, f) for w, f in self._queued if not f.done()], []
        if not queued:
            return
        outcomes: list[tuple[bool, object]] = []
        try:
            with self._transaction():
                for write, _ in queued:
                    self.db.execute("SAVEPOINT w")
                    try:
                        outcomes.append((True, write()))
                    except Exception as error:
                        self.db.execute("ROLLBACK TO w")
                        outcomes.append((False, error))
                    self.db.execute("RELEASE w")
        except Exception as error:  # the commit itself failed: nothing of the group is stored
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            outcomes = [(False, error)] * len(queued)
        for (_, done), (ok, value) in zip(queued, outcomes):
            if not done.done():
                done.set_result(value) if ok else done.set_exception(value)

    def forget_webhook(self, tenant: str, event_id: str) -> None:
        """Release a claim whose events were not stored, so LINE's redelivery is taken."""
        self.db.execute("DELETE FROM webhooks WHERE tenant = ? AND event_id = ?", (tenant, event_id))

    def reply_tokens(self, tenant: str, effect_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """The reply tokens the step gave these effects (streams/step.py). A token lives a minute."""
        ids = list(effect_ids)
        out: dict[str, tuple[str, int]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for effect_id, raw in self.db.execute(
                    f"SELECT id, reply FROM effects WHERE tenant = ? AND reply IS NOT NULL AND id IN "
                    f"({','.join('?' * len(chunk))})", (tenant, *chunk)):
                token, at = json.loads(raw)
                out[effect_id] = (token, at)
        return out

    def claim_replies(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        """Those of these answers claimed now, never again: a reply has no retry key, so after a crash
        LINE could not tell a repeat, and a spent token would fall back to a push: the person would
        get it twice. A claimed answer is never sent again (at most once: a free thank-you, a
        question they can ask again). Committed before it returns."""
        won: set[str] = set()
        with self._transaction():
            for effect_id in effect_ids:
                if self.db.execute("INSERT OR IGNORE INTO replied VALUES (?, ?)", (tenant, effect_id)).rowcount:
                    won.add(effect_id)
        return won

    # --- engine ----------------------------------------------------------------------------------

    def states(self, tenant: str) -> Iterator[tuple[str, object]]:
        for subject, raw in self.db.execute("SELECT subject, state FROM states WHERE tenant = ?", (tenant,)):
            yield subject, codec.state_from_obj(json.loads(raw))

    def cursor(self, tenant: str) -> tuple[int, int | None]:
        row = self.db.execute("SELECT inbox, tick FROM cursors WHERE tenant = ?", (tenant,)).fetchone()
        return (row[0], row[1]) if row else (0, None)

    def pending(self, tenant: str, after: int, limit: int = 1000) -> list[Pending]:
        rows = self.db.execute("SELECT seq, subject, event, reply FROM inbox WHERE tenant = ? AND seq > ? "
                               "ORDER BY seq LIMIT ?", (tenant, after, limit)).fetchall()
        return [Pending(seq, subject, raw, tuple(json.loads(reply)) if reply else None)
                for seq, subject, raw, reply in rows]

    def commit_step(self, tenant: str, inbox: int, tick: int | None, states: dict[str, object],
                    effects: list[Effect], quarantined: Iterable[tuple[str, str, str, str]] = (),
                    at: int | None = None, replies: dict[str, tuple[str, int]] | None = None) -> None:
        """A step's states, effects (with the reply tokens their answers may use) and position, all or
        nothing; with the rows it set aside (subject, event as stored, kind, reason) at engine time `at`."""
        replies = replies or {}
        with self._transaction():
            self.db.executemany("INSERT INTO quarantine (tenant, subject, event, kind, reason, at) VALUES "
                                "(?, ?, ?, ?, ?, ?)", [(tenant, *q, at) for q in quarantined])
            before = self.db.execute("SELECT step, inbox FROM cursors WHERE tenant = ?", (tenant,)).fetchone()
            step, applied_before = (before[0] + 1, before[1]) if before else (1, 0)
            old_phones: dict[str, str | None] = {}
            old_labels = readside.old_labels(self.db, tenant, states, old_phones)  # before the new states overwrite them
            self.db.executemany("INSERT OR REPLACE INTO states VALUES (?, ?, ?)",
                                [(tenant, subject, _dump(codec.state_to_obj(s))) for subject, s in states.items()
                                 if s is not None])
            self.db.executemany("INSERT OR IGNORE INTO effects (tenant, step, id, kind, at, effect, reply) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [(tenant, step, e.id, e.effect, e.at, _dump(codec.effect_to_obj(e)),
                                  _dump(list(replies[e.id])) if e.id in replies else None) for e in effects])
            if effects:  # count only the effects this step inserted: a replayed id was counted before
                new = {i for (i,) in self.db.execute("SELECT id FROM effects WHERE tenant = ? AND sent = 0 AND step = ?",
                                                     (tenant, step))}
                once: set[str] = set()
                effects = [e for e in effects if e.id in new and not (e.id in once or once.add(e.id))]
            readside.apply_step(self.db, tenant, old_labels, states, effects, old_phones)
            self._forget(tenant, [subject for subject, s in states.items() if s is None], inbox)
            self.db.execute("INSERT INTO cursors (tenant, inbox, tick, step) VALUES (?, ?, ?, ?) ON CONFLICT (tenant) "
                            "DO UPDATE SET inbox = excluded.inbox, tick = excluded.tick, step = excluded.step",
                            (tenant, inbox, tick, step))
            # once applied, the inbox keeps no phone number: the state holds it now (the engine reads
            # only the rows after its cursor, and a restart resumes from this commit)
            self.db.execute("DELETE FROM inbox WHERE tenant = ? AND seq > ? AND seq <= ? AND CASE WHEN json_valid(event) "
                            "THEN json_extract(event, '$.type') = 'phone' OR json_extract(event, '$.settings.phone') "
                            "IS NOT NULL ELSE 0 END", (tenant, applied_before, inbox))

    PRUNE_BATCH = 5_000

    def prune(self, tenant: str, before: int) -> dict[str, int]:
        """Retention: the tenant's inbox rows (applied) and effect rows (that the sender will not read
        again) stamped before `before` are deleted; the read side's counts keep what they counted.
        Rows are looked at from the oldest on, a batch at a time, and the look stops at the first
        batch that is not all old: each call costs what it deletes, not the size of the file."""
        from agents.routes import OUTBOX
        outbox = OUTBOX
        applied = self.db.execute("SELECT inbox FROM cursors WHERE tenant = ?", (tenant,)).fetchone()
        applied = applied[0] if applied else 0
        done = {"inbox": 0, "effects": 0}
        for table, gone in (("inbox", lambda seq, at, kind, sent: seq <= applied and at < before),
                            ("effects", lambda seq, at, kind, sent: at < before and (sent or kind not in outbox))):
            columns = ("seq, CASE WHEN json_valid(event) THEN json_extract(event, '$.at') END, '', 0"  # a poison row:
                       if table == "inbox" else "seq, at, kind, sent")                                      # no time, kept
            after = 0
            while True:
                rows = self.db.execute(f"SELECT {columns} FROM {table} WHERE tenant = ? AND seq > ? ORDER BY seq "
                                       f"LIMIT ?", (tenant, after, self.PRUNE_BATCH)).fetchall()
                old = [(seq,) for seq, at, kind, sent in rows if at is not None and gone(seq, at, kind, sent)]
                if old:
                    with self._transaction():
                        self.db.executemany(f"DELETE FROM {table} WHERE seq = ?", old)
                    done[table] += len(old)
                if len(old) < len(rows) or len(rows) < self.PRUNE_BATCH:
                    break
                after = rows[-1][0]
        return done

    def _forget(self, tenant: str, subjects: list[str], applied: int) -> None:
        """Withdrawn residents (a state of None): their state, the inbox rows applied, and the effects
        the sender will never read again (sent, or kinds that are not messages) are deleted. What is
        still to be sent (their goodbye) goes as it is: deleting a row of a step the sender has begun
        would change its batches, and the retry keys with them."""
        from agents.routes import OUTBOX
        kinds = sorted(OUTBOX)
        for subject in subjects:
            self.db.execute("DELETE FROM states WHERE tenant = ? AND subject = ?", (tenant, subject))
            self.db.execute("DELETE FROM inbox WHERE tenant = ? AND subject = ? AND seq <= ?", (tenant, subject, applied))
            self.db.execute(f"DELETE FROM effects WHERE tenant = ? AND id >= ? AND id < ? AND (sent = 1 OR kind NOT IN "
                            f"({','.join('?' * len(kinds))}))", (tenant, subject + ":", subject + ";", *kinds))
            self.db.execute("DELETE FROM quarantine WHERE tenant = ? AND subject = ?", (tenant, subject))
            self.db.execute("DELETE FROM resident_profiles WHERE tenant = ? AND member = ?", (tenant, subject))
            self.db.execute("DELETE FROM resident_pending WHERE tenant = ? AND used_by = ?", (tenant, subject))

    # --- sender ----------------------------------------------------------------------------------

    def unsent(self, tenant: str, kinds: Iterable[str]) -> list[tuple[int, Effect]]:
        """The unsent effects of the earliest step that has any: one step at a time, however large.

        A step's effects never change once committed, so after a crash the sender reads the same
        batch again, coalesces it into the same requests and sends the same retry keys: LINE
        answers 409 to those it had accepted, and nobody gets a message twice. (A batch that
        mixed steps could gain a later step's rows after a restart, and shift every multicast.)
        """
        kinds = tuple(kinds)
        marks = ",".join("?" * len(kinds))
        first = self.db.execute(f"SELECT MIN(step) FROM effects WHERE tenant = ? AND sent = 0 AND kind IN ({marks})",
                                (tenant, *kinds)).fetchone()[0]
        if first is None:
            return []
        rows = self.db.execute(f"SELECT seq, effect FROM effects WHERE tenant = ? AND step = ? AND sent = 0 "
                               f"AND kind IN ({marks}) ORDER BY seq", (tenant, first, *kinds)).fetchall()
        return [(seq, codec.effect_from_obj(json.loads(raw))) for seq, raw in rows]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        with self._transaction():
            readside.count_sent(self.db, seqs)  # the month's LINE quota used, once per effect
            self.db.executemany("UPDATE effects SET sent = 1 WHERE seq = ?", [(seq,) for seq in seqs])
            for chunk in (seqs[i:i + 500] for i in range(0, len(seqs), 500)):
                goodbyes = self.db.execute(f"SELECT tenant, effect FROM effects WHERE kind = 'withdrawn' AND seq IN "
                                           f"({','.join('?' * len(chunk))})", chunk).fetchall()
                for tenant, raw in goodbyes:   # their goodbye went: the last rows that name them go too
                    subject = json.loads(raw)["subject"]
                    self.db.execute("DELETE FROM effects WHERE tenant = ? AND id >= ? AND id < ? AND sent = 1",
                                    (tenant, subject + ":", subject + ";"))
                    self.db.execute("DELETE FROM replied WHERE tenant = ? AND effect >= ? AND effect < ?",
                                    (tenant, subject + ":", subject + ";"))

    # --- quarantine ------------------------------------------------------------------------------

    def quarantined(self, tenant: str) -> list[Entry]:
        return [Entry(str(i), subject, event, kind, reason, at, bool(retried))
                for i, subject, event, kind, reason, at, retried in self.db.execute(
                    "SELECT id, subject, event, kind, reason, at, retried FROM quarantine WHERE tenant = ? "
                    "ORDER BY id", (tenant,))]

    def retry_quarantined(self, tenant: str, entry_id: int) -> bool:
        """Put a held row back into the inbox (after a fix), once; False if there is no such row held."""
        with self._transaction():
            row = self.db.execute("SELECT subject, event FROM quarantine WHERE tenant = ? AND id = ? AND retried = 0",
                                  (tenant, entry_id)).fetchone()
            if row is None:
                return False
            self.db.execute("INSERT INTO inbox (tenant, subject, event) VALUES (?, ?, ?)", (tenant, *row))
            self.db.execute("UPDATE quarantine SET retried = 1 WHERE id = ?", (entry_id,))
        return True

    # --- reading ---------------------------------------------------------------------------------

    def effects(self, tenant: str) -> list[Effect]:
        return [codec.effect_from_obj(json.loads(raw))
                for (raw,) in self.db.execute("SELECT effect FROM effects WHERE tenant = ? ORDER BY seq", (tenant,))]

    def transaction(self):
        """`with store.transaction():` one writer, all or nothing (for the admin screen's writes)."""
        return _Transaction(self.db)

    def _transaction(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (or ROLLBACK on error): one writer at a time, all or nothing."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
