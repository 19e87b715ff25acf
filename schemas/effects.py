"""What the engine decided must happen. Shells turn these into LINE messages, call-queue rows, audit."""
from __future__ import annotations

from typing import NamedTuple

# member ladder
CHECK_SENT = "check_sent"
CHECK_RESENT = "check_resent"
STAFF_CALL = "staff_call"
CONTACTS_NOTIFIED = "contacts_notified"
CONFIRMED = "confirmed"
RESOLVED_AFTER_ESCALATION = "resolved_after_escalation"
UNFOLLOWED = "unfollowed"
FOLLOWED = "followed"
HELP_REQUESTED = "help_requested"      # the resident asked for help (「助けてほしい」)
STAFF_REMINDER = "staff_reminder"      # data: n (1, 2, …): a staff call still open 6 h × n after it
ALL_CLEAR = "all_clear"                # to: the contacts told this cycle (sorted): the resident is well
# group (つながり)
GROUP_CHECK_POSTED = "group_check_posted"
GROUP_CONFIRMED = "group_confirmed"
GROUP_UNCONFIRMED = "group_unconfirmed"

# the conversations (answers to a resident's or a group's own action; `data` says what to show)
WELCOME = "welcome"                    # a new friend: how anpi works, and the first sign-up question
SETUP_PROMPT = "setup_prompt"          # data: the choices so far; the next question follows from them
ENROLLED = "enrolled"                  # data: "phone" when the watch service still needs a number
PHONE_SAVED = "phone_saved"
INVITE_CREATED = "invite_created"      # data: the invitation code
CONTACT_ADDED = "contact_added"        # member: the new contact (who is told)
INVITE_REFUSED = "invite_refused"      # member: who sent a code that is wrong, used or expired
GROUP_WELCOME = "group_welcome"        # the account joined a group: how つながり works there
CONTACT_ACKNOWLEDGED = "contact_acknowledged"  # member: the contact who will go and look (cycle: which case)
ACK_NOT_NEEDED = "ack_not_needed"      # member: a contact who offered to go, but the resident has answered
MYPAGE_LINK = "mypage_link"            # a signed link to the member's My Page (made by the sender)
CONTACT_LEFT = "contact_left"          # member: a contact who chose to stop being one (told to the resident)
NIGHTS_SET = "nights_set"              # member: the contact; data: "quiet" (nothing 21:00–7:00) or "any"
LEFT_AS_CONTACT = "left_as_contact"    # member: the same contact, answered that they are no longer one
STAFF_LINKED = "staff_linked"          # data: the staff login this LINE now alerts ("": the code did not work)
CODE_REFUSED = "code_refused"          # a registration code from a printed sheet did not work
WITHDRAW_CONFIRM = "withdraw_confirm"  # 「退会」 typed: asked once to confirm
WITHDRAWN = "withdrawn"                # the resident left: their state is removed (the read sides forget them)
HELP_CONFIRM = "help_confirm"          # data: whom a help would call (HELP_TO_*): asked once, so a slip sends nobody

# the roll-call (agents/rollcall.py): each names it in `rollcall`; `data` is DRILL for a drill
ROLLCALL_SENT = "rollcall_sent"              # the card 「無事ですか」 went to the member
ROLLCALL_RESENT = "rollcall_resent"          # no answer after the roll-call's delay: once more
ROLLCALL_UNANSWERED = "rollcall_unanswered"  # no answer after the resend's delay: listed for staff and 民生委員
ROLLCALL_SAFE = "rollcall_safe"              # 「無事です」
ROLLCALL_NEED_HELP = "rollcall_need_help"    # 「助けが必要」 (with help_requested and the escalation)
GROUP_ROLLCALL_POSTED = "group_rollcall_posted"        # the card in a group
GROUP_ROLLCALL_SAFE = "group_rollcall_safe"            # member: who answered 「無事です」 in the group
GROUP_ROLLCALL_NEED_HELP = "group_rollcall_need_help"  # member: who answered 「助けが必要」 there
AREA_SET = "area_set"                  # staff set the subject's area (`area`; None: none)
DRILL = "drill"

ESCALATIONS = (STAFF_CALL, CONTACTS_NOTIFIED)

# why staff are called: a staff_call's `data`
NO_ANSWER = "no_answer"      # the ladder ran out (check, resend, +3 h)
UNCLAIMED = "unclaimed"      # the contacts told did not answer 「見に行きます」 within 3 h
HELP = "help"                # the resident asked for help
UNFOLLOWED_WATCH = "unfollowed"   # a 見守り resident blocked the account: staff must phone
# a contact's notices at night: a nights_set's `data`
NIGHTS_QUIET, NIGHTS_ANY = "quiet", "any"
# a contacts_notified's `data`: "U1,U2" (whose notice waits for 7:00 at night) or None after the
# ladder ran out; the same behind "help:" when the resident asked for help (LINE ids hold no ":")
def notice_data(reason: str, quiet: tuple[str, ...]) -> str | None:
    held = ",".join(quiet) or None
    if reason != HELP:
        return held
    return f"{HELP}:{held}" if held else HELP


def notice_reason(data: str | None) -> str:
    return HELP if data is not None and (data == HELP or data.startswith(HELP + ":")) else NO_ANSWER


def notice_quiet(data: str | None) -> frozenset[str]:
    if data is None or data == HELP:
        return frozenset()
    return frozenset(data.removeprefix(HELP + ":").split(","))


# whom a help calls: a help_confirm's and a help_requested's `data`
HELP_TO_STAFF, HELP_TO_CONTACTS, HELP_TO_BOTH = "staff", "contacts", "both"
# kinds that may come more than once in a cycle: their instant is part of their id
REPEATS = frozenset({HELP_REQUESTED, STAFF_REMINDER})


class Effect(NamedTuple):  # a tuple: cheap to make, and the engine makes millions
    at: int                                # epoch ms: the instant it fell due, not when a runtime noticed
    effect: str
    subject: str
    cycle: int | None = None
    to: tuple[str, ...] | None = None       # contacts_notified
    member: str | None = None               # group_confirmed
    members: tuple[str, ...] | None = None  # group_unconfirmed (sorted)
    data: str | None = None                 # what to show: the conversations', a staff call's reason, …
    rollcall: str | None = None             # the roll-call's id (rollcall_* effects)
    area: str | None = None                 # the subject's area when it was asked (rollcall_* effects)

    @property
    def id(self) -> str:
        """Deterministic: a replay after a crash re-emits the same id, so consumers drop duplicates."""
        tail = f":{self.member}" if self.member is not None else f":{self.at}" if self.effect in REPEATS else ""
        if self.rollcall is not None:  # once per roll-call and subject (and member, in a group)
            return f"{self.subject}:r:{self.rollcall}:{self.effect}{tail}"
        return f"{self.subject}:{self.cycle}:{self.effect}{tail}" if self.cycle else f"{self.subject}:{self.at}:{self.effect}{tail}"
