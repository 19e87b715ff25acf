"""One worker for many municipalities, fair: a big town's thousands of checks due at 9:00 do not hold
up a small town's few on the same partition.

A tick steps at most streams/step.TICK_BUDGET subjects per batch, shared out by turns between the
tenants (agents/subject_agent.py), and the worker puts a tick on its own partition, in the batch's
transaction, to go on with the rest. So the small town's checks commit in the first transaction
after the tick, and the big town's over several, each check once, at the instant it fell due."""
import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from linesim import user_id_for
from schemas import effects as fx
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from streams import codec
from streams.kafka import simulate as kafka_simulate
from streams.kafka.records import Naming, tick_messages
from streams.kafka.settings import Settings, partition_of
from streams.step import TICK_BUDGET

pytestmark = pytest.mark.usefixtures("running_services")
START = 1_796_050_800_000  # 2026-12-01T00:00+09:00
HOUR = 3_600_000
DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo", None)
BIG, SMALL = 2 * TICK_BUDGET + 2_000, 5


def test_a_big_towns_checks_due_at_once_do_not_hold_up_a_small_towns_on_the_same_partition():
    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        naming, parts = Naming(run.settings.prefix), run.settings.partitions
        big, small = run.settings.prefix, f"small-{uuid.uuid4().hex[:8]}"

        def on_zero(tenant: str, name: str, n: int) -> list[str]:   # everyone on partition 0
            ids = (user_id_for(f"{name}-{i}") for i in range(n * parts * 3))
            return [uid for uid in ids if partition_of(naming.key(tenant, uid), parts) == 0][:n]
        people = [(big, uid) for uid in on_zero(big, "tick-big", BIG)]
        people += [(small, uid) for uid in on_zero(small, "tick-small", SMALL)]
        assert len(people) == BIG + SMALL
        consumer = AIOKafkaConsumer(bootstrap_servers=run.settings.kafka, enable_auto_commit=False,
                                    isolation_level="read_committed")
        try:
            run.start_worker()
            await run.produce([naming.event_message(tenant, uid, Register(START, MemberSettings(
                uid, "watch", DAILY_9, "090-0000-0000")), parts) for tenant, uid in people])
            flush = uuid.uuid4().hex   # 8:00, nothing due: every registration is in
            await run.produce(tick_messages(START + 8 * HOUR, parts, flush))
            await run.collect(flush, timeout=180)

            await consumer.start()
            tp = TopicPartition(run.settings.effects, 0)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            await consumer.position(tp)
            await run.produce(tick_messages(START + 9 * HOUR + 60_000, parts))  # the ticker's: no flush
            ticked = time.monotonic()
            checks: list[tuple[int, str, dict]] = []   # (offset, tenant, effect)
            seen: dict[str, float] = {}                 # tenant -> when its last check was visible
            while sum(1 for _, t, _ in checks if t == big) < BIG and time.monotonic() - ticked < 180:
                got = await consumer.getmany(tp, timeout_ms=200)
                for record in got.get(tp, []):
                    obj = codec.loads(record.value)
                    if obj.get("effect") == fx.CHECK_SENT:
                        tenant = naming.tenant_of(obj)
                        checks.append((record.offset, tenant, obj))
                        seen[tenant] = time.monotonic() - ticked
            return checks, seen, big, small
        finally:
            await consumer.stop()
            run.kill_worker()
            await run.delete_topics()

    checks, seen, big_id, small_id = asyncio.run(go())
    big = [obj for _, t, obj in checks if t == big_id]
    assert len(big) == BIG and len({o["subject"] for o in big}) == BIG     # each once
    assert {o["at"] for _, _, o in checks} == {START + 9 * HOUR}           # at the instant they fell due
    # transactions, told apart by the offset each commit marker takes: the small town's checks are
    # all in the first one; the big town's spread over at least BIG / TICK_BUDGET of them
    transactions, last = [[]], None
    for offset, tenant, _ in checks:
        if last is not None and offset > last + 1 and transactions[-1]:
            transactions.append([])
        transactions[-1].append(tenant)
        last = offset
    assert transactions[0].count(small_id) == SMALL, [len(t) for t in transactions]
    assert len(transactions[0]) <= TICK_BUDGET
    assert len(transactions) >= BIG // TICK_BUDGET + 1, [len(t) for t in transactions]
    print(f"small town's {SMALL} checks visible after {seen[small_id]:.2f} s; the big town's {BIG} after "
          f"{seen[big_id]:.2f} s, in {len(transactions)} transactions")
    assert seen[small_id] < seen[big_id]
