"""The tenant settings page (設定) over real HTTP on a real SQLite store, against the running embedded
runtime (`anpi serve`'s ServedRuntime) and linesim on a ManualClock: what staff save there reaches
My Page, the check cards, new sign-ups and the LINE channel at once, without a restart; operators
and other tenants cannot touch it; and the channel's secrets never show again anywhere."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
import zlib
from dataclasses import dataclass, field, replace

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents import mypage_link
from agents.messages import CHECK_TEXT, QUOTES
from linesim import Channel, Config, ManualClock, run_linesim, user_id_for
from linesim.residents import follow_event, postback_event, signed_webhook, user_source
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.admin import accounts, settings_pages
from streams.admin.app import create_app
from streams.admin.keys import TENANTS
from streams.tenants import look as tenant_look
from streams.tenants import settings as tenant_settings
from streams.tenants.in_sqlite import SqliteRegistry
from streams.embedded.serve import ServedRuntime
from streams.embedded.store import Store
from streams.line.sender import Sender

START = 1_796_050_800  # 2026-12-01T00:00+09:00 (a Tuesday), in seconds
HOUR, DAY = 3600, 86400
TENANT = Tenant("town", "old-secret-" + "s" * 24, "old-token-" + "t" * 40)
NEW_SECRET = "8f14e45fceea167a5a36dedd4bea2543"              # like LINE's: 32 hex digits
NEW_TOKEN = "NewLongLivedToken/" + "Zq9" * 40 + "+abc="     # like LINE's: ~170 base64 characters
PASSWORD = "correct horse battery"
RESIDENT = user_id_for("settings-resident")
DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo", None)


def png(width: int = 4, height: int = 2) -> bytes:
    """A real (tiny, grey) PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def install_staff(store: Store, tenants=(TENANT.id,)) -> None:
    hashed = accounts.hash_password(PASSWORD)
    accounts.install(store.db)
    for tenant in tenants:
        accounts.add_hashed(store.db, tenant, f"{tenant}-admin", accounts.ADMIN, hashed, START * 1000)
        accounts.add_hashed(store.db, tenant, f"{tenant}-operator", accounts.OPERATOR, hashed, START * 1000)


class Staff:
    """A staff member's browser: its own cookie jar, no redirects followed; keeps every page it saw."""

    def __init__(self, base: str, pages: list[str]):
        self.base, self.pages = base, pages
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path, allow_redirects=False) as r:
            text = await r.text(errors="replace")
            self.pages.append(text)
            return r.status, text

    async def post(self, path: str, data) -> tuple[int, str, str]:
        async with self.http.post(self.base + path, data=data, allow_redirects=False) as r:
            text = await r.text()
            self.pages.append(text)
            return r.status, text, r.headers.get("Location", "")

    async def login(self, tenant: str, login: str) -> None:
        _, page = await self.get(f"/admin/{tenant}/login")
        status, _, _ = await self.post(f"/admin/{tenant}/login", {"csrf": csrf_in(page), "login": login,
                                                                   "password": PASSWORD})
        assert status == 303

    async def csrf(self, tenant: str) -> str:
        status, page = await self.get(f"/admin/{tenant}/overview")
        assert status == 200
        return csrf_in(page)

    async def close(self) -> None:
        await self.http.close()


def csrf_in(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


@dataclass
class Town:
    """The runtime serving the tenant, linesim as LINE, the clock, and the pages staff saw."""
    runtime: ServedRuntime
    store: Store
    sim: object
    clock: ManualClock
    pages: list[str] = field(default_factory=list)

    def staff(self) -> Staff:
        return Staff(self.runtime.url, self.pages)

    async def until(self, condition, what: str, timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            await asyncio.sleep(0.02)

    async def at(self, moment_s: float) -> None:
        """The clock moves on to `moment_s`; wait until the engine has stepped past it and all is sent."""
        self.clock.set(moment_s)
        target = int(moment_s * 1000)
        await self.until(lambda: (self.runtime.towns[TENANT.id].engine.last_tick or 0) >= target, "the engine to catch up")
        await asyncio.sleep(0.2)
        await self.runtime.drain()

    def seen(self, to: str) -> list:
        return [d for d in self.sim.state.deliveries if d.to == to and d.delivered]

    async def webhook(self, secret: str, events: list[dict]) -> int:
        """POST a webhook signed with `secret` (the channel's, or not) to the runtime."""
        body, headers = signed_webhook(secret, self.sim.channel().bot_user_id, events)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.runtime.url}/webhook/{TENANT.id}", data=body, headers=headers) as r:
                return r.status


def served(story, *, channel: Channel | None = None, members: tuple = ()):
    """Run `story(town)` against a fresh ServedRuntime (started as TENANT, from the environment) and
    linesim (by default knowing TENANT's channel; `channel` for another)."""
    def run(tmp_path):
        async def go():
            clock = ManualClock(START)
            store = Store(str(tmp_path / "anpi.db"))
            install_staff(store)
            for settings in members:
                store.accept(TENANT.id, None, [(settings.id, Register(START * 1000, settings))])
            sender = Sender(TENANT, "http://unused", wall=clock.now)
            runtime = ServedRuntime(store, [TENANT], "", lambda: int(clock.now() * 1000), grace_ms=0,
                                    step_seconds=0.02, sender_for=lambda tenant, metrics: sender)
            url = await runtime.start()
            line = replace(channel or Channel.from_tenant(TENANT), webhook_url=f"{url}/webhook/{TENANT.id}")
            try:
                async with run_linesim(Config([line], clock=clock)) as sim:
                    sender.base_url = sim.base_url
                    return await story(Town(runtime, store, sim, clock))
            finally:
                await runtime.close()
                store.close()
        return asyncio.run(go())
    return run


def audit_rows(store: Store) -> list[tuple]:
    return store.db.execute("SELECT login, action, target, detail FROM admin_audit WHERE action LIKE 'settings.%' "
                            "ORDER BY seq").fetchall()


# --- My Page: the top image and the terms ---------------------------------------------------------------


def test_an_administrator_saves_the_top_image_and_terms_and_my_page_serves_them(tmp_path):
    image = png()

    async def story(t: Town):
        admin = t.staff()
        await admin.login(TENANT.id, "town-admin")
        status, page = await admin.get("/admin/town/settings")
        assert status == 200 and "マイページの画像と利用規約" in page and "いまは標準の画像です" in page
        csrf = csrf_in(page)

        # refused: an SVG, a file that is no image, one over 2 MB; the terms typed with it are not saved
        for bad, words in ((b"<?xml version='1.0'?><svg onload='alert(1)'/>", "SVG 画像は使えません"),
                           (b"GIF90a not really", "PNG・JPEG・GIF・WebP"),
                           (image + bytes(tenant_look.MAX_IMAGE_BYTES), "2MB 以下")):
            form = aiohttp.FormData()
            form.add_field("csrf", csrf)
            form.add_field("terms", "保存されないはずの規約")
            form.add_field("top_image", bad, filename="x.png", content_type="image/png")
            status, page, _ = await admin.post("/admin/town/settings/look", form)
            assert status == 400 and words in page and "保存していません" in page, page
            assert SqliteRegistry(t.store).look_now(TENANT.id) is None
        form = aiohttp.FormData()   # far too large for the form at all: refused before it is read
        form.add_field("csrf", csrf)
        form.add_field("top_image", image + bytes(settings_pages.UPLOAD_MAX), filename="big.png",
                       content_type="image/png")
        status, page, _ = await admin.post("/admin/town/settings/look", form)
        assert status == 413 and "大きすぎます" in page and SqliteRegistry(t.store).look_now(TENANT.id) is None
        assert audit_rows(t.store) == []

        form = aiohttp.FormData()
        form.add_field("csrf", csrf)
        form.add_field("terms", "さくら町 安否確認サービス利用規約\r\n第1条 この規約は、町民の皆さまに適用します。")
        form.add_field("top_image", image, filename="town.png", content_type="image/png")
        status, _, location = await admin.post("/admin/town/settings/look", form)
        assert status == 303 and location.endswith("/admin/town/settings?done=look#look")
        status, page = await admin.get("/admin/town/settings?done=look")
        assert "保存しました" in page and "いまの画像" in page and "第1条 この規約は" in page
        async with admin.http.get(f"{t.runtime.url}/admin/town/settings/top-image") as r:
            assert r.status == 200 and r.content_type == "image/png" and await r.read() == image

        # My Page, as a resident opens it from LINE: the new image and the new terms
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as resident:
            async with resident.get(f"{t.runtime.url}/mypage/town/top-image") as r:
                assert r.status == 200 and r.content_type == "image/png" and await r.read() == image
            link = t.runtime.towns[TENANT.id].sender.texts.mypage(RESIDENT, t.clock.now_ms())
            async with resident.get(link) as r:
                page = await r.text()
                assert r.status == 200 and "いまの設定" in page
                assert "さくら町 安否確認サービス利用規約" in page and "第1条 この規約は" in page
                assert "119番" not in page   # the default terms are gone

        # only the terms this time: the image stays; then back to the defaults
        form = aiohttp.FormData()
        form.add_field("csrf", csrf)
        form.add_field("terms", "第2版")
        form.add_field("top_image", b"", filename="", content_type="application/octet-stream")
        assert (await admin.post("/admin/town/settings/look", form))[0] == 303
        look = SqliteRegistry(t.store).look_now(TENANT.id)
        assert look.terms == "第2版" and look.top_image == image
        status, _, _ = await admin.post("/admin/town/settings/look", {"csrf": csrf, "terms": "", "reset_image": "1"})
        assert status == 303
        look = SqliteRegistry(t.store).look_now(TENANT.id)
        assert look.terms is None and look.top_image is None
        assert [(r[0], r[1], r[3]) for r in audit_rows(t.store)] == [
            ("town-admin", "settings.look", "トップ画像を変更、利用規約を変更"),
            ("town-admin", "settings.look", "利用規約を変更"),
            ("town-admin", "settings.look", "トップ画像を標準に戻す、利用規約を標準に戻す")]
        status, page = await admin.get("/admin/town/audit")
        assert "設定を変更：マイページの画像・利用規約" in page
        await admin.close()

    served(story, members=(MemberSettings(RESIDENT, "notify", DAILY_9, None, ()),))(tmp_path)


# --- who may: administrators of this tenant only ---------------------------------------------------------


def test_operators_can_neither_open_nor_post_the_settings(tmp_path):
    async def story(t: Town):
        operator, admin = t.staff(), t.staff()
        await operator.login(TENANT.id, "town-operator")
        _, overview = await operator.get("/admin/town/overview")
        assert "/admin/town/settings" not in overview   # no 設定 in an operator's menu
        for path in ("/admin/town/settings", "/admin/town/settings/top-image"):
            status, page = await operator.get(path)
            assert status == 403 and "管理者だけ" in page
        csrf = await operator.csrf(TENANT.id)
        for path, form in (("look", {"terms": "担当者の規約"}), ("message", {"check_text": "担当者です", "quotes": ""}),
                           ("timezone", {"timezone": "UTC"}),
                           ("line", {"channel_secret": NEW_SECRET, "channel_access_token": NEW_TOKEN})):
            status, page, _ = await operator.post(f"/admin/town/settings/{path}", {**form, "csrf": csrf})
            assert status == 403 and "管理者だけ" in page
        assert SqliteRegistry(t.store).look_now(TENANT.id) is None
        assert SqliteRegistry(t.store).settings_now(TENANT.id) is None and audit_rows(t.store) == []
        assert t.runtime.tenants[TENANT.id] == TENANT
        # an administrator's menu has it, and a form without the session's CSRF token changes nothing
        await admin.login(TENANT.id, "town-admin")
        _, overview = await admin.get("/admin/town/overview")
        assert 'href="/admin/town/settings"' in overview and "準備中" not in overview
        status, page, _ = await admin.post("/admin/town/settings/message", {"check_text": "CSRFなし", "quotes": ""})
        assert status == 403 and SqliteRegistry(t.store).settings_now(TENANT.id) is None
        await operator.close()
        await admin.close()

    served(story)(tmp_path)


def test_staff_of_another_tenant_get_not_found_and_change_nothing(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))
    install_staff(store, ("city-a", "city-b"))

    async def go():
        app = create_app(store, {"city-a": "Asia/Tokyo", "city-b": "Asia/Tokyo"}, lambda: START * 1000)
        root = web.Application()
        root.add_subapp("/admin", app)
        server = TestServer(root)
        await server.start_server()
        pages: list[str] = []
        try:
            stranger = Staff(str(server.make_url("")).rstrip("/"), pages)
            await stranger.login("city-b", "city-b-admin")
            csrf = await stranger.csrf("city-b")
            for path in ("/admin/city-a/settings", "/admin/city-a/settings/top-image"):
                status, page = await stranger.get(path)
                assert status == 404 and "ページが見つかりません" in page
            form = aiohttp.FormData()
            form.add_field("csrf", csrf)
            form.add_field("terms", "よその規約")
            form.add_field("top_image", png(), filename="x.png", content_type="image/png")
            assert (await stranger.post("/admin/city-a/settings/look", form))[0] == 404
            for path, form in (("message", {"check_text": "よそ", "quotes": ""}), ("timezone", {"timezone": "UTC"}),
                               ("line", {"channel_secret": NEW_SECRET, "channel_access_token": NEW_TOKEN})):
                status, page, _ = await stranger.post(f"/admin/city-a/settings/{path}", {**form, "csrf": csrf})
                assert status == 404 and "ページが見つかりません" in page
            assert SqliteRegistry(store).look_now("city-a") is None and SqliteRegistry(store).settings_now("city-a") is None
            assert app[TENANTS]["city-a"] == "Asia/Tokyo"
            # their own tenant's page works, and is theirs alone
            status, _, _ = await stranger.post("/admin/city-b/settings/timezone", {"csrf": csrf, "timezone": "UTC"})
            assert status == 303 and SqliteRegistry(store).settings_now("city-b").timezone == "UTC"
            assert SqliteRegistry(store).settings_now("city-a") is None
            await stranger.close()
        finally:
            await server.close()
    asyncio.run(go())
    store.close()


# --- the check card: the question and the quotes ----------------------------------------------------------


def test_a_new_question_and_quote_list_are_on_the_next_check_card_without_a_restart(tmp_path):
    quotes = ["一日一善", "ありがとうは魔法の言葉", "今日も一歩ずつ"]

    async def story(t: Town):
        admin = t.staff()
        await admin.login(TENANT.id, "town-admin")
        status, page = await admin.get("/admin/town/settings")
        assert f'value="{CHECK_TEXT}"' in page and "次に作られるカードから" in page
        csrf = csrf_in(page)
        # refused, each with its reason, and nothing saved
        for form, words in (({"check_text": "  ", "quotes": ""}, "確認の文言を入力してください"),
                            ({"check_text": "あ" * 41, "quotes": ""}, "40文字以内"),
                            ({"check_text": "ok", "quotes": "\n".join(f"名言{i}" for i in range(101))}, "100件まで"),
                            ({"check_text": "ok", "quotes": "短い\n" + "長" * 61}, "2件目")):
            status, page, _ = await admin.post("/admin/town/settings/message", {**form, "csrf": csrf})
            assert status == 400 and words in page and "保存していません" in page
        assert SqliteRegistry(t.store).settings_now(TENANT.id) is None
        assert t.runtime.towns[TENANT.id].sender.texts.check == CHECK_TEXT and t.runtime.towns[TENANT.id].sender.texts.quotes == QUOTES

        status, _, _ = await admin.post("/admin/town/settings/message", {
            "csrf": csrf, "check_text": "今日も元気ですか？", "quotes": "\r\n".join(quotes) + "\r\n\r\n"})
        assert status == 303
        stored = SqliteRegistry(t.store).settings_now(TENANT.id)
        assert stored.check_text == "今日も元気ですか？" and stored.quotes == tuple(quotes)
        assert t.runtime.towns[TENANT.id].sender.texts.check == "今日も元気ですか？"   # the running sender has it, no restart
        _, page = await admin.get("/admin/town/settings")
        assert "今日も元気ですか？" in text_of(page.split('id="card-preview"')[1])

        await t.at(START + 9 * HOUR + 60)   # the morning's check goes out through linesim
        card = t.seen(RESIDENT)[-1]
        words = json.dumps(card.messages, ensure_ascii=False)
        assert card.endpoint == "push" and "今日も元気ですか？" in words and CHECK_TEXT not in words
        assert sum(q in words for q in quotes) == 1 and not any(q in words for q in QUOTES)
        assert [(r[1], r[3]) for r in audit_rows(t.store)] == [
            ("settings.message", f"確認の文言：「{CHECK_TEXT}」→「今日も元気ですか？」、名言：標準の{len(QUOTES)}件→3件")]

        # back to the built-in proverbs: an empty list
        assert (await admin.post("/admin/town/settings/message", {"csrf": csrf, "check_text": CHECK_TEXT,
                                                                   "quotes": ""}))[0] == 303
        assert t.runtime.towns[TENANT.id].sender.texts.quotes == QUOTES and t.runtime.towns[TENANT.id].sender.texts.check == CHECK_TEXT
        await t.at(START + DAY + 9 * HOUR + 60)   # the next day's card (a resend: she did not answer)
        words = json.dumps(t.seen(RESIDENT)[-1].messages, ensure_ascii=False)
        assert CHECK_TEXT in words and sum(q in words for q in QUOTES) == 1
        await admin.close()

    served(story, members=(MemberSettings(RESIDENT, "notify", DAILY_9, None, ()),))(tmp_path)


def test_saved_settings_are_loaded_when_the_runtime_starts(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))
    asyncio.run(SqliteRegistry(store).save(TENANT.id, None, settings=tenant_settings.merged(
        None, START * 1000, check_text="ご機嫌いかがですか？", quotes="一期一会", timezone="Asia/Seoul",
        channel_secret=NEW_SECRET, channel_access_token=NEW_TOKEN)))
    store.close()

    async def story(t: Town):
        tenant = t.runtime.tenants[TENANT.id]
        assert (tenant.channel_secret, tenant.channel_access_token, tenant.timezone) == (NEW_SECRET, NEW_TOKEN,
                                                                                         "Asia/Seoul")
        assert t.runtime.towns[TENANT.id].sender.tenant == tenant and t.runtime.towns[TENANT.id].sender.texts.check == "ご機嫌いかがですか？"
        assert t.runtime.towns[TENANT.id].sender.texts.quotes == ("一期一会",)
        assert await t.webhook(TENANT.channel_secret, [follow_event(user_id_for("x"), reply_token="r" * 32)]) == 401

    served(story, channel=Channel(TENANT.id, NEW_TOKEN, NEW_SECRET))(tmp_path)


# --- the time zone --------------------------------------------------------------------------------------


def test_a_new_time_zone_applies_to_the_next_sign_up_in_line(tmp_path):
    newcomer = user_id_for("new-in-new-york")

    async def story(t: Town):
        admin = t.staff()
        await admin.login(TENANT.id, "town-admin")
        status, page = await admin.get("/admin/town/settings")
        assert '<option value="Asia/Tokyo" selected>' in page and "すでに登録している方は" in page
        csrf = csrf_in(page)
        for bad in ("Mars/Olympus_Mons", "", "../../etc/passwd"):
            status, page, _ = await admin.post("/admin/town/settings/timezone", {"csrf": csrf, "timezone": bad})
            assert status == 400 and "タイムゾーンを一覧から選んでください" in page
        assert SqliteRegistry(t.store).settings_now(TENANT.id) is None
        status, _, _ = await admin.post("/admin/town/settings/timezone", {"csrf": csrf, "timezone": "America/New_York"})
        assert status == 303 and t.runtime.tenants[TENANT.id].timezone == "America/New_York"
        _, page = await admin.get("/admin/town/settings")
        assert '<option value="America/New_York" selected>' in page
        assert audit_rows(t.store)[-1][1:] == ("settings.timezone", None, "Asia/Tokyo → America/New_York")

        # a new friend signs up in LINE: 安否通知, daily, 9:00 — in the tenant's new zone
        token = t.sim.state.issue_reply_token(TENANT.id, user_source(newcomer))
        event = postback_event(user_source(newcomer), "action=enroll&s=notify&i=1d&t=540", reply_token=token,
                               timestamp=t.clock.now_ms())
        assert await t.webhook(TENANT.channel_secret, [event]) == 200
        await t.until(lambda: newcomer in dict(t.store.states(TENANT.id)), "the sign-up")
        schedule = dict(t.store.states(TENANT.id))[newcomer].settings.schedule
        assert (schedule.zone, schedule.interval, schedule.minute) == ("America/New_York", "1d", 540)
        # those who signed up before keep theirs
        assert dict(t.store.states(TENANT.id))[RESIDENT].settings.schedule.zone == "Asia/Tokyo"
        await admin.close()

    served(story, members=(MemberSettings(RESIDENT, "notify", DAILY_9, None, ()),))(tmp_path)


def test_the_staff_call_limit_is_saved_checked_audited_and_read_by_the_alert(tmp_path):
    from streams.admin.backends import SqliteReadSide
    from streams.admin.metrics import OpenCases

    async def story(t: Town):
        admin = t.staff()
        await admin.login(TENANT.id, "town-admin")
        status, page = await admin.get("/admin/town/settings")
        assert 'id="limit-hours" name="limit" min="1" max="168" value="12"' in page
        csrf = csrf_in(page)
        for bad in ("0", "169", "半日", ""):
            status, page, _ = await admin.post("/admin/town/settings/limit", {"csrf": csrf, "limit": bad})
            assert status == 400 and "上限は 1 から 168 までの時間" in page, bad
        assert SqliteRegistry(t.store).settings_now(TENANT.id) is None
        status, _, _ = await admin.post("/admin/town/settings/limit", {"csrf": csrf, "limit": "２４"})
        assert status == 303 and SqliteRegistry(t.store).settings_now(TENANT.id).staff_call_limit_hours == 24
        assert audit_rows(t.store)[-1][1:] == ("settings.limit", None, "12時間 → 24時間")
        metrics = OpenCases(SqliteReadSide(t.store), [TENANT.id], settings=SqliteRegistry(t.store))
        await metrics.refresh()
        assert metrics.limit.labels(TENANT.id)._value.get() == 24 * 3600
        await admin.close()

    served(story, members=(MemberSettings(RESIDENT, "notify", DAILY_9, None, ()),))(tmp_path)


def test_the_retention_period_is_saved_checked_audited_and_the_running_engine_uses_it(tmp_path):
    async def story(t: Town):
        admin = t.staff()
        await admin.login(TENANT.id, "town-admin")
        status, page = await admin.get("/admin/town/settings")
        assert 'id="retention-days" name="retention" min="30" max="3650" value="365"' in page
        csrf = csrf_in(page)
        for bad in ("29", "3651", "一年"):
            status, page, _ = await admin.post("/admin/town/settings/retention", {"csrf": csrf, "retention": bad})
            assert status == 400 and "記録を残す期間は 30 から 3650 までの日数" in page, bad
        status, _, _ = await admin.post("/admin/town/settings/retention", {"csrf": csrf, "retention": "９０"})
        assert status == 303 and SqliteRegistry(t.store).settings_now(TENANT.id).retention_days == 90
        assert audit_rows(t.store)[-1][1:] == ("settings.retention", None, "365日 → 90日")
        await t.until(lambda: t.runtime.towns[TENANT.id].engine.retention_ms == 90 * 86_400_000, "the engine")
        await admin.close()

    served(story, members=(MemberSettings(RESIDENT, "notify", DAILY_9, None, ()),))(tmp_path)


def test_the_privacy_notice_is_edited_on_the_settings_page_and_shown_before_registering(tmp_path):
    async def story(t: Town):
        admin = t.staff()
        await admin.login(TENANT.id, "town-admin")
        status, page = await admin.get("/admin/town/settings")
        assert "安否の確認と、そのための連絡にだけ使います" in page and 'id="reset-privacy"' not in page
        csrf = csrf_in(page)
        status, page, _ = await admin.post("/admin/town/settings/privacy", {"csrf": csrf, "privacy": "あ" * 301})
        assert status == 400 and "300文字以内" in page
        notice = "お預かりした情報は、町の見守りにだけ使います。問い合わせ：福祉課 0123-45-6789"
        status, _, _ = await admin.post("/admin/town/settings/privacy", {"csrf": csrf, "privacy": notice})
        assert status == 303 and SqliteRegistry(t.store).settings_now(TENANT.id).privacy_notice == notice
        assert audit_rows(t.store)[-1][1:3] == ("settings.privacy", None)
        newcomer = user_id_for("privacy-newcomer")   # has chosen 安否通知, daily, 9:00: the card to confirm
        token = t.sim.state.issue_reply_token(TENANT.id, user_source(newcomer))
        event = postback_event(user_source(newcomer), "action=setup&s=notify&i=1d&t=540", reply_token=token,
                               timestamp=t.clock.now_ms())
        assert await t.webhook(TENANT.channel_secret, [event]) == 200
        await t.until(lambda: t.seen(newcomer), "the card to confirm")
        assert notice in json.dumps(t.seen(newcomer)[-1].messages, ensure_ascii=False)
        status, page = await admin.get("/admin/town/settings")
        status, _, _ = await admin.post("/admin/town/settings/privacy", {"csrf": csrf_in(page), "reset": "1"})
        assert status == 303 and SqliteRegistry(t.store).settings_now(TENANT.id).privacy_notice is None
        await admin.close()

    served(story, members=(MemberSettings(RESIDENT, "notify", DAILY_9, None, ()),))(tmp_path)


# --- the LINE channel's credentials: in use at once, never shown again ------------------------------------


def test_new_channel_credentials_are_used_at_once_and_never_shown_logged_or_audited(tmp_path):
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    friend, later = user_id_for("friend-after-rotation"), user_id_for("friend-later")

    async def story(t: Town):
        admin = t.staff()
        await admin.login(TENANT.id, "town-admin")
        status, page = await admin.get("/admin/town/settings")
        assert "この画面では未設定" in page and "マイページのリンクは使えなくなります" in page
        csrf = csrf_in(page)
        old_link = t.runtime.towns[TENANT.id].sender.texts.mypage(RESIDENT, t.clock.now_ms())

        # refused: nothing typed, a secret with a space; nothing typed is ever sent back
        for form, words in (({}, "入力してください"),
                            ({"channel_secret": "has a space in it", "channel_access_token": NEW_TOKEN},
                             "チャネルシークレットは")):
            status, page, _ = await admin.post("/admin/town/settings/line", {**form, "csrf": csrf})
            assert status == 400 and words in page and NEW_TOKEN not in page
        assert SqliteRegistry(t.store).settings_now(TENANT.id) is None

        status, _, _ = await admin.post("/admin/town/settings/line", {"csrf": csrf, "channel_secret": NEW_SECRET,
                                                                       "channel_access_token": f" {NEW_TOKEN}\n"})
        assert status == 303
        stored = SqliteRegistry(t.store).settings_now(TENANT.id)
        assert (stored.channel_secret, stored.channel_access_token) == (NEW_SECRET, NEW_TOKEN)

        # the ingress: a webhook signed with the old secret is refused, one with the new accepted
        token = t.sim.state.issue_reply_token(TENANT.id, user_source(friend))
        stale = follow_event(friend, reply_token=token, timestamp=t.clock.now_ms())
        assert await t.webhook(TENANT.channel_secret, [stale]) == 401
        assert friend not in dict(t.store.states(TENANT.id)) and t.seen(friend) == []
        assert await t.sim.state.crowd.post(TENANT.id, [stale]) == 200   # linesim signs with the new secret
        # the sender: the welcome goes with the new token (linesim knows no other: a 401 would show)
        await t.until(lambda: t.seen(friend), "the welcome")
        assert "友だち追加ありがとうございます" in json.dumps(t.seen(friend)[-1].messages, ensure_ascii=False)
        token = t.sim.state.issue_reply_token(TENANT.id, user_source(later))
        assert await t.webhook(NEW_SECRET, [follow_event(later, reply_token=token, timestamp=t.clock.now_ms())]) == 200
        await t.until(lambda: t.seen(later), "the second welcome")
        await t.at(START + 9 * HOUR + 60)   # and the morning's check card is pushed with it too
        assert t.seen(RESIDENT) and t.seen(RESIDENT)[-1].endpoint == "push"
        refused = [(e, s) for e, s in t.sim.state.requests if s != 200]
        assert refused == [] and sum(t.sim.state.requests.values()) >= 3

        # My Page links: those made with the old secret no longer open; new ones do
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as resident:
            async with resident.get(old_link) as r:
                assert r.status == 403
            async with resident.get(t.runtime.towns[TENANT.id].sender.texts.mypage(RESIDENT, t.clock.now_ms())) as r:
                t.pages.append(await r.text())
                assert r.status == 200 and "いまの設定" in t.pages[-1]
        new_key = mypage_link.key_for(NEW_SECRET)
        assert t.runtime.mypage.keys[TENANT.id] == new_key

        # the page says they are set, when, and the last four characters: never the values
        status, page = await admin.get("/admin/town/settings")
        secret_state = text_of(page.split('id="secret-state"')[1].split("</td>")[0])
        assert "設定済み（最終更新" in secret_state and "…2543" in secret_state
        assert "設定済み（最終更新" in text_of(page.split('id="token-state"')[1].split("</td>")[0])
        status, page = await admin.get("/admin/town/audit")
        assert "設定を変更：LINEチャネルの認証情報" in page
        # only the token again
        assert (await admin.post("/admin/town/settings/line", {"csrf": csrf, "channel_secret": "",
                                                                "channel_access_token": NEW_TOKEN + "2"}))[0] == 303
        assert t.runtime.tenants[TENANT.id].channel_secret == NEW_SECRET
        assert t.runtime.towns[TENANT.id].sender.tenant.channel_access_token == NEW_TOKEN + "2"
        await admin.close()

        rows = t.store.db.execute("SELECT * FROM admin_audit").fetchall() + t.store.db.execute(
            "SELECT * FROM audit").fetchall()
        return t.pages, json.dumps(rows, ensure_ascii=False), audit_rows(t.store)

    handler, root = Keep(level=logging.DEBUG), logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        pages, audit_text, settings_rows = served(story, channel=Channel(TENANT.id, NEW_TOKEN, NEW_SECRET), members=(
            MemberSettings(RESIDENT, "notify", DAILY_9, None, ()),))(tmp_path)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    log_text = "\n".join(records)
    assert records and any("settings saved (line)" in r for r in records)
    assert len(pages) > 8 and any("設定済み" in p for p in pages)
    for value in (NEW_SECRET, NEW_TOKEN, NEW_TOKEN + "2", TENANT.channel_secret, TENANT.channel_access_token):
        for where, text in (("a page", "\n".join(pages)), ("the audit tables", audit_text), ("the log", log_text)):
            assert value not in text, f"a credential in {where}"
    assert [(r[1], r[3]) for r in settings_rows] == [
        ("settings.line", "チャネルシークレットを変更、チャネルアクセストークンを変更"),
        ("settings.line", "チャネルアクセストークンを変更")]
