"""Read a scenario file (YAML or JSON) into engine records, or say exactly what is wrong with it.

The format is a contract checked from outside the repository; see README.md.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from agents.clock import EARLIEST, LATEST, zone
from schemas.events import (Acknowledge, ChangeSettings, Follow, Help, Inbound, Message, NeedHelp, Ok, Pause, Register,
                            Resolve, RollCall, Safe, Unfollow)
from schemas.areas import Area
from schemas.settings import INTERVALS, NOTIFY, SERVICES, WATCH, WEEKDAYS, GroupSettings, MemberSettings, Schedule

GROUP_LIMIT = 500  # a LINE group holds at most 500 people


class ScenarioError(ValueError):
    """One problem, named by its place in the file: `members[2].phone: required for the watch service`."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(frozen=True)
class Scenario:
    zone: str
    start: int
    end: int
    registrations: tuple[Register, ...]
    events: tuple[Inbound | RollCall, ...]  # in the order they apply: by time, file order within a time
    areas: tuple[Area, ...] = ()


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(str(path), f"cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ScenarioError(str(path), "not UTF-8 text") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=_Loader)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ScenarioError(str(path), "not valid " + ("JSON" if path.suffix.lower() == ".json" else "YAML")
                            + ": " + " ".join(str(e).split())) from None
    except RecursionError:  # both parsers recurse per level
        raise ScenarioError(str(path), "nested too deeply to be a scenario") from None
    try:
        return parse(data)
    except RecursionError:
        raise ScenarioError(str(path), "nested too deeply to be a scenario") from None


class _Loader(yaml.SafeLoader):
    """YAML 1.1 would turn 2026-12-01T09:00:00+09:00 into a datetime and drop its offset: keep strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_MEMBER_KEYS = {"id", "service", "interval", "weekday", "time", "phone", "contacts", "area"}
_GROUP_KEYS = {"id", "members", "interval", "weekday", "time", "area"}
_AREA_KEYS = {"id", "name", "city", "region"}
_SETTING_KEYS = _MEMBER_KEYS - {"id"}
_EVENT_KEYS = {
    "ok": {"member", "group"},
    "message": {"member", "group"},
    "pause": {"member", "until"},
    "resolve": {"member"},
    "unfollow": {"member"},
    "follow": {"member"},
    "ack": {"member", "contact"},
    "help": {"member"},
    "settings": {"member"} | _SETTING_KEYS,
    "rollcall": {"id", "areas", "drill", "resend_after"},
    "safe": {"member", "group"},
    "need_help": {"member", "group"},
}


_EVENT_FIELDS = {kind: frozenset({"at", "type"} | keys) for kind, keys in _EVENT_KEYS.items()}


def parse(data) -> Scenario:
    top = _mapping(data, "", "the scenario", {"timezone", "start", "end", "areas", "members", "groups", "events"})
    tz = top.get("timezone", "Asia/Tokyo")
    if not isinstance(tz, str):
        raise ScenarioError("timezone", "must be a time zone name such as Asia/Tokyo")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScenarioError("timezone", f"unknown time zone {tz!r}") from None
    start = _instant(_required(top, "start", ""), "start", tz)
    end = _instant(_required(top, "end", ""), "end", tz)
    if end <= start:
        raise ScenarioError("end", "must be after start")

    areas: dict[str, Area] = {}
    for i, raw in enumerate(_list(top.get("areas", []), "areas")):
        area = _area(_mapping(raw, f"areas[{i}]", "an area", _AREA_KEYS), f"areas[{i}]")
        if area.id in areas:
            raise ScenarioError(f"areas[{i}].id", f"{area.id!r} appears twice")
        areas[area.id] = area
    members = {}
    for i, raw in enumerate(_list(top.get("members", []), "members")):
        settings = _member(_mapping(raw, f"members[{i}]", "a member", _MEMBER_KEYS), f"members[{i}]", tz)
        _known_area(settings.area, areas, f"members[{i}].area")
        if settings.id in members:
            raise ScenarioError(f"members[{i}].id", f"{settings.id!r} appears twice")
        members[settings.id] = settings
    groups = {}
    for i, raw in enumerate(_list(top.get("groups", []), "groups")):
        settings = _group(_mapping(raw, f"groups[{i}]", "a group", _GROUP_KEYS), f"groups[{i}]", tz)
        _known_area(settings.area, areas, f"groups[{i}].area")
        if settings.id in groups or settings.id in members:
            raise ScenarioError(f"groups[{i}].id", f"{settings.id!r} appears twice")
        groups[settings.id] = settings

    raw_events = _list(top.get("events", []), "events")
    timed = []
    instants: dict[str, int] = {}  # a month of a town shares a few thousand instants: each read once
    for i, raw in enumerate(raw_events):
        kind = raw.get("type") if type(raw) is dict else None
        if not (kind == "ok" and len(raw) == 3 and "member" in raw and "at" in raw) and not (
                kind in _EVENT_FIELDS and _EVENT_FIELDS[kind].issuperset(raw)):   # the message names the first problem
            where = f"events[{i}]"
            kind = _mapping(raw, where, "an event", None).get("type")
            if kind not in _EVENT_KEYS:
                raise ScenarioError(f"{where}.type", f"must be one of {', '.join(_EVENT_KEYS)} (got {kind!r})")
            _mapping(raw, where, "an event", _EVENT_FIELDS[kind])
        value = raw.get("at")
        at = instants.get(value) if type(value) is str else None
        if at is None:
            at = _instant(_required(raw, "at", f"events[{i}]"), f"events[{i}].at", tz)
            if type(value) is str:
                instants[value] = at
        if at < start:
            raise ScenarioError(f"events[{i}].at", "is before start")
        timed.append((at, i, kind, raw))
    timed.sort()  # by time, then file order (i is unique: nothing after it is compared)

    events = []
    current = dict(members)  # settings as they stand at each event, for `settings` changes
    rollcalls: set[str] = set()
    for at, i, kind, raw in timed:
        if kind == "rollcall":
            events.append(_rollcall(raw, f"events[{i}]", at, areas, rollcalls))
            continue
        who = raw.get("member")
        if type(who) is not str or not who.strip():
            who = _id(_required(raw, "member", f"events[{i}]"), f"events[{i}].member")
        if kind == "ok" and "group" not in raw and who in members:   # nearly every event: the short way
            events.append(Ok(at, who, None))
            continue
        where = f"events[{i}]"
        group = raw.get("group")
        if group is not None:
            group = _id(group, f"{where}.group")
            if group not in groups:
                raise ScenarioError(f"{where}.group", f"unknown group {group!r}")
        elif who not in members:
            raise ScenarioError(f"{where}.member", f"unknown member {who!r}")
        if kind == "ok":
            events.append(Ok(at, who, group))
        elif kind == "safe":
            events.append(Safe(at, who, group))
        elif kind == "need_help":
            events.append(NeedHelp(at, who, group))
        elif kind == "message":
            events.append(Message(at, who, group))
        elif kind == "pause":
            events.append(Pause(at, who, _date(_required(raw, "until", where), f"{where}.until")))
        elif kind == "resolve":
            events.append(Resolve(at, who))
        elif kind == "unfollow":
            events.append(Unfollow(at, who))
        elif kind == "follow":
            events.append(Follow(at, who))
        elif kind == "help":
            events.append(Help(at, who))
        elif kind == "ack":
            events.append(Acknowledge(at, who, _id(_required(raw, "contact", where), f"{where}.contact")))
        else:
            merged = _member(_merge(current[who], raw), where, tz)
            _known_area(merged.area, areas, f"{where}.area")
            current[who] = merged
            events.append(ChangeSettings(at, merged))
    events = [e for e in events if e.at < end]  # nothing at or after end is applied

    registrations = tuple(Register(start, s) for s in (*members.values(), *groups.values()))
    return Scenario(tz, start, end, registrations, tuple(events), tuple(areas.values()))


def _area(raw: dict, where: str) -> Area:
    area_id = _required(raw, "id", where)
    if not isinstance(area_id, str) or not area_id.strip():
        raise ScenarioError(f"{where}.id", f"must be a non-empty string (got {area_id!r})")
    name = raw.get("name", area_id)
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError(f"{where}.name", f"must be a non-empty string (got {name!r})")
    codes = []
    for key, digits in (("city", 7), ("region", 3)):
        code = raw.get(key)
        if code is not None and not (isinstance(code, str) and re.fullmatch(rf"[0-9]{{{digits}}}", code)):
            raise ScenarioError(f"{where}.{key}", f"must be the 気象庁's {digits}-digit code as a string "
                                                  f"(got {code!r})")
        codes.append(code)
    return Area(area_id, name, *codes)


def _known_area(area: str | None, areas: dict, where: str) -> None:
    if area is not None and area not in areas:
        raise ScenarioError(where, f"unknown area {area!r} (not in areas)")


RESEND_MINUTES = (1, 24 * 60)


def _rollcall(raw: dict, where: str, at: int, areas: dict, seen: set) -> RollCall:
    rid = _required(raw, "id", where)
    if not isinstance(rid, str) or not 0 < len(rid.strip()) <= 100:
        raise ScenarioError(f"{where}.id", f"must be a string of 1 to 100 characters (got {rid!r})")
    if rid in seen:
        raise ScenarioError(f"{where}.id", f"{rid!r}: the same roll-call starts only once")
    seen.add(rid)
    named = raw.get("areas")
    if named is not None:
        named = tuple(_list(named, f"{where}.areas"))
        for j, area in enumerate(named):
            _known_area(area if isinstance(area, str) else repr(area), areas, f"{where}.areas[{j}]")
        if not named:
            raise ScenarioError(f"{where}.areas", "names no area (leave it out for the whole tenant)")
    drill = raw.get("drill", False)
    if type(drill) is not bool:
        raise ScenarioError(f"{where}.drill", f"must be true or false (got {drill!r})")
    return RollCall(at, rid, named, drill, _minutes(raw.get("resend_after", "30m"), f"{where}.resend_after") * 60_000)


def _minutes(value, where: str) -> int:
    m = re.fullmatch(r"([0-9]{1,4})(m|h)", value.strip()) if isinstance(value, str) else None
    minutes = (int(m[1]) * (60 if m[2] == "h" else 1)) if m else None
    if minutes is None or not RESEND_MINUTES[0] <= minutes <= RESEND_MINUTES[1]:
        raise ScenarioError(where, f"must be a delay such as \"30m\" or \"2h\", from 1m to 24h (got {value!r})")
    return minutes


def _member(raw: dict, where: str, tz: str) -> MemberSettings:
    member_id = _id(_required(raw, "id", where), f"{where}.id")
    service = _required(raw, "service", where)
    if service not in SERVICES:
        raise ScenarioError(f"{where}.service", f"must be watch (見守り) or notify (安否通知), not {service!r}")
    phone = raw.get("phone")
    if service == WATCH:
        if phone is None:
            raise ScenarioError(f"{where}.phone", "required for the watch service (staff call this number)")
        if not isinstance(phone, str) or not re.fullmatch(r"\+?[0-9][0-9\- ]{5,19}", phone):
            raise ScenarioError(f"{where}.phone", "must be a phone number such as \"090-1234-5678\"")
    elif phone is not None:
        raise ScenarioError(f"{where}.phone", "only the watch service keeps a phone number")
    contacts = raw.get("contacts", [])
    if service != NOTIFY and contacts:
        raise ScenarioError(f"{where}.contacts", "only the notify service has contacts")
    contacts = tuple(_id(c, f"{where}.contacts[{j}]") for j, c in enumerate(_list(contacts, f"{where}.contacts")))
    if len(set(contacts)) != len(contacts):
        raise ScenarioError(f"{where}.contacts", "lists a contact twice")
    return MemberSettings(member_id, service, _schedule(raw, where, tz), phone, contacts, _area_of(raw, where))


def _group(raw: dict, where: str, tz: str) -> GroupSettings:
    group_id = _id(_required(raw, "id", where), f"{where}.id")
    roster = tuple(_id(m, f"{where}.members[{j}]")
                   for j, m in enumerate(_list(raw.get("members", []), f"{where}.members")))
    if len(set(roster)) != len(roster):
        raise ScenarioError(f"{where}.members", "lists a member twice")
    if len(roster) > GROUP_LIMIT:
        raise ScenarioError(f"{where}.members", f"a LINE group holds at most {GROUP_LIMIT} people ({len(roster)} given)")
    return GroupSettings(group_id, _schedule(raw, where, tz), roster, _area_of(raw, where))


def _area_of(raw: dict, where: str) -> str | None:
    area = raw.get("area")
    if area is not None and (not isinstance(area, str) or not area.strip()):
        raise ScenarioError(f"{where}.area", f"must be an area id (got {area!r})")
    return area


def _schedule(raw: dict, where: str, tz: str) -> Schedule:
    interval = _required(raw, "interval", where)
    if interval not in INTERVALS:
        raise ScenarioError(f"{where}.interval", f"must be one of {' '.join(INTERVALS)} (got {interval!r})")
    weekday = raw.get("weekday")
    if interval in ("weekly", "biweekly"):
        if weekday not in WEEKDAYS:
            raise ScenarioError(f"{where}.weekday", f"{interval} needs a weekday: one of {' '.join(WEEKDAYS)}")
        weekday = WEEKDAYS.index(weekday)
    elif weekday is not None:
        raise ScenarioError(f"{where}.weekday", "only weekly and biweekly schedules take a weekday")
    return Schedule(interval, _clock(_required(raw, "time", where), f"{where}.time"), tz, weekday)


def _clock(value, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return value  # YAML 1.1 reads an unquoted 9:30 as the base-60 number 570: minutes already
    if isinstance(value, str):
        m = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", value.strip())
        if m:
            return int(m[1]) * 60 + int(m[2])
    raise ScenarioError(where, f"must be a local time HH:MM such as \"09:00\" (got {value!r})")


def _instant(value, where: str, tz: str) -> int:
    if not isinstance(value, str):
        raise ScenarioError(where, f"must be an ISO 8601 time such as \"2026-12-01T09:00:00+09:00\" (got {value!r})")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ScenarioError(where, f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(tz))  # no offset given: the tenant's local time
    at = round(moment.timestamp() * 1000)
    if not EARLIEST <= at < LATEST:
        raise ScenarioError(where, f"must lie between 1970 and 2300 (got {value!r})")
    return at


def _date(value, where: str) -> int:
    try:
        day = date.fromisoformat(str(value).strip())
    except ValueError:
        raise ScenarioError(where, f"must be a date YYYY-MM-DD (got {value!r})") from None
    if not 1970 <= day.year < 2300:
        raise ScenarioError(where, f"must lie between 1970 and 2300 (got {value!r})")
    return day.toordinal()


def _id(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(where, f"must be a LINE id string (got {value!r})")
    return value


def _required(raw: dict, key: str, where: str):
    if raw.get(key) is None:
        raise ScenarioError(f"{where}.{key}" if where else key, "is required")
    return raw[key]


def _mapping(value, where: str, what: str, keys: set | None) -> dict:
    if not isinstance(value, dict):
        raise ScenarioError(where, f"must be {what}: a mapping of fields")
    if keys is not None:
        for key in value:
            if key not in keys:
                prefix = f"{where}." if where else ""
                raise ScenarioError(f"{prefix}{key}", f"unknown field (known: {', '.join(sorted(keys))})")
    return value


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise ScenarioError(where, "must be a list")
    return value


def _as_raw(s: MemberSettings) -> dict:
    raw = {"id": s.id, "service": s.service, "interval": s.schedule.interval, "time": s.schedule.minute}
    if s.schedule.weekday is not None:
        raw["weekday"] = WEEKDAYS[s.schedule.weekday]
    if s.phone is not None:
        raw["phone"] = s.phone
    if s.contacts:
        raw["contacts"] = list(s.contacts)
    if s.area is not None:
        raw["area"] = s.area
    return raw


def _merge(current: MemberSettings, change: dict) -> dict:
    """A settings change names only what changed; fields the new choice cannot keep are dropped."""
    raw = _as_raw(current)
    if change.get("service", current.service) != current.service:
        raw.pop("phone", None)
        raw.pop("contacts", None)
    if change.get("interval") not in (None, "weekly", "biweekly"):
        raw.pop("weekday", None)
    raw.update((k, v) for k, v in change.items() if k in _SETTING_KEYS)
    return raw
