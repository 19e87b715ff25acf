"""One partition's subjects: the state table and the due-index over it, owned by one task.

The Kafka runtime keeps one of these per assigned partition (rebuilt from the changelog table on
assignment); the embedded runtime and the simulator keep one for everything.
"""
from __future__ import annotations

from collections.abc import MutableMapping

from agents.due_index import DueIndex
from agents import group, member
from agents.subject import State, start
from schemas.effects import Effect
from schemas.events import Event, Tick


class Partition:
    def __init__(self, table: MutableMapping[str, State] | None = None):
        self.table: MutableMapping[str, State] = {} if table is None else table
        self.due = DueIndex((subject, state.due) for subject, state in self.table.items())

    def apply(self, subject: str, event: Event) -> list[Effect]:
        """Step one subject with an inbound event. An unknown subject is only created by the events
        `agents.subject.start` names (a registration, a sign-up, a group joined)."""
        state = self.table.get(subject)
        if state is None:
            state, effects = start(event)
            if state is None:
                return effects
        else:
            state, effects = _STEP[type(state)](state, event)
        self.table[subject] = state
        self.due.set(subject, state.due)
        return effects

    def tick(self, at: int) -> list[Effect]:
        """The clock reached `at`: step every subject with a timer due by then."""
        out: list[Effect] = []
        table, due, clock = self.table, self.due, Tick(at)
        for subject in due.pop_due(at):
            state = table[subject]
            state, effects = _STEP[type(state)](state, clock)
            table[subject] = state
            due.set(subject, state.due)
            out.extend(effects)
        return out

    def next_due(self) -> int | None:
        return self.due.peek()



_STEP = {member.MemberState: member.step, group.GroupState: group.step}  # subject.step without its checks
