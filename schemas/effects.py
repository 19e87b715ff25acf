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
# group (つながり)
GROUP_CHECK_POSTED = "group_check_posted"
GROUP_CONFIRMED = "group_confirmed"
GROUP_UNCONFIRMED = "group_unconfirmed"

ESCALATIONS = (STAFF_CALL, CONTACTS_NOTIFIED)


class Effect(NamedTuple):  # a tuple: cheap to make, and the engine makes millions
    at: int                                # epoch ms: the instant it fell due, not when a runtime noticed
    effect: str
    subject: str
    cycle: int | None = None
    to: tuple[str, ...] | None = None       # contacts_notified
    member: str | None = None               # group_confirmed
    members: tuple[str, ...] | None = None  # group_unconfirmed (sorted)

    @property
    def id(self) -> str:
        """Deterministic: a replay after a crash re-emits the same id, so consumers drop duplicates."""
        tail = f":{self.member}" if self.member is not None else ""
        return f"{self.subject}:{self.cycle}:{self.effect}{tail}" if self.cycle else f"{self.subject}:{self.at}:{self.effect}"
