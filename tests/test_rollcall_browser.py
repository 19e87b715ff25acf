"""A roll-call from a 気象庁 bulletin to the staff's tally, in a real browser (headless Chromium):
the feed (a local server playing JMA's, with the real 2011 bulletins) → `anpi jma watch`'s round →
the engine asks the residents of the hit areas → staff open 災害時の安否確認 and watch the tally move
as residents answer 「無事です」 and 「助けが必要」 → the non-responders by area, as CSV."""
from __future__ import annotations

import asyncio

from aiohttp import web

from browser import ServerThread, browser  # noqa: F401  (the fixture)
from schemas import effects as fx
from schemas.events import NeedHelp, Register, Safe
from schemas.settings import MemberSettings, Schedule
from streams.admin import accounts
from streams.admin.app import create_app
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.jma.in_sqlite import SqliteQuakeStore
from streams.jma.watch import Watch
from streams.tenants.in_sqlite import SqliteRegistry
from test_admin_browser import SHOTS
from test_jma_watch import AREAS, MINUTE, TOHOKU, TOHOKU_51, TOHOKU_53, Clock, JmaServer, add_tenant, at

TENANT, ZONE = "town", "Asia/Tokyo"
LOGIN, PASSWORD = "sato", "town-staff-2026"
RESIDENTS = {"U" + "a" * 31 + str(i): area for i, area in
             enumerate(["kurihara", "kurihara", "kurihara", "hitachi", "chiyoda", "sapporo"])}


def test_staff_follow_a_roll_call_from_the_bulletin_to_the_tally(tmp_path, browser):  # noqa: F811
    store = Store(str(tmp_path / "anpi.db"))
    accounts.install(store.db)
    accounts.create_user(store.db, TENANT, LOGIN, accounts.OPERATOR, PASSWORD, at(TOHOKU_51))
    clock = Clock(at(TOHOKU_51) + 30_000)
    engine = Engine(store, TENANT)
    server, state = ServerThread(), {}

    async def setup() -> str:
        await add_tenant(SqliteRegistry(store), TENANT, AREAS)
        joined = at(TOHOKU_51) - 24 * 60 * MINUTE
        for member, area in RESIDENTS.items():
            store.accept(TENANT, None, [(member, Register(joined, MemberSettings(
                member, "notify", Schedule("1d", 9 * 60), area=area)))])
        engine.step(joined)
        state["jma"] = jma = await JmaServer().__aenter__()
        root = web.Application()
        root.add_subapp("/admin", create_app(store, {TENANT: ZONE}, clock))
        state["runner"] = runner = web.AppRunner(root, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def watch_round(*published: str) -> list:
        jma = state["jma"]
        jma.publish(*published)
        async with Watch(SqliteQuakeStore(store), jma.settings, clock) as watch:
            done = await watch.round()
        assert done.ok, done
        effects = engine.step(clock.now)
        return [e for e in effects if e.effect == fx.ROLLCALL_SENT]

    async def teardown() -> None:
        await state["runner"].cleanup()
        await state["jma"].__aexit__(None, None, None)

    base = server.start(setup)
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="ja-JP")
    page = context.new_page()
    try:
        # the 震度速報 (about 90 s after the quake): 栗原市 is at 7, the roll-call goes out there
        sent = server.call(lambda: watch_round(TOHOKU_51))
        assert sorted(e.subject for e in sent) == sorted(m for m, a in RESIDENTS.items() if a == "kurihara")
        page.goto(f"{base}/admin/{TENANT}/login")
        page.fill("#login", LOGIN)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/admin/{TENANT}/overview")
        page.click("nav >> text=災害時の安否確認")
        page.wait_for_url(f"**/admin/{TENANT}/rollcalls")
        assert page.locator("#rollcalls tbody tr").count() == 1
        assert "3人" in page.locator("#rollcalls").inner_text()
        page.click("text=集計を見る")
        page.wait_for_url(f"**/rollcalls/{TOHOKU}")
        assert _row(page, "#total") == ["すべての地区", "0人", "0人", "3人", "0人", "3人"]

        # the VXSE53 six minutes later widens it to 千代田区 and 日立市; two answer in 栗原市
        clock.now = at(TOHOKU_53) + 30_000
        sent = server.call(lambda: watch_round(TOHOKU_53))
        assert sorted(e.area for e in sent) == ["chiyoda", "hitachi"]
        kurihara = [m for m, a in RESIDENTS.items() if a == "kurihara"]

        async def answers() -> None:
            store.accept(TENANT, None, [(kurihara[0], Safe(clock.now + 60_000, kurihara[0])),
                                        (kurihara[1], NeedHelp(clock.now + 90_000, kurihara[1]))])
            clock.now += 2 * MINUTE
            engine.step(clock.now)
        server.call(answers)
        page.goto(f"{base}/admin/{TENANT}/rollcalls/{TOHOKU}")   # the page also reloads itself every 5 s
        assert _row(page, "#total") == ["すべての地区", "1人", "0人", "1人", "1人", "3人"]
        assert "栗原市" in page.locator("#need-help").inner_text()
        assert "栗原市" in page.locator("#quiet").inner_text()
        page.screenshot(path=str(SHOTS / "rollcall.png"), full_page=True)

        # the widened roll-call has its own page; 30 + 30 minutes on, its quiet ones are listed
        clock.now += 61 * MINUTE
        server.call(lambda: asyncio.sleep(0, engine.step(clock.now)))
        page.goto(f"{base}/admin/{TENANT}/rollcalls/{TOHOKU}-2")
        assert _row(page, "#total") == ["すべての地区", "0人", "2人", "0人", "0人", "2人"]
        with page.expect_download() as download:
            page.click("text=CSVで保存（民生委員の方へ）")
        rows = download.value.path().read_text(encoding="utf-8-sig").splitlines()
        assert rows[0] == "地区,地区ID,LINEのID,状態,送った時刻" and len(rows) == 3
        assert {r.split(",")[1] for r in rows[1:]} == {"chiyoda", "hitachi"}
    finally:
        context.close()
        server.stop(teardown)
        store.close()


def _row(page, table: str) -> list[str]:
    return [cell.strip() for cell in page.locator(f"{table} tbody tr").first.locator("td").all_inner_texts()]
