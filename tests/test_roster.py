"""Moving a roster in: the CSV (UTF-8 or Shift_JIS, as Excel saves it) read with every row's problem
listed before anything is stored; each imported person a code on a printable sheet; the code sent
from LINE links them (their check starts) and works once; until then they are "not yet linked".
Both backends keep the not yet linked (tests/backends.py); the whole way runs on the embedded
runtime with linesim as LINE."""
from __future__ import annotations

import asyncio
import re

import aiohttp
import redis.asyncio as aioredis

from backends import backend, redis_url  # noqa: F401 (backend: the fixture)
from linesim import user_id_for
from linesim.residents import message_event, user_source
from streams.embedded.store import Store
from streams.residents import codes, roster
from streams.residents.in_redis import RedisProfiles
from streams.residents.in_sqlite import SqliteProfiles
from test_admin_settings import TENANT, Town, csrf_in, served

AREAS = {"kita": "北地区", "minami": "南地区"}
CSV = ("氏名,ふりがな,電話,地区,サービス,間隔,曜日,時刻,住所,メモ\n"
       "山田 花子,やまだ はなこ,０９０－１１１１－２２２２,北地区,見守り,毎日,,午前9時,緑1-2-3,耳が遠い\n"
       "佐藤 一郎,さとう いちろう,03-1234-5678,minami,見守り,毎週,月曜日,14:00,,\n"
       "鈴木 次郎,,,,安否通知,3日に1回,,午後2時,,\n")
BAD = ("氏名,電話,地区,サービス,間隔,曜日,時刻\n"
       ",090-1111-2222,,,,,\n"              # no name
       "田中,12,,,,,\n"                     # a phone that is not one
       "高橋,,,見守り,,,\n"                  # 見守り without a phone
       "伊藤,090-1111-3333,西地区,,,,\n"     # not the town's area
       "渡辺,090-1111-4444,,,毎週,,\n"       # weekly without a day
       "中村,090-1111-5555,,,,,25時\n"       # no such time
       "小林,090-1111-6666,,宅配,,,\n")      # no such service


def test_a_roster_reads_the_same_from_utf8_with_its_bom_and_from_shift_jis():
    for data in (("\ufeff" + CSV).encode("utf-8"), CSV.encode("cp932")):
        read = roster.read(data, AREAS)
        assert read.problems == []
        hanako, ichiro, jiro = read.rows
        assert (hanako.name, hanako.phone, hanako.area, hanako.service, hanako.interval, hanako.minute) == \
            ("山田 花子", "09011112222", "kita", "watch", "1d", 540)
        assert (ichiro.area, ichiro.interval, ichiro.weekday, ichiro.minute) == ("minami", "weekly", "mon", 840)
        assert (jiro.service, jiro.interval, jiro.minute, jiro.phone) == ("notify", "3d", 840, None)
        assert hanako.settings("U" + "1" * 32, "Asia/Tokyo").phone == "09011112222"


def test_the_dry_run_names_every_rows_problem_and_keeps_no_row():
    read = roster.read(BAD.encode(), AREAS)
    assert read.rows == []
    said = {line: what for line, what in read.problems}
    assert sorted(said) == [2, 3, 4, 5, 6, 7, 8]
    assert "氏名がありません" in said[2] and "電話番号が読めません" in said[3] and "見守りには電話番号" in said[4]
    assert "地区が" in said[5] and "曜日が要ります" in said[6] and "時刻が読めません" in said[7] and "サービスは" in said[8]
    assert roster.read(b"name,phone\nx,y\n", AREAS).problems[0][1].startswith("1行目に「氏名」")
    assert "文字コード" in roster.read(b"\xff\xfe\x00\x81", AREAS).problems[0][1]


def test_a_code_is_read_however_it_is_typed_and_its_sheet_opens_the_chat_with_it():
    assert codes.read("登録 1234 5678") == "12345678" == codes.read("登録：１２３４－５６７８")
    assert codes.read("登録 1234") is None and codes.read("12345678") is None
    url = codes.message_url("https://line.me/R/ti/p/@anpi-town", "12345678")
    assert url.startswith("https://line.me/R/oaMessage/%40anpi-town/?") and "1234%205678" in url


def test_the_not_yet_linked_are_kept_sealed_and_a_code_links_one_line_only(tmp_path, backend):
    async def story():
        store = Store(str(tmp_path / "anpi.db"))
        client = None
        if backend == "redis":
            client = aioredis.from_url(redis_url())
            await client.flushdb()
            book = RedisProfiles(client)
        else:
            book = SqliteProfiles(store)
        try:
            rows = roster.read(CSV.encode(), AREAS).rows
            issued = [(f"{i:08d}", row) for i, row in enumerate(rows)]
            await book.add_pending("town", [(codes.code_hash("town", c), r) for c, r in issued], 1000,
                                   (1000, "admin", "residents.import", None, "3人"))
            assert [p.row.name for p in await book.pending("town")] == ["山田 花子", "佐藤 一郎", "鈴木 次郎"]
            alice, mallory = user_id_for("roster-alice"), user_id_for("roster-mallory")
            hash0 = codes.code_hash("town", "00000000")
            assert (await book.claim("town", hash0, alice, 2000)).name == "山田 花子"
            assert (await book.claim("town", hash0, alice, 2001)).name == "山田 花子"   # LINE redelivers
            assert await book.claim("town", hash0, mallory, 2002) is None              # spent
            assert await book.claim("town", codes.code_hash("town", "99999999"), mallory, 2002) is None
            assert await book.claim("town", codes.code_hash("town", "00000001"), mallory,
                                    1000 + codes.VALID_FOR + 1) is None                # too late
            assert (await book.get("town", alice)).address == "緑1-2-3"
            assert [p.used_by for p in await book.pending("town")] == [alice, None, None]
            if client is None:
                store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                data = open(store.path, "rb").read()
            else:
                data = repr([await client.hgetall(k) for k in await client.keys("*pending*")]).encode()
            assert "山田".encode() not in data and b"09011112222" not in data
        finally:
            if client is not None:
                await client.aclose()
            store.close()
    asyncio.run(story())


def test_staff_import_a_roster_print_sheets_and_a_resident_links_their_line_with_the_code(tmp_path, monkeypatch):
    monkeypatch.setenv("ANPI_FRIEND_URL", "https://line.me/R/ti/p/@anpi-town")

    async def story(t: Town):
        admin = t.staff()
        await admin.login(TENANT.id, "town-admin")
        status, page = await admin.get("/admin/town/residents/import")
        csrf = csrf_in(page)

        async def upload(data: bytes, commit: bool) -> tuple[int, str]:
            form = aiohttp.FormData()
            form.add_field("csrf", csrf)
            form.add_field("file", data, filename="名簿.csv", content_type="text/csv")
            if commit:
                form.add_field("commit", "1")
            status, page, _ = await admin.post("/admin/town/residents/import", form)
            return status, page
        status, page = await upload(BAD.encode("cp932"), commit=True)       # problems: nothing stored
        assert status == 400 and 'id="problems"' in page and "見守りには電話番号" in page
        assert await SqliteProfiles(t.store).pending(TENANT.id) == []
        plain = CSV.replace("北地区", "").replace("minami", "")             # the test town has no areas
        status, page = await upload(plain.encode("cp932"), commit=False)    # the dry run: all well
        assert status == 200 and "3人分、問題はありません" in page
        assert await SqliteProfiles(t.store).pending(TENANT.id) == []
        status, sheets = await upload(plain.encode("cp932"), commit=True)
        assert status == 200 and sheets.count('class="sheet"') == 3 and sheets.count("<svg") == 3
        shown = re.findall(r'class="code">(登録 \d{4} \d{4})<', sheets)
        assert len(shown) == 3 and "山田 花子 さま" in sheets
        _, listed = await admin.get("/admin/town/residents")
        assert "LINE未連携（3人）" in listed
        # 山田さん sends her code from LINE: registered with the roster's settings, told so
        hanako, stranger = user_id_for("roster-hanako"), user_id_for("roster-stranger")
        for who, text in ((hanako, shown[0]), (stranger, shown[0]), (stranger, "登録 0000 0000")):
            t.clock.advance(2)   # a person takes a moment to type
            token = t.sim.state.issue_reply_token(TENANT.id, user_source(who))
            event = message_event(user_source(who), text, reply_token=token, timestamp=t.clock.now_ms())
            before = len(t.seen(who))
            assert await t.webhook(TENANT.channel_secret, [event]) == 200
            await t.until(lambda: len(t.seen(who)) > before, "the answer")
        said = lambda who: str([d.messages for d in t.seen(who)])  # noqa: E731
        assert "登録しました" in said(hanako)
        assert said(stranger).count("その登録番号は使えませんでした") == 2
        state = dict(t.store.states(TENANT.id))[hanako]
        assert (state.settings.service, state.settings.phone, state.settings.schedule.minute) == \
            ("watch", "09011112222", 540)
        assert stranger not in dict(t.store.states(TENANT.id))
        _, page = await admin.get(f"/admin/town/residents/{hanako}")
        assert "山田 花子" in page and "緑1-2-3" in page
        _, listed = await admin.get("/admin/town/residents")
        assert "LINE未連携（2人）" in listed
        status, csv_page = await admin.get("/admin/town/residents.csv")
        assert status == 200 and "山田 花子" in csv_page and "LINE未連携" in csv_page
        await admin.close()

    served(story)(tmp_path)
