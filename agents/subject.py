"""One step for any subject: members (watch / notify) and groups share the same shape."""
from __future__ import annotations

from agents import group, member
from agents.clock import EARLIEST, LATEST
from schemas.effects import Effect
from schemas import effects as fx
from schemas.events import (AcceptInvite, Acknowledge, AskHelp, AskWithdraw, CodeRefused, Withdraw, ChangeSettings, ContactNights, LeaveContact, Enroll, Event, Follow, GroupJoined, GroupLeft, StaffLinked,
                            Help, Invite, Message, NeedHelp, Ok, OpenMyPage, Pause, Phone, Register, Resolve, RollCall,
                            Roster, Safe, SetArea, Setup, Tick, Unfollow)
from schemas.settings import GroupSettings, MemberSettings

State = member.MemberState | group.GroupState


class Refused(Exception):
    """An event the core will not apply to this subject (wrong kind of subject, a time out of range,
    a subject it is not addressed to). `str(refusal)` is the reason: event and subject kinds only,
    never an id or a value. The shells quarantine the event and go on with the next one."""


# what each kind of subject takes (everything else is refused, never half applied)
MEMBER_EVENTS = frozenset({Tick, Register, ChangeSettings, Ok, Message, Pause, Resolve, Help, Unfollow, Follow, Setup,
                           Enroll, Phone, Invite, AcceptInvite, Acknowledge, OpenMyPage, AskHelp, LeaveContact,
                           ContactNights, StaffLinked, RollCall, Safe, NeedHelp, SetArea, AskWithdraw, Withdraw,
                           CodeRefused})
GROUP_EVENTS = frozenset({Tick, Register, Ok, Message, GroupJoined, GroupLeft, Roster, RollCall, Safe, NeedHelp,
                          SetArea})
BROADCAST = frozenset({Tick, RollCall})  # addressed to no one subject: each partition applies them to all its own
_TAKES = {member.MemberState: MEMBER_EVENTS, group.GroupState: GROUP_EVENTS}
_ORDINALS = (719163, 839693)  # [1970-01-01, 2300-01-01) as date ordinals: what a pause may name


def step(state: State | None, event: Event, subject: str | None = None) -> tuple[State | None, list[Effect]]:
    """step(state, event) -> (state, effects), or `Refused`. With `state` None, see `start`; a
    state of None after the step (a Withdraw) means the subject is gone: the shells delete it.
    `subject`: the subject stepped (default: the state's own, or the first the event addresses)."""
    if subject is None:
        subject = state.settings.id if state is not None else next(iter(addressed(event)), "")
    admit(subject, state, event)
    if state is None:
        return start(event)
    if type(state) is member.MemberState:
        return member.step(state, event)
    return group.step(state, event)


def admit(subject: str, state: State | None, event: Event) -> None:
    """Raise `Refused` unless `event` may step `subject`, whose state is `state` (None: unknown).

    What the core relies on and a bad record could break: a known event type, a time the calendar
    can place slots around, the event addressed to this subject, a state of this subject, and an
    event this kind of subject takes. Cheap: it runs before every step.
    """
    kind = type(event)
    if kind not in MEMBER_EVENTS and kind not in GROUP_EVENTS:
        raise Refused(f"not an event: {kind.__name__}")
    at = event.at
    if type(at) is not int or not EARLIEST <= at < LATEST:
        raise Refused(f"{kind.__name__}: time out of range (1970 to 2300, epoch ms)")
    if kind not in BROADCAST and subject not in addressed(event):
        raise Refused(f"{kind.__name__}: not addressed to the subject it was applied to")
    if (kind is ChangeSettings or kind is Enroll) and type(event.settings) is not MemberSettings:
        raise Refused(f"{kind.__name__}: a group's settings for a member")
    if kind is Pause and (type(event.until) is not int or not _ORDINALS[0] <= event.until < _ORDINALS[1]):
        raise Refused("Pause: date out of range")
    if kind is RollCall:
        _admit_rollcall(event)
    if kind is SetArea and event.area is not None and (type(event.area) is not str or not 0 < len(event.area) <= AREA_MAX):
        raise Refused(f"SetArea: area must be null or a string of 1 to {AREA_MAX} characters")
    if state is None:
        return
    takes = _TAKES.get(type(state))
    if takes is None or state.settings.id != subject:
        raise Refused(f"{kind.__name__}: the stored state is not this subject's")
    if kind not in takes:
        raise Refused(f"{kind.__name__}: does not apply to a {'member' if takes is MEMBER_EVENTS else 'group'}")


ROLLCALL_ID_MAX = 100
AREA_MAX = 100
RESEND_RANGE = (60_000, 24 * 3_600_000)  # a minute to a day: a resend sooner is noise, later is no roll-call


def _admit_rollcall(event: RollCall) -> None:
    if type(event.id) is not str or not 0 < len(event.id) <= ROLLCALL_ID_MAX:
        raise Refused(f"RollCall: id must be a string of 1 to {ROLLCALL_ID_MAX} characters")
    areas = event.areas
    if areas is not None and (type(areas) is not tuple or not all(type(a) is str for a in areas)):
        raise Refused("RollCall: areas must be null or a list of area ids")
    if type(event.drill) is not bool:
        raise Refused("RollCall: drill must be true or false")
    if type(event.resend_after) is not int or not RESEND_RANGE[0] <= event.resend_after <= RESEND_RANGE[1]:
        raise Refused("RollCall: resend_after must be from 1 minute to 24 hours (ms)")


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
    if kind is StaffLinked:  # staff need not be residents
        return None, [member.staff_linked(event)]
    if kind is CodeRefused:  # told, and nothing kept
        return None, [Effect(event.at, fx.CODE_REFUSED, event.member)]
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
    if kind is Tick or kind is RollCall:
        return ()
    if kind is SetArea:
        return (event.subject,)
    if (kind is Ok or kind is Message or kind is Safe or kind is NeedHelp) and event.group is not None:
        return (event.group, event.member)
    return (event.member,)
