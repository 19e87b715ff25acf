"""Run the core over virtual time: the scenario's events, and the clock jumping from one due timer
to the next. A month of a large tenant simulates in seconds, and the same history always gives the
same effects.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from agents.clock import iso
from agents.partition import Partition
from agents.subject import addressed
from schemas.effects import Effect
from schemas.events import Inbound
from streams.scenario import Scenario


def run(scenario: Scenario) -> list[Effect]:
    """Every effect from start (inclusive) to end (exclusive), sorted by (at, subject, effect)."""
    return sort(simulate(scenario.registrations, scenario.events, scenario.end))


def simulate(registrations: Iterable[Inbound], events: Iterable[Inbound], end: int,
             partition: Partition | None = None) -> list[Effect]:
    """Apply `events` (already in time order) and the clock's due timers, merged; stop before `end`.

    Ties go to the resident: an inbound event is applied before timers due at the same instant.
    """
    part = Partition() if partition is None else partition
    out: list[Effect] = []
    for event in registrations:
        part.apply(event.settings.id, event)
    pending: Iterator[Inbound] = iter(events)
    event = next(pending, None)
    while True:
        due = part.next_due()
        if event is not None and event.at < end and (due is None or event.at <= due):
            for subject in addressed(event):
                out.extend(part.apply(subject, event))
            event = next(pending, None)
        elif due is not None and due < end:
            out.extend(part.tick(due))
        else:
            return out


def sort(effects: list[Effect]) -> list[Effect]:
    # Stable: effects with the same (at, subject, effect) keep the order they were decided in.
    return sorted(effects, key=lambda e: (e.at, e.subject, e.effect))


def to_json(effect: Effect, zone_name: str) -> str:
    record: dict = {"at": iso(zone_name, effect.at), "effect": effect.effect, "subject": effect.subject}
    if effect.cycle is not None:
        record["cycle"] = effect.cycle
    if effect.to is not None:
        record["to"] = list(effect.to)
    if effect.member is not None:
        record["member"] = effect.member
    if effect.members is not None:
        record["members"] = list(effect.members)
    return json.dumps(record, ensure_ascii=False)
