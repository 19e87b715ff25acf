"""The transaction of a source partition, for the subject agent to write a whole batch in.

Faust (faust-streaming 0.15) picks a send's transaction by the *destination* partition, and only for
topics its consumer subscribes to: our effects, outbox and escalations topics are not subscribed, so
their messages went out outside any transaction, and a worker killed after committing a batch's
state but before its effects were sent lost those effects for good. (Its tables had a second gap:
in exactly-once mode recovery takes the changelog's end from `last_stable_offset`, unknown until
the first fetch, and then reads the changelog as empty — robinhood/faust#658; the agent therefore
keeps its states itself, see streams/kafka/changelog.py.)

`PartitionTransactions` hands the agent the transactional producer of the *source* partition and
its lock. The agent sends a batch's effects, then its states, then acks its messages, all under
the lock that Faust's commit takes too: a commit holds all of a batch (effects, states, offsets)
or none of it.
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

    def of(self, number: int) -> Transaction | None:
        """The open transaction of source partition `number`; None once the partition was revoked."""
        group = self.app.assignor.group_for_topic(self.source_topic)
        tid = f"{self.app.conf.id}-{group}-{number}"  # Faust's transactional id for that partition
        producer = self.app.producer._transaction_producers.get(tid)
        lock = self.app.producer._trn_locks.get(tid)
        return None if producer is None or lock is None else Transaction(producer, lock)

    async def wait_for(self, number: int, timeout: float = 60.0) -> Transaction | None:
        """The partition's transaction once Faust has started it; None if the partition is not ours."""
        tp = TP(self.source_topic, number)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            txn = self.of(number)
            if txn is not None:
                return txn
            if tp not in self.app.consumer.assignment():
                return None
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no transaction for partition {number} after {timeout:.0f} s")
            log.info("partition %d: waiting for its transactional producer", number)
            await asyncio.sleep(0.05)
