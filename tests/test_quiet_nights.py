"""Quiet nights for contacts (issue 12): a contact who chose 「夜は知らせない（21時〜7時）」 gets a notice
that falls due at night at 7:00 instead; rule 1 still reaches staff at night; if the resident answers
before 7:00, neither the notice nor its all clear goes. The choice in the pure engine, the held
deliveries on both stores, the sender's decisions without I/O, and the whole way round on `anpi
serve` with linesim."""
from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from agents import nights, subject
from backends import backend, store_and_redis  # noqa: F401 (backend: the fixture)
from linesim import user_id_for
from linesim.residents import postback_event, user_source
from schemas import effects as fx
from schemas.effects import Effect
from schemas.events import ContactNights, LeaveContact, Ok, Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams import codec
from streams.embedded.held import SqliteHeld
from streams.kafka.held import RedisHeld
from streams.line.held import LEASE_MS, TOMBSTONE_MS, HeldItem, notice_key
from streams.line.sender import Sender
from test_conversations import START, TENANT, Town, button, texts, town

JST = ZoneInfo("Asia/Tokyo")
RESIDENT, DAY_CONTACT, NIGHT_CONTACT = user_id_for("quiet-hanako"), user_id_for("quiet-son"), user_id_for("quiet-daughter")


def _at(day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 12, day, hour, minute, tzinfo=JST).timestamp() * 1000)


# --- the rule (pure) ----------------------------------------------------------------------------------


def test_the_night_runs_from_nine_in_the_evening_to_seven_in_the_morning_in_the_tenants_zone():
    assert [h for h in range(24) if nights.quiet(_at(1, h), "Asia/Tokyo")] == [0, 1, 2, 3, 4, 5, 6, 21, 22, 23]
    assert not nights.quiet(_at(1, 20, 59), "Asia/Tokyo") and nights.quiet(_at(1, 6, 59), "Asia/Tokyo")
    assert nights.morning_after(_at(1, 22), "Asia/Tokyo") == _at(2, 7)
    assert nights.morning_after(_at(2, 3), "Asia/Tokyo") == _at(2, 7)
    assert nights.morning_after(_at(2, 7), "Asia/Tokyo") == _at(3, 7)   # strictly after
    assert not nights.quiet(_at(1, 22), "Europe/London")                 # 13:00 in London


# --- the choice, in the engine ---------------------------------------------------------------------------


def _resident():
    daily_18 = Schedule("1d", 18 * 60, "Asia/Tokyo", None)
    state, _ = subject.step(None, Register(_at(1, 0), MemberSettings(
        RESIDENT, "notify", daily_18, None, (DAY_CONTACT, NIGHT_CONTACT))))
    return state


def test_a_contact_chooses_quiet_nights_for_one_resident_and_the_notice_names_them():
    state = _resident()
    state, out = subject.step(state, ContactNights(_at(1, 1), RESIDENT, NIGHT_CONTACT, True))
    assert out == [Effect(_at(1, 1), fx.NIGHTS_SET, RESIDENT, member=NIGHT_CONTACT, data=fx.NIGHTS_QUIET)]
    assert state.quiet == (NIGHT_CONTACT,)
    # someone who is not a contact changes nothing
    same, out = subject.step(state, ContactNights(_at(1, 2), RESIDENT, user_id_for("stranger"), True))
    assert out == [] and same.quiet == (NIGHT_CONTACT,)
    # the check at 18:00, the resend a day later, the notice at 21:00: it says whose waits
    state, out = subject.step(state, Ok(_at(1, 3), RESIDENT))   # a sign of life: nothing open yet
    from schemas.events import Tick
    state, out = subject.step(state, Tick(_at(2, 21)))
    told = [e for e in out if e.effect == fx.CONTACTS_NOTIFIED]
    assert told == [Effect(_at(2, 21), fx.CONTACTS_NOTIFIED, RESIDENT, 1, to=(DAY_CONTACT, NIGHT_CONTACT),
                           data=NIGHT_CONTACT)]
    # the state keeps it across a restart
    assert codec.state_from_obj(codec.state_to_obj(state)) == state
    event = ContactNights(_at(2, 22), RESIDENT, NIGHT_CONTACT, False)
    assert codec.event_from_obj(codec.event_to_obj(event)) == event
    # back to any hour; and a contact who leaves is forgotten
    again, out = subject.step(state, event)
    assert again.quiet == () and out[0].data == fx.NIGHTS_ANY
    gone, _ = subject.step(state, LeaveContact(_at(2, 22), RESIDENT, NIGHT_CONTACT))
    assert gone.quiet == ()


# --- the held deliveries, on both stores ----------------------------------------------------------------


def _item(key: str, release: int, to: str = NIGHT_CONTACT) -> HeldItem:
    return HeldItem(key, release, to, f"{RESIDENT}:1:contacts_notified", ({"type": "text", "text": "お知らせ"},))


def test_held_notices_are_kept_released_once_and_cancelled_on_both_stores(tmp_path, backend):
    async def go():
        async with store_and_redis(str(tmp_path / "anpi.db"), backend) as (store, client):
            held = RedisHeld(client, "town") if client is not None else SqliteHeld(store, "town")
            a, b = notice_key(RESIDENT, 1, NIGHT_CONTACT), notice_key(RESIDENT, 2, NIGHT_CONTACT)
            await held.hold([_item(a, _at(2, 7)), _item(b, _at(3, 7))])
            await held.hold([_item(a, _at(9, 7))])                    # again (a batch delivered twice): kept as it was
            assert await held.held([a, b, "other"]) == {a, b}
            assert await held.due(_at(2, 6, 59)) == []
            (due,) = await held.due(_at(2, 7))
            assert due == _item(a, _at(2, 7))
            await held.done([a])
            assert await held.held([a, b]) == {b}
            # an all clear overtakes the second: found (a batch delivered again skips it too), never released
            await held.cancel([b])
            assert await held.held([b]) == {b}
            assert await held.due(_at(3, 8)) == []
            (tomb,) = await held.due(_at(3, 7) + TOMBSTONE_MS)
            assert tomb.cancelled and tomb.key == b
            await held.done([b])
            assert await held.held([a, b]) == set()
            if client is not None:   # a replica that took an item and died: the next takes it after the lease
                await held.hold([_item(a, _at(2, 7))])
                assert len(await held.due(_at(2, 7))) == 1
                assert await held.due(_at(2, 7) + 1) == []
                assert len(await held.due(_at(2, 7) + LEASE_MS)) == 1
    asyncio.run(go())


# --- the sender's decisions ----------------------------------------------------------------------------


class MemoryHeld:
    def __init__(self, held=()):
        self.items, self.cancelled = {}, set(held)

    async def hold(self, items):
        for i in items:
            self.items.setdefault(i.key, i)

    async def held(self, keys):
        return {k for k in keys if k in self.items or k in self.cancelled}

    async def cancel(self, keys):
        self.cancelled.update(keys)


def test_a_night_notice_to_a_quiet_contact_is_held_and_its_all_clear_before_morning_sends_neither():
    site = Tenant("town", "s", "t")
    sender = Sender(site, "http://127.0.0.1:9", wall=lambda: _at(2, 21) / 1000)
    sender.held = MemoryHeld()
    notice = Effect(_at(2, 21), fx.CONTACTS_NOTIFIED, RESIDENT, 1, to=(DAY_CONTACT, NIGHT_CONTACT), data=NIGHT_CONTACT)
    requests, report = _plan(sender, [notice])
    assert [r.body["to"] for r in requests] == [DAY_CONTACT]
    assert [(i.to, i.release_at, i.effect_id) for i in report.held] == [(NIGHT_CONTACT, _at(3, 7), notice.id)]
    clear = Effect(_at(2, 23), fx.ALL_CLEAR, RESIDENT, 1, to=(DAY_CONTACT, NIGHT_CONTACT))
    report_clear = _report(held_keys={notice_key(RESIDENT, 1, NIGHT_CONTACT)})
    requests, _ = sender.plan([clear], report_clear)
    assert [r.body["to"] for r in requests] == [DAY_CONTACT] and report_clear.cancelled == [
        notice_key(RESIDENT, 1, NIGHT_CONTACT)]
    # by day nothing waits; a notice whose morning has come already (a backlog) goes at once too
    for effect, now in ((notice._replace(at=_at(2, 12)), _at(2, 12)), (notice, _at(3, 8))):
        late = Sender(site, "http://127.0.0.1:9", wall=lambda now=now: now / 1000)
        late.held = MemoryHeld()
        requests, report = _plan(late, [effect])
        assert sorted(to for r in requests for to in r.recipients) == sorted([DAY_CONTACT, NIGHT_CONTACT])
        assert not report.held
    # without a store for held deliveries (a bare Sender), nothing is ever held
    requests, report = _plan(Sender(site, "http://127.0.0.1:9", wall=lambda: _at(2, 21) / 1000), [notice])
    assert sorted(to for r in requests for to in r.recipients) == sorted([DAY_CONTACT, NIGHT_CONTACT])


def _report(**kw):
    from streams.line.sender import Report
    report = Report()
    for k, v in kw.items():
        setattr(report, k, v)
    return report


def _plan(sender, effects):
    report = _report()
    requests, _ = sender.plan(effects, report)
    return requests, report


# --- the whole way round -----------------------------------------------------------------------------------


def test_a_quiet_contact_is_told_at_seven_staff_at_night_and_nobody_when_the_resident_answered_first(tmp_path):
    @town
    async def story(t: Town, store):
        daily_18 = Schedule("1d", 18 * 60, "Asia/Tokyo", None)
        store.accept(TENANT.id, None, [(RESIDENT, Register(t.clock.now_ms(), MemberSettings(
            RESIDENT, "notify", daily_18, None, (DAY_CONTACT, NIGHT_CONTACT))))])
        answer = await t.send(user_source(NIGHT_CONTACT), lambda **kw: postback_event(
            user_source(NIGHT_CONTACT), f"action=nights&member={RESIDENT}&quiet=1", **kw))
        assert "朝7時にお送りします" in texts(answer) and button(answer, "夜も知らせる")
        night_before = len(t.seen(NIGHT_CONTACT))
        # day 1 18:00 the check, day 2 18:00 the resend, 21:00 the family is told: the son at once
        await t.at(START + 45 * 3600 + 60)
        assert "お返事がありません" in texts(t.seen(DAY_CONTACT)[-1].messages)
        assert len(t.seen(NIGHT_CONTACT)) == night_before
        # midnight: nobody said 「見に行きます」, staff are called (the ladder does not wait for the morning)
        await t.at(START + 48 * 3600 + 60)
        calls = [e for e in store.effects(TENANT.id) if e.effect == fx.STAFF_CALL]
        assert [(c.at, c.data) for c in calls] == [((START + 48 * 3600) * 1000, fx.UNCLAIMED)]
        assert len(t.seen(NIGHT_CONTACT)) == night_before
        # 7:00: the daughter gets the notice, by push, with its 「見に行きます」
        t.clock.set(START + 55 * 3600 + 30)
        await t.until(lambda: len(t.seen(NIGHT_CONTACT)) == night_before + 1, "the notice at seven")
        notice = t.seen(NIGHT_CONTACT)[-1]
        assert notice.endpoint == "push" and "お返事がありません" in texts(notice.messages)
        assert button(notice.messages, "見に行きます")
        # the resident answers at 8:00: both get the all clear
        t.clock.set(START + 56 * 3600)
        await t.send(user_source(RESIDENT), lambda **kw: postback_event(user_source(RESIDENT), "action=ok", **kw))
        await t.until(lambda: "応答がありました" in texts(t.seen(NIGHT_CONTACT)[-1].messages), "the all clear")
        assert "応答がありました" in texts(t.seen(DAY_CONTACT)[-1].messages)
        night_before, day_before = len(t.seen(NIGHT_CONTACT)), len(t.seen(DAY_CONTACT))
        # the next night: told at 21:00 (day 4), the resident answers at 23:00 — the daughter hears nothing
        await t.at(START + 93 * 3600 + 60)
        t.clock.set(START + 95 * 3600)
        await t.send(user_source(RESIDENT), lambda **kw: postback_event(user_source(RESIDENT), "action=ok", **kw))
        await t.until(lambda: len(t.seen(DAY_CONTACT)) == day_before + 2, "the notice and the all clear")
        assert "応答がありました" in texts(t.seen(DAY_CONTACT)[-1].messages)
        await t.at(START + 103 * 3600 + 60)   # 7:00 on day 5
        await asyncio.sleep(1.5)              # a release loop's look or more
        assert len(t.seen(NIGHT_CONTACT)) == night_before

    story(tmp_path)


def test_my_page_tells_the_resident_which_contact_hears_at_seven():
    from streams.mypage import view
    state = _resident()
    state, _ = subject.step(state, ContactNights(_at(1, 1), RESIDENT, NIGHT_CONTACT, True))
    labels = [label for label, _ in view.contacts(state.settings, "secret", state.quiet)]
    assert labels == ["ご家族など（1人目）", "ご家族など（2人目）　夜は朝7時にお知らせ"]
