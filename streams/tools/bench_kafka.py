"""`anpi bench kafka`: the subject agent on the real broker, beside a bare aiokafka loop doing the
same shape of work in the same run.

Both get the same inbound messages on fresh topics of their own, one consumer process each (the
agent: `anpi worker`; the bare loop: this module run as a child), and are timed the same way: from
the first message of a phase produced to the echo of that phase's flush tick on every partition.

    register  n members, a tick at the start (not timed: it builds the state)
    tick      one tick at 22:00 that finds every member's daily check due: n `check_sent`
    taps      n OK taps, each closing its open check: n events, each an effect and a state

The bare loop reads a fetch with `getmany`, decodes each record, writes three records per input
(an effect, an outbox record, a state; per registered subject for a tick) in one transaction per
partition batch with `send_offsets_to_transaction`, batch-produced: what the agent must do at
the least, without the engine. The ratio agent / bare is the figure issue 13 aims at (≥ 0.6).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
import uuid

from streams import codec
from streams.kafka import changelog
from streams.kafka.produce import NO_HEADERS, send_batched

DAY_END = 22 * 60 * 60_000  # 22:00 JST from the bench's start (00:00): every check (06:00–21:45) is due


# --- the bare loop (a child process) ---------------------------------------------------------------

async def _bare(settings) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    group = f"{settings.prefix}-bare"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, group_id=group, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20)
    await consumer.start()
    parts = [TopicPartition(settings.inbound, n) for n in range(settings.partitions)]
    consumer.assign(parts)
    producers = {}
    for tp in parts:  # one transactional producer per partition, as the worker has
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, transactional_id=f"{group}-{tp.partition}",
                                    max_batch_size=512 << 10, linger_ms=0)
        await producer.start()
        await producer.begin_transaction()
        producers[tp.partition] = producer
    subjects: dict[int, list[bytes]] = {tp.partition: [] for tp in parts}

    async def one(tp, records) -> None:
        producer = producers[tp.partition]
        out: dict[str, list[tuple[bytes, bytes]]] = {settings.effects: [], settings.outbox: [],
                                                     settings.changelog: []}
        for record in records:
            obj = codec.loads(record.value)
            if "tick" in obj:
                for key in subjects[tp.partition]:
                    _three(out, settings, key, obj["tick"])
                if "flush" in obj:
                    out[settings.effects].append((b"", codec.dumps({"flush": obj["flush"],
                                                                    "partition": tp.partition}), NO_HEADERS))
            else:
                if obj["event"].get("type") == "register":
                    subjects[tp.partition].append(record.key)
                _three(out, settings, record.key, obj["event"].get("at"))
        futures = []
        for topic, items in out.items():
            futures += await send_batched(producer, topic, tp.partition, items)
        await asyncio.gather(*(future for future, _ in futures))
        await producer.send_offsets_to_transaction({tp: records[-1].offset + 1}, group)
        await producer.commit_transaction()
        await producer.begin_transaction()

    while True:
        batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
        await asyncio.gather(*(one(tp, records) for tp, records in batches.items() if records))


def _three(out: dict, settings, key: bytes, at) -> None:
    subject = key.decode()
    effect = codec.dumps({"id": f"{subject}:{at}:e", "effect": "check_sent", "subject": subject, "at": at,
                          "cycle": 1, "data": {}})
    out[settings.effects].append((key, effect, NO_HEADERS))
    out[settings.outbox].append((key, effect, NO_HEADERS))
    out[settings.changelog].append((key, codec.dumps({"subject": subject, "due": at, "cycle": 1, "open": at}),
                                    changelog.due_header(at)))


# --- the driver -----------------------------------------------------------------------------------

def kafka_bench(n: int, only: str | None = None) -> str:
    """n members through the agent and through the bare loop: ticks and taps per second, and the ratio."""
    from streams.kafka.settings import Settings

    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    base = Settings.from_env()
    out = {"bench": "kafka", "members": n, "partitions": base.partitions}
    for kind in ("agent", "bare"):
        if only in (None, kind):
            out[kind] = asyncio.run(_phases(base, n, kind))
    if only is None:
        out["ratio_tick"] = round(out["agent"]["tick_per_second"] / out["bare"]["tick_per_second"], 2)
        out["ratio_taps"] = round(out["agent"]["taps_per_second"] / out["bare"]["taps_per_second"], 2)
    out["python"] = platform.python_version()
    return json.dumps(out)


async def _phases(base, n: int, kind: str) -> dict:
    from schemas.events import Ok
    from streams.kafka.feed import event_message, tick_messages
    from streams.kafka.simulate import KafkaRun
    from streams.tools.bench_core import START, members

    run = KafkaRun(base)
    s = run.settings
    await run.create_topics()
    try:
        if kind == "agent":
            run.start_worker()
        else:  # the worker declares its changelog itself; the bare loop writes to one made here
            await _create_changelog(s)
            run.worker = subprocess.Popen([sys.executable, "-m", "streams.tools.bench_kafka", "bare"],
                                          env={**os.environ, **s.env()}, start_new_session=True)
        ids = [r.settings.id for r in members(n)]
        phases = {"register": [*(event_message(r.settings.id, r, s.partitions) for r in members(n))],
                  "tick": [*tick_messages(START + DAY_END, s.partitions)],
                  "taps": [event_message(i, Ok(START + DAY_END + 60_000, i), s.partitions) for i in ids]}
        at = {"register": START, "tick": START + DAY_END, "taps": START + DAY_END + 60_000}
        reader = _FlushReader(s)
        await reader.start()
        seconds = {}
        try:
            for phase, messages in phases.items():
                flush = uuid.uuid4().hex
                began = time.perf_counter()
                await _produce(s, [*messages, *tick_messages(at[phase], s.partitions, flush)])
                await reader.wait(flush, run)
                seconds[phase] = time.perf_counter() - began
        finally:
            await reader.stop()
        rss = rss_mib(run.worker.pid)
    finally:
        run.kill_worker()
        await run.delete_topics()
    return {"register_seconds": round(seconds["register"], 2),
            "tick_seconds": round(seconds["tick"], 2), "tick_per_second": round(n / seconds["tick"]),
            "taps_seconds": round(seconds["taps"], 2), "taps_per_second": round(n / seconds["taps"]),
            "rss_mib": rss}


async def _create_changelog(settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.changelog, settings.partitions, 1,
                                            topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def _produce(settings, messages) -> None:
    """The phase's messages, batch-produced: the driver must not be what is measured."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all", enable_idempotence=True,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        by_partition: dict[int, list] = {}
        for number, key, value in messages:
            by_partition.setdefault(number, []).append((key, value, NO_HEADERS))
        futures = []
        for number, items in by_partition.items():
            futures += await send_batched(producer, settings.inbound, number, items)
        await asyncio.gather(*(future for future, _ in futures))
    finally:
        await producer.stop()


class _FlushReader:
    """The effects topic, read committed, for flush echoes only (a byte test before any decoding)."""

    def __init__(self, settings):
        self.settings = settings
        self.flushed: dict[str, set[int]] = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        s = self.settings
        self.consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka, enable_auto_commit=False,
                                         isolation_level="read_committed", auto_offset_reset="earliest",
                                         max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
        await self.consumer.start()
        parts = [TopicPartition(s.effects, n) for n in range(s.partitions)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    async def wait(self, flush: str, run, timeout: float = 3600) -> None:
        token = flush.encode()
        deadline = time.monotonic() + timeout
        while len(self.flushed.get(flush, ())) < self.settings.partitions:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=50_000)
            for records in batches.values():
                for record in records:
                    if not record.key and b'"flush"' in record.value:
                        obj = codec.loads(record.value)
                        self.flushed.setdefault(obj["flush"], set()).add(obj["partition"])
            if run.worker.poll() is not None:
                raise RuntimeError(f"the consumer exited with {run.worker.returncode}; log: {run.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no flush {token!r} within {timeout:.0f} s")

    async def stop(self) -> None:
        await self.consumer.stop()


if __name__ == "__main__" and sys.argv[1:] == ["bare"]:
    from streams.kafka.settings import Settings

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(_bare(Settings.from_env()))
