"""Sign-up in LINE, as data: the choices a resident has made so far, and the question that comes next.

The conversation keeps no state on the server. Each quick-reply button carries every choice made so
far in its postback data ("action=setup&s=notify&i=1d"), so the answer to a button is a pure
function of that button: a lost or repeated tap just asks the same question again, and nothing about
a resident is stored until they press 「登録する」.

    service ──▶ interval ──▶ (weekday, for weekly and biweekly) ──▶ time ──▶ (area) ──▶ confirm ──▶ Enroll

The area (お住まいの地区, for roll-calls after a disaster) is asked only where the tenant has a few
areas to offer as quick replies (`areas`: the caller says so); 「選ばない」 is an answer too (NO_AREA).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from schemas.settings import INTERVALS, SERVICES, WEEKDAYS, MemberSettings, Schedule

SERVICE, INTERVAL, WEEKDAY, TIME, AREA, CONFIRM = "service", "interval", "weekday", "time", "area", "confirm"
_KEYS = {"s", "i", "w", "t", "a"}
NO_AREA = "-"            # the answer 「選ばない」
_AREA_ID = re.compile(r"[^\s,&=]{1,40}")
WEEKLY = ("weekly", "biweekly")


@dataclass(frozen=True, slots=True)
class Choices:
    service: str | None = None
    interval: str | None = None
    weekday: str | None = None     # "mon" … "sun", only for weekly and biweekly
    minute: int | None = None      # minutes after local midnight
    area: str | None = None        # an area id of the tenant's, or NO_AREA

    def with_(self, **changes) -> "Choices":
        values = {"service": self.service, "interval": self.interval, "weekday": self.weekday,
                  "minute": self.minute, "area": self.area, **changes}
        if values["interval"] not in WEEKLY:
            values["weekday"] = None
        return Choices(**values)


def parse(data: str) -> Choices:
    """The choices in postback data (other keys, such as `action`, are ignored). ValueError names
    the bad part; the message quotes only our own short keys, never free text."""
    raw = parse_qs(data, keep_blank_values=True)
    values = {k: v[-1] for k, v in raw.items() if k in _KEYS}
    service, interval, weekday, minute = values.get("s"), values.get("i"), values.get("w"), values.get("t")
    area = values.get("a")
    if area is not None and area != NO_AREA and not _AREA_ID.fullmatch(area):
        raise ValueError("a: not an area id")
    if service is not None and service not in SERVICES:
        raise ValueError("s: not a service")
    if interval is not None and interval not in INTERVALS:
        raise ValueError("i: not an interval")
    if weekday is not None and weekday not in WEEKDAYS:
        raise ValueError("w: not a weekday")
    if minute is not None:
        if not (minute.isdigit() and len(minute) <= 4 and 0 <= int(minute) < 24 * 60):
            raise ValueError("t: not a time of day in minutes")
        minute = int(minute)
    return Choices(service, interval, weekday, minute, area).with_()


def encode(choices: Choices) -> str:
    """The query-string form of the choices made (the inverse of `parse`)."""
    pairs = [("s", choices.service), ("i", choices.interval), ("w", choices.weekday),
             ("t", None if choices.minute is None else str(choices.minute)), ("a", choices.area)]
    return urlencode([(k, v) for k, v in pairs if v is not None])


def next_question(choices: Choices, areas: bool = False) -> str:
    """`areas`: the tenant offers its areas here (as quick replies)."""
    if choices.service is None:
        return SERVICE
    if choices.interval is None:
        return INTERVAL
    if choices.interval in WEEKLY and choices.weekday is None:
        return WEEKDAY
    if choices.minute is None:
        return TIME
    if areas and choices.area is None:
        return AREA
    return CONFIRM


def settings(member: str, choices: Choices, zone: str) -> MemberSettings:
    """The member's settings once every choice is made (ValueError if one is missing)."""
    if next_question(choices) != CONFIRM:
        raise ValueError(f"sign-up is not complete: {next_question(choices)} is missing")
    weekday = WEEKDAYS.index(choices.weekday) if choices.weekday is not None else None
    area = choices.area if choices.area != NO_AREA else None
    return MemberSettings(member, choices.service, Schedule(choices.interval, choices.minute, zone, weekday),
                          area=area)


def of_settings(s: MemberSettings) -> Choices:
    sch = s.schedule
    weekday = WEEKDAYS[sch.weekday] if sch.weekday is not None else None
    return Choices(s.service, sch.interval, weekday, sch.minute)
