"""Staff accounts, sessions, lockouts and the audit log in Redis: the admin screen of the Kafka runtime
(`anpi admin serve`), with the same rules as the embedded store's tables (streams/admin/accounts.py).

Keys, per tenant, in the tenant's hash slot (braces):

    anpi:{t}:admin:logins              set of logins
    anpi:{t}:admin:user:<sha256 of login>  hash: role, hash (argon2id), created_at,
                                       and for alerts on LINE line_user, duty_start, duty_end, line_code
                                       (a login may be a person's name: key names hold none)
    anpi:{t}:admin:linecode:<sha256>   hash: login, user (its key), valid_until, used_by: a one-time
                                       link code (agents/on_call.py), kept as its hash; expires
    anpi:{t}:admin:session:<sha256>    hash: login, user (its key), csrf, created_at, expires_at; expires
                                       with the session
    anpi:{t}:admin:audit               list of JSON rows, newest first (the last AUDIT_KEEP)
    anpi:{t}:admin:lock:<sha256>       hash: failed, window_until, locked_until: wrong passwords counted by
                                       login and address, or by address (accounts.LOCKOUT); expires
    anpi:{t}:admin:locks:<sha256>      set of the lock keys of one login (for unlock and the users page)

A session id is "<tenant>.<random>": the tenant says which slot to look in, and only the SHA-256 of
the whole id is stored (a copy of Redis opens no session). A session of another tenant is still
found (and then refused with 404 by the guard, exactly as in the embedded runtime). Times are the
app's wall clock (tests move it); the keys' TTLs only collect what has expired.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import secrets

import redis.asyncio as aioredis

from agents import on_call
from schemas.tenant import ID as _TENANT
from schemas.tenant import ID_RULE
from streams.admin import accounts
from streams.admin.accounts import (BAD, IDLE_MS, LOCK_MS, LOCKED, MAX_FAILURES, MAX_SESSION_MS, OK,
                                    SOURCE_MAX_FAILURES, AccountError, Session, lock_keys)

AUDIT_KEEP = 100_000


def _p(tenant: str) -> str:
    if not _TENANT.fullmatch(tenant or ""):
        raise ValueError(f"tenant id {tenant!r}: expected " + ID_RULE)
    return f"anpi:{{{tenant}}}:admin:"


def _user(tenant: str, login: str) -> str:
    return _p(tenant) + "user:" + hashlib.sha256(login.encode()).hexdigest()


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def audit_commands(pipe, tenant: str, at: int, login: str, action: str, target: str | None,
                   detail: str | None) -> None:
    """One audit row onto `pipe` (a MULTI: with the change it records)."""
    key = _p(tenant) + "audit"
    pipe.lpush(key, json.dumps({"at": at, "login": login, "action": action, "target": target, "detail": detail},
                               ensure_ascii=False))
    pipe.ltrim(key, 0, AUDIT_KEEP - 1)


# KEYS: user, logins, audit; ARGV: role, hash, now, audit row (JSON), keep. 1 = created, 0 = taken.
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'role', ARGV[1], 'hash', ARGV[2], 'created_at', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
return 1
"""

# One more wrong password (accounts.LOCKOUT, as accounts._count_failure). KEYS: the lock key, and the
# login's set of lock keys (or the lock key again: none); ARGV: now, limit, lock ms, ttl ms. 1 = locked.
_FAIL = """
local f = redis.call('HMGET', KEYS[1], 'failed', 'window_until', 'locked_until')
local failed, window, locked, t = tonumber(f[1] or '0'), tonumber(f[2] or '0'), tonumber(f[3] or '0'), tonumber(ARGV[1])
if locked > t then return 1 end
if window <= t then failed = 0; window = t + tonumber(ARGV[3]) end
failed = failed + 1
locked = 0
if failed >= tonumber(ARGV[2]) then failed = 0; window = t; locked = t + tonumber(ARGV[3]) end
redis.call('HSET', KEYS[1], 'failed', failed, 'window_until', window, 'locked_until', locked)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
if KEYS[2] ~= KEYS[1] then
  redis.call('SADD', KEYS[2], KEYS[1])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
end
if locked > 0 then return 1 end
return 0
"""
LOCK_TTL_MS = 2 * LOCK_MS + 3_600_000   # only collects what ran out: the rule reads the stored times

# KEYS: session; ARGV: (unused), now, idle ms, max ms. {login, role, csrf, expires_at} or nil.
_SESSION = """
local s = redis.call('HMGET', KEYS[1], 'login', 'csrf', 'created_at', 'expires_at', 'user')
if not s[1] then return nil end
local now, expires = tonumber(ARGV[2]), tonumber(s[4])
if expires <= now then redis.call('DEL', KEYS[1]); return nil end
local role = redis.call('HGET', s[5], 'role')
if not role then return nil end
local renewed = math.min(now + tonumber(ARGV[3]), tonumber(s[3]) + tonumber(ARGV[4]))
if renewed - expires > 60000 then
  redis.call('HSET', KEYS[1], 'expires_at', renewed)
  redis.call('PEXPIRE', KEYS[1], renewed - now)
  expires = renewed
end
return {s[1], role, s[2], tostring(expires)}
"""


# A link code sent from LINE. KEYS: code; ARGV: now, line user. The login linked, or nil.
_LINK = """
local c = redis.call('HMGET', KEYS[1], 'login', 'user', 'valid_until', 'used_by')
if not c[1] or tonumber(c[3]) < tonumber(ARGV[1]) then return nil end
if c[4] and c[4] ~= ARGV[2] then return nil end
if redis.call('EXISTS', c[2]) == 0 then return nil end
redis.call('HSET', KEYS[1], 'used_by', ARGV[2])
redis.call('HSET', c[2], 'line_user', ARGV[2])
return c[1]
"""


class RedisStaff:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self._add = redis.register_script(_ADD)
        self._fail = redis.register_script(_FAIL)
        self._session = redis.register_script(_SESSION)
        self._link = redis.register_script(_LINK)

    # --- users ----------------------------------------------------------------------------------------

    async def add_user(self, tenant: str, login: str, role: str, hashed: str, now: int, by: str) -> None:
        p = _p(tenant)
        row = json.dumps({"at": now, "login": by, "action": "user.create", "target": login, "detail": role},
                         ensure_ascii=False)
        done = await self._add([_user(tenant, login), p + "logins", p + "audit"],
                               [role, hashed, now, row, AUDIT_KEEP, login])
        if int(done) != 1:
            raise AccountError("このログインIDはすでに使われています")

    async def create_user(self, tenant: str, login: str, role: str, password: str, now: int, by: str) -> None:
        accounts.check_new(login, role, password)
        hashed = await asyncio.get_running_loop().run_in_executor(None, accounts.hash_password, password)
        await self.add_user(tenant, login, role, hashed, now, by)

    async def exists(self, tenant: str, login: str) -> bool:
        if not _TENANT.fullmatch(tenant or ""):
            return False
        return bool(await self.redis.exists(_user(tenant, login)))

    async def users(self, tenant: str) -> list[dict]:
        p = _p(tenant)
        logins = sorted(_text(x) for x in await self.redis.smembers(p + "logins"))
        if not logins:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for login in logins:
                pipe.hmget(_user(tenant, login), "role", "created_at", "line_user", "duty_start", "duty_end")
                pipe.smembers(self._locks(tenant, login))
            rows = await pipe.execute()
        found = []
        for login, (role, created, line, start, end), locks in zip(logins, rows[::2], rows[1::2]):
            if role is None:
                continue
            failed, locked_until = 0, 0
            for key in locks:
                f, until = await self.redis.hmget(key, "failed", "locked_until")
                failed, locked_until = failed + int(f or 0), max(locked_until, int(until or 0))
            found.append({"login": login, "role": _text(role), "failed": failed, "locked_until": locked_until,
                          "created_at": int(created or 0), "line_linked": bool(line), "duty_start": int(start or 0),
                          "duty_end": int(end or 0)})
        return found

    @staticmethod
    def _lock(tenant: str, key: str) -> str:
        return _p(tenant) + "lock:" + key

    def _locks(self, tenant: str, login: str) -> str:
        return _p(tenant) + "locks:" + lock_keys(tenant, login, "")[2]

    # --- staff alerts on LINE (agents/on_call.py) ---------------------------------------------------

    async def line_code(self, tenant: str, login: str, now: int) -> str:
        code, user = on_call.new_code(), _user(tenant, login)
        key = _p(tenant) + "linecode:" + on_call.code_hash(tenant, code)
        earlier = _text(await self.redis.hget(user, "line_code"))
        async with self.redis.pipeline(transaction=True) as pipe:
            if earlier:
                pipe.delete(_p(tenant) + "linecode:" + earlier)
            pipe.hset(key, mapping={"login": login, "user": user, "valid_until": now + on_call.LINK_CODE_VALID_FOR})
            pipe.pexpire(key, on_call.LINK_CODE_VALID_FOR + 3_600_000)   # the app's clock may run ahead
            pipe.hset(user, "line_code", on_call.code_hash(tenant, code))
            await pipe.execute()
        return code

    async def link_line(self, tenant: str, code: str, line_user: str, now: int) -> str | None:
        login = await self._link([_p(tenant) + "linecode:" + on_call.code_hash(tenant, code)], [now, line_user])
        if login is None:
            return None
        await self.audit(tenant, now, _text(login), accounts.LINE_LINKED)
        return _text(login)

    async def unlink_line(self, tenant: str, login: str) -> bool:
        return bool(await self.redis.hdel(_user(tenant, login), "line_user"))

    async def set_duty(self, tenant: str, login: str, start: int, end: int) -> None:
        accounts.check_duty(start, end)
        await self.redis.hset(_user(tenant, login), mapping={"duty_start": start, "duty_end": end})

    async def on_call(self, tenant: str) -> list[on_call.OnCall]:
        logins = sorted(_text(x) for x in await self.redis.smembers(_p(tenant) + "logins"))
        async with self.redis.pipeline(transaction=False) as pipe:
            for login in logins:
                pipe.hmget(_user(tenant, login), "line_user", "duty_start", "duty_end")
            rows = await pipe.execute() if logins else []
        return [on_call.OnCall(login, _text(line), int(start or 0), int(end or 0))
                for login, (line, start, end) in zip(logins, rows) if line]

    async def unlock(self, tenant: str, login: str) -> bool:
        """Clear the login's lockouts from every address; False if there is no such account."""
        index = self._locks(tenant, login)
        keys = list(await self.redis.smembers(index))
        await self.redis.delete(index, *keys)
        return await self.exists(tenant, login)

    # --- logging in ---------------------------------------------------------------------------------

    async def authenticate(self, tenant: str, login: str, password: str, now, source: str = "") -> str:
        """OK, BAD or LOCKED by accounts.LOCKOUT, for `login` tried from the address `source`."""
        try:
            key = _user(tenant, login)
        except ValueError:
            return BAD
        pair, by_source, _ = lock_keys(tenant, login, source)
        pair, by_source = self._lock(tenant, pair), self._lock(tenant, by_source)

        async def locked(t: int) -> bool:
            return any(int(until or 0) > t for until in (await self.redis.hget(pair, "locked_until"),
                                                          await self.redis.hget(by_source, "locked_until")))
        if await locked(now()):
            return LOCKED
        hashed = await self.redis.hget(key, "hash")
        good = await asyncio.get_running_loop().run_in_executor(
            None, accounts._verify, _text(hashed) if hashed is not None else accounts._dummy_hash(), password)
        t = now()
        if await locked(t):
            return LOCKED
        if good and hashed is not None:
            await self.redis.delete(pair)
            return OK
        a = await self._fail([pair, self._locks(tenant, login)], [t, MAX_FAILURES, LOCK_MS, LOCK_TTL_MS])
        b = await self._fail([by_source, by_source], [t, SOURCE_MAX_FAILURES, LOCK_MS, LOCK_TTL_MS])
        return LOCKED if int(a) or int(b) else BAD

    # --- sessions -------------------------------------------------------------------------------------

    @staticmethod
    def _key(session_id: str) -> str | None:
        tenant, dot, _ = session_id.partition(".")
        if not dot or not _TENANT.fullmatch(tenant):
            return None
        return _p(tenant) + "session:" + hashlib.sha256(session_id.encode()).hexdigest()

    async def open_session(self, tenant: str, login: str, now: int) -> str:
        session_id = f"{tenant}.{secrets.token_urlsafe(32)}"
        ttl = min(IDLE_MS, MAX_SESSION_MS)
        key = self._key(session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"login": login, "csrf": secrets.token_urlsafe(32), "created_at": now,
                                    "expires_at": now + ttl, "user": _user(tenant, login)})
            pipe.pexpire(key, ttl)
            await pipe.execute()
        return session_id

    async def session(self, session_id: str | None, now: int) -> Session | None:
        if not session_id or len(session_id) > 160:
            return None
        key = self._key(session_id)
        if key is None:
            return None
        tenant = session_id.partition(".")[0]
        got = await self._session([key], ["", now, IDLE_MS, MAX_SESSION_MS])
        if not got:
            return None
        login, role, csrf, expires_at = (_text(x) for x in got)
        return Session(tenant, login, role, csrf, int(expires_at))

    async def close_session(self, session_id: str | None) -> None:
        key = self._key(session_id) if session_id else None
        if key is not None:
            await self.redis.delete(key)

    # --- audit ----------------------------------------------------------------------------------------

    async def audit(self, tenant: str, at: int, login: str, action: str, target: str | None = None,
                    detail: str | None = None) -> None:
        if not _TENANT.fullmatch(tenant or ""):
            return  # a login attempt at an address that is no tenant: nothing to file it under
        async with self.redis.pipeline(transaction=True) as pipe:
            audit_commands(pipe, tenant, at, login, action, target, detail)
            await pipe.execute()

    async def audit_log(self, tenant: str, limit: int = 200) -> list[dict]:
        rows = await self.redis.lrange(_p(tenant) + "audit", 0, limit - 1)
        return [json.loads(r) for r in rows]
