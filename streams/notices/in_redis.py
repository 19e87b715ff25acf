"""Notices in Redis (book.Notices), for the Kafka runtime: the admin screen (`anpi admin serve`)
commits them, every `anpi sender` replica delivers them.

Keys of a tenant, in its hash slot (`anpi:{t}:`, as the read side's and the staff's, so that a
notice, its audit row and its billing are written together):

    anpi:{t}:notices:index          zset notice id -> created_at
    anpi:{t}:notices:n:<id>         hash: book.COLUMNS ("" for none) and `left` (chunks pending)
    anpi:{t}:notices:c:<id>         hash chunk -> {"endpoint", "size", "state", "status"} (JSON)
    anpi:{t}:notices:to:<id>        hash chunk -> its recipients, space-separated
    anpi:{t}:notices:pending        zset "<id>:<chunk, 6 digits>" by created_at: what is left to deliver
    anpi:{t}:notices:claim:<id>:<chunk>   the replica delivering it (expires: CLAIM_MS)

Recipients are chosen from the worker's read model (streams/kafka/redis_store.py: subject -> label), the
same labels the embedded store computes from its states.
"""
from __future__ import annotations

import json
import uuid

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from agents import notices as nt
from agents import readside as rs
from streams.kafka import readside
from streams.admin import redis_accounts
from streams.notices.book import COLUMNS, DONE, FAILED, PENDING, SENDING, SENT, Work, segment_record
from streams.kafka.redis_store import ReadModel
from streams.tenants.registry import AuditRow

SCAN = 5_000   # labels per HSCAN call

# KEYS: chunks, notice, pending, usage, group; ARGV: chunk, state, status, at, pending member, usage TTL ms.
_FINISH = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local c = cjson.decode(raw)
if c.state ~= 'pending' then return 0 end
c.state = ARGV[2]
if ARGV[3] ~= '' then c.status = tonumber(ARGV[3]) end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(c))
redis.call('ZREM', KEYS[3], ARGV[5])
if ARGV[2] == 'sent' then
  redis.call('HINCRBY', KEYS[2], 'sent', c.size)
  local n = c.size
  if c.endpoint == 'push' then n = math.max(1, tonumber(redis.call('HGET', KEYS[5], 'roster') or '0')) end
  redis.call('INCRBY', KEYS[4], n)
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
else
  redis.call('HINCRBY', KEYS[2], 'failed', c.size)
end
if redis.call('HINCRBY', KEYS[2], 'left', -1) <= 0 then
  redis.call('HSET', KEYS[2], 'state', 'done', 'finished_at', ARGV[4])
end
return 1
"""

# KEYS: claim; ARGV: owner, ttl ms. 1 if the claim is (now) this owner's.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_INTS = ("created_at", "total", "sent", "failed", "finished_at")


def prefix(tenant: str) -> str:
    return readside.prefix(tenant)[:-len("rs:")] + "notices:"


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _member(work: Work) -> str:
    return f"{work.notice}:{work.chunk:06d}"


class RedisNotices:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis
        self.owner = uuid.uuid4().hex   # this process, in its claims
        self._finish = redis.register_script(_FINISH)
        self._claim = redis.register_script(_CLAIM)
        self._messages: dict[tuple[str, str], list[dict]] = {}

    async def choose(self, tenant, segment):
        users, groups = [], []
        labels = ReadModel.keys(tenant)[0]
        cursor = 0
        while True:
            cursor, page = await self.redis.hscan(labels, cursor, count=SCAN)
            for subject, label in page.items():
                label = _s(label)
                if nt.selects(segment, label):
                    (groups if label.startswith(nt.GROUP + ":") else users).append(_s(subject))
            if not cursor:
                return users, groups

    async def commit(self, tenant, notice_id, d, users, groups, created_by, at, audit: AuditRow | None = None):
        plan = nt.chunks(users, groups)
        total = sum(len(c.recipients) for c in plan)
        p = prefix(tenant)
        key = p + "n:" + notice_id
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                if await pipe.exists(key):
                    return False
                pipe.multi()
                pipe.hset(key, mapping={
                    "id": notice_id, "tenant": tenant, "kind": d.kind, "title": d.title, "body": d.body,
                    "segment": _dump(segment_record(d)), "messages": _dump(nt.messages(d)), "created_by": created_by,
                    "created_at": at, "total": total, "sent": 0, "failed": 0, "state": SENDING if plan else DONE,
                    "finished_at": "" if plan else at, "left": len(plan)})
                pipe.zadd(p + "index", {notice_id: at})
                for c in plan:
                    pipe.hset(p + "c:" + notice_id, str(c.index),
                              _dump({"endpoint": c.endpoint, "size": len(c.recipients), "state": PENDING}))
                    pipe.hset(p + "to:" + notice_id, str(c.index), " ".join(c.recipients))
                if plan:
                    pipe.zadd(p + "pending", {f"{notice_id}:{c.index:06d}": at for c in plan})
                if audit is not None:
                    redis_accounts.audit_commands(pipe, tenant, audit.at, audit.login, audit.action, audit.target,
                                                  audit.detail)
                await pipe.execute()
            except WatchError:   # committed meanwhile, by the same form sent twice
                return False
        return True

    async def get(self, tenant, notice_id):
        raw = await self.redis.hgetall(prefix(tenant) + "n:" + notice_id)
        return _row(raw, tenant)

    async def recent(self, tenant, limit=30):
        p = prefix(tenant)
        ids = [_s(i) for i in await self.redis.zrevrange(p + "index", 0, limit - 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for notice_id in ids:
                pipe.hgetall(p + "n:" + notice_id)
            rows = await pipe.execute() if ids else []
        return [row for row in (_row(raw, tenant) for raw in rows) if row is not None]

    async def pending(self, tenant, limit):
        p = prefix(tenant)
        members = [_s(m) for m in await self.redis.zrange(p + "pending", 0, limit - 1)]
        keys = [m.rpartition(":") for m in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            for notice_id, _, chunk in keys:
                pipe.hget(p + "c:" + notice_id, str(int(chunk)))
            metas = await pipe.execute() if keys else []
        out = []
        for (notice_id, _, chunk), meta in zip(keys, metas):
            if meta is not None:
                c = json.loads(meta)
                out.append(Work(notice_id, int(chunk), c["endpoint"], int(c["size"])))
        return out

    async def recipients(self, tenant, work):
        raw = await self.redis.hget(prefix(tenant) + "to:" + work.notice, str(work.chunk))
        return sorted(_s(raw).split()) if raw else []

    async def messages(self, tenant, notice_id):
        messages = self._messages.get((tenant, notice_id))
        if messages is None:
            raw = await self.redis.hget(prefix(tenant) + "n:" + notice_id, "messages")
            messages = self._messages[(tenant, notice_id)] = json.loads(raw)
        return messages

    async def claim(self, tenant, work, ttl_ms):
        key = prefix(tenant) + f"claim:{work.notice}:{work.chunk}"
        return bool(await self._claim([key], [self.owner, ttl_ms]))

    async def finish(self, tenant, work, accepted, status, at):
        p, rsp = prefix(tenant), readside.prefix(tenant)
        group = ""
        if work.endpoint == "push":
            group = (await self.recipients(tenant, work) or [""])[0]
        await self._finish([p + "c:" + work.notice, p + "n:" + work.notice, p + "pending",
                            rsp + "usage:" + rs.month_of(at), rsp + "group:" + group],
                           [str(work.chunk), SENT if accepted else FAILED, "" if status is None else status, at,
                            _member(work), readside.DAILY_DAYS * 86_400_000])

    async def chunk_states(self, tenant, notice_id):
        states: dict[str, int] = {}
        for raw in await self.redis.hvals(prefix(tenant) + "c:" + notice_id):
            state = json.loads(raw)["state"]
            states[state] = states.get(state, 0) + 1
        return states


def _row(raw: dict, tenant: str) -> dict | None:
    row = {_s(k): _s(v) for k, v in raw.items()}
    if not row or row.get("tenant") != tenant:
        return None
    out: dict = {name: row.get(name) for name in COLUMNS}
    for name in _INTS:
        out[name] = int(out[name]) if out[name] not in (None, "") else None
    out["segment"] = json.loads(out["segment"])
    out["messages"] = json.loads(out["messages"])
    return out


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
