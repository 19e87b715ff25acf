"""The registry in Redis: the Kafka deployment's (`anpi tenant --redis`, and every Kafka process).

    anpi:tenants            hash: id -> {"name", "created_at"} (JSON)
    anpi:{t}:tenant         hash: the settings' fields (settings.to_obj; quotes as JSON)
    anpi:{t}:look           hash: top_image (bytes), image_type, terms, updated_at
    anpi:tenants:version    moves on every change

A change and its audit row (streams/admin/redis_accounts.py's list, in the tenant's hash slot) go
in one MULTI; the version moves right after it. A process that missed a move (Redis went away
between the two) still reloads within Watch's full reload period.
"""
from __future__ import annotations

import json

from streams.admin import redis_accounts
from streams.tenants import look as looks
from streams.tenants import settings as ts
from streams.tenants.registry import AuditRow, Entry, Exists

ENTRIES, VERSION = "anpi:tenants", "anpi:tenants:version"


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def _settings_key(tenant: str) -> str:
    return f"anpi:{{{tenant}}}:tenant"


def _look_key(tenant: str) -> str:
    return f"anpi:{{{tenant}}}:look"


class RedisRegistry:
    def __init__(self, redis):
        self.redis = redis

    async def entries(self) -> list[Entry]:
        raw = await self.redis.hgetall(ENTRIES)
        return sorted((self._entry(_text(k), v) for k, v in raw.items()), key=lambda e: e.id)

    async def entry(self, tenant):
        raw = await self.redis.hget(ENTRIES, tenant)
        return self._entry(tenant, raw) if raw is not None else None

    @staticmethod
    def _entry(tenant: str, raw) -> Entry:
        obj = json.loads(raw)
        return Entry(tenant, obj["name"], obj["created_at"])

    async def add(self, entry, settings):
        row = json.dumps({"name": entry.name, "created_at": entry.created_at}, ensure_ascii=False)
        if not await self.redis.hsetnx(ENTRIES, entry.id, row):
            raise Exists(entry.id)
        if settings is not None and not await self.redis.exists(_settings_key(entry.id)):
            await self.redis.hset(_settings_key(entry.id), mapping=_fields(settings))
        await self.redis.incr(VERSION)

    async def settings(self, tenant):
        raw = await self.redis.hgetall(_settings_key(tenant))
        if not raw:
            return None
        obj = {_text(k): _text(v) for k, v in raw.items()}
        obj["quotes"] = json.loads(obj["quotes"]) if obj.get("quotes") else None
        for number in ("secret_updated_at", "token_updated_at", "updated_at", "staff_call_limit_hours",
                       "forbid_long_intervals", "hook_updated_at", "retention_days"):
            if obj.get(number) is not None:
                obj[number] = int(obj[number])
        return ts.from_obj(obj)

    async def look(self, tenant):
        raw = await self.redis.hgetall(_look_key(tenant))
        if not raw:
            return None
        obj = {_text(k): v for k, v in raw.items()}
        return looks.Look(obj.get("top_image") or None, _text(obj.get("image_type")) or None,
                          _text(obj.get("terms")) or None, int(obj.get("updated_at", 0)))

    async def save(self, tenant, audit: AuditRow | None, *, settings=None, look=None):
        async with self.redis.pipeline(transaction=True) as pipe:
            if settings is not None:
                pipe.delete(_settings_key(tenant))
                pipe.hset(_settings_key(tenant), mapping=_fields(settings))
            if look is not None:
                pipe.delete(_look_key(tenant))
                pipe.hset(_look_key(tenant), mapping={"top_image": look.top_image or b"",
                                                      "image_type": look.image_type or "",
                                                      "terms": look.terms or "", "updated_at": look.updated_at})
            if audit is not None:
                redis_accounts.audit_commands(pipe, tenant, audit.at, audit.login, audit.action, audit.target, audit.detail)
            await pipe.execute()
        await self.redis.incr(VERSION)

    async def version(self) -> int:
        return int(await self.redis.get(VERSION) or 0)


def _fields(s: ts.TenantSettings) -> dict:
    obj = ts.to_obj(s)
    if "quotes" in obj:
        obj["quotes"] = json.dumps(obj["quotes"], ensure_ascii=False)
    return obj
