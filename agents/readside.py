"""What one engine step changes on the admin screen's read side. Pure: no I/O, no clock.

The admin screen must open in well under a second for a tenant of a million members, so it never
scans members: it reads small tables that each step updates in its own commit. This module says
*what* changes for a step's effects and changed states; streams/embedded/readside.py writes it.

    Count(day, kind, n)          per tenant and local day (the member's zone): checks sent, OKs, …
    Answered(member, cycle)      an OK before anyone was called: +1 "answered" on the day that
                                 cycle's check went out (the shell looks that day up), so the
                                 confirmation rate of a day is answered / check_sent of that day
    OpenCase(member, cycle, …)   a staff call (見守り) or a contacts notice (安否通知): a row to work;
                                 a staff call on a cycle that told contacts (unclaimed, or a help)
                                 turns that case into a staff call: one case per cycle
    Reminded(member, cycle, n, at)   the case is still open 6 h × n after the staff call
    Urgent(member, cycle)        the resident asked for help on this cycle: its case goes first
    CloseCase(member, at)        the resident answered, or staff resolved the case in the engine
    Acknowledged(member, cycle, contact, at)   a contact told answered 「見に行きます」
    RollSent(rollcall, member, area, drill, at)   a member was asked in a roll-call (rollcall_sent)
    RollAnswer(rollcall, member, answer, at)   「無事です」 (safe) or 「助けが必要」 (need_help); a need_help
                                 replaces a safe, never the other way (agents/rollcall.py)
    RollListed(rollcall, member, at)   no answer after the resend: on the list for staff and 民生委員

A roll-call's tally is by the member's area when asked: each member is in one status of STATUSES
(waiting, listed, safe, need_help), and `roll_tally` sums rows of (area, status, n) per area and in
all. Drills are kept apart by their roll-call (its `drill` flag), so they never mix with real ones.

Effect kinds this module does not know (new ones appear as the conversations grow) change nothing.

Subjects are counted by their label, a function of the state only (no clock is read, so a paused
member is simply "idle": its pause shows as no check being sent, not as a state of its own):

    member  "{service}:{phase}"  phase: idle | sent | resent | escalated, or "unfollowed" (with no
                                 case open: a 見守り resident who blocked the account is a case)
    group   "group:idle" | "group:posted", or "group:left" once the account has left the group
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date
from typing import NamedTuple

from agents.clock import local_ordinal
from agents.group import GroupState
from agents.member import MemberState
from schemas import effects as fx

DEFAULT_ZONE = "Asia/Tokyo"
BILLING_ZONE = "Asia/Tokyo"  # LINE counts its monthly message quota by the Japanese calendar month
ANSWERED = "answered"

# counted per day, on the local day the effect fell due
DAILY = frozenset({fx.CHECK_SENT, fx.CHECK_RESENT, fx.CONFIRMED, fx.RESOLVED_AFTER_ESCALATION, fx.STAFF_CALL,
                   fx.CONTACTS_NOTIFIED, fx.GROUP_CHECK_POSTED, fx.GROUP_CONFIRMED, fx.GROUP_UNCONFIRMED,
                   fx.UNFOLLOWED, fx.FOLLOWED})

# a member's own effects that My Page tells them of (streams/mypage/view.history_line), kept for it
MEMBER_HISTORY = frozenset({fx.CHECK_SENT, fx.CHECK_RESENT, fx.CONFIRMED, fx.RESOLVED_AFTER_ESCALATION,
                            fx.STAFF_CALL, fx.CONTACTS_NOTIFIED, fx.HELP_REQUESTED, fx.ALL_CLEAR, fx.ENROLLED,
                            fx.PHONE_SAVED, fx.INVITE_CREATED, fx.CONTACT_ADDED, fx.CONTACT_LEFT, fx.UNFOLLOWED,
                            fx.FOLLOWED, fx.AREA_SET})

# case outcomes: what staff recorded, or how the case closed by itself
REACHED = "reached"          # 連絡がつき無事: closes through a Resolve event in the engine
NO_ANSWER = "no_answer"      # 応答なし: stays open
VISIT = "visit"              # 訪問を依頼: stays open
EMERGENCY = "emergency"      # 救急・警察に連絡: handed over, closed by staff
RESIDENT = "resident"        # the resident answered after the escalation
OUTCOMES = (REACHED, NO_ANSWER, VISIT, EMERGENCY)
CLOSES = frozenset({REACHED, EMERGENCY})


class Count(NamedTuple):
    day: str       # local date, ISO (YYYY-MM-DD)
    kind: str
    n: int = 1


class Answered(NamedTuple):
    member: str
    cycle: int


class OpenCase(NamedTuple):
    member: str
    cycle: int
    kind: str      # staff_call | contacts_notified
    at: int
    told: int      # how many contacts were told (0 for a staff call)
    reason: str | None = None   # a staff call's: no_answer | unclaimed | help | unfollowed


class Urgent(NamedTuple):
    member: str
    cycle: int


class Reminded(NamedTuple):
    member: str
    cycle: int
    n: int
    at: int


class CloseCase(NamedTuple):
    member: str
    at: int


class Forget(NamedTuple):
    """A resident withdrew: every row naming them goes (their cases, answers, roll-call statuses);
    counts that identify nobody stay."""
    member: str


class Acknowledged(NamedTuple):
    member: str
    cycle: int
    contact: str
    at: int


class RollSent(NamedTuple):
    rollcall: str
    member: str
    area: str | None
    drill: bool
    at: int


class RollAnswer(NamedTuple):
    rollcall: str
    member: str
    answer: str    # SAFE | NEED_HELP
    at: int


class RollListed(NamedTuple):
    rollcall: str
    member: str
    at: int


SAFE, NEED_HELP, WAITING, LISTED = "safe", "need_help", "waiting", "listed"
STATUSES = (NEED_HELP, LISTED, WAITING, SAFE)   # the order staff read them in: who needs someone first
NO_AREA = ""   # the tally's key for members with no area


def roll_tally(rows: Iterable[tuple[str | None, str, int]]) -> dict[str, dict[str, int]]:
    """(area, status, n) rows -> {area: {status: n, "asked": n}}, with "" for no area and "*" for all."""
    out: dict[str, dict[str, int]] = {}
    for area, status, n in rows:
        for key in (area or NO_AREA, "*"):
            counts = out.setdefault(key, dict.fromkeys((*STATUSES, "asked"), 0))
            counts[status] += n
            counts["asked"] += n
    out.setdefault("*", dict.fromkeys((*STATUSES, "asked"), 0))
    return out


def answer_curve(minutes: Iterable[tuple[int, int]], until: int) -> list[int]:
    """(minute after the roll-call went out, answers that minute) rows -> the running total per minute,
    0 … `until`: how fast people answered (the curve トヨクモ's reports draw)."""
    per = Counter()
    for minute, n in minutes:
        if 0 <= minute <= until:
            per[minute] += n
    total, out = 0, []
    for minute in range(until + 1):
        total += per[minute]
        out.append(total)
    return out


class GroupRow(NamedTuple):
    group: str
    cycle: int
    posted_at: int | None
    roster: int
    confirmed: int




def day_of(at: int, zone: str) -> str:
    return date.fromordinal(local_ordinal(zone, at)).isoformat()


def month_of(at: int) -> str:
    return day_of(at, BILLING_ZONE)[:7]


def zone_of(state) -> str:
    """The zone a subject's days are counted in: its schedule's, else the tenant default."""
    schedule = getattr(getattr(state, "settings", None), "schedule", None)
    return getattr(schedule, "zone", None) or DEFAULT_ZONE


def effect_changes(effect, zone: str) -> list:
    """The read-side changes one newly committed effect makes; [] for kinds not counted here."""
    kind = effect.effect
    if kind in _ROLL:
        return [_roll_change(effect)]
    if kind == fx.CONTACT_ACKNOWLEDGED:
        return [Acknowledged(effect.subject, effect.cycle, effect.member, effect.at)]
    if kind == fx.STAFF_REMINDER:
        return [Reminded(effect.subject, effect.cycle, int(effect.data or 0), effect.at)]
    if kind == fx.HELP_REQUESTED:
        return [Urgent(effect.subject, effect.cycle)]
    if kind == fx.WITHDRAWN:
        return [Forget(effect.subject)]
    if kind not in DAILY:
        return []
    out: list = [Count(day_of(effect.at, zone), kind)]
    if kind == fx.CONFIRMED and effect.cycle is not None:
        out.append(Answered(effect.subject, effect.cycle))
    elif kind in fx.ESCALATIONS and effect.cycle is not None:
        out.append(OpenCase(effect.subject, effect.cycle, kind, effect.at, len(effect.to or ()),
                            effect.data if kind == fx.STAFF_CALL else None))
    elif kind == fx.RESOLVED_AFTER_ESCALATION:
        out.append(CloseCase(effect.subject, effect.at))
    return out


_ROLL = frozenset({fx.ROLLCALL_SENT, fx.ROLLCALL_SAFE, fx.ROLLCALL_NEED_HELP, fx.ROLLCALL_UNANSWERED})


def _roll_change(effect):
    kind = effect.effect
    if kind == fx.ROLLCALL_SENT:
        return RollSent(effect.rollcall, effect.subject, effect.area, effect.data == fx.DRILL, effect.at)
    if kind == fx.ROLLCALL_UNANSWERED:
        return RollListed(effect.rollcall, effect.subject, effect.at)
    return RollAnswer(effect.rollcall, effect.subject, SAFE if kind == fx.ROLLCALL_SAFE else NEED_HELP, effect.at)


GROUP_IDLE, GROUP_POSTED, GROUP_LEFT = "group:idle", "group:posted", "group:left"


def label(state: MemberState | GroupState) -> str:
    """The label a subject is counted by (see the module's doc)."""
    if type(state) is MemberState:
        phase = state.phase if state.following or state.open else "unfollowed"
        return f"{state.settings.service}:{phase}"
    if type(state) is GroupState:
        if not state.active:
            return GROUP_LEFT
        return GROUP_POSTED if state.posted_at is not None else GROUP_IDLE
    raise TypeError(f"label: not a subject state: {state!r}")


def safe_label(state) -> str | None:
    """The label, or None for a state the read side does not count (yet)."""
    if state is None:
        return None
    try:
        return label(state)
    except (TypeError, AttributeError):
        return None


def label_moves(old: Mapping[str, str | None], new: Mapping[str, object]) -> dict[str, int]:
    """Per label, how many subjects entered (+) or left (−) it: old label −1, new label +1."""
    moves: Counter = Counter()
    for subject, state in new.items():
        before, after = old.get(subject), safe_label(state)
        if before == after:
            continue
        if before is not None:
            moves[before] -= 1
        if after is not None:
            moves[after] += 1
    return {label: n for label, n in moves.items() if n}


def group_row(subject: str, state) -> GroupRow | None:
    """A つながり group's row for the groups page; None for anything that is not a group."""
    if state is None or not hasattr(state, "roster") or not hasattr(state, "posted_at"):
        return None
    return GroupRow(subject, state.cycle, state.posted_at, len(state.roster), len(state.confirmed))


def billed(effect, group_size: int) -> int:
    """Messages LINE counts against the monthly quota when this effect is sent (an estimate).

    One per person reached; a group counts its members. Thanks for an OK usually go by the free
    reply API (the runtime uses a fresh reply token when it has one), so they count as free: an
    estimate that errs low when a token had expired. Kinds not listed here (the conversations) are
    answers by reply as well.
    """
    kind = effect.effect
    if kind in (fx.CHECK_SENT, fx.CHECK_RESENT):
        return 1
    if kind == fx.CONTACTS_NOTIFIED:
        return len(effect.to or ())
    if kind in (fx.GROUP_CHECK_POSTED, fx.GROUP_UNCONFIRMED):
        return max(1, group_size)
    return 0


def rate(sent: int, answered: int) -> float | None:
    """The share of a day's checks answered before anyone was called; None on a day with no check."""
    return min(1.0, answered / sent) if sent else None


def tally(rows: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """(day, kind, n) rows -> {day: {kind: n}}."""
    out: dict[str, dict[str, int]] = {}
    for day, kind, n in rows:
        out.setdefault(day, {})[kind] = n
    return out
