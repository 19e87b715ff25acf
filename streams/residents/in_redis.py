"""The profiles in Redis (the Kafka runtime's admin screen): anpi:{t}:profiles, a hash member → sealed
profile, in the tenant's slot beside the audit log it is written with."""
from __future__ import annotations

import json

from streams.admin.redis_accounts import audit_commands
from streams.residents.book import Pending, by_import
from streams.residents.codes import VALID_FOR
from streams.residents.profile import Profile, dumps, loads
from streams.residents.roster import Row
from streams.sealed import seal, unseal

# KEYS: pending, profiles; ARGV: code hash, line user, the profile (sealed). 1 = first link, 2 = again, 0 = no.
_CLAIM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local p = cjson.decode(raw)
local used = p.used_by
if used == cjson.null then used = nil end
if used and used ~= ARGV[2] then return 0 end
if used then return 2 end
p.used_by = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(p))
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


def key(tenant: str) -> str:
    return f"anpi:{{{tenant}}}:profiles"


def pending_key(tenant: str) -> str:
    return f"anpi:{{{tenant}}}:pending"


class RedisProfiles:
    def __init__(self, redis):
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)

    async def get(self, tenant, member):
        raw = await self.redis.hget(key(tenant), member)
        return loads(raw) if raw else None

    async def many(self, tenant, members):
        members = list(dict.fromkeys(members))
        if not members:
            return {}
        raws = await self.redis.hmget(key(tenant), members)
        return {m: loads(raw) for m, raw in zip(members, raws) if raw}

    async def all(self, tenant):
        return {m.decode(): loads(raw) for m, raw in (await self.redis.hgetall(key(tenant))).items()}

    async def put(self, tenant, member, profile: Profile, audit):
        async with self.redis.pipeline(transaction=True) as pipe:
            if profile.empty():
                pipe.hdel(key(tenant), member)
            else:
                pipe.hset(key(tenant), member, dumps(profile))
            audit_commands(pipe, tenant, *audit)
            await pipe.execute()

    async def delete(self, tenant, member):
        await self.redis.hdel(key(tenant), member)

    async def add_pending(self, tenant, entries, at, audit):
        async with self.redis.pipeline(transaction=True) as pipe:
            for h, row in entries:
                pipe.hset(pending_key(tenant), h, json.dumps({"row": seal(row.dumps()), "created_at": at,
                                                              "valid_until": at + VALID_FOR, "used_by": None}))
            audit_commands(pipe, tenant, *audit)
            await pipe.execute()

    async def pending(self, tenant):
        out = []
        for h, raw in (await self.redis.hgetall(pending_key(tenant))).items():
            p = json.loads(raw)
            out.append(Pending(h.decode(), Row.loads(unseal(p["row"])), p["created_at"], p["valid_until"], p["used_by"]))
        return by_import(out)

    async def claim(self, tenant, code_hash, line_user, at):
        raw = await self.redis.hget(pending_key(tenant), code_hash)
        if raw is None:
            return None
        p = json.loads(raw)
        if p["valid_until"] < at or p["used_by"] not in (None, line_user):
            return None
        row = Row.loads(unseal(p["row"]))
        done = await self._claim([pending_key(tenant), key(tenant)], [code_hash, line_user, dumps(row.profile(at, "(名簿)"))])
        return row if int(done) else None
