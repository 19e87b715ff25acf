"""The watcher's store on the Kafka deployment (`anpi jma watch --kafka`): Redis, and the inbound topic.

    anpi:{t}:jma    string: tenant t's trigger.Memory, as JSON (Memory.to_obj)
    anpi:jma:seen   sorted set: the feed's entry ids already handled, scored by when (epoch ms);
                    the newest SEEN_KEEP are kept

Tenants and their areas are the registry's (streams/tenants/in_redis.py). A memory and its audit
rows (streams/admin/redis_accounts.py's list, in the same hash slot) go in one MULTI.

A roll-call goes onto `<prefix>-inbound`, one record per partition (records.rollcall_messages: each
partition applies it to its own subjects), named as the ingress names its tenant's records (the
home tenant, named like the prefix, bare; any other with its id: records.Naming), so the worker
reads it under the right tenant. Idempotent producer, acks from all in-sync replicas, every send
awaited: when `start` returns the roll-call is on the broker.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from schemas.events import RollCall
from streams.admin import redis_accounts
from streams.jma.trigger import Memory
from streams.jma.watch import SEEN_KEEP, quake_tenants
from streams.kafka.records import Naming
from streams.kafka.settings import Settings
from streams.tenants.in_redis import RedisRegistry
from streams.tenants.registry import AuditRow
from streams.tenants.settings import QuakeConfig

SEEN = "anpi:jma:seen"
SEND_SECONDS = 60.0   # a broker that has not acknowledged by then: the round fails, and is tried again


def memory_key(tenant: str) -> str:
    return f"anpi:{{{tenant}}}:jma"


class KafkaQuakeStore:
    """`await stop()` when done: the producer is started on the first roll-call."""

    def __init__(self, settings: Settings, redis, keep: int = SEEN_KEEP):
        self.settings, self.redis, self.keep = settings, redis, keep
        self.registry = RedisRegistry(redis)
        self.naming = Naming(settings.prefix)
        self._producer: AIOKafkaProducer | None = None
        self._checked = False

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def tenants(self) -> list[tuple[str, QuakeConfig]]:
        return await quake_tenants(self.registry)

    async def memory(self, tenant: str) -> Memory:
        raw = await self.redis.get(memory_key(tenant))
        return Memory.from_obj(json.loads(raw)) if raw else Memory()

    async def save(self, tenant: str, memory: Memory, audit: Iterable[AuditRow] = ()) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(memory_key(tenant), json.dumps(memory.to_obj(), ensure_ascii=False, separators=(",", ":")))
            for row in audit:
                redis_accounts.audit_commands(pipe, tenant, row.at, row.login, row.action, row.target, row.detail)
            await pipe.execute()

    async def seen(self) -> set[str]:
        return {v.decode() if isinstance(v, bytes) else v for v in await self.redis.zrange(SEEN, 0, -1)}

    async def mark_seen(self, ids: Iterable[str], at: int) -> None:
        ids = list(ids)
        if not ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(SEEN, {entry: at for entry in ids}, gt=True)   # an id's time only moves on
            pipe.zremrangebyrank(SEEN, 0, -self.keep - 1)
            await pipe.execute()

    async def start(self, tenant: str, rollcall: RollCall) -> None:
        producer = await self._started()
        inbound, partitions = self.settings.inbound, self.settings.partitions
        await self._check_partitions(producer, inbound, partitions)
        # named as the ingress names the tenant's records (none for the home tenant, the id for any other)
        pending = [await producer.send(inbound, value, key=key or None, partition=number)
                   for number, key, value in self.naming.rollcall_messages(tenant, rollcall, partitions)]
        await asyncio.wait_for(asyncio.gather(*pending), SEND_SECONDS)

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka, acks="all", enable_idempotence=True,
                                        linger_ms=2, request_timeout_ms=30_000)
            try:
                await producer.start()   # raises while the broker is away: the round fails, the next tries again
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _check_partitions(self, producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
        """The roll-call must reach every partition's subjects, and a record for a partition the
        topic lacks cannot be sent: a topic of another size is refused (as the ingress refuses it)."""
        if self._checked:
            return
        found = await producer.partitions_for(topic)
        if len(found) != partitions:
            raise RuntimeError(f"topic {topic} has {len(found)} partitions; the watcher sends roll-calls to "
                               f"{partitions} (ANPI_PARTITIONS)")
        self._checked = True
