"""The 8-day line (issue 12): a tenant may forbid schedules where a fall could go unnoticed 8 days or
more (weekly, biweekly, 30d). Then sign-up in LINE does not offer them, a stale or hand-made tap on
one asks the interval again, and My Page refuses them to anyone who does not already have one; the
admin screen says why. The rule is read where people choose (webhook routing, the sign-up question,
My Page), from the tenant as both runtimes run it (tenant_with); the setting is stored by both
registries."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from agents import prompts, signup
from agents.messages import Texts
from backends import store_and_redis
from linesim import user_id_for
from linesim.residents import postback_event, user_source
from schemas.events import Enroll, Setup
from schemas.settings import INTERVALS, MemberSettings, past_the_eight_day_line
from streams.line.webhook_events import parse, route
from streams.tenants import settings as tenant_settings
from streams.tenants.in_redis import RedisRegistry
from streams.tenants.in_sqlite import SqliteRegistry
from test_admin_settings import DAILY_9, RESIDENT, TENANT, Town, audit_rows, served
from test_mypage import CHANGED, HANA, SAKURA, TENANTS, Clock, at, csrf, text
from test_mypage import served as mypage_served
from test_mypage import store  # noqa: F401 (the fixture, on both backends)
from backends import backend  # noqa: F401

LONG = [i for i in INTERVALS if past_the_eight_day_line(i)]
NEWCOMER = user_id_for("eight-day-newcomer")


def test_the_long_intervals_are_weekly_biweekly_and_thirty_days():
    assert sorted(LONG) == ["30d", "biweekly", "weekly"]


def _tap(data: str, at_ms: int = 1_796_050_800_000):
    body = json.dumps({"destination": "U" + "0" * 32, "events": [postback_event(
        user_source(NEWCOMER), data, reply_token="r" * 32, timestamp=at_ms)]}).encode()
    return parse(body)


@pytest.mark.parametrize("action", ["setup", "enroll"])
def test_a_tap_on_a_long_interval_asks_the_interval_again_where_the_tenant_forbids_it(action):
    data = f"action={action}&s=notify&i=30d&t=540"
    allowed = route("town", _tap(data)).events
    assert type(allowed[0]) is (Setup if action == "setup" else Enroll)
    routed = route("town", _tap(data), long_intervals=False)
    assert routed.events == [Setup(1_796_050_800_000, NEWCOMER, "s=notify&t=540")]
    assert routed.audit[0]["reason"] == "interval_not_offered"
    # the question that answer brings offers only the short intervals
    question = prompts.question(signup.parse(routed.events[0].choices), long_intervals=False)
    labels = [item["action"]["label"] for item in question["quickReply"]["items"]]
    assert labels == ["毎日", "2日に1回", "3日に1回", "5日に1回"]
    assert len(prompts.question(signup.parse("s=notify"))["quickReply"]["items"]) == len(INTERVALS)
    # a short one goes through as before
    assert type(route("town", _tap(f"action={action}&s=notify&i=5d&t=540"), long_intervals=False).events[0]) is \
        (Setup if action == "setup" else Enroll)


def test_both_registries_keep_the_setting_and_the_tenant_runs_with_it(tmp_path):
    async def go():
        async with store_and_redis(str(tmp_path / "anpi.db")) as (store, client):
            for registry in (SqliteRegistry(store), RedisRegistry(client)):
                saved = tenant_settings.merged(None, 1, forbid_long_intervals=True, check_text="お元気？")
                await registry.save("town", None, settings=saved)
                back = await registry.settings("town")
                assert back.forbid_long_intervals is True and back.check_text == "お元気？"
                assert tenant_settings.tenant_with(TENANT, back).long_intervals is False
                assert tenant_settings.texts_with(Texts(), back).long_intervals is False
                await registry.save("town", None, settings=tenant_settings.merged(back, 2, forbid_long_intervals=False))
                assert (await registry.settings("town")).forbid_long_intervals is False
                assert tenant_settings.tenant_with(TENANT, await registry.settings("town")).long_intervals is True
    asyncio.run(go())


def test_staff_forbid_the_long_intervals_and_sign_up_in_line_stops_offering_them(tmp_path):
    async def story(t: Town):
        admin = t.staff()
        await admin.login(TENANT.id, "town-admin")
        status, page = await admin.get("/admin/town/settings")
        assert "8日以上、誰にも気づかれない可能性があります" in page and 'id="forbid-long" name="forbid_long" value="1" >' in page
        status, _, _ = await admin.post("/admin/town/settings/intervals", {"csrf": await admin.csrf(TENANT.id),
                                                                           "forbid_long": "1"})
        assert status == 303 and t.runtime.tenants[TENANT.id].long_intervals is False
        assert audit_rows(t.store)[-1][1:] == ("settings.intervals", None, "選べない")
        _, page = await admin.get("/admin/town/settings")
        assert 'name="forbid_long" value="1" checked>' in page

        async def tap(data: str) -> list[dict]:
            before = len(t.seen(NEWCOMER))
            token = t.sim.state.issue_reply_token(TENANT.id, user_source(NEWCOMER))
            t.clock.advance(2)
            assert await t.webhook(TENANT.channel_secret, [postback_event(
                user_source(NEWCOMER), data, reply_token=token, timestamp=t.clock.now_ms())]) == 200
            await t.until(lambda: len(t.seen(NEWCOMER)) > before, "an answer")
            return [m for d in t.seen(NEWCOMER)[before:] for m in d.messages]

        question = await tap("action=setup&s=notify")
        labels = [item["action"]["label"] for item in question[0]["quickReply"]["items"]]
        assert labels == ["毎日", "2日に1回", "3日に1回", "5日に1回"]
        # a confirmation card from before the change: the interval is asked again, nothing is stored
        again = await tap("action=enroll&s=notify&i=biweekly&w=mon&t=540")
        assert "どのくらいの間隔" in str(again) and NEWCOMER not in dict(t.store.states(TENANT.id))
        await tap("action=enroll&s=notify&i=5d&t=540")
        assert dict(t.store.states(TENANT.id))[NEWCOMER].settings.schedule.interval == "5d"
        # allowed again: offered again
        status, _, _ = await admin.post("/admin/town/settings/intervals", {"csrf": await admin.csrf(TENANT.id)})
        assert status == 303 and t.runtime.tenants[TENANT.id].long_intervals is True
        question = await tap("action=setup&s=watch")
        assert len(question[0]["quickReply"]["items"]) == len(INTERVALS)
        await admin.close()

    served(story, members=(MemberSettings(RESIDENT, "notify", DAILY_9, None, ()),))(tmp_path)


def test_my_page_refuses_a_long_interval_where_the_tenant_forbids_it_but_keeps_a_members_own(store):  # noqa: F811
    clock = Clock(at(1, 8))

    def rule(long_intervals: bool) -> None:   # as the runtime runs the tenant once staff saved 設定
        TENANTS["sakura"] = replace(SAKURA, long_intervals=long_intervals)

    async def main():
        async with mypage_served(store, clock) as (browser, _):
            rule(False)
            page = await browser.open(SAKURA, HANA, clock.now)
            assert 'value="30d"' not in page and 'value="weekly"' not in page and 'value="5d"' in page
            status, page, _ = await browser.post("/mypage/sakura/schedule", {
                "csrf": csrf(page), "interval": "30d", "hour": "9", "minute": "0"})
            assert status == 400 and "8日以上、誰にも気づかれない可能性があります" in text(page)
            rule(True)   # before the rule, she chose 30 days
            status, page = await browser.change(SAKURA, "schedule", page, interval="30d", hour="9", minute="0")
            assert status == 200 and CHANGED in text(page)
            rule(False)  # she keeps it, and can still move its time; other long ones stay closed
            page = (await browser.get("/mypage/sakura"))[1]
            assert 'value="30d"' in page and 'value="weekly"' not in page
            status, page = await browser.change(SAKURA, "schedule", page, interval="30d", hour="18", minute="0")
            assert status == 200 and CHANGED in text(page)
            status, page, _ = await browser.post("/mypage/sakura/schedule", {
                "csrf": csrf(page), "interval": "weekly", "weekday": "mon", "hour": "9", "minute": "0"})
            assert status == 400
    try:
        asyncio.run(main())
    finally:
        TENANTS["sakura"] = SAKURA
