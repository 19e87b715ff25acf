"""The Faust app: its topics, the subject table, the subject agent and the ticker, in one place.

    inbound (events + ticks, key = subject) ──▶ subject agent ──▶ effects (audit, every effect)
                                                  │  state table ├─▶ outbox (LINE messages to send)
                                                  │  (changelog) └─▶ escalations (staff / contacts)

Reads top-down as the pipeline it is. The logic per message lives in agents/subject_agent.py.
"""
from __future__ import annotations

from datetime import timedelta

import asyncio
import itertools
import logging
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable

import faust
from aiokafka import TopicPartition
from faust.sensors.prometheus import setup_prometheus_sensors

from agents import routes
from agents.readside import label
from agents.partition import wake
from agents.subject_agent import SubjectAgent
from schemas import effects as fx
from streams import codec, quarantine
from streams.sealed import seal
from streams.kafka import changelog, metrics
from streams.kafka import snapshot as snapshots
from streams.kafka import quarantine as kafka_quarantine
from streams.kafka.intake import BatchApp
from streams.kafka.produce import Output
from streams.kafka.records import Naming, batch_end, flushed, tick
from streams.kafka.settings import Settings
from streams.kafka.transactions import PartitionTransactions
from streams.step import Aside, step
from streams.kafka.redis_store import ReadModel

log = logging.getLogger("anpi.worker")

# what the sender must turn into LINE messages, and what the call queue / audit must hear about
SNAPSHOT_EVERY = 1.0        # seconds between looks for partitions whose snapshot is due
SNAPSHOT_SOON = 10.0        # seconds after a partition is taken from the whole changelog: its first snapshot
SNAPSHOT_AFTER_TAIL = 10_000  # records of a snapshot's tail that make a new one due that soon too
COMMIT_SECONDS = 0.25  # how often Faust's own commit runs (the sender's batches; the agent commits its own)
FETCH_BYTES = 4 << 20  # per partition per fetch: a batch of up to ~20,000 taps, one transaction


def _subject_of(key: bytes | None) -> str:
    """The message's key (its subject), if it is one: what a quarantine entry is listed under."""
    try:
        return key.decode() if isinstance(key, bytes) else ""
    except UnicodeDecodeError:
        return ""


def _lanes(produced: list[tuple[str, object]]) -> list[list[tuple[str, object]]]:
    """A batch's (tenant, effect)s, one lane per tenant (in its own order), the lane with the fewest
    LINE messages first: each lane ends with its own mark on the outbox, so the sender delivers a
    small town's cards as soon as they are read, not after a big town's burst in the same batch."""
    lanes: dict[str, list] = {}
    for item in produced:
        lanes.setdefault(item[0], []).append(item)
    return sorted(lanes.values(), key=lambda lane: sum(1 for _, e in lane if e.effect in routes.OUTBOX))


def _member_name(settings: Settings) -> str | None:
    """The static member's name: the worker's instance name and the address it serves.

    For a static member rejoining with the same name, the broker hands back the assignment it had,
    made with its old metadata; Faust asserts that the address in it is the worker's own
    (`metadata.url == canonical_url`), so a worker restarted with a new ANPI_WEB_PORT failed the
    assertion in its coordinator and stayed up doing nothing. With the address in the name it joins
    as a new member: the old one's partitions move once its session ends."""
    if not settings.instance:
        return None
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{settings.instance}.{settings.web_host}.{settings.web_port}")[:249]


def _coordination_failed(app: faust.App) -> BaseException | None:
    """Why the consumer's group coordination ended, if it did. aiokafka never starts it again: the
    worker would keep answering HTTP and never get a partition."""
    try:
        task = app.consumer._thread._consumer._coordinator._coordination_task
    except AttributeError:  # not started yet, or stopping
        return None
    if not task.done() or task.cancelled():
        return None
    return task.exception() or RuntimeError("group coordination ended")


def create_app(settings: Settings) -> faust.App:
    datadir = os.path.join(os.environ.get("ANPI_VAR", "var"), "faust", settings.prefix)  # Faust's own files
    os.makedirs(os.path.dirname(datadir), exist_ok=True)
    app = BatchApp(
        f"{settings.prefix}-engine",
        broker=f"kafka://{settings.kafka}",
        topic_partitions=settings.partitions,
        producer_acks=-1,
        # Effects, changelog writes and consumer offsets commit in one Kafka transaction: after a
        # crash either all of a batch's output is there or none of it is and the batch runs again.
        # (At-least-once would let a state reach the changelog while its effects did not: lost.)
        processing_guarantee="exactly_once",
        consumer_auto_offset_reset="earliest",
        # A killed worker's partitions move when its session expires: 10 s, not Faust's 60 s, since
        # checks and escalations wait meanwhile.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        # what a batch wrote is seen (read_committed) once its transaction commits: four times a second,
        # not Faust's 2.8 s, so that a check or a thanks leaves within a second of its time
        broker_commit_interval=COMMIT_SECONDS,
        consumer_group_instance_id=_member_name(settings),
        consumer_max_fetch_size=FETCH_BYTES,
        broker_max_poll_records=None,   # a whole fetch per partition, however many records it holds
        producer_max_batch_size=512 << 10,  # what one produce batch of a partition batch's output holds
        web_host=settings.web_host,
        web_port=settings.web_port,
        datadir=datadir,
        web_in_thread=False,
    )

    def raw_topic(name):
        # kept ANPI_RETENTION_DAYS when this worker makes the topic (the deployment's, for every tenant
        # on it); the read side in Redis keeps its own shorter times, and the counts
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions, retention=timedelta(days=settings.retention_days))

    inbound = raw_topic(settings.inbound)
    outputs = [raw_topic(name) for name in (settings.effects, settings.outbox, settings.escalations)]
    # The subjects' states, one compacted record per subject, written in each batch's transaction and
    # read back (committed records only) when a worker takes a partition: streams/kafka/changelog.py.
    changelog_topic = app.topic(settings.changelog, key_type=bytes, value_type=bytes, key_serializer="raw",
                                value_serializer="raw", partitions=settings.partitions, compacting=True,
                                deleting=False)
    # records the engine could not decode or apply, kept (no retention limit) until someone looks
    quarantine_topic = app.topic(settings.quarantine, key_type=bytes, value_type=bytes, key_serializer="raw",
                                 value_serializer="raw", partitions=settings.partitions,
                                 config={"retention.ms": "-1"})

    labels: dict[tuple[str, str], str] = {}  # (tenant, subject) -> read-model label changed since the last flush
    naming = Naming(settings.prefix)  # every record's key and tenant (streams/kafka/records.py)
    logic = SubjectAgent()
    applied: dict[int, int] = {}  # per partition: offset of the last inbound message whose output is saved
    transactions = PartitionTransactions(app, settings.inbound)
    lag_watched: set[int] = set()  # partitions whose tick-lag gauge reads logic.last_tick already
    last_batch: dict[int, float] = {}  # per partition: monotonic time its last batch was saved (health)
    last_record: dict[int, tuple[int, bytes, bytes]] = {}  # per partition: the changelog's last record
    # (offset, key, batch mark)
    snapshot_at: dict[int, float] = {}  # per partition: monotonic time its last snapshot was begun
    writing: dict[int, asyncio.Future] = {}  # per partition: its snapshot being written
    setup_prometheus_sensors(app, registry=metrics.REGISTRY, name_prefix="faust")
    metrics.DUE_INDEX.set_function(logic.due_size)

    # The agent subscribes the inbound topic (so Faust's consumer is assigned its partitions); its
    # records never reach the stream: the consumer drains them by whole fetches into `intake`
    # (streams/kafka/intake.py).
    @app.agent(inbound, concurrency=1)  # > 1 loses messages: faust-streaming issue #606
    async def subjects(stream):
        async for _ in stream:
            log.error("an inbound message reached Faust's stream, which does not handle it")

    busy: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)  # a partition's batches: one at a time
    declared: list[bool] = []

    async def intake(number: int, records: list) -> None:
        async with busy[number]:
            if not declared:  # written through the partitions' producers, never Faust's topics
                for topic in (*outputs, changelog_topic, quarantine_topic):
                    await topic.maybe_declare()
                declared.append(True)
            try:
                await _process(number, records)
            except BaseException as exc:  # the batch is half-sent: only a restart from the changelog is safe
                if isinstance(exc, asyncio.CancelledError):
                    raise  # a stop (SIGTERM): what the open transaction holds is aborted
                _stop_at_once(number, exc)

    app.intake, app.intake_topic = intake, settings.inbound

    def _stop_at_once(number: int, exc: BaseException) -> None:
        """A batch could not be saved (the broker, the transaction): stop as a SIGKILL would.

        Nothing of the process may commit after this: a graceful stop would let Faust commit the
        open transaction (half of this batch's output, or offsets of messages other partitions have
        taken but not applied) and the next worker would skip or repeat them. A process that just
        ends commits nothing; its open transactions are aborted when the next owner fences them,
        and it starts from the last batch that was saved, as after a SIGKILL (proven in the tests)."""
        log.critical("partition %d: batch not saved (%s); the worker stops and its partitions start again "
                     "from the last saved batch", number, type(exc).__name__, exc_info=exc)
        logging.shutdown()
        os._exit(70)  # EX_SOFTWARE; a supervisor restarts it

    def _decode(subject: str, raw: bytes):
        return codec.state_from_obj(codec.loads(raw))

    async def _install(number: int) -> None:
        """The partition's states: from its snapshot on this disk and the changelog's tail after it, or
        from the whole changelog; each left in its saved bytes, with its due instant, until it is first
        stepped (changelog.Saved)."""
        started = time.perf_counter()
        file = snapshots.path(datadir, settings.changelog, number)
        snap = snapshots.load(file, settings.changelog, number) if settings.snapshot_seconds else None
        read = None
        if snap is not None:
            read = await changelog.read(settings.kafka, settings.changelog, number, since=snap.last)
            if read is None:
                log.info("partition %d: the changelog no longer has the snapshot's last record; read whole", number)
        if read is None:
            snap = None
            read = await changelog.read(settings.kafka, settings.changelog, number)

        def rejected(subject: str, error: Exception) -> None:  # not a state this worker can read: the rest go on
            log.error("partition %d: a saved state was not loaded (%s)", number, type(error).__name__)
            metrics.QUARANTINED.labels("state").inc()

        tables: dict[str, tuple[changelog.Saved, list]] = {}  # tenant -> (table, [(subject, due)] after the snapshot's)
        snapped: dict[str, Iterable] = {}                     # tenant -> the snapshot's (subject, due)s

        def of(tenant: str) -> tuple[changelog.Saved, list]:
            found = tables.get(tenant)
            if found is None:
                found = tables[tenant] = (changelog.Saved(_decode, rejected), [])
            return found

        for tenant, (subjects, raws, dues) in (snap.tables if snap is not None else {}).items():
            dict.update(of(tenant)[0], zip(subjects, raws))
            snapped[tenant] = zip(subjects, dues)
        for key, (raw, due) in read.states.items():
            tenant, subject = naming.split(key)
            table, dues = of(tenant)
            if raw is None:  # deleted after the snapshot
                dict.pop(table, subject, None)
                dues.append((subject, None))
                continue
            if due == changelog.UNSTATED:  # written before the header: decoded now for its due
                try:
                    raw = _decode(subject, raw)
                except Exception as error:
                    rejected(subject, error)
                    continue
                due = wake(raw)
            dict.__setitem__(table, subject, raw)
            dues.append((subject, due))
        applied[number] = read.applied if read.applied is not None else snap.applied if snap is not None else -1
        logic.install(number, saved={tenant: (table, itertools.chain(snapped.get(tenant, ()), dues))
                                     for tenant, (table, dues) in tables.items()})
        log.info("partition %d: %d subjects loaded in %.1f s (%s%d records of the changelog)", number,
                 sum(len(table) for table, _ in tables.values()), time.perf_counter() - started,
                 "a snapshot and " if snap is not None else "", len(read.states))
        if read.last is not None:
            last_record[number] = read.last
            # what was just read, for the next start to read from, once the others are taken too; or,
            # taken from a snapshot and a short tail, in the usual time
            again = snap is None or len(read.states) > SNAPSHOT_AFTER_TAIL
            soon = min(SNAPSHOT_SOON, settings.snapshot_seconds) if again else settings.snapshot_seconds
            snapshot_at[number] = time.monotonic() - settings.snapshot_seconds + soon

    def _snapshot_due(number: int) -> bool:
        last = last_record.get(number)  # (one without a batch's mark could be matched by a changelog made again)
        return (number in logic.partitions and last is not None and bool(last[2]) and number not in writing
                and time.monotonic() - snapshot_at.get(number, time.monotonic()) >= settings.snapshot_seconds)

    @app.timer(SNAPSHOT_EVERY)
    async def write_snapshots() -> None:
        if not settings.snapshot_seconds:
            return
        for number in [n for n in list(logic.partitions) if _snapshot_due(n)]:
            async with busy[number]:  # between two batches: the states of committed ones only
                if _snapshot_due(number):
                    _snapshot(number)

    def _snapshot(number: int) -> None:
        """A copy of the partition's tables now, written in a thread."""
        parts, last = logic.partitions[number], last_record[number]
        copies = {tenant: (dict(part.table), part.due.dues()) for tenant, part in parts.items()}
        done = applied.get(number, -1)
        snapshot_at[number] = time.monotonic()
        file = snapshots.path(datadir, settings.changelog, number)

        def write() -> None:
            snapshots.write(file, settings.changelog, number, last, done, snapshots.encode(copies))

        task = writing[number] = asyncio.get_running_loop().run_in_executor(None, write)
        task.add_done_callback(lambda t: _written(number, t))

    def _written(number: int, task) -> None:
        writing.pop(number, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("partition %d: its snapshot was not written (%s)", number, task.exception())

    async def _process(number: int, records: list) -> None:
        """One fetch's records of partition `number`: stepped, then their output, the subjects' new
        states and the offset past them committed in the partition's transaction (all or none)."""
        txn = await transactions.wait_for(number)
        if txn is None:  # revoked meanwhile: the new owner reads these messages again
            logic.revoke([number])
            return
        if number not in logic.partitions:  # first batch since the partition was assigned
            await _install(number)
        started = time.perf_counter()
        fresh = [record for record in records if record.offset > applied[number]]
        done = step(logic, number, ((r.offset, _subject_of(r.key), r.value) for r in fresh), naming.read)
        aside = [_aside(number, a) for a in done.aside]
        produced, replies, states = done.effects, done.replies, done.states
        out = Output(number)
        for lane in _lanes(produced):
            for tenant, effect in lane:
                _emit(out, tenant, effect, number, replies.get(effect.id))
            if any(effect.effect in routes.OUTBOX for _, effect in lane):
                # the sender delivers whole batches between these marks, so that after a crash it
                # rebuilds the same requests with the same retry keys (streams/kafka/sender_app.py)
                out.add(settings.outbox, batch_end(records[-1].offset))
        for flush in done.flushes:
            out.add(settings.effects, flushed(flush, number))
        if done.behind:  # the tick's budget left subjects due: this partition's next batch goes on
            out.add(settings.inbound, tick(logic.last_tick[number]))
        for entry in aside:  # with the offset that passes them: a restart never applies them again
            out.add(settings.quarantine, codec.dumps(entry), entry["id"].encode())
        for (tenant, subject), state in states.items():
            if state is None:   # withdrawn: a tombstone, which compaction makes the record's end
                out.add(settings.changelog, None, naming.key(tenant, subject).encode())
                continue
            out.add(settings.changelog, codec.dumps(codec.state_to_obj(state)), naming.key(tenant, subject).encode(),
                    changelog.due_header(wake(state)))
        mark = os.urandom(8)
        if fresh:
            out.add(settings.changelog, str(fresh[-1].offset).encode(), changelog.APPLIED,
                    changelog.applied_headers(mark))
        position = {TopicPartition(settings.inbound, number): records[-1].offset + 1}
        saving = out.topics.get(settings.changelog)
        last_key = saving[-1][0] if saving else None  # the changelog's last record, once this batch is in
        async with txn.lock:  # Faust's rebalance takes this lock too: it sees all of the batch or none
            if transactions.of(number) != txn:  # the partition moved while we stepped: its new owner redoes it
                logic.revoke([number])
                return
            try:
                ends = await out.flush(txn.producer)
                await txn.producer.send_offsets_to_transaction(position, app.conf.id)
                await txn.producer.commit_transaction()
                await txn.producer.begin_transaction()
            except Exception:
                if transactions.of(number) != txn or not transactions.owns(number):
                    # fenced: the partition moved during the commit; its new owner redoes the batch
                    log.info("partition %d: moved while its batch was committed; the new owner redoes it", number)
                    logic.revoke([number])
                    return
                raise
        if fresh:
            applied[number] = fresh[-1].offset
        if last_key is not None:
            last_record[number] = (ends[settings.changelog] - 1, last_key, mark if fresh else b"")
            snapshot_at.setdefault(number, time.monotonic())  # a first batch of states: the next one due then
        # counted a batch at a time: a labelled counter's lookup per record costs what a step does
        for name, count in Counter(map(codec.event_name, done.events)).items():
            metrics.EVENTS_IN.labels(name).inc(count)
        for name, count in Counter(effect.effect for _, effect in done.effects).items():
            metrics.EFFECTS_OUT.labels(name).inc(count)
            if name in fx.ESCALATIONS:
                metrics.ESCALATIONS.labels(name).inc(count)
        for entry in aside:
            metrics.QUARANTINED.labels(entry["kind"]).inc()
        for key, state in states.items():
            labels[key] = label(state) if state is not None else ""   # "": gone from the counts
        if done.ticked or number not in lag_watched:
            _watch_tick(number)
        metrics.LATENCY.labels(str(number)).observe(time.perf_counter() - started)
        last_batch[number] = time.monotonic()

    def _aside(number: int, entry: Aside) -> dict:
        """The quarantine topic's record for one message (or one subject's tick: several may share
        an offset), and the log line (the reason only: the record may hold personal data)."""
        offset, subject, value = entry.position, entry.subject, entry.raw
        if entry.tenant is not None:  # a subject a tick could not step: kept as its inbound message
            subject = naming.key(entry.tenant, entry.subject)
            value = naming.event_message(entry.tenant, entry.subject, entry.raw, 1)[2]
        kind = entry.kind
        entry_id = f"{number}:{offset}" + (f":{subject}" if kind == quarantine.ERROR and subject else "")
        log.error("partition %d offset %d: set aside (%s: %s); the worker goes on", number, offset, kind, entry.reason)
        return {"id": entry_id, "partition": number, "offset": offset, "subject": subject,
                **kafka_quarantine.stored(value), "kind": kind, "reason": entry.reason,
                "at": logic.last_tick.get(number)}

    def _watch_tick(number: int) -> None:
        if number in logic.last_tick:
            metrics.LAST_TICK.labels(str(number)).set(logic.last_tick[number] / 1000)
            if number not in lag_watched:
                lag_watched.add(number)
                metrics.TICK_LAG.labels(str(number)).set_function(
                    lambda n=number: time.time() - logic.last_tick.get(n, 0) / 1000)

    def _emit(out: Output, tenant: str, effect, number: int, reply: list | None = None) -> None:
        key, value = naming.effect(tenant, effect)
        out.add(settings.effects, value, key)
        if effect.effect in routes.OUTBOX:
            if reply is not None:  # the token goes to the sender only, never to the audit topics
                _, value = naming.effect(tenant, effect, reply_token=reply[0], reply_token_at=reply[1])
            out.add(settings.outbox, value, key)
        if effect.effect in routes.ESCALATIONS:
            out.add(settings.escalations, _escalation_record(tenant, effect, number), key)

    def _escalation_record(tenant: str, effect, number: int) -> bytes:
        """The escalations topic's record: the effect (never a reply token), and for a staff call the
        member's phone from the state this worker holds, for the call queue (streams/kafka/readside_app.py).
        Only this topic carries it, sealed (streams/sealed.py): the effects and outbox records stay free
        of personal data."""
        phone = None
        if effect.effect == fx.STAFF_CALL:
            phone = getattr(getattr(logic.state(number, tenant, effect.subject), "settings", None), "phone", None)
        return naming.effect(tenant, effect, **({"phone": seal(phone)} if phone else {}))[1]

    assigned_at: dict[int, float] = {}  # per partition: monotonic time it was last assigned here

    @app.on_partitions_assigned.connect
    async def assigned(sender, assigned, **kwargs) -> None:
        for tp in assigned:
            if tp.topic == settings.inbound:
                assigned_at[tp.partition] = time.monotonic()

    def health() -> tuple[bool, str]:
        """Unhealthy when a partition of ours has messages waiting and no batch of it was saved for
        HEALTH_STALE seconds (the ticker alone brings one every ANPI_TICK_SECONDS)."""
        now = time.monotonic()
        for tp in sorted(app.consumer.assignment()):
            if tp.topic != settings.inbound:
                continue
            number = tp.partition
            end = app.consumer.highwater(tp)
            # (a record past the last applied one; a transaction marker there counts too, but then
            # the next tick, at most ANPI_TICK_SECONDS later, is applied and resets the clock)
            waiting = end is not None and end - 1 > applied.get(number, -1)
            since = max(last_batch.get(number, 0.0), assigned_at.get(number, now))
            if waiting and now - since > settings.health_stale_seconds:
                return False, (f"partition {number}: {end - 1 - applied.get(number, -1)} messages waiting, "
                               f"no batch saved for {now - since:.0f} s")
        return True, "ok"

    @app.page("/healthz")
    async def healthz(web, request):
        healthy, why = health()
        return web.text(why, status=200 if healthy else 503)

    @app.on_partitions_revoked.connect
    async def revoked(sender, revoked, **kwargs) -> None:
        numbers = [tp.partition for tp in revoked if tp.topic == settings.inbound]
        logic.revoke(numbers)  # read again from the changelog if they come back: committed records only
        for number in numbers:  # and their uncommitted output is dropped with its transaction
            await transactions.close(number)
        for number in numbers:  # another worker reports these partitions now
            lag_watched.discard(number)
            last_batch.pop(number, None)
            last_record.pop(number, None)
            assigned_at.pop(number, None)
            for gauge in (metrics.TICK_LAG, metrics.LAST_TICK):
                try:
                    gauge.remove(str(number))
                except KeyError:
                    pass

    def watch_coordination() -> None:
        # a thread, not a Faust timer: those start only once the app has its first assignment
        while True:
            time.sleep(1.0)
            failed = _coordination_failed(app)
            if failed is not None and not app.should_stop:
                log.critical("the consumer's group coordination ended (%s: %s); the worker stops so "
                             "that a supervisor starts it again", type(failed).__name__, failed)
                logging.shutdown()
                os._exit(70)

    threading.Thread(target=watch_coordination, name="anpi-watch-coordination", daemon=True).start()

    read_model: list[ReadModel] = []

    @app.timer(0.5)
    async def flush_read_model() -> None:
        # The admin screen's counts: eventually consistent, idempotent, so a replay cannot double count.
        if not labels:
            return
        if not read_model:
            import redis.asyncio as aioredis
            read_model.append(ReadModel(aioredis.from_url(settings.redis)))
        batch = dict(labels)
        by_tenant: dict[str, dict[str, str]] = defaultdict(dict)
        for (tenant, subject), value in batch.items():
            by_tenant[tenant][subject] = value
        try:
            for tenant, changed in by_tenant.items():
                await read_model[0].record_many(tenant, changed)
        except Exception as e:  # Redis down: keep the labels and try again on the next beat
            log.warning("read model not updated (%s: %s); will retry", type(e).__name__, e)
            return
        for key, value in batch.items():
            if labels.get(key) == value:
                del labels[key]

    if settings.tick_seconds > 0:
        @app.timer(settings.tick_seconds, on_leader=True)
        async def ticker() -> None:
            # The only clock read in the engine's path: ticks carry it, so everything after replays.
            # A tick trails the clock by a grace period: events are stamped when LINE saw them and
            # may still be on their way; ties (and near-ties) go to the resident.
            now = int((time.time() - settings.tick_grace_seconds) * 1000)
            # Outside any transaction: this worker may not own the partitions it ticks.
            value = tick(now)
            sent = [await app.producer.send(settings.inbound, b"", value, number, None, None)
                    for number in range(settings.partitions)]
            await asyncio.gather(*sent)

    app.anpi_logic = logic  # for tests and the /metrics gauges
    app.anpi_health = health
    return app

