"""The outgoing webhook's deliveries waiting to be posted (or posted again): the seam.

    the sender, a staff call, reminder or end (agents/hooks.HOOKED) ─▶ add(items), before the batch
        is acked (Kafka) or marked sent (embedded): a crash adds it again, kept once (its key)
    streams/hooks/delivery.py ─▶ due(now) ─▶ POST ─▶ done(keys), or again(key, attempts, when)

    embedded (SQLite)  streams/hooks/in_sqlite.py
    Kafka + Redis      streams/hooks/in_redis.py   every sender replica posts, each item leased
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

LEASE_MS = 60_000


class HookItem(NamedTuple):
    key: str          # the effect id: the Idempotency-Key
    body: str         # exactly the bytes posted (UTF-8 JSON)
    first_at: int     # epoch ms it was first due: retries stop GIVE_UP_AFTER later
    attempts: int = 0
    next_at: int = 0  # epoch ms of the next try


class HookQueue(Protocol):
    async def add(self, items: list[HookItem]) -> None: ...
    async def due(self, now: int, limit: int = 100) -> list[HookItem]: ...
    async def again(self, item: HookItem, attempts: int, next_at: int) -> None: ...
    async def done(self, keys: list[str]) -> None: ...
