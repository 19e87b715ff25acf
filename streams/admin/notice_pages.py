"""The notices pages (お知らせ配信): compose, preview as the LINE card, send, follow the delivery.

    GET  /{tenant}/notices             compose (with counts from the read side) and the notices sent
    POST /{tenant}/notices/preview     the card as LINE will show it, and who gets it: the confirm step
                                       (with edit=1: back to the form, as typed)
    POST /{tenant}/notices/send        commit the notice and its recipients; the runtime delivers it
    GET  /{tenant}/notices/{notice}    progress: sent / total, %, failures; reloads itself while sending

Operators and administrators may both send every kind, a disaster notice included: in a disaster
whoever is on duty must be able to warn residents at once. The safeguards are the confirm step
(the card and the number of recipients, shown before anything is sent), one notice per form (the
draft id is the notice id: a double click sends once), and the audit log (preview and send).
"""
from __future__ import annotations

from aiohttp import web

from agents import notices as nt
from streams.admin import auth, flex
from streams.admin.keys import CLOCK, FORM, NOTICES, READSIDE, SESSION, STAFF, TENANTS, WALL
from streams.admin.view import local_time, render
from streams.notices import book
from streams.tenants.registry import AuditRow

REFRESH_SECONDS = 2
STATE_WORDS = {book.SENDING: "配信中", book.DONE: "配信済み"}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/{tenant}/notices", compose, name="notices")
    router.add_post("/{tenant}/notices/preview", preview, name="notice_preview")
    router.add_post("/{tenant}/notices/send", send, name="notice_send")
    router.add_get("/{tenant}/notices/{notice}", progress, name="notice")


def describe(segment: dict | nt.Segment) -> str:
    """「見守り・安否通知（確認に未回答の方だけ）」"""
    s = segment if isinstance(segment, nt.Segment) else nt.Segment.from_obj(segment)
    names = "・".join(nt.SERVICES[x] for x in s.services) or "—"
    return names + ("（確認に未回答の方だけ）" if s.unanswered else "")


def _reach(people: int, groups: int) -> str:
    parts = ([f"{people:,}人"] if people or not groups else []) + ([f"{groups:,}グループ"] if groups else [])
    return "と".join(parts)


def _read(form) -> tuple[nt.Draft, list[str], str]:
    d, errors = nt.draft(str(form.get("kind", "")), str(form.get("title", "")), str(form.get("body", "")),
                         [str(s) for s in form.getall("services", [])], form.get("unanswered") == "1",
                         form.get("ok_button") == "1")
    return d, errors, str(form.get("draft", ""))


# --- compose ------------------------------------------------------------------------------------------


async def compose(request: web.Request) -> web.Response:
    return await _compose_page(request)


async def _compose_page(request: web.Request, status: int = 200, d: nt.Draft | None = None, errors=(),
                        draft_id: str | None = None) -> web.Response:
    tenant = request.match_info["tenant"]
    zone = request.app[TENANTS][tenant]
    rows = [{**n, "kind_text": nt.KINDS.get(n["kind"], n["kind"]), "segment_text": describe(n["segment"]),
             "when": local_time(n["created_at"], zone), "state_text": STATE_WORDS.get(n["state"], n["state"]),
             "percent": nt.percent(n["sent"], n["failed"], n["total"])}
            for n in await request.app[NOTICES].recent(tenant)]
    d = d or nt.Draft(nt.INFO, "", "", nt.make_segment([nt.WATCH, nt.NOTIFY, nt.GROUP]), False)
    return render(request, "notices.html", status=status, title="お知らせ配信", errors=list(errors), rows=rows,
                  **await _form(request, d, draft_id))


async def _form(request: web.Request, d: nt.Draft, draft_id: str | None) -> dict:
    """What the compose form (_notice_form.html) needs: the draft, counts from the read side, a draft id."""
    tenant = request.match_info["tenant"]
    labels = await request.app[READSIDE].labels(tenant)
    if draft_id is None or not book.valid_id(draft_id) or await request.app[NOTICES].get(tenant, draft_id) is not None:
        draft_id = book.new_id()   # a form from an older page: a new notice, not the old one again
    return {"d": d, "draft_id": draft_id, "csrf": request[SESSION].csrf, "kinds": nt.KINDS, "colors": nt.COLORS,
            "services": nt.SERVICES, "title_max": nt.TITLE_MAX, "body_max": nt.BODY_MAX,
            "counts": {s: sum(nt.estimate(labels, nt.make_segment([s]))) for s in nt.SERVICES},
            "unanswered_count": nt.estimate(labels, nt.make_segment([nt.WATCH, nt.NOTIFY], True))[0]}


# --- preview (the confirm step) -----------------------------------------------------------------------


async def preview(request: web.Request) -> web.Response:
    tenant = request.match_info["tenant"]
    form = request[FORM]
    d, errors, draft_id = _read(form)
    if form.get("edit") == "1":
        return await _compose_page(request, d=d, draft_id=draft_id)
    if errors:
        return await _compose_page(request, 400, d, errors, draft_id)
    people, groups = nt.estimate(await request.app[READSIDE].labels(tenant), d.segment)
    await request.app[STAFF].audit(tenant, request.app[WALL](), request[SESSION].login, "notice.preview",
                                   f"{nt.KINDS[d.kind]}「{d.title}」")
    return render(request, "notice_preview.html", title="お知らせの確認", card=flex.render(nt.messages(d)),
                  kind_text=nt.KINDS[d.kind], segment_text=describe(d.segment), reach=_reach(people, groups),
                  nobody=people + groups == 0, color=nt.COLORS[d.kind], **await _form(request, d, draft_id))


# --- send ---------------------------------------------------------------------------------------------


async def send(request: web.Request) -> web.Response:
    tenant = request.match_info["tenant"]
    notices, form = request.app[NOTICES], request[FORM]
    d, errors, draft_id = _read(form)
    if errors:
        return await _compose_page(request, 400, d, errors, draft_id)
    if not book.valid_id(draft_id):
        return await _compose_page(request, 400, d, ["画面の有効期限が切れました。内容を確かめて、もう一度「確認画面へ」を押してください。"])
    there = request.app.router["notice"].url_for(tenant=tenant, notice=draft_id)
    if await notices.get(tenant, draft_id) is not None:   # the same form again: it was sent once
        return auth.see_other(there)
    users, groups = await notices.choose(tenant, d.segment)
    if not users and not groups:
        return await _compose_page(request, 400, d, ["いま、この送り先に当てはまる方がいません。送り先を選び直してください。"],
                                   draft_id)
    login, wall, now = request[SESSION].login, request.app[WALL](), request.app[CLOCK]()
    audit = AuditRow(wall, login, "notice.send", f"{draft_id} {describe(d.segment)} {len(users) + len(groups)}件",
                     f"{nt.KINDS[d.kind]}「{d.title}」")
    if not await notices.commit(tenant, draft_id, d, users, groups, login, now, audit) \
            and await notices.get(tenant, draft_id) is None:
        return await _compose_page(request, 400, d, ["この画面からは送信できません。もう一度「確認画面へ」からお進みください。"])
    return auth.see_other(there)


# --- progress -----------------------------------------------------------------------------------------


async def progress(request: web.Request) -> web.Response:
    tenant, notice_id = request.match_info["tenant"], request.match_info["notice"]
    zone = request.app[TENANTS][tenant]
    n = await request.app[NOTICES].get(tenant, notice_id) if book.valid_id(notice_id) else None
    if n is None:
        return auth.not_found(request)
    sending = n["state"] == book.SENDING
    return render(request, "notice.html", title="お知らせの配信状況", n=n, kind_text=nt.KINDS.get(n["kind"], n["kind"]),
                  segment_text=describe(n["segment"]), when=local_time(n["created_at"], zone),
                  finished=local_time(n["finished_at"], zone) if n["finished_at"] else None,
                  percent=nt.percent(n["sent"], n["failed"], n["total"]), sending=sending,
                  refresh=REFRESH_SECONDS if sending else None, card=flex.render(n["messages"]),
                  state_text=STATE_WORDS.get(n["state"], n["state"]), color=nt.COLORS.get(n["kind"], "#1A7F37"))
