"""Run the core over virtual time: the scenario's events, and the clock jumping from one due timer
to the next. A month of a large tenant simulates in seconds, and the same history always gives the
same effects.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from heapq import heappop, heappush
from operator import attrgetter

from agents.clock import iso
from agents.partition import Partition
from agents.subject import addressed
from schemas import effects as fx
from schemas.effects import Effect
from schemas.events import Inbound, RollCall
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
    apply, tick, next_due, rollcall = part.apply, part.tick, part.next_due, part.rollcall
    for event in registrations:
        apply(event.settings.id, event)
    queue = [(event.at, seq, event) for seq, event in enumerate(events)]  # sorted, so already a heap
    seq = len(queue)
    while True:
        due = next_due()
        if queue and queue[0][0] < end and (due is None or queue[0][0] <= due):
            event = heappop(queue)[2]
            effects = []
            if type(event) is RollCall:  # every subject in its areas
                effects = rollcall(event)
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
    return sorted(effects, key=_ORDER)


_ORDER = attrgetter("at", "subject", "effect")


class JsonLines:
    """Effects as `anpi simulate` prints them: one JSON object per line, keys in this order, as
    json.dumps writes them (", " and ": ", non-ASCII kept). Built by hand from memoised parts: a
    month of a town shares a few thousand instants and ids, and json.dumps and isoformat per effect
    were a third of the command's time."""

    def __init__(self, zone_name: str):
        self.zone = zone_name
        self._instants: dict[int, str] = {}
        self._strings: dict[str, str] = {}

    def _text(self, value: str) -> str:
        encoded = self._strings.get(value)
        if encoded is None:
            encoded = self._strings[value] = json.dumps(value, ensure_ascii=False)
        return encoded

    def line(self, effect: Effect) -> str:
        at = self._instants.get(effect.at)
        if at is None:
            at = self._instants[effect.at] = json.dumps(iso(self.zone, effect.at))
        text = self._text
        parts = ['{"at": ', at, ', "effect": ', text(effect.effect), ', "subject": ', text(effect.subject)]
        if effect.cycle is not None:
            parts += (', "cycle": ', str(effect.cycle))
        if effect.to is not None:
            parts += (', "to": [', ", ".join(map(text, effect.to)), "]")
        if effect.member is not None:
            parts += (', "member": ', text(effect.member))
        if effect.members is not None:
            parts += (', "members": [', ", ".join(map(text, effect.members)), "]")
        if effect.effect == fx.STAFF_CALL and effect.data is not None:
            parts += (', "reason": ', text(effect.data))
        elif effect.effect == fx.STAFF_REMINDER:
            parts += (', "n": ', str(int(effect.data)))
        if effect.rollcall is not None:
            parts += (', "rollcall": ', text(effect.rollcall), ', "drill": ', "true" if effect.data == fx.DRILL else "false")
        parts.append("}")
        return "".join(parts)


def to_json(effect: Effect, zone_name: str) -> str:
    """One effect's line (JsonLines, for one effect)."""
    return JsonLines(zone_name).line(effect)
