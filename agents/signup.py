"""Sign-up in LINE, as data: the choices a resident has made so far, and the question that comes next.

The conversation keeps no state on the server. Each quick-reply button carries every choice made so
far in its postback data ("action=setup&s=notify&i=1d"), so the answer to a button is a pure
function of that button: a lost or repeated tap just asks the same question again, and nothing about
a resident is stored until they press 「登録する」.

    service ──▶ interval ──▶ (weekday, for weekly and biweekly) ──▶ time ──▶ confirm ──▶ Enroll
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from schemas.settings import INTERVALS, SERVICES, WEEKDAYS, MemberSettings, Schedule

SERVICE, INTERVAL, WEEKDAY, TIME, CONFIRM = "service", "interval", "weekday", "time", "confirm"
_KEYS = {"s", "i", "w", "t"}
WEEKLY = ("weekly", "biweekly")


@dataclass(frozen=True, slots=True)
class Choices:
    service: str | None = None
    interval: str | None = None
    weekday: str | None = None     # "mon" … "sun", only for weekly and biweekly
    minute: int | None = None      # minutes after local midnight

    def with_(self, **changes) -> "Choices":
        values = {"service": self.service, "interval": self.interval, "weekday": self.weekday,
                  "minute": self.minute, **changes}
        if values["interval"] not in WEEKLY:
            values["weekday"] = None
        return Choices(**values)


def parse(data: str) -> Choices:
    """The choices in postback data (other keys, such as `action`, are ignored). ValueError names
    the bad part; the message quotes only our own short keys, never free text."""
    raw = parse_qs(data, keep_blank_values=True)
    values = {k: v[-1] for k, v in raw.items() if k in _KEYS}
    service, interval, weekday, minute = values.get("s"), values.get("i"), values.get("w"), values.get("t")
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
    return Choices(service, interval, weekday, minute).with_()


def encode(choices: Choices) -> str:
    """The query-string form of the choices made (the inverse of `parse`)."""
    pairs = [("s", choices.service), ("i", choices.interval), ("w", choices.weekday),
             ("t", None if choices.minute is None else str(choices.minute))]
    return urlencode([(k, v) for k, v in pairs if v is not None])


def next_question(choices: Choices) -> str:
    if choices.service is None:
        return SERVICE
    if choices.interval is None:
        return INTERVAL
    if choices.interval in WEEKLY and choices.weekday is None:
        return WEEKDAY
    if choices.minute is None:
        return TIME
    return CONFIRM


def settings(member: str, choices: Choices, zone: str) -> MemberSettings:
    """The member's settings once every choice is made (ValueError if one is missing)."""
    if next_question(choices) != CONFIRM:
        raise ValueError(f"sign-up is not complete: {next_question(choices)} is missing")
    weekday = WEEKDAYS.index(choices.weekday) if choices.weekday is not None else None
    return MemberSettings(member, choices.service, Schedule(choices.interval, choices.minute, zone, weekday))


def of_settings(s: MemberSettings) -> Choices:
    sch = s.schedule
    weekday = WEEKDAYS[sch.weekday] if sch.weekday is not None else None
    return Choices(s.service, sch.interval, weekday, sch.minute)
