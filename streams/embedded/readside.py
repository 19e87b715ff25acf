"""The admin screen's read side in the embedded store: small tables, updated inside each step's commit.

`apply_step` runs inside Store.commit_step's transaction, after the step's effects are inserted, so
a step's states, effects and read side are all-or-nothing together: the screen can never show an
escalation the engine did not commit, nor miss one it did. What changes is decided by the pure
agents/readside.py; this module only reads and writes rows.

    rs_daily   (tenant, day, kind) -> n   per local day: checks sent, OKs, resends, escalations, …
    rs_labels  (tenant, label) -> n       members and groups by service and state
    rs_cases   one row per escalated cycle (staff call or contacts told): open until the resident
               answers, the engine resolves it, or staff close it; a staff call on a cycle that told
               contacts moves its row to the call queue; `reminders`: how many times staff were reminded
    rs_groups  one row per つながり group: its current check
    rs_usage   (tenant, month) -> messages handed to LINE that count against the quota (an estimate)
    rs_acks    (tenant, member, cycle, contact) -> when that contact answered 「見に行きます」
    rs_phones  (tenant, blind index of a phone number, member): find a resident by their number
    rs_rolls   one row per member per roll-call: area when asked, drill, when sent, the answer
               (safe | need_help) and when, listed (no answer after the resend)
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping

from agents import readside as rs
from schemas import effects as fx
from schemas.settings import PHONE_KEPT
from streams import codec
from streams.sealed import keyring

SCHEMA = """
CREATE TABLE IF NOT EXISTS rs_daily (tenant TEXT NOT NULL, day TEXT NOT NULL, kind TEXT NOT NULL,
                                     n INTEGER NOT NULL, PRIMARY KEY (tenant, day, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rs_labels (tenant TEXT NOT NULL, label TEXT NOT NULL, n INTEGER NOT NULL,
                                      PRIMARY KEY (tenant, label)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rs_cases (tenant TEXT NOT NULL, member TEXT NOT NULL, cycle INTEGER NOT NULL,
                                     kind TEXT NOT NULL, at INTEGER NOT NULL, told INTEGER NOT NULL DEFAULT 0,
                                     status TEXT NOT NULL DEFAULT 'open', last_action TEXT,
                                     last_action_at INTEGER, closed_at INTEGER, outcome TEXT,
                                     reason TEXT, reminders INTEGER NOT NULL DEFAULT 0, reminded_at INTEGER,
                                     urgent INTEGER NOT NULL DEFAULT 0,
                                     PRIMARY KEY (tenant, member, cycle));
CREATE INDEX IF NOT EXISTS rs_cases_by_status ON rs_cases (tenant, kind, status, at);
CREATE INDEX IF NOT EXISTS rs_cases_closed ON rs_cases (tenant, kind, status, closed_at);
CREATE TABLE IF NOT EXISTS rs_groups (tenant TEXT NOT NULL, grp TEXT NOT NULL, cycle INTEGER NOT NULL,
                                      posted_at INTEGER, roster INTEGER NOT NULL, confirmed INTEGER NOT NULL,
                                      unconfirmed_at INTEGER, unconfirmed INTEGER,
                                      PRIMARY KEY (tenant, grp)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rs_acks (tenant TEXT NOT NULL, member TEXT NOT NULL, cycle INTEGER NOT NULL,
                                    contact TEXT NOT NULL, at INTEGER NOT NULL,
                                    PRIMARY KEY (tenant, member, cycle, contact)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rs_usage (tenant TEXT NOT NULL, month TEXT NOT NULL, n INTEGER NOT NULL,
                                     PRIMARY KEY (tenant, month)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rs_phones (tenant TEXT NOT NULL, blind TEXT NOT NULL, member TEXT NOT NULL,
                                      PRIMARY KEY (tenant, blind, member)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rs_phones_by_member ON rs_phones (tenant, member);
CREATE TABLE IF NOT EXISTS rs_rolls (tenant TEXT NOT NULL, rollcall TEXT NOT NULL, member TEXT NOT NULL,
                                     area TEXT NOT NULL DEFAULT '', drill INTEGER NOT NULL, sent_at INTEGER NOT NULL,
                                     answer TEXT, answered_at INTEGER, listed INTEGER NOT NULL DEFAULT 0,
                                     PRIMARY KEY (tenant, rollcall, member)) WITHOUT ROWID;
"""
TABLES = ("rs_daily", "rs_labels", "rs_cases", "rs_groups", "rs_usage", "rs_acks", "rs_rolls", "rs_phones")


def install(db: sqlite3.Connection) -> bool:
    """Create the tables; True if they are new (an older file: rebuild them from what it holds)."""
    have = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(rs_cases)")}
    for name, kind in ADDED_CASE_COLUMNS:  # a file from before they existed
        if name not in columns:
            db.execute(f"ALTER TABLE rs_cases ADD COLUMN {name} {kind}")
    if "rs_phones" not in have and "rs_daily" in have:   # a file from before the phone index: index it once
        for tenant in [t for (t,) in db.execute("SELECT DISTINCT tenant FROM states")]:
            _index_phones(db, tenant, {}, {s: _decode(raw) for s, raw in
                                           db.execute("SELECT subject, state FROM states WHERE tenant = ?", (tenant,))})
    return "rs_daily" not in have


ADDED_CASE_COLUMNS = (("reason", "TEXT"), ("reminders", "INTEGER NOT NULL DEFAULT 0"), ("reminded_at", "INTEGER"),
                      ("urgent", "INTEGER NOT NULL DEFAULT 0"))


# --- writing (inside the store's transactions) ------------------------------------------------------


def old_labels(db: sqlite3.Connection, tenant: str, subjects: Iterable[str],
               phones: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """The labels of these subjects as committed, before the step overwrites them (and into
    `phones`, a member's phone number then, for the phone index)."""
    subjects = list(subjects)
    out: dict[str, str | None] = dict.fromkeys(subjects)
    for i in range(0, len(subjects), 500):  # a few hundred keys a statement: far fewer round trips
        chunk = subjects[i:i + 500]
        rows = db.execute(f"SELECT subject, state FROM states WHERE tenant = ? AND subject IN "
                          f"({','.join('?' * len(chunk))})", (tenant, *chunk))
        for subject, raw in rows:
            state = _decode(raw)
            out[subject] = rs.safe_label(state)
            if phones is not None:
                phones[subject] = getattr(getattr(state, "settings", None), "phone", None)
    return out


def apply_step(db: sqlite3.Connection, tenant: str, old: Mapping[str, str | None], states: Mapping[str, object],
               effects: Iterable, old_phones: Mapping[str, str | None] | None = None) -> None:
    """Count one step: its changed states (`old` labels before it) and its newly inserted effects;
    index the phone numbers that changed (`old_phones`: before it)."""
    if old_phones is not None:
        _index_phones(db, tenant, old_phones, states)
    for label, n in rs.label_moves(old, states).items():
        db.execute("INSERT INTO rs_labels VALUES (?, ?, ?) ON CONFLICT (tenant, label) DO UPDATE SET n = n + ?",
                   (tenant, label, n, n))
        db.execute("DELETE FROM rs_labels WHERE tenant = ? AND label = ? AND n = 0", (tenant, label))
    for subject, state in states.items():
        row = rs.group_row(subject, state)
        if row is not None:
            db.execute("INSERT INTO rs_groups (tenant, grp, cycle, posted_at, roster, confirmed) VALUES (?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (tenant, grp) DO UPDATE SET cycle = excluded.cycle, posted_at = excluded.posted_at, "
                       "roster = excluded.roster, confirmed = excluded.confirmed", (tenant, *row))
    zones: dict[str, str] = {}
    counts: Counter = Counter()  # a big step's thousands of checks are one row per day and kind
    opens: list[tuple] = []      # … and its thousands of escalations one statement
    for effect in effects:
        zone = zones.get(effect.subject)
        if zone is None:
            zone = zones[effect.subject] = rs.zone_of(states[effect.subject]) \
                if states.get(effect.subject) is not None else _zone_in_table(db, tenant, effect.subject)
        for change in rs.effect_changes(effect, zone):
            if type(change) is rs.Count:
                counts[(change.day, change.kind)] += change.n
            elif type(change) is rs.OpenCase:
                opens.append((tenant, change.member, change.cycle, change.kind, change.at, change.told, change.reason))
            else:
                if opens:  # a case opened earlier in this step may be the one this closes
                    _open(db, opens)
                _write(db, tenant, change, zone, counts)
        if effect.effect == fx.GROUP_UNCONFIRMED:
            db.execute("UPDATE rs_groups SET unconfirmed_at = ?, unconfirmed = ? WHERE tenant = ? AND grp = ?",
                       (effect.at, len(effect.members or ()), tenant, effect.subject))
    _open(db, opens)
    db.executemany("INSERT INTO rs_daily VALUES (?, ?, ?, ?) ON CONFLICT (tenant, day, kind) DO UPDATE SET n = n + ?",
                   [(tenant, day, kind, n, n) for (day, kind), n in counts.items()])


def _index_phones(db: sqlite3.Connection, tenant: str, old: Mapping[str, str | None], states: Mapping[str, object]):
    """rs_phones: a blind index (streams/sealed.py) of each member's phone number, so staff can find
    a resident by the number a caller gives, with no number in the table."""
    for subject, state in states.items():
        phone = getattr(getattr(state, "settings", None), "phone", None)
        if phone == old.get(subject):
            continue
        db.execute("DELETE FROM rs_phones WHERE tenant = ? AND member = ?", (tenant, subject))
        if phone and not phone.startswith(PHONE_KEPT):
            db.execute("INSERT OR IGNORE INTO rs_phones VALUES (?, ?, ?)", (tenant, keyring().phone_blind(phone), subject))


def by_phone(db: sqlite3.Connection, tenant: str, phone: str) -> list[str]:
    blinds = keyring().phone_blinds(phone)
    return [m for (m,) in db.execute(f"SELECT member FROM rs_phones WHERE tenant = ? AND blind IN "
                                     f"({','.join('?' * len(blinds))}) ORDER BY member", (tenant, *blinds))]


def _write(db: sqlite3.Connection, tenant: str, change, zone: str, counts: Counter) -> None:
    kind = type(change)
    if kind is rs.Answered:
        row = db.execute("SELECT at FROM effects WHERE tenant = ? AND id = ?",
                         (tenant, f"{change.member}:{change.cycle}:{fx.CHECK_SENT}")).fetchone()
        if row is not None:  # the cycle's check: the OK counts for the day it went out
            counts[(rs.day_of(row[0], zone), rs.ANSWERED)] += 1
    elif kind is rs.Forget:  # a resident withdrew: the rows that name them go, the counts stay
        for table in ("rs_cases", "rs_acks", "rs_rolls"):
            db.execute(f"DELETE FROM {table} WHERE tenant = ? AND member = ?", (tenant, change.member))
    elif kind is rs.Acknowledged:
        db.execute("INSERT OR IGNORE INTO rs_acks VALUES (?, ?, ?, ?, ?)",
                   (tenant, change.member, change.cycle, change.contact, change.at))
    elif kind is rs.Urgent:
        db.execute("UPDATE rs_cases SET urgent = 1 WHERE tenant = ? AND member = ? AND cycle = ?",
                   (tenant, change.member, change.cycle))
    elif kind is rs.Reminded:
        db.execute("UPDATE rs_cases SET reminders = ?, reminded_at = ? WHERE tenant = ? AND member = ? AND cycle = ? "
                   "AND status = 'open' AND reminders < ?",
                   (change.n, change.at, tenant, change.member, change.cycle, change.n))
    elif kind is rs.RollSent:
        db.execute("INSERT OR IGNORE INTO rs_rolls (tenant, rollcall, member, area, drill, sent_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (tenant, change.rollcall, change.member, change.area or rs.NO_AREA,
                                                 int(change.drill), change.at))
    elif kind is rs.RollAnswer:  # a need_help replaces a safe, never the other way (the engine's order)
        db.execute("UPDATE rs_rolls SET answer = ?, answered_at = ? WHERE tenant = ? AND rollcall = ? AND member = ? "
                   "AND (answer IS NULL OR (answer = ? AND ? = ?))",
                   (change.answer, change.at, tenant, change.rollcall, change.member, rs.SAFE, change.answer,
                    rs.NEED_HELP))
    elif kind is rs.RollListed:
        db.execute("UPDATE rs_rolls SET listed = 1 WHERE tenant = ? AND rollcall = ? AND member = ?",
                   (tenant, change.rollcall, change.member))
    elif kind is rs.CloseCase:
        # staff who reached the person asked the engine to resolve: keep their word as the outcome
        db.execute("UPDATE rs_cases SET status = 'closed', closed_at = ?, outcome = CASE WHEN last_action = ? "
                   "THEN ? ELSE ? END WHERE tenant = ? AND member = ? AND status = 'open'",
                   (change.at, rs.REACHED, rs.REACHED, rs.RESIDENT, tenant, change.member))


def _open(db: sqlite3.Connection, opens: list[tuple]) -> None:
    # a replay changes nothing; a staff call on an open contacts case takes it to the call queue
    db.executemany("INSERT INTO rs_cases (tenant, member, cycle, kind, at, told, reason) VALUES (?, ?, ?, ?, ?, ?, ?) "
                   f"ON CONFLICT (tenant, member, cycle) DO UPDATE SET kind = excluded.kind, reason = excluded.reason "
                   f"WHERE rs_cases.status = 'open' AND rs_cases.kind != excluded.kind "
                   f"AND excluded.kind = '{fx.STAFF_CALL}'", opens)
    opens.clear()


def count_sent(db: sqlite3.Connection, seqs: Iterable[int]) -> None:
    """Effects about to be marked sent: add the messages they cost to their month (once per effect)."""
    rows = (db.execute("SELECT tenant, effect FROM effects WHERE seq = ? AND sent = 0", (seq,)).fetchone()
            for seq in seqs)
    _bill(db, (row for row in rows if row is not None))


def _bill(db: sqlite3.Connection, rows: Iterable[tuple[str, str]]) -> None:
    sizes: dict[tuple[str, str], int] = {}
    for tenant, raw in rows:
        effect = codec.effect_from_obj(json.loads(raw))
        size = 0
        if effect.effect in (fx.GROUP_CHECK_POSTED, fx.GROUP_UNCONFIRMED):
            key = (tenant, effect.subject)
            if key not in sizes:
                found = db.execute("SELECT roster FROM rs_groups WHERE tenant = ? AND grp = ?", key).fetchone()
                sizes[key] = found[0] if found else 1
            size = sizes[key]
        n = rs.billed(effect, size)
        if n:
            db.execute("INSERT INTO rs_usage VALUES (?, ?, ?) ON CONFLICT (tenant, month) DO UPDATE SET n = n + ?",
                       (tenant, rs.month_of(effect.at), n, n))


def record_action(db: sqlite3.Connection, tenant: str, member: str, cycle: int, action: str, at: int,
                  close: bool) -> bool:
    """Staff recorded an outcome on an open case; with `close`, the case closes with it. False if not open."""
    if close:
        done = db.execute("UPDATE rs_cases SET last_action = ?, last_action_at = ?, status = 'closed', closed_at = ?, "
                          "outcome = ? WHERE tenant = ? AND member = ? AND cycle = ? AND status = 'open'",
                          (action, at, at, action, tenant, member, cycle))
    else:
        done = db.execute("UPDATE rs_cases SET last_action = ?, last_action_at = ? "
                          "WHERE tenant = ? AND member = ? AND cycle = ? AND status = 'open'",
                          (action, at, tenant, member, cycle))
    return done.rowcount == 1


def rebuild(db: sqlite3.Connection) -> None:
    """Fill the read side of a file written before it existed, from its states and effects (once)."""
    for table in TABLES:
        db.execute(f"DELETE FROM {table}")
    tenants = [t for (t,) in db.execute("SELECT DISTINCT tenant FROM states")]
    for tenant in tenants:
        states = {subject: _decode(raw) for subject, raw in
                  db.execute("SELECT subject, state FROM states WHERE tenant = ?", (tenant,))}
        apply_step(db, tenant, {}, states, (), old_phones={})
        rows = db.execute("SELECT effect FROM effects WHERE tenant = ? ORDER BY seq", (tenant,)).fetchall()
        apply_step(db, tenant, {}, {}, [codec.effect_from_obj(json.loads(raw)) for (raw,) in rows])
    _bill(db, db.execute("SELECT tenant, effect FROM effects WHERE sent = 1 ORDER BY seq").fetchall())


def _zone_in_table(db: sqlite3.Connection, tenant: str, subject: str) -> str:
    row = db.execute("SELECT state FROM states WHERE tenant = ? AND subject = ?", (tenant, subject)).fetchone()
    return rs.zone_of(_decode(row[0])) if row else rs.DEFAULT_ZONE


def _decode(raw: str):
    try:
        return codec.state_from_obj(json.loads(raw))
    except (ValueError, KeyError, TypeError, IndexError):  # a state this read side cannot read: not counted
        return None


# --- reading (the admin pages) ------------------------------------------------------------------------


def daily(db: sqlite3.Connection, tenant: str, first: str, last: str) -> dict[str, dict[str, int]]:
    return rs.tally(db.execute("SELECT day, kind, n FROM rs_daily WHERE tenant = ? AND day BETWEEN ? AND ?",
                               (tenant, first, last)))


def labels(db: sqlite3.Connection, tenant: str) -> dict[str, int]:
    return {label: n for label, n in db.execute("SELECT label, n FROM rs_labels WHERE tenant = ? AND n != 0",
                                                (tenant,))}


def usage(db: sqlite3.Connection, tenant: str, month: str) -> int:
    row = db.execute("SELECT n FROM rs_usage WHERE tenant = ? AND month = ?", (tenant, month)).fetchone()
    return row[0] if row else 0


CASE_COLUMNS = ("member", "cycle", "kind", "at", "told", "status", "last_action", "last_action_at", "closed_at",
                "outcome", "reason", "reminders", "reminded_at", "urgent")


def cases(db: sqlite3.Connection, tenant: str, kind: str, status: str, limit: int = 200) -> list[dict]:
    """Open cases by urgency (a help first, then the longest wait); closed ones newest first."""
    order = "urgent DESC, at ASC" if status == "open" else "closed_at DESC"
    rows = db.execute(f"SELECT {', '.join(CASE_COLUMNS)} FROM rs_cases WHERE tenant = ? AND kind = ? AND status = ? "
                      f"ORDER BY {order} LIMIT ?", (tenant, kind, status, limit))
    return [dict(zip(CASE_COLUMNS, row)) for row in rows]


def case(db: sqlite3.Connection, tenant: str, member: str, cycle: int) -> dict | None:
    row = db.execute(f"SELECT {', '.join(CASE_COLUMNS)} FROM rs_cases WHERE tenant = ? AND member = ? AND cycle = ?",
                     (tenant, member, cycle)).fetchone()
    return dict(zip(CASE_COLUMNS, row)) if row else None


def acknowledged(db: sqlite3.Connection, tenant: str, member: str, cycle: int) -> list[int]:
    """When each contact who said 「見に行きます」 for this case said it (contacts stay unnamed)."""
    return [at for (at,) in db.execute("SELECT at FROM rs_acks WHERE tenant = ? AND member = ? AND cycle = ? "
                                       "ORDER BY at", (tenant, member, cycle))]


def open_count(db: sqlite3.Connection, tenant: str, kind: str) -> int:
    return db.execute("SELECT COUNT(*) FROM rs_cases WHERE tenant = ? AND kind = ? AND status = 'open'",
                      (tenant, kind)).fetchone()[0]


def oldest_open(db: sqlite3.Connection, tenant: str, kind: str) -> int | None:
    return db.execute("SELECT MIN(at) FROM rs_cases WHERE tenant = ? AND kind = ? AND status = 'open'",
                      (tenant, kind)).fetchone()[0]


def check_sent_at(db: sqlite3.Connection, tenant: str, member: str, cycle: int) -> int | None:
    row = db.execute("SELECT at FROM effects WHERE tenant = ? AND id = ?",
                     (tenant, f"{member}:{cycle}:{fx.CHECK_SENT}")).fetchone()
    return row[0] if row else None


def state_of(db: sqlite3.Connection, tenant: str, subject: str):
    """One subject's committed state (a primary-key lookup), or None."""
    row = db.execute("SELECT state FROM states WHERE tenant = ? AND subject = ?", (tenant, subject)).fetchone()
    return _decode(row[0]) if row else None


GROUP_COLUMNS = ("grp", "cycle", "posted_at", "roster", "confirmed", "unconfirmed_at", "unconfirmed")


def groups(db: sqlite3.Connection, tenant: str, limit: int = 500) -> list[dict]:
    rows = db.execute(f"SELECT {', '.join(GROUP_COLUMNS)} FROM rs_groups WHERE tenant = ? ORDER BY grp LIMIT ?",
                      (tenant, limit))
    return [dict(zip(GROUP_COLUMNS, row)) for row in rows]


# --- roll-calls ----------------------------------------------------------------------------------------

_STATUS = (f"CASE WHEN answer IS NOT NULL THEN answer WHEN listed = 1 THEN '{rs.LISTED}' "
           f"ELSE '{rs.WAITING}' END")
ROLL_MEMBER_COLUMNS = ("member", "area", "sent_at", "answer", "answered_at", "listed")


def rollcalls(db: sqlite3.Connection, tenant: str, limit: int = 50) -> list[dict]:
    """The tenant's roll-calls, newest first: id, drill, when it went out, members asked."""
    rows = db.execute("SELECT rollcall, MAX(drill), MIN(sent_at), COUNT(*) FROM rs_rolls WHERE tenant = ? "
                      "GROUP BY rollcall ORDER BY MIN(sent_at) DESC LIMIT ?", (tenant, limit))
    return [dict(zip(("rollcall", "drill", "at", "asked"), row)) for row in rows]


def rollcall_tally(db: sqlite3.Connection, tenant: str, rollcall: str) -> dict[str, dict[str, int]]:
    return rs.roll_tally(db.execute(f"SELECT area, {_STATUS}, COUNT(*) FROM rs_rolls WHERE tenant = ? AND rollcall = ? "
                                    f"GROUP BY area, {_STATUS}", (tenant, rollcall)))


def rollcall_members(db: sqlite3.Connection, tenant: str, rollcall: str, status: str, limit: int = 5000) -> list[dict]:
    """The members of one status (need_help first in time, the others by area), for the lists and CSV."""
    order = "answered_at" if status in (rs.SAFE, rs.NEED_HELP) else "area, member"
    rows = db.execute(f"SELECT {', '.join(ROLL_MEMBER_COLUMNS)} FROM rs_rolls WHERE tenant = ? AND rollcall = ? "
                      f"AND {_STATUS} = ? ORDER BY {order} LIMIT ?", (tenant, rollcall, status, limit))
    return [dict(zip(ROLL_MEMBER_COLUMNS, row)) for row in rows]


def rollcall_curve(db: sqlite3.Connection, tenant: str, rollcall: str, until_minutes: int) -> list[int]:
    rows = db.execute("SELECT (answered_at - sent_at) / 60000, COUNT(*) FROM rs_rolls WHERE tenant = ? AND rollcall = ? "
                      "AND answered_at IS NOT NULL GROUP BY 1", (tenant, rollcall))
    return rs.answer_curve(rows, until_minutes)


def clear_drill(db: sqlite3.Connection, tenant: str, rollcall: str) -> int:
    """Forget a drill's tally (real roll-calls are kept: they are the record of what happened)."""
    return db.execute("DELETE FROM rs_rolls WHERE tenant = ? AND rollcall = ? AND drill = 1",
                      (tenant, rollcall)).rowcount
