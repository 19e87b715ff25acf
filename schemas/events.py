"""Everything that happens to a subject arrives as one of these; each carries its time `at` (epoch ms).

Inbound events come from people (through LINE or staff); `Tick` is the clock. The core never reads a
clock of its own, so any history of these records replays exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas.settings import GroupSettings, MemberSettings, Schedule


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock says it is `at`: fire whatever fell due at or before it."""
    at: int


@dataclass(frozen=True, slots=True)
class Register:
    """A subject starts: a member (watch / notify) or a group (つながり)."""
    at: int
    settings: MemberSettings | GroupSettings


@dataclass(frozen=True, slots=True)
class ChangeSettings:
    """The member changed service or schedule (a sign of life; the slot lattice re-anchors)."""
    at: int
    settings: MemberSettings


@dataclass(frozen=True, slots=True)
class Ok:
    """The OK button. With `group`, it answers that group's check (and still counts for the member)."""
    at: int
    member: str
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """Any message from the member: a sign of life, not an answer to a group check."""
    at: int
    member: str
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """No checks until local midnight of `until` (a proleptic Gregorian ordinal, date.toordinal())."""
    at: int
    member: str
    until: int


@dataclass(frozen=True, slots=True)
class Resolve:
    """Staff or a contact closes an escalated case: `cycle`'s, or (None) whichever is escalated."""
    at: int
    member: str
    cycle: int | None = None


@dataclass(frozen=True, slots=True)
class Help:
    """The resident asks for help (「助けてほしい」, confirmed): staff or contacts are called at once."""
    at: int
    member: str


@dataclass(frozen=True, slots=True)
class Unfollow:
    """The member blocked or unfollowed the account: an event of its own, never silence."""
    at: int
    member: str


@dataclass(frozen=True, slots=True)
class Follow:
    at: int
    member: str


# --- the conversations around the ladder: sign-up, the phone number, inviting contacts, groups ---------


@dataclass(frozen=True, slots=True)
class Setup:
    """An answer during sign-up. `choices` is what was picked so far, as the buttons carry it
    ("s=notify&i=1d"): the conversation keeps no state of its own, so a lost step is just asked again."""
    at: int
    member: str
    choices: str


@dataclass(frozen=True, slots=True)
class Enroll:
    """The resident confirmed sign-up (or a new choice of service and schedule) in LINE."""
    at: int
    settings: MemberSettings


@dataclass(frozen=True, slots=True)
class Phone:
    """A phone number the resident typed: kept only by the watch service, whose staff call it."""
    at: int
    member: str
    number: str


@dataclass(frozen=True, slots=True)
class Invite:
    """The resident asks for an invitation for a contact. `code` is unguessable and made by the shell
    (from LINE's random webhookEventId), so a replay of the same tap makes the same code."""
    at: int
    member: str
    code: str


@dataclass(frozen=True, slots=True)
class AcceptInvite:
    """`contact` sent back `member`'s invitation code: they become one of the member's contacts."""
    at: int
    member: str
    contact: str
    code: str


@dataclass(frozen=True, slots=True)
class GroupJoined:
    """The account was added to a LINE group: it starts つながり there on `schedule`."""
    at: int
    group: str
    schedule: Schedule


@dataclass(frozen=True, slots=True)
class GroupLeft:
    """The account was removed from the group: no more posts there."""
    at: int
    group: str


@dataclass(frozen=True, slots=True)
class Roster:
    """People joined or left the group (LINE's memberJoined / memberLeft)."""
    at: int
    group: str
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """A contact told about `member` answered 「見に行きます」 (they will go and look) for that cycle.
    `cycle` None: whatever cycle is open (a scenario's `ack`; a tap in LINE names the cycle it answers)."""
    at: int
    member: str
    contact: str
    cycle: int | None = None


@dataclass(frozen=True, slots=True)
class LeaveContact:
    """`contact` no longer wants to be told about `member` (「連絡先をやめる」): consent goes both ways."""
    at: int
    member: str
    contact: str


@dataclass(frozen=True, slots=True)
class AskHelp:
    """The first tap on 「助けてほしい」: the resident is asked to confirm (nothing is called yet)."""
    at: int
    member: str


@dataclass(frozen=True, slots=True)
class CodeRefused:
    """A registration code from the printed sheet that did not work (wrong, expired, or used by
    another LINE): the sender is told, nothing else changes."""
    at: int
    member: str


@dataclass(frozen=True, slots=True)
class AskWithdraw:
    """「退会」 typed in LINE: the resident is asked once to confirm (nothing is removed yet)."""
    at: int
    member: str


@dataclass(frozen=True, slots=True)
class Withdraw:
    """退会, confirmed in LINE or on My Page: checks stop, contacts are released, and the resident's
    state and history are removed from the store (only counts that identify nobody remain)."""
    at: int
    member: str


@dataclass(frozen=True, slots=True)
class OpenMyPage:
    """The resident asks for their My Page (the rich menu's button, where LIFF is not available)."""
    at: int
    member: str


@dataclass(frozen=True, slots=True)
class ContactNights:
    """`contact` chooses for `member`'s notices: `quiet` True, none between 21:00 and 7:00 (they wait
    for the morning); False, at any hour (the default)."""
    at: int
    member: str
    contact: str
    quiet: bool


@dataclass(frozen=True, slots=True)
class StaffLinked:
    """`member` sent a staff link code (agents/on_call.py); the ingress checked it against the staff
    accounts: `login` is the account their LINE now alerts, "" when the code was wrong or spent."""
    at: int
    member: str
    login: str


# --- the roll-call after a disaster (agents/rollcall.py) --------------------------------------------

MINUTE_MS = 60_000
RESEND_AFTER_DEFAULT = 30 * MINUTE_MS


@dataclass(frozen=True, slots=True)
class RollCall:
    """A roll-call (安否確認) after an earthquake, started by the 気象庁 feed or by staff: every
    following member and every group in `areas` (None: the whole tenant) is asked 「無事ですか」.
    Like a tick it is addressed to no one subject: each partition applies it to all of its own.
    `id` names it for good (a JMA event id and the tenant's areas, or staff's); `resend_after` ms:
    one resend to those who have not answered, then the same again until they are listed for staff."""
    at: int
    id: str
    areas: tuple[str, ...] | None = None
    drill: bool = False
    resend_after: int = RESEND_AFTER_DEFAULT


@dataclass(frozen=True, slots=True)
class Safe:
    """「無事です」 on a roll-call card (in a group, `group`): the answer, and a sign of life."""
    at: int
    member: str
    group: str | None = None


@dataclass(frozen=True, slots=True)
class NeedHelp:
    """「助けが必要」 on a roll-call card, confirmed: the answer, and a help request (rule 4)."""
    at: int
    member: str
    group: str | None = None


@dataclass(frozen=True, slots=True)
class SetArea:
    """Staff set the area (地区) of a member or a group (`subject`; None: no area), from the admin
    screen or a roster: the roll-calls it is in from now on. Not a sign of life: staff, not the resident."""
    at: int
    subject: str
    area: str | None


Conversation = (Setup | Enroll | Phone | Invite | AcceptInvite | Acknowledge | GroupJoined | GroupLeft | Roster
                | OpenMyPage | AskHelp | LeaveContact | ContactNights | StaffLinked | AskWithdraw | Withdraw | CodeRefused)
Inbound = (Register | ChangeSettings | Ok | Message | Pause | Resolve | Help | Unfollow | Follow | Safe | NeedHelp
           | SetArea | Conversation)
Event = Inbound | Tick | RollCall
