"""A scenario as the messages of the inbound topic, in the order a partition must see them.

Pure; the records are streams/kafka/records.py's, of the home tenant. Each inbound event goes to
every subject it concerns, on that subject's partition; virtual ticks go to every partition on a
grid, each after the events at or before its instant (ties go to the resident), and a last tick
just before `end` carries a flush token the worker echoes back.
"""
from __future__ import annotations

from collections.abc import Iterator

from agents.subject import addressed
from schemas.events import RollCall
from streams.kafka.records import Message, event_message, rollcall_messages, tick_messages
from streams.simulation.scenario import Scenario


def feed(scenario: Scenario, partitions: int, tick_every: int, flush: str) -> Iterator[Message]:
    for event in scenario.registrations:
        yield event_message(event.settings.id, event, partitions)
    grid = scenario.start - scenario.start % tick_every + tick_every
    for event in scenario.events:
        while grid < event.at:
            yield from tick_messages(grid, partitions)
            grid += tick_every
        if type(event) is RollCall:
            yield from rollcall_messages(event, partitions)
        for subject in addressed(event):
            yield event_message(subject, event, partitions)
    while grid < scenario.end:
        yield from tick_messages(grid, partitions)
        grid += tick_every
    yield from tick_messages(scenario.end - 1, partitions, flush)
