"""The admin screen in a real browser (headless Chromium): staff log in, read the overview of a town
of simulated residents, and work a call-queue case until the engine has closed it.

Screenshots of each screen go to docs/screenshots/ (the README shows them).
"""
from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from agents import readside as rs
from agents.clock import HOUR, MINUTE
from agents.messages import SENDS_MESSAGES
from browser import ServerThread, browser  # noqa: F401  (the fixture)
from linesim import user_id_for
from schemas import effects as fx
from schemas.events import Ok, Register
from schemas.settings import GroupSettings, MemberSettings, Schedule
from streams.admin import accounts
from streams.admin.app import create_app
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.residents.in_sqlite import SqliteProfiles
from streams.residents.profile import Profile

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
START = 1_796_050_800_000  # 2026-12-01T00:00+09:00
DAY = 24 * HOUR
TENANT, ZONE = "sakura-city", "Asia/Tokyo"
LOGIN, PASSWORD = "tanaka", "sakura-staff-2026"


def simulated_town(store: Store, n: int, days: int, seed: int) -> tuple[Engine, int]:
    """n residents and a つながり group through `days` of daily checks, stepped every half hour.

    Each check is answered within hours (most), after the resend (some), or only long after staff
    were called (a few: those of the last days are still waiting). Returns the engine and its time.
    """
    rnd = random.Random(seed)
    schedule = Schedule("1d", 9 * 60, ZONE, None)
    members = [user_id_for(f"town-{i}") for i in range(n)]
    for i, uid in enumerate(members):
        settings = (MemberSettings(uid, "watch", schedule, f"090-{1000 + i:04d}-{2000 + i:04d}", ()) if i % 3
                    else MemberSettings(uid, "notify", schedule, None, (user_id_for(f"family-{i}"),)))
        store.accept(TENANT, None, [(uid, Register(START, settings))])
    group = "C" + "7" * 32
    store.accept(TENANT, None, [(group, Register(START, GroupSettings(group, Schedule("1d", 8 * 60, ZONE, None),
                                                                      tuple(members[:12]))))])
    engine = Engine(store, TENANT)
    answers: list[tuple[int, str, str | None]] = []
    t, end = START, START + (days - 1) * DAY + 16 * HOUR + 15 * MINUTE  # 16:15 on the last day
    while t < end:
        t = min(t + 30 * MINUTE, end)
        due = sorted(a for a in answers if a[0] <= t)
        answers = [a for a in answers if a[0] > t]
        for at, member, grp in due:
            subjects = [grp, member] if grp else [member]
            store.accept(TENANT, None, [(s, Ok(at, member, grp)) for s in subjects])
        for e in engine.step(t):
            if e.effect == fx.CHECK_SENT:
                r = rnd.random()
                if r < 0.84:
                    answers.append((e.at + rnd.randint(3, 240) * MINUTE, e.subject, None))
                elif r < 0.95:
                    answers.append((e.at + DAY + rnd.randint(5, 150) * MINUTE, e.subject, None))
                else:
                    answers.append((e.at + 27 * HOUR + rnd.randint(3, 60) * HOUR, e.subject, None))
            elif e.effect == fx.GROUP_CHECK_POSTED:
                for member in members[:12]:
                    if rnd.random() < 0.85:
                        answers.append((e.at + rnd.randint(5, 600) * MINUTE, member, group))
    return engine, t


def log_in(page, base: str) -> None:
    """The operator logs in and lands on the overview."""
    page.goto(f"{base}/admin/{TENANT}/login")
    page.fill("#login", LOGIN)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/admin/{TENANT}/overview")


def admin_and_engine(store: Store, engine: Engine, now):
    """(server thread, setup, teardown) of the admin screen over `store`, with the engine stepping
    as in `anpi serve`, so that staff's Resolve is applied within a beat."""
    server, state = ServerThread(), {}

    async def setup() -> str:
        state["stop"] = stop = asyncio.Event()
        root = web.Application()
        root.add_subapp("/admin", create_app(store, {TENANT: ZONE}, now))
        state["runner"] = runner = web.AppRunner(root, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["engine"] = asyncio.create_task(engine.run(now, 0, 0.05, stop))
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def teardown() -> None:
        state["stop"].set()
        await state["engine"]
        await state["runner"].cleanup()

    return server, setup, teardown


def test_staff_log_in_read_the_overview_and_work_a_call_to_closed(tmp_path, browser):  # noqa: F811
    path = str(tmp_path / "anpi.db")
    store = Store(path)
    engine, now = simulated_town(store, n=150, days=12, seed=7)
    accounts.install(store.db)
    accounts.create_user(store.db, TENANT, LOGIN, accounts.OPERATOR, PASSWORD, START)
    while rows := store.unsent(TENANT, SENDS_MESSAGES):  # what the sender would have handed to LINE
        store.mark_sent(seq for seq, _ in rows)
    billed = sum(rs.billed(e, 12) for e in store.effects(TENANT))  # the group has twelve members
    expected = _today_counts(store, now)
    assert expected["sent"] > 0 and expected["ok"] > 0 and expected["staff"] > 0
    open_cases = store.db.execute("SELECT member, cycle FROM rs_cases WHERE tenant = ? AND kind = ? AND status = "
                                  "'open' ORDER BY at", (TENANT, fx.STAFF_CALL)).fetchall()
    assert len(open_cases) >= 2, "the town should leave staff some calls to make"

    server, setup, teardown = admin_and_engine(store, engine, lambda: now)
    base = server.start(setup)
    # staff know the longest wait by name (streams/residents): the caller finds her so (in the
    # server's thread: one thread uses the store's connection)
    server.call(lambda: SqliteProfiles(store).put(TENANT, open_cases[0][0], Profile(
        "桜井 ふみ", "さくらい ふみ", "桜町2-1", "日中はデイサービス"), (START, "(test)", "resident.profile", None, None)))
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP")
    page = context.new_page()
    try:
        # --- log in (a wrong password first: the message is clear) ---
        page.goto(f"{base}/admin/{TENANT}/overview")
        assert page.url.endswith(f"/admin/{TENANT}/login")  # no session: the login page
        page.fill("#login", LOGIN)
        page.fill("#password", "not my password")
        page.click("button[type=submit]")
        assert "ログインIDかパスワードが違います" in page.inner_text("main")
        page.fill("#password", PASSWORD)
        page.screenshot(path=str(SHOTS / "admin-login.png"))
        page.click("button[type=submit]")
        page.wait_for_url(f"**/admin/{TENANT}/overview")

        # --- the overview: today's numbers as the engine's effects say ---
        shown = {key: int(page.inner_text(f'#today [data-key="{key}"]').replace(",", "")) for key in expected}
        assert shown == expected
        assert page.locator("#rate-chart rect").count() == 12  # a bar for each day with checks
        members = page.inner_text("#members")
        assert "見守り" in members and "安否通知" in members
        assert int(page.inner_text("#quota").replace(",", "")) == billed > 0
        page.screenshot(path=str(SHOTS / "admin-overview.png"), full_page=True)

        # --- the call queue: call the longest wait, reach them, record it ---
        page.click("text=職員の連絡待ち（見守り）")
        page.wait_for_url(f"**/admin/{TENANT}/calls")
        rows = page.locator("#open-cases tbody tr")
        assert rows.count() == len(open_cases)
        assert "桜井 ふみ" in page.inner_text("#open-cases") and "日中はデイサービス" in page.inner_text("#open-cases")
        page.fill("#q", "サクライ")                     # found by name, as staff type it
        page.click("button >> text=探す")
        assert rows.count() == 1 and "桜井 ふみ" in rows.first.inner_text()
        page.click("text=すべて表示")
        assert rows.count() == len(open_cases)
        member, cycle = open_cases[0]
        first = page.locator(f'#open-cases tr[data-member="{member}"][data-cycle="{cycle}"]')
        assert re.search(r"090-\d{4}-\d{4}", first.inner_text())
        first.locator("button", has_text="連絡がつき無事").click()
        page.wait_for_url(re.compile(r".*/calls\?done=reached$"))
        assert "「連絡がつき無事」を記録しました" in page.inner_text("main")
        # the engine applies the Resolve and closes the case; the page shows it among the closed ones
        closed_row = page.locator(f'#closed-cases tr[data-member="{member}"][data-cycle="{cycle}"]')
        deadline = time.monotonic() + 10
        while closed_row.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            page.reload()
        assert closed_row.count() == 1 and "連絡がつき無事" in closed_row.inner_text()
        assert page.locator(f'#open-cases tr[data-member="{member}"]').count() == 0
        page.screenshot(path=str(SHOTS / "admin-call-queue.png"), full_page=True)
    finally:
        context.close()
        server.stop(teardown)

    check = sqlite3.connect(path)  # what the engine committed, read apart from the server
    resolved = check.execute("SELECT COUNT(*) FROM effects WHERE tenant = ? AND id = ?",
                             (TENANT, f"{member}:{cycle}:{fx.RESOLVED_AFTER_ESCALATION}")).fetchone()[0]
    who = check.execute("SELECT login, action FROM admin_audit WHERE tenant = ? AND target = ?",
                        (TENANT, f"{member}:{cycle}")).fetchall()
    check.close()
    store.close()
    assert resolved == 1 and who == [(LOGIN, "case.reached")]
    for name in ("admin-login.png", "admin-overview.png", "admin-call-queue.png"):
        assert (SHOTS / name).stat().st_size > 10_000


def test_staff_work_a_help_case_and_a_case_the_family_did_not_take_up_through_the_queue(tmp_path, browser):  # noqa: F811
    """A help sits on top of the queue, whatever its age; a 安否通知 case nobody in the family took up
    within 3 h comes to the queue with its reason; both close only when staff record them."""
    from schemas.events import Help
    path = str(tmp_path / "anpi.db")
    store = Store(path)
    schedule = Schedule("1d", 9 * 60, ZONE, None)
    helper, silent, lonely, family = (user_id_for(f"queue-{n}") for n in ("help", "silent", "lonely", "family"))
    for settings in (MemberSettings(helper, "watch", schedule, "090-3000-0001", ()),
                     MemberSettings(silent, "watch", schedule, "090-3000-0002", ()),
                     MemberSettings(lonely, "notify", Schedule("1d", 8 * 60, ZONE, None), None, (family,))):
        store.accept(TENANT, None, [(settings.id, Register(START, settings))])
    engine = Engine(store, TENANT)
    engine.step(START + 9 * HOUR)                                 # day 1's checks
    store.accept(TENANT, None, [(helper, Ok(START + 9 * HOUR + 5 * MINUTE, helper))])
    engine.step(START + DAY + 15 * HOUR)           # resends; family told at 11:00, unclaimed at 14:00; a call at 12:00
    now = START + DAY + 16 * HOUR
    store.accept(TENANT, None, [(helper, Help(now, helper))])     # the newest case, and the most urgent
    engine.step(now)
    accounts.install(store.db)
    accounts.create_user(store.db, TENANT, LOGIN, accounts.OPERATOR, PASSWORD, START)

    server, setup, teardown = admin_and_engine(store, engine, lambda: now)
    base = server.start(setup)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP")
    page = context.new_page()
    try:
        log_in(page, base)
        page.click("text=職員の連絡待ち（見守り）")
        page.wait_for_url(f"**/admin/{TENANT}/calls")
        rows = page.locator("#open-cases tbody tr")
        # the help first, though newest; then the longest wait (the family was told at 11:00)
        assert [r.get_attribute("data-member") for r in rows.all()] == [helper, lonely, silent]
        assert "助けを求めています" in rows.nth(0).inner_text() and "090-3000-0001" in rows.nth(0).inner_text()
        assert "連絡先の方が動けていません" in rows.nth(1).inner_text() and "連絡先1人に通知済み" in rows.nth(1).inner_text()
        page.screenshot(path=str(SHOTS / "admin-call-queue-help.png"), full_page=True)
        for member in (helper, lonely):
            row = page.locator(f'#open-cases tr[data-member="{member}"]')
            row.locator("button", has_text="連絡がつき無事").click()
            page.wait_for_url(re.compile(r".*/calls\?done=reached$"))
            closed_row = page.locator(f'#closed-cases tr[data-member="{member}"]')
            deadline = time.monotonic() + 10
            while closed_row.count() == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
                page.reload()
            assert closed_row.count() == 1 and "連絡がつき無事" in closed_row.inner_text()
        assert [r.get_attribute("data-member") for r in page.locator("#open-cases tbody tr").all()] == [silent]
    finally:
        context.close()
        server.stop(teardown)
    told = [e for e in store.effects(TENANT) if e.effect == fx.ALL_CLEAR]
    store.close()
    assert [(e.subject, e.to) for e in told] == [(lonely, (family,))]   # the family hears all is well


def _today_counts(store: Store, now: int) -> dict[str, int]:
    """Today's numbers straight from the effects table (not the read side), as the overview shows them."""
    today = rs.day_of(now, ZONE)
    c = Counter(e.effect for e in store.effects(TENANT) if rs.day_of(e.at, ZONE) == today)
    return {"sent": c[fx.CHECK_SENT], "ok": c[fx.CONFIRMED] + c[fx.RESOLVED_AFTER_ESCALATION],
            "resent": c[fx.CHECK_RESENT], "staff": c[fx.STAFF_CALL], "contacts": c[fx.CONTACTS_NOTIFIED],
            "posted": c[fx.GROUP_CHECK_POSTED]}


# --- notices: compose, preview as the LINE card, send, watch the progress reach 100 % ----------------------------


def notice_town(store: Store, n: int) -> tuple[list[str], str]:
    """n residents checked at 09:00 today, most of whom answered by 09:30, and a つながり group."""
    schedule = Schedule("1d", 9 * 60, ZONE, None)
    members = [user_id_for(f"notice-town-{i}") for i in range(n)]
    store.accept(TENANT, None, [(uid, Register(START, MemberSettings(uid, "watch", schedule, f"090-{i:04d}-0000", ())
                                                if i % 2 else MemberSettings(uid, "notify", schedule, None, ())))
                                for i, uid in enumerate(members)])
    group = "C" + "5" * 32
    store.accept(TENANT, None, [(group, Register(START, GroupSettings(group, Schedule("1d", 8 * 60, ZONE, None),
                                                                      tuple(members[:8]))))])
    engine = Engine(store, TENANT)
    while store.pending(TENANT, engine.inbox, limit=1):
        engine.step(START + 9 * HOUR + MINUTE)
    store.accept(TENANT, None, [(uid, Ok(START + 9 * HOUR + 20 * MINUTE, uid, None))
                                for i, uid in enumerate(members) if i % 5])
    while store.pending(TENANT, engine.inbox, limit=1):
        engine.step(START + 9 * HOUR + 30 * MINUTE)
    return members, group


def test_staff_send_a_disaster_notice_and_watch_its_delivery_reach_100_percent(tmp_path, browser):  # noqa: F811
    from linesim.server import Channel, Config, run_linesim
    from schemas.tenant import Tenant
    from streams.notices.delivery import NoticeDelivery
    from streams.notices.in_sqlite import SqliteNotices
    from streams.line.sender import Limits, Sender

    path = str(tmp_path / "anpi.db")
    store = Store(path)
    members, group = notice_town(store, 1200)
    accounts.install(store.db)
    accounts.create_user(store.db, TENANT, LOGIN, accounts.OPERATOR, PASSWORD, START)
    now = START + 10 * HOUR
    tenant = Tenant(TENANT, "sakura-secret", "sakura-token")
    server, state = ServerThread(), {}

    async def setup() -> str:
        state["linesim"] = run_linesim(Config([Channel.from_tenant(tenant)]))
        sim = state["sim"] = await state["linesim"].__aenter__()
        # one multicast a second: slow enough to watch the bar move, as a big town would at LINE's 200/s
        state["sender"] = sender = Sender(tenant, sim.base_url, limits=Limits(multicast=1.0))
        state["delivery"] = asyncio.create_task(NoticeDelivery(SqliteNotices(store), TENANT, sender, lambda: now).run())
        root = web.Application()
        root.add_subapp("/admin", create_app(store, {TENANT: ZONE}, lambda: now))
        state["runner"] = runner = web.AppRunner(root, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def teardown() -> None:
        state["delivery"].cancel()
        await asyncio.gather(state["delivery"], return_exceptions=True)
        await state["sender"].close()
        await state["runner"].cleanup()
        await state["linesim"].__aexit__(None, None, None)

    base = server.start(setup)
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP")
    page = context.new_page()
    seen: list[str] = []
    try:
        log_in(page, base)
        page.click("nav >> text=お知らせ配信")
        page.wait_for_url(f"**/admin/{TENANT}/notices")
        assert "地域" in page.inner_text("#area-note")

        # --- compose: a disaster notice with the 「無事です」 button, to everyone ---
        page.check('input[name=kind][value=disaster]')
        page.fill("#title", "避難所を開設しました")
        page.fill("#body", "さくら小学校の体育館を避難所として開設しました。\n毛布と飲み水があります。\n"
                           "避難するときは、近所の方にも声をかけてください。")
        for service in ("watch", "notify", "group"):
            page.check(f'input[name=services][value={service}]')
        page.check("input[name=ok_button]")
        page.click("text=確認画面へ")
        page.wait_for_url(f"**/admin/{TENANT}/notices/preview")

        # --- the preview: the LINE card as residents will see it, and how many get it ---
        bubble = page.locator("#preview .line-bubble")
        assert bubble.count() == 1 and "避難所を開設しました" in bubble.inner_text()
        assert "毛布と飲み水があります。" in bubble.inner_text()
        assert page.locator('#preview .line-button[data-postback="action=ok"]').inner_text() == "無事です"
        assert page.inner_text("#reach") == "約1,200人と1グループ"
        page.screenshot(path=str(SHOTS / "admin-notices.png"), full_page=True)
        assert sum(1 for d in state["sim"].state.deliveries) == 0   # nothing goes before 「送信する」

        # --- send, and watch the progress page (it reloads itself) reach 100 % ---
        page.click("#send")
        page.wait_for_url(re.compile(rf".*/admin/{TENANT}/notices/[0-9a-f]{{32}}$"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                seen.append(page.inner_text("#percent"))
            except Exception:   # caught in the middle of its own reload
                pass
            if seen and seen[-1] == "100%":
                break
            time.sleep(0.25)
        assert seen[-1] == "100%", seen
        assert page.inner_text("#sent") == page.inner_text("#total") == "1,201"
        assert "配信済み" in page.inner_text("#state") and page.locator("#failed").count() == 0
        page.screenshot(path=str(SHOTS / "admin-notice-progress.png"), full_page=True)
        page.click("text=お知らせ配信の一覧へ戻る")
        assert "1,201 / 1,201" in page.inner_text("#notices")
    finally:
        context.close()
        server.stop(teardown)

    sim = state["sim"]
    received = Counter(d.to for d in sim.state.deliveries if d.delivered)
    assert received == {**{m: 1 for m in members}, group: 1} and sim.state.duplicates == 0
    assert {(e, s): n for (e, s), n in sim.state.requests.items()} == {("multicast", 200): 3, ("push", 200): 1}
    check = sqlite3.connect(path)
    who = check.execute("SELECT login, action FROM admin_audit WHERE tenant = ? AND action LIKE 'notice.%' "
                        "ORDER BY seq", (TENANT,)).fetchall()
    check.close()
    store.close()
    assert who == [(LOGIN, "notice.preview"), (LOGIN, "notice.send")]
    for name in ("admin-notices.png", "admin-notice-progress.png"):
        assert (SHOTS / name).stat().st_size > 10_000


# --- settings (設定): an administrator changes the terms of use that My Page shows ----------------------------


def test_an_administrator_opens_the_settings_and_saves_new_terms(tmp_path, browser):  # noqa: F811
    from streams.tenants import settings as tenant_settings
    from streams.tenants.in_sqlite import SqliteRegistry

    path = str(tmp_path / "anpi.db")
    store = Store(path)
    accounts.install(store.db)
    accounts.create_user(store.db, TENANT, "suzuki", accounts.ADMIN, PASSWORD, START)
    # the town's own wording, saved earlier: the card preview shows it
    SqliteRegistry(store).save_now(TENANT, None, settings=tenant_settings.merged(
        None, START, check_text="さくら市です。お元気ですか？", quotes="花は桜木、人は武士\n桜切る馬鹿、梅切らぬ馬鹿"))
    server, state = ServerThread(), {}

    async def setup() -> str:
        root = web.Application()
        root.add_subapp("/admin", create_app(store, {TENANT: ZONE}, lambda: START + 10 * HOUR))
        state["runner"] = runner = web.AppRunner(root, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def teardown() -> None:
        await state["runner"].cleanup()

    base = server.start(setup)
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP")
    page = context.new_page()
    terms = "さくら市 安否確認サービス利用規約\n第1条 この規約は、さくら市の安否確認サービスに適用します。"
    try:
        page.goto(f"{base}/admin/{TENANT}/login")
        page.fill("#login", "suzuki")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/admin/{TENANT}/overview")
        page.click("nav >> text=設定")
        page.wait_for_url(f"**/admin/{TENANT}/settings")
        assert "さくら市です。お元気ですか？" in page.inner_text("#card-preview")
        assert "この画面では未設定" in page.inner_text("#credentials")
        page.fill("#terms", terms)
        page.click("#save-look")
        page.wait_for_url(re.compile(r".*/settings\?done=look#look$"))
        assert "マイページの画像と利用規約を保存しました" in page.inner_text("#done")
        assert page.input_value("#terms") == terms
        page.screenshot(path=str(SHOTS / "admin-settings.png"), full_page=True)
    finally:
        context.close()
        server.stop(teardown)
    assert SqliteRegistry(store).look_now(TENANT).terms == terms
    assert [r["action"] for r in accounts.audit_log(store.db, TENANT)][:1] == ["settings.look"]
    store.close()
    assert (SHOTS / "admin-settings.png").stat().st_size > 10_000
