"""One resident as the store holds them, for staff answering a disclosure request (個人情報の開示,
APPI): the registration (the phone number, as staff need it), the cases, the history, the
roll-calls and what staff did about them, as a readable page and as JSON to hand over. Read through
app[READSIDE] (either runtime's read side) and app[STAFF] (the audit log). Every view is audited:
who looked at whom.
"""
from __future__ import annotations

import json

from aiohttp import web

from streams import codec
from streams.admin.keys import READSIDE, SESSION, STAFF, TENANTS, WALL
from streams.admin.view import local_time, render
from streams.mypage.view import history_line

ACTION_WORDS = {"resident.view": "住民の情報を表示", "resident.export": "住民の情報を保存（開示用）"}
AUDIT_SCAN = 20_000   # the audit rows searched for what staff did about one resident (newest first)
SERVICE_WORDS = {"watch": "見守り（職員がお電話）", "notify": "安否通知（ご家族などにお知らせ）"}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/{tenant}/residents/{member}", resident, name="resident")
    router.add_get("/{tenant}/residents/{member}/export.json", export, name="resident_export")


async def _held(request: web.Request, action: str) -> tuple[str, dict]:
    tenant, member = request.match_info["tenant"], request.match_info["member"]
    found = await request.app[READSIDE].held_about(tenant, member)
    if found is None:
        raise web.HTTPNotFound(text="その方の情報は、ありません（退会された方の情報は残りません）。")
    staff = request.app[STAFF]
    found["staff_actions"] = [r for r in await staff.audit_log(tenant, AUDIT_SCAN) if r.get("target") == member]
    await staff.audit(tenant, request.app[WALL](), request[SESSION].login, action, member)
    return member, found


async def resident(request: web.Request) -> web.Response:
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
    return render(request, "resident.html", title="住民の情報（開示用）", member=member, found=found,
                  settings=settings, service=SERVICE_WORDS.get(settings.get("service"), settings.get("service")),
                  lines=lines, when=lambda at: local_time(at, zone) if at else "—",
                  actions=[(local_time(r["at"], zone), r["login"], r["action"]) for r in found["staff_actions"]])


async def export(request: web.Request) -> web.Response:
    member, found = await _held(request, "resident.export")
    body = json.dumps({"member": member, **found}, ensure_ascii=False, indent=2)
    return web.Response(text=body, content_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="resident-{member}.json"'})



