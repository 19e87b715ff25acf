"""Redis pieces beside the engine: webhook de-duplication and the admin screen's counts.

Keys, all namespaced by tenant so that one tenant's data never mixes with another's:

  anpi:{tenant}:webhook:{webhook_event_id}  "1", expires after a week   first_delivery()
  anpi:{tenant}:label                       hash subject -> label         ReadModel
  anpi:{tenant}:counts                      hash label -> count           ReadModel

Keys and values hold only opaque ids (LINE userIds / groupIds, webhook event ids) and labels such
as "watch:idle": no names, phone numbers or messages.

The read model is fed by an at-least-once consumer, so it must survive replays: it stores each
subject's current label and moves a count only when a subject's label actually changes. Applying
the same updates twice (a replay after a crash) changes nothing.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import redis.asyncio as aioredis

from schemas.tenant import ID as _TENANT
from schemas.tenant import ID_RULE

WEEK = 7 * 24 * 3600
CHUNK = 1000  # (subject, label) pairs per script call: a script blocks the server while it runs
_US = "\x1f"  # between the packed arguments of a script call

_EVENT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise ValueError(f"tenant id {tenant!r}: expected " + ID_RULE)
    return tenant


def webhook_key(tenant: str, webhook_event_id: str) -> str:
    if not isinstance(webhook_event_id, str) or not _EVENT_ID.fullmatch(webhook_event_id):
        raise ValueError(f"webhook event id {webhook_event_id!r}: expected 1-128 characters of letters, "
                         "digits, '.', '-' or '_'")
    return f"anpi:{_tenant(tenant)}:webhook:{webhook_event_id}"


async def first_delivery(redis: aioredis.Redis, tenant: str, webhook_event_id: str,
                         ttl_seconds: int = WEEK) -> bool:
    """True the first time this webhook event is seen for the tenant, False for a redelivery.

    LINE redelivers a webhook it thinks failed, with the same webhookEventId; the key remembers the
    id for `ttl_seconds` (LINE gives up long before a week).
    """
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds={ttl_seconds}: must be positive")
    return bool(await redis.set(webhook_key(tenant, webhook_event_id), b"1", nx=True, ex=ttl_seconds))


# KEYS[1] = the subject -> label hash, KEYS[2] = the label -> count hash
# ARGV[1] = "subject1 US label1 US subject2 US label2 ... US" (US: "\x1f", in neither a subject nor a
#           label); label "" means the subject is gone. One argument, not two per subject: packing
#           each argument is what a client spends most of its time on.
# returns the number of subjects whose label changed
_RECORD = """
local labels, counts = KEYS[1], KEYS[2]
local fields = {}
for field in string.gmatch(ARGV[1], '([^\\31]*)\\31') do
  fields[#fields + 1] = field
end
local changed = 0
for i = 1, #fields, 2 do
  local subject, new = fields[i], fields[i + 1]
  local old = redis.call('HGET', labels, subject) or ''
  if old ~= new then
    if old ~= '' and redis.call('HINCRBY', counts, old, -1) == 0 then
      redis.call('HDEL', counts, old)
    end
    if new == '' then
      redis.call('HDEL', labels, subject)
    else
      redis.call('HSET', labels, subject, new)
      redis.call('HINCRBY', counts, new, 1)
    end
    changed = changed + 1
  end
end
return changed
"""


class ReadModel:
    """Per-tenant counts of subjects by label (agents/readside.label), kept idempotently."""

    def __init__(self, redis: aioredis.Redis):
        self._redis = redis
        self._record = redis.register_script(_RECORD)

    @staticmethod
    def keys(tenant: str) -> tuple[str, str]:
        tenant = _tenant(tenant)
        return f"anpi:{tenant}:label", f"anpi:{tenant}:counts"

    async def record_many(self, tenant: str, updates: Mapping[str, str]) -> int:
        """Set each subject's label ("" = the subject is gone); returns how many labels changed.

        One round trip: one script call per CHUNK pairs, pipelined when there are several. Each
        chunk applies atomically; the batch as a whole need not, since re-applying it is harmless.
        """
        keys = self.keys(tenant)
        args: list[str] = []
        for subject, label in updates.items():
            if not isinstance(subject, str) or not subject or _US in subject:
                raise ValueError(f"subject {subject!r}: expected a non-empty string without \\x1f")
            if not isinstance(label, str) or _US in label:
                raise ValueError(f"label {label!r} of {subject!r}: expected a string without \\x1f")
            args += (subject, label)
        if not args:
            return 0
        chunks = [_US.join(args[i:i + 2 * CHUNK]) + _US for i in range(0, len(args), 2 * CHUNK)]
        if len(chunks) == 1:
            return int(await self._record(keys, [chunks[0]]))
        async with self._redis.pipeline(transaction=False) as pipe:
            for chunk in chunks:
                await self._record(keys, [chunk], client=pipe)
            return sum(int(n) for n in await pipe.execute())

    async def counts(self, tenant: str) -> dict[str, int]:
        """Label -> number of subjects with it; labels nobody has are left out."""
        raw = await self._redis.hgetall(self.keys(tenant)[1])
        out = {}
        for label, count in raw.items():
            if isinstance(label, bytes):
                label = label.decode()
            if int(count):
                out[label] = int(count)
        return out
