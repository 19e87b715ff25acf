"""The profiles in Redis (the Kafka runtime's admin screen): anpi:{t}:profiles, a hash member → sealed
profile, in the tenant's slot beside the audit log it is written with."""
from __future__ import annotations

from streams.admin.redis_accounts import audit_commands
from streams.residents.profile import Profile, dumps, loads


def key(tenant: str) -> str:
    return f"anpi:{{{tenant}}}:profiles"


class RedisProfiles:
    def __init__(self, redis):
        self.redis = redis

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
