"""`anpi readside`: the admin screen's read side on the Kafka runtime, kept in Redis.

    <prefix>-effects ───────────────────┐  (read_committed: only what the subject agent committed)
    <prefix>-escalations ───────────────┼─▶ this consumer ──one Lua script per partition batch──▶ Redis
    <prefix>-engine-subjects-changelog ─┘      (changes + that partition's offset, atomically)

The changelog gives My Page each member's state (anpi:{t}:rs:state:<subject>) and, per partition,
the inbound offset its states are up to (`anpi:{<prefix>}:rs:applied`, from the APPLIED record):
a change made on My Page and not yet in them is stepped on top by the page itself.

A plain aiokafka consumer, not a Faust agent. Faust's exactly-once covers Kafka outputs only, and
this consumer's output is Redis: what makes it exactly-once is that each batch's changes and the
offset they reach are written by one script (streams/kafka/readside.py), so the consumer needs no
group offsets, no changelog and no transactions — only "start after the offset Redis has", which a
plain consumer with manually assigned partitions does in a few lines. Being outside a consumer
group, a second replica is a harmless hot standby: both apply, the offsets make the second a no-op.

The topics are the deployment's (ANPI_TOPIC_PREFIX), shared by its tenants: each partition batch is
split by tenant (streams/kafka/records.py) and each tenant's part applied by its own script, under
that tenant's offsets; once all of a fetch's parts are in, the deployment's position moves past it
(`anpi:{<prefix>}:rs:position`), and a restart reads on from there (a tenant's offsets skip what it
had). Days are counted in ANPI_TIMEZONE. /metrics
(anpi_readside_*: records read, batches Redis did not take, whether it waits to read again, lag) on
ANPI_READSIDE_METRICS_PORT, off unless set.
`--from-beginning` reads both topics from their first record regardless of the stored offsets:
nothing changes that was applied before (a check of the idempotence, or a rebuild after the read
side's keys were deleted, in which case the stored offsets are gone too).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from agents import readside as rs
from streams import startup
from streams import codec
from streams.kafka.changelog import APPLIED
from streams.kafka.records import Naming
from streams.kafka.settings import Settings
from streams.kafka.readside import EFFECTS, ESCALATIONS, STATES, Writer

log = logging.getLogger("anpi.readside")
MAX_RECORDS = 5000
LAG_EVERY = 5.0  # seconds between two readings of the lag (one request to the broker)


class Metrics:
    def __init__(self, tenant: str, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        self.records = Counter("anpi_readside_records", "Effect and escalation records read and applied",
                               ["tenant"], registry=r).labels(tenant)
        self.failures = Counter("anpi_readside_failures", "Batches, or reads of its offsets, Redis did not "
                                "answer (then read again from the offsets it keeps)", ["tenant"], registry=r).labels(tenant)
        self.behind = Gauge("anpi_readside_behind", "1 while a batch failed and the read side waits for Redis "
                            "to read again from its offsets", ["tenant"], registry=r).labels(tenant)
        self.lag = Gauge("anpi_readside_lag", "Committed records not yet read, over both topics (every "
                         f"{LAG_EVERY:g} s)", ["tenant"], registry=r).labels(tenant)


class ReadSideConsumer:
    def __init__(self, settings: Settings, redis, zone: str = rs.DEFAULT_ZONE, from_beginning: bool = False):
        self.settings, self.redis, self.zone = settings, redis, zone
        self.naming = Naming(settings.prefix)
        self.writers: dict[str, Writer] = {}      # per tenant, made at its first record
        self.writer = self.writer_of(settings.prefix)   # the home tenant's (its offsets: a deployment of before)
        self.position_key = f"anpi:{{{settings.prefix}}}:rs:position"
        self.from_beginning = from_beginning
        self.applied_key = f"anpi:{{{settings.prefix}}}:rs:applied"   # partition -> the changelog's APPLIED
        self.topics = {settings.effects: EFFECTS, settings.escalations: ESCALATIONS, settings.changelog: STATES}
        self.parts: list[TopicPartition] = []   # assigned: the changelog's once the worker has made it
        self.consumer: AIOKafkaConsumer | None = None
        self.applied = 0  # operations applied since start (not counting replays that changed nothing)
        self.metrics = Metrics(settings.prefix)

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka, group_id=None,
                                         enable_auto_commit=False, isolation_level="read_committed",
                                         auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)
        await self.consumer.start()
        await self._assign(await self.position() if not self.from_beginning else {})

    async def _assign(self, stored: dict[tuple[str, int], int]) -> None:
        """Every partition of the topics that exist, each sought to just past what Redis has. The
        changelog is the worker's to create (compacted): read before that, it would be made by the
        broker's auto-creation, as a plain topic that deletes old states."""
        existing = await self.consumer.topics()
        self.parts = [TopicPartition(topic, n) for topic in self.topics if topic in existing
                      or self.topics[topic] != STATES for n in range(self.settings.partitions)]
        self.consumer.assign(self.parts)
        for tp in self.parts:
            last = stored.get((self.topics[tp.topic], tp.partition))
            if last is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, last + 1)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def step(self, timeout_ms: int = 500) -> int:
        """One fetch and its application; returns the number of records read."""
        got = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=MAX_RECORDS)
        batches = [(kind, tp.partition, [(r.offset, (r.key, r.value) if kind == STATES else r.value) for r in records])
                   for tp, records in got.items() if records for kind in (self.topics[tp.topic],)]
        if batches:
            parts: dict[str, list] = {}
            applied: dict[str, int] = {}
            for kind, number, records in batches:
                if kind == STATES:
                    by_tenant, last_applied = self._states_by_tenant(records)
                    if last_applied is not None:
                        applied[str(number)] = last_applied
                else:
                    by_tenant = self._by_tenant(records)
                for tenant, own in by_tenant.items():
                    # under the offset of the tenant's own last record: the same whatever the fetches
                    # were, so that a replay from the beginning changes nothing, its offsets included
                    parts.setdefault(tenant, []).append((kind, number, own))
            for tenant, tenant_batches in parts.items():
                self.applied += await self.writer_of(tenant).apply(tenant_batches)
            if applied:   # after the states it follows: a change My Page waits for is in them by then
                await self.redis.hset(self.applied_key, mapping=applied)
            await self.redis.hset(self.position_key, mapping={f"{kind}:{number}": records[-1][0]
                                                              for kind, number, records in batches})
        read = sum(len(records) for _, _, records in batches)
        self.metrics.records.inc(read)
        return read

    async def lag(self) -> int:
        """Records (committed, visible) not yet read, over both topics and every partition."""
        ends = await self.consumer.end_offsets(self.parts)
        behind = 0
        for tp in self.parts:
            behind += max(0, ends[tp] - await self.consumer.position(tp))
        return behind

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Apply until `stop` is set. A failed batch (Redis away) is read again from the offsets Redis
        has, after a pause: nothing is skipped, and nothing applied twice. Nothing is read on until
        those offsets could be read: stepping on from where the fetch left off applied the next
        batches past the failed ones (the script takes any record past the stored offset), and the
        failed ones were never counted."""
        stop = stop or asyncio.Event()
        behind = False  # a batch failed: the consumer's position is past what Redis has
        measured = 0.0  # when the lag was last read
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                if behind:
                    await self._rewind()
                    behind = False
                    self.metrics.behind.set(0)
                    log.info("read side: Redis answers again; reading on from the offsets it has")
                await self.step()
                if loop.time() - measured >= LAG_EVERY:
                    measured = loop.time()
                    if len(self.parts) < len(self.topics) * self.settings.partitions:   # the changelog now?
                        if self.settings.changelog in await self.consumer.topics():
                            await self._assign(await self.position())
                            log.info("read side: reading %s too", self.settings.changelog)
                    self.metrics.lag.set(await self.lag())
            except Exception as e:  # Redis down mid-batch: read again from the offsets Redis has
                if not behind:
                    log.warning("read side not updated (%s: %s); will read again from Redis's offsets",
                                type(e).__name__, e)
                self.metrics.failures.inc()
                behind = True
                self.metrics.behind.set(1)
                await asyncio.sleep(1.0)

    def writer_of(self, tenant: str) -> Writer:
        writer = self.writers.get(tenant)
        if writer is None:
            writer = self.writers[tenant] = Writer(self.redis, tenant, self.zone)
        return writer

    def _by_tenant(self, records: list[tuple[int, bytes]]) -> dict[str, list[tuple[int, bytes]]]:
        """A partition batch's records by tenant, in order (markers and unreadable ones: nobody's)."""
        out: dict[str, list[tuple[int, bytes]]] = {}
        for offset, value in records:
            try:
                obj = codec.loads(value)
            except ValueError:
                continue
            if isinstance(obj, dict) and "effect" in obj:
                out.setdefault(self.naming.tenant_of(obj), []).append((offset, value))
        return out

    def _states_by_tenant(self, records: list) -> tuple[dict[str, list], int | None]:
        """A changelog batch's states by tenant, as (offset, (subject, state bytes or None)), and the
        last APPLIED (the inbound offset its states are up to) of the batch, if it has one."""
        out: dict[str, list] = {}
        applied = None
        for offset, (key, value) in records:
            if key == APPLIED:
                if value is not None:
                    applied = int(value)
                continue
            try:
                tenant, subject = self.naming.split(key)
            except (ValueError, UnicodeDecodeError):
                continue
            out.setdefault(tenant, []).append((offset, (subject, value)))
        return out, applied

    async def position(self) -> dict[tuple[str, int], int]:
        """(topic kind, partition) -> the last offset every tenant has applied: the deployment's
        position, or (a deployment of before, one tenant per prefix) the home tenant's offsets."""
        raw = await self.redis.hgetall(self.position_key)
        if not raw:
            return await self.writer.offsets()
        out = {}
        for field, value in raw.items():
            kind, _, number = (field.decode() if isinstance(field, bytes) else field).partition(":")
            out[(kind, int(number))] = int(value)
        return out

    async def _rewind(self) -> None:
        await self._assign(await self.position())  # raises while Redis is down: the caller waits, reads nothing


async def serve(settings: Settings, zone: str, from_beginning: bool = False, metrics_port: int = 0) -> None:
    import redis.asyncio as aioredis

    redis = aioredis.from_url(settings.redis)
    consumer = ReadSideConsumer(settings, redis, zone, from_beginning)
    if metrics_port:
        from prometheus_client import start_http_server
        start_http_server(metrics_port, settings.web_host, registry=consumer.metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await consumer.start()
    log.info("read side of %s: reading %s, %s and %s", settings.prefix, settings.effects, settings.escalations,
             settings.changelog)
    try:
        await consumer.run(stop)
    finally:
        await consumer.stop()
        await redis.aclose()


def main(from_beginning: bool = False) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    settings, zone = Settings.from_env(), startup.zone(os.environ.get("ANPI_TIMEZONE", rs.DEFAULT_ZONE))
    metrics_port = startup.metrics_port(os.environ, "ANPI_READSIDE_METRICS_PORT", settings.web_host)
    asyncio.run(serve(settings, zone, from_beginning, metrics_port))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main("--from-beginning" in sys.argv[1:]))
