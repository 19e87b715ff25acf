"""The roll-call pages (災害時の安否確認) over real HTTP, on both backends (tests/backends.py): the live
tally by area, who needs help first, the non-responders by area as CSV, drills apart and cleared by
an administrator only, and no tenant seeing another's."""
from __future__ import annotations

import csv
import io
import re

from prometheus_client import generate_latest

from backends import backend  # noqa: F401 (the fixture)
from linesim import user_id_for
from schemas.events import NeedHelp, Register, RollCall, Safe
from schemas.settings import MemberSettings
from streams.admin.metrics import OpenCases
from streams.tenants import settings as ts
from streams.tenants.in_redis import RedisRegistry
from streams.tenants.in_sqlite import SqliteRegistry
from test_admin_routes import A, B, DAY, START, TOKYO, Browser, audit_log, inbox, run

KITA = [user_id_for(f"kita-{i}") for i in range(3)]
MINAMI = user_id_for("minami-0")
QUAKE = START + DAY + 14 * 3_600_000     # day 2, 14:00
REAL, DRILL = "jma-20261202140000", "jma-drill-20261202150000"
AREAS = "kita,北町,0421300,220\nminami,南町,0421500,\n"


async def a_quake(world) -> None:
    """Tenant A's areas, four residents in them, a roll-call of both areas, and three answers."""
    settings = ts.merged(None, START, quake=ts.quake_config(AREAS))
    registry = SqliteRegistry(world.store) if world.side.redis is None else RedisRegistry(world.side.redis)
    await registry.save(A, None, settings=settings)
    for member, area in [*((m, "kita") for m in KITA), (MINAMI, "minami")]:
        world.store.accept(A, None, [(member, Register(START, MemberSettings(member, "notify", TOKYO, area=area)))])
    world.step(QUAKE - 1)
    world.store.accept(A, None, [("", RollCall(QUAKE, REAL, ("kita", "minami")))])
    world.step(QUAKE)
    world.store.accept(A, None, [(KITA[0], Safe(QUAKE + 120_000, KITA[0])),
                                 (KITA[1], NeedHelp(QUAKE + 300_000, KITA[1])),
                                 (MINAMI, Safe(QUAKE + 180_000, MINAMI))])
    world.step(QUAKE + 90 * 60_000)      # KITA[2] is resent, then listed
    world.store.accept(A, None, [("", RollCall(QUAKE + 3_600_000 * 2, DRILL, None, True))])
    world.step(QUAKE + 3_600_000 * 2 + 60_000)
    await world.side.sync()


@run
async def test_the_live_page_shows_the_tally_by_area_help_first_and_the_non_responders(world, server, app):
    await a_quake(world)
    user = Browser(server)
    await user.login(A, "a-operator")
    status, page, _ = await user.get(f"/admin/{A}/rollcalls")
    assert status == 200 and page.index("訓練") < page.index("本番")   # newest first
    status, page, _ = await user.get(f"/admin/{A}/rollcalls/{REAL}")
    assert status == 200 and 'http-equiv="refresh"' in page
    total = page[page.index('id="total"'):page.index("</table>", page.index('id="total"'))]
    # need help, listed, waiting, safe, asked
    assert re.findall(r'<td class="num">(\d+)人</td>', total) == ["1", "1", "0", "2", "4"]
    areas = page[page.index('id="areas"'):]
    assert "北町" in areas and "南町" in areas
    need = page[page.index('id="need-help"'):page.index("</table>", page.index('id="need-help"'))]
    assert "北町" in need and KITA[1] in need and KITA[0] not in need
    quiet = page[page.index('id="quiet"'):page.index("</table>", page.index('id="quiet"'))]
    assert KITA[2] in quiet and "返事なし（再送後）" in quiet and MINAMI not in quiet
    assert 'id="curve"' in page

    status, body, response = await user.get(f"/admin/{A}/rollcalls/{REAL}/unanswered.csv")
    assert status == 200 and response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    assert rows == [["地区", "地区ID", "LINEのID", "状態", "送った時刻"],
                    ["北町", "kita", KITA[2], "返事なし（再送後）", "12月2日（水）14:00"]]
    assert ("rollcall.csv", REAL) in {(r["action"], r["target"]) for r in await audit_log(world)}
    drill = await user.get(f"/admin/{A}/rollcalls/{DRILL}")
    assert drill[0] == 200 and "訓練" in drill[1] and "この訓練の集計を消す" not in drill[1]  # operators cannot
    assert (await user.get(f"/admin/{A}/rollcalls/nope"))[0] == 404
    await user.close()

    metrics = OpenCases(world.side.read, [A])   # what Prometheus scrapes: the latest roll-call and drill apart
    await metrics.refresh()
    text = generate_latest(metrics.registry).decode()
    series = {(m["drill"], m["status"]): float(n) for m, n in
              ((dict(re.findall(r'(\w+)="([^"]*)"', labels)), n) for labels, n in
               re.findall(r'^anpi_rollcall_members\{([^}]*)\} (\S+)$', text, re.M))}
    drill = (await world.side.read.rollcall_tally(A, DRILL))["*"]   # the whole tenant: everyone following
    assert series == {**{("0", k): n for k, n in {"need_help": 1, "listed": 1, "waiting": 0, "safe": 2, "asked": 4}.items()},
                      **{("1", k): n for k, n in drill.items()}} and drill["asked"] > 4
    started = dict(re.findall(r'^anpi_rollcall_started_timestamp_seconds\{drill="(\d)",[^}]*\} (\S+)$', text, re.M))
    assert float(started["0"]) == QUAKE / 1000


@run
async def test_only_an_administrator_clears_a_drill_and_a_real_rollcall_stays(world, server, app):
    await a_quake(world)
    operator, admin, other = Browser(server), Browser(server), Browser(server)
    await operator.login(A, "a-operator")
    await admin.login(A, "a-admin")
    await other.login(B, "b-admin")
    assert (await other.get(f"/admin/{A}/rollcalls/{REAL}"))[0] in (302, 303, 403, 404)   # another tenant's
    refused = await operator.post(f"/admin/{A}/rollcalls/{DRILL}/clear", {"csrf": await operator.csrf(A)})
    assert refused[0] == 403
    kept = await admin.post(f"/admin/{A}/rollcalls/{REAL}/clear", {"csrf": await admin.csrf(A)})
    assert kept[0] == 400 and "本番の安否確認は記録として残ります" in kept[1]
    done = await admin.post(f"/admin/{A}/rollcalls/{DRILL}/clear", {"csrf": await admin.csrf(A)})
    assert done[0] == 303
    _, page, _ = await admin.get(done[2].headers["Location"])
    listed = page[page.index('id="rollcalls"'):page.index("</table>", page.index('id="rollcalls"'))]
    assert "訓練" not in listed and "本番" in listed and "訓練の集計を消しました" in page
    assert ("rollcall.clear", DRILL) in {(r["action"], r["target"]) for r in await audit_log(world)}
    for browser in (operator, admin, other):
        await browser.close()


@run
async def test_staff_start_a_roll_call_by_hand_once_however_often_they_click(world, server, app):
    await a_quake(world)
    user = Browser(server)
    await user.login(A, "a-operator")
    status, page, _ = await user.get(f"/admin/{A}/rollcalls")
    assert status == 200 and "安否確認を始める" in page and "北町" in page and "南町" in page
    nonce = re.search(r'name="nonce" value="([^"]+)"', page).group(1)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    refused = await user.post(f"/admin/{A}/rollcalls/start", {"csrf": token, "nonce": nonce})
    assert refused[0] == 400 and "地区を選ぶか" in refused[1]
    refused = await user.post(f"/admin/{A}/rollcalls/start", {"csrf": token, "nonce": nonce, "area": "nishi"})
    assert refused[0] == 400 and "地区を一覧から選んでください" in refused[1]
    for _ in range(2):   # a second click sends the same form again
        done = await user.post(f"/admin/{A}/rollcalls/start", {"csrf": token, "nonce": nonce, "area": "minami"})
        assert done[0] == 303 and done[2].headers["Location"].endswith("?started=1")
    started = [e for e in inbox(world.store, A) if type(e) is RollCall and e.id.startswith("staff-")]
    assert {(e.id, e.areas, e.drill) for e in started} == {(f"staff-{nonce}", ("minami",), False)}
    world.step(world.now[0] + 60_000)
    await world.side.sync()
    rolls = [r for r in await world.side.read.rollcalls(A) if r["rollcall"] == f"staff-{nonce}"]
    assert rolls == [{"rollcall": f"staff-{nonce}", "drill": 0, "at": rolls[0]["at"], "asked": 1}]   # MINAMI only
    assert ("rollcall.start", f"staff-{nonce}") in {(r["action"], r["target"]) for r in await audit_log(world)}
    page = (await user.get(f"/admin/{A}/rollcalls?started=1"))[1]
    assert "安否確認を始めました" in page
    await user.close()


@run
async def test_staff_set_a_residents_area_and_that_areas_next_roll_call_reaches_them(world, server, app):
    await a_quake(world)
    user = Browser(server)
    await user.login(A, "a-operator")
    page = (await user.get(f"/admin/{A}/rollcalls"))[1]
    assert "住民・グループの地区" in page and '<option value="">地区なし</option>' in page
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    refused = await user.post(f"/admin/{A}/rollcalls/area", {"csrf": token, "subject": user_id_for("nobody"),
                                                             "area": "kita"})
    assert refused[0] == 400 and "登録されていません" in refused[1]
    refused = await user.post(f"/admin/{A}/rollcalls/area", {"csrf": token, "subject": MINAMI, "area": "nishi"})
    assert refused[0] == 400 and "地区を一覧から選んでください" in refused[1]
    done = await user.post(f"/admin/{A}/rollcalls/area", {"csrf": token, "subject": MINAMI, "area": "kita"})
    assert done[0] == 303 and done[2].headers["Location"].endswith("?area_set=1")
    assert "地区を設定しました" in (await user.get(f"/admin/{A}/rollcalls?area_set=1"))[1]
    world.step(world.now[0] + 60_000)
    await world.side.sync()
    assert await world.side.read.area_of(A, MINAMI) == (True, "kita")
    assert ("area.set", MINAMI) in {(r["action"], r["target"]) for r in await audit_log(world)}
    world.store.accept(A, None, [("", RollCall(world.now[0] + 60_000, "kita-only", ("kita",)))])
    world.step(world.now[0] + 120_000)
    await world.side.sync()
    [kita_only] = [r for r in await world.side.read.rollcalls(A) if r["rollcall"] == "kita-only"]
    assert kita_only["asked"] == 4   # the three of 北町 and MINAMI, now of 北町 too
    assert await world.side.read.area_of(B, MINAMI) == (False, None)   # another town knows no such resident
    await user.close()
