"""My Page as aiohttp routes under /mypage/{tenant}: a resident's own settings, pause, contacts and
history, opened from the LINE rich menu.

    GET  /mypage/{tenant}?t=TOKEN     a signed link (agents/mypage_link.py) → session cookie → 303
    POST /mypage/{tenant}/liff        {"idToken": …} from LIFF, verified with LINE → session cookie
    GET  /mypage/{tenant}             the page (a session of that very tenant)
    GET  /mypage/{tenant}/top-image   the tenant's top image (public: it is the town's, not a person's)
    POST /mypage/{tenant}/schedule | service | pause | resume | contacts/remove | invite

Every change is an engine event committed at `now_ms()` through the runtime's Members
(streams/mypage/backends.py: the embedded inbox, read and written in one transaction with the state
it was built from, or the Kafka runtime's inbound topic), then 303 back with a flash message. Every POST carries the session's CSRF token. The page speaks
like the LINE chat; it never shows a LINE id, and nothing here logs tokens, session ids or numbers.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date
from pathlib import Path
from urllib.parse import quote

import aiohttp
import jinja2
from aiohttp import web

from agents import invitation, mypage_link, prompts
from agents.clock import DAY, local_ordinal
from agents.member import MAX_CONTACTS, MemberState
from schemas.events import ChangeSettings, Invite, Pause, Withdraw
from schemas.settings import EIGHT_DAY_WARNING, INTERVALS, NOTIFY, WATCH, WEEKDAYS, past_the_eight_day_line
from schemas.tenant import Tenant
from streams import forwarded
from streams.embedded.store import Store
from streams.mypage import forms, liff, sessions, view
from streams.residents import profile as resident_profile
from streams.residents.in_sqlite import SqliteProfiles
from streams.mypage.backends import Members, NotRegistered, Sessions
from streams.mypage.in_sqlite import SqliteMembers, SqliteSessions
from streams.tenants.in_sqlite import SqliteRegistry

log = logging.getLogger("anpi.mypage")
HERE = Path(__file__).resolve().parent
COOKIE = "anpi_mypage"
HISTORY_DAYS = 30
DEFAULT_IMAGE = (HERE / "static" / "top.svg").read_bytes()
DEFAULT_TERMS = (HERE / "static" / "terms.txt").read_text(encoding="utf-8").strip()
CHANGED = "変更しました"
LIFF_SDK = "https://static.line-scdn.net/liff/edge/2/sdk.js"

AGAIN = "お手数ですが、LINEのトーク画面の下にある「マイページ」を、もう一度押してください。"
PROFILE_CONSENT = "市の担当者に伝えてよいときは、「同意します」に印をつけてください。"
PAGES = {   # (title, sentence) of the short pages that stand in for the real one
    "link": ("マイページを開けませんでした", "このボタンは使えなくなっています（30分たつと使えなくなります）。"),
    "session": ("マイページをもう一度開いてください", "しばらく操作がなかったため、いったん閉じました。"),
    "csrf": ("もう一度お試しください", "画面が古くなっていたため、変更はしていません。"),
    "unregistered": ("まだ登録されていません", "マイページは、LINEで登録したあとに使えます。"
                                          "LINEのトーク画面で、ご案内にそって登録してください。"),
    "missing": ("ページが見つかりませんでした", "アドレスをお確かめください。"),
    "withdrawn": ("退会しました", "お預かりしていた記録は、すべて消しました。これまで、ありがとうございました。"),
}


def _csp(nonce: str | None = None) -> str:
    script = f"'nonce-{nonce}' {LIFF_SDK}" if nonce else "'none'"
    connect = "'self' https://api.line.me https://liffsdk.line-scdn.net" if nonce else "'self'"
    return (f"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src {script}; "
            f"connect-src {connect}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY"}


class MyPage:
    def __init__(self, members: Members, sessions_: Sessions, registry, tenants: Mapping[str, Tenant],
                 now_ms: Callable[[], int], *, line_api: str | None, liff_channel_id: str | None,
                 liff_id: str | None, wall_ms: Callable[[], int], profiles=None):
        """`registry`: the tenants' look (top image, terms): streams/tenants/registry.Registry.
        `tenants` is read on every request, as the ingress reads its own: the runtime replaces a
        Tenant there (settings saved) and the next request uses it."""
        self.members, self.sessions, self.registry = members, sessions_, registry
        self.profiles = profiles   # residents.book.Profiles: the staff-side profile, which they may fill in
        self.tenants, self.now_ms, self.wall_ms = tenants, now_ms, wall_ms
        self.line_api, self.liff_channel_id, self.liff_id = line_api, liff_channel_id, liff_id
        self.keys = {t.id: mypage_link.key_for(t.channel_secret) for t in self.tenants.values()}
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                            trim_blocks=True, lstrip_blocks=True)
        self.http: aiohttp.ClientSession | None = None

    # --- plumbing ---------------------------------------------------------------------------------

    def render(self, name: str, http_status: int = 200, **context) -> web.Response:
        nonce = context.get("nonce")  # the one inline script allowed, when the page signs in with LIFF
        html = self.templates.get_template(name).render(**context)
        response = web.Response(text=html, status=http_status, content_type="text/html", charset="utf-8")
        response.headers.update(HEADERS)
        response.headers["Content-Security-Policy"] = _csp(nonce)
        return response

    def short_page(self, tenant: Tenant | None, which: str, status: int, **context) -> web.Response:
        title, sentence = PAGES[which]
        again = AGAIN if which in ("link", "session", "csrf") else ""
        nonce = secrets.token_urlsafe(16) if (which in ("link", "session") and tenant and self.liff_id) else None
        return self.render("message.html", status, title=title, sentence=sentence, again=again,
                           root=_root(tenant) if tenant else None, liff_id=self.liff_id if nonce else None,
                           nonce=nonce, **context)

    def tenant(self, request: web.Request) -> Tenant | None:
        return self.tenants.get(request.match_info["tenant"])

    async def session(self, request: web.Request, tenant: Tenant) -> tuple[str, sessions.Session] | None:
        sid = request.cookies.get(COOKIE)
        found = await self.sessions.find(tenant.id, sid, self.wall_ms())
        return (sid, found) if found else None

    async def start_session(self, response: web.StreamResponse, request: web.Request, tenant: Tenant,
                            member: str) -> None:
        sid = await self.sessions.start(tenant.id, member, self.wall_ms())
        response.set_cookie(COOKIE, sid, path=_root(tenant), httponly=True, samesite="Lax", secure=request.secure,
                            max_age=sessions.AT_MOST // 1000)

    # --- signing in -------------------------------------------------------------------------------

    async def open(self, request: web.Request) -> web.StreamResponse:
        tenant = self.tenant(request)
        if tenant is None:
            return self.short_page(None, "missing", 404)
        if "t" in request.query:
            return await self.link_login(request, tenant)
        found = await self.session(request, tenant)
        if found is None:
            return self.short_page(tenant, "session", 403)
        sid, session = found
        state = await self.members.state(tenant.id, session.member)
        if state is None:
            return self.short_page(tenant, "unregistered", 200)
        return await self.page(tenant, session, state, flash=await self.sessions.pop_flash(tenant.id, sid))

    async def link_login(self, request: web.Request, tenant: Tenant) -> web.StreamResponse:
        try:
            member = mypage_link.verify(self.keys[tenant.id], request.query["t"], tenant.id, self.now_ms())
        except mypage_link.BadLink as refused:
            log.info("tenant %s: My Page link refused (%s)", tenant.id, refused)  # the reason, never the link
            return self.short_page(tenant, "link", 403)
        response = _see_other(_root(tenant))  # the token leaves the address bar and the history
        await self.start_session(response, request, tenant, member)
        log.info("tenant %s: My Page opened by link", tenant.id)
        return response

    async def liff_login(self, request: web.Request) -> web.StreamResponse:
        tenant = self.tenant(request)
        refused = web.json_response({"ok": False, "message": AGAIN}, status=403, headers=HEADERS)
        if tenant is None or not self.line_api or not self.liff_channel_id:
            return refused
        if request.content_type != "application/json":  # a cross-site form cannot send this type
            return refused
        try:
            body = await request.json()
            token = body.get("idToken") if isinstance(body, dict) else None
        except ValueError:
            return refused
        if self.http is None:
            self.http = aiohttp.ClientSession()
        try:
            member = await liff.verify(self.http, self.line_api, self.liff_channel_id, token, self.wall_ms() / 1000)
        except liff.Refused:
            return refused
        response = web.json_response({"ok": True, "location": _root(tenant)}, headers=HEADERS)
        await self.start_session(response, request, tenant, member)
        log.info("tenant %s: My Page opened by LIFF", tenant.id)
        return response

    async def close(self, app: web.Application) -> None:
        if self.http is not None:
            await self.http.close()

    # --- the page ---------------------------------------------------------------------------------

    async def page(self, tenant: Tenant, session: sessions.Session, state: MemberState, *, flash: str | None = None,
             error: tuple[str, str] | None = None, http_status: int = 200) -> web.Response:
        now, s = self.now_ms(), state.settings
        zone = s.schedule.zone
        today = local_ordinal(zone, now)
        look = await self.registry.look(tenant.id)
        areas = await self.areas(tenant.id)
        effects = await self.members.history(tenant.id, session.member, now - HISTORY_DAYS * DAY, now)
        sch = s.schedule
        return self.render(
            "page.html", http_status,
            root=_root(tenant), csrf=session.csrf, flash=flash, error=error,
            image_url=f"{_root(tenant)}/top-image?v={look.updated_at if look else 0}",
            terms=(look.terms if look and look.terms else DEFAULT_TERMS),
            status=view.status(state, now), service=s.service, watch=WATCH, notify=NOTIFY,
            services=[(k, prompts.SERVICE_NAMES[k], prompts.SERVICE_HELP[k]) for k in (WATCH, NOTIFY)],
            intervals=[(k, prompts.INTERVAL_NAMES[k] + ("（8日以上気づかれないことがあります）"
                                                        if past_the_eight_day_line(k) else ""))
                       for k in INTERVALS if forms.offered(k, sch, tenant.long_intervals)],
            eight_days=past_the_eight_day_line(sch.interval), eight_day_warning=EIGHT_DAY_WARNING,
            weekdays=[(k, prompts.WEEKDAY_NAMES[k]) for k in WEEKDAYS],
            hours=[(h, prompts.clock_label(h * 60)) for h in range(24)],
            minutes=sorted({*forms.MINUTES, sch.minute % 60}),
            current={"interval": sch.interval, "weekday": WEEKDAYS[sch.weekday] if sch.weekday is not None else "",
                     "hour": sch.minute // 60, "minute": sch.minute % 60},
            has_phone=bool(s.phone),
            pause_min=date.fromordinal(today + 1).isoformat(),
            pause_max=date.fromordinal(today + forms.PAUSE_AT_MOST).isoformat(),
            contacts=view.contacts(s, session.csrf, state.quiet) if s.service == NOTIFY else [],
            can_invite=s.service == NOTIFY and len(s.contacts) < MAX_CONTACTS,
            invitation=view.invitation(state, now) if s.service == NOTIFY else None,
            history=view.history(effects, session.member, zone), history_days=HISTORY_DAYS,
            areas=list(areas.items()), current_area=s.area,
            profile=await self.profiles.get(tenant.id, session.member) if self.profiles is not None else None,
            profiles_kept=self.profiles is not None, profile_labels=resident_profile.LABELS,
            profile_limits=resident_profile.LIMITS)

    async def areas(self, tenant: str) -> dict[str, str]:
        """The tenant's areas (id -> name) from its settings; {} when it has none."""
        stored = await self.registry.settings(tenant)
        quake = getattr(stored, "quake", None)
        return {area.id: area.name for area in quake.areas} if quake is not None else {}

    async def change_area(self, request: web.Request) -> web.StreamResponse:
        tenant = self.tenant(request)
        areas = await self.areas(tenant.id) if tenant is not None else {}
        return await self.change(lambda state, now, form, session: _area(state, now, form, areas), "area")(request)

    async def top_image(self, request: web.Request) -> web.StreamResponse:
        tenant = self.tenant(request)
        if tenant is None:
            return self.short_page(None, "missing", 404)
        look = await self.registry.look(tenant.id)
        if look is not None and look.top_image:
            body, kind = look.top_image, look.image_type
        else:
            body, kind = DEFAULT_IMAGE, "image/svg+xml"
        return web.Response(body=body, content_type=kind, headers={
            "Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    # --- changes ----------------------------------------------------------------------------------

    async def posted(self, request: web.Request):
        """A form POST's (tenant, session id, session, fields), or the short page that refuses it
        (no such tenant, no session, no CSRF token)."""
        tenant = self.tenant(request)
        if tenant is None:
            return self.short_page(None, "missing", 404)
        found = await self.session(request, tenant)
        if found is None:
            return self.short_page(tenant, "session", 403)
        sid, session = found
        form = await request.post()
        if not hmac.compare_digest(str(form.get("csrf", "")).encode(), session.csrf.encode()):
            log.info("tenant %s: My Page form without its CSRF token refused", tenant.id)
            return self.short_page(tenant, "csrf", 403)
        return tenant, sid, session, {k: v for k, v in form.items() if isinstance(v, str)}

    async def save_profile(self, request: web.Request) -> web.StreamResponse:
        """The resident's own name, address and key holder, for the staff who may call or visit them:
        kept only with their consent (the box), beside staff's note, audited as theirs."""
        posted = await self.posted(request)
        if isinstance(posted, web.StreamResponse):
            return posted
        tenant, sid, session, fields = posted
        state = await self.members.state(tenant.id, session.member)
        if state is None:
            return self.short_page(tenant, "unregistered", 200)
        if fields.get("consent") != "1":
            return await self.page(tenant, session, state, error=("profile", PROFILE_CONSENT), http_status=400)
        old = await self.profiles.get(tenant.id, session.member)
        wall = self.wall_ms()
        try:
            mine = resident_profile.clean({**fields, "note": old.note if old else ""}, wall, "(本人)")
        except resident_profile.Invalid as invalid:
            return await self.page(tenant, session, state, error=("profile", str(invalid)), http_status=400)
        await self.profiles.put(tenant.id, session.member, mine, (wall, "(本人)", "resident.profile", session.member,
                                                                  "本人がマイページで入力"))
        await self.sessions.set_flash(tenant.id, sid, CHANGED)
        return _see_other(_root(tenant) + "#profile")

    def change(self, build: Callable[[MemberState, int, Mapping[str, str], sessions.Session], list], section: str,
               done: str = CHANGED, anchor: str = "", ends: bool = False):
        """A POST handler: session, CSRF, then `build(state, now, form, session)` → engine events,
        committed through Members with the state read; `forms.Invalid` shows its message instead.
        `ends`: the change removes the resident (退会): a short page, and the cookie goes."""

        async def handle(request: web.Request) -> web.StreamResponse:
            posted = await self.posted(request)
            if isinstance(posted, web.StreamResponse):
                return posted
            tenant, sid, session, fields = posted
            now = self.now_ms()
            try:
                await self.members.change(tenant.id, session.member, lambda state: build(state, now, fields, session))
            except NotRegistered:
                return self.short_page(tenant, "unregistered", 200)
            except forms.Invalid as invalid:
                state = await self.members.state(tenant.id, session.member)
                return await self.page(tenant, session, state, error=(section, str(invalid)), http_status=400)
            if ends:
                response = self.short_page(tenant, "withdrawn", 200)
                response.del_cookie(COOKIE, path=_root(tenant))
                return response
            await self.sessions.set_flash(tenant.id, sid, done)
            return _see_other(_root(tenant) + anchor)

        return handle


# --- what each form does (pure: state and form in, engine events out) -------------------------------


def _schedule(state: MemberState, now: int, form, session, long_intervals: bool = True) -> list:
    s = state.settings
    new = forms.schedule(form, s.schedule, long_intervals)
    return [ChangeSettings(now, replace(s, schedule=new))]


def _service(state: MemberState, now: int, form, session) -> list:
    return [ChangeSettings(now, forms.service(form, state.settings))]


def _area(state: MemberState, now: int, form, areas: Mapping[str, str]) -> list:
    chosen = (form.get("area") or "").strip()
    if chosen and chosen not in areas:
        raise forms.Invalid("地区を一覧から選んでください。")
    if (chosen or None) == state.settings.area:
        return []
    return [ChangeSettings(now, replace(state.settings, area=chosen or None))]


def _pause(state: MemberState, now: int, form, session) -> list:
    today = local_ordinal(state.settings.schedule.zone, now)
    return [Pause(now, state.settings.id, forms.pause_until(form, today))]


def _resume(state: MemberState, now: int, form, session) -> list:
    # A pause "until today" has already ended: the next check goes at the next slot from now.
    return [Pause(now, state.settings.id, local_ordinal(state.settings.schedule.zone, now))]


def _withdraw(state: MemberState, now: int, form, session) -> list:
    if form.get("sure") != "1":   # asked once, as in LINE: a slip of the finger removes nobody
        raise forms.Invalid("退会するときは、「退会します」に印をつけてから、ボタンを押してください。")
    return [Withdraw(now, state.settings.id)]


def _remove_contact(state: MemberState, now: int, form, session) -> list:
    ref = (form.get("contact") or "").strip()
    new = forms.without_contact(state.settings, lambda c: not hmac.compare_digest(view.contact_ref(session.csrf, c), ref))
    return [ChangeSettings(now, new)]


def _invite(state: MemberState, now: int, form, session) -> list:
    s = state.settings
    if s.service != NOTIFY:
        raise forms.Invalid("ご家族などへのお知らせは、安否通知のサービスで使えます。")
    if len(s.contacts) >= MAX_CONTACTS:
        raise forms.Invalid(f"連絡先は{MAX_CONTACTS}人までです。")
    # The code's nonce comes from a fresh random seed (LINE's chat uses its webhookEventId).
    return [Invite(now, s.id, invitation.make(s.id, secrets.token_hex(16)))]


def _root(tenant: Tenant) -> str:
    return f"/mypage/{quote(tenant.id, safe='')}"


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def add_routes(app: web.Application, store: Store, tenants: Mapping[str, Tenant], now_ms: Callable[[], int],
               **options) -> MyPage:
    """Mount My Page on `app` under /mypage/{tenant}, over the embedded store (`mount`'s options)."""
    return mount(app, SqliteMembers(store), SqliteSessions(store), SqliteRegistry(store), tenants, now_ms,
                 profiles=SqliteProfiles(store), **options)


def mount(app: web.Application, members: Members, sessions_: Sessions, registry, tenants: Mapping[str, Tenant],
          now_ms: Callable[[], int], *, line_api: str | None = None, liff_channel_id: str | None = None,
          liff_id: str | None = None, wall_ms: Callable[[], int] | None = None, profiles=None) -> MyPage:
    """Mount My Page on `app` under /mypage/{tenant}, over either runtime's backends.

    `now_ms` is the engine's clock (links are stamped with it, events are committed at it);
    `wall_ms` (default: real time) times sessions. LIFF login needs `line_api` (LINE's API base,
    or linesim's) and `liff_channel_id` (the LINE Login channel the LIFF app belongs to);
    `liff_id` lets the page sign itself in inside LINE with the LIFF SDK.
    """
    mypage = MyPage(members, sessions_, registry, tenants, now_ms, line_api=line_api,
                    liff_channel_id=liff_channel_id, liff_id=liff_id,
                    wall_ms=wall_ms or (lambda: int(time.time() * 1000)), profiles=profiles)
    app.middlewares.append(forwarded.middleware())   # its session cookie is Secure behind a TLS proxy
    r = app.router
    r.add_get("/mypage/{tenant}", mypage.open)
    r.add_get("/mypage/{tenant}/top-image", mypage.top_image)
    r.add_post("/mypage/{tenant}/liff", mypage.liff_login)
    for path, build, section, done, anchor in (
            ("schedule", lambda state, now, form, session: _schedule(
                state, now, form, session, mypage.tenants[session.tenant].long_intervals), "schedule", CHANGED, ""),
            ("service", _service, "service", CHANGED, ""),
            ("pause", _pause, "pause", CHANGED, ""),
            ("resume", _resume, "pause", CHANGED, ""),
            ("contacts/remove", _remove_contact, "contacts", CHANGED, ""),
            ("invite", _invite, "contacts", "招待を作りました。下の文章を、LINEで送ってください。", "#invitation")):
        r.add_post(f"/mypage/{{tenant}}/{path}", mypage.change(build, section, done, anchor))
    r.add_post("/mypage/{tenant}/area", mypage.change_area)
    r.add_post("/mypage/{tenant}/withdraw", mypage.change(_withdraw, "withdraw", ends=True))
    if profiles is not None:
        r.add_post("/mypage/{tenant}/profile", mypage.save_profile)
    app.on_cleanup.append(mypage.close)
    return mypage


def create_app(store: Store, tenants: Mapping[str, Tenant], now_ms: Callable[[], int], **options) -> web.Application:
    """My Page alone (tests, a trial): the same routes on an app of their own."""
    app = web.Application(client_max_size=64 * 1024)
    add_routes(app, store, tenants, now_ms, **options)
    return app
