"""My Page on the Kafka runtime (backends.Members, backends.Sessions), served by `anpi ingress`.

    anpi:{t}:rs:state:<member>      the member's state, kept by `anpi readside` from the changelog
    anpi:{t}:rs:hist:<member>       their own effects by time (the effects topic, the last 31 days)
    anpi:{<prefix>}:rs:applied      partition -> the inbound offset those states are up to
    anpi:{t}:mp:pending:<member>    the changes made here, with where they went on the inbound
                                    topic (partition, offset), for an hour (a phone number typed
                                    here: its last four digits only, as in the state)
    anpi:{t}:mp:session:<sha256>    a session: member, csrf, started, seen, flash

A change goes onto the inbound topic (streams/ingress.KafkaSink) and waits there for the worker;
until the read side has its outcome (the changelog's APPLIED has passed its offset) the page steps
it on top of the state it has, with the same pure core, as the embedded runtime steps its inbox.
The browser holds only the session's random id; Redis holds its SHA-256.

What differs from the embedded runtime: the state is read and the change written in two steps, not
one transaction, so a contact added in LINE in the second or so between them can be undone by a
change built from the state before it.
"""
from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import replace

import redis.asyncio as aioredis

from agents import subject
from agents.member import MemberState
from schemas.events import ChangeSettings
from schemas.settings import PHONE_KEPT, kept_phone
from streams import codec
from streams.kafka import readside
from streams.mypage import reading
from streams.mypage.backends import NotRegistered
from streams.mypage.sessions import AT_MOST, IDLE, Session
from streams.line.webhook_events import Routed

PENDING_MS = 3_600_000


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _mp(tenant: str) -> str:
    return readside.prefix(tenant)[:-len("rs:")] + "mp:"


class RedisMembers:
    """`sink`: the runtime's KafkaSink; `deployment`: its topic prefix (whose APPLIED offsets are read)."""

    def __init__(self, redis: aioredis.Redis, sink, deployment: str):
        self.redis, self.sink = redis, sink
        self.applied_key = f"anpi:{{{deployment}}}:rs:applied"

    async def state(self, tenant, member):
        raw = await self.redis.get(readside.prefix(tenant) + "state:" + member)
        state = codec.state_from_obj(json.loads(raw)) if raw else None
        pending = await self.redis.lrange(_mp(tenant) + "pending:" + member, 0, -1)
        if pending:
            applied = {_s(k): int(v) for k, v in (await self.redis.hgetall(self.applied_key)).items()}
            for item in pending:
                change = json.loads(item)
                if change["o"] > applied.get(str(change["p"]), -1):   # not in the state yet
                    try:
                        event = codec.event_from_obj(change["e"])
                        state, _ = subject.step(state, event, member)
                    except Exception:  # the engine will set it aside (streams/quarantine.py): it changes nothing
                        continue
                    state = _with_kept_phone(state, event)
        return state if type(state) is MemberState else None

    async def history(self, tenant, member, since, until):
        rows = await self.redis.zrevrangebyscore(readside.prefix(tenant) + "hist:" + member, until, since,
                                                 start=0, num=reading.HISTORY_LIMIT)
        return [codec.effect_from_obj(json.loads(row)) for row in rows]

    async def change(self, tenant, member, build):
        state = await self.state(tenant, member)
        if state is None:
            raise NotRegistered
        events = build(state)
        placed = await self.sink.put(tenant, Routed(events=list(events)))
        mine = [json.dumps({"p": p, "o": o, "e": codec.event_to_obj(_masked(e))}, ensure_ascii=False)
                for who, e, p, o in placed if who == member]
        if mine:
            key = _mp(tenant) + "pending:" + member
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *mine)
                pipe.pexpire(key, PENDING_MS)
                await pipe.execute()


def _masked(event):
    """The change as the page keeps it meanwhile: a number typed anew only as its last four digits
    (the engine has it whole, from the inbound topic)."""
    settings = getattr(event, "settings", None)
    phone = getattr(settings, "phone", None)
    if type(event) is ChangeSettings and phone and not phone.startswith(PHONE_KEPT):
        return replace(event, settings=replace(settings, phone=kept_phone(phone)))
    return event


def _with_kept_phone(state, event):
    """A masked change stepped on the masked copy: the engine's rule keeps the number it has, and
    this copy has the new number's last four digits."""
    phone = getattr(getattr(event, "settings", None), "phone", None)
    if type(event) is ChangeSettings and type(state) is MemberState and phone and phone.startswith(PHONE_KEPT):
        return state._replace(settings=replace(state.settings, phone=phone))
    return state


class RedisSessions:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    @staticmethod
    def _key(tenant: str, sid: str) -> str:
        return _mp(tenant) + "session:" + hashlib.sha256(sid.encode()).hexdigest()

    async def start(self, tenant, member, now):
        sid = secrets.token_urlsafe(32)
        key = self._key(tenant, sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"tenant": tenant, "member": member, "csrf": secrets.token_urlsafe(24),
                                    "started": now, "seen": now})
            pipe.pexpire(key, AT_MOST)
            await pipe.execute()
        return sid

    async def find(self, tenant, sid, now):
        if not sid or len(sid) > 100:
            return None
        key = self._key(tenant, sid)
        row = {_s(k): _s(v) for k, v in (await self.redis.hgetall(key)).items()}
        if not row or row.get("tenant") != tenant:
            return None
        if now - int(row["seen"]) > IDLE or now - int(row["started"]) > AT_MOST:
            await self.redis.delete(key)
            return None
        await self.redis.hset(key, "seen", now)
        return Session(tenant, row["member"], row["csrf"])

    async def set_flash(self, tenant, sid, text):
        key = self._key(tenant, sid)
        if await self.redis.exists(key):
            await self.redis.hset(key, "flash", text)

    async def pop_flash(self, tenant, sid):
        key = self._key(tenant, sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, "flash")
            pipe.hdel(key, "flash")
            flash, _ = await pipe.execute()
        return _s(flash) if flash else None
