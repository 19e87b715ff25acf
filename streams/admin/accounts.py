"""Staff accounts, sessions and the audit log of the admin screen, in the embedded store's SQLite file.

    admin_users     per tenant: login, role (admin | operator), argon2id hash
    admin_lockouts  wrong passwords counted by login and source address, and by source address alone,
                    each under a SHA-256 of what it counts (no login or address in clear); the rule
                    is LOCKOUT below
    admin_sessions  the SHA-256 of each session id (a stolen copy of the file opens no session),
                    its tenant and login, its CSRF token, and when it expires
    admin_audit     who did what, when, to which case (never a password, a session id or a token)
    admin_line      per staff account: the LINE user id alerted on staff calls, and the hours on duty
    admin_line_codes  the SHA-256 of each one-time link code (agents/on_call.py), its account and expiry

Every function here is synchronous and takes the times it needs as arguments (ms since the epoch),
so tests can move the clock; password hashing runs in a thread (it takes ~0.2 s on purpose).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from functools import lru_cache

from agents import on_call
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

SCHEMA = """
CREATE TABLE IF NOT EXISTS admin_users (tenant TEXT NOT NULL, login TEXT NOT NULL, role TEXT NOT NULL,
                                        hash TEXT NOT NULL, failed INTEGER NOT NULL DEFAULT 0,
                                        locked_until INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,
                                        PRIMARY KEY (tenant, login)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS admin_sessions (key TEXT PRIMARY KEY, tenant TEXT NOT NULL, login TEXT NOT NULL,
                                           csrf TEXT NOT NULL, created_at INTEGER NOT NULL,
                                           expires_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS admin_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
                                        at INTEGER NOT NULL, login TEXT NOT NULL, action TEXT NOT NULL,
                                        target TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS admin_audit_by_tenant ON admin_audit (tenant, seq);
CREATE TABLE IF NOT EXISTS admin_lockouts (tenant TEXT NOT NULL, key TEXT NOT NULL, login_key TEXT,
                                           failed INTEGER NOT NULL, window_until INTEGER NOT NULL,
                                           locked_until INTEGER NOT NULL, PRIMARY KEY (tenant, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS admin_lockouts_by_login ON admin_lockouts (tenant, login_key);
CREATE TABLE IF NOT EXISTS admin_line (tenant TEXT NOT NULL, login TEXT NOT NULL, line_user TEXT,
                                       duty_start INTEGER NOT NULL DEFAULT 0, duty_end INTEGER NOT NULL DEFAULT 0,
                                       PRIMARY KEY (tenant, login)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS admin_line_codes (tenant TEXT NOT NULL, hash TEXT NOT NULL, login TEXT NOT NULL,
                                             valid_until INTEGER NOT NULL, used_by TEXT,
                                             PRIMARY KEY (tenant, hash)) WITHOUT ROWID;
"""

ADMIN, OPERATOR = "admin", "operator"
ROLES = (ADMIN, OPERATOR)
MAX_FAILURES = 5                       # wrong passwords for one login from one address within LOCK_MS …
LOCK_MS = 15 * 60_000                  # … lock that login from that address for 15 minutes
SOURCE_MAX_FAILURES = 20               # wrong passwords from one address for any logins: that address
IDLE_MS = 30 * 60_000                  # a session ends after 30 minutes without a page view
MAX_SESSION_MS = 12 * 3_600_000        # … and after 12 hours in any case
MIN_PASSWORD = 10
LOGIN_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")

_hasher = PasswordHasher()  # argon2id with the library's defaults (RFC 9106's second profile)


def install(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


class AccountError(ValueError):
    """A clear, user-facing reason an account cannot be created."""


# --- users ------------------------------------------------------------------------------------------


def check_new(login: str, role: str, password: str) -> None:
    if not LOGIN_PATTERN.match(login):
        raise AccountError("ログインIDは半角英数字と . _ @ - の64文字以内にしてください")
    if role not in ROLES:
        raise AccountError(f"役割は {' / '.join(ROLES)} のどれかにしてください")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"パスワードは{MIN_PASSWORD}文字以上にしてください")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def create_user(db: sqlite3.Connection, tenant: str, login: str, role: str, password: str, now: int) -> None:
    """Add an account; AccountError if the input is not acceptable or the login is taken."""
    check_new(login, role, password)
    add_hashed(db, tenant, login, role, hash_password(password), now)


def add_hashed(db: sqlite3.Connection, tenant: str, login: str, role: str, hashed: str, now: int) -> None:
    done = db.execute("INSERT OR IGNORE INTO admin_users (tenant, login, role, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                      (tenant, login, role, hashed, now))
    if done.rowcount != 1:
        raise AccountError("このログインIDはすでに使われています")


def set_password(db: sqlite3.Connection, tenant: str, login: str, password: str) -> bool:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"パスワードは{MIN_PASSWORD}文字以上にしてください")
    return db.execute("UPDATE admin_users SET hash = ?, failed = 0, locked_until = 0 WHERE tenant = ? AND login = ?",
                      (_hasher.hash(password), tenant, login)).rowcount == 1


def exists(db: sqlite3.Connection, tenant: str, login: str) -> bool:
    return db.execute("SELECT 1 FROM admin_users WHERE tenant = ? AND login = ?", (tenant, login)).fetchone() is not None


USER_FIELDS = ("login", "role", "failed", "locked_until", "created_at", "line_linked", "duty_start", "duty_end")


def users(db: sqlite3.Connection, tenant: str) -> list[dict]:
    """Each account; `failed` and `locked_until` over every address it was tried from."""
    rows = db.execute("SELECT u.login, role, created_at, l.line_user IS NOT NULL, coalesce(duty_start, 0), "
                      "coalesce(duty_end, 0) FROM admin_users u LEFT JOIN admin_line l "
                      "ON l.tenant = u.tenant AND l.login = u.login WHERE u.tenant = ? ORDER BY u.login", (tenant,))
    found = []
    for login, role, created_at, linked, start, end in rows.fetchall():
        failed, locked_until = db.execute("SELECT coalesce(sum(failed), 0), coalesce(max(locked_until), 0) FROM "
                                          "admin_lockouts WHERE tenant = ? AND login_key = ?",
                                          (tenant, lock_keys(tenant, login, "")[2])).fetchone()
        found.append(dict(zip(USER_FIELDS, (login, role, failed, locked_until, created_at, bool(linked), start, end))))
    return found


# --- staff alerts on LINE (agents/on_call.py) ---------------------------------------------------------

LINE_LINKED = "staff.line_link"   # the audit action of a staff member's LINE linked to their account


def line_code(db: sqlite3.Connection, tenant: str, login: str, now: int) -> str:
    """A new one-time code for `login` (an earlier one of theirs stops working)."""
    code = on_call.new_code()
    db.execute("DELETE FROM admin_line_codes WHERE tenant = ? AND (login = ? OR valid_until < ?)", (tenant, login, now))
    db.execute("INSERT INTO admin_line_codes (tenant, hash, login, valid_until) VALUES (?, ?, ?, ?)",
               (tenant, on_call.code_hash(tenant, code), login, now + on_call.LINK_CODE_VALID_FOR))
    return code


def link_line(db: sqlite3.Connection, tenant: str, code: str, line_user: str, now: int) -> str | None:
    """The login `code` links `line_user` to, or None (wrong, expired, or spent by someone else). The
    same person sending the same code again (LINE redelivers a webhook) is linked again, not refused.
    The caller holds a transaction around it."""
    key = on_call.code_hash(tenant, code)
    row = db.execute("SELECT login, valid_until, used_by FROM admin_line_codes WHERE tenant = ? AND hash = ?",
                     (tenant, key)).fetchone()
    if row is None or row[1] < now or row[2] not in (None, line_user) or not exists(db, tenant, row[0]):
        return None
    db.execute("UPDATE admin_line_codes SET used_by = ? WHERE tenant = ? AND hash = ?", (line_user, tenant, key))
    db.execute("INSERT INTO admin_line (tenant, login, line_user) VALUES (?, ?, ?) ON CONFLICT (tenant, login) "
               "DO UPDATE SET line_user = excluded.line_user", (tenant, row[0], line_user))
    return row[0]


def unlink_line(db: sqlite3.Connection, tenant: str, login: str) -> bool:
    return db.execute("UPDATE admin_line SET line_user = NULL WHERE tenant = ? AND login = ? AND line_user IS NOT NULL",
                      (tenant, login)).rowcount == 1


DUTY_HOURS_RULE = "勤務時間は0時から23時の間で選んでください"


def check_duty(start: int, end: int) -> None:
    """AccountError unless both are hours of the day (every store's rule)."""
    if not on_call.valid_hours(start, end):
        raise AccountError(DUTY_HOURS_RULE)


def set_duty(db: sqlite3.Connection, tenant: str, login: str, start: int, end: int) -> None:
    check_duty(start, end)
    db.execute("INSERT INTO admin_line (tenant, login, duty_start, duty_end) VALUES (?, ?, ?, ?) ON CONFLICT "
               "(tenant, login) DO UPDATE SET duty_start = excluded.duty_start, duty_end = excluded.duty_end",
               (tenant, login, start, end))


def on_call_staff(db: sqlite3.Connection, tenant: str) -> list[on_call.OnCall]:
    rows = db.execute("SELECT l.login, line_user, duty_start, duty_end FROM admin_line l JOIN admin_users u "
                      "ON u.tenant = l.tenant AND u.login = l.login WHERE l.tenant = ? AND line_user IS NOT NULL "
                      "ORDER BY l.login", (tenant,))
    return [on_call.OnCall(*row) for row in rows]


def unlock(db: sqlite3.Connection, tenant: str, login: str) -> bool:
    """Clear the login's lockouts from every address; False if there is no such account."""
    db.execute("DELETE FROM admin_lockouts WHERE tenant = ? AND login_key = ?", (tenant, lock_keys(tenant, login, "")[2]))
    return exists(db, tenant, login)


def random_password() -> str:
    return secrets.token_urlsafe(12)  # 16 characters, ~96 bits


# --- logging in ---------------------------------------------------------------------------------------

OK, BAD, LOCKED = "ok", "bad", "locked"


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # An unknown login still costs one verification, so timing does not tell which logins exist.
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def lock_keys(tenant: str, login: str, source: str) -> tuple[str, str, str]:
    """What a failed login counts under: (this login from this address, this address, this login)."""
    def h(*parts: str) -> str:
        return hashlib.sha256("\0".join((tenant, *parts)).encode()).hexdigest()
    return h("pair", login, source), h("source", source), h("login", login)


LOCKOUT = """Wrong passwords are counted twice: for the login from the address they came from, and for
the address whatever the login. MAX_FAILURES for one login from one address within LOCK_MS lock that
login from that address for LOCK_MS; SOURCE_MAX_FAILURES from one address lock the address. While
locked even the right password is refused there, and attempts do not extend the lock; the right
password from elsewhere still opens the account (a stranger cannot keep its owner out). Unknown
logins are counted the same way, so the answers do not tell which logins exist. The right password
clears that login's count from that address; `anpi admin unlock` and the users page clear a login's
counts from every address."""


def _locked(db: sqlite3.Connection, tenant: str, keys, now: int) -> bool:
    return db.execute(f"SELECT 1 FROM admin_lockouts WHERE tenant = ? AND key IN ({','.join('?' * len(keys))}) "
                      "AND locked_until > ?", (tenant, *keys, now)).fetchone() is not None


def _count_failure(db: sqlite3.Connection, tenant: str, key: str, login_key: str | None, limit: int, now: int) -> bool:
    """One more wrong password under `key`; True if that locks it (LOCKOUT)."""
    row = db.execute("SELECT failed, window_until, locked_until FROM admin_lockouts WHERE tenant = ? AND key = ?",
                     (tenant, key)).fetchone()
    failed, window_until, locked_until = row or (0, 0, 0)
    if locked_until > now:
        return True
    if window_until <= now:
        failed, window_until = 0, now + LOCK_MS
    failed += 1
    if failed >= limit:
        failed, window_until, locked_until = 0, now, now + LOCK_MS
    db.execute("INSERT INTO admin_lockouts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, key) DO UPDATE SET "
               "failed = excluded.failed, window_until = excluded.window_until, locked_until = excluded.locked_until",
               (tenant, key, login_key, failed, window_until, locked_until if failed == 0 else 0))
    return failed == 0


async def authenticate(db: sqlite3.Connection, tenant: str, login: str, password: str, now, source: str = "") -> str:
    """OK, BAD or LOCKED by LOCKOUT, for `login` tried from the address `source`. `now()` gives ms; it
    is read after the (slow, threaded) verification too."""
    pair, by_source, login_key = lock_keys(tenant, login, source)
    if _locked(db, tenant, (pair, by_source), now()):
        return LOCKED
    row = db.execute("SELECT hash FROM admin_users WHERE tenant = ? AND login = ?", (tenant, login)).fetchone()
    good = await asyncio.get_running_loop().run_in_executor(None, _verify, row[0] if row else _dummy_hash(), password)
    # No await from here on: read-modify-write is atomic with respect to other requests.
    t = now()
    if _locked(db, tenant, (pair, by_source), t):
        return LOCKED  # locked by a concurrent attempt meanwhile
    db.execute("DELETE FROM admin_lockouts WHERE tenant = ? AND window_until <= ? AND locked_until <= ?",
               (tenant, t, t))  # sweep the counts that ran out
    if good and row is not None:
        db.execute("DELETE FROM admin_lockouts WHERE tenant = ? AND key = ?", (tenant, pair))
        return OK
    locked = _count_failure(db, tenant, pair, login_key, MAX_FAILURES, t)
    locked = _count_failure(db, tenant, by_source, None, SOURCE_MAX_FAILURES, t) or locked
    return LOCKED if locked else BAD


# --- sessions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    tenant: str
    login: str
    role: str
    csrf: str
    expires_at: int


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(db: sqlite3.Connection, tenant: str, login: str, now: int) -> str:
    """A new session id (the cookie's value); only its hash is stored."""
    session_id = secrets.token_urlsafe(32)
    db.execute("DELETE FROM admin_sessions WHERE expires_at <= ?", (now,))  # sweep the expired ones
    db.execute("INSERT INTO admin_sessions VALUES (?, ?, ?, ?, ?, ?)",
               (_key(session_id), tenant, login, secrets.token_urlsafe(32), now, min(now + IDLE_MS,
                                                                                      now + MAX_SESSION_MS)))
    return session_id


def session(db: sqlite3.Connection, session_id: str | None, now: int) -> Session | None:
    """The live session for a cookie value, its idle deadline moved on; None if absent or expired.

    The role is read from the account on every request, so a removed account loses its sessions.
    """
    if not session_id or len(session_id) > 128:
        return None
    key = _key(session_id)
    row = db.execute("SELECT s.tenant, s.login, u.role, s.csrf, s.created_at, s.expires_at FROM admin_sessions s "
                     "JOIN admin_users u ON u.tenant = s.tenant AND u.login = s.login WHERE s.key = ?",
                     (key,)).fetchone()
    if row is None:
        return None
    tenant, login, role, csrf, created_at, expires_at = row
    if expires_at <= now:
        db.execute("DELETE FROM admin_sessions WHERE key = ?", (key,))
        return None
    renewed = min(now + IDLE_MS, created_at + MAX_SESSION_MS)
    if renewed - expires_at > 60_000:  # one write a minute at most, not one per page view
        db.execute("UPDATE admin_sessions SET expires_at = ? WHERE key = ?", (renewed, key))
        expires_at = renewed
    return Session(tenant, login, role, csrf, expires_at)


def close_session(db: sqlite3.Connection, session_id: str | None) -> None:
    if session_id:
        db.execute("DELETE FROM admin_sessions WHERE key = ?", (_key(session_id),))


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality for tokens; False if either is missing."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


# --- audit --------------------------------------------------------------------------------------------


def audit(db: sqlite3.Connection, tenant: str, at: int, login: str, action: str, target: str | None = None,
          detail: str | None = None) -> None:
    db.execute("INSERT INTO admin_audit (tenant, at, login, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
               (tenant, at, login, action, target, detail))


def audit_log(db: sqlite3.Connection, tenant: str, limit: int = 200) -> list[dict]:
    rows = db.execute("SELECT at, login, action, target, detail FROM admin_audit WHERE tenant = ? "
                      "ORDER BY seq DESC LIMIT ?", (tenant, limit))
    return [dict(zip(("at", "login", "action", "target", "detail"), row)) for row in rows]
