"""Held deliveries (streams/line/held.py) in Redis, per tenant, in the tenant's hash slot:

    anpi:{t}:held        hash: key -> JSON (release_at, to, effect_id, messages, cancelled)
    anpi:{t}:held:due    sorted set: key -> when it is next to be looked at (its release, a lease's
                         end while one replica sends it, or a tombstone's end once cancelled)

Every `anpi sender` replica runs the release: `due` leases each item it returns (the score moves
LEASE_MS on), so one replica sends it at a time; one that dies mid-send leaves it for the next after
the lease, which sends it with the same retry key (LINE answers 409 if it had arrived).
"""
from __future__ import annotations

import json

from streams.line.held import LEASE_MS, TOMBSTONE_MS, HeldItem

# KEYS: hash, due; ARGV: now, lease ms, limit. The due items' JSON, each leased.
_DUE = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, key in ipairs(keys) do
  local raw = redis.call('HGET', KEYS[1], key)
  if raw then
    redis.call('ZADD', KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2]), key)
    table.insert(out, key)
    table.insert(out, raw)
  else
    redis.call('ZREM', KEYS[2], key)
  end
end
return out
"""

# KEYS: hash, due; ARGV: tombstone ms, keys… Cancelled: kept (to be found) until a day past release.
_CANCEL = """
for i = 2, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  if raw then
    local item = cjson.decode(raw)
    if not item.cancelled then
      item.cancelled = true
      redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(item))
      redis.call('ZADD', KEYS[2], item.release_at + tonumber(ARGV[1]), ARGV[i])
    end
  end
end
return 1
"""


class RedisHeld:
    def __init__(self, redis, tenant: str):
        self.redis, self.tenant = redis, tenant
        self._hash, self._due = f"anpi:{{{tenant}}}:held", f"anpi:{{{tenant}}}:held:due"
        self._due_script = redis.register_script(_DUE)
        self._cancel_script = redis.register_script(_CANCEL)

    async def hold(self, items):
        async with self.redis.pipeline(transaction=True) as pipe:
            for i in items:
                pipe.hsetnx(self._hash, i.key, json.dumps({"release_at": i.release_at, "to": i.to, "effect_id": i.effect_id,
                                                           "messages": list(i.messages)}, ensure_ascii=False))
                pipe.zadd(self._due, {i.key: i.release_at}, nx=True)
            await pipe.execute()

    async def held(self, keys):
        if not keys:
            return set()
        values = await self.redis.hmget(self._hash, keys)
        return {key for key, value in zip(keys, values) if value is not None}

    async def cancel(self, keys):
        if keys:
            await self._cancel_script(keys=[self._hash, self._due], args=[TOMBSTONE_MS, *keys])

    async def due(self, now, limit=500):
        flat = await self._due_script(keys=[self._hash, self._due], args=[now, LEASE_MS, limit])
        out = []
        for key, raw in zip(flat[::2], flat[1::2]):
            item = json.loads(raw)
            out.append(HeldItem(key.decode() if isinstance(key, bytes) else key, item["release_at"], item["to"],
                                item["effect_id"], tuple(item["messages"]), bool(item.get("cancelled"))))
        return out

    async def done(self, keys):
        await forget(self.redis, self._hash, self._due, keys)


async def forget(redis, items: str, due: str, keys: list[str]) -> None:
    """Take `keys` out of a hash of items and the sorted set of when each is due (both, or neither)."""
    if keys:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hdel(items, *keys)
            pipe.zrem(due, *keys)
            await pipe.execute()
