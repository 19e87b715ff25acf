"""退会: a resident who leaves is removed. The pure engine (the subject is gone from the partition and
its timers), the embedded runtime end to end through LINE (「退会」, the card to confirm, the goodbye;
then nothing of them in the store but counts), and the Kafka runtime (a tombstone on the compacted
changelog; the read side in Redis forgets them)."""
from __future__ import annotations

import asyncio

from agents.partition import Partition
from agents.subject_agent import Tracked
from linesim import user_id_for
from schemas import effects as fx
from schemas.events import AskWithdraw, Ok, Register, Withdraw
from schemas.settings import MemberSettings, Schedule
from test_conversations import TENANT, Town, on_disk, texts, town

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
