"""The residents as staff know them: a search over the profiles staff keep (氏名, ふりがな, 住所, メモ:
streams/residents), and one resident's page — their profile (staff edit it here), the registration
(the phone number, as staff need it), the cases, the history, the roll-calls and what staff did
about them — which is also the answer to a disclosure request (個人情報の開示, APPI), as a readable
page and as JSON to hand over. Read through app[READSIDE] (either runtime's read side),
app[PROFILES] and app[STAFF] (the audit log). Every view is audited: who looked at whom.
"""
from __future__ import annotations

import json

from aiohttp import web

from streams import codec
from streams.admin import auth
from streams.admin.keys import FORM, PROFILES, READSIDE, SESSION, STAFF, TENANTS, WALL
from streams.residents import profile as profiles
from streams.residents.book import matches
from streams.admin.view import local_time, render
from streams.mypage.view import history_line

ACTION_WORDS = {"resident.view": "住民の情報を表示", "resident.export": "住民の情報を保存（開示用）",
                "resident.profile": "住民の情報（氏名・住所など）を変更", "residents.search": "住民を検索"}
AUDIT_SCAN = 20_000   # the audit rows searched for what staff did about one resident (newest first)
SERVICE_WORDS = {"watch": "見守り（職員がお電話）", "notify": "安否通知（ご家族などにお知らせ）"}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/{tenant}/residents", residents, name="residents")
    router.add_get("/{tenant}/residents/{member}", resident, name="resident")
    router.add_post("/{tenant}/residents/{member}/profile", save_profile, name="resident_profile")
    router.add_get("/{tenant}/residents/{member}/export.json", export, name="resident_export")


async def residents(request: web.Request) -> web.Response:
    """Search by 氏名, ふりがな, 住所, メモ or LINE id (every word must match; kana folded alike)."""
    tenant = request.match_info["tenant"]
    query = request.query.get("q", "").strip()[:100]
    found = matches(await request.app[PROFILES].all(tenant), query) if query else []
    if query:
        await request.app[STAFF].audit(tenant, request.app[WALL](), request[SESSION].login, "residents.search",
                                       None, f"{len(found)}人")
    return render(request, "residents.html", title="住民", query=query, found=found)


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
                  actions=[(local_time(r["at"], zone), r["login"], r["action"]) for r in found["staff_actions"]])


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



