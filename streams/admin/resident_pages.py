"""The residents as staff know them: a search over the profiles staff keep (氏名, ふりがな, 住所, メモ:
streams/residents) or by phone number (the read side's blind index), the roster in (CSV import,
with a dry run, and printable sheets of registration codes) and out (CSV), and one resident's page — their profile (staff edit it here), the registration
(the phone number, as staff need it), the cases, the history, the roll-calls and what staff did
about them — which is also the answer to a disclosure request (個人情報の開示, APPI), as a readable
page and as JSON to hand over. Read through app[READSIDE] (either runtime's read side),
app[PROFILES] and app[STAFF] (the audit log). Every view is audited: who looked at whom.
"""
from __future__ import annotations

import csv
import io
import json
import os

from aiohttp import web

from streams import codec
from streams.admin import auth
from streams.admin.keys import FORM, PROFILES, READSIDE, REGISTRY, SESSION, STAFF, TENANTS, WALL
from streams.admin.view import local_time, render
from streams.line.webhook_events import phone_number
from streams.mypage.view import history_line
from streams.residents import codes, roster
from streams.residents import profile as profiles
from streams.residents.book import matches

ACTION_WORDS = {"resident.view": "住民の情報を表示", "resident.export": "住民の情報を保存（開示用）",
                "residents.import": "名簿を取り込み", "residents.csv": "名簿（CSV）を保存",
                "resident.profile": "住民の情報（氏名・住所など）を変更", "residents.search": "住民を検索"}
AUDIT_SCAN = 20_000   # the audit rows searched for what staff did about one resident (newest first)
SERVICE_WORDS = {"watch": "見守り（職員がお電話）", "notify": "安否通知（ご家族などにお知らせ）"}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/{tenant}/residents", residents, name="residents")
    router.add_get("/{tenant}/residents.csv", roster_csv, name="residents_csv")
    router.add_get("/{tenant}/residents/import", import_form, name="residents_import")
    router.add_post("/{tenant}/residents/import", import_roster, name="residents_import_post")
    router.add_get("/{tenant}/residents/{member}", resident, name="resident")
    router.add_post("/{tenant}/residents/{member}/profile", save_profile, name="resident_profile")
    router.add_get("/{tenant}/residents/{member}/export.json", export, name="resident_export")


async def residents(request: web.Request) -> web.Response:
    """Search by 氏名, ふりがな, 住所, メモ or LINE id (every word must match; kana folded alike)."""
    tenant = request.match_info["tenant"]
    query = request.query.get("q", "").strip()[:100]
    found = matches(await request.app[PROFILES].all(tenant), query) if query else []
    number = phone_number(query) if query else None
    if number:   # a phone number: the residents with it, by the read side's index (profile or not)
        by_number = await request.app[READSIDE].by_phone(tenant, number)
        kept = await request.app[PROFILES].many(tenant, by_number)
        found = [(m, kept.get(m) or profiles.Profile()) for m in by_number]
    if query:
        await request.app[STAFF].audit(tenant, request.app[WALL](), request[SESSION].login, "residents.search",
                                       None, f"{len(found)}人")
    waiting = [p for p in await request.app[PROFILES].pending(tenant) if p.used_by is None]
    return render(request, "residents.html", title="住民", query=query, found=found, waiting=waiting,
                  when=lambda at: local_time(at, request.app[TENANTS][tenant]))


CSV_HEADER = ("氏名", "ふりがな", "住所", "連絡メモ", "鍵の預け先", "LINEのID", "状態")


async def roster_csv(request: web.Request) -> web.Response:
    """The roster as staff keep it: everyone with a profile, and the imported not yet linked (Excel
    opens UTF-8 with its BOM). Audited: it holds names and addresses."""
    tenant = request.match_info["tenant"]
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for member, p in sorted((await request.app[PROFILES].all(tenant)).items(), key=lambda mp: profiles.fold(
            mp[1].kana or mp[1].name)):
        writer.writerow([p.name, p.kana, p.address, p.note, p.key_holder, member, "登録済み"])
    for p in await request.app[PROFILES].pending(tenant):
        if p.used_by is None:
            writer.writerow([p.row.name, p.row.kana, p.row.address, p.row.note, "", "", "LINE未連携"])
    await request.app[STAFF].audit(tenant, request.app[WALL](), request[SESSION].login, "residents.csv")
    return web.Response(body=out.getvalue().encode(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="residents.csv"'})


async def import_form(request: web.Request, status: int = 200, read=None) -> web.Response:
    return render(request, "residents_import.html", status=status, title="名簿の取り込み", read=read,
                  csrf=request[SESSION].csrf, max_rows=roster.MAX_ROWS, services=SERVICE_WORDS)


@auth.admin_only
@auth.max_body(roster.MAX_BYTES + 64 * 1024)
async def import_roster(request: web.Request) -> web.Response:
    """The dry run (「確かめる」) lists every row's problem and stores nothing; 「取り込む」 with no
    problem registers each row as not yet linked, with a code shown once on its printable sheet."""
    tenant = request.match_info["tenant"]
    form = request[FORM]
    upload = form.get("file")
    data = upload.file.read() if isinstance(upload, web.FileField) else b""
    if not data:
        return await import_form(request, 400, roster.Read([], [(0, "CSVファイルを選んでください。")]))
    stored = await request.app[REGISTRY].settings(tenant)
    quake = getattr(stored, "quake", None)
    areas = {a.id: a.name for a in quake.areas} if quake is not None else {}
    read = roster.read(data, areas)
    if read.problems or str(form.get("commit", "")) != "1":
        return await import_form(request, 400 if read.problems else 200, read)
    issued = [(codes.new_code(), row) for row in read.rows]
    wall, login = request.app[WALL](), request[SESSION].login
    await request.app[PROFILES].add_pending(tenant, [(codes.code_hash(tenant, code), row) for code, row in issued],
                                            wall, (wall, login, "residents.import", None, f"{len(issued)}人"))
    friend = os.environ.get("ANPI_FRIEND_URL", "")   # the account's add-friend link (https://line.me/R/ti/p/@…)
    sheets = [{"name": row.name, "kana": row.kana, "code": codes.shown(code),
               "qr": _qr(codes.message_url(friend, code) or friend)} for code, row in issued]
    return render(request, "residents_sheets.html", title="登録の用紙", sheets=sheets, friend=friend,
                  until=local_time(wall + codes.VALID_FOR, request.app[TENANTS][tenant]))


def _qr(url: str) -> str | None:
    """The sheet's QR code as inline SVG (segno: pure Python), or None without a URL."""
    if not url:
        return None
    import segno
    return segno.make(url, error="m").svg_inline(scale=4, dark="#000", light="#fff")


async def _held(request: web.Request, action: str) -> tuple[str, dict]:
    tenant, member = request.match_info["tenant"], request.match_info["member"]
    found = await request.app[READSIDE].held_about(tenant, member)
    profile = await request.app[PROFILES].get(tenant, member)
    if found is None and profile is not None:
        found = {"state": None, "cases": [], "history": [], "rollcalls": []}
    if found is None:
        raise web.HTTPNotFound(text="その方の情報は、ありません（退会された方の情報は残りません）。")
    staff = request.app[STAFF]
    found["profile"] = {f: getattr(profile, f) for f in profiles.FIELDS} if profile is not None else None
    found["staff_actions"] = [r for r in await staff.audit_log(tenant, AUDIT_SCAN) if r.get("target") == member]
    await staff.audit(tenant, request.app[WALL](), request[SESSION].login, action, member)
    return member, found


async def resident(request: web.Request, status: int = 200, error: str | None = None,
                   typed: dict | None = None) -> web.Response:
    tenant = request.match_info["tenant"]
    zone = request.app[TENANTS][tenant]
    member, found = await _held(request, "resident.view")
    settings = (found["state"] or {}).get("settings") or {}
    lines = []
    for obj in found["history"]:
        try:
            said = history_line(codec.effect_from_obj(obj))
        except (ValueError, KeyError, TypeError):
            said = None
        lines.append((local_time(obj.get("at", 0), zone), said or obj.get("effect", "")))
    return render(request, "resident.html", status=status, title="住民の情報", member=member, found=found,
                  profile=typed or found["profile"] or {}, labels=profiles.LABELS, limits=profiles.LIMITS,
                  error=error, saved=request.query.get("saved") == "1", csrf=request[SESSION].csrf,
                  settings=settings, service=SERVICE_WORDS.get(settings.get("service"), settings.get("service")),
                  lines=lines, when=lambda at: local_time(at, zone) if at else "—",
                  kinds=CASE_WORDS, statuses=STATUS_WORDS,
                  actions=[(local_time(r["at"], zone), r["login"], _words().get(r["action"], r["action"]))
                           for r in found["staff_actions"]])


CASE_WORDS = {"staff_call": "職員の連絡", "contacts_notified": "ご家族などにお知らせ"}
STATUS_WORDS = {"open": "対応中", "closed": "完了"}


def _words() -> dict:
    from streams.admin.pages import ACTION_WORDS   # the audit page's words (it imports this module)
    return ACTION_WORDS


async def save_profile(request: web.Request) -> web.Response:
    """Staff enter or change what they know of a resident (an empty form removes it). Audited."""
    tenant, member = request.match_info["tenant"], request.match_info["member"]
    form, wall, login = request[FORM], request.app[WALL](), request[SESSION].login
    try:
        profile = profiles.clean(form, wall, login)
    except profiles.Invalid as e:
        return await resident(request, 400, str(e), {f: str(form.get(f, "")) for f in profiles.FIELDS})
    known = await request.app[READSIDE].held_about(tenant, member) is not None
    if not known and await request.app[PROFILES].get(tenant, member) is None:
        raise web.HTTPNotFound(text="その方は、登録されていません。")
    changed = [profiles.LABELS[f] for f in profiles.FIELDS if getattr(profile, f)]
    await request.app[PROFILES].put(tenant, member, profile, (wall, login, "resident.profile", member,
                                                              "、".join(changed) or "消去"))
    return auth.see_other(request.app.router["resident"].url_for(tenant=tenant, member=member).with_query(saved="1"))


async def export(request: web.Request) -> web.Response:
    member, found = await _held(request, "resident.export")
    body = json.dumps({"member": member, **found}, ensure_ascii=False, indent=2)
    return web.Response(text=body, content_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="resident-{member}.json"'})



