"""What the subject agent does with the messages of a partition it owns, minus the I/O.

Messages on the inbound topic are either an event for one subject, or a tick for the whole
partition. The agent keeps one `Partition` (decoded states + due-index) per assigned partition,
installed from the durable changelog the first time the partition is seen after an assignment.
The shell takes a batch of a partition's messages, steps them here, then writes the batch's effects
and the subjects' new states (`drain`) in one Kafka transaction.
"""
from __future__ import annotations

from collections.abc import Iterable

from agents.partition import Partition
from agents.subject import State
from schemas.effects import Effect


class Tracked(dict):
    """A partition's decoded states; remembers the subjects written since the last drain."""

    def __init__(self, items: Iterable[tuple[str, State]]):
        super().__init__(items)
        self.changed: dict[str, State] = {}

    def __setitem__(self, subject: str, state: State) -> None:
        super().__setitem__(subject, state)
        self.changed[subject] = state


class SubjectAgent:
    def __init__(self):
        self.partitions: dict[int, Partition] = {}
        self.last_tick: dict[int, int] = {}

    def install(self, number: int, states: Iterable[tuple[str, State]]) -> None:
        """A partition's saved states (from its changelog), before its first message is stepped."""
        self.partitions[number] = Partition(Tracked(states))

    def partition(self, number: int) -> Partition:
        return self.partitions[number]

    def apply(self, number: int, subject: str, event) -> list[Effect]:
        return self.partition(number).apply(subject, event)

    def tick(self, number: int, at: int) -> list[Effect]:
        # A tick older than one already processed (a replay after a crash) changes nothing.
        self.last_tick[number] = max(at, self.last_tick.get(number, at))
        return self.partition(number).tick(at)

    def drain(self, number: int) -> dict[str, State]:
        """The states written since the last drain (the last one per subject): what must be saved."""
        table = self.partition(number).table
        changed, table.changed = table.changed, {}
        return changed

    def revoke(self, numbers: Iterable[int]) -> None:
        """Forget partitions (moved to another worker, or their batch was not saved): install again."""
        for number in numbers:
            self.partitions.pop(number, None)
            self.last_tick.pop(number, None)

    def due_size(self) -> int:
        return sum(len(p.due) for p in self.partitions.values())
