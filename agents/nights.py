"""Quiet nights for contacts: a contact who chose 「夜は知らせない（21時〜7時）」 gets a notice that
falls due between 21:00 and 7:00 (the tenant's time) at 7:00 instead. Pure.

Only the delivery waits, never the ladder: the notice's instant, and rule 1's three hours from it,
stand, so at night staff are reached by the ladder as if nobody had gone to look. Staff calls are
never held. If the resident answers before 7:00, the held notice and its all clear both stay unsent
(streams/line/held.py): there is nothing left to worry anyone about.
"""
from __future__ import annotations

from agents.clock import MINUTE, local_ordinal, local_to_epoch, offset_ms

QUIET_FROM, QUIET_UNTIL = 21, 7   # o'clock, local


def _minute_of_day(at_ms: int, zone: str) -> int:
    return ((at_ms + offset_ms(zone, at_ms)) // MINUTE) % (24 * 60)


def quiet(at_ms: int, zone: str) -> bool:
    """True from 21:00 up to (not including) 7:00 local."""
    hour = _minute_of_day(at_ms, zone) // 60
    return hour >= QUIET_FROM or hour < QUIET_UNTIL


def morning_after(at_ms: int, zone: str) -> int:
    """The first 7:00 local strictly after `at_ms`."""
    day = local_ordinal(zone, at_ms)
    seven = local_to_epoch(zone, day, QUIET_UNTIL * 60)
    return seven if seven > at_ms else local_to_epoch(zone, day + 1, QUIET_UNTIL * 60)
