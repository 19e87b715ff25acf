"""The admin pages: overview, call queue, escalations, groups, accounts and the audit log (notices:
streams/admin/notice_pages.py; tenant settings: streams/admin/settings_pages.py).

Each page reads the read side through app[READSIDE] (streams/admin/backends.py: the embedded store's
rs_* tables, or Redis on the Kafka runtime: a few keys or indexed rows), never the members; accounts,
sessions and the audit log through app[STAFF]. What staff decide about a case that the engine must
know (「連絡がつき無事」) becomes a `Resolve` event: into the embedded inbox with its audit row, or onto
the tenant's inbound topic. Settings (設定) go through app[REGISTRY], notices through app[NOTICES],
on both runtimes alike.
"""
from __future__ import annotations

import asyncio
import csv
import io
from datetime import date

from aiohttp import web

from agents import on_call
from agents import readside as rs
from agents.clock import local_ordinal
from schemas import effects as fx
from streams.admin import accounts, auth, chart, notice_pages, resident_pages, rollcall_pages, settings_pages
from streams.admin.keys import CLOCK, FORM, PROFILES, READSIDE, SESSION, STAFF, TENANTS, WALL
from streams.admin.view import elapsed, local_time, render
from streams.residents.book import matches
from streams.residents.profile import Profile

SERVICES = (("watch", "見守り"), ("notify", "安否通知"))
PHASES = (("idle", "次の確認を待っています"), ("sent", "確認を送り、返事待ち"), ("resent", "再送して返事待ち"),
          ("escalated", "連絡中（返事なし）"), ("unfollowed", "ブロック中"))
GROUP_PHASES = (("group:idle", "次の確認を待っています"), ("group:posted", "確認を投稿中"), ("group:left", "退出済み"))
OUTCOME_WORDS = {rs.REACHED: "連絡がつき無事", rs.NO_ANSWER: "応答なし", rs.VISIT: "訪問を依頼",
                 rs.EMERGENCY: "救急・警察に連絡", rs.RESIDENT: "ご本人から応答あり"}
ACTION_WORDS = {"calls.view": "連絡待ちの一覧（電話番号）を表示", "calls.csv": "連絡待ちの一覧（CSV）を保存", "login": "ログイン", "login.failed": "ログイン失敗", "login.locked": "ログイン失敗（ロック中）",
                "logout": "ログアウト", "user.create": "アカウントを作成", "user.unlock": "ロックを解除",
                **{f"case.{k}": f"対応を記録：{v}" for k, v in OUTCOME_WORDS.items()},
                "notice.preview": "お知らせを確認画面で表示", "notice.send": "お知らせを配信",
                "staff.line_code": "LINE通知のコードを表示", accounts.LINE_LINKED: "LINE通知を連携",
                "staff.line_unlink": "LINE通知の連携を解除", "staff.duty": "LINE通知の勤務時間を変更",
                **settings_pages.ACTION_WORDS, **rollcall_pages.ACTION_WORDS, **resident_pages.ACTION_WORDS}
ROLE_WORDS = {accounts.ADMIN: "管理者", accounts.OPERATOR: "担当者"}
URGENT_WORDS = "助けを求めています"
REASON_WORDS = {fx.HELP: URGENT_WORDS, fx.NO_ANSWER: "返事がありません",
                fx.UNCLAIMED: "連絡先の方が動けていません", fx.UNFOLLOWED_WATCH: "LINEをブロックしました"}


def add_routes(router: web.UrlDispatcher) -> None:
    """Every route of the admin screen."""
    router.add_get("/", index, name="index")
    router.add_get("/{tenant}/login", auth.login_form, name="login")
    router.add_post("/{tenant}/login", auth.login, name="login_post")
    router.add_post("/{tenant}/logout", auth.logout, name="logout")
    router.add_get("/{tenant}/", home, name="home")
    router.add_get("/{tenant}/overview", overview, name="overview")
    router.add_get("/{tenant}/calls", calls, name="calls")
    router.add_get("/{tenant}/calls.csv", calls_csv, name="calls_csv")
    router.add_post("/{tenant}/calls/record", record, name="record")
    router.add_get("/{tenant}/escalations", escalations, name="escalations")
    router.add_get("/{tenant}/groups", groups, name="groups")
    router.add_get("/{tenant}/users", users, name="users")
    router.add_post("/{tenant}/users", create_user, name="create_user")
    router.add_post("/{tenant}/users/unlock", unlock_user, name="unlock_user")
    router.add_get("/{tenant}/audit", audit, name="audit")
    router.add_get("/{tenant}/line", line, name="line")
    router.add_post("/{tenant}/line/code", line_code, name="line_code")
    router.add_post("/{tenant}/line/duty", line_duty, name="line_duty")
    router.add_post("/{tenant}/line/unlink", line_unlink, name="line_unlink")
    settings_pages.add_routes(router)
    notice_pages.add_routes(router)
    rollcall_pages.add_routes(router)
    resident_pages.add_routes(router)


def _context(request: web.Request) -> tuple[str, str, int]:
    tenant = request.match_info["tenant"]
    return tenant, request.app[TENANTS][tenant], request.app[CLOCK]()


@auth.public
async def index(request: web.Request) -> web.Response:
    tenants = request.app[TENANTS]
    if len(tenants) == 1:
        raise web.HTTPFound(request.app.router["login"].url_for(tenant=next(iter(tenants))))
    return render(request, "error.html", title="anpi 管理画面",
                  message="自治体ごとの管理画面のアドレス（/admin/自治体ID/login）からお入りください。")


async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.app.router["overview"].url_for(tenant=request.match_info["tenant"]))


# --- overview -----------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    tenant, zone, now = _context(request)
    reads = request.app[READSIDE]
    today = date.fromordinal(local_ordinal(zone, now))
    days = chart.days_back(today, 30)
    counts, quota, opens = await reads.overview(tenant, [d.isoformat() for d in days], rs.month_of(now))
    t = counts.get(today.isoformat(), {})
    labels = await reads.labels(tenant)
    rows, other = _member_rows(labels)
    return render(request, "overview.html", title="利用状況", today=today, now=now,
                  today_counts={"sent": t.get(fx.CHECK_SENT, 0),
                                "ok": t.get(fx.CONFIRMED, 0) + t.get(fx.RESOLVED_AFTER_ESCALATION, 0),
                                "resent": t.get(fx.CHECK_RESENT, 0), "staff": t.get(fx.STAFF_CALL, 0),
                                "contacts": t.get(fx.CONTACTS_NOTIFIED, 0), "posted": t.get(fx.GROUP_CHECK_POSTED, 0)},
                  rows=rows, other=other, phases=PHASES, group_phases=GROUP_PHASES,
                  groups={k: labels.get(k, 0) for k, _ in GROUP_PHASES},
                  chart=chart.rate_chart(days, counts), quota=quota,
                  month=rs.month_of(now), open_calls=opens.get(fx.STAFF_CALL, 0),
                  open_notices=opens.get(fx.CONTACTS_NOTIFIED, 0),
                  local_time=local_time(now, zone))


def _member_rows(labels: dict[str, int]) -> tuple[list[dict], dict[str, int]]:
    """Members by service (rows) and state (columns); labels this page does not know, apart."""
    known = {f"{s}:{p}" for s, _ in SERVICES for p, _ in PHASES} | {k for k, _ in GROUP_PHASES}
    rows = [{"name": name, "cells": [labels.get(f"{service}:{p}", 0) for p, _ in PHASES],
             "total": sum(labels.get(f"{service}:{p}", 0) for p, _ in PHASES)} for service, name in SERVICES]
    return rows, {k: n for k, n in sorted(labels.items()) if k not in known}


# --- the call queue (見守り) ----------------------------------------------------------------------------


async def calls(request: web.Request) -> web.Response:
    tenant, zone, now = _context(request)
    reads = request.app[READSIDE]
    open_rows = [_case_view(zone, now, row) for row in await reads.cases(tenant, fx.STAFF_CALL, "open")]
    closed = [_case_view(zone, now, row) for row in await reads.cases(tenant, fx.STAFF_CALL, "closed", limit=20)]
    # whom the caller calls: the names staff keep (streams/residents), read for the rows shown only
    profiles = await request.app[PROFILES].many(tenant, [r["member"] for r in open_rows + closed])
    for row in open_rows + closed:
        row["profile"] = profiles.get(row["member"])
    query = request.query.get("q", "").strip()[:100]
    if query:   # 「山田」: only the cases of residents whose name (or note, address, id) has it
        wanted = {m for m, _ in matches({r["member"]: r["profile"] or Profile() for r in open_rows}, query, 10_000)}
        open_rows = [r for r in open_rows if r["member"] in wanted]
    shown = [r["member"] for r in open_rows if r.get("phone")]
    if shown:   # who looked at whose phone number
        await request.app[STAFF].audit(tenant, request.app[WALL](), request[SESSION].login, "calls.view", None,
                                       ",".join(shown))
    done = request.query.get("done")
    # the page lists the longest waits only
    waiting = await reads.open_count(tenant, fx.STAFF_CALL)
    return render(request, "calls.html", title="職員の連絡待ち", open_rows=open_rows, closed=closed, waiting=waiting,
                  query=query,
                  csrf=request[SESSION].csrf, outcomes=[(k, OUTCOME_WORDS[k]) for k in rs.OUTCOMES],
                  done=OUTCOME_WORDS.get(done), gone=request.query.get("gone") == "1", urgent_words=URGENT_WORDS)


CALLS_CSV_HEADER = ("氏名", "ふりがな", "電話", "理由", "連絡待ちになった時刻", "再通知", "連絡メモ", "LINEのID", "確認の回")


async def calls_csv(request: web.Request) -> web.Response:
    """The call queue as CSV (Excel opens UTF-8 with its BOM), for staff working it on paper or from
    another tool; audited, as it holds phone numbers."""
    tenant, zone, now = _context(request)
    rows = [_case_view(zone, now, row) for row in await request.app[READSIDE].cases(tenant, fx.STAFF_CALL, "open",
                                                                                     limit=10_000)]
    profiles = await request.app[PROFILES].many(tenant, [r["member"] for r in rows])
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(CALLS_CSV_HEADER)
    for r in rows:
        p = profiles.get(r["member"])
        writer.writerow([p.name if p else "", p.kana if p else "", r["phone"] or "",
                         URGENT_WORDS if r["urgent"] else r["reason_text"], r["escalated_at"], r["reminders"],
                         p.note if p else "", r["member"], r["cycle"]])
    await request.app[STAFF].audit(tenant, request.app[WALL](), request[SESSION].login, "calls.csv", None,
                                   f"{len(rows)}件")
    return web.Response(body=out.getvalue().encode(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="calls.csv"'})


def _case_view(zone: str, now: int, row: dict) -> dict:
    """A case row (with `phone` and `sent_at` from the read side) in words."""
    sent_at = row.get("sent_at")
    return {**row, "phone": row.get("phone"), "sent_at": local_time(sent_at, zone),
            "since_check": elapsed(now - sent_at) if sent_at is not None else "—",
            "escalated_at": local_time(row["at"], zone), "closed_at_text": local_time(row["closed_at"], zone),
            "last_action_text": OUTCOME_WORDS.get(row["last_action"] or ""),
            "last_action_at_text": local_time(row["last_action_at"], zone),
            "outcome_text": OUTCOME_WORDS.get(row["outcome"] or "", "完了"),
            "reason_text": REASON_WORDS.get(row.get("reason") or "", ""), "urgent": bool(row.get("urgent")),
            "reminders": row.get("reminders") or 0, "reminded_at_text": local_time(row.get("reminded_at"), zone),
            "resolving": row["status"] == "open" and row["last_action"] == rs.REACHED,
            "anchor": on_call.case_anchor(row["member"], row["cycle"])}


async def record(request: web.Request) -> web.Response:
    """Staff record what came of a call. Reached and fine: the engine closes the case (a Resolve
    event); emergency services called: staff close it here (handed over); otherwise it stays open."""
    tenant, _, now = _context(request)
    form, login = request[FORM], request[SESSION].login
    back = request.app.router["calls"].url_for(tenant=tenant)
    member, outcome = str(form.get("member", "")), str(form.get("outcome", ""))
    if form.get("back") == "escalations":
        back = request.app.router["escalations"].url_for(tenant=tenant)
    try:
        cycle = int(str(form.get("cycle", "")))
    except ValueError:
        cycle = -1
    if outcome not in rs.OUTCOMES or cycle < 0 or not member or len(member) > 64 or ":" in member or \
            not await request.app[READSIDE].record_outcome(tenant, member, cycle, outcome, now, request.app[WALL](),
                                                            login):
        return auth.see_other(back.with_query(gone="1"))
    return auth.see_other(back.with_query(done=outcome))


# --- escalations (安否通知) and groups (つながり) ---------------------------------------------------------


async def escalations(request: web.Request) -> web.Response:
    tenant, zone, now = _context(request)
    reads = request.app[READSIDE]
    open_rows = await reads.cases(tenant, fx.CONTACTS_NOTIFIED, "open")
    closed = await reads.cases(tenant, fx.CONTACTS_NOTIFIED, "closed", limit=20)
    acks = await reads.acknowledged(tenant, [(r["member"], r["cycle"]) for r in open_rows + closed])
    done = request.query.get("done")
    return render(request, "escalations.html", title="安否通知（ご家族などへの連絡）",
                  open_rows=[_with_acks(zone, _case_view(zone, now, r), acks) for r in open_rows],
                  closed=[_with_acks(zone, _case_view(zone, now, r), acks) for r in closed],
                  csrf=request[SESSION].csrf, outcomes=[(k, OUTCOME_WORDS[k]) for k in rs.OUTCOMES],
                  done=OUTCOME_WORDS.get(done), gone=request.query.get("gone") == "1", urgent_words=URGENT_WORDS)


def _with_acks(zone: str, case: dict, acks: dict) -> dict:
    """Who of those told answered 「見に行きます」, and when (the contacts stay unnamed here)."""
    times = acks.get((case["member"], case["cycle"]), [])
    return {**case, "acks": len(times), "first_ack_text": local_time(times[0], zone) if times else "",
            "ack_times": [local_time(t, zone) for t in times]}


async def groups(request: web.Request) -> web.Response:
    tenant, zone, now = _context(request)
    rows = []
    for g in await request.app[READSIDE].groups(tenant, now):
        posted = g["posted_at"] is not None
        known = g["roster"] is not None  # on Kafka a group's size is known from its first 23 h list on
        rows.append({**g, "posted": posted, "posted_text": local_time(g["posted_at"], zone),
                     "waiting": max(0, g["roster"] - (g["confirmed"] or 0)) if posted and known else None,
                     "unconfirmed_text": local_time(g["unconfirmed_at"], zone)})
    return render(request, "groups.html", title="つながり（グループ）", rows=rows)


# --- accounts and the audit log (administrators) --------------------------------------------------------


@auth.admin_only
async def users(request: web.Request) -> web.Response:
    return await _users_page(request)


async def _users_page(request: web.Request, status: int = 200, **extra) -> web.Response:
    tenant, zone, _ = _context(request)
    wall = request.app[WALL]()
    rows = [{**u, "role_text": ROLE_WORDS.get(u["role"], u["role"]), "locked": u["locked_until"] > wall,
             "created_text": local_time(u["created_at"], zone), "duty_text": on_call.duty_label(u["duty_start"], u["duty_end"])}
            for u in await request.app[STAFF].users(tenant)]
    return render(request, "users.html", status=status, title="アカウント", rows=rows, roles=ROLE_WORDS,
                  csrf=request[SESSION].csrf, **extra)


@auth.admin_only
async def create_user(request: web.Request) -> web.Response:
    tenant = request.match_info["tenant"]
    form, staff = request[FORM], request.app[STAFF]
    login, role = str(form.get("login", "")).strip(), str(form.get("role", ""))
    password = accounts.random_password()  # shown once on the next page, never stored in the clear
    wall = request.app[WALL]()
    try:
        accounts.check_new(login, role, password)
        if await staff.exists(tenant, login):
            raise accounts.AccountError("このログインIDはすでに使われています")
        hashed = await asyncio.get_running_loop().run_in_executor(None, accounts.hash_password, password)
        await staff.add_user(tenant, login, role, hashed, wall, request[SESSION].login)
    except accounts.AccountError as e:
        return await _users_page(request, 400, error=str(e))
    return await _users_page(request, created={"login": login, "password": password, "role": ROLE_WORDS[role]})


@auth.admin_only
async def unlock_user(request: web.Request) -> web.Response:
    tenant = request.match_info["tenant"]
    staff, login = request.app[STAFF], str(request[FORM].get("login", ""))
    if await staff.unlock(tenant, login):
        await staff.audit(tenant, request.app[WALL](), request[SESSION].login, "user.unlock", login)
    return auth.see_other(request.app.router["users"].url_for(tenant=tenant))


async def line(request: web.Request, status: int = 200, **extra) -> web.Response:
    """The signed-in staff member's own alerts on LINE: link (a one-time code), hours, unlink."""
    tenant = request.match_info["tenant"]
    login = request[SESSION].login
    me = next((u for u in await request.app[STAFF].users(tenant) if u["login"] == login), None)
    if me is None:
        raise web.HTTPNotFound()
    return render(request, "line.html", status=status, title="LINEで通知を受け取る", me=me, csrf=request[SESSION].csrf,
                  duty_text=on_call.duty_label(me["duty_start"], me["duty_end"]), hours=range(24),
                  minutes=on_call.LINK_CODE_VALID_FOR // 60_000, saved=request.query.get("saved") == "1", **extra)


async def line_code(request: web.Request) -> web.Response:
    """A new one-time code, shown once on this page (kept only as its hash)."""
    tenant, login, staff = request.match_info["tenant"], request[SESSION].login, request.app[STAFF]
    # on the engine's clock, which LINE's webhook timestamps (when the code comes back) keep to
    code = await staff.line_code(tenant, login, request.app[CLOCK]())
    await staff.audit(tenant, request.app[WALL](), login, "staff.line_code")
    return await line(request, code=on_call.shown(code))


async def line_duty(request: web.Request) -> web.Response:
    tenant, login, staff, form = request.match_info["tenant"], request[SESSION].login, request.app[STAFF], request[FORM]
    try:
        start, end = int(str(form.get("start", ""))), int(str(form.get("end", "")))
        await staff.set_duty(tenant, login, start, end)
    except (ValueError, accounts.AccountError):
        return await line(request, 400, error=accounts.DUTY_HOURS_RULE)
    await staff.audit(tenant, request.app[WALL](), login, "staff.duty", None, on_call.duty_label(start, end))
    return auth.see_other(request.app.router["line"].url_for(tenant=tenant).with_query(saved="1"))


async def line_unlink(request: web.Request) -> web.Response:
    tenant, login, staff = request.match_info["tenant"], request[SESSION].login, request.app[STAFF]
    if await staff.unlink_line(tenant, login):
        await staff.audit(tenant, request.app[WALL](), login, "staff.line_unlink")
    return auth.see_other(request.app.router["line"].url_for(tenant=tenant))


@auth.admin_only
async def audit(request: web.Request) -> web.Response:
    tenant, zone, _ = _context(request)
    rows = [{**r, "when": local_time(r["at"], zone), "what": ACTION_WORDS.get(r["action"], r["action"])}
            for r in await request.app[STAFF].audit_log(tenant)]
    return render(request, "audit.html", title="操作の記録", rows=rows)
