"""Who may see what: the login and logout handlers, and the guard every admin route passes through.

Default deny. The guard runs before every handler: a route is reachable without a session only if
its handler is marked `@public` (the login page). Any other route must carry {tenant} in its path,
and the session must belong to that very tenant; a session of another tenant gets the same 404 as a
page that does not exist, so nothing tells whether a tenant is there. Every POST must carry the
session's CSRF token (the login form: a double-submit cookie, as there is no session yet).

Passwords, session ids and tokens are never logged; the log says only that something happened.
"""
from __future__ import annotations

import logging
import secrets

from aiohttp import web

from streams.admin import accounts
from streams.admin.keys import FORM, SESSION, STAFF, TENANTS, WALL
from streams.admin.view import render

log = logging.getLogger("anpi.admin")
SESSION_COOKIE = "anpi_admin"
LOGIN_COOKIE = "anpi_login"      # the login form's CSRF token (double submit)
COOKIE_PATH = "/admin"
PUBLIC = "anpi_public"
ROLE = "anpi_role"
MAX_BODY = "anpi_max_body"

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "Content-Security-Policy": CSP}


def public(handler):
    """Reachable without a session (the login page only)."""
    setattr(handler, PUBLIC, True)
    return handler


def admin_only(handler):
    """Only the tenant's administrators (not operators)."""
    setattr(handler, ROLE, accounts.ADMIN)
    return handler


def max_body(size: int):
    """A POST handler that takes a larger body than the app's default (an image upload)."""
    def mark(handler):
        setattr(handler, MAX_BODY, size)
        return handler
    return mark


@web.middleware
async def headers(request: web.Request, handler):
    """No caching of pages with personal data, no framing, no scripts from anywhere."""
    try:
        response = await handler(request)
    except web.HTTPException as e:  # redirects and aiohttp's own 404 / 405 get the headers too
        e.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def guard(request: web.Request, handler):
    info = request.match_info
    if info.http_exception is not None:  # no such route: aiohttp's own 404 / 405
        return await handler(request)
    if getattr(info.handler, PUBLIC, False):
        return await handler(request)
    tenant = info.get("tenant")
    if tenant is None:
        return not_found(request)
    session = await request.app[STAFF].session(request.cookies.get(SESSION_COOKIE), request.app[WALL]())
    if session is None:
        if request.method == "GET":
            raise web.HTTPFound(request.app.router["login"].url_for(tenant=tenant))
        return render(request, "error.html", status=403, title="ログインが必要です",
                      message="しばらく操作がなかったため、ログインの有効期限が切れました。もう一度ログインしてください。",
                      login=True)
    if session.tenant != tenant or tenant not in request.app[TENANTS]:
        return not_found(request)
    request[SESSION] = session
    required = getattr(info.handler, ROLE, None)
    if required is not None and session.role != required:
        return render(request, "error.html", status=403, title="この画面は管理者だけが使えます",
                      message="必要なときは、自治体の管理者にご相談ください。")
    if request.method == "POST":
        larger = getattr(info.handler, MAX_BODY, None)
        if larger is not None:  # read under the handler's own limit (the root app's may be smaller)
            request = request.clone(client_max_size=larger)
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return render(request, "error.html", status=413, title="送られたデータが大きすぎます",
                          message="ファイルが大きすぎます。画像は小さくしてから、もう一度お試しください。")
        if not accounts.same(form.get("csrf"), session.csrf):
            log.warning("tenant %s: a form without a valid CSRF token was refused", tenant)
            return render(request, "error.html", status=403, title="操作を受け付けられませんでした",
                          message="画面が古くなっている可能性があります。ページを開き直してから、もう一度お試しください。")
        request[FORM] = form
    return await handler(request)


def not_found(request: web.Request) -> web.Response:
    request.pop(SESSION, None)
    return render(request, "error.html", status=404, title="ページが見つかりません",
                  message="アドレスをお確かめください。")


# --- login and logout ---------------------------------------------------------------------------------

MESSAGES = {
    accounts.BAD: "ログインIDかパスワードが違います。",
    # The same words whichever count locked (accounts.LOCKOUT), and for a login that does not exist.
    accounts.LOCKED: f"続けてまちがえたため、この端末からは{accounts.LOCK_MS // 60_000}分間ログインできません。"
                     "時間をおいてお試しいただくか、管理者にロックの解除を依頼してください。",
}


def _login_page(request: web.Request, status: int = 200, message: str | None = None, login: str = "") -> web.Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", status=status, csrf=token, message=message, login=login,
                      session=None)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path=COOKIE_PATH,
                        secure=request.secure, max_age=3600)
    return response


@public
async def login_form(request: web.Request) -> web.Response:
    return _login_page(request)


@public
async def login(request: web.Request) -> web.Response:
    tenant = request.match_info["tenant"]
    form = await request.post()
    if not accounts.same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
        return _login_page(request, 403, "画面の有効期限が切れました。もう一度入力してください。")
    name, password = str(form.get("login", "")).strip(), str(form.get("password", ""))
    staff, wall = request.app[STAFF], request.app[WALL]
    result = await staff.authenticate(tenant, name, password, wall, request.remote or "")
    if tenant not in request.app[TENANTS] and result == accounts.OK:  # a tenant not served here: not here
        result = accounts.BAD
    if result != accounts.OK:
        # An unknown login is not written down: it may be a password typed into the wrong box. The
        # page itself answers the same for a known and an unknown login.
        known = await staff.exists(tenant, name)
        await staff.audit(tenant, wall(), name if known else "(不明なID)",
                          "login.locked" if result == accounts.LOCKED else "login.failed")
        log.info("tenant %s: a login attempt failed", tenant)
        return _login_page(request, 401, MESSAGES[result], login=name)
    session_id = await staff.open_session(tenant, name, wall())
    await staff.audit(tenant, wall(), name, "login")
    log.info("tenant %s: staff logged in", tenant)
    response = see_other(request.app.router["overview"].url_for(tenant=tenant))
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Lax", path=COOKIE_PATH,
                        secure=request.secure, max_age=accounts.MAX_SESSION_MS // 1000)
    response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


async def logout(request: web.Request) -> web.Response:
    tenant, staff = request.match_info["tenant"], request.app[STAFF]
    await staff.close_session(request.cookies.get(SESSION_COOKIE))
    await staff.audit(tenant, request.app[WALL](), request[SESSION].login, "logout")
    response = see_other(f'{request.app.router["login"].url_for(tenant=tenant)}?bye=1')
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


def see_other(location) -> web.Response:
    """After a POST, the browser GETs the next page (a reload does not repeat the POST)."""
    return web.Response(status=303, headers={"Location": str(location)})
