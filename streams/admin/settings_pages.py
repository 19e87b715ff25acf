"""The tenant settings page (設定), for the tenant's administrators only (an operator gets the same 403
page as for アカウント and 操作の記録: 「この画面は管理者だけが使えます」).

    GET  /{tenant}/settings             the page: four forms, each saved on its own
    GET  /{tenant}/settings/top-image   the current My Page top image (the preview on the page)
    POST /{tenant}/settings/look        My Page's top image (multipart upload) and terms of use → Look
    POST /{tenant}/settings/message     the check card's question and the quote list → TenantSettings
    POST /{tenant}/settings/timezone    the zone of new sign-ups and new schedules → TenantSettings
    POST /{tenant}/settings/limit       how long a staff call may wait before the SRE's alert → TenantSettings
    POST /{tenant}/settings/line        the LINE channel secret and access token (write-only) → TenantSettings

Each form is checked in full before anything is written (streams/tenants: settings.merged,
look.merged); the records and their audit row commit together through the registry (SQLite or
Redis), and only then is the process told (`SETTINGS_CHANGED`); every other process of the
deployment (ingress, sender, My Page) sees the registry's version move and reloads, without a
restart.

The channel secret and the access token are write-only: no page ever shows them again (only that
they are set, when, and their last four characters), the log never carries them, and the audit
log records only that they changed.
"""
from __future__ import annotations

import inspect
import logging
from datetime import date

from aiohttp import web

from agents.clock import local_ordinal
from agents.messages import CHECK_TEXT, QUOTES, Texts, check_card
from agents.prompts import PRIVACY_TEXT
from schemas.settings import EIGHT_DAY_WARNING
from streams.admin import auth, flex
from streams.admin.keys import CLOCK, FORM, REGISTRY, SESSION, SETTINGS_CHANGED, TENANTS, WALL
from streams.admin.view import local_time, render
from streams.mypage.app import DEFAULT_IMAGE, DEFAULT_TERMS
from streams.tenants import look as tenant_look
from streams.tenants import settings as tenant_settings
from streams.tenants.registry import AuditRow

log = logging.getLogger("anpi.admin")

UPLOAD_MAX = tenant_look.MAX_IMAGE_BYTES + 512 * 1024   # the image, the terms and the form around them
ACTION_WORDS = {"settings.look": "設定を変更：マイページの画像・利用規約",
                "settings.message": "設定を変更：確認の文言・名言",
                "settings.timezone": "設定を変更：タイムゾーン",
                "settings.limit": "設定を変更：職員の連絡待ちの上限",
                "settings.retention": "設定を変更：記録を残す期間",
                "settings.privacy": "設定を変更：個人情報の取り扱い",
                "settings.intervals": "設定を変更：お送りする間隔（8日の線）",
                "settings.hook": "設定を変更：外部への通知（Webhook）",
                "settings.line": "設定を変更：LINEチャネルの認証情報"}
DONE_WORDS = {"look": "マイページの画像と利用規約を保存しました。", "message": "確認の文言と名言を保存しました。",
              "timezone": "タイムゾーンを保存しました。", "line": "LINEチャネルの認証情報を保存しました。",
              "limit": "職員の連絡待ちの上限を保存しました。", "retention": "記録を残す期間を保存しました。",
              "privacy": "個人情報の取り扱いを保存しました。",
              "none": "変更はありませんでした。"}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/{tenant}/settings", settings, name="settings")
    router.add_get("/{tenant}/settings/top-image", top_image, name="settings_image")
    router.add_post("/{tenant}/settings/look", save_look, name="settings_look")
    router.add_post("/{tenant}/settings/message", save_message, name="settings_message")
    router.add_post("/{tenant}/settings/timezone", save_timezone, name="settings_timezone")
    router.add_post("/{tenant}/settings/limit", save_limit, name="settings_limit")
    router.add_post("/{tenant}/settings/retention", save_retention, name="settings_retention")
    router.add_post("/{tenant}/settings/privacy", save_privacy, name="settings_privacy")
    router.add_post("/{tenant}/settings/line", save_line, name="settings_line")
    router.add_post("/{tenant}/settings/intervals", save_intervals, name="settings_intervals")
    router.add_post("/{tenant}/settings/hook", save_hook, name="settings_hook")


# --- the page -----------------------------------------------------------------------------------------


@auth.admin_only
async def settings(request: web.Request) -> web.Response:
    return await _page(request, done=DONE_WORDS.get(request.query.get("done", "")))


async def _stored(request: web.Request) -> tenant_settings.TenantSettings | None:
    return await request.app[REGISTRY].settings(request.match_info["tenant"])


async def _page(request: web.Request, status: int = 200, *, errors: dict[str, str] | None = None,
                typed: dict[str, str] | None = None, done: str | None = None,
                hook_secret: str | None = None) -> web.Response:
    tenant = request.match_info["tenant"]
    zone = request.app[TENANTS][tenant]
    look = await request.app[REGISTRY].look(tenant)
    stored = await _stored(request) or tenant_settings.TenantSettings()
    typed = typed or {}
    current_zone = stored.timezone or zone
    zones = list(tenant_settings.ZONES)
    if current_zone not in dict(zones):
        zones.insert(0, (current_zone, current_zone))
    texts = tenant_settings.texts_with(Texts(), stored)
    today = date.fromordinal(local_ordinal(current_zone, request.app[CLOCK]()))
    return render(
        request, "settings.html", status=status, title="設定", csrf=request[SESSION].csrf, errors=errors or {},
        done=done,
        # My Page
        has_image=bool(look and look.top_image), image_version=look.updated_at if look else 0,
        look_updated=local_time(look.updated_at, zone) if look else None,
        terms=typed.get("terms", look.terms if look and look.terms else DEFAULT_TERMS),
        custom_terms=bool(look and look.terms), image_max_mb=tenant_look.MAX_IMAGE_BYTES // (1024 * 1024),
        # the check card
        check_text=typed.get("check_text", stored.check_text or CHECK_TEXT), check_max=tenant_settings.CHECK_MAX,
        quotes_text=typed.get("quotes", "\n".join(stored.quotes or ())), builtin_quotes=QUOTES,
        quotes_max=tenant_settings.QUOTES_MAX, quote_max=tenant_settings.QUOTE_MAX,
        card=flex.render([check_card(texts, today)]),
        # the time zone
        zones=zones, current_zone=typed.get("timezone", current_zone),
        # the staff call limit (the alert)
        limit=typed.get("limit", stored.staff_call_limit_hours or tenant_settings.STAFF_CALL_LIMIT_HOURS),
        limit_range=tenant_settings.STAFF_CALL_LIMIT_RANGE,
        # the privacy notice on the sign-up card
        privacy=typed.get("privacy", stored.privacy_notice or PRIVACY_TEXT), privacy_max=tenant_settings.PRIVACY_MAX,
        custom_privacy=bool(stored.privacy_notice),
        # how long records are kept
        retention=typed.get("retention", stored.retention_days or tenant_settings.RETENTION_DAYS),
        retention_range=tenant_settings.RETENTION_RANGE,
        # the 8-day line
        forbid_long=stored.forbid_long_intervals, eight_day_warning=EIGHT_DAY_WARNING,
        # the outgoing webhook (its secret shown once, right after it was made)
        hook_url=typed.get("hook_url", stored.hook_url or ""), hook_set=bool(stored.hook_url),
        hook_updated=local_time(stored.hook_updated_at, zone) if stored.hook_url else None,
        hook_secret=hook_secret,
        # LINE
        secret=_credential(stored.channel_secret, stored.secret_updated_at, zone),
        token=_credential(stored.channel_access_token, stored.token_updated_at, zone))


def _credential(value: str | None, updated_at: int | None, zone: str) -> dict:
    """What the page may say about a credential: set or not, when, and its last four characters."""
    return {"set": bool(value), "when": local_time(updated_at, zone) if value else None,
            "tail": tenant_settings.tail(value)}


@auth.admin_only
async def top_image(request: web.Request) -> web.Response:
    look = await request.app[REGISTRY].look(request.match_info["tenant"])
    if look is not None and look.top_image:
        return web.Response(body=look.top_image, content_type=look.image_type)
    return web.Response(body=DEFAULT_IMAGE, content_type="image/svg+xml")


# --- saving -------------------------------------------------------------------------------------------


def _unchanged(request: web.Request, section: str) -> web.Response:
    """303 back to the section: nothing was different, nothing is written."""
    back = request.app.router["settings"].url_for(tenant=request.match_info["tenant"]).with_query(done="none")
    return auth.see_other(f"{back}#{section}")


async def _saved(request: web.Request, section: str, action: str, detail: str | None, *, settings=None,
                 look=None) -> web.Response:
    """Commit the records (`settings(wall)` / `look(wall)`: built at the commit's time) with their audit
    row, then tell the process; 303 back."""
    tenant = request.match_info["tenant"]
    wall = request.app[WALL]()
    await request.app[REGISTRY].save(tenant, AuditRow(wall, request[SESSION].login, action, detail),
                                     settings=settings(wall) if settings else None,
                                     look=look(wall) if look else None)
    log.info("tenant %s: settings saved (%s)", tenant, section)   # what, never the values
    try:
        applied = request.app[SETTINGS_CHANGED](tenant)
        if inspect.isawaitable(applied):
            await applied
    except Exception:
        log.exception("tenant %s: the saved settings (%s) could not be applied to the running service",
                      tenant, section)
    back = request.app.router["settings"].url_for(tenant=tenant).with_query(done=section)
    return auth.see_other(f"{back}#{section}")


@auth.admin_only
@auth.max_body(UPLOAD_MAX)
async def save_look(request: web.Request) -> web.Response:
    tenant = request.match_info["tenant"]
    form = request[FORM]
    upload = form.get("top_image")
    image = upload.file.read() if isinstance(upload, web.FileField) else b""
    reset = form.get("reset_image") == "1"
    terms = str(form.get("terms", "")).replace("\r\n", "\n").strip()
    terms_value = None if not terms or terms == DEFAULT_TERMS else terms
    old = await request.app[REGISTRY].look(tenant)
    changes, parts = [], {}
    if image:
        parts["top_image"] = image
        changes.append("トップ画像を変更")
    elif reset and old is not None and old.top_image:
        parts["top_image"] = None
        changes.append("トップ画像を標準に戻す")
    if terms_value != (old.terms if old else None):
        parts["terms"] = terms_value
        changes.append("利用規約を変更" if terms_value else "利用規約を標準に戻す")
    if not changes:
        return _unchanged(request, "look")
    try:  # checked before anything is written: a refused image keeps the terms unsaved too
        if image:
            _check_image(image)
        if terms_value is not None and len(terms_value) > tenant_look.MAX_TERMS_CHARS:
            raise ValueError(f"利用規約は {tenant_look.MAX_TERMS_CHARS:,} 文字以内にしてください。")
    except ValueError as e:
        return await _page(request, 400, errors={"look": str(e)}, typed={"terms": terms})
    return await _saved(request, "look", "settings.look", "、".join(changes),
                        look=lambda wall: tenant_look.merged(old, wall, **parts))


def _check_image(image: bytes) -> None:
    """tenant_look's rules (bitmap formats by their first bytes, ≤ 2 MB, no SVG), before any write."""
    kind = tenant_look.image_type(image)
    if kind is None:
        if tenant_look.is_svg(image):
            raise ValueError("SVG 画像は使えません（中にプログラムを含められるため）。PNG・JPEG・GIF・WebP の"
                             "いずれかにしてください。")
        raise ValueError("画像は PNG・JPEG・GIF・WebP のいずれかにしてください。")
    if len(image) > tenant_look.MAX_IMAGE_BYTES:
        raise ValueError(f"画像は {tenant_look.MAX_IMAGE_BYTES // (1024 * 1024)}MB 以下にしてください"
                         f"（いま {len(image) / (1024 * 1024):.1f}MB です）。")


@auth.admin_only
async def save_message(request: web.Request) -> web.Response:
    form = request[FORM]
    check_raw, quotes_raw = str(form.get("check_text", "")), str(form.get("quotes", ""))
    try:
        check = tenant_settings.clean_check_text(check_raw)
        quotes = tenant_settings.clean_quotes(quotes_raw)
    except tenant_settings.Invalid as e:
        return await _page(request, 400, errors={"message": str(e)},
                           typed={"check_text": check_raw, "quotes": quotes_raw})
    stored = await _stored(request)
    old = stored or tenant_settings.TenantSettings()
    old_check, old_quotes = old.check_text or CHECK_TEXT, old.quotes or ()
    changes = []
    if check != old_check:
        changes.append(f"確認の文言：「{old_check}」→「{check}」")
    if quotes != old_quotes:
        changes.append(f"名言：{_count(old_quotes)}→{_count(quotes)}")
    if not changes:
        return _unchanged(request, "message")
    return await _saved(request, "message", "settings.message", "、".join(changes),
                        settings=lambda wall: tenant_settings.merged(
                            stored, wall, check_text=None if check == CHECK_TEXT else check, quotes=quotes or None))


@auth.admin_only
async def save_privacy(request: web.Request) -> web.Response:
    """The privacy notice residents read on the sign-up card before 「登録する」; 「元に戻す」 (reset)
    brings back the built-in one."""
    form = request[FORM]
    raw = str(form.get("privacy", ""))
    try:
        notice = None if str(form.get("reset", "")) == "1" else tenant_settings.clean_privacy(raw)
    except tenant_settings.Invalid as e:
        return await _page(request, 400, errors={"privacy": str(e)}, typed={"privacy": raw})
    if notice == PRIVACY_TEXT:
        notice = None
    stored = await _stored(request)
    if notice == (stored.privacy_notice if stored else None):
        return _unchanged(request, "privacy")
    return await _saved(request, "privacy", "settings.privacy", "標準の文面に戻す" if notice is None else f"{len(notice)}文字",
                        settings=lambda wall: tenant_settings.merged(stored, wall, privacy_notice=notice))


def _count(quotes: tuple[str, ...]) -> str:
    return f"{len(quotes)}件" if quotes else f"標準の{len(QUOTES)}件"


@auth.admin_only
async def save_timezone(request: web.Request) -> web.Response:
    tenant = request.match_info["tenant"]
    raw = str(request[FORM].get("timezone", ""))
    try:
        zone = tenant_settings.clean_timezone(raw)
    except tenant_settings.Invalid as e:
        return await _page(request, 400, errors={"timezone": str(e)})
    stored = await _stored(request)
    old = (stored or tenant_settings.TenantSettings()).timezone or request.app[TENANTS][tenant]
    if zone == old:
        return _unchanged(request, "timezone")
    response = await _saved(request, "timezone", "settings.timezone", f"{old} → {zone}",
                            settings=lambda wall: tenant_settings.merged(stored, wall, timezone=zone))
    request.app[TENANTS][tenant] = zone   # this screen's times and "today", in the tenant's zone
    return response


@auth.admin_only
async def save_limit(request: web.Request) -> web.Response:
    return await _save_number(request, "limit", "staff_call_limit_hours", tenant_settings.clean_limit,
                              tenant_settings.STAFF_CALL_LIMIT_HOURS, "時間")


@auth.admin_only
async def save_retention(request: web.Request) -> web.Response:
    return await _save_number(request, "retention", "retention_days", tenant_settings.clean_retention,
                              tenant_settings.RETENTION_DAYS, "日")


async def _save_number(request: web.Request, section: str, field: str, clean, default: int, unit: str):
    """One whole-number setting: checked, saved and audited as "old → new", or shown again with why."""
    raw = str(request[FORM].get(section, ""))
    try:
        value = clean(raw)
    except tenant_settings.Invalid as e:
        return await _page(request, 400, errors={section: str(e)}, typed={section: raw})
    stored = await _stored(request)
    old = (getattr(stored, field) if stored else None) or default
    if value == old:
        return _unchanged(request, section)
    return await _saved(request, section, f"settings.{section}", f"{old}{unit} → {value}{unit}",
                        settings=lambda wall: tenant_settings.merged(stored, wall, **{field: value}))


@auth.admin_only
async def save_intervals(request: web.Request) -> web.Response:
    forbid = str(request[FORM].get("forbid_long", "")) == "1"
    stored = await _stored(request)
    if forbid == bool(stored and stored.forbid_long_intervals):
        return _unchanged(request, "intervals")
    return await _saved(request, "intervals", "settings.intervals", "選べない" if forbid else "選べる",
                        settings=lambda wall: tenant_settings.merged(stored, wall, forbid_long_intervals=forbid))


@auth.admin_only
async def save_hook(request: web.Request) -> web.Response:
    """The webhook's address; a new signing secret when there was none or staff ask for one, shown on
    this page once (it is stored, and never shown again). An empty address removes the webhook."""
    form = request[FORM]
    raw, renew = str(form.get("hook_url", "")).strip(), str(form.get("new_secret", "")) == "1"
    stored = await _stored(request)
    try:
        url = tenant_settings.clean_hook_url(raw) if raw else ""
    except tenant_settings.Invalid as e:
        return await _page(request, 400, errors={"hook": str(e)}, typed={"hook_url": raw})
    old_url = (stored.hook_url if stored else None) or ""
    if not url:
        if not old_url:
            return _unchanged(request, "hook")
        return await _saved(request, "hook", "settings.hook", "削除",
                            settings=lambda wall: tenant_settings.merged(stored, wall, hook_url=None))
    secret = tenant_settings.new_hook_secret() if renew or not (stored and stored.hook_secret) else None
    if url == old_url and secret is None:
        return _unchanged(request, "hook")
    parts = {"hook_url": url, **({"hook_secret": secret} if secret else {})}
    await _saved(request, "hook", "settings.hook", "新しい鍵" if secret else "送信先を変更",   # never the values
                 settings=lambda wall: tenant_settings.merged(stored, wall, **parts))
    if secret is None:
        back = request.app.router["settings"].url_for(tenant=request.match_info["tenant"]).with_query(done="hook")
        return auth.see_other(f"{back}#hook")
    return await _page(request, done="hook", hook_secret=secret)


@auth.admin_only
async def save_line(request: web.Request) -> web.Response:
    form = request[FORM]
    secret_raw, token_raw = str(form.get("channel_secret", "")), str(form.get("channel_access_token", ""))
    parts, changes = {}, []
    try:
        if not secret_raw.strip() and not token_raw.strip():
            raise tenant_settings.Invalid("変更するチャネルシークレットか、チャネルアクセストークンを入力してください。"
                                          "（空欄のものは、いまの設定のままです）")
        if secret_raw.strip():
            parts["channel_secret"] = tenant_settings.clean_secret(secret_raw)
            changes.append("チャネルシークレットを変更")
        if token_raw.strip():
            parts["channel_access_token"] = tenant_settings.clean_token(token_raw)
            changes.append("チャネルアクセストークンを変更")
    except tenant_settings.Invalid as e:
        return await _page(request, 400, errors={"line": str(e)})   # what was typed is never sent back
    stored = await _stored(request)
    return await _saved(request, "line", "settings.line", "、".join(changes),   # never the values
                        settings=lambda wall: tenant_settings.merged(stored, wall, **parts))
