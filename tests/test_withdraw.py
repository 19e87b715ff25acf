"""退会: a resident who leaves is removed. The pure engine (the subject is gone from the partition and
its timers), the embedded runtime end to end through LINE (「退会」, the card to confirm, the goodbye;
then nothing of them in the store but counts), and the Kafka runtime (a tombstone on the compacted
changelog; the read side in Redis forgets them)."""
from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.partition import Partition
from agents.subject_agent import Tracked
from linesim import user_id_for
from schemas import effects as fx
from schemas.events import AskWithdraw, Ok, Register, Withdraw
from schemas.settings import MemberSettings, Schedule
from schemas.effects import Effect
from streams.embedded import readside
from streams.embedded.engine import Engine
from streams.kafka.records import event_message, tick_messages
from streams.kafka.settings import Settings
from streams.kafka.simulate import KafkaRun
from streams.simulation import scenario as scenario_module
from streams.simulation import simulator
from backends import key_contents, redis_url
from test_conversations import TENANT, Town, on_disk, texts, town
from test_rollcall_readside import redis_tally, run_embedded

HOUR = 3_600_000
START = 1_796_050_800_000  # 2026-12-01T00:00+09:00
DAILY = Schedule("1d", 9 * 60, "Asia/Tokyo", None)
ALICE, BOB = user_id_for("withdraw-alice"), user_id_for("withdraw-bob")


def test_a_withdrawn_resident_is_gone_from_the_partition_and_no_timer_of_theirs_fires():
    part = Partition(Tracked(()))   # as the runtimes hold it: it remembers what changed
    for who in (ALICE, BOB):
        part.apply(who, Register(START, MemberSettings(who, "watch", DAILY, "09012345678")))
    assert [e.effect for e in part.tick(START + 9 * HOUR)] == [fx.CHECK_SENT, fx.CHECK_SENT]
    asked = part.apply(ALICE, AskWithdraw(START + 10 * HOUR, ALICE))
    assert [e.effect for e in asked] == [fx.WITHDRAW_CONFIRM] and ALICE in part.table  # nothing removed yet
    gone = part.apply(ALICE, Withdraw(START + 10 * HOUR + 5_000, ALICE))
    assert [(e.effect, e.subject) for e in gone] == [(fx.WITHDRAWN, ALICE)]
    assert ALICE not in part.table and part.table.changed[ALICE] is None  # the shells delete it
    # the open check never resends nor calls staff for her; Bob's ladder goes on
    later = part.tick(START + 48 * HOUR)
    assert {e.subject for e in later} == {BOB} and fx.STAFF_CALL in {e.effect for e in later}
    assert part.apply(ALICE, Ok(START + 49 * HOUR, ALICE)) == []   # an old card tapped: nobody to act on


def test_a_resident_leaves_in_line_and_the_store_keeps_nothing_of_them(tmp_path):
    grandma = user_id_for("withdraw-grandma")

    async def story(t: Town, store):
        welcome = await t.follow(grandma)
        card = await t.tap(grandma, "午前9時", await t.tap(grandma, "毎日", await t.tap(grandma, "見守り", welcome)))
        done = await t.tap(grandma, "登録する", card)
        assert "お電話番号" in texts(done)
        await t.say(grandma, "090-2222-3333")
        await t.at(t.clock.now() + 10 * 3600)           # a morning's card goes out
        asked = await t.say(grandma, "退会")
        assert "退会しますか？" in texts(asked)
        assert dict(store.states(TENANT.id))[grandma].settings.phone == "09022223333"  # nothing removed yet
        goodbye = await t.tap(grandma, "退会する", asked)
        assert "退会の手続きが終わりました" in texts(goodbye)
        await t.runtime.drain()
        await asyncio.sleep(0.3)
        db = store.db
        assert grandma not in dict(store.states(TENANT.id))
        for table, column in (("inbox", "subject"), ("quarantine", "subject"), ("rs_cases", "member"),
                              ("rs_rolls", "member")):
            assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (grandma,)).fetchone() == (0,), table
        left = db.execute("SELECT kind, sent FROM effects WHERE id LIKE ?", (grandma + ":%",)).fetchall()
        assert left == [], left   # the goodbye went, and with it the last rows that named her
        assert db.execute("SELECT SUM(n) FROM rs_daily WHERE tenant = ? AND kind = ?",
                          (TENANT.id, fx.CHECK_SENT)).fetchone()[0] >= 1   # counts that identify nobody stay
        # a day later: no resend, no staff call for her
        before = len(t.seen(grandma))
        await t.at(t.clock.now() + 30 * 3600)
        assert len(t.seen(grandma)) == before
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert on_disk(tmp_path, [grandma, "09022223333", "090-2222-3333"]) == {}

    town(story)(tmp_path)


# --- the read sides forget them; Kafka deletes them ------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_the_read_side_forgets_a_withdrawn_resident_and_keeps_the_counts(tmp_path, request, kind):
    loaded = scenario_module.load(ROOT / "examples" / "jishin.yaml")
    effects = simulator.run(loaded)
    who = "U002"   # asked for help in the quake: a case, a roll-call status, a list entry
    assert {fx.ROLLCALL_NEED_HELP, fx.CHECK_SENT} <= {e.effect for e in effects if e.subject == who}
    goodbye = Effect(loaded.end, fx.WITHDRAWN, who)

    async def named() -> list:
        if kind == "sqlite":
            store = run_embedded(tmp_path, loaded)
            daily = store.db.execute("SELECT kind, SUM(n) FROM rs_daily GROUP BY kind").fetchall()
            assert store.db.execute("SELECT COUNT(*) FROM rs_rolls WHERE member = ?", (who,)).fetchone()[0] > 0
            assert store.db.execute("SELECT COUNT(*) FROM rs_cases WHERE member = ?", (who,)).fetchone()[0] > 0
            store.accept("town", None, [(who, Withdraw(loaded.end, who))])
            Engine(store, "town").step(loaded.end)
            assert store.db.execute("SELECT kind, SUM(n) FROM rs_daily GROUP BY kind").fetchall() == daily
            found = [table for table in ("rs_cases", "rs_acks", "rs_rolls") for (n,) in store.db.execute(
                f"SELECT COUNT(*) FROM {table} WHERE member = ?", (who,)) if n]
            assert readside.rollcall_members(store.db, "town", "jma-20261201233600", "need_help") == []
            store.close()
            return found
        request.getfixturevalue("running_services")
        client = aioredis.from_url(redis_url())
        try:
            await redis_tally(effects, "town", client)
            assert [k async for k in client.scan_iter(f"*{who}*")]   # there before
            await redis_tally(effects + [goodbye], "town", client)
            keys = [k async for k in client.scan_iter("*")]
            values = {k: await key_contents(client, k) for k in keys}
            assert any(b"daily" in k for k in keys)   # the counts stay
            return [k for k in keys if who.encode() in k] + [k for k, v in values.items() if who.encode() in repr(v).encode()]
        finally:
            await client.aclose()
    assert asyncio.run(named()) == []


def test_on_kafka_a_withdrawn_resident_leaves_a_tombstone_and_a_restarted_worker_knows_them_no_more(running_services):
    async def story():
        run = KafkaRun(Settings.from_env(), tick_every=HOUR)
        await run.create_topics()
        parts = run.settings.partitions
        run.start_worker()
        try:
            await run.produce([event_message(who, Register(START, MemberSettings(who, "watch", DAILY, "09012345678")),
                                             parts) for who in (ALICE, BOB)])
            await run.produce(list(tick_messages(START + 9 * HOUR, parts)))
            await run.produce([event_message(ALICE, Withdraw(START + 10 * HOUR, ALICE), parts)])
            flush = uuid.uuid4().hex
            await run.produce(list(tick_messages(START + 11 * HOUR, parts, flush)))
            first = await run.collect(flush, 120)
            assert [(e.effect, e.subject) for e in first if e.subject == ALICE] == \
                [(fx.CHECK_SENT, ALICE), (fx.WITHDRAWN, ALICE)]
            last = await last_changelog_value(run.settings, ALICE.encode())
            assert last is None   # a tombstone: compaction leaves nothing of her
            run.kill_worker()     # SIGKILL: the next one reads the changelog (or its snapshot) again
            run.start_worker()
            flush = uuid.uuid4().hex
            await run.produce(list(tick_messages(START + 48 * HOUR, parts, flush)))
            later = [e for e in await run.collect(flush, 120) if e.at > START + 11 * HOUR]
            assert {e.subject for e in later} == {BOB} and fx.STAFF_CALL in {e.effect for e in later}
        finally:
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()
    asyncio.run(story())


async def last_changelog_value(settings: Settings, key: bytes):
    """The value of the changelog's last record under `key` (committed records only)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        parts = [TopicPartition(settings.changelog, p) for p in range(settings.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        found, value, quiet = [], None, 0
        while quiet < 2:   # read until two fetches in a row bring nothing
            batches = await consumer.getmany(timeout_ms=1000)
            quiet = 0 if batches else quiet + 1
            for records in batches.values():
                for r in records:
                    if r.key == key:
                        value = r.value
                        found.append(r.offset)
        assert found, "no changelog record of the key"
        return value
    finally:
        await consumer.stop()
