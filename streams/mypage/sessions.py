"""My Page sessions: a short login that a signed link (or a LIFF ID token) starts.

The browser holds only a random id (cookie); the table holds its SHA-256, so a copy of the file
gives no live session. A session belongs to one tenant and one member, carries the CSRF token its
forms must send back, and one flash message for the page after a change. It ends after IDLE of
quiet, and in any case after AT_MOST: a forwarded phone must not stay logged in for days.

Times are wall-clock ms (the engine's clock may be virtual and sped up in the demo).
"""
from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS mypage_sessions (key TEXT PRIMARY KEY, tenant TEXT NOT NULL, member TEXT NOT NULL,
                                            csrf TEXT NOT NULL, started INTEGER NOT NULL, seen INTEGER NOT NULL,
                                            flash TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mypage_sessions_seen ON mypage_sessions (seen);
"""
IDLE = 30 * 60 * 1000
AT_MOST = 4 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Session:
    tenant: str
    member: str
    csrf: str


def install(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def start(db: sqlite3.Connection, tenant: str, member: str, now: int) -> str:
    """A new session's id (for the cookie). Old sessions are swept here, a few at a time."""
    db.execute("DELETE FROM mypage_sessions WHERE key IN (SELECT key FROM mypage_sessions WHERE seen < ? LIMIT 100)",
               (now - IDLE,))
    sid = secrets.token_urlsafe(32)
    db.execute("INSERT INTO mypage_sessions VALUES (?, ?, ?, ?, ?, ?, NULL)",
               (_key(sid), tenant, member, secrets.token_urlsafe(24), now, now))
    return sid


def find(db: sqlite3.Connection, tenant: str, sid: str | None, now: int) -> Session | None:
    """The live session with this id, of this very tenant (another tenant's is None); touches it."""
    if not sid or len(sid) > 100:
        return None
    key = _key(sid)
    row = db.execute("SELECT tenant, member, csrf, started, seen FROM mypage_sessions WHERE key = ?",
                     (key,)).fetchone()
    if row is None or row[0] != tenant:
        return None
    if now - row[4] > IDLE or now - row[3] > AT_MOST:
        db.execute("DELETE FROM mypage_sessions WHERE key = ?", (key,))
        return None
    db.execute("UPDATE mypage_sessions SET seen = ? WHERE key = ?", (now, key))
    return Session(row[0], row[1], row[2])


def set_flash(db: sqlite3.Connection, sid: str, text: str) -> None:
    db.execute("UPDATE mypage_sessions SET flash = ? WHERE key = ?", (text, _key(sid)))


def pop_flash(db: sqlite3.Connection, sid: str) -> str | None:
    key = _key(sid)
    row = db.execute("SELECT flash FROM mypage_sessions WHERE key = ?", (key,)).fetchone()
    if row is None or row[0] is None:
        return None
    db.execute("UPDATE mypage_sessions SET flash = NULL WHERE key = ?", (key,))
    return row[0]
