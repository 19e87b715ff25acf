"""The transaction of a source partition, for the subject agent to write a whole batch in.

Faust (faust-streaming 0.15) picks a send's transaction by the *destination* partition, and only for
topics its consumer subscribes to: our effects, outbox and escalations topics are not subscribed, so
their messages went out outside any transaction, and a worker killed after committing a batch's
state but before its effects were sent lost those effects for good. (Its tables had a second gap:
in exactly-once mode recovery takes the changelog's end from `last_stable_offset`, unknown until
the first fetch, and then reads the changelog as empty — robinhood/faust#658; the agent therefore
keeps its states itself, see streams/kafka/changelog.py.)

`PartitionTransactions` hands the agent the transactional producer of the *source* partition and
its lock. The agent sends a batch's effects and states, adds the offset past its messages and
commits, all under the lock that Faust's rebalance takes too: a commit holds all of a batch
(effects, states, offsets) or none of it.
"""
from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP

log = logging.getLogger("anpi.worker")


class Transaction(NamedTuple):
    producer: AIOKafkaProducer
    lock: asyncio.Lock


class PartitionTransactions:
    def __init__(self, app: faust.App, source_topic: str):
        self.app, self.source_topic = app, source_topic

    def _tid(self, number: int) -> str:
        group = self.app.assignor.group_for_topic(self.source_topic)
        return f"{self.app.conf.id}-{group}-{number}"  # Faust's transactional id for that partition

    def of(self, number: int) -> Transaction | None:
        """The open transaction of source partition `number`; None once the partition was revoked."""
        tid = self._tid(number)
        producer = self.app.producer._transaction_producers.get(tid)
        lock = self.app.producer._trn_locks.get(tid)
        return None if producer is None or lock is None else Transaction(producer, lock)

    def owns(self, number: int) -> bool:
        """Source partition `number` is assigned to this worker now."""
        return TP(self.source_topic, number) in self.app.consumer.assignment()

    async def close(self, number: int) -> None:
        """Stop partition `number`'s producer at a rebalance, its transaction left open, whether or
        not the partition comes back.

        Faust keeps the producer of a partition it assigns again, and its open transaction with it:
        output of batches whose offsets were not committed. The consumer then reads those batches
        again from the committed offset and the agent, starting over from the changelog, steps
        them again: into the same transaction, which commits both copies (a broker restart rejoins
        the group like this: thousands of effects twice). A partition assigned again now gets a
        new producer, as after a restart: its start fences this one and aborts the open
        transaction, and only then is the changelog read (streams/kafka/changelog.py)."""
        txn = self.of(number)
        if txn is None:
            return
        async with txn.lock:  # not while a batch or Faust's commit is writing in it
            await self.app.producer.stop_transaction(self._tid(number))

    async def wait_for(self, number: int, timeout: float = 60.0) -> Transaction | None:
        """The partition's transaction once Faust has started it; None if the partition is not ours."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            txn = self.of(number)
            if txn is not None:
                return txn
            if not self.owns(number):
                return None
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no transaction for partition {number} after {timeout:.0f} s")
            log.info("partition %d: waiting for its transactional producer", number)
            await asyncio.sleep(0.05)
