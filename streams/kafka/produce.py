"""Records written as whole produce batches: what a partition batch's output costs per record.

`producer.send` builds a future, a message and an accumulator entry per record (~0.1 ms each in
aiokafka); a `BatchBuilder` appends a record in a few µs. `Output` gathers a batch's records per
topic in the order they are added and `flush` sends each topic's list as few batches as fit, in
that order, into the producer's open transaction.
"""
from __future__ import annotations

import asyncio

Headers = list[tuple[str, bytes]]       # a list: aiokafka's record builder takes no other sequence
Record = tuple[bytes, bytes, Headers]   # key, value, headers
NO_HEADERS: Headers = []                # shared, never changed


class Output:
    """One partition batch's records, per topic, in order."""

    def __init__(self, partition: int):
        self.partition = partition
        self.topics: dict[str, list[Record]] = {}

    def add(self, topic: str, value: bytes, key: bytes = b"", headers: Headers = NO_HEADERS) -> None:
        """`key` b"": a partition's own record (a mark, a tick), as every writer here keys them."""
        items = self.topics.get(topic)
        if items is None:
            items = self.topics[topic] = []
        items.append((key, value, headers))

    async def flush(self, producer) -> dict[str, int]:
        """Every record sent, and acknowledged by the broker (or the error raised): per topic, the
        offset just past its last record."""
        futures, counts, topics = [], [], []
        for topic, items in self.topics.items():
            sent = await send_batched(producer, topic, self.partition, items)
            if sent:
                futures += sent
                topics.append(topic)
                counts.append((len(futures) - 1, sent[-1][1]))
        self.topics = {}
        answers = await asyncio.gather(*(future for future, _ in futures))
        return {topic: answers[i].offset + n for topic, (i, n) in zip(topics, counts)}


async def send_batched(producer, topic: str, partition: int, items: list[Record]) -> list:
    """Queue `items` on (topic, partition) as few produce batches as fit, in order: (future, records)
    of each (the future's answer has the batch's first offset)."""
    sent = []
    batch = producer.create_batch()
    for key, value, headers in items:
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full: send it
            n = batch.record_count()
            sent.append((await producer.send_batch(batch, topic, partition=partition), n))
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a record of {len(value)} bytes is larger than a produce batch")
    n = batch.record_count()
    if n:
        sent.append((await producer.send_batch(batch, topic, partition=partition), n))
    return sent
