"""The outgoing webhook's queue (streams/hooks/queue.py) in Redis, in the tenant's hash slot:

    anpi:{t}:hooks       hash: key -> JSON (body, first_at, attempts)
    anpi:{t}:hooks:due   sorted set: key -> its next try (or a lease's end while a replica posts it)
"""
from __future__ import annotations

import json

from streams.hooks.queue import LEASE_MS, HookItem
from streams.kafka.held import forget

# KEYS: hash, due; ARGV: now, lease, limit. Flat key, JSON pairs of the due items, each leased.
_DUE = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i = 1, #keys, 2 do
  local raw = redis.call('HGET', KEYS[1], keys[i])
  if raw then
    redis.call('ZADD', KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2]), keys[i])
    table.insert(out, keys[i])
    table.insert(out, raw)
    table.insert(out, keys[i + 1])
  else
    redis.call('ZREM', KEYS[2], keys[i])
  end
end
return out
"""


class RedisHooks:
    def __init__(self, redis, tenant: str):
        self.redis = redis
        self._hash, self._due = f"anpi:{{{tenant}}}:hooks", f"anpi:{{{tenant}}}:hooks:due"
        self._due_script = redis.register_script(_DUE)

    async def add(self, items):
        async with self.redis.pipeline(transaction=True) as pipe:
            for i in items:
                pipe.hsetnx(self._hash, i.key, json.dumps({"body": i.body, "first_at": i.first_at, "attempts": i.attempts},
                                                          ensure_ascii=False))
                pipe.zadd(self._due, {i.key: i.next_at}, nx=True)
            await pipe.execute()

    async def due(self, now, limit=100):
        flat = await self._due_script(keys=[self._hash, self._due], args=[now, LEASE_MS, limit])
        out = []
        for key, raw, score in zip(flat[::3], flat[1::3], flat[2::3]):
            item = json.loads(raw)
            out.append(HookItem(key.decode() if isinstance(key, bytes) else key, item["body"], item["first_at"],
                                item["attempts"], int(float(score))))
        return out

    async def again(self, item, attempts, next_at):
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._hash, item.key, json.dumps({"body": item.body, "first_at": item.first_at,
                                                        "attempts": attempts}, ensure_ascii=False))
            pipe.zadd(self._due, {item.key: next_at})
            await pipe.execute()

    async def done(self, keys):
        await forget(self.redis, self._hash, self._due, keys)
