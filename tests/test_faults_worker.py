"""The proving ground, engine side: faults on a real broker lose and duplicate no effect.

Each test runs a busy town's history (thousands of members, groups, ten virtual days) through the
Kafka worker, fed while it runs, breaks something mid-run, and counts every committed copy of every
effect against `anpi simulate` on the same history (tests/proving_ground.py): lost, duplicated and
extra must all be 0. The figures go to BENCHMARKS.md's reliability table.

- A second worker joins mid-run and is SIGKILLed later: two rebalances in which the first worker
  keeps some partitions. Faust kept those partitions' producers and their open transactions, the
  agent stepped the batches after the committed offset again into them, and both copies committed
  (or a producer fenced meanwhile was reused and the worker stopped).
- The broker is killed (-9) mid-run and comes back 20 s later; the worker runs supervised, as in
  compose, since a transaction that outlives the broker's transaction timeout ends the process.
"""
import asyncio
import signal
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from streams.simulation import scenario as scenario_module
from streams.simulation import simulator
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import feed
from streams.kafka.settings import Settings
from proving_ground import SUPERVISED, PrivateBroker, committed, effect_ids, feed_slowly, report, tally
from test_kafka_runtime import _count_effects, busy_town

pytestmark = pytest.mark.usefixtures("running_services")
MEMBERS, GROUPS, DAYS = 3_000, 20, 10
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def town():
    loaded = scenario_module.parse(busy_town(members=MEMBERS, groups=GROUPS, days=DAYS))
    return loaded, simulator.run(loaded)


async def _all_effects(run) -> list[dict]:
    return await committed(run.settings.kafka, run.settings.effects, run.settings.partitions)


def test_a_worker_joining_and_dying_mid_run_duplicates_nothing(town):
    loaded, expected = town

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        run.settings = replace(run.settings, instance="")  # dynamic membership: two workers, one group
        await run.create_topics()
        try:
            run.start_worker()
            first = run.worker
            flush = uuid.uuid4().hex
            feeding = asyncio.ensure_future(feed_slowly(run, list(feed(loaded, run.settings.partitions,
                                                                         run.tick_every, flush)), 30))
            await _count_effects(run, len(expected) // 5, timeout=240)
            run.settings = replace(run.settings, web_port=kafka_simulate._free_port())
            run.start_worker()  # joins: the first worker keeps half its partitions
            second = run.worker
            await _count_effects(run, len(expected) * 3 // 5, timeout=240)
            run.worker = second
            run.kill_worker(signal.SIGKILL)  # its partitions come back to the first after its session ends
            run.worker = first
            await feeding
            await run.collect(flush, timeout=300)
            return await _all_effects(run)
        finally:
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()

    result = tally((e.id for e in expected), effect_ids(asyncio.run(go())))
    report("worker joins, then SIGKILL of one of two", result)
    assert result.clean, result


def test_the_broker_killed_mid_run_and_back_after_20_s_loses_and_duplicates_nothing(town, tmp_path):
    loaded, expected = town
    broker = PrivateBroker(tmp_path)
    broker.up()

    async def go():
        run = kafka_simulate.KafkaRun(replace(Settings.from_env(), kafka=broker.kafka, redis=broker.redis))
        await run.create_topics()
        try:
            run.start_worker(wrap=SUPERVISED)
            flush = uuid.uuid4().hex
            feeding = asyncio.ensure_future(feed_slowly(run, list(feed(loaded, run.settings.partitions,
                                                                         run.tick_every, flush)), 30))
            await _count_effects(run, len(expected) * 2 // 5, timeout=240)
            broker.kill()
            await asyncio.sleep(20)
            broker.up()
            back = time.monotonic()
            await feeding
            await run.collect(flush, timeout=400)
            return await _all_effects(run), time.monotonic() - back
        finally:
            run.kill_worker(signal.SIGTERM)

    try:
        records, finished = asyncio.run(go())
    finally:
        broker.down()
    result = tally((e.id for e in expected), effect_ids(records))
    report("broker kill -9, back after 20 s", result, done_after_restart=f"{finished:.1f} s")
    assert result.clean, result


def test_a_static_member_restarted_on_a_new_port_joins_and_carries_on(town):
    """Faust's assignor asserted that the assignment the broker kept for a static member names the
    worker's current address; restarted with another ANPI_WEB_PORT it failed, and stayed up idle."""
    loaded, expected = town

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())  # static membership: one instance name
        await run.create_topics()
        try:
            run.start_worker()
            flush = uuid.uuid4().hex
            feeding = asyncio.ensure_future(feed_slowly(run, list(feed(loaded, run.settings.partitions,
                                                                         run.tick_every, flush)), 20))
            await _count_effects(run, len(expected) // 3, timeout=240)
            run.kill_worker(signal.SIGKILL)
            run.settings = replace(run.settings, web_port=kafka_simulate._free_port())
            restarted = time.monotonic()
            run.start_worker()
            await feeding
            await run.collect(flush, timeout=300)
            return await _all_effects(run), time.monotonic() - restarted
        finally:
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()

    records, finished = asyncio.run(go())
    result = tally((e.id for e in expected), effect_ids(records))
    report("static member restarted on a new port", result, done_after_restart=f"{finished:.1f} s")
    assert result.clean, result


def test_a_worker_whose_group_coordination_ends_stops_instead_of_idling():
    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        try:
            run.start_worker(script=str(HERE / "faulty_worker.py"), env={"ANPI_TEST_BREAK_ASSIGNMENT": "1"})
            started = time.monotonic()
            while run.worker.poll() is None and time.monotonic() - started < 90:
                await asyncio.sleep(0.2)
            return run.worker.poll(), open(run.log_path, encoding="utf-8", errors="replace").read()
        finally:
            run.kill_worker(signal.SIGKILL)
            await run.delete_topics()

    code, log = asyncio.run(go())
    assert code == 70, f"the worker did not stop (exit {code})"
    assert "group coordination ended" in log
