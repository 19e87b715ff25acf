"""The slot lattice: where checks may go. Slots are anchored to the schedule, never to tap times."""
from __future__ import annotations

from datetime import date

from agents.clock import DAY, MINUTE, local_ordinal, local_to_epoch, offset_ms, steady
from schemas.settings import Schedule


def anchor(schedule: Schedule, at: int) -> int:
    """Local date ordinal of the first slot at or after `at`: slot 0 of the lattice."""
    first = local_ordinal(schedule.zone, at) - 1  # a day early: the zone's date of `at` may lag the slot's
    if schedule.weekday is not None:
        first += (schedule.weekday - date.fromordinal(first).weekday()) % 7
        step = 7
    else:
        step = 1
    while local_to_epoch(schedule.zone, first, schedule.minute) < at:
        first += step
    return first


def next_slot(schedule: Schedule, anchor_ordinal: int, after: int, strict: bool) -> int:
    """Epoch ms of the first lattice slot after `after` (strictly, or at-or-after)."""
    zone, every = schedule.zone, schedule.every_days
    base = local_to_epoch(zone, anchor_ordinal, schedule.minute)
    if base > after or (base == after and not strict):
        return base
    # Where the zone's offset holds still (always, in Japan), the lattice is plain arithmetic.
    period = every * DAY
    k = (after - base) // period + (1 if strict or (after - base) % period else 0)
    slot = base + k * period
    # (and where slot 0 itself shows the schedule's wall time: not so if it fell in a DST gap)
    if steady(zone, base, slot) and (base + offset_ms(zone, base)) % DAY == schedule.minute * MINUTE:
        return slot
    k = max(0, (local_ordinal(zone, after) - anchor_ordinal) // every - 1)
    while True:
        slot = local_to_epoch(zone, anchor_ordinal + k * every, schedule.minute)
        if slot > after or (slot == after and not strict):
            return slot
        k += 1
