"""One partition's subjects: the state table and the due-index over it, owned by one task.

The Kafka runtime keeps one of these per assigned partition (rebuilt from the changelog table on
assignment); the embedded runtime and the simulator keep one for everything.
"""
from __future__ import annotations

from collections.abc import Iterable, MutableMapping

from agents.due_index import DueIndex
from agents import group, member
from agents.subject import State, admit, start
from schemas.effects import Effect
from schemas.events import Event, Tick


class Partition:
    def __init__(self, table: MutableMapping[str, State] | None = None,
                 due: Iterable[tuple[str, int | None]] | None = None):
        """`due`: each subject's due instant, when the shell knows them without reading the table's
        states (a table that decodes each state when it is first read)."""
        self.table: MutableMapping[str, State] = {} if table is None else table
        self.due = DueIndex(((subject, state.due) for subject, state in self.table.items()) if due is None else due)
        # (subject, tick, reason) of subjects a tick could not step: kept as they were and left out
        # of the due-index until their next event; the shell quarantines these (drain_faults)
        self.faults: list[tuple[str, Tick, str]] = []
        self.ticked = 0  # subjects the last tick stepped (or tried to)

    def apply(self, subject: str, event: Event) -> list[Effect]:
        """Step one subject with an inbound event, or raise `Refused` and change nothing. An unknown
        subject is only created by the events `agents.subject.start` names (a registration, a
        sign-up, a group joined)."""
        state = self.table.get(subject)
        admit(subject, state, event)
        if state is None:
            state, effects = start(event)
            if state is None:
                return effects
        else:
            state, effects = _STEP[type(state)](state, event)
        self.table[subject] = state
        self.due.set(subject, state.due)
        return effects

    def tick(self, at: int, limit: int | None = None) -> list[Effect]:
        """The clock reached `at`: step every subject with a timer due by then, or the first `limit`
        of them (by due instant): the others stay due, for the next tick (`behind`)."""
        out: list[Effect] = []
        table, due, clock = self.table, self.due, Tick(at)
        admit("", None, clock)  # a time the calendar can take, or Refused before anything moves
        subjects = due.pop_due(at, limit)
        self.ticked = len(subjects)
        for subject in subjects:
            state = table.get(subject)
            if state is None:  # gone since it was indexed: a saved state no one could read (counted there)
                continue
            try:
                state, effects = _STEP[type(state)](state, clock)
            except Exception as error:  # one subject's fault must not stop the tick for the others
                self.faults.append((subject, clock, f"{type(error).__name__} in a tick"))
                continue
            table[subject] = state
            due.set(subject, state.due)
            out.extend(effects)
        return out

    def drain_faults(self) -> list[tuple[str, Tick, str]]:
        faults, self.faults = self.faults, []
        return faults

    def next_due(self) -> int | None:
        return self.due.peek()

    def behind(self, at: int) -> bool:
        """Subjects due by `at` that a tick with a limit left for the next one."""
        earliest = self.due.peek()
        return earliest is not None and earliest <= at


_STEP = {member.MemberState: member.step, group.GroupState: group.step}  # subject.step without its checks
