"""Staff told on LINE, not only shown (issue 12): a staff member links their own LINE with a one-time
code from the admin screen, sets their hours, and gets a short push, naming nobody, for each new
staff call and reminder while on duty. The codes and hours on both backends (the embedded store and
Redis), the sender's alerts planned without I/O, and the whole way round on `anpi serve` with linesim
(the Kafka runtime's: tests/test_kafka_line.py)."""
from __future__ import annotations

import asyncio
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from agents import on_call
from agents.clock import HOUR, MINUTE
from agents.messages import Texts
from agents.on_call import OnCall
from backends import backend  # noqa: F401 (the fixture)
from linesim import user_id_for
from linesim.residents import postback_event, user_source
from schemas import effects as fx
from schemas.effects import Effect
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.admin import accounts
from streams.line.sender import Sender
from test_admin_routes import A, HASHED, Browser, audit_log, run
from test_conversations import TENANT, START, Town, texts, town

JST = ZoneInfo("Asia/Tokyo")
STAFF_LINE, OTHER_LINE = user_id_for("staff-yamada"), user_id_for("someone-else")


# --- the code and the hours (pure) ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["職員 1234 5678", "職員12345678", "職員：1234-5678", " 職員 １２３４ ５６７８ ",
                                  "職員　1234　5678"])
def test_a_link_code_is_read_however_it_was_typed(text):
    assert on_call.read(text) == "12345678"


@pytest.mark.parametrize("text", ["職員 1234 567", "職員 1234 56789", "招待 12345678", "12345678", "職員 abcd efgh",
                                  "職員の方へ 1234 5678", "職員"])
def test_anything_else_is_not_a_link_code(text):
    assert on_call.read(text) is None


def test_a_new_code_is_eight_random_digits_shown_in_two_halves_and_kept_only_as_a_hash():
    codes = {on_call.new_code() for _ in range(50)}
    assert len(codes) == 50 and all(len(c) == 8 and c.isdigit() for c in codes)
    code = codes.pop()
    assert on_call.read(on_call.shown(code)) == code
    assert code not in on_call.code_hash(A, code) and on_call.code_hash(A, code) != on_call.code_hash("city-b", code)


def _at(hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 12, 1, hour, minute, tzinfo=JST).timestamp() * 1000)


def test_on_duty_by_the_local_hour_a_day_shift_a_night_shift_and_all_day():
    day, night, always = OnCall("day", "U1", 9, 17), OnCall("night", "U2", 17, 9), OnCall("always", "U3")
    assert [s.login for s in (day, night, always) if s.on_duty(_at(9), "Asia/Tokyo")] == ["day", "always"]
    assert [s.login for s in (day, night, always) if s.on_duty(_at(16, 59), "Asia/Tokyo")] == ["day", "always"]
    assert [s.login for s in (day, night, always) if s.on_duty(_at(17), "Asia/Tokyo")] == ["night", "always"]
    assert [s.login for s in (day, night, always) if s.on_duty(_at(3), "Asia/Tokyo")] == ["night", "always"]
    # the tenant's own zone: 09:00 in Tokyo is 00:00 in London
    assert not day.on_duty(_at(9), "Europe/London")
    # one person with two accounts is alerted once; an account without a LINE not at all
    assert on_call.on_duty([day, OnCall("day-2", "U1", 0, 0), OnCall("none", "")], _at(10), "Asia/Tokyo") == ("U1",)


# --- the sender's alerts (no I/O) ----------------------------------------------------------------------


SITE = Tenant("demo-city", "s3cret", "t0ken")
RESIDENT = user_id_for("resident-who-needs-help")


def _alert_sender(*staff: OnCall) -> Sender:
    sender = Sender(SITE, "http://127.0.0.1:9")
    sender.use(texts=Texts(calls_url="https://city.example/admin/demo-city/calls"))
    sender.on_call = staff
    return sender


def test_a_staff_call_is_pushed_to_each_staff_member_on_duty_with_its_reason_and_a_link_naming_nobody():
    sender = _alert_sender(OnCall("day", "U" + "d" * 32, 9, 17), OnCall("night", "U" + "n" * 32, 17, 9))
    call = Effect(_at(10), fx.STAFF_CALL, RESIDENT, 3, data=fx.HELP)
    requests, answers = sender.plan([call])
    assert answers == [] and [(r.endpoint, r.body["to"]) for r in requests] == [("push", "U" + "d" * 32)]
    text = requests[0].body["messages"][0]["text"]
    assert "助けてほしい" in text and f"https://city.example/admin/demo-city/calls#{on_call.case_anchor(RESIDENT, 3)}" in text
    assert RESIDENT not in text
    # a reminder at night goes to the night shift, and says how many times it has come
    reminder = Effect(_at(22), fx.STAFF_REMINDER, RESIDENT, 3, data="2")
    requests, _ = sender.plan([reminder])
    assert [r.body["to"] for r in requests] == ["U" + "n" * 32] and "2回目" in requests[0].body["messages"][0]["text"]
    # every reason has its words
    for reason in (fx.NO_ANSWER, fx.UNCLAIMED, fx.UNFOLLOWED_WATCH):
        (request,), _ = sender.plan([call._replace(data=reason)])
        assert request.body["messages"][0]["text"].splitlines()[1]


def test_alerts_keep_their_retry_keys_whoever_else_is_on_duty_and_skip_a_staff_member_who_blocked_the_account():
    one, two = OnCall("a", "U" + "a" * 32), OnCall("b", "U" + "b" * 32)
    call = Effect(_at(10), fx.STAFF_CALL, RESIDENT, 1, data=fx.NO_ANSWER)
    keys_before = {r.body["to"]: r.retry_key for r in _alert_sender(one, two).plan([call])[0]}
    keys_after = {r.body["to"]: r.retry_key for r in _alert_sender(one).plan([call])[0]}
    assert keys_after == {one.line_user: keys_before[one.line_user]}   # a redelivery alerts nobody twice
    sender = _alert_sender(one, two)
    sender.mark_blocked(two.line_user)
    assert [r.body["to"] for r in sender.plan([call])[0]] == [one.line_user]
    assert _alert_sender().plan([call])[0] == []   # nobody linked: the queue and the alert rule remain


def test_without_the_admin_screens_address_the_alert_says_where_to_look():
    sender = _alert_sender(OnCall("a", "U" + "a" * 32))
    sender.use(texts=Texts())
    (request,), _ = sender.plan([Effect(_at(10), fx.STAFF_CALL, RESIDENT, 1, data=fx.NO_ANSWER)])
    assert "職員の連絡待ち" in request.body["messages"][0]["text"]


# --- linking, hours and unlinking, through the admin screen, on both backends ---------------------------


def code_in(page: str) -> str:
    shown = re.search(r"職員 (\d{4}) (\d{4})", page)
    assert shown, "no code on the page"
    return shown.group(1) + shown.group(2)


@run
async def test_a_staff_member_links_their_line_sets_their_hours_and_unlinks_from_the_admin_screen(world, server, app):
    staff, now = world.side.staff, world.now[0]
    me = Browser(server)
    await me.login(A, "a-operator")
    status, page, _ = await me.get("/admin/city-a/line")
    assert status == 200 and "まだ受け取っていません" in page
    status, page, _ = await me.post("/admin/city-a/line/code", {"csrf": await me.csrf(A)})
    assert status == 200 and "15分間" in page
    code = code_in(page)
    # a code of this tenant does nothing in another; a wrong one links nobody
    assert await staff.link_line("city-b", code, STAFF_LINE, now) is None
    assert await staff.link_line(A, "00000000" if code != "00000000" else "11111111", STAFF_LINE, now) is None
    assert await staff.link_line(A, code, STAFF_LINE, now + MINUTE) == "a-operator"
    assert await staff.link_line(A, code, STAFF_LINE, now + MINUTE) == "a-operator"   # LINE redelivered it
    assert await staff.link_line(A, code, OTHER_LINE, now + MINUTE) is None           # spent: nobody else
    assert await staff.on_call(A) == [OnCall("a-operator", STAFF_LINE, 0, 0)]
    _, page, _ = await me.get("/admin/city-a/line")
    assert "受け取っています" in page and "終日" in page
    status, _, response = await me.post("/admin/city-a/line/duty", {"csrf": await me.csrf(A), "start": "17", "end": "9"})
    assert status == 303
    assert await staff.on_call(A) == [OnCall("a-operator", STAFF_LINE, 17, 9)]
    status, page, _ = await me.post("/admin/city-a/line/duty", {"csrf": await me.csrf(A), "start": "25", "end": "9"})
    assert status == 400 and await staff.on_call(A) == [OnCall("a-operator", STAFF_LINE, 17, 9)]
    admin = Browser(server)
    await admin.login(A, "a-admin")
    _, page, _ = await admin.get("/admin/city-a/users")
    assert "受け取る（17時〜9時）" in page
    status, _, _ = await me.post("/admin/city-a/line/unlink", {"csrf": await me.csrf(A)})
    assert status == 303 and await staff.on_call(A) == []
    actions = [r["action"] for r in await audit_log(world) if r["login"] == "a-operator"]
    assert {"staff.line_code", accounts.LINE_LINKED, "staff.duty", "staff.line_unlink"} <= set(actions)
    for u in (me, admin):
        await u.close()


@run
async def test_a_code_works_for_fifteen_minutes_and_a_new_one_replaces_it(world, server, app):
    staff, now = world.side.staff, world.now[0]
    first = await staff.line_code(A, "a-admin", now)
    second = await staff.line_code(A, "a-admin", now)
    assert await staff.link_line(A, first, STAFF_LINE, now) is None   # replaced by the second
    assert await staff.link_line(A, second, STAFF_LINE, now + on_call.LINK_CODE_VALID_FOR + 1) is None
    third = await staff.line_code(A, "a-admin", now)
    assert await staff.link_line(A, third, STAFF_LINE, now + on_call.LINK_CODE_VALID_FOR) == "a-admin"
    assert [s.login for s in await staff.on_call(A)] == ["a-admin"] and await staff.on_call("city-b") == []


# --- the whole way round: LINE → anpi serve → LINE ----------------------------------------------------------


def test_staff_link_their_line_by_message_and_get_each_call_and_reminder_while_on_duty(tmp_path):
    resident, staff_line, stranger = user_id_for("hanako"), user_id_for("staff-sato"), user_id_for("stranger")

    @town
    async def story(t: Town, store):
        runtime, now = t.runtime, t.clock.now_ms()
        accounts.add_hashed(store.db, TENANT.id, "sato", accounts.OPERATOR, HASHED, now)
        sender = runtime.towns[TENANT.id].sender
        sender.on_call_fresh = 0.0   # the test changes the hours and looks at once
        store.accept(TENANT.id, None, [(resident, Register(now, MemberSettings(
            resident, "watch", Schedule("1d", 9 * 60, "Asia/Tokyo", None), "09012345678")))])
        # a wrong code, from someone who is no staff member: refused, kindly
        assert "使えませんでした" in texts(await t.say(stranger, "職員 1234 5678"))
        code = await runtime.staff.line_code(TENANT.id, "sato", t.clock.now_ms())
        answer = texts(await t.say(staff_line, on_call.shown(code)))
        assert "職員のお知らせ（sato）が届くようになりました" in answer
        assert t.seen(staff_line)[-1].endpoint == "reply"
        await runtime.staff.set_duty(TENANT.id, "sato", 9, 15)
        # 10:00: the resident asks for help; staff are called at once, and the one on duty is told
        t.clock.set(START + 10 * 3600)
        me = user_source(resident)
        for data in ("action=help", "action=help&sure=1"):
            await t.send(me, lambda **kw: postback_event(me, data, **kw))
        await t.until(lambda: len(t.seen(staff_line)) == 2, "the alert to the staff on duty")
        alert = texts(t.seen(staff_line)[-1].messages)
        assert "職員の対応が必要です" in alert and "助けてほしい" in alert
        assert f"{runtime.url}/admin/{TENANT.id}/calls#{on_call.case_anchor(resident, 1)}" in alert
        assert resident not in alert and "09012345678" not in alert
        # 16:00, the first reminder: after sato's hours, so it is on the queue only
        await t.at(START + 16 * 3600 + 60)
        reminders = store.db.execute("SELECT COUNT(*) FROM effects WHERE kind = 'staff_reminder'").fetchone()[0]
        assert reminders == 1 and len(t.seen(staff_line)) == 2
        # sato takes the night too: the second reminder, at 22:00, reaches them
        await runtime.staff.set_duty(TENANT.id, "sato", 0, 0)
        await t.at(START + 22 * 3600 + 60)
        await t.until(lambda: len(t.seen(staff_line)) == 3, "the second reminder")
        assert "2回目" in texts(t.seen(staff_line)[-1].messages)
        assert [d.endpoint for d in t.seen(staff_line)[1:]] == ["push", "push"]

    story(tmp_path)
