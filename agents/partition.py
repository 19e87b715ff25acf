"""One partition's subjects: the state table and the due-index over it, owned by one task.

The Kafka runtime keeps one of these per assigned partition (rebuilt from the changelog table on
assignment); the embedded runtime and the simulator keep one for everything.
"""
from __future__ import annotations

from collections.abc import Iterable, MutableMapping

from agents.due_index import DueIndex
from agents import group, member, rollcall
from agents.subject import State, admit, start
from schemas.effects import Effect
from schemas.events import Event, RollCall, Tick


class Partition:
    def __init__(self, table: MutableMapping[str, State] | None = None,
                 due: Iterable[tuple[str, int | None]] | None = None):
        """`due`: each subject's due instant, when the shell knows them without reading the table's
        states (a table that decodes each state when it is first read)."""
        self.table: MutableMapping[str, State] = {} if table is None else table
        self.due = DueIndex(((subject, wake(state)) for subject, state in self.table.items()) if due is None else due)
        # (subject, event, reason) of subjects a tick or a roll-call could not step: kept as they were and left out
        # of the due-index until their next event; the shell quarantines these (drain_faults)
        self.faults: list[tuple[str, Tick | RollCall, str]] = []
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
            if state is None:  # withdrawn: the subject is gone (the shells delete what they saved)
                del self.table[subject]
                self.due.set(subject, None)
                return effects
        self.table[subject] = state
        self.due.set(subject, wake(state))
        return effects

    def tick(self, at: int, limit: int | None = None) -> list[Effect]:
        """The clock reached `at`: step every subject with a timer due by then, or the first `limit`
        of them (by due instant): the others stay due, for the next tick (`behind`)."""
        clock = Tick(at)
        admit("", None, clock)  # a time the calendar can take, or Refused before anything moves
        subjects = self.due.pop_due(at, limit)
        self.ticked = len(subjects)
        return self._step_each(subjects, clock, "tick")

    def rollcall(self, event: RollCall) -> list[Effect]:
        """A roll-call reaches every subject here in its areas (agents/rollcall.py); the others are
        not stepped at all, so their states stay as they were."""
        admit("", None, event)  # a roll-call the core can take, or Refused before anything moves
        subjects = [subject for subject, state in self.table.items() if rollcall.concerns(event, state.settings.area)]
        return self._step_each(subjects, event, "roll-call")

    def _step_each(self, subjects: list[str], event: Tick | RollCall, what: str) -> list[Effect]:
        out: list[Effect] = []
        table, due = self.table, self.due
        for subject in subjects:
            state = table.get(subject)
            if state is None:  # gone since it was indexed: a saved state no one could read (counted there)
                continue
            try:
                state, effects = _STEP[type(state)](state, event)
            except Exception as error:  # one subject's fault must not stop the others
                self.faults.append((subject, event, f"{type(error).__name__} in a {what}"))
                continue
            table[subject] = state
            due.set(subject, wake(state))
            out.extend(effects)
        return out

    def drain_faults(self) -> list[tuple[str, Tick | RollCall, str]]:
        faults, self.faults = self.faults, []
        return faults

    def next_due(self) -> int | None:
        return self.due.peek()

    def behind(self, at: int) -> bool:
        """Subjects due by `at` that a tick with a limit left for the next one."""
        earliest = self.due.peek()
        return earliest is not None and earliest <= at


_STEP = {member.MemberState: member.step, group.GroupState: group.step}  # subject.step without its checks


def wake(state: State) -> int | None:
    """A subject's next timer: what the due-index holds (a member's roll-call has a timer of its own)."""
    return member.wake(state) if type(state) is member.MemberState else state.due
