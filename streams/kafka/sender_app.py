"""`anpi sender`: the LINE sender as a Faust agent of its own on the outbox topic (Kafka runtime).

The subject agent writes each batch's LINE-bound effects to the outbox, then a `batch_end` mark, in
one transaction. This app reads the outbox by whole fetches (streams/kafka/intake.py, as the worker
reads its inbound topic), gathers a partition's effects up to the mark, delivers them as one batch
(streams/line/sender.py: coalesced multicasts, rate limits, retries with the same key), and only
then counts them delivered (acked), mark included. After a crash the batch comes again whole, coalesces into the same
requests with the same retry keys, and LINE answers 409 to those it had accepted: nothing is sent
twice.

Notices (お知らせ配信) staff send from `anpi admin serve` are stored in Redis (streams/notices/in_redis.py);
every sender replica runs a delivery loop per tenant (streams/notices/delivery.py) through the same
tenant's Sender, each chunk claimed by one replica at a time.

Rebalances (a sender joins or leaves: rolling restarts, scaling out). By default Faust waits, with
no time limit, for every message a stream has taken to be acked before it lets the partitions go; the
mark of a batch read only partway never comes once fetching has stopped, so that wait never ended:
the sender stayed stuck, its partitions freed only when the broker gave up on it. So the app does not
wait (`stream_wait_empty=False`). After every rebalance Faust seeks each assigned partition back to
its committed offset before it resumes, and that re-reading is the only way on:

- a record is *current* while no rebalance is under way and it was fetched since the last one (the
  group's generation when the intake took it is the group's now). Only current messages are gathered, and only current ones are ever
  acked. A half-read batch is dropped when its partition is revoked, never acked (acking it would
  commit past effects not yet delivered, and lose them): its next reader reads it again whole.
- a batch being delivered when a rebalance comes may finish; its acks are not made, so its next
  reader (the partition's new owner, or this sender again) delivers it again with the same retry
  keys, and LINE answers 409 to the calls it already had.
- what is committed is the offset just past the mark of the partition's last batch delivered and
  acked, and nothing else (`_commit_delivered`): never inside a batch, so a restart reads a batch
  again whole and plans it into the same calls. Faust's own reckoning, from the acks it saw and the
  gaps it guessed, went one record into a batch (its gap after a transaction marker takes in the
  record after it, which is then acked twice, and the run of acked offsets breaks there), and it
  counts the acks it makes itself for messages skipped during a rebalance: a sender killed between
  two commits began mid-batch and sent the rest of it as new multicasts under new retry keys.
- Faust's seek "to the committed offset" moves nothing for a partition this group never committed
  (aiokafka seeks only to an offset > 0), so records fetched and thrown away during a rebalance
  were not read again; such a partition is sought to its beginning instead (`_rewind_uncommitted`).
- the transactional producer of a partition that moved away is stopped, so that a fenced one is
  never reused if it comes back (`stop_producers_of_moved_partitions`).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace

import faust
import redis.asyncio as aioredis
from aiokafka.structs import TopicPartition

from agents import mypage_link
from schemas.tenant import Tenant
from streams import codec, startup
from streams.tenants import registry as tenant_registry
from streams.tenants.from_env import tenant_from_env
from streams.tenants.in_redis import RedisRegistry
from streams.kafka.intake import BatchApp
from streams.kafka.settings import Settings
from agents.messages import Texts
from streams.kafka.records import Naming
from streams.notices.delivery import NoticeDelivery
from streams.notices.in_redis import RedisNotices
from streams.admin.redis_accounts import RedisStaff
from streams.kafka.held import RedisHeld
from streams.hooks.in_redis import RedisHooks
from streams.line.sender import REPLY_TOKEN_MAX_AGE, Limits, Metrics, Report, Sender, redis_limiters, redis_reply_claims
from streams.shared_clock import SharedClock

log = logging.getLogger("anpi.sender")
BATCHES_IN_FLIGHT = 256     # batches being delivered at once, over all partitions (ANPI_SENDER_BATCHES_IN_FLIGHT)
RECORDS_IN_FLIGHT = 50_000  # and their records at most (memory), however many batches that is
RELEASE_EVERY = 5.0         # seconds between looks for held notices (quiet nights) whose morning has come


def create_app(settings: Settings, tenant: Tenant, line_api: str, wall: Callable[[], float] = time.time,
               batches_in_flight: int = BATCHES_IN_FLIGHT, limits: Limits = Limits(),
               reply_max_age: float = REPLY_TOKEN_MAX_AGE) -> faust.App:
    """`wall`: the clock a reply token's age is judged by (LINE's: real time; a test's or the demo's:
    linesim's), `reply_max_age` in its seconds. `limits`: the channel's requests per second per
    endpoint, shared by every replica (Redis)."""
    app = BatchApp(
        f"{settings.prefix}-sender",
        broker=f"kafka://{settings.kafka}",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        # for read_committed: the subject agent writes in transactions, and a batch it aborted must
        # not reach LINE (its replay may cut the batch otherwise); the sender itself writes nothing
        processing_guarantee="exactly_once",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        # a rebalance must not wait for the messages this agent holds: a half-read batch is acked
        # only after its mark, which cannot come once fetching has stopped (see the module's doc)
        stream_wait_empty=False,
        web_enabled=False,
        datadir=os.path.join(os.environ.get("ANPI_VAR", "var"), "faust", f"{settings.prefix}-sender"),
    )
    outbox = app.topic(settings.outbox, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=settings.partitions)
    # a Redis that hangs must not hold a call for ever: it then counts as away (claims wait, the
    # rate limit is kept in this process)
    client = aioredis.from_url(settings.redis, socket_timeout=5, socket_connect_timeout=5)
    sender = Senders(settings, tenant, line_api, wall, limits, client, reply_max_age,
                     os.environ.get("ANPI_PUBLIC_URL") or None, os.environ.get("ANPI_ADMIN_URL") or None)

    @app.task
    async def follow_registry() -> None:
        # tenants added with `anpi tenant add --redis`, and what staff save on 設定 (the access
        # token, the wording): within a second
        await tenant_registry.follow(sender.registry, sender.reload)

    @app.task
    async def release_held() -> None:
        # the notices to contacts with quiet nights, at 7:00, and the outgoing webhooks' posts: every
        # replica looks, each item leased to one
        while True:
            await asyncio.sleep(RELEASE_EVERY)
            for tenant_sender in list(sender.by_tenant.values()):
                try:
                    await tenant_sender.release_held()
                    await tenant_sender.post_hooks()
                except Exception:   # Redis away, LINE down: the items stay held, tried again
                    log.warning("tenant %s: held notices not released yet", tenant_sender.tenant.id, exc_info=True)

    @app.task
    async def deliver_notices() -> None:
        # the notices staff send from `anpi admin serve` (お知らせ配信), every tenant's, chunk by chunk
        await sender.deliver_notices()

    # The outbox is read by whole fetches (streams/kafka/intake.py), as the subject agent reads its
    # inbound topic: Faust's per-event stream cost ~0.3 ms a record, which held a 100,000-member
    # roll-call's cards at 13× LINE's floor. The agent only subscribes the topic; Faust's consumer
    # keeps the group, the rebalances and their seeks, and the commit of what _commit_delivered says.
    pending: dict[int, list] = {}  # per partition: (offset, generation, record) of the batch not yet delivered
    last: dict[int, asyncio.Future] = {}  # per partition: its latest batch being delivered
    in_flight: dict[asyncio.Future, int] = {}  # every batch being delivered -> its records
    delivered: dict[int, int] = {}  # per partition: the offset past the mark of its last batch acked

    def current(batch: list) -> bool:
        """Fetched since the last rebalance, and none under way: this sender's to deliver and ack."""
        generation = app.consumer_generation_id
        return app.flow_control.is_active() and all(entry[1] == generation for entry in batch)

    @app.on_partitions_revoked.connect
    async def drop_half_read(_app, revoked, **kwargs) -> None:
        for tp in revoked:
            if tp.topic == settings.outbox:
                delivered.pop(tp.partition, None)  # after Faust's commit of it; its next reader goes on
                dropped = pending.pop(tp.partition, None)
                if dropped:
                    log.info("partition %d revoked: %d records of a half-read batch dropped (read again "
                             "from the committed offset)", tp.partition, len(dropped))

    @app.on_partitions_assigned.connect
    async def stop_producers_of_moved_partitions(_app, assigned, **kwargs) -> None:
        """exactly_once gives each partition a transactional producer, which commits its offsets. Faust
        (faust-streaming 0.15.3) kept the producer of a partition that moved to another sender, whose
        own producer then fenced it; when the partition came back (the other sender stopped), Faust
        reused the fenced one, and the first commit raised ProducerFenced and crashed the sender.
        Stopped here, a fresh producer starts if the partition comes back."""
        group = app.assignor.group_for_topic(settings.outbox)
        mine = {tp.partition for tp in assigned
                if tp.topic == settings.outbox and not app.assignor.is_standby(tp)}
        await app.consumer.maybe_wait_for_commit_to_finish()  # a commit begun now skips them: not assigned
        for number in range(settings.partitions):
            if number not in mine:
                await app.producer.stop_transaction(f"{app.conf.id}-{group}-{number}")

    async def deliver_whole(number: int, batch: list):
        """Deliver a batch, trying again whatever fails (LINE's own failures are retried inside:
        this is for everything else) until it is done or the partition is no longer ours. A batch
        that raised out of the intake would stop the consumer's drain loop with it.
        None: not delivered, not to be acked."""
        attempt = 0
        while current(batch):
            try:
                return await sender.deliver([record for _, _, record in batch[:-1]])
            except Exception as error:
                attempt += 1
                log.warning("partition %d: batch of %d not delivered (%s: %s); trying again", number,
                            len(batch) - 1, type(error).__name__, error)
                sender.metrics.batch_retries.inc()
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))
        return None

    @app.agent(outbox, concurrency=1)
    async def deliver(stream):
        _commit_delivered(app.consumer, settings.outbox, delivered)
        _rewind_uncommitted(app.consumer, settings.outbox)
        async for _ in stream:  # never: the intake takes the topic's records
            log.error("an outbox record reached Faust's stream, which does not handle it")

    async def intake(number: int, records: list) -> None:
        """A fetch's records of one partition: gathered up to each batch's mark, each whole batch
        delivered side by side with the others (of every partition), so that LINE slow or failing
        for one call holds up no other; each is acked only after the batches before it on its
        partition (what is committed: see _commit_delivered)."""
        generation = app.consumer_generation_id
        batch = pending.setdefault(number, [])
        for record in records:
            offset = record.offset
            if batch and (batch[-1][0] >= offset or batch[0][1] != generation):
                # read again (a seek back to the committed offset): keep only what came before it
                batch[:] = [entry for entry in batch if entry[0] < offset and entry[1] == generation]
            value = codec.loads(record.value)
            batch.append((offset, generation, value))
            if "batch_end" not in value:
                continue
            del pending[number]
            task = asyncio.ensure_future(deliver_and_ack(number, batch, last.get(number)))
            last[number] = task
            in_flight[task] = len(batch)
            task.add_done_callback(lambda t: in_flight.pop(t, None))
            task.add_done_callback(lambda t, n=number: last.get(n) is t and last.pop(n))
            batch = pending.setdefault(number, [])
            while in_flight and (len(in_flight) >= batches_in_flight
                                 or sum(in_flight.values()) >= RECORDS_IN_FLIGHT):
                await asyncio.wait(list(in_flight), return_when=asyncio.FIRST_COMPLETED)

    app.intake, app.intake_topic = intake, settings.outbox

    async def deliver_and_ack(number: int, batch: list, before: asyncio.Future | None) -> bool:
        """Deliver, then ack once the partition's batch before this one is acked; True if acked."""
        report = await deliver_whole(number, batch)
        for failure in report.failed if report is not None else ():
            log.warning("%s gave up: %s %s", failure.endpoint, failure.status, failure.reason)
        earlier_acked = True if before is None else await before
        if earlier_acked and report is not None and current(batch):
            delivered[number] = batch[-1][0] + 1
            app.consumer._acked[TopicPartition(settings.outbox, number)]  # the commit looks at the partitions it has
            return True
        # a rebalance (or the shutdown) came meanwhile, or an earlier batch was left: the next
        # reader of the partition reads from the committed offset and sends it again, same keys
        log.info("partition %d: batch of %d left unacked: a rebalance came meanwhile", number, len(batch) - 1)
        return False

    app.anpi_sender = sender
    return app


class Senders:
    """The deployment's tenants' Senders (streams/line/sender.py), one per tenant with its own channel:
    its access token, its wording, and its rate limits in Redis (LINE's limits are per channel,
    whatever the number of sender replicas), its reply claims in Redis (a batch delivered again,
    after a crash or a rebalance, must not reply twice). A batch of the outbox holds records of
    several tenants: each tenant's part (in the batch's order, so a batch read again plans into the
    same calls with the same retry keys) goes through its own Sender, side by side."""

    def __init__(self, settings: Settings, seed: Tenant, line_api: str, wall: Callable[[], float], limits: Limits,
                 redis, reply_max_age: float = REPLY_TOKEN_MAX_AGE, public_url: str | None = None,
                 admin_url: str | None = None):
        """`public_url`: where `anpi ingress` serves My Page; the cards then carry its signed link.
        `admin_url`: where `anpi admin serve` is reached (https://<host>, its pages under /admin);
        staff alerts then link to its call queue."""
        self.naming, self.seed, self.line_api, self.wall = Naming(settings.prefix), seed, line_api, wall
        self.reply_max_age, self.public_url = reply_max_age, public_url
        self.admin_url = (admin_url or "").rstrip("/")
        self.staff = RedisStaff(redis)
        self.limits, self.redis, self.registry = limits, redis, RedisRegistry(redis)
        self.metrics = Metrics()
        self.by_tenant: dict[str, Sender] = {}
        self.base_texts = Texts()
        self.notices = RedisNotices(redis)
        self._missing: dict[str, float] = {}   # tenant -> when the registry last had no channel for it
        self._add(seed)

    def _add(self, tenant: Tenant) -> Sender:
        sender = Sender(tenant, self.line_api, wall=self.wall, metrics=self.metrics, reply_max_age=self.reply_max_age)
        sender.limiters = redis_limiters(self.redis, tenant.id, self.limits, self.metrics.limiter_fallbacks.inc)
        sender.claim_replies = redis_reply_claims(self.redis, tenant.id)
        sender.on_call_source = functools.partial(self.staff.on_call, tenant.id)
        sender.held = RedisHeld(self.redis, tenant.id)    # notices kept for the morning (quiet nights)
        sender.hooks = RedisHooks(self.redis, tenant.id)  # the tenant's outgoing webhook, if it has one
        sender.use(tenant, self._texts(tenant, self.base_texts))
        self.by_tenant[tenant.id] = sender
        return sender

    def _texts(self, tenant: Tenant, texts: Texts) -> Texts:
        if self.admin_url:
            texts = replace(texts, calls_url=f"{self.admin_url}/admin/{tenant.id}/calls")
        if not self.public_url:
            return texts
        return replace(texts, mypage=mypage_link.linker(self.public_url, tenant.id, tenant.channel_secret))

    async def reload(self) -> None:
        for tenant_id, running in (await tenant_registry.running(self.registry, {self.seed.id: self.seed})).items():
            sender = self.by_tenant.get(tenant_id) or self._add(running.tenant)
            sender.use(running.tenant, self._texts(running.tenant, running.texts(self.base_texts)))

    async def deliver(self, records: list[dict]) -> Report:
        parts: dict[str, list[dict]] = {}
        for record in records:
            parts.setdefault(self.naming.tenant_of(record), []).append(record)
        report = Report()
        now = time.monotonic()
        unknown = [t for t in parts if t not in self.by_tenant
                   and now - self._missing.get(t, -tenant_registry.WATCH_SECONDS) >= tenant_registry.WATCH_SECONDS]
        if unknown:   # added since the last reload: read the registry now (one found without a
            await self.reload()   # channel is looked up again at most once a second, not every batch)
            self._missing.update((t, now) for t in unknown if t not in self.by_tenant)
        delivering = []
        for tenant_id, part in parts.items():
            sender = self.by_tenant.get(tenant_id)
            if sender is None:   # no channel to send with: given up, counted, never holding the rest
                log.error("tenant %s: %d messages not sent: the tenant has no LINE channel here", tenant_id, len(part))
                self.metrics.failures.labels("none", "no_channel").inc(len(part))
                continue
            delivering.append(sender.deliver(part))
        for one in await asyncio.gather(*delivering):
            _add_report(report, one)
        return report

    async def deliver_notices(self, every: float = tenant_registry.WATCH_SECONDS) -> None:
        """A notice delivery loop (streams/notices/delivery.py) for each tenant with a channel here,
        started within `every` seconds of its Sender; on every replica (a chunk is claimed by one)."""
        loops: dict[str, asyncio.Task] = {}
        try:
            while True:
                for tenant_id, sender in list(self.by_tenant.items()):
                    if tenant_id not in loops or loops[tenant_id].done():
                        delivery = NoticeDelivery(self.notices, tenant_id, sender, lambda: int(self.wall() * 1000))
                        loops[tenant_id] = asyncio.create_task(delivery.run(), name=f"notices {tenant_id}")
                await asyncio.sleep(every)
        finally:
            for task in loops.values():
                task.cancel()
            await asyncio.gather(*loops.values(), return_exceptions=True)

    async def close(self) -> None:
        for sender in self.by_tenant.values():
            await sender.close()


def _add_report(total: Report, one: Report) -> None:
    for name in ("requests", "accepted", "duplicates", "retries", "replies", "recipients", "billed",
                 "skipped_blocked"):
        setattr(total, name, getattr(total, name) + getattr(one, name))
    total.failed.extend(one.failed)


def _commit_delivered(consumer, topic: str, delivered: dict[int, int]) -> None:
    """Make Faust commit, for `topic`, exactly `delivered[partition]` (the offset past the mark of
    the last batch delivered and acked there) whenever it is past the committed one, and nothing
    otherwise; other topics keep Faust's reckoning. The acks Faust keeps for this topic are cleared
    at each commit (it still uses them to know which partitions to look at)."""
    if getattr(consumer, "_anpi_commits_delivered", False):
        return
    new_offset = consumer._new_offset

    def delivered_offset(tp):
        if tp.topic != topic:
            return new_offset(tp)
        consumer._acked[tp].clear()
        consumer._acked_index[tp].clear()
        consumer._gap.pop(tp, None)
        offset = delivered.get(tp.partition)
        committed = consumer._committed_offset[tp]
        return offset if offset is not None and (committed is None or offset > committed) else None

    consumer._new_offset = delivered_offset
    consumer._anpi_commits_delivered = True


def _rewind_uncommitted(consumer, topic: str) -> None:
    """Make `consumer.seek_to_committed` seek `topic`'s partitions with no committed offset (or 0) to
    their beginning, which is where auto_offset_reset="earliest" starts them.

    Faust throws away records a fetch returns while a rebalance is under way, and counts on this seek
    to read them again; aiokafka seeks only to a committed offset > 0 and leaves the others where the
    fetch left them, past those records: a batch half-read there would not come again until the next
    rebalance or restart."""
    if getattr(consumer, "_anpi_rewinds_uncommitted", False):
        return
    seek_to_committed = consumer.seek_to_committed

    async def seek_to_committed_or_beginning():
        offsets = await seek_to_committed()
        never = [tp for tp, offset in offsets.items() if tp.topic == topic and not offset]
        if never:
            for tp, offset in (await consumer.earliest_offsets(*never)).items():
                log.info("partition %d: no committed offset, sought to its beginning (%d)", tp.partition, offset)
                await consumer.seek(tp, offset)
        return offsets

    consumer.seek_to_committed = seek_to_committed_or_beginning
    consumer._anpi_rewinds_uncommitted = True


def main(loglevel: str = "warning", wall: Callable[[], float] = time.time) -> int:
    """ANPI_CLOCK_URL (the demo's, a test's: linesim's /linesim/clock): reply tokens judged by that
    clock, their age scaled by its speed (LINE allows a minute of real time)."""
    settings = Settings.from_env()
    reply_max_age = REPLY_TOKEN_MAX_AGE
    if os.environ.get("ANPI_CLOCK_URL"):
        clock = SharedClock(os.environ["ANPI_CLOCK_URL"])
        wall, reply_max_age = clock.now, REPLY_TOKEN_MAX_AGE * clock.speed
    tenant = tenant_from_env("sender", settings.prefix)
    if tenant is None:
        return 2
    in_flight = startup.number(os.environ, "ANPI_SENDER_BATCHES_IN_FLIGHT", BATCHES_IN_FLIGHT, low=1)
    # /metrics (anpi_sender_*: calls by status, retries, the backlog LINE has not taken): off unless set
    metrics_port = startup.metrics_port(os.environ, "ANPI_SENDER_METRICS_PORT", settings.web_host)
    # requests per second per endpoint: LINE's per-channel limits unless the channel has others
    limits = Limits(**{endpoint: startup.number(os.environ, f"ANPI_LINE_RATE_{endpoint.upper()}",
                                                getattr(Limits(), endpoint), float, low=0.01)
                       for endpoint in ("push", "multicast", "reply")})
    app = create_app(settings, tenant, os.environ.get("ANPI_LINE_API", "https://api.line.me"), wall, in_flight,
                     limits, reply_max_age)
    if metrics_port:
        from prometheus_client import start_http_server
        start_http_server(metrics_port, settings.web_host, registry=app.anpi_sender.metrics.registry)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(startup.guarded("sender", lambda: main(*(sys.argv[1:2]))))
