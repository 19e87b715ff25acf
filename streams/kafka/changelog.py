"""A partition's saved states, read back from its changelog: committed records only.

Read when a worker takes a partition, after Faust has started the partition's transactional
producer (which fences and aborts whatever the previous owner left open). Only committed records
are read (read_committed, up to the last stable offset), so a state from a transaction that never
committed is never loaded: a state comes back only with the effects that led to it.

Besides the subjects' states, the changelog holds one record under APPLIED: the offset of the last
inbound message whose output is in the changelog. Messages at or below it are acked, not stepped
again; Faust's commit may carry a batch's output in a transaction whose offsets stop short of it.
"""
from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

APPLIED = b"~applied"  # not a LINE id (those start with U, C or R)


async def read(bootstrap: str, topic: str, number: int) -> tuple[dict[bytes, bytes], int]:
    """(subject key → state bytes, last applied inbound offset or -1) of changelog partition `number`."""
    # auto_offset_reset="earliest": with the default "latest", a reset already in flight after assign
    # can land after seek_to_beginning, and the partition would read as empty: every subject lost.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                fetch_max_bytes=64 << 20, max_partition_fetch_bytes=64 << 20)
    await consumer.start()
    try:
        tp = TopicPartition(topic, number)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]  # the last stable offset, under read_committed
        states: dict[bytes, bytes] = {}
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=100_000)
            for record in batches.get(tp, ()):
                if record.offset >= end:
                    break
                if record.value is None:
                    states.pop(record.key, None)
                else:
                    states[record.key] = record.value
        applied = states.pop(APPLIED, None)
        return states, int(applied) if applied is not None else -1
    finally:
        await consumer.stop()
