"""Residents in a real browser (headless Chromium): an administrator imports the town's roster (the
dry run first), prints the sheets with their QR codes, and once a resident has sent their code
from LINE, finds her by name, keeps a note, and saves everything held about her for a disclosure.
Screenshots go to docs/screenshots/."""
from __future__ import annotations

import json
import re
from pathlib import Path

from aiohttp import web

from browser import app_server, browser  # noqa: F401  (the fixture)
from linesim import user_id_for
from streams.admin import accounts
from streams.admin.app import create_app
from streams.embedded.store import Store
from streams.residents import codes
from streams.residents.in_sqlite import SqliteProfiles

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
START = 1_796_050_800_000  # 2026-12-01T00:00+09:00
TENANT, ZONE, PASSWORD = "sakura-city", "Asia/Tokyo", "sakura-staff-2026"
ROSTER = ("氏名,ふりがな,電話,サービス,間隔,時刻,住所,メモ\n"
          "山田 花子,やまだ はなこ,090-1111-2222,見守り,毎日,午前9時,桜町1-2-3,耳が遠い\n"
          "佐藤 一郎,さとう いちろう,,見守り,毎日,午前10時,,\n")


def test_an_administrator_imports_the_roster_prints_sheets_and_answers_a_disclosure(tmp_path, browser, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ANPI_FRIEND_URL", "https://line.me/R/ti/p/@sakura-city")
    store = Store(str(tmp_path / "anpi.db"))
    accounts.install(store.db)
    accounts.create_user(store.db, TENANT, "suzuki", accounts.ADMIN, PASSWORD, START)
    csv_path = tmp_path / "名簿.csv"
    def admin() -> web.Application:
        root = web.Application()
        root.add_subapp("/admin", create_app(store, {TENANT: ZONE}, lambda: START))
        return root
    server, base = app_server(admin)
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP", accept_downloads=True)
    page = context.new_page()
    hanako = user_id_for("browser-hanako")
    try:
        page.goto(f"{base}/admin/{TENANT}/login")
        page.fill("#login", "suzuki")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/admin/{TENANT}/overview")
        page.click("nav >> text=住民")
        page.click("#import")
        # a roster with a mistake: the dry run names the row, nothing is stored
        csv_path.write_bytes(ROSTER.encode("cp932"))   # Excel's plain 「CSV」
        page.set_input_files("#file", str(csv_path))
        page.click("#check")
        assert "3" in page.inner_text("#problems") and "見守りには電話番号が要ります" in page.inner_text("#problems")
        csv_path.write_bytes(ROSTER.replace("佐藤 一郎,さとう いちろう,,", "佐藤 一郎,さとう いちろう,03-1234-5678,")
                             .encode("cp932"))
        page.set_input_files("#file", str(csv_path))
        page.click("#check")
        assert "2人分、問題はありません" in page.inner_text("#ready")
        page.set_input_files("#file", str(csv_path))
        page.click("#commit")
        assert "2人を登録しました" in page.inner_text("#imported")
        assert page.locator("section.sheet svg").count() == 2
        shown = [page.inner_text(f"section.sheet >> nth={i} >> .code") for i in range(2)]
        assert all(re.fullmatch(r"登録 \d{4} \d{4}", s) for s in shown)
        page.screenshot(path=str(SHOTS / "admin-roster-sheets.png"), full_page=True)
        # 山田さん sends her code from LINE (the ingress's claim, as tests/test_roster.py shows end to end)
        row = server.call(lambda: SqliteProfiles(store).claim(TENANT, codes.code_hash(TENANT, codes.read(shown[0])),
                                                               hanako, START + 60_000))
        assert row.name == "山田 花子"
        page.click("nav >> text=住民")
        assert "LINE未連携（1人）" in page.inner_text("main")
        page.fill("#q", "ヤマダ")
        page.click("button[type=submit] >> text=探す")
        page.click("#found >> text=山田 花子")
        page.wait_for_url(f"**/residents/{hanako}")
        page.fill("#p-key_holder", "隣の佐藤さん")
        page.click("#save-profile")
        page.wait_for_url(re.compile(r".*\?saved=1$"))
        assert page.input_value("#p-key_holder") == "隣の佐藤さん" and page.input_value("#p-address") == "桜町1-2-3"
        page.screenshot(path=str(SHOTS / "admin-resident.png"), full_page=True)
        with page.expect_download() as download:
            page.click("#export")
        held = json.loads(Path(download.value.path()).read_text())
        assert held["member"] == hanako and held["profile"]["name"] == "山田 花子"
    finally:
        context.close()
        server.stop(server.cleanup)
    actions = [r["action"] for r in accounts.audit_log(store.db, TENANT)]
    assert {"residents.import", "residents.search", "resident.view", "resident.profile", "resident.export"} <= set(actions)
    store.close()
