"""My Page's forms, read into engine settings. Pure: the form fields and the member's current
settings in, the new settings (or a date) out; `Invalid` carries a short Japanese sentence to show
next to the form. Nothing is committed when a form is invalid.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date

from schemas.settings import (EIGHT_DAY_WARNING, INTERVALS, NOTIFY, SERVICES, WATCH, WEEKDAYS, MemberSettings, Schedule,
                              past_the_eight_day_line)
from streams.line.webhook_events import phone_number

WEEKLY = ("weekly", "biweekly")
MINUTES = tuple(range(0, 60, 5))   # offered in the select; any whole minute is accepted
PAUSE_AT_MOST = 366                # days ahead: a longer absence is a matter for the town's desk


class Invalid(ValueError):
    """A form the resident should correct; the message says how, kindly."""


def _field(form: Mapping[str, str], name: str) -> str:
    return (form.get(name) or "").strip()


def offered(interval: str, old: Schedule, long_intervals: bool) -> bool:
    """An interval My Page offers: any, unless the tenant forbids those past the 8-day line; the
    member's own stays offered (it was allowed when they chose it), so a new time can still be saved."""
    return long_intervals or not past_the_eight_day_line(interval) or interval == old.interval


def schedule(form: Mapping[str, str], old: Schedule, long_intervals: bool = True) -> Schedule:
    """Fields interval, weekday (weekly / biweekly only), hour, minute; the zone stays the member's."""
    interval = _field(form, "interval")
    if interval not in INTERVALS:
        raise Invalid("お送りする間隔を選んでください。")
    if not offered(interval, old, long_intervals):
        raise Invalid(f"この間隔では{EIGHT_DAY_WARNING}。毎日か、数日ごとの間隔を選んでください。")
    weekday = None
    if interval in WEEKLY:
        name = _field(form, "weekday")
        if name not in WEEKDAYS:
            raise Invalid("毎週・2週間に1回のときは、曜日を選んでください。")
        weekday = WEEKDAYS.index(name)
    hour, minute = _field(form, "hour"), _field(form, "minute") or "0"
    if not (hour.isdigit() and len(hour) <= 2 and int(hour) < 24):
        raise Invalid("お送りする時刻（何時）を選んでください。")
    if not (minute.isdigit() and len(minute) <= 2 and int(minute) < 60):
        raise Invalid("お送りする時刻（何分）を選んでください。")
    return Schedule(interval, int(hour) * 60 + int(minute), old.zone, weekday)


def service(form: Mapping[str, str], old: MemberSettings) -> MemberSettings:
    """Field service, and phone for 見守り (staff call it). A service keeps only what it uses: the
    number stays with 見守り, the contacts with 安否通知 (as a change made in the LINE chat does)."""
    chosen = _field(form, "service")
    if chosen not in SERVICES:
        raise Invalid("サービスを選んでください。")
    if chosen == NOTIFY:
        return replace(old, service=NOTIFY, phone=None, contacts=old.contacts if old.service == NOTIFY else ())
    typed = _field(form, "phone")
    if typed:
        number = phone_number(typed)
        if number is None:
            raise Invalid("お電話番号は、市外局番から数字で入れてください。（例：09012345678）")
    elif old.service == WATCH and old.phone:
        number = old.phone  # left empty: keep the number already registered
    else:
        raise Invalid("見守りでは、お返事がないときに職員からお電話します。お電話番号を入れてください。")
    return replace(old, service=WATCH, phone=number, contacts=())


def pause_until(form: Mapping[str, str], today: int) -> int:
    """Field until (YYYY-MM-DD, a date input): the day checks start again, as a date ordinal."""
    text = _field(form, "until")
    try:
        day = date.fromisoformat(text).toordinal()
    except ValueError:
        raise Invalid("お休みを終える日（再開する日）を選んでください。") from None
    if day <= today:
        raise Invalid("再開する日は、明日以降の日を選んでください。過ぎた日や今日は選べません。")
    if day > today + PAUSE_AT_MOST:
        raise Invalid("お休みは1年までです。もっと長いときは、市の窓口にご相談ください。")
    return day


def without_contact(old: MemberSettings, keep) -> MemberSettings:
    """The settings with the contacts `keep(contact)` refuses removed (Invalid if none matched)."""
    contacts = tuple(c for c in old.contacts if keep(c))
    if len(contacts) == len(old.contacts):
        raise Invalid("その連絡先は見つかりませんでした。ページを開きなおして、もう一度お試しください。")
    return replace(old, contacts=contacts)
