"""The Faust app: its topics, the subject table, the subject agent and the ticker, in one place.

    inbound (events + ticks, key = subject) ──▶ subject agent ──▶ effects (audit, every effect)
                                                  │  state table ├─▶ outbox (LINE messages to send)
                                                  │  (changelog) └─▶ escalations (staff / contacts)

Reads top-down as the pipeline it is. The logic per message lives in agents/subject_agent.py.
"""
from __future__ import annotations

import logging
import os
import time

import faust
from faust.sensors.prometheus import setup_prometheus_sensors

from agents.readmodel import label
from agents.subject_agent import SubjectAgent
from schemas import effects as fx
from streams import codec
from streams.kafka import metrics
from streams.kafka.settings import Settings, partition_of
from streams.redis_store import ReadModel

log = logging.getLogger("anpi.worker")

# what the sender must turn into LINE messages, and what the call queue / audit must hear about
TO_OUTBOX = {fx.CHECK_SENT, fx.CHECK_RESENT, fx.CONTACTS_NOTIFIED, fx.CONFIRMED, fx.RESOLVED_AFTER_ESCALATION,
             fx.GROUP_CHECK_POSTED, fx.GROUP_UNCONFIRMED}
TO_ESCALATIONS = {fx.STAFF_CALL, fx.CONTACTS_NOTIFIED, fx.RESOLVED_AFTER_ESCALATION}


def create_app(settings: Settings) -> faust.App:
    datadir = os.path.join(os.environ.get("ANPI_VAR", "var"), "faust", settings.prefix)  # RocksDB lives here
    os.makedirs(os.path.dirname(datadir), exist_ok=True)
    app = faust.App(
        f"{settings.prefix}-engine",
        broker=f"kafka://{settings.kafka}",
        store=settings.store,
        topic_partitions=settings.partitions,
        producer_acks=-1,
        # Changelog writes, effects and consumer offsets commit in one Kafka transaction: after a
        # crash either all of a step's output is there or none of it is and the step runs again.
        # (At-least-once would let a state reach the changelog while its effects did not: lost.)
        processing_guarantee="exactly_once",
        consumer_auto_offset_reset="earliest",
        # A killed worker's partitions move when its session expires: 10 s, not Faust's 60 s, since
        # checks and escalations wait meanwhile.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        web_host=settings.web_host,
        web_port=settings.web_port,
        datadir=datadir,
        web_in_thread=False,
    )

    def raw_topic(name):
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions)

    inbound, effects = raw_topic(settings.inbound), raw_topic(settings.effects)
    outbox, escalations = raw_topic(settings.outbox), raw_topic(settings.escalations)
    # bytes keys and values: Faust then keeps them raw, and streams/codec.py owns the encoding
    table = app.Table(settings.table, partitions=settings.partitions, key_type=bytes, value_type=bytes)

    def load(number: int):
        for key, raw in list(table.items()):
            subject = key.decode()
            if partition_of(subject, settings.partitions) == number:
                yield subject, codec.state_from_obj(codec.loads(raw))

    labels: dict[str, str] = {}  # read-model labels changed since the last flush to Redis

    def persist(subject: str, state) -> None:
        table[subject.encode()] = codec.dumps(codec.state_to_obj(state))
        labels[subject] = label(state)

    logic = SubjectAgent(load, persist)
    lag_watched: set[int] = set()  # partitions whose tick-lag gauge reads logic.last_tick already
    setup_prometheus_sensors(app, registry=metrics.REGISTRY, name_prefix="faust")
    metrics.DUE_INDEX.set_function(logic.due_size)

    @app.agent(inbound, concurrency=1)  # > 1 loses messages: faust-streaming issue #606
    async def subjects(stream):
        async for event in stream.events():
            number = event.message.partition
            message = codec.loads(event.value)
            started = time.perf_counter()
            if "tick" in message:
                produced = logic.tick(number, message["tick"])
                metrics.LAST_TICK.labels(str(number)).set(logic.last_tick[number] / 1000)
                if number not in lag_watched:
                    lag_watched.add(number)
                    metrics.TICK_LAG.labels(str(number)).set_function(
                        lambda n=number: time.time() - logic.last_tick.get(n, 0) / 1000)
            else:
                inbound_event = codec.event_from_obj(message["event"])
                produced = logic.apply(number, message["subject"], inbound_event)
                metrics.EVENTS_IN.labels(message["event"]["type"]).inc()
            for effect in produced:
                await _emit(effect, number)
            if "flush" in message:  # a driver waits for this: everything before it on the partition is out
                await effects.send(key=b"", value=codec.dumps({"flush": message["flush"], "partition": number}),
                                   partition=number)
            metrics.LATENCY.labels(str(number)).observe(time.perf_counter() - started)

    async def _emit(effect, number: int) -> None:
        key, value = effect.subject.encode(), codec.dumps(codec.effect_to_obj(effect))
        await effects.send(key=key, value=value, partition=number)
        if effect.effect in TO_OUTBOX:
            await outbox.send(key=key, value=value, partition=number)
        if effect.effect in TO_ESCALATIONS:
            await escalations.send(key=key, value=value, partition=number)
        metrics.EFFECTS_OUT.labels(effect.effect).inc()
        if effect.effect in fx.ESCALATIONS:
            metrics.ESCALATIONS.labels(effect.effect).inc()

    @app.on_partitions_revoked.connect
    async def revoked(sender, revoked, **kwargs) -> None:
        numbers = [tp.partition for tp in revoked if tp.topic == settings.inbound]
        logic.revoke(numbers)
        for number in numbers:  # another worker reports these partitions now
            lag_watched.discard(number)
            for gauge in (metrics.TICK_LAG, metrics.LAST_TICK):
                try:
                    gauge.remove(str(number))
                except KeyError:
                    pass

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
        try:
            await read_model[0].record_many(settings.prefix, batch)
        except Exception as e:  # Redis down: keep the labels and try again on the next beat
            log.warning("read model not updated (%s: %s); will retry", type(e).__name__, e)
            return
        for subject, value in batch.items():
            if labels.get(subject) == value:
                del labels[subject]

    if settings.tick_seconds > 0:
        @app.timer(settings.tick_seconds, on_leader=True)
        async def ticker() -> None:
            # The only clock read in the engine's path: ticks carry it, so everything after replays.
            # A tick trails the clock by a grace period: events are stamped when LINE saw them and
            # may still be on their way; ties (and near-ties) go to the resident.
            now = int((time.time() - settings.tick_grace_seconds) * 1000)
            for number in range(settings.partitions):
                await inbound.send(key=b"", value=codec.dumps({"tick": now}), partition=number)

    app.anpi_logic = logic  # for tests and the /metrics gauges
    return app

