"""見守り (watch) and 安否通知 (notify): one resident's ladder, as a pure step function.

    idle ──slot──▶ sent ──+24h──▶ resent ──+3h──▶ escalated ──▶ (a sign of life, or staff resolve)
      ▲              │              │              │
      └── confirmed ◀┴──────────────┘              └─ resolved_after_escalation (+ all_clear)

Nobody is left waiting: an escalated cycle ends only when a person has been reached.

    escalated by contacts_notified ──+3h, nobody 「見に行きます」──▶ staff_call (unclaimed)
    any staff_call at S ──▶ staff_reminder n at S + 6h × n, until the cycle closes
    help (「助けてほしい」) ──▶ help_requested and, at once, staff_call (help) or contacts_notified
    a 見守り resident unfollows ──▶ staff_call (unfollowed): staff must phone them
    a cycle that told contacts closes ──▶ all_clear to the same contacts
    「退会」 ──▶ withdraw_confirm; confirmed (Withdraw) ──▶ withdrawn, and no state at all: checks stop,
    contacts are released, the shells delete the state and the read sides forget the resident

A roll-call after a disaster (agents/rollcall.py) runs beside the ladder, on a timer of its own
(`roll`); its 「無事です」 is a sign of life here and its 「助けが必要」 a help.

`held`: from a help, or a 見守り resident's unfollow, the cycle closes only by `resolve` (a tap on
OK cannot tell staff that the person who asked for help is safe). A cycle has at most one staff call
(`called`: its instant, which the reminders count from). `told`: who the cycle's contacts_notified
went to; only they may acknowledge, and the all clear goes to them. `quiet`: the contacts who chose
quiet nights; contacts_notified names them in its data, and the sender holds their notice to 7:00
(agents/nights.py). The ladder does not wait for it.

Every event first catches the member's timers up to its instant (strictly before it for inbound
events, so ties go to the resident and to contacts; up to and including it for ticks). That makes
the outcome independent of how often ticks arrive: one tick a minute or one a day gives the same
effects, each stamped with the instant it fell due.

A member's clock never runs backwards: an event stamped before the latest instant already applied
to the member (`last_at`: a webhook redelivered or held up on the way, after a tick had moved on)
acts at that instant, so a check is never closed before it was sent and no slot is used twice.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from agents.clock import DAY, HOUR, midnight
from agents import rollcall, signup
from agents.schedule import anchor, next_slot
from schemas import effects as fx
from schemas.effects import Effect
from schemas.events import (AcceptInvite, Acknowledge, AskHelp, AskWithdraw, CodeRefused, Withdraw, ChangeSettings, ContactNights, Enroll, Follow, Help, Invite,
                            LeaveContact, Message, NeedHelp, Ok, OpenMyPage, Pause, Phone, Register, Resolve, RollCall,
                            Safe, SetArea, Setup, StaffLinked, Tick, Unfollow)
from schemas.settings import NOTIFY, PHONE_KEPT, WATCH, MemberSettings

IDLE, SENT, RESENT, ESCALATED = "idle", "sent", "resent", "escalated"
RESEND_AFTER = 24 * HOUR
ESCALATE_AFTER = 3 * HOUR
UNCLAIMED_AFTER = 3 * HOUR   # contacts told, none will go and look: staff are called
REMIND_EVERY = 6 * HOUR      # an open staff call is raised again this often
# A NamedTuple's own __new__ is a Python function; tuple.__new__ skips it on the hot path (~0.6 µs each).
_new = tuple.__new__
INVITE_VALID_FOR = 3 * DAY   # long enough to reach a busy relative, short enough that a lost code dies
MAX_CONTACTS = 20
CLOSED_BY_STAFF = "staff"   # in a `resolved_after_escalation` effect's data: nobody heard from the resident in LINE
NEEDS_PHONE = "need=phone"   # in an `enrolled` effect's data: the watch service still needs a number


class MemberState(NamedTuple):  # immutable; a tuple because the hot path builds one per step
    settings: MemberSettings
    anchor: int                      # local date ordinal of slot 0 of the lattice
    cycle: int = 0                   # number of the open (or last) cycle
    phase: str = IDLE
    due: int | None = None           # next timer: the slot (idle), resend (sent), escalation (resent),
                                     # unclaimed or the next reminder (escalated)
    following: bool = True
    paused_until: int | None = None  # epoch ms: no check before this instant
    invite: str | None = None        # the one open invitation code for a contact (安否通知)
    invite_until: int | None = None  # epoch ms: the code works until then
    last_at: int = 0                 # epoch ms: the latest instant applied (a late event acts at it)
    told: tuple[str, ...] | None = None  # the open cycle's contacts_notified `to`
    acked: tuple[str, ...] = ()      # of those, who answered 「見に行きます」
    called: int | None = None        # epoch ms: the open cycle's staff call
    held: bool = False               # the open cycle closes only by resolve (help, a 見守り unfollow)
    quiet: tuple[str, ...] = ()      # contacts who want no notice 21:00–7:00 (the sender holds it)
    roll: rollcall.Roll | None = None  # the member's part in their current roll-call (agents/rollcall.py)

    @property
    def open(self) -> bool:
        return self.phase != IDLE


def register(event: Register) -> MemberState:
    s = event.settings
    state = MemberState(settings=s, anchor=anchor(s.schedule, event.at), last_at=event.at)
    return _idle(state, event.at, strict=False)


def step(state: MemberState, event) -> tuple[MemberState, list[Effect]]:
    out: list[Effect] = []
    now, kind = event.at, type(event)
    if now < state.last_at:  # late: it acts at the member's own time (see the module's doc)
        now = state.last_at
        if kind is not Tick:
            event = replace(event, at=now)
    roll = state.roll
    if kind is Tick:
        if roll is None or roll.due is None:
            while state.due is not None and state.due <= now:
                state = _fire(state, out)
        else:
            state = _catch_up(state, now, True, out)
        return (state._replace(last_at=now) if state.last_at < now else state), out
    if roll is None or roll.due is None:
        while state.due is not None and state.due < now:  # strictly before: ties go to the resident
            state = _fire(state, out)
    else:
        state = _catch_up(state, now, False, out)
    if kind is Ok or kind is Message:
        state = _sign_of_life(state, event.at, out)
    elif kind is Pause:
        state = _pause(state, event, out)
    elif kind is Resolve:  # staff name the case they closed: a later one is not theirs to close
        if state.phase == ESCALATED and event.cycle in (None, state.cycle):
            state = _close(state, event.at, out, by=CLOSED_BY_STAFF)
    elif kind is Help:
        state = _help(state, event.at, out)
    elif kind is Unfollow:
        state = _unfollow(state, event.at, out)
    elif kind is Follow:
        if not state.following:
            out.append(Effect(event.at, fx.FOLLOWED, state.settings.id))
            state = state._replace(following=True)
            if not state.open:  # a cycle held open waits for staff; the next check comes after it
                state = _idle(state, event.at, strict=True)
    elif kind is ChangeSettings:
        state = _change_settings(state, event, out)
    elif kind is Register:
        pass  # a replayed registration (after a crash) changes nothing; changes come as settings
    elif kind is Setup:
        out.append(setup_prompt(event))
    elif kind is Enroll:
        state = _enroll(state, event, out)
    elif kind is Phone:
        state = _phone(state, event, out)
    elif kind is Invite:
        state = _invite(state, event, out)
    elif kind is AcceptInvite:
        state = _accept_invite(state, event, out)
    elif kind is Acknowledge:
        state = _acknowledge(state, event, out)
    elif kind is OpenMyPage:
        out.append(Effect(event.at, fx.MYPAGE_LINK, state.settings.id))
    elif kind is LeaveContact:
        state = _leave_contact(state, event, out)
    elif kind is StaffLinked:
        out.append(staff_linked(event))
    elif kind is ContactNights:
        state = _contact_nights(state, event, out)
    elif kind is RollCall:
        if state.following and rollcall.concerns(event, state.settings.area):
            state = state._replace(roll=rollcall.start(state.roll, event, state.settings.id, state.settings.area, out))
    elif kind is Safe:
        state = _sign_of_life(state, event.at, out)
        state = state._replace(roll=rollcall.answer(state.roll, event.at, rollcall.SAFE, state.settings.id,
                                                    state.settings.area, out))
    elif kind is NeedHelp:
        drill = state.roll is not None and state.roll.drill
        state = state._replace(roll=rollcall.answer(state.roll, event.at, rollcall.NEED_HELP, state.settings.id,
                                                    state.settings.area, out))
        if not drill:  # a drill calls no one: its 「助けが必要」 is the answer only
            state = _help(state, event.at, out)
    elif kind is SetArea:
        state = state._replace(settings=rollcall.set_area(state.settings, event, out))
    elif kind is CodeRefused:
        out.append(Effect(event.at, fx.CODE_REFUSED, state.settings.id))
    elif kind is AskWithdraw:
        out.append(Effect(event.at, fx.WITHDRAW_CONFIRM, state.settings.id))
    elif kind is Withdraw:  # the resident leaves: nothing of them is kept (the shells delete the state)
        out.append(Effect(event.at, fx.WITHDRAWN, state.settings.id))
        return None, out
    elif kind is AskHelp:
        if state.following:
            s = state.settings
            whom = fx.HELP_TO_CONTACTS if s.service == NOTIFY and s.contacts else fx.HELP_TO_STAFF
            out.append(Effect(event.at, fx.HELP_CONFIRM, s.id, data=whom))
    else:
        raise TypeError(f"member step: unknown event {event!r}")
    return (state._replace(last_at=now) if state.last_at < now else state), out


def _catch_up(state: MemberState, now: int, inclusive: bool, out: list[Effect]) -> MemberState:
    """Both timers, the ladder's and the roll-call's, in the order they fell due (the ladder's first
    at the same instant), up to `now` (inclusive for a tick, strictly before for an inbound event)."""
    while True:
        ladder, roll = state.due, state.roll.due if state.roll is not None else None
        if ladder is not None and (roll is None or ladder <= roll) and (ladder <= now if inclusive else ladder < now):
            state = _fire(state, out)
        elif roll is not None and (roll <= now if inclusive else roll < now):
            state = state._replace(roll=rollcall.fire(state.roll, state.settings.id, state.settings.area,
                                                      state.following, out))
        else:
            return state


def wake(state: MemberState) -> int | None:
    """The member's next timer, the ladder's or the roll-call's: what the due-index holds."""
    due, roll = state.due, state.roll
    if roll is None or roll.due is None or (due is not None and due <= roll.due):
        return due
    return roll.due


def _fire(state: MemberState, out: list[Effect]) -> MemberState:
    at, me, phase = state.due, state.settings.id, state.phase
    if phase == IDLE:
        cycle = state.cycle + 1
        out.append(_new(Effect, (at, fx.CHECK_SENT, me, cycle, None, None, None, None, None, None)))
        return _new(MemberState, (state.settings, state.anchor, cycle, SENT, at + RESEND_AFTER, state.following,
                                  state.paused_until, state.invite, state.invite_until, state.last_at,
                                  None, (), None, False, state.quiet, state.roll))
    if phase == SENT:
        out.append(Effect(at, fx.CHECK_RESENT, me, state.cycle))
        return _new(MemberState, (state.settings, state.anchor, state.cycle, RESENT, at + ESCALATE_AFTER,
                                  state.following, state.paused_until, state.invite, state.invite_until,
                                  state.last_at, None, (), None, False, state.quiet, state.roll))
    if phase == RESENT:
        return _escalate(state, at, fx.NO_ANSWER, out)
    if state.called is None:  # contacts were told 3 h ago and nobody will go: staff
        return _call_staff(state, at, fx.UNCLAIMED, out)
    n = (at - state.called) // REMIND_EVERY
    out.append(Effect(at, fx.STAFF_REMINDER, me, state.cycle, data=str(n)))
    return state._replace(due=at + REMIND_EVERY)


def _escalate(state: MemberState, at: int, reason: str, out: list[Effect]) -> MemberState:
    """The open cycle escalates at `at`: its contacts are told (安否通知 with contacts), else staff."""
    contacts = state.settings.contacts
    if state.settings.service == NOTIFY and contacts:
        quiet = tuple(c for c in contacts if c in state.quiet)   # whose notice waits for 7:00 at night
        out.append(Effect(at, fx.CONTACTS_NOTIFIED, state.settings.id, state.cycle, to=contacts,
                          data=fx.notice_data(reason, quiet)))
        return state._replace(phase=ESCALATED, due=at + UNCLAIMED_AFTER, told=contacts, acked=())
    return _call_staff(state, at, reason, out)  # watch, or notify with nobody to tell


def _call_staff(state: MemberState, at: int, reason: str, out: list[Effect]) -> MemberState:
    out.append(Effect(at, fx.STAFF_CALL, state.settings.id, state.cycle, data=reason))
    return state._replace(phase=ESCALATED, due=at + REMIND_EVERY, called=at)


def _sign_of_life(state: MemberState, at: int, out: list[Effect]) -> MemberState:
    if state.following and state.open and not state.held:
        return _close(state, at, out)
    return state


def _close(state: MemberState, at: int, out: list[Effect], by: str | None = None) -> MemberState:
    """`by`: None when the resident answered; CLOSED_BY_STAFF when staff (or a contact) closed the case."""
    kind = fx.RESOLVED_AFTER_ESCALATION if state.phase == ESCALATED else fx.CONFIRMED
    out.append(_new(Effect, (at, kind, state.settings.id, state.cycle, None, None, None, by, None, None)))
    if state.told:
        out.append(Effect(at, fx.ALL_CLEAR, state.settings.id, state.cycle, to=tuple(sorted(state.told)), data=by))
    return _idle(state, at, strict=True)


def _help(state: MemberState, at: int, out: list[Effect]) -> MemberState:
    """「助けてほしい」: the open cycle (or a new one, with no check) escalates now and is held."""
    if not state.following:
        return state  # nobody can answer them in LINE: a tap from there cannot be trusted to arrive
    if not state.open:
        state = state._replace(cycle=state.cycle + 1, phase=RESENT, due=None)
    if state.phase != ESCALATED:
        state = _escalate(state, at, fx.HELP, out)
    # after the escalation it makes (same instant): it says whom it called, and a read side finds
    # the case it marks urgent already open
    whom = (fx.HELP_TO_STAFF if not state.told else fx.HELP_TO_CONTACTS if state.called is None
            else fx.HELP_TO_BOTH)
    out.append(Effect(at, fx.HELP_REQUESTED, state.settings.id, state.cycle, data=whom))
    return state._replace(held=True)


def _unfollow(state: MemberState, at: int, out: list[Effect]) -> MemberState:
    """A blocked account is not an answer. A 見守り resident is phoned by staff; a 安否通知 resident
    chose to leave, and the open cycle closes with nothing more (unless they had asked for help)."""
    if not state.following:
        return state
    out.append(Effect(at, fx.UNFOLLOWED, state.settings.id))
    state = state._replace(following=False)
    if state.settings.service == WATCH:
        if not state.open:
            state = state._replace(cycle=state.cycle + 1)
        if state.called is None:
            state = _call_staff(state, at, fx.UNFOLLOWED_WATCH, out)
        return state._replace(held=True)
    if state.held:
        return state
    return state._replace(phase=IDLE, due=None, told=None, acked=(), called=None)


def _pause(state: MemberState, event: Pause, out: list[Effect]) -> MemberState:
    was_open = state.following and state.open
    state = _sign_of_life(state, event.at, out)
    state = state._replace(paused_until=midnight(state.settings.schedule.zone, event.until))
    if state.phase == IDLE and state.following:
        # A pause replaces an earlier one, even a longer one: search again from now.
        state = _idle(state, event.at, strict=was_open)
    return state


def _change_settings(state: MemberState, event: ChangeSettings, out: list[Effect]) -> MemberState:
    was_open = state.following and state.open
    state = _sign_of_life(state, event.at, out)
    s = event.settings
    if s.phone is not None and s.phone.startswith(PHONE_KEPT):  # built from a copy without the number
        s = replace(s, phone=state.settings.phone)
    state = state._replace(settings=s, anchor=anchor(s.schedule, event.at))
    if state.phase == IDLE and state.following:
        state = _idle(state, event.at, strict=was_open)
    return state


def _idle(state: MemberState, after: int, strict: bool) -> MemberState:
    """Idle, with the next check at the first slot after `after` that the pause allows."""
    due = None
    if state.following:
        paused = state.paused_until
        if paused is not None and paused > after:
            after, strict = paused, False
        due = next_slot(state.settings.schedule, state.anchor, after, strict)
    return _new(MemberState, (state.settings, state.anchor, state.cycle, IDLE, due, state.following,
                              state.paused_until, state.invite, state.invite_until, state.last_at,
                              None, (), None, False, state.quiet, state.roll))



# --- the conversations: sign-up, the phone number, inviting contacts -------------------------------


def setup_prompt(event: Setup) -> Effect:
    """The next sign-up question follows from the choices so far, which travel in the effect."""
    return Effect(event.at, fx.SETUP_PROMPT, event.member, data=event.choices)


def enroll(event: Enroll) -> tuple[MemberState, list[Effect]]:
    """A new resident confirmed sign-up."""
    state = register(Register(event.at, event.settings))
    return state, [_enrolled(state, event.at)]


def _enrolled(state: MemberState, at: int) -> Effect:
    s = state.settings
    data = signup.encode(signup.of_settings(s))  # what was chosen, to say it back
    if s.service == WATCH and s.phone is None:
        data += f"&{NEEDS_PHONE}"
    return Effect(at, fx.ENROLLED, s.id, data=data)


def _enroll(state: MemberState, event: Enroll, out: list[Effect]) -> MemberState:
    """A member chose again in LINE: the new service and schedule, keeping the number and the
    contacts where the new service uses them (minimal data: nothing is kept that is not used)."""
    new, old = event.settings, state.settings
    settings = replace(old, service=new.service, schedule=new.schedule,
                       phone=old.phone if new.service == WATCH else None,
                       contacts=old.contacts if new.service == NOTIFY else (),
                       area=new.area if new.area is not None else old.area)
    if not state.following:  # they tapped in the chat, so they follow the account again
        state = state._replace(following=True)
    state = _change_settings(state, ChangeSettings(event.at, settings), out)
    out.append(_enrolled(state, event.at))
    return state


def _phone(state: MemberState, event: Phone, out: list[Effect]) -> MemberState:
    if state.settings.service != WATCH:
        return state  # only staff calls need a number: any other service never stores one
    settings = replace(state.settings, phone=event.number, contacts=())
    out.append(Effect(event.at, fx.PHONE_SAVED, state.settings.id))
    return state._replace(settings=settings)


def _invite(state: MemberState, event: Invite, out: list[Effect]) -> MemberState:
    if state.settings.service != NOTIFY:
        return state  # contacts are told only by the 安否通知 service
    out.append(Effect(event.at, fx.INVITE_CREATED, state.settings.id, data=event.code))
    return state._replace(invite=event.code, invite_until=event.at + INVITE_VALID_FOR)


def _accept_invite(state: MemberState, event: AcceptInvite, out: list[Effect]) -> MemberState:
    s, contact = state.settings, event.contact
    valid = (state.invite is not None and event.code == state.invite and event.at <= state.invite_until
             and contact != s.id and (contact in s.contacts or len(s.contacts) < MAX_CONTACTS))
    if not valid:
        out.append(refused(event))
        return state
    contacts = s.contacts if contact in s.contacts else (*s.contacts, contact)
    out.append(Effect(event.at, fx.CONTACT_ADDED, s.id, member=contact))
    settings = replace(s, contacts=contacts)
    return state._replace(settings=settings, invite=None, invite_until=None)  # one use only


def _acknowledge(state: MemberState, event: Acknowledge, out: list[Effect]) -> MemberState:
    """「見に行きます」 from a contact told this cycle, while it is open: once per contact; the first
    one means staff need not be called. Not a sign of life of the member. A tap on an older card
    (it names its cycle) is answered that the case has closed; anything else changes nothing."""
    contact, told = event.contact, state.told
    if told and contact in told and event.cycle in (None, state.cycle):
        if contact in state.acked:
            return state
        out.append(Effect(event.at, fx.CONTACT_ACKNOWLEDGED, state.settings.id, state.cycle, member=contact))
        due = None if state.called is None else state.due  # rule 1 is off; reminders stand
        return state._replace(acked=(*state.acked, contact), due=due)
    closed = event.cycle != state.cycle or not state.open
    if event.cycle is not None and closed and contact in state.settings.contacts:
        out.append(Effect(event.at, fx.ACK_NOT_NEEDED, state.settings.id, event.cycle, member=contact))
    return state


def _leave_contact(state: MemberState, event: LeaveContact, out: list[Effect]) -> MemberState:
    """A contact withdraws: they are told no more (not even this cycle's all clear), and the resident
    learns of it. With nobody left to tell, the next escalation goes to staff."""
    s, contact = state.settings, event.contact
    out.append(Effect(event.at, fx.LEFT_AS_CONTACT, s.id, member=contact))
    if contact not in s.contacts:
        return state
    out.append(Effect(event.at, fx.CONTACT_LEFT, s.id, member=contact))
    settings = replace(s, contacts=tuple(c for c in s.contacts if c != contact))
    told = tuple(c for c in state.told if c != contact) if state.told else state.told
    return state._replace(settings=settings, told=told, quiet=tuple(c for c in state.quiet if c != contact))


def _contact_nights(state: MemberState, event: ContactNights, out: list[Effect]) -> MemberState:
    """A contact's choice for this resident's notices at night; only a contact's counts."""
    contact = event.contact
    if contact not in state.settings.contacts:
        return state
    out.append(Effect(event.at, fx.NIGHTS_SET, state.settings.id, member=contact,
                      data=fx.NIGHTS_QUIET if event.quiet else fx.NIGHTS_ANY))
    quiet = tuple(sorted({*state.quiet, contact})) if event.quiet else tuple(c for c in state.quiet if c != contact)
    return state._replace(quiet=quiet)


def refused(event: AcceptInvite) -> Effect:
    return Effect(event.at, fx.INVITE_REFUSED, event.member, member=event.contact)


def staff_linked(event: StaffLinked) -> Effect:
    """The answer to a staff link code (checked by the ingress): no state, a resident's or not."""
    return Effect(event.at, fx.STAFF_LINKED, event.member, data=event.login)
