"""Records written as whole produce batches: what a partition batch's output costs per record.

`producer.send` builds a future, a message and an accumulator entry per record (~0.1 ms each in
aiokafka); a `BatchBuilder` appends a record in a few µs. `Output` gathers a batch's records per
topic in the order they are added and `flush` sends each topic's list as few batches as fit, in
that order, into the producer's open transaction.
"""
from __future__ import annotations

import asyncio


class Output:
    """One partition batch's records, per topic, in order."""

    def __init__(self, partition: int):
        self.partition = partition
        self.topics: dict[str, list[tuple[bytes, bytes]]] = {}

    def add(self, topic: str, value: bytes, key: bytes = b"") -> None:
        """`key` b"": a partition's own record (a mark, a tick), as every writer here keys them."""
        items = self.topics.get(topic)
        if items is None:
            items = self.topics[topic] = []
        items.append((key, value))

    async def flush(self, producer) -> None:
        """Every record sent, and acknowledged by the broker (or the error raised)."""
        futures = []
        for topic, items in self.topics.items():
            futures += await send_batched(producer, topic, self.partition, items)
        self.topics = {}
        await asyncio.gather(*futures)


async def send_batched(producer, topic: str, partition: int, items: list[tuple[bytes, bytes]]) -> list:
    """Queue `items` on (topic, partition) as few produce batches as fit, in order: their futures."""
    sent = []
    batch = producer.create_batch()
    for key, value in items:
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
            sent.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes is larger than a produce batch")
    if batch.record_count():
        sent.append(await producer.send_batch(batch, topic, partition=partition))
    return sent
