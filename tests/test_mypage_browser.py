"""My Page in a real browser (headless Chromium at a phone's size): a resident opens the signed link
from LINE, sees the town's top image and terms, changes the time of the check and pauses it, is told
「変更しました」, and the engine reacts.

Screenshots go to docs/screenshots/mypage.png (the top of the page) and mypage-settings.png.
"""
from __future__ import annotations

from pathlib import Path

from agents import mypage_link
from agents.clock import MINUTE, local_to_epoch, midnight
from browser import app_server, browser  # noqa: F401  (the fixture)
from linesim import user_id_for
from schemas.events import Ok, Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.mypage import create_app

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
ZONE = "Asia/Tokyo"
DEC_1 = 739_951   # 2026-12-01 as a date ordinal
SAKURA = Tenant("sakura-city", "sakura-channel-secret", "sakura-token", ZONE)
HANA = user_id_for("hana")
FAMILY = (user_id_for("hana-daughter"), user_id_for("hana-son"))
PHONE = {"width": 390, "height": 844}


def at(day: int, hour: int, minute: int = 0) -> int:
    return local_to_epoch(ZONE, DEC_1 + day - 1, hour * 60 + minute)


def test_a_resident_changes_the_time_and_pauses_and_the_engine_reacts(tmp_path, browser):  # noqa: F811
    store = Store(str(tmp_path / "anpi.db"))
    store.accept(SAKURA.id, None, [(HANA, Register(at(1, 0), MemberSettings(
        HANA, "notify", Schedule("1d", 9 * 60, ZONE), None, FAMILY)))])
    engine = Engine(store, SAKURA.id)
    for day in (1, 2, 3):  # three days of checks, each answered a little after nine
        engine.step(at(day, 9))
        store.accept(SAKURA.id, None, [(HANA, Ok(at(day, 9, 12 + day), HANA))])
        engine.step(at(day, 12))
    now = at(4, 8)
    engine.step(now)


    async def step() -> list:
        return engine.step(now)  # in the server's thread: one thread uses the store's connection

    server, base = app_server(lambda: create_app(store, {SAKURA.id: SAKURA}, lambda: now))
    link = mypage_link.linker(base, SAKURA.id, SAKURA.channel_secret)(HANA, now - 2 * MINUTE)
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, locale="ja-JP", is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    try:
        page.goto(link)
        assert page.url == f"{base}/mypage/{SAKURA.id}"  # the token is gone from the address bar
        top = page.locator("img.top")
        assert top.evaluate("img => img.complete && img.naturalWidth > 0")  # the town's image (the default)
        assert "安否通知・毎日 午前9時" in page.inner_text("#now")
        assert "利用規約" in page.inner_text("#terms") and "119番" in page.inner_text("[data-test=terms]")
        history = page.inner_text("[data-test=history]")
        assert "12月3日 午前9時15分" in history and "お返事をいただきました" in history
        page.screenshot(path=str(SHOTS / "mypage.png"))

        # --- the time: half past six in the evening ---
        page.select_option("#hour", "18")
        page.select_option("#minute", "30")
        page.get_by_role("button", name="この日時に変える").click()
        page.wait_for_url(f"{base}/mypage/{SAKURA.id}")
        assert page.inner_text(".flash") == "変更しました"
        assert "安否通知・毎日 午後6時30分" in page.inner_text("#now")

        # --- a pause until Sunday the 6th ---
        page.fill("#until", "2026-12-06")
        page.get_by_role("button", name="この日までお休みする").click()
        page.wait_for_url(f"{base}/mypage/{SAKURA.id}")
        assert page.inner_text(".flash") == "変更しました"
        now_text = page.inner_text("#now")
        assert "12月6日（日）から、またお送りします" in now_text and "次は 12月6日 午後6時30分" in now_text
        page.locator(".flash").evaluate("el => window.scrollTo(0, el.offsetTop - 8)")
        page.screenshot(path=str(SHOTS / "mypage-settings.png"))

        effects = server.call(step)
        reacted = dict(store.states(SAKURA.id))[HANA]
    finally:
        context.close()
        server.stop(server.cleanup)
        store.close()

    assert [e.effect for e in effects if e.subject == HANA] == []  # nothing is sent while paused
    assert reacted.settings.schedule == Schedule("1d", 18 * 60 + 30, ZONE)
    assert reacted.settings.contacts == FAMILY  # a change of time keeps the family
    assert reacted.paused_until == midnight(ZONE, DEC_1 + 5)
    assert reacted.due == at(6, 18, 30)
    for name in ("mypage.png", "mypage-settings.png"):
        assert (SHOTS / name).stat().st_size > 10_000


def test_a_resident_withdraws_on_my_page_after_ticking_the_box_and_nothing_of_them_stays(tmp_path, browser):  # noqa: F811
    store = Store(str(tmp_path / "anpi.db"))
    store.accept(SAKURA.id, None, [(HANA, Register(at(1, 0), MemberSettings(
        HANA, "watch", Schedule("1d", 9 * 60, ZONE), "09012345678", ())))])
    engine = Engine(store, SAKURA.id)
    now = at(1, 10)
    engine.step(now)

    async def step() -> list:
        return engine.step(now + MINUTE)

    server, base = app_server(lambda: create_app(store, {SAKURA.id: SAKURA}, lambda: now))
    link = mypage_link.linker(base, SAKURA.id, SAKURA.channel_secret)(HANA, now - 2 * MINUTE)
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, locale="ja-JP", is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    try:
        page.goto(link)
        page.get_by_role("button", name="退会する").click()       # the box left empty: asked to tick it
        assert "「退会します」に印をつけてから" in page.inner_text("#withdraw")
        page.get_by_label("退会します").check()
        page.get_by_role("button", name="退会する").click()
        assert "退会しました" in page.inner_text("body")
        effects = server.call(step)
        page.goto(f"{base}/mypage/{SAKURA.id}")                  # the session went with the cookie
        assert "退会しました" not in page.inner_text("body")
    finally:
        context.close()
        server.stop(server.cleanup)
    assert [e.effect for e in effects if e.subject == HANA] == ["withdrawn"]
    assert HANA not in dict(store.states(SAKURA.id))
    store.close()
