"""The Kafka runtime on a real broker: the same effects as the embedded simulator, across crashes."""
import asyncio
import json
import random
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from streams.simulation import scenario as scenario_module
from streams.simulation import simulator
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import feed
from streams.kafka.settings import Settings
from proving_ground import committed, effect_ids, feed_slowly, report, tally
from strategies import examples, scenarios

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
pytestmark = pytest.mark.usefixtures("running_services")


def on_kafka(loaded):
    return asyncio.run(kafka_simulate.run(loaded, Settings.from_env(), timeout=300))


def test_anpi_simulate_runtime_kafka_prints_what_the_embedded_runtime_prints():
    path = ROOT / "examples" / "danchi.yaml"
    done = subprocess.run([sys.executable, "-m", "streams.cli", "simulate", "--runtime", "kafka", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (ROOT / "examples" / "expected" / "danchi.jsonl").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem != "danchi"], ids=lambda p: p.stem)
def test_every_example_gives_the_same_effects_on_kafka(path):
    loaded = scenario_module.load(path)
    assert on_kafka(loaded) == simulator.run(loaded)


@settings(max_examples=examples(6), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_members=6, max_groups=2, max_events=60, max_days=12))
def test_random_histories_give_the_same_effects_on_kafka(scenario):
    loaded = scenario_module.parse(scenario)
    assert on_kafka(loaded) == simulator.run(loaded)


@settings(max_examples=examples(4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_members=6, max_groups=2, max_events=60, max_days=6, rollcalls=True))
def test_random_histories_with_rollcalls_give_the_same_effects_on_kafka(scenario):
    loaded = scenario_module.parse(scenario)
    assert on_kafka(loaded) == simulator.run(loaded)


def busy_town(members=400, groups=4, days=10, seed=7) -> dict:
    """Many subjects with daily and weekly checks, most answering, some not."""
    rnd = random.Random(seed)
    start = "2026-12-01T00:00:00+09:00"
    ms = []
    for i in range(members):
        m = {"id": f"U{i:04d}", "interval": rnd.choice(["1d", "1d", "2d", "3d", "weekly"]),
             "time": f"{rnd.randint(6, 21):02d}:{rnd.choice(['00', '15', '30', '45'])}"}
        if m["interval"] == "weekly":
            m["weekday"] = rnd.choice(["mon", "wed", "fri"])
        if i % 2:
            m.update(service="watch", phone="090-0000-0000")
        else:
            m.update(service="notify", contacts=[f"U9{i:03d}"] if i % 4 else [])
        ms.append(m)
    gs = [{"id": f"C{g:03d}", "members": [f"U{i:04d}" for i in range(g * 10, g * 10 + 8)], "interval": "1d",
           "time": "08:00"} for g in range(groups)]
    events = []
    for m in ms:
        for day in range(days):
            if rnd.random() < 0.8:
                events.append({"at": f"2026-12-{day + 1:02d}T{rnd.randint(6, 23):02d}:{rnd.randint(0, 59):02d}:00+09:00",
                               "type": "ok", "member": m["id"]})
    for g in gs:
        for day in range(days):
            for who in g["members"][:6]:
                events.append({"at": f"2026-12-{day + 1:02d}T09:{rnd.randint(0, 59):02d}:00+09:00",
                               "type": "ok", "member": who, "group": g["id"]})
    return {"start": start, "end": f"2026-12-{days + 1:02d}T00:00:00+09:00", "members": ms, "groups": gs,
            "events": events}


async def _count_effects(run: kafka_simulate.KafkaRun, at_least: int, timeout: float) -> int:
    count, deadline = 0, asyncio.get_running_loop().time() + timeout
    records = run.effect_records()
    try:
        async for batch in records:
            count += len(batch)
            if count >= at_least or asyncio.get_running_loop().time() > deadline:
                return count
    finally:
        await records.aclose()


def test_a_worker_killed_again_and_again_mid_run_emits_every_effect_exactly_once():
    _killed_three_times(Settings.from_env(), "worker SIGKILL x3 mid-run")


def test_a_worker_killed_mid_run_with_snapshots_every_half_second_emits_every_effect_exactly_once():
    """Each restart takes its partitions from the snapshot the killed worker last wrote (copies of
    its tables made between batches, written in a thread while it ran on) and the changelog after it."""
    _killed_three_times(replace(Settings.from_env(), snapshot_seconds=0.5), "worker SIGKILL x3, snapshots every 0.5 s")


def _killed_three_times(worker: Settings, name: str) -> None:
    loaded = scenario_module.parse(busy_town())
    expected = simulator.run(loaded)
    assert len(expected) > 5_000

    async def crash_and_recover():
        run = kafka_simulate.KafkaRun(worker)
        await run.create_topics()
        try:
            run.start_worker()
            flush = uuid.uuid4().hex
            # Fed over 15 s, not at once: a worker faster than the feed would otherwise finish before
            # the first kill (it did, once the agent read whole fetches).
            feeding = asyncio.ensure_future(feed_slowly(
                run, list(feed(loaded, run.settings.partitions, run.tick_every, flush)), seconds=15))
            seen_at_kills = []
            # Early, middle and late: each kill lands in an open transaction (ticks and events still
            # arriving), and each restart recovers from the changelog the last one left.
            for fraction in (0.2, 0.55, 0.9):
                seen_at_kills.append(await _count_effects(run, int(len(expected) * fraction), timeout=240))
                run.kill_worker(signal.SIGKILL)
                run.start_worker()  # same group, same changelog: recovers and carries on
            await feeding
            effects = await run.collect(flush, timeout=300)
            every_copy = await committed(run.settings.kafka, run.settings.effects, run.settings.partitions)
            return seen_at_kills, effects, every_copy
        finally:
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()

    seen_at_kills, effects, every_copy = asyncio.run(crash_and_recover())
    assert 0 < seen_at_kills[0] < seen_at_kills[1] < seen_at_kills[2] < len(expected), \
        f"the kills did not land in the middle of the run: {seen_at_kills} of {len(expected)}"
    assert effects == expected  # the same effects, field by field
    result = tally((e.id for e in expected), effect_ids(every_copy))
    report(name, result)
    assert result.clean, result  # and each committed once: no copy for a consumer to drop


def test_the_worker_keeps_the_admin_read_model_in_redis():
    import redis.asyncio as aioredis

    from agents.partition import Partition
    from agents.readside import label
    from collections import Counter
    from streams.kafka.redis_store import ReadModel

    loaded = scenario_module.load(ROOT / "examples" / "danchi.yaml")
    part = Partition()
    list(simulator.simulate(loaded.registrations, loaded.events, loaded.end, partition=part))
    expected = dict(Counter(label(state) for state in part.table.values()))

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        redis = aioredis.from_url(run.settings.redis)
        try:
            run.start_worker()
            flush = uuid.uuid4().hex
            await run.produce(feed(loaded, run.settings.partitions, run.tick_every, flush))
            await run.collect(flush, timeout=300)
            model, counts = ReadModel(redis), {}
            for _ in range(40):  # flushed to Redis every half second
                counts = await model.counts(run.settings.prefix)
                if counts == expected:
                    break
                await asyncio.sleep(0.25)
            label_key, counts_key = ReadModel.keys(run.settings.prefix)
            await redis.delete(label_key, counts_key)
            return counts
        finally:
            run.kill_worker()
            await run.delete_topics()
            await redis.aclose()

    assert asyncio.run(go()) == expected
