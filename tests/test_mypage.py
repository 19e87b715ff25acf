"""My Page over real HTTP, on both backends (tests/backends.py: the embedded store's file, or Redis
as `anpi ingress` serves it), with the engine stepped by hand: a resident's link opens a session,
every change is an engine event, and the engine reacts to it.

Time is data here too: `Clock` is both the engine's clock and the sessions' wall clock, moved by
hand, so a week of checks runs in milliseconds.
"""
from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web
from yarl import URL

from agents import invitation, mypage_link
from agents.clock import DAY, HOUR, MINUTE, local_to_epoch
from linesim import Channel, Config, ManualClock, run_linesim, user_id_for
from schemas import effects as fx
from schemas.events import AcceptInvite, ChangeSettings, Invite, Ok, Pause, Register, Withdraw
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams import codec
from streams.tenants import look as tenant_look
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.residents.in_redis import RedisProfiles
from streams.residents.in_sqlite import SqliteProfiles
from streams.mypage import reading

from backends import backend, mypage_app, redis_contents, redis_url  # noqa: F401  (backend: a fixture)

START = 1_796_050_800_000  # 2026-12-01T00:00+09:00 (a Tuesday)
ZONE = "Asia/Tokyo"
SAKURA = Tenant("sakura", "sakura-channel-secret", "sakura-token", ZONE)
MOMO = Tenant("momo", "momo-channel-secret", "momo-token", ZONE)
TENANTS = {t.id: t for t in (SAKURA, MOMO)}
HANA, JIRO = user_id_for("hana"), user_id_for("jiro")
FAMILY = (user_id_for("hana-daughter"), user_id_for("hana-son"))
DAILY_9 = Schedule("1d", 9 * 60, ZONE)
CHANGED = "変更しました"
AGAIN = "「マイページ」を、もう一度押してください"


def at(day: int, hour: int, minute: int = 0) -> int:
    """Epoch ms of December `day`, 2026, hour:minute in Tokyo."""
    return local_to_epoch(ZONE, 739_951 + day - 1, hour * 60 + minute)  # 739951: 2026-12-01


assert at(1, 0) == START


@dataclass
class Clock:
    now: int = START + 8 * HOUR

    def __call__(self) -> int:
        return self.now


def register(store: Store, tenant: str, settings: MemberSettings, when: int = START) -> None:
    store.accept(tenant, None, [(settings.id, Register(when, settings))])


def state_of(store: Store, tenant: str, member: str):
    return dict(store.states(tenant))[member]


def inbox(store: Store, tenant: str) -> list:
    return [codec.event_from_obj(json.loads(raw)) for (raw,) in
            store.db.execute("SELECT event FROM inbox WHERE tenant = ? ORDER BY seq", (tenant,))]


def world(tmp_path, kind: str):
    """Two towns' residents in a store stepped by the embedded engine; `s.backend`: what My Page reads."""
    if kind == "redis":
        redis.Redis.from_url(redis_url()).flushdb()
    s = Store(str(tmp_path / "anpi.db"))
    s.backend = kind
    register(s, "sakura", MemberSettings(HANA, "notify", DAILY_9, None, FAMILY))
    register(s, "sakura", MemberSettings(JIRO, "watch", DAILY_9, "09011112222"))
    register(s, "momo", MemberSettings(HANA, "watch", DAILY_9, "0311112222"))  # same id, other town
    Engine(s, "sakura").step(START)
    Engine(s, "momo").step(START)
    yield s
    s.close()


@pytest.fixture
def store(tmp_path, backend):
    yield from world(tmp_path, backend)


@pytest.fixture
def embedded_store(tmp_path):
    yield from world(tmp_path, "sqlite")


def link(tenant: Tenant, member: str, made_at: int, secret: str | None = None) -> str:
    """The path and query of the link the sender puts on the My Page button."""
    url = mypage_link.linker("http://x", tenant.id, secret or tenant.channel_secret)(member, made_at)
    return url[len("http://x"):]


class Browser:
    """A resident's browser: a cookie jar, no automatic redirects."""

    def __init__(self, http: aiohttp.ClientSession, registry=None):
        self.http, self.registry = http, registry  # registry: the backend's, for the tenant's look

    async def get(self, path: str, **kw) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(path, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict, **kw) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(path, data=data, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r

    async def open(self, tenant: Tenant, member: str, made_at: int) -> str:
        """Follow a fresh link; the page's HTML."""
        status, _, r = await self.get(link(tenant, member, made_at))
        assert status == 303 and r.headers["Location"] == f"/mypage/{tenant.id}"
        status, page, _ = await self.get(f"/mypage/{tenant.id}")
        assert status == 200, page
        return page

    async def change(self, tenant: Tenant, path: str, page: str, **fields) -> tuple[int, str]:
        """Submit a form of `page` (with its CSRF token); the page shown afterwards."""
        status, body, r = await self.post(f"/mypage/{tenant.id}/{path}", {"csrf": csrf(page), **fields})
        if status == 303:
            status, body, _ = await self.get(r.headers["Location"].split("#")[0])
        return status, body


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def text(page: str) -> str:
    """The page's words, without tags (what a reader sees)."""
    page = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


@asynccontextmanager
async def served(store: Store, clock: Clock, **options):
    client = aioredis.from_url(redis_url()) if store.backend == "redis" else None
    app, registry = mypage_app(store.backend, store, TENANTS, clock, client, **options)  # sessions: real clock
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            yield Browser(http, registry), base
    finally:
        await runner.cleanup()
        if client is not None:
            await client.aclose()


def run(coro):
    return asyncio.run(coro)


# --- signing in -------------------------------------------------------------------------------------


def test_behind_a_trusted_tls_proxy_the_session_cookie_is_secure(store, monkeypatch):
    monkeypatch.setenv("ANPI_TRUSTED_PROXIES", "127.0.0.1")
    clock = Clock()

    async def main():
        async with served(store, clock) as (browser, _):
            for proto, secure in (("https", True), ("http", False)):
                async with browser.http.get(link(SAKURA, HANA, clock.now), headers={"X-Forwarded-Proto": proto},
                                            allow_redirects=False) as r:
                    assert r.status == 303 and ("Secure" in r.headers["Set-Cookie"]) is secure
    run(main())


def test_a_link_opens_a_short_session_and_the_page_shows_the_settings_in_words(store):
    clock = Clock()

    async def main():
        async with served(store, clock) as (browser, _):
            status, _, r = await browser.get(link(SAKURA, HANA, clock.now - 5 * MINUTE))
            assert status == 303 and r.headers["Location"] == "/mypage/sakura"  # the token leaves the address
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/mypage/sakura" in cookie
            status, page, r = await browser.get("/mypage/sakura")
            assert status == 200 and r.headers["Cache-Control"] == "no-store"
            words = text(page)
            assert "安否通知・毎日 午前9時" in words
            assert "次は 12月1日 午前9時 ごろにお送りします" in words
            assert "ご家族など（1人目）" in words and "ご家族など（2人目）" in words
            assert "利用規約" in words and '/mypage/sakura/top-image' in page
            for opaque in (HANA, *FAMILY):
                assert opaque not in page  # LINE ids never reach the page
            # the other resident sees their own service, with only the end of their number
            other = Browser(browser.http)
            browser.http.cookie_jar.clear()
            page = await other.open(SAKURA, JIRO, clock.now)
            words = text(page)
            assert "見守り・毎日 午前9時" in words and "末尾 2222" in words and "09011112222" not in page
            assert 'id="contacts"' not in page and "招待を作る" not in page  # contacts belong to 安否通知
    run(main())


def test_expired_forged_and_other_tenant_links_are_refused_kindly(store):
    clock = Clock()
    made = clock.now - 5 * MINUTE

    async def main():
        async with served(store, clock) as (browser, _):
            expired = link(SAKURA, HANA, clock.now - mypage_link.VALID_FOR - 1)
            forged = link(SAKURA, HANA, made, secret="not-the-channel-secret")
            momos = link(MOMO, HANA, made).replace("/mypage/momo", "/mypage/sakura")  # momo's link at sakura
            tampered = link(SAKURA, HANA, made)[:-3] + "AAA"
            for bad in (expired, forged, momos, tampered, "/mypage/sakura?t=", "/mypage/sakura?t=abc.def"):
                status, page, r = await browser.get(bad)
                assert status == 403, bad
                assert AGAIN in text(page) and "Set-Cookie" not in r.headers
                assert not re.search(r"expired|forged|tenant|malformed", page)  # no detail leaked
            status, page, _ = await browser.get("/mypage/sakura")  # no session at all
            assert status == 403 and AGAIN in text(page)
            status, _, _ = await browser.get("/mypage/nowhere?t=x")
            assert status == 404
    run(main())


def test_a_session_of_one_tenant_cannot_read_or_change_another(store):
    clock = Clock()

    async def main():
        async with served(store, clock) as (browser, base):
            page = await browser.open(SAKURA, HANA, clock.now)
            sid = browser.http.cookie_jar.filter_cookies(URL(f"{base}/mypage/sakura"))["anpi_mypage"].value
            before = len(inbox(store, "momo"))
            async with aiohttp.ClientSession(base, cookie_jar=aiohttp.DummyCookieJar()) as raw:
                cookie = {"Cookie": f"anpi_mypage={sid}"}
                async with raw.get("/mypage/momo", headers=cookie, allow_redirects=False) as r:
                    assert r.status == 403 and "見守り" not in await r.text()
                for path, form in (("schedule", {"interval": "1d", "hour": "18", "minute": "0"}),
                                   ("pause", {"until": "2026-12-10"}), ("service", {"service": "notify"})):
                    async with raw.post(f"/mypage/momo/{path}", data={"csrf": csrf(page), **form}, headers=cookie,
                                        allow_redirects=False) as r:
                        assert r.status == 403
                async with raw.get("/mypage/sakura", headers=cookie) as r:  # the cookie itself is fine at home
                    assert r.status == 200
            assert len(inbox(store, "momo")) == before
    run(main())


def test_a_form_without_its_csrf_token_is_refused_and_nothing_is_committed(store):
    clock = Clock()

    async def main():
        async with served(store, clock) as (browser, _):
            await browser.open(SAKURA, HANA, clock.now)
            before = len(inbox(store, "sakura"))
            for form in ({}, {"csrf": "guess"}):
                status, page, _ = await browser.post("/mypage/sakura/schedule",
                                                     {**form, "interval": "1d", "hour": "18", "minute": "0"})
                assert status == 403 and "変更はしていません" in text(page)
                status, _, _ = await browser.post("/mypage/sakura/invite", form)
                assert status == 403
            assert len(inbox(store, "sakura")) == before
    run(main())


def test_someone_not_registered_is_asked_to_register_in_line_first(store):
    clock = Clock()
    stranger = user_id_for("stranger")

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, stranger, clock.now)
            assert "LINEで登録したあとに使えます" in text(page) and "お送りする日時を変える" not in page
            before = len(inbox(store, "sakura"))
            status, page, _ = await browser.post("/mypage/sakura/schedule", {"interval": "1d", "hour": "9",
                                                                            "csrf": "x"})
            assert status == 403
            assert len(inbox(store, "sakura")) == before
    run(main())


# --- changes are engine events ---------------------------------------------------------------------


def test_changing_the_time_commits_change_settings_and_the_next_check_moves(store):
    clock = Clock(at(1, 8))
    engine = Engine(store, "sakura")

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            status, page = await browser.change(SAKURA, "schedule", page, interval="1d", weekday="",
                                                hour="18", minute="30")
            assert status == 200 and CHANGED in text(page)
            # before the engine's next step the page already shows the change (it waits in the inbox)
            assert "安否通知・毎日 午後6時30分" in text(page) and "12月1日 午後6時30分" in text(page)
            assert CHANGED not in text((await browser.get("/mypage/sakura"))[1])  # said once
    run(main())
    event = inbox(store, "sakura")[-1]
    assert type(event) is ChangeSettings and event.at == at(1, 8)
    assert event.settings == MemberSettings(HANA, "notify", Schedule("1d", 18 * 60 + 30, ZONE), None, FAMILY)
    engine.step(at(1, 8))
    state = state_of(store, "sakura", HANA)
    assert state.settings.schedule.minute == 18 * 60 + 30 and state.due == at(1, 18, 30)
    checks = [e for e in engine.step(at(1, 23)) if e.subject == HANA]
    assert [(e.effect, e.at) for e in checks] == [(fx.CHECK_SENT, at(1, 18, 30))]  # not at 9:00 any more


def test_a_weekly_schedule_needs_its_weekday_and_bad_input_commits_nothing(store):
    clock = Clock(at(1, 8))

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            before = len(inbox(store, "sakura"))
            cases = [("schedule", {"interval": "weekly", "weekday": "", "hour": "9", "minute": "0"}, "曜日を選んで"),
                     ("schedule", {"interval": "1d", "hour": "25", "minute": "0"}, "何時"),
                     ("schedule", {"interval": "1d", "hour": "9", "minute": "75"}, "何分"),
                     ("schedule", {"interval": "hourly", "hour": "9", "minute": "0"}, "間隔"),
                     ("service", {"service": "watch", "phone": ""}, "お電話番号を入れて"),
                     ("service", {"service": "watch", "phone": "12345"}, "市外局番から"),
                     ("pause", {"until": "2026-11-30"}, "過ぎた日"),
                     ("pause", {"until": "2026-12-01"}, "明日以降"),
                     ("pause", {"until": "2028-12-01"}, "1年まで"),
                     ("pause", {"until": "someday"}, "再開する日"),
                     ("contacts/remove", {"contact": "not-a-contact"}, "見つかりません")]
            for path, form, message in cases:
                status, page, _ = await browser.post(f"/mypage/sakura/{path}", {"csrf": csrf(page), **form})
                assert status == 400, (path, form)
                assert message in text(page) and "変更できませんでした" in text(page), (path, form)
            assert len(inbox(store, "sakura")) == before
            assert "8日以上、誰にも気づかれない" not in text(page).split("お送りする日時を変える")[0]   # daily
            status, page = await browser.change(SAKURA, "schedule", page, interval="weekly", weekday="fri",
                                                hour="10", minute="5")
            assert status == 200 and "安否通知・毎週 金曜日 午前10時5分" in text(page)
            # the 8-day line: a weekly check can leave a fall unnoticed 7 days + 27 hours
            assert "ご注意：いまの間隔では、8日以上、誰にも気づかれない可能性があります" in text(page)
    run(main())
    Engine(store, "sakura").step(at(1, 9))
    assert state_of(store, "sakura", HANA).due == at(4, 10, 5)  # Friday, December 4


def test_switching_to_watch_takes_a_phone_number_and_drops_the_contacts(store):
    clock = Clock(at(1, 8))

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            status, page = await browser.change(SAKURA, "service", page, service="watch", phone="０９０－５５５５－６６６６")
            assert status == 200 and "見守り・毎日 午前9時" in text(page) and "末尾 6666" in text(page)
            status, page = await browser.change(SAKURA, "service", page, service="watch", phone="")  # keeps it
            assert status == 200 and "末尾 6666" in text(page)
            if store.backend == "redis":  # the number goes to the engine; Redis never holds it in clear
                client = aioredis.from_url(redis_url())
                held = await redis_contents(client)
                await client.aclose()
                assert "5555" not in held and "09055556666" not in held
    run(main())
    Engine(store, "sakura").step(at(1, 8))
    assert state_of(store, "sakura", HANA).settings == MemberSettings(HANA, "watch", DAILY_9, "09055556666", ())


def test_a_pause_commits_pause_and_no_check_goes_before_that_date(store):
    clock = Clock(at(1, 8))
    engine = Engine(store, "sakura")

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            status, page = await browser.change(SAKURA, "pause", page, until="2026-12-05")
            assert status == 200 and CHANGED in text(page)
            assert "お休み中です。12月5日（土）から、またお送りします。" in text(page)
            assert "次は 12月5日 午前9時 ごろにお送りします" in text(page)
    run(main())
    event = inbox(store, "sakura")[-1]
    assert event == Pause(at(1, 8), HANA, 739_955)  # 2026-12-05
    effects = []
    for t in range(at(1, 8), at(6, 0), HOUR):
        effects += [e for e in engine.step(t) if e.subject == HANA and e.effect == fx.CHECK_SENT]
    assert [e.at for e in effects] == [at(5, 9)]  # nothing on the 1st to the 4th
    assert all(e.at >= at(5, 0) for e in effects)


def test_withdrawing_on_my_page_asks_once_then_removes_the_resident_and_ends_the_session(store):
    clock = Clock(at(1, 8))
    engine = Engine(store, "sakura")

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            assert "退会する" in text(page)
            status, page = await browser.change(SAKURA, "withdraw", page)   # the box left empty
            assert status == 400 and "「退会します」に印をつけてから" in text(page)
            assert not [e for e in inbox(store, "sakura") if type(e) is Withdraw]
            status, body, r = await browser.post("/mypage/sakura/withdraw", {"csrf": csrf(page), "sure": "1"})
            assert status == 200 and "退会しました" in text(body) and "anpi_mypage=\"\"" in r.headers["Set-Cookie"]
    run(main())
    assert inbox(store, "sakura")[-1] == Withdraw(at(1, 8), HANA)
    effects = [e for t in range(at(1, 8), at(4, 0), HOUR) for e in engine.step(t) if e.subject == HANA]
    assert [e.effect for e in effects] == [fx.WITHDRAWN]   # and no check after it
    assert HANA not in dict(store.states("sakura"))


def test_a_resident_tells_staff_their_name_and_address_only_with_consent(store):
    clock = Clock(at(1, 8))

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            assert "お名前など（職員が連絡するとき）" in text(page)
            mine = {"name": "花山 はな", "kana": "はなやま はな", "address": "桜町3-4-5", "key_holder": "長女"}
            status, page = await browser.change(SAKURA, "profile", page, **mine)   # the box left empty
            assert status == 400 and "「同意します」に印をつけてください" in text(page)
            status, page = await browser.change(SAKURA, "profile", page, **mine, consent="1")
            assert status == 200 and CHANGED in text(page) and 'value="桜町3-4-5"' in page
    run(main())

    async def kept_profile():
        if store.backend != "redis":
            return await SqliteProfiles(store).get("sakura", HANA)
        client = aioredis.from_url(redis_url())
        try:
            return await RedisProfiles(client).get("sakura", HANA)
        finally:
            await client.aclose()
    kept = run(kept_profile())
    assert (kept.name, kept.address, kept.key_holder, kept.updated_by) == ("花山 はな", "桜町3-4-5", "長女", "(本人)")


def test_resuming_ends_the_pause_at_the_next_slot(store):
    clock = Clock(at(1, 8))
    engine = Engine(store, "sakura")

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            status, page = await browser.change(SAKURA, "pause", page, until="2026-12-20")
            assert "お休みをやめて、再開する" in page
            engine.step(clock.now)
            clock.now = at(2, 12)
            status, page = await browser.change(SAKURA, "resume", page)
            assert status == 200 and "お休み中" not in text(page) and "次は 12月3日 午前9時" in text(page)
    run(main())
    engine.step(at(2, 12))
    assert state_of(store, "sakura", HANA).due == at(3, 9)


def test_removing_a_contact_keeps_the_others(store):
    clock = Clock(at(1, 8))

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            refs = re.findall(r'name="contact" value="([^"]+)"', page)
            assert len(refs) == 2 and not set(refs) & set(FAMILY)
            status, page = await browser.change(SAKURA, "contacts/remove", page, contact=refs[0])
            assert status == 200 and CHANGED in text(page)
            assert "ご家族など（1人目）" in text(page) and "ご家族など（2人目）" not in text(page)
            # a second change before the engine's step builds on the first (it does not bring her back)
            status, page = await browser.change(SAKURA, "schedule", page, interval="2d", hour="7", minute="0")
            assert status == 200
    run(main())
    Engine(store, "sakura").step(at(1, 8))
    s = state_of(store, "sakura", HANA).settings
    assert s.contacts == (FAMILY[1],) and s.schedule == Schedule("2d", 7 * 60, ZONE)


def test_a_contact_added_in_line_meanwhile_is_not_lost_by_a_change_on_my_page(embedded_store):
    """The page's change is built from the state plus what waits in the inbox, in one transaction.

    The embedded runtime's alone: on Kafka the state is read and the change written in two steps
    (streams/mypage/in_redis.py says so), and a contact added in LINE in between can be undone."""
    store = embedded_store
    clock = Clock(at(1, 8))
    engine = Engine(store, "sakura")

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            await browser.change(SAKURA, "invite", page)
            engine.step(clock.now)
            code = state_of(store, "sakura", HANA).invite
            cousin = user_id_for("hana-cousin")
            store.accept("sakura", None, [(HANA, AcceptInvite(clock.now + 1, HANA, cousin, code))])  # not stepped
            status, _ = await browser.change(SAKURA, "schedule", page, interval="1d", hour="20", minute="0")
            assert status == 200
            return cousin
    cousin = run(main())
    engine.step(at(1, 8, 1))
    assert state_of(store, "sakura", HANA).settings.contacts == (*FAMILY, cousin)


def test_an_invitation_is_made_on_my_page_and_routes_back_to_the_member(store):
    clock = Clock(at(1, 8))
    engine = Engine(store, "sakura")

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            status, body, r = await browser.post("/mypage/sakura/invite", {"csrf": csrf(page)})
            assert status == 303 and r.headers["Location"] == "/mypage/sakura#invitation"
            status, page, _ = await browser.get("/mypage/sakura")
            words = text(page)
            assert "招待を作りました" in words and "12月4日 午前8時まで、1回だけ使えます" in words
            assert "安否確認の連絡先になっていただけますか。" in words and 'href="https://line.me/R/share?text=' in page
            shared = re.search(r'data-test="invitation">([^<]+)<', page).group(1)
            return html.unescape(shared)
    shared = run(main())
    event = inbox(store, "sakura")[-1]
    assert type(event) is Invite and event.member == HANA
    effects = engine.step(at(1, 8))
    state = state_of(store, "sakura", HANA)
    assert state.invite == event.code and state.invite_until == at(4, 8)
    assert [e.effect for e in effects if e.subject == HANA] == [fx.INVITE_CREATED]  # the LINE chat gets the card
    line = shared.splitlines()[-1]  # what the relative sends back
    assert line == invitation.message(event.code)
    assert invitation.read(line) == (HANA, event.code)
    assert invitation.read(invitation.message(state.invite)) == (HANA, state.invite)
    aunt = user_id_for("hana-aunt")
    store.accept("sakura", None, [(HANA, AcceptInvite(at(1, 9, 30), HANA, aunt, event.code))])
    engine.step(at(1, 9, 30))
    assert state_of(store, "sakura", HANA).settings.contacts == (*FAMILY, aunt)


def test_only_notify_members_make_invitations(store):
    clock = Clock(at(1, 8))

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, JIRO, clock.now)
            assert "招待を作る" not in page
            before = len(inbox(store, "sakura"))
            status, page, _ = await browser.post("/mypage/sakura/invite", {"csrf": csrf(page)})
            assert status == 400 and "安否通知のサービスで使えます" in text(page)
            assert len(inbox(store, "sakura")) == before
    run(main())


def test_the_history_tells_this_members_last_30_days_only(store):
    clock = Clock(at(1, 8))
    engine = Engine(store, "sakura")
    # Hana answers on the 1st and 2nd, misses the 3rd (her family is told on the 4th) and answers on
    # the 5th; Jiro never answers (staff are called on the 2nd)
    for t in range(START, at(5, 12), 10 * MINUTE):
        if t in (at(1, 9, 10), at(2, 9, 10), at(5, 9, 10)):
            store.accept("sakura", None, [(HANA, Ok(t, HANA))])
        engine.step(t)
    effects = store.effects("sakura")
    clock.now = at(5, 12)

    async def main():
        async with served(store, clock) as (browser, _):
            hana = text(await browser.open(SAKURA, HANA, clock.now))
            browser.http.cookie_jar.clear()
            return hana, text(await browser.open(SAKURA, JIRO, clock.now))
    hana, jiro = run(main())
    assert "12月1日 午前9時 「お元気ですか？」をお送りしました" in hana
    assert "12月1日 午前9時10分 お返事をいただきました" in hana
    assert "12月4日 午前9時 お返事がなかったので、もう一度お送りしました" in hana
    assert "12月4日 お昼の12時 お返事がなかったので、ご家族など（2人）にお知らせしました" in hana
    assert "12月5日 午前9時10分 お返事をいただきました（お知らせした方にも伝わります）" in hana
    mine = [e for e in effects if e.subject == HANA and e.effect == fx.CHECK_SENT]
    assert hana.count("「お元気ですか？」をお送りしました") == len(mine) == 3
    # nobody in Hana's family said 「見に行きます」 within 3 hours: staff were called for her too
    assert "12月4日 午後3時 ご家族などからお返事がなかったので、担当の職員にお知らせしました" in hana
    assert "12月2日 お昼の12時 お返事がなかったので" not in hana  # that is Jiro's
    assert jiro.count("なかったので、担当の職員にお知らせしました") == 1 and "ご家族など（2人）" not in jiro
    assert "12月2日 お昼の12時 お返事がなかったので、担当の職員にお知らせしました" in jiro
    assert hana.index("12月5日 午前9時10分") < hana.index("12月1日 午前9時")  # newest first
    if store.backend == "sqlite":  # and it reads them through the index on the subject, not by scanning
        plan = " ".join(str(row) for row in store.db.execute("EXPLAIN QUERY PLAN " + reading.HISTORY_QUERY,
                                                                ("sakura", HANA, 0, 1, 10)))
        assert "mypage_effects_by_subject" in plan and "SCAN" not in plan


def test_history_older_than_30_days_is_left_out(store):
    engine = Engine(store, "sakura")
    for day in range(33):
        store.accept("sakura", None, [(HANA, Ok(START + day * DAY + 9 * HOUR + 10 * MINUTE, HANA))])
        engine.step(START + day * DAY + 12 * HOUR)
    clock = Clock(START + 32 * DAY + 12 * HOUR)  # January 2, noon: the 30 days start on December 3 at noon

    async def main():
        async with served(store, clock) as (browser, _):
            return text(await browser.open(SAKURA, HANA, clock.now))
    words = run(main())
    assert "12月3日 午前9時" not in words and "12月4日 午前9時 「お元気ですか？」" in words
    assert "1月2日 午前9時10分 お返事をいただきました" in words


def test_a_session_ends_after_30_quiet_minutes(store):
    clock, wall = Clock(at(1, 8)), Clock(1_000_000)

    async def main():
        async with served(store, clock, wall_ms=wall) as (browser, _):
            await browser.open(SAKURA, HANA, clock.now)
            wall.now += 29 * MINUTE
            assert (await browser.get("/mypage/sakura"))[0] == 200
            wall.now += 29 * MINUTE  # quiet again, but less than 30 minutes since the last page
            assert (await browser.get("/mypage/sakura"))[0] == 200
            wall.now += 31 * MINUTE
            status, page, _ = await browser.get("/mypage/sakura")
            assert status == 403 and AGAIN in text(page)
    run(main())


# --- the tenant's look ------------------------------------------------------------------------------

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082")


def test_the_top_image_and_terms_default_and_follow_the_tenants_look(store):
    clock = Clock()

    async def main():
        async with served(store, clock) as (browser, _):
            status, body, r = await browser.get("/mypage/sakura/top-image")
            assert status == 200 and r.content_type == "image/svg+xml" and "<svg" in body
            page = await browser.open(SAKURA, HANA, clock.now)
            assert "急な病気やけがのときは、119番" in text(page)  # the default terms
            await browser.registry.save("sakura", None, look=tenant_look.merged(
                None, clock.now, top_image=PNG, terms="さくら市の利用規約です。\n第1条 …"))
            async with browser.http.get("/mypage/sakura/top-image") as r:
                assert r.status == 200 and r.content_type == "image/png" and await r.read() == PNG
            async with browser.http.get("/mypage/momo/top-image") as r:
                assert r.content_type == "image/svg+xml"  # momo's look is its own
            words = text((await browser.get("/mypage/sakura"))[1])
            assert "さくら市の利用規約です。" in words and "119番" not in words
    run(main())
    for bad in (b"<svg onload='x'/>", b"not an image", PNG[:4]):
        with pytest.raises(ValueError):
            tenant_look.merged(None, START, top_image=bad)
    with pytest.raises(ValueError):
        tenant_look.merged(None, START, top_image=PNG + bytes(tenant_look.MAX_IMAGE_BYTES))


# --- LIFF -------------------------------------------------------------------------------------------


def test_liff_login_is_verified_by_line_and_a_bad_id_token_is_refused(store, caplog):
    caplog.set_level(logging.DEBUG)
    sim_clock = ManualClock(start=START / 1000 + 8 * 3600)
    clock = Clock(at(1, 8))

    async def main():
        config = Config([Channel("sakura", access_token="sakura-token", secret="sakura-channel-secret"),
                         Channel("momo", access_token="momo-token", secret="momo-channel-secret")], clock=sim_clock)
        async with run_linesim(config) as sim:
            sakura = sim.channel("sakura")
            wall = lambda: int(sim_clock.now() * 1000)  # noqa: E731
            async with served(store, clock, line_api=sim.base_url, liff_channel_id=sakura.login_channel_id,
                              wall_ms=wall) as (browser, base):
                good = sim.state.issue_id_token("sakura", HANA)
                async with browser.http.post("/mypage/sakura/liff", json={"idToken": good}) as r:
                    assert r.status == 200 and (await r.json())["location"] == "/mypage/sakura"
                    sid = r.cookies["anpi_mypage"].value
                status, page, _ = await browser.get("/mypage/sakura")
                assert status == 200 and "安否通知・毎日 午前9時" in text(page)

                browser.http.cookie_jar.clear()
                head, body, sig = good.split(".")
                forged_claims = json.loads(_unb64(body)) | {"sub": JIRO}
                forged = ".".join((head, _b64(json.dumps(forged_claims).encode()), sig))
                momos = sim.state.issue_id_token("momo", HANA)   # another channel's LIFF app
                short = sim.state.issue_id_token("sakura", HANA, ttl=60)
                sim_clock.advance(120)
                for bad in (forged, momos, short, "", "x.y.z", None, "a" * 5000):
                    async with browser.http.post("/mypage/sakura/liff", json={"idToken": bad}) as r:
                        assert r.status == 403 and "Set-Cookie" not in r.headers, bad
                async with browser.http.post("/mypage/sakura/liff", data={"idToken": good}) as r:
                    assert r.status == 403  # only JSON: a cross-site form cannot post this
                assert (await browser.get("/mypage/sakura"))[0] == 403

                # linesim's endpoint answers as LINE does
                async with aiohttp.ClientSession(sim.base_url) as line:
                    cases = [(good, sakura.login_channel_id, 200, None),
                             (forged, sakura.login_channel_id, 400, "Invalid IdToken."),
                             (good, sim.channel("momo").login_channel_id, 400, "Invalid IdToken Audience."),
                             (short, sakura.login_channel_id, 400, "IdToken expired.")]
                    for token, client_id, status, description in cases:
                        async with line.post("/oauth2/v2.1/verify",
                                             data={"id_token": token, "client_id": client_id}) as r:
                            answer = await r.json()
                            assert r.status == status, description
                            if status == 200:
                                assert answer["sub"] == HANA and answer["aud"] == sakura.login_channel_id
                                assert answer["exp"] > sim_clock.now()
                            else:
                                assert answer == {"error": "invalid_request", "error_description": description}
                return good, sid
    good, sid = run(main())
    assert good not in caplog.text and sid not in caplog.text


def test_nothing_secret_is_logged(store, caplog):
    caplog.set_level(logging.DEBUG)
    clock = Clock(at(1, 8))

    async def main():
        async with served(store, clock) as (browser, base):
            path = link(SAKURA, JIRO, clock.now)
            page = await browser.open(SAKURA, JIRO, clock.now)
            await browser.change(SAKURA, "service", page, service="watch", phone="08077778888")
            await browser.get(link(SAKURA, JIRO, clock.now - DAY))  # refused
            sid = browser.http.cookie_jar.filter_cookies(URL(f"{base}/mypage/sakura"))["anpi_mypage"].value
            return path.split("t=")[1], sid
    token, sid = run(main())
    assert "My Page" in caplog.text  # it does log what happened
    for secret in (token, sid, "08077778888", JIRO):
        assert secret not in caplog.text


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_inside_line_the_page_signs_itself_in_with_the_liff_sdk_and_no_other_script(store):
    clock = Clock()

    async def main():
        async with served(store, clock, liff_id="1234567890-AbCdEfGh") as (browser, _):
            status, page, r = await browser.get("/mypage/sakura")  # no session yet
            assert status == 403 and AGAIN in text(page)
            nonce = re.search(r"'nonce-([^']+)'", r.headers["Content-Security-Policy"]).group(1)
            scripts = re.findall(r"<script([^>]*)>", page)
            assert len(scripts) == 2 and all(f'nonce="{nonce}"' in s for s in scripts)
            assert "https://static.line-scdn.net/liff/edge/2/sdk.js" in page and '"1234567890-AbCdEfGh"' in page
            page = await browser.open(SAKURA, HANA, clock.now)  # the page itself runs no script at all
            status, _, r = await browser.get("/mypage/sakura")
            assert "<script" not in page and "script-src 'none'" in r.headers["Content-Security-Policy"]
    run(main())


def test_the_kafka_read_side_keeps_exactly_the_effects_the_history_tells():
    """agents/readside.MEMBER_HISTORY (what `anpi readside` keeps per member) and the page's sentences agree."""
    from agents.readside import MEMBER_HISTORY
    from schemas.effects import Effect
    from streams.mypage.view import history_line
    kinds = {v for k, v in vars(fx).items() if k.isupper() and isinstance(v, str) and not k.startswith("_")}
    told = {kind for kind in kinds if history_line(Effect(START, kind, HANA, 1, ())) is not None}
    assert told == MEMBER_HISTORY and fx.CHECK_SENT in told and fx.MYPAGE_LINK not in told


def test_the_resident_chooses_their_area_from_the_towns_list_and_a_roll_call_then_reaches_them(store):
    """お住まいの地区: shown only where the town has areas; the choice is a settings change the engine
    keeps, a name not on the list commits nothing, and a roll-call of that area reaches them."""
    from schemas.events import RollCall
    from streams.tenants import settings as ts
    clock = Clock(at(1, 8))
    engine = Engine(store, "sakura")

    async def main():
        async with served(store, clock) as (browser, _):
            page = await browser.open(SAKURA, HANA, clock.now)
            assert "お住まいの地区" not in text(page)   # the town has no areas yet
            await browser.registry.save("sakura", None, settings=ts.merged(
                await browser.registry.settings("sakura"), clock.now,
                quake=ts.quake_config("kita,北町,0421300,220\nminami,南町,,\n")))
            page = (await browser.get("/mypage/sakura"))[1]
            assert "お住まいの地区" in text(page) and "北町" in text(page) and "南町" in text(page)
            status, refused = await browser.change(SAKURA, "area", page, area="nishi")
            assert status == 400 and "地区を一覧から選んでください" in text(refused)
            status, page = await browser.change(SAKURA, "area", page, area="minami")
            assert status == 200 and CHANGED in text(page)
            assert re.search(r'<option value="minami"\s+selected>', page)
    run(main())
    changes = [e for e in inbox(store, "sakura") if type(e) is ChangeSettings]
    assert len(changes) == 1 and changes[0].settings.area == "minami"
    engine.step(at(1, 8))
    assert state_of(store, "sakura", HANA).settings.area == "minami"
    store.accept("sakura", None, [("", RollCall(at(1, 8, 30), "R1", ("minami",)))])
    sent = [e for e in engine.step(at(1, 8, 31)) if e.effect == fx.ROLLCALL_SENT]
    assert [(e.subject, e.area) for e in sent] == [(HANA, "minami")]  # JIRO has no area: not asked
