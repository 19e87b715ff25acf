"""What the subject agent does with one message of a partition it owns, minus the I/O.

Messages on the inbound topic are either an event for one subject, or a tick for the whole
partition. The agent keeps one `Partition` (decoded states + due-index) per assigned partition,
built from the durable table the first time the partition is seen after an assignment.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from agents.partition import Partition
from agents.subject import State
from schemas.effects import Effect


class WriteThrough(dict):
    """A partition's decoded states; every write also goes to the durable, changelog-backed table."""

    def __init__(self, items: Iterable[tuple[str, State]], persist: Callable[[str, State], None]):
        super().__init__(items)
        self._persist = persist

    def __setitem__(self, subject: str, state: State) -> None:
        super().__setitem__(subject, state)
        self._persist(subject, state)


class SubjectAgent:
    def __init__(self, load: Callable[[int], Iterable[tuple[str, State]]], persist: Callable[[str, State], None]):
        self._load, self._persist = load, persist
        self.partitions: dict[int, Partition] = {}
        self.last_tick: dict[int, int] = {}

    def partition(self, number: int) -> Partition:
        part = self.partitions.get(number)
        if part is None:  # first message since the partition was assigned: rebuild from the table
            part = self.partitions[number] = Partition(WriteThrough(self._load(number), self._persist))
        return part

    def apply(self, number: int, subject: str, event) -> list[Effect]:
        return self.partition(number).apply(subject, event)

    def tick(self, number: int, at: int) -> list[Effect]:
        # A tick older than one already processed (a replay after a crash) changes nothing.
        self.last_tick[number] = max(at, self.last_tick.get(number, at))
        return self.partition(number).tick(at)

    def revoke(self, numbers: Iterable[int]) -> None:
        for number in numbers:
            self.partitions.pop(number, None)
            self.last_tick.pop(number, None)

    def due_size(self) -> int:
        return sum(len(p.due) for p in self.partitions.values())
