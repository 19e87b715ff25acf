"""The roll-call pages (災害時の安否確認): every roll-call, and one roll-call live — who needs help
first, then who has not answered, by area, the answer-time curve, and the non-responders as CSV for
民生委員. Read through app[READSIDE] (either runtime's read side); area names from the tenant's
settings (app[REGISTRY]). A drill is marked and can be cleared by an administrator (audited); a
real roll-call is the record of what happened and stays.
"""
from __future__ import annotations

import csv
import io
import re
import secrets

from aiohttp import web

from agents import readside as rs
from schemas.events import RollCall, SetArea
from streams.admin import auth
from streams.admin.keys import CLOCK, FORM, READSIDE, REGISTRY, SESSION, STAFF, TENANTS, WALL
from streams.admin.view import local_time, render

REFRESH_SECONDS = 5        # the live page reloads itself this often
CURVE_MINUTES = 60         # the curve's first hour (most answer within minutes)
CURVE_W, CURVE_H, CURVE_PAD = 600, 160, 36
STATUS_WORDS = {rs.NEED_HELP: "助けが必要", rs.LISTED: "返事なし（再送後）", rs.WAITING: "返事待ち", rs.SAFE: "無事"}
ACTION_WORDS = {"rollcall.clear": "訓練の集計を消去", "rollcall.csv": "返事のない方の一覧（CSV）を保存",
                "rollcall.start": "安否確認を開始", "area.set": "地区を設定"}
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")   # the form's own id: a second click sends the same roll-call
CSV_HEADER = ("地区", "地区ID", "LINEのID", "状態", "送った時刻")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/{tenant}/rollcalls", rollcalls, name="rollcalls")
    router.add_post("/{tenant}/rollcalls/start", start, name="rollcall_start")
    router.add_post("/{tenant}/rollcalls/area", set_area, name="rollcall_area")
    router.add_get("/{tenant}/rollcalls/{rollcall}", rollcall, name="rollcall")
    router.add_get("/{tenant}/rollcalls/{rollcall}/unanswered.csv", unanswered_csv, name="rollcall_csv")
    router.add_post("/{tenant}/rollcalls/{rollcall}/clear", clear, name="rollcall_clear")


async def _area_names(request: web.Request, tenant: str) -> dict[str, str]:
    stored = await request.app[REGISTRY].settings(tenant)
    quake = getattr(stored, "quake", None)
    names = {area.id: area.name for area in quake.areas} if quake is not None else {}
    return {**names, rs.NO_AREA: "地区なし"}


async def rollcalls(request: web.Request, status: int = 200, error: str | None = None,
                    area_error: str | None = None) -> web.Response:
    tenant = request.match_info["tenant"]
    zone = request.app[TENANTS][tenant]
    rows = [{**r, "at_text": local_time(r["at"], zone)} for r in await request.app[READSIDE].rollcalls(tenant)]
    names = await _area_names(request, tenant)
    areas = [(a, n) for a, n in names.items() if a != rs.NO_AREA]
    return render(request, "rollcalls.html", status=status, title="災害時の安否確認", rows=rows, areas=areas,
                  no_area=rs.NO_AREA,
                  csrf=request[SESSION].csrf, nonce=secrets.token_urlsafe(16), error=error, area_error=area_error,
                  started=request.query.get("started") == "1", cleared=request.query.get("cleared") == "1",
                  area_set=request.query.get("area_set") == "1")


async def start(request: web.Request) -> web.Response:
    """Staff start a roll-call by hand (an earthquake the feed has not reported, a flood): the
    areas ticked, or the whole town; a drill if ticked. Its id is the form's own, so a second click
    (or a reload of the POST) is the same roll-call, which the engine takes once."""
    tenant = request.match_info["tenant"]
    form = request[FORM]
    nonce = str(form.get("nonce", ""))
    if not NONCE.fullmatch(nonce):
        raise web.HTTPBadRequest(text="画面を開きなおして、もう一度お試しください。")
    names = await _area_names(request, tenant)
    chosen = tuple(a for a in form.getall("area", []) if isinstance(a, str))
    if any(a not in names or a == rs.NO_AREA for a in chosen):
        return await rollcalls(request, 400, "地区を一覧から選んでください。")
    whole = form.get("whole") == "1"
    if not whole and not chosen:
        return await rollcalls(request, 400, "地区を選ぶか、「すべての地区」を選んでください。")
    drill = form.get("drill") == "1"
    event = RollCall(request.app[CLOCK](), f"staff{'-drill' if drill else ''}-{nonce}", None if whole else chosen, drill)
    await request.app[READSIDE].start_rollcall(tenant, event, request.app[WALL](), request[SESSION].login)
    return auth.see_other(request.app.router["rollcalls"].url_for(tenant=tenant).with_query(started="1"))


async def set_area(request: web.Request) -> web.Response:
    """Staff set the area of a resident or a group (by the LINE id the call queue and the CSV show):
    the roll-calls of that area reach them from then on. Audited; applied by the engine in seconds."""
    tenant = request.match_info["tenant"]
    form = request[FORM]
    subject = str(form.get("subject", "")).strip()
    area = str(form.get("area", ""))
    names = await _area_names(request, tenant)
    if area not in names:
        return await rollcalls(request, 400, area_error="地区を一覧から選んでください。")
    known, current = await request.app[READSIDE].area_of(tenant, subject) if subject else (False, None)
    if not known:
        return await rollcalls(request, 400, area_error="そのLINEのIDの方（グループ）は、登録されていません。")
    chosen = None if area == rs.NO_AREA else area
    if chosen != current:
        await request.app[READSIDE].set_area(tenant, SetArea(request.app[CLOCK](), subject, chosen),
                                             request.app[WALL](), request[SESSION].login)
    return auth.see_other(request.app.router["rollcalls"].url_for(tenant=tenant).with_query(area_set="1"))


async def _known(request: web.Request, tenant: str, rid: str) -> dict:
    found = next((r for r in await request.app[READSIDE].rollcalls(tenant, 500) if r["rollcall"] == rid), None)
    if found is None:
        raise web.HTTPNotFound(text="その安否確認は見つかりません。")
    return found


async def rollcall(request: web.Request) -> web.Response:
    tenant, rid = request.match_info["tenant"], request.match_info["rollcall"]
    zone, side = request.app[TENANTS][tenant], request.app[READSIDE]
    about = await _known(request, tenant, rid)
    names = await _area_names(request, tenant)
    tally = await side.rollcall_tally(tenant, rid)
    areas = [{"id": a, "name": names.get(a, a), **counts} for a, counts in sorted(tally.items()) if a != "*"]
    need = [{**m, "area_name": names.get(m["area"], m["area"]), "at_text": local_time(m["answered_at"], zone)}
            for m in await side.rollcall_members(tenant, rid, rs.NEED_HELP)]
    quiet = []
    for status in (rs.LISTED, rs.WAITING):
        quiet += [{**m, "area_name": names.get(m["area"], m["area"]), "status": STATUS_WORDS[status]}
                  for m in await side.rollcall_members(tenant, rid, status)]
    quiet.sort(key=lambda m: (m["area"], m["status"], m["member"]))
    minutes = max(0, min(CURVE_MINUTES, (request.app[CLOCK]() - about["at"]) // 60_000)) if about["at"] else 0
    curve = await side.rollcall_curve(tenant, rid, CURVE_MINUTES)
    return render(request, "rollcall.html", title="安否確認の集計", about=about, at_text=local_time(about["at"], zone),
                  total=tally["*"], areas=areas, need=need, quiet=quiet, words=STATUS_WORDS,
                  curve=_curve(curve[:minutes + 1], about["asked"]), refresh=REFRESH_SECONDS,
                  csrf=request[SESSION].csrf, cleared=request.query.get("cleared") == "1")


def _curve(totals: list[int], asked: int) -> dict:
    """The answered share minute by minute, as an SVG polyline's points (no script, no library)."""
    inner_w, inner_h = CURVE_W - 2 * CURVE_PAD, CURVE_H - 2 * CURVE_PAD
    top = max(asked, 1)
    points = [(CURVE_PAD + inner_w * minute / CURVE_MINUTES, CURVE_PAD + inner_h * (1 - n / top))
              for minute, n in enumerate(totals)]
    return {"width": CURVE_W, "height": CURVE_H, "pad": CURVE_PAD, "bottom": CURVE_H - CURVE_PAD,
            "right": CURVE_W - CURVE_PAD, "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in points),
            "answered": totals[-1] if totals else 0, "minutes": len(totals) - 1 if totals else 0,
            "ticks": [(CURVE_PAD + inner_w * m / CURVE_MINUTES, f"{m}分") for m in (0, 15, 30, 45, 60)]}


async def unanswered_csv(request: web.Request) -> web.Response:
    """Who has not answered, by area (listed first in each), for 民生委員 to go round: no names or
    numbers are in the read side, only the LINE id that the call queue and My Page know them by."""
    tenant, rid = request.match_info["tenant"], request.match_info["rollcall"]
    zone, side = request.app[TENANTS][tenant], request.app[READSIDE]
    await _known(request, tenant, rid)
    names = await _area_names(request, tenant)
    rows = []
    for status in (rs.LISTED, rs.WAITING):
        rows += [(names.get(m["area"], m["area"]), m["area"], m["member"], STATUS_WORDS[status],
                  local_time(m["sent_at"], zone)) for m in await side.rollcall_members(tenant, rid, status)]
    rows.sort(key=lambda r: (r[1], r[3] != STATUS_WORDS[rs.LISTED], r[2]))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    await request.app[STAFF].audit(tenant, request.app[WALL](), request[SESSION].login, "rollcall.csv", rid)
    return web.Response(body=("\ufeff" + out.getvalue()).encode("utf-8"),   # a BOM: Excel reads it as UTF-8
                        headers={"Content-Type": "text/csv; charset=utf-8",
                                 "Content-Disposition": f'attachment; filename="unanswered-{len(rows)}.csv"'})


@auth.admin_only
async def clear(request: web.Request) -> web.Response:
    tenant, rid = request.match_info["tenant"], request.match_info["rollcall"]
    about = await _known(request, tenant, rid)
    if not about["drill"]:
        raise web.HTTPBadRequest(text="本番の安否確認は記録として残ります。消せるのは訓練だけです。")
    await request.app[READSIDE].clear_drill(tenant, rid)
    await request.app[STAFF].audit(tenant, request.app[WALL](), request[SESSION].login, "rollcall.clear", rid)
    return auth.see_other(request.app.router["rollcalls"].url_for(tenant=tenant).with_query(cleared="1"))
