"""つながり (group): the check is posted in a LINE group; the group looks after its own.

    idle ──slot──▶ posted ──+23h──▶ group_unconfirmed (if anyone is missing) ──▶ idle
                     └── last member's OK ──▶ idle

The roster is the configured members plus everyone seen in the group: listing a group's members
needs a verified account on LINE, so the engine learns them from OKs, messages and LINE's
memberJoined / memberLeft. A group starts when the account is invited into it (GroupJoined) and
stops when the account is removed (GroupLeft); a later invitation starts it again.

As for a member (agents/member.py), an event stamped before the latest instant already applied to
the group (`last_at`) acts at that instant: the group's clock never runs backwards.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from agents.clock import HOUR
from agents import rollcall, signup
from agents.schedule import anchor, next_slot
from schemas import effects as fx
from schemas.effects import Effect
from schemas.events import GroupJoined, GroupLeft, Message, NeedHelp, Ok, Register, RollCall, Roster, Safe, SetArea, Tick
from schemas.settings import WEEKDAYS, GroupSettings

UNCONFIRMED_AFTER = 23 * HOUR


class GroupState(NamedTuple):
    settings: GroupSettings
    anchor: int                             # local date ordinal of slot 0
    roster: frozenset[str]
    cycle: int = 0
    posted_at: int | None = None            # set while a check is open
    confirmed: frozenset[str] = frozenset()
    due: int | None = None                  # the next post (idle) or the unconfirmed call (open)
    active: bool = True                     # False once the account has left the group
    last_at: int = 0                        # epoch ms: the latest instant applied (a late event acts at it)
    roll: rollcall.GroupRoll | None = None  # the card of the current roll-call, and its answers


def register(event: Register) -> GroupState:
    s = event.settings
    lattice = anchor(s.schedule, event.at)
    return GroupState(s, lattice, frozenset(s.members), due=next_slot(s.schedule, lattice, event.at, strict=False),
                      last_at=event.at)


def step(state: GroupState, event) -> tuple[GroupState, list[Effect]]:
    state, out = _step(state, event)
    return (state._replace(last_at=event.at) if state.last_at < event.at else state), out


def _step(state: GroupState, event) -> tuple[GroupState, list[Effect]]:
    out: list[Effect] = []
    if event.at < state.last_at:  # late: it acts at the group's own time
        event = replace(event, at=state.last_at)
    if type(event) is Tick:
        return _advance(state, event.at, True, out), out
    state = _advance(state, event.at, False, out)
    if type(event) is Ok:
        state = _ok(state, event, out)
    elif type(event) is Message:
        state = _seen(state, event.member)
    elif type(event) is Register:
        pass  # a replayed registration (after a crash) changes nothing; changes come as settings
    elif type(event) is GroupJoined:
        state = _rejoin(state, event, out)
    elif type(event) is GroupLeft:
        state = state._replace(posted_at=None, confirmed=frozenset(), due=None, active=False)
    elif type(event) is Roster:
        state = _roster(state, event, out)
    elif type(event) is RollCall:
        if state.active and rollcall.concerns(event, state.settings.area):
            state = state._replace(roll=rollcall.post(state.roll, event, state.settings.id, state.settings.area, out))
    elif type(event) is Safe or type(event) is NeedHelp:
        said = rollcall.SAFE if type(event) is Safe else rollcall.NEED_HELP
        state = _seen(state, event.member)
        state = state._replace(roll=rollcall.tally(state.roll, event.at, said, event.member, state.settings.id,
                                                   state.settings.area, out))
    elif type(event) is SetArea:
        state = state._replace(settings=rollcall.set_area(state.settings, event, out))
    else:
        raise TypeError(f"group step: unknown event {event!r}")
    return state, out


def _advance(state: GroupState, now: int, inclusive: bool, out: list[Effect]) -> GroupState:
    while state.due is not None and (state.due <= now if inclusive else state.due < now):
        state = _fire(state, out)
    return state


def _fire(state: GroupState, out: list[Effect]) -> GroupState:
    at, me = state.due, state.settings.id
    if state.posted_at is None:
        cycle = state.cycle + 1
        out.append(Effect(at, fx.GROUP_CHECK_POSTED, me, cycle))
        return state._replace(cycle=cycle, posted_at=at, confirmed=frozenset(), due=at + UNCONFIRMED_AFTER)
    missing = state.roster - state.confirmed
    if missing:
        out.append(Effect(at, fx.GROUP_UNCONFIRMED, me, state.cycle, members=tuple(sorted(missing))))
    return _close(state, at)


def _ok(state: GroupState, event: Ok, out: list[Effect]) -> GroupState:
    state = _seen(state, event.member)
    if state.posted_at is None or event.member in state.confirmed:
        return state
    out.append(Effect(event.at, fx.GROUP_CONFIRMED, state.settings.id, state.cycle, member=event.member))
    confirmed = state.confirmed | {event.member}
    state = state._replace(confirmed=confirmed)
    return _close(state, event.at) if state.roster <= confirmed else state


def _seen(state: GroupState, member: str) -> GroupState:
    if member in state.roster:
        return state
    return state._replace(roster=state.roster | {member})


def _close(state: GroupState, at: int) -> GroupState:
    due = next_slot(state.settings.schedule, state.anchor, at, strict=True)
    return state._replace(posted_at=None, confirmed=frozenset(), due=due)


# --- joining and leaving ---------------------------------------------------------------------------


def joined(event: GroupJoined) -> tuple[GroupState, list[Effect]]:
    """The account was invited into a group it does not know: つながり starts, and says how it works."""
    state = register(Register(event.at, GroupSettings(event.group, event.schedule)))
    return state, [_welcome(state, event.at)]


def _welcome(state: GroupState, at: int) -> Effect:
    sch = state.settings.schedule
    weekday = WEEKDAYS[sch.weekday] if sch.weekday is not None else None
    return Effect(at, fx.GROUP_WELCOME, state.settings.id,
                  data=signup.encode(signup.Choices(None, sch.interval, weekday, sch.minute)))


def _rejoin(state: GroupState, event: GroupJoined, out: list[Effect]) -> GroupState:
    out.append(_welcome(state, event.at))
    if state.active:
        return state  # LINE said join again without a leave we saw: carry on as we were
    due = next_slot(state.settings.schedule, state.anchor, event.at, strict=False)
    return state._replace(active=True, due=due)


def _roster(state: GroupState, event: Roster, out: list[Effect]) -> GroupState:
    left = frozenset(event.left)
    roster = (state.roster | frozenset(event.joined)) - left
    state = state._replace(roster=roster, confirmed=state.confirmed - left)
    if state.posted_at is not None and state.confirmed and roster <= state.confirmed:
        return _close(state, event.at)  # the last one who had not answered left: nobody is missing
    return state
