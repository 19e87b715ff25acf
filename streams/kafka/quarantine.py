"""The Kafka runtime's quarantine: the `<prefix>-quarantine` topic (streams/quarantine.py says why).

The subject agent writes one record per message it sets aside, in the transaction of the batch that
passes it, on the partition it came from:

    {"id": "<partition>:<offset>[:<subject>]", "partition", "offset", "subject", "record" (the
     message as text; base64 with "encoding": "base64" when it was not UTF-8), "kind", "reason",
     "at" (the partition's last tick, epoch ms)}

`anpi quarantine retry ID` puts the record back on the inbound topic (same partition and key) and
writes {"id", "retried": true} beside it, in one transaction: either both or neither.
"""
from __future__ import annotations

import base64
import binascii

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams import codec
from streams.kafka.settings import Settings
from streams.quarantine import Entry


def stored(value: bytes | None) -> dict:
    """How a message's bytes are kept in a quarantine record."""
    if value is None:
        return {"record": None}
    try:
        return {"record": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"record": base64.b64encode(value).decode(), "encoding": "base64"}


def original(obj: dict) -> bytes | None:
    """The message bytes a quarantine record kept."""
    record = obj.get("record")
    if record is None:
        return None
    try:
        return base64.b64decode(record) if obj.get("encoding") == "base64" else record.encode("utf-8")
    except (binascii.Error, UnicodeEncodeError):
        return None


async def records(settings: Settings) -> list[dict]:
    """Every committed record of the quarantine topic, in partition and offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    try:
        if settings.quarantine not in await consumer.topics():
            return []  # the worker makes it on start: no worker has run for this prefix yet
        parts = [TopicPartition(settings.quarantine, n) for n in range(settings.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: dict[TopicPartition, list[dict]] = {tp: [] for tp in parts}
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, batch in batches.items():
                out[tp] += [codec.loads(r.value) for r in batch if r.offset < ends[tp]]
        return [obj for tp in parts for obj in out[tp]]
    finally:
        await consumer.stop()


async def entries(settings: Settings) -> list[Entry]:
    objs = await records(settings)
    retried = {obj["id"] for obj in objs if obj.get("retried")}
    return [Entry(obj["id"], obj.get("subject") or "", obj.get("record") or "", obj["kind"], obj["reason"],
                  obj.get("at"), obj["id"] in retried)
            for obj in objs if not obj.get("retried")]


async def retry(settings: Settings, entry_id: str) -> bool:
    """Put a held entry back on the inbound topic; False if there is no such entry held."""
    objs = await records(settings)
    if any(obj["id"] == entry_id and obj.get("retried") for obj in objs):
        return False
    found = next((obj for obj in objs if obj["id"] == entry_id and not obj.get("retried")), None)
    if found is None:
        return False
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all", enable_idempotence=True,
                                transactional_id=f"{settings.prefix}-quarantine-retry")
    await producer.start()
    try:
        async with producer.transaction():
            subject = found.get("subject") or ""
            await producer.send(settings.inbound, original(found), key=subject.encode() or None,
                                partition=found["partition"])
            await producer.send(settings.quarantine, codec.dumps({"id": entry_id, "retried": True}),
                                key=entry_id.encode(), partition=found["partition"])
    finally:
        await producer.stop()
    return True
