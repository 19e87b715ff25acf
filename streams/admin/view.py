"""Rendering: templates to responses, and how times, durations and ids read in Japanese."""
from __future__ import annotations

from datetime import datetime

from aiohttp import web

from agents.clock import DAY, HOUR, MINUTE, zone
from streams.admin.keys import SESSION, TEMPLATES, TENANTS

WEEKDAYS_JA = "月火水木金土日"


def render(request: web.Request, template: str, status: int = 200, **context) -> web.Response:
    tenant = request.match_info.get("tenant")
    context.setdefault("tenant", tenant)
    context.setdefault("session", request.get(SESSION))
    context.setdefault("zone", request.app[TENANTS].get(tenant or "", "Asia/Tokyo"))
    context.setdefault("url", lambda name, **parts: str(request.app.router[name].url_for(**parts)))
    context.setdefault("path", request.path)
    page = request.app[TEMPLATES].get_template(template)
    return web.Response(text=page.render(**context), status=status, content_type="text/html", charset="utf-8")


def local_time(at: int | None, zone_name: str, with_date: bool = True) -> str:
    if at is None:
        return "—"
    moment = datetime.fromtimestamp(at / 1000, zone(zone_name))
    if not with_date:
        return moment.strftime("%H:%M")
    return f"{moment.month}月{moment.day}日（{WEEKDAYS_JA[moment.weekday()]}）{moment:%H:%M}"


def elapsed(ms: int | None) -> str:
    """'1日と3時間', '3時間5分', '12分' — how long ago, in words staff read at a glance."""
    if ms is None:
        return "—"
    ms = max(0, ms)
    days, rest = divmod(ms, DAY)
    hours, rest = divmod(rest, HOUR)
    minutes = rest // MINUTE
    if days:
        return f"{days}日と{hours}時間"
    if hours:
        return f"{hours}時間{minutes}分"
    return f"{minutes}分"


def short_id(subject: str) -> str:
    """A LINE id is 33 characters: staff need only tell rows apart (the full id is in the tooltip)."""
    return subject if len(subject) <= 12 else f"{subject[:5]}…{subject[-4:]}"


def number(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


FILTERS = {"short_id": short_id, "number": number, "elapsed": elapsed}
