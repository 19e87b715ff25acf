"""Staff told on LINE: who is on duty when a staff call or a reminder falls due, and the one-time
code that links a staff member's own LINE to their staff account. Pure.

    admin screen 「LINEで通知を受け取る」 ──▶ a code, good for LINK_CODE_VALID_FOR, kept only as a hash
    the staff member sends 「職員 1234 5678」 to the tenant's official account ──▶ the ingress links
        their LINE user id to the account (streams/line/ingress.py), the engine answers (staff_linked)
    a staff_call or staff_reminder ──▶ the sender pushes a short alert, with a link to the call queue
        and no personal data, to every linked staff member on duty at the effect's own instant

On duty: from `start` to `end` o'clock, local time, every day; `end` may be past midnight (a night
shift, 17–9); start == end is all day.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Iterable, NamedTuple

from agents.clock import MINUTE, zone as tz
from agents.link_code import LinkCode

CODE_PREFIX = "職員"
LINK_CODE_VALID_FOR = 15 * MINUTE
STAFF_CODE = LinkCode(CODE_PREFIX, "anpi-staff-link")


class OnCall(NamedTuple):
    """One staff member who linked their LINE: whom to push, and when."""
    login: str
    line_user: str
    start: int = 0   # hour, 0–23
    end: int = 0     # hour, 0–23; start == end: all day

    def on_duty(self, at_ms: int, zone: str) -> bool:
        hour = datetime.fromtimestamp(at_ms / 1000, tz(zone)).hour
        return duty_covers(self.start, self.end, hour)


def duty_covers(start: int, end: int, hour: int) -> bool:
    if start == end:
        return True
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end   # past midnight


def duty_label(start: int, end: int) -> str:
    return "終日" if start == end else f"{start}時〜{end}時"


def valid_hours(start: int, end: int) -> bool:
    return 0 <= start <= 23 and 0 <= end <= 23


def on_duty(staff: Iterable[OnCall], at_ms: int, zone: str) -> tuple[str, ...]:
    """The LINE user ids to alert at `at_ms`: sorted, each once (one person may hold two accounts)."""
    return tuple(sorted({s.line_user for s in staff if s.line_user and s.on_duty(at_ms, zone)}))


# --- the link code ---------------------------------------------------------------------------------


def new_code() -> str:
    """Eight random digits: typed by hand on a phone, good for 15 minutes, used once."""
    return STAFF_CODE.new()


def shown(code: str) -> str:
    """「職員 1234 5678」: the line to send, as the admin screen shows it."""
    return STAFF_CODE.shown(code)


def read(text: str) -> str | None:
    """The code in a line a staff member sent, however they spaced it (full-width digits too), else None."""
    return STAFF_CODE.read(text)


def code_hash(tenant: str, code: str) -> str:
    """How a code is kept: never in clear (a store's reader must not be able to link their own LINE)."""
    return STAFF_CODE.hash(tenant, code)


def case_anchor(member: str, cycle: int | None) -> str:
    """The call queue's anchor for one case, in the alert's link: it names no one."""
    return "case-" + hashlib.sha256(f"{member}:{cycle}".encode()).hexdigest()[:12]
