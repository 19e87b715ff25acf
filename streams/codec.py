"""Records to JSON bytes and back: how events, states and effects travel on Kafka and rest in tables.

Compact on purpose (a tenant's table holds a state per member, rewritten at every step), and total:
load(dump(x)) == x for every record the engine makes.
"""
from __future__ import annotations

import json

from agents.group import GroupState
from agents.member import MemberState
from schemas.effects import Effect
from schemas.events import (AcceptInvite, Acknowledge, ChangeSettings, Enroll, Follow, GroupJoined, GroupLeft, Invite, Message, Ok,
                            OpenMyPage, Pause, Phone, Register, Resolve, Roster, Setup, Tick, Unfollow)
from schemas.settings import GroupSettings, MemberSettings, Schedule

# --- settings -------------------------------------------------------------------------------------


def settings_to_obj(s: MemberSettings | GroupSettings) -> dict:
    obj = {"id": s.id, **schedule_to_obj(s.schedule)}
    if isinstance(s, GroupSettings):
        obj["members"] = list(s.members)
    else:
        obj.update(service=s.service, phone=s.phone, contacts=list(s.contacts))
    return obj


def schedule_to_obj(sch: Schedule) -> dict:
    return {"interval": sch.interval, "minute": sch.minute, "zone": sch.zone, "weekday": sch.weekday}


def schedule_from_obj(obj: dict) -> Schedule:
    return Schedule(obj["interval"], obj["minute"], obj["zone"], obj["weekday"])


def settings_from_obj(obj: dict) -> MemberSettings | GroupSettings:
    schedule = schedule_from_obj(obj)
    if "members" in obj:
        return GroupSettings(obj["id"], schedule, tuple(obj["members"]))
    return MemberSettings(obj["id"], obj["service"], schedule, obj["phone"], tuple(obj["contacts"]))


# --- events ---------------------------------------------------------------------------------------

_SETTINGS = {Register: "register", ChangeSettings: "settings", Enroll: "enroll"}
_CONVERSATION = {Setup: "setup", Phone: "phone", Invite: "invite", AcceptInvite: "accept_invite",
                 GroupJoined: "group_joined", GroupLeft: "group_left", Roster: "roster", OpenMyPage: "mypage",
                 Acknowledge: "acknowledge"}
_CONVERSATION_BY_NAME = {name: kind for kind, name in _CONVERSATION.items()}
_PLAIN = {Ok: "ok", Message: "message", Resolve: "resolve", Unfollow: "unfollow", Follow: "follow"}
_PLAIN_BY_NAME = {name: kind for kind, name in _PLAIN.items()}


def event_to_obj(event) -> dict:
    kind = type(event)
    if kind is Tick:
        return {"type": "tick", "at": event.at}
    if kind is Register or kind is ChangeSettings or kind is Enroll:
        return {"type": _SETTINGS[kind], "at": event.at, "settings": settings_to_obj(event.settings)}
    if kind in _CONVERSATION:
        obj = {"type": _CONVERSATION[kind], "at": event.at}
        for name in event.__slots__[1:]:
            value = getattr(event, name)
            obj[name] = schedule_to_obj(value) if name == "schedule" else list(value) if isinstance(value, tuple) else value
        return obj
    if kind is Pause:
        return {"type": "pause", "at": event.at, "member": event.member, "until": event.until}
    obj = {"type": _PLAIN[kind], "at": event.at, "member": event.member}
    if getattr(event, "group", None) is not None:
        obj["group"] = event.group
    return obj


def event_from_obj(obj: dict):
    kind, at = obj["type"], obj["at"]
    if kind == "tick":
        return Tick(at)
    if kind == "register":
        return Register(at, settings_from_obj(obj["settings"]))
    if kind == "settings":
        return ChangeSettings(at, settings_from_obj(obj["settings"]))
    if kind == "enroll":
        return Enroll(at, settings_from_obj(obj["settings"]))
    if kind in _CONVERSATION_BY_NAME:
        cls = _CONVERSATION_BY_NAME[kind]
        values = [obj[name] for name in cls.__slots__[1:]]
        if cls is GroupJoined:
            values[1] = schedule_from_obj(values[1])
        elif cls is Roster:
            values[1:] = [tuple(v) for v in values[1:]]
        return cls(at, *values)
    if kind == "pause":
        return Pause(at, obj["member"], obj["until"])
    if kind in ("ok", "message"):
        return _PLAIN_BY_NAME[kind](at, obj["member"], obj.get("group"))
    if kind in _PLAIN_BY_NAME:
        return _PLAIN_BY_NAME[kind](at, obj["member"])
    raise ValueError(f"unknown event type {kind!r}")


# --- subject states -------------------------------------------------------------------------------


def state_to_obj(state) -> list:
    if type(state) is GroupState:
        return ["g", settings_to_obj(state.settings), state.anchor, sorted(state.roster), state.cycle,
                state.posted_at, sorted(state.confirmed), state.due, state.active]
    return ["m", settings_to_obj(state.settings), *state[1:]]


def state_from_obj(obj: list):
    if obj[0] == "g":
        _, settings, anchor, roster, cycle, posted_at, confirmed, due, *active = obj  # `active` came later
        return GroupState(settings_from_obj(settings), anchor, frozenset(roster), cycle, posted_at,
                          frozenset(confirmed), due, *active)
    return MemberState(settings_from_obj(obj[1]), *obj[2:])


# --- effects --------------------------------------------------------------------------------------


def effect_to_obj(effect: Effect) -> dict:
    obj = {"id": effect.id, "at": effect.at, "effect": effect.effect, "subject": effect.subject}
    for field in ("cycle", "to", "member", "members", "data"):
        value = getattr(effect, field)
        if value is not None:
            obj[field] = list(value) if isinstance(value, tuple) else value
    return obj


def effect_from_obj(obj: dict) -> Effect:
    to, members = obj.get("to"), obj.get("members")
    return Effect(obj["at"], obj["effect"], obj["subject"], obj.get("cycle"),
                  tuple(to) if to is not None else None, obj.get("member"),
                  tuple(members) if members is not None else None, obj.get("data"))


def dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def loads(data: bytes):
    return json.loads(data)
