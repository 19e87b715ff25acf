"""A scenario as the messages of the inbound topic, in the order a partition must see them.

Pure. Each inbound event goes to every subject it concerns, on that subject's partition; virtual
ticks go to every partition on a grid, each after the events at or before its instant (ties go to
the resident), and a last tick just before `end` carries a flush token the worker echoes back.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agents.subject import addressed
from schemas.events import Tick
from streams import codec
from streams.codec import Undecodable
from streams.kafka.settings import partition_of
from streams.scenario import Scenario

Message = tuple[int, bytes, bytes]  # partition, key, value


def feed(scenario: Scenario, partitions: int, tick_every: int, flush: str) -> Iterator[Message]:
    for event in scenario.registrations:
        yield event_message(event.settings.id, event, partitions)
    grid = scenario.start - scenario.start % tick_every + tick_every
    for event in scenario.events:
        while grid < event.at:
            yield from tick_messages(grid, partitions)
            grid += tick_every
        for subject in addressed(event):
            yield event_message(subject, event, partitions)
    while grid < scenario.end:
        yield from tick_messages(grid, partitions)
        grid += tick_every
    yield from tick_messages(scenario.end - 1, partitions, flush)


def event_message(subject: str, event, partitions: int, reply: tuple[str, int] | None = None) -> Message:
    """An inbound event for one subject, on that subject's partition. `reply`: the reply token that
    came with it and its time, so that the answer can go by the free reply API."""
    obj = {"subject": subject, "event": codec.event_to_obj(event)}
    if reply is not None:
        obj["reply"] = list(reply)
    value = codec.dumps(obj)
    return partition_of(subject, partitions), subject.encode(), value


def tick_messages(at: int, partitions: int, flush: str | None = None) -> Iterator[Message]:
    """A tick for every partition; with `flush`, the worker echoes it on the effects topic when done."""
    value = codec.dumps({"tick": at} if flush is None else {"tick": at, "flush": flush})
    for number in range(partitions):
        yield number, b"", value


@dataclass(frozen=True, slots=True)
class Record:
    """An inbound message as the worker reads it back (the inverse of the two functions above)."""
    subject: str | None                 # None for a tick (the whole partition)
    event: object                       # Tick, or an inbound event
    reply: tuple[str, int] | None = None
    flush: str | None = None


def read(value: bytes | None) -> Record:
    """The record an inbound message holds, or `Undecodable` (or a JSON error) saying why not."""
    if not value:
        raise Undecodable("empty message")
    obj = codec.loads(value)
    if not isinstance(obj, dict):
        raise Undecodable("message: expected a JSON object")
    flush = obj.get("flush")
    if flush is not None and not isinstance(flush, str):
        raise Undecodable("flush: expected a string")
    if "tick" in obj:
        if type(obj["tick"]) is not int:
            raise Undecodable("tick: expected an integer (epoch ms)")
        return Record(None, Tick(obj["tick"]), None, flush)
    subject, reply = obj.get("subject"), obj.get("reply")
    if not isinstance(subject, str):
        raise Undecodable("subject: expected a string")
    if "event" not in obj:
        raise Undecodable("event: missing")
    event = codec.event_from_obj(obj["event"])
    if reply is not None:
        if not (isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], str) and type(reply[1]) is int):
            raise Undecodable("reply: expected [token, epoch ms]")
        reply = (reply[0], reply[1])
    return Record(subject, event, reply, flush)
