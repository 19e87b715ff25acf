"""Run the core over virtual time: the scenario's events, and the clock jumping from one due timer
to the next. A month of a large tenant simulates in seconds, and the same history always gives the
same effects.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from heapq import heappop, heappush

from agents.clock import iso
from agents.partition import Partition
from agents.subject import addressed
from schemas import effects as fx
from schemas.effects import Effect
from schemas.events import Inbound
from streams.simulation.scenario import Scenario


def run(scenario: Scenario) -> list[Effect]:
    """Every effect from start (inclusive) to end (exclusive), sorted by (at, subject, effect)."""
    return sort([e for batch in simulate(scenario.registrations, scenario.events, scenario.end) for e in batch])


def simulate(registrations: Iterable[Inbound], events: Iterable[Inbound], end: int,
             respond: Callable[[list[Effect]], Iterable[Inbound]] | None = None,
             partition: Partition | None = None) -> Iterator[list[Effect]]:
    """Apply `events` (in time order) and the clock's due timers, merged; stop before `end`.

    Yields the effects in batches: those of one event, or of one tick.

    Ties go to the resident: an inbound event is applied before timers due at the same instant.
    `respond` plays the residents: it sees each batch of effects and may answer with later events.
    """
    part = Partition() if partition is None else partition
    apply, tick, next_due = part.apply, part.tick, part.next_due
    for event in registrations:
        apply(event.settings.id, event)
    queue = [(event.at, seq, event) for seq, event in enumerate(events)]  # sorted, so already a heap
    seq = len(queue)
    while True:
        due = next_due()
        if queue and queue[0][0] < end and (due is None or queue[0][0] <= due):
            event = heappop(queue)[2]
            effects = []
            for subject in addressed(event):
                effects += apply(subject, event)
        elif due is not None and due < end:
            effects = tick(due)
        else:
            return
        if effects:
            yield effects
            if respond is not None:
                for answer in respond(effects):
                    heappush(queue, (answer.at, seq, answer))
                    seq += 1


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
    if effect.effect == fx.STAFF_CALL and effect.data is not None:
        record["reason"] = effect.data
    elif effect.effect == fx.STAFF_REMINDER:
        record["n"] = int(effect.data)
    return json.dumps(record, ensure_ascii=False)
