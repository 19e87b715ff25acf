"""The subject agent's intake: whole fetches per partition, below Faust's per-event stream.

Faust's consumer hands the conductor one record at a time: a Message, an Event, two tasks for its
`wait_first`, a queue put, the stream's processors, an ack. That is ~0.4 ms a record, a ceiling
of ~2,600/s for an agent that does nothing. The worker keeps Faust's consumer for all else (its
group, static membership, assignment, rebalances and their seeks, a transactional producer per
partition, flow control) and replaces only its drain loop (`Consumer._drain_messages`): each
fetch's records go to `process(partition, records)`, a partition's list at a time, the partitions
of one fetch side by side. `process` commits its batch itself, offsets included, in the
partition's transaction; Faust sees no inbound message, so it acks and commits none.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

import faust

Process = Callable[[int, list], Awaitable[None]]


class BatchApp(faust.App):
    """A Faust app whose consumer drains `intake_topic` by whole fetches into `intake` (both set
    before the worker starts)."""

    intake: Process | None = None
    intake_topic: str | None = None

    def _new_consumer(self):
        consumer = super()._new_consumer()
        if self.intake is not None:
            consumer._drain_messages = functools.partial(drain, consumer, topic=self.intake_topic,
                                                         process=self.intake)
        return consumer


async def drain(consumer, fetcher, topic: str, process: Process) -> None:
    """Faust's drain loop (the Fetcher runs it, and starts it again after a rebalance), by fetches.
    Records of any other topic the consumer reads go to Faust's own handling, one at a time."""
    consumer_stopped, fetcher_stopped = consumer._stopped.is_set, fetcher._stopped.is_set
    try:
        while not (consumer_stopped() or fetcher_stopped()):
            records, active = await consumer._wait_next_records(1.0)
            if records is None or consumer.should_stop:
                await asyncio.sleep(0)
                continue
            if not consumer.flow_active:  # a rebalance began: back to the committed offsets, as Faust does
                await consumer.perform_seek()
                continue
            batches = []
            for tp, batch in records.items():
                if not batch or not (active is None or tp in active):
                    continue
                if tp.topic == topic:
                    batches.append((tp.partition, batch))
                else:  # never a batch of `topic`'s partition of the same number
                    for record in batch:
                        await consumer.callback(consumer._to_message(tp, record))
            if batches:
                # shielded: a rebalance cancels this loop, but a batch half-written would be lost
                # work; it ends (committed, or dropped if its partition moved) under its own locks
                await asyncio.shield(asyncio.gather(*(process(number, batch) for number, batch in batches)))
            else:
                await asyncio.sleep(0)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            return
        raise
