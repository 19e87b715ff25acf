"""One step for any subject: members (watch / notify) and groups share the same shape."""
from __future__ import annotations

from agents import group, member
from schemas.effects import Effect
from schemas import effects as fx
from schemas.events import (AcceptInvite, ChangeSettings, Enroll, Event, Follow, GroupJoined, GroupLeft, Message, Ok,
                            OpenMyPage, Register, Roster, Setup)
from schemas.settings import GroupSettings

State = member.MemberState | group.GroupState


def step(state: State | None, event: Event) -> tuple[State | None, list[Effect]]:
    """step(state, event) -> (state, effects). With `state` None, see `start`."""
    if state is None:
        return start(event)
    if type(state) is member.MemberState:
        return member.step(state, event)
    return group.step(state, event)


def start(event: Event) -> tuple[State | None, list[Effect]]:
    """An event for a subject that does not exist (yet): (its first state or None, effects).

    Only a registration, a sign-up or the account's arrival in a group creates a subject. A new
    friend is welcomed, and the sign-up questions are answered, without storing anything: until the
    resident confirms, anpi keeps nothing about them.
    """
    kind = type(event)
    if kind is Register:
        module = group if isinstance(event.settings, GroupSettings) else member
        return module.register(event), []
    if kind is Enroll:
        return member.enroll(event)
    if kind is GroupJoined:
        return group.joined(event)
    if kind is Follow or kind is OpenMyPage:  # not signed up yet: how to begin
        return None, [Effect(event.at, fx.WELCOME, event.member)]
    if kind is Setup:
        return None, [member.setup_prompt(event)]
    if kind is AcceptInvite:
        return None, [member.refused(event)]
    return None, []  # an OK, a message, a pause … of someone never registered: nothing to act on


def addressed(event: Event) -> tuple[str, ...]:
    """The subjects an inbound event concerns, in the order to apply it.

    An OK or message in a group answers the group and is also a sign of life for the person's own
    service. In the Kafka runtime each target lives on the partition of its own key, so ingress
    fans the event out by this list.
    """
    kind = type(event)
    if kind is Register or kind is ChangeSettings or kind is Enroll:
        return (event.settings.id,)
    if kind is GroupJoined or kind is GroupLeft or kind is Roster:
        return (event.group,)
    if (kind is Ok or kind is Message) and event.group is not None:
        return (event.group, event.member)
    return (event.member,)
