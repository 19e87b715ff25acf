"""The roll-call (安否確認) after a disaster: one member's and one group's part, as pure steps.

    RollCall ──▶ rollcall_sent ──+delay──▶ rollcall_resent ──+delay──▶ rollcall_unanswered (listed)
                      │                         │                         │
                      └──── 「無事です」 ▶ rollcall_safe · 「助けが必要」 ▶ rollcall_need_help ◀┘

A member takes part when the roll-call names their area (or names none: the whole tenant) and they
follow the account; a paused member too (a pause stops daily checks, not a disaster). The answer is
the member's own, whatever their daily ladder is doing: it never needs an open check. It is also a
sign of life for that ladder (「無事です」) or a help request on it (「助けが必要」, rule 4), which
agents/member.py applies; in a drill 「助けが必要」 is the answer only (a drill calls no one: the
rich menu's 「助けてほしい」 still does). An answer counts for the member's current roll-call whichever card it
came from: a tap after the quake says how the person is after it. A later 「助けが必要」 replaces a
「無事です」 (someone can be hurt after saying so); a 「無事です」 after 「助けが必要」 changes nothing
here, as on the ladder, where only staff close a help. An answer after the listing still counts:
staff see the person leave the list. A new roll-call replaces the member's current one.

A group in the area gets one card; its members' answers there are tallied on it (each member once
per answer; 「助けが必要」 also reaches that member's own ladder, through the member's subject).
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from schemas import effects as fx
from schemas.effects import Effect
from schemas.events import RollCall, SetArea
from schemas.settings import GroupSettings, MemberSettings

SAFE, NEED_HELP = "safe", "need_help"


class Roll(NamedTuple):
    """A member's part in their current roll-call."""
    id: str
    drill: bool
    at: int                   # epoch ms: when it was sent
    delay: int                # ms from the card to the resend, and from the resend to the listing
    answer: str | None = None  # SAFE, NEED_HELP, or None
    due: int | None = None    # the resend, then the listing; None once answered or listed
    resent: bool = False


class GroupRoll(NamedTuple):
    """A group's card: who answered what in the group."""
    id: str
    drill: bool
    at: int
    safe: frozenset[str] = frozenset()
    need_help: frozenset[str] = frozenset()


def concerns(event: RollCall, area: str | None) -> bool:
    return event.areas is None or (area is not None and area in event.areas)


def _drill(drill: bool) -> str | None:
    return fx.DRILL if drill else None


def set_area(settings: MemberSettings | GroupSettings, event: SetArea, out: list[Effect]):
    """Staff set a member's or a group's area: its settings with it (unchanged if it was already so)."""
    if settings.area == event.area:
        return settings
    out.append(Effect(event.at, fx.AREA_SET, settings.id, area=event.area))
    return replace(settings, area=event.area)


# --- a member ----------------------------------------------------------------------------------


def start(current: Roll | None, event: RollCall, me: str, area: str | None, out: list[Effect]) -> Roll | None:
    """The member's part in `event`, if they are in it (the caller checked area and following)."""
    if current is not None and current.id == event.id:
        return current  # the same roll-call again (a replay): nothing more
    out.append(Effect(event.at, fx.ROLLCALL_SENT, me, data=_drill(event.drill), rollcall=event.id, area=area))
    return Roll(event.id, event.drill, event.at, event.resend_after, None, event.at + event.resend_after)


def fire(roll: Roll, me: str, area: str | None, following: bool, out: list[Effect]) -> Roll:
    """The roll-call's timer fell due (roll.due): the resend, or the listing."""
    at = roll.due
    if not roll.resent:
        if following:  # a blocked account cannot be sent to: it goes straight on to the listing
            out.append(Effect(at, fx.ROLLCALL_RESENT, me, data=_drill(roll.drill), rollcall=roll.id, area=area))
        return roll._replace(resent=True, due=at + roll.delay)
    out.append(Effect(at, fx.ROLLCALL_UNANSWERED, me, data=_drill(roll.drill), rollcall=roll.id, area=area))
    return roll._replace(due=None)


def answer(roll: Roll | None, at: int, said: str, me: str, area: str | None, out: list[Effect]) -> Roll | None:
    """「無事です」 (SAFE) or 「助けが必要」 (NEED_HELP) from the member."""
    if roll is None or roll.answer == NEED_HELP or roll.answer == said:
        return roll
    kind = fx.ROLLCALL_SAFE if said == SAFE else fx.ROLLCALL_NEED_HELP
    out.append(Effect(at, kind, me, data=_drill(roll.drill), rollcall=roll.id, area=area))
    return roll._replace(answer=said, due=None)


# --- a group -----------------------------------------------------------------------------------


def post(current: GroupRoll | None, event: RollCall, group: str, area: str | None,
         out: list[Effect]) -> GroupRoll | None:
    if current is not None and current.id == event.id:
        return current
    out.append(Effect(event.at, fx.GROUP_ROLLCALL_POSTED, group, data=_drill(event.drill), rollcall=event.id,
                      area=area))
    return GroupRoll(event.id, event.drill, event.at)


def tally(roll: GroupRoll | None, at: int, said: str, member: str, group: str, area: str | None,
          out: list[Effect]) -> GroupRoll | None:
    """A member's answer on the group's card."""
    if roll is None or member in roll.need_help or (said == SAFE and member in roll.safe):
        return roll
    kind = fx.GROUP_ROLLCALL_SAFE if said == SAFE else fx.GROUP_ROLLCALL_NEED_HELP
    out.append(Effect(at, kind, group, member=member, data=_drill(roll.drill), rollcall=roll.id, area=area))
    if said == SAFE:
        return roll._replace(safe=roll.safe | {member})
    return roll._replace(safe=roll.safe - {member}, need_help=roll.need_help | {member})
