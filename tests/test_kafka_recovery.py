"""A worker taking its partitions (streams/kafka/changelog.py, snapshot.py), on the real broker:
states left as saved bytes until first stepped, records of the earlier format, a state no worker can
read, and a snapshot whose changelog was made again."""
import asyncio
import os
import signal
import time
import uuid
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaProducer

from agents import member
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from streams import codec
from streams.kafka import changelog, snapshot
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import event_message, tick_messages
from streams.kafka.settings import Settings, partition_of
from streams.tools.bench_kafka import _create_changelog

pytestmark = pytest.mark.usefixtures("running_services")
START = 1_796_050_800_000  # a virtual instant (00:00 JST)
DAILY = Schedule("1d", 9 * 60)
VAR = os.environ.get("ANPI_VAR", "var")


def _member(uid: str) -> MemberSettings:
    return MemberSettings(uid, "watch", DAILY, "090-0000-0000")


def test_saved_states_come_back_lazily_an_earlier_record_at_once_and_an_unreadable_one_is_left_out():
    lazy, earlier, broken = "U" + "1" * 32, "U" + "2" * 32, "U" + "3" * 32
    state = {uid: member.register(Register(START, _member(uid))) for uid in (lazy, earlier)}
    due = state[lazy].due

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        s = run.settings
        await run.create_topics()
        await _create_changelog(s)
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka)
        await producer.start()
        try:
            for uid, value, headers in (
                    (lazy, codec.dumps(codec.state_to_obj(state[lazy])), changelog.due_header(due)),
                    (earlier, codec.dumps(codec.state_to_obj(state[earlier])), None),   # no due header
                    (broken, b'["m", {"id": "' + broken.encode() + b'"}]', changelog.due_header(due))):
                await producer.send_and_wait(s.changelog, value, key=uid.encode(), headers=headers,
                                             partition=partition_of(uid, s.partitions))
        finally:
            await producer.stop()
        try:
            run.start_worker()
            flush = uuid.uuid4().hex
            await run.produce(tick_messages(due, s.partitions, flush))
            return await run.collect(flush, timeout=120), _quarantined(s.web_port)
        finally:
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()

    effects, quarantined = asyncio.run(go())
    assert sorted((e.effect, e.subject) for e in effects) == [("check_sent", lazy), ("check_sent", earlier)]
    assert quarantined == {"state": 1.0}, quarantined   # the broken one, counted when its tick came


def _quarantined(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("anpi_quarantined_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return {k: v for k, v in out.items() if v}


def test_a_snapshot_is_not_used_once_its_changelog_has_been_made_again():
    """A changelog made again under the same name (topics deleted and made again, the worker's disk
    kept): the worker's snapshot names the old changelog's last record, and the new one has a record
    at that offset under that key, but of another batch (its mark). So the new changelog is read
    whole, and nobody of the old one comes back."""
    settings = replace(Settings.from_env(), snapshot_seconds=0.2)
    first = kafka_simulate.KafkaRun(settings)
    second = kafka_simulate.KafkaRun(settings)
    partitions = settings.partitions
    before = "U" + "4" * 32
    after = next(uid for uid in (f"U{i:032x}" for i in range(10_000))
                 if partition_of(uid, partitions) == partition_of(before, partitions))
    number = partition_of(before, partitions)

    def file(run):
        return snapshot.path(os.path.join(VAR, "faust", run.settings.prefix), run.settings.changelog, number)

    async def tick(run, at: int):
        flush = uuid.uuid4().hex
        await run.produce(tick_messages(at, run.settings.partitions, flush))
        return await run.collect(flush, timeout=120)

    async def history(run, uid: str):
        """A registration and two ticks: the same records at the same offsets, whoever registers."""
        s = run.settings
        await run.create_topics()
        run.start_worker()
        await run.produce([event_message(uid, Register(START, _member(uid)), s.partitions)])
        await tick(run, START + 1)
        await tick(run, START + 2)
        deadline = time.monotonic() + 30
        while (snap := snapshot.load(file(run), s.changelog, number)) is None or not snap.tables:
            assert time.monotonic() < deadline, "no snapshot of the registered member"
            await asyncio.sleep(0.1)
        run.kill_worker(signal.SIGKILL)
        return snap

    async def go():
        try:
            old = await history(first, before)
            new = await history(second, after)
            # the old disk under the new changelog's name, naming a record the new changelog has at
            # that offset under that key, but of another batch: what a worker finds after a reset
            snapshot.write(file(second), second.settings.changelog, number, (*new.last[:2], old.last[2]),
                           old.applied, old.tables)
            second.start_worker()
            return old, new, await tick(second, START + 9 * 3600_000)
        finally:
            for run in (first, second):
                run.kill_worker(signal.SIGTERM)
                await run.delete_topics()

    old, new, effects = asyncio.run(go())
    assert [subjects for subjects, *_ in old.tables.values()] == [[before]]
    assert new.last[2] != old.last[2] and [subjects for subjects, *_ in new.tables.values()] == [[after]]
    assert [e.subject for e in effects if e.effect == "check_sent"] == [after]
