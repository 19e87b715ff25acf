"""Records to JSON bytes and back: how events, states and effects travel on Kafka and rest in tables.

Compact on purpose (a tenant's table holds a state per member, rewritten at every step), and total:
load(dump(x)) == x for every record the engine makes. A phone number is sealed in the record
(streams/sealed.py): every table, topic and file that holds records holds it as ciphertext.
"""
from __future__ import annotations

import json

from agents.group import GroupState
from agents.member import MemberState
from agents.rollcall import GroupRoll, Roll
from schemas.effects import Effect
from schemas.events import (AcceptInvite, Acknowledge, AskHelp, AskWithdraw, CodeRefused, Withdraw, ChangeSettings, ContactNights, LeaveContact, StaffLinked, Enroll, Follow, GroupJoined, GroupLeft, Help, Invite, Message, NeedHelp, Ok,
                            OpenMyPage, Pause, Phone, Register, Resolve, RollCall, Roster, Safe, SetArea, Setup, Tick,
                            Unfollow)
from agents.clock import zone
from schemas.settings import INTERVALS, SERVICES, GroupSettings, MemberSettings, Schedule
from streams.sealed import SealError, seal, unseal

# --- settings -------------------------------------------------------------------------------------


def settings_to_obj(s: MemberSettings | GroupSettings) -> dict:
    obj = {"id": s.id, **schedule_to_obj(s.schedule)}
    if isinstance(s, GroupSettings):
        obj["members"] = list(s.members)
    else:
        obj.update(service=s.service, phone=seal(s.phone), contacts=list(s.contacts))
    if s.area is not None:  # most tenants have no areas: nothing written
        obj["area"] = s.area
    return obj


def schedule_to_obj(sch: Schedule) -> dict:
    return {"interval": sch.interval, "minute": sch.minute, "zone": sch.zone, "weekday": sch.weekday}


# A worker holds a state per member, decoded from JSON: residents share a few schedules and words
# ("1d", "notify", "idle"), so the decoder hands out one object for each instead of a million
# equal copies (~300 bytes a member).
_SCHEDULES: dict[tuple, Schedule] = {}
_SCHEDULES_KEPT = 100_000  # distinct schedules remembered at most
_WORDS = {word: word for word in (*INTERVALS, *SERVICES, "Asia/Tokyo", "idle", "sent", "resent", "escalated")}


def _word(value):
    return _WORDS.get(value, value) if type(value) is str else value


def schedule_from_obj(obj: dict) -> Schedule:
    fields = (obj["interval"], obj["minute"], obj["zone"], obj["weekday"])
    if not (type(fields[0]) is str and type(fields[1]) is int and type(fields[2]) is str
            and (fields[3] is None or type(fields[3]) is int)):
        return Schedule(*fields)  # not one a member can have (True equals 1 as a key): checked where used
    found = _SCHEDULES.get(fields)
    if found is None:
        found = Schedule(_word(fields[0]), fields[1], _word(fields[2]), fields[3])
        if len(_SCHEDULES) < _SCHEDULES_KEPT:
            _SCHEDULES[fields] = found
    return found


def settings_from_obj(obj: dict) -> MemberSettings | GroupSettings:
    schedule = schedule_from_obj(obj)
    if "members" in obj:
        return GroupSettings(obj["id"], schedule, tuple(obj["members"]), obj.get("area"))
    return MemberSettings(obj["id"], _word(obj["service"]), schedule, unseal(obj["phone"]), tuple(obj["contacts"]),
                          obj.get("area"))


# --- events ---------------------------------------------------------------------------------------

_SETTINGS = {Register: "register", ChangeSettings: "settings", Enroll: "enroll"}
_CONVERSATION = {Setup: "setup", Phone: "phone", Invite: "invite", AcceptInvite: "accept_invite",
                 GroupJoined: "group_joined", GroupLeft: "group_left", Roster: "roster", OpenMyPage: "mypage",
                 Acknowledge: "acknowledge", AskHelp: "ask_help", LeaveContact: "leave_contact",
                 ContactNights: "contact_nights", StaffLinked: "staff_linked", AskWithdraw: "ask_withdraw",
                 Withdraw: "withdraw", CodeRefused: "code_refused"}
_CONVERSATION_BY_NAME = {name: kind for kind, name in _CONVERSATION.items()}
_PLAIN = {Ok: "ok", Message: "message", Resolve: "resolve", Help: "help", Unfollow: "unfollow", Follow: "follow",
          Safe: "safe", NeedHelp: "need_help"}
_PLAIN_BY_NAME = {name: kind for kind, name in _PLAIN.items()}
_NAMES = {**_SETTINGS, **_CONVERSATION, **_PLAIN, Pause: "pause", Tick: "tick", RollCall: "rollcall",
          SetArea: "set_area"}


def event_name(event) -> str:
    """The `type` an event has in its record ("ok", "tick", …)."""
    return _NAMES[type(event)]


def event_to_obj(event) -> dict:
    kind = type(event)
    if kind is Tick:
        return {"type": "tick", "at": event.at}
    if kind is RollCall:
        return {"type": "rollcall", "at": event.at, "id": event.id,
                "areas": list(event.areas) if event.areas is not None else None, "drill": event.drill,
                "resend_after": event.resend_after}
    if kind is Register or kind is ChangeSettings or kind is Enroll:
        return {"type": _SETTINGS[kind], "at": event.at, "settings": settings_to_obj(event.settings)}
    if kind in _CONVERSATION:
        obj = {"type": _CONVERSATION[kind], "at": event.at}
        for name in event.__slots__[1:]:
            value = getattr(event, name)
            obj[name] = schedule_to_obj(value) if name == "schedule" else list(value) if isinstance(value, tuple) else value
        if kind is Phone:
            obj["number"] = seal(obj["number"])
        return obj
    if kind is Pause:
        return {"type": "pause", "at": event.at, "member": event.member, "until": event.until}
    if kind is SetArea:
        return {"type": "set_area", "at": event.at, "subject": event.subject, "area": event.area}
    obj = {"type": _PLAIN[kind], "at": event.at, "member": event.member}
    if getattr(event, "group", None) is not None:
        obj["group"] = event.group
    if kind is Resolve and event.cycle is not None:
        obj["cycle"] = event.cycle
    return obj


def event_from_obj(obj) -> object:
    """The event a record describes, or `Undecodable` saying which field is wrong (never its value).

    Strict, because a record comes from outside the engine (a topic, a table, an older version): a
    wrong type here would otherwise stop the engine somewhere deeper.
    """
    if not isinstance(obj, dict):
        raise Undecodable(f"event: expected an object, got {_json_type(obj)}")
    kind, at = obj.get("type"), obj.get("at")
    if not isinstance(kind, str):
        raise Undecodable("event.type: expected a string")
    if type(at) is not int:
        raise Undecodable(f"{kind}.at: expected an integer (epoch ms)")
    if kind == "tick":
        return Tick(at)
    if kind == "rollcall":
        areas, drill, resend = obj.get("areas"), obj.get("drill"), obj.get("resend_after")
        if type(drill) is not bool:
            raise Undecodable("rollcall.drill: expected true or false")
        if type(resend) is not int:
            raise Undecodable("rollcall.resend_after: expected an integer (ms)")
        return RollCall(at, _field(obj, kind, "id", str), None if areas is None else _ids(areas, "rollcall.areas"),
                        drill, resend)
    if kind in _SETTINGS_BY_NAME:
        return _SETTINGS_BY_NAME[kind](at, _settings(kind, _field(obj, kind, "settings", dict)))
    if kind in _CONVERSATION_BY_NAME:
        cls = _CONVERSATION_BY_NAME[kind]
        values = []
        for name in cls.__slots__[1:]:
            if name == "schedule":
                values.append(_schedule(f"{kind}.schedule", _field(obj, kind, name, dict)))
            elif name in ("joined", "left"):
                values.append(_ids(obj.get(name, []), f"{kind}.{name}"))
            elif name == "quiet":
                quiet = obj.get("quiet")
                if type(quiet) is not bool:
                    raise Undecodable(f"{kind}.quiet: expected true or false")
                values.append(quiet)
            elif name == "cycle":  # None: the open cycle (a scenario's ack)
                cycle = obj.get("cycle")
                if cycle is not None and type(cycle) is not int:
                    raise Undecodable(f"{kind}.cycle: expected an integer")
                values.append(cycle)
            elif name == "number":
                values.append(_opened(f"{kind}.number", _field(obj, kind, name, str)))
            else:
                values.append(_field(obj, kind, name, str))
        return cls(at, *values)
    if kind == "set_area":
        area = obj.get("area")
        if area is not None and type(area) is not str:
            raise Undecodable("set_area.area: expected a string or null")
        return SetArea(at, _field(obj, kind, "subject", str), area)
    if kind == "pause":
        return Pause(at, _field(obj, kind, "member", str), _field(obj, kind, "until", int))
    if kind in ("ok", "message", "safe", "need_help"):
        group = obj.get("group")
        if group is not None and not isinstance(group, str):
            raise Undecodable(f"{kind}.group: expected a string")
        return _PLAIN_BY_NAME[kind](at, _field(obj, kind, "member", str), group)
    if kind == "resolve":
        cycle = obj.get("cycle")
        if cycle is not None and type(cycle) is not int:
            raise Undecodable("resolve.cycle: expected an integer")
        return Resolve(at, _field(obj, kind, "member", str), cycle)
    if kind in _PLAIN_BY_NAME:
        return _PLAIN_BY_NAME[kind](at, _field(obj, kind, "member", str))
    raise Undecodable("event.type: not a type this engine knows")


class Undecodable(ValueError):
    """A record that is not one of ours. `str(error)` names the field and the problem, never a value."""


_SETTINGS_BY_NAME = {name: kind for kind, name in _SETTINGS.items()}


def _field(obj: dict, where: str, name: str, kind: type):
    value = obj.get(name)
    if type(value) is not kind:
        raise Undecodable(f"{where}.{name}: expected {'an integer' if kind is int else 'a ' + _TYPE_WORDS[kind]}")
    return value


_TYPE_WORDS = {str: "string", dict: "object", list: "list"}


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _ids(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Undecodable(f"{where}: expected a list of strings")
    return tuple(value)


def _schedule(where: str, obj: dict) -> Schedule:
    interval, minute, zone, weekday = (obj.get(k) for k in ("interval", "minute", "zone", "weekday"))
    if interval not in INTERVALS:
        raise Undecodable(f"{where}.interval: expected one of {', '.join(INTERVALS)}")
    if type(minute) is not int or not 0 <= minute < 24 * 60:
        raise Undecodable(f"{where}.minute: expected an integer from 0 to 1439")
    if not isinstance(zone, str) or not known_zone(zone):
        raise Undecodable(f"{where}.zone: not a time zone of the tz database")
    if weekday is not None and (type(weekday) is not int or not 0 <= weekday < 7):
        raise Undecodable(f"{where}.weekday: expected null or an integer from 0 (Monday) to 6")
    return Schedule(interval, minute, zone, weekday)


def _settings(where: str, obj: dict) -> MemberSettings | GroupSettings:
    where += ".settings"
    subject = _field(obj, where, "id", str)
    schedule = _schedule(where, obj)
    area = obj.get("area")
    if area is not None and not isinstance(area, str):
        raise Undecodable(f"{where}.area: expected null or a string")
    if "members" in obj:
        return GroupSettings(subject, schedule, _ids(obj["members"], f"{where}.members"), area)
    service, phone = obj.get("service"), obj.get("phone")
    if service not in SERVICES:
        raise Undecodable(f"{where}.service: expected one of {', '.join(SERVICES)}")
    if phone is not None and not isinstance(phone, str):
        raise Undecodable(f"{where}.phone: expected null or a string")
    return MemberSettings(subject, service, schedule, _opened(f"{where}.phone", phone), _ids(obj.get("contacts", []), f"{where}.contacts"), area)


def _opened(where: str, value: str | None) -> str | None:
    try:
        return unseal(value)
    except SealError as e:
        raise Undecodable(f"{where}: {e}") from None


def known_zone(name: str) -> bool:
    """True if `name` is a zone of the tz database this machine has (a bad one would stop a step)."""
    try:
        zone(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError; "../x" a ValueError
        return False
    return True


# --- subject states -------------------------------------------------------------------------------


def state_to_obj(state) -> list:
    if type(state) is GroupState:
        obj = ["g", settings_to_obj(state.settings), state.anchor, sorted(state.roster), state.cycle,
               state.posted_at, sorted(state.confirmed), state.due, state.active, state.last_at]
        if state.roll is not None:
            roll = state.roll
            obj.append([roll.id, roll.drill, roll.at, sorted(roll.safe), sorted(roll.need_help)])
        return obj
    if state.roll is None:  # written as before roll-calls, so that an older worker can still read it
        return ["m", settings_to_obj(state.settings), *state[1:-1]]
    return ["m", settings_to_obj(state.settings), *state[1:]]


def state_from_obj(obj: list):
    if obj[0] == "g":
        _, settings, anchor, roster, cycle, posted_at, confirmed, due, *later = obj  # `active`, `last_at`, `roll` came later
        if len(later) > 2:
            rid, drill, at, safe, need_help = later[2]
            later[2] = GroupRoll(rid, drill, at, frozenset(safe), frozenset(need_help))
        return GroupState(settings_from_obj(settings), anchor, frozenset(roster), cycle, posted_at,
                          frozenset(confirmed), due, *later)
    fields = obj[2:]  # told, acked, called, held, quiet, roll came later: an older record has fewer
    if len(fields) > 2:
        fields[2] = _word(fields[2])  # the phase
    for i in (9, 10, 13):  # told, acked, quiet: tuples
        if len(fields) > i and fields[i] is not None:
            fields[i] = tuple(fields[i])
    if len(fields) > 14 and fields[14] is not None:
        fields[14] = Roll(*fields[14])
    return MemberState(settings_from_obj(obj[1]), *fields)


# --- effects --------------------------------------------------------------------------------------


def effect_to_obj(effect: Effect) -> dict:
    obj = {"id": effect.id, "at": effect.at, "effect": effect.effect, "subject": effect.subject}
    for field in ("cycle", "to", "member", "members", "data", "rollcall", "area"):
        value = getattr(effect, field)
        if value is not None:
            obj[field] = list(value) if isinstance(value, tuple) else value
    return obj


def effect_from_obj(obj: dict) -> Effect:
    to, members = obj.get("to"), obj.get("members")
    return Effect(obj["at"], obj["effect"], obj["subject"], obj.get("cycle"),
                  tuple(to) if to is not None else None, obj.get("member"),
                  tuple(members) if members is not None else None, obj.get("data"), obj.get("rollcall"),
                  obj.get("area"))


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # made once: json.dumps makes one a call


def dumps(obj) -> bytes:
    return _ENCODER.encode(obj).encode()


_SCAN = json.JSONDecoder().scan_once  # what json.loads runs, without its checks around it


def loads(data: bytes):
    """The JSON value `data` holds (UTF-8), as `json.loads` reads it, a third quicker: it is what
    each inbound record and, at a worker's start, each saved state costs first."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except Exception:
        pass
    return json.loads(data)  # not plain JSON text: json's own answer, or its error saying why
