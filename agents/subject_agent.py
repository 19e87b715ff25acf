"""What the subject agent does with the messages of a partition it owns, minus the I/O.

Messages on the inbound topic are either an event for one subject of one tenant, or a tick for
the whole partition. The agent keeps one `Partition` (decoded states + due-index) per tenant per
assigned partition, installed from the durable changelog the first time the partition is seen
after an assignment.
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

    def __delitem__(self, subject: str) -> None:   # a withdrawn subject: None is saved as its deletion
        super().__delitem__(subject)
        self.changed[subject] = None


class SubjectAgent:
    """Per assigned Kafka partition, one `Partition` per tenant with subjects on it: a subject's state
    and timers are its tenant's, a tick is the Kafka partition's and steps every tenant there."""

    def __init__(self):
        self.partitions: dict[int, dict[str, Partition]] = {}   # Kafka partition -> tenant -> Partition
        self.last_tick: dict[int, int] = {}

    def install(self, number: int, states: Iterable[tuple[str, str, State]] = (),
                saved: dict[str, tuple[Tracked, Iterable[tuple[str, int | None]]]] | None = None) -> None:
        """A partition's saved (tenant, subject, state)s (from its changelog), before its first message;
        or `saved`: per tenant, a table the shell filled and each of its subjects' due instant."""
        by_tenant: dict[str, list[tuple[str, State]]] = {}
        for tenant, subject, state in states:
            by_tenant.setdefault(tenant, []).append((subject, state))
        self.partitions[number] = {tenant: Partition(Tracked(items)) for tenant, items in by_tenant.items()}
        for tenant, (table, due) in (saved or {}).items():
            self.partitions[number][tenant] = Partition(table, due)

    def partition(self, number: int, tenant: str) -> Partition:
        """The tenant's subjects on Kafka partition `number` (none yet: an empty one)."""
        tenants = self.partitions[number]
        found = tenants.get(tenant)
        if found is None:
            found = tenants[tenant] = Partition(Tracked(()))
        return found

    def apply(self, number: int, tenant: str, subject: str, event) -> list[Effect]:
        return self.partition(number, tenant).apply(subject, event)

    def rollcall(self, number: int, tenant: str, event) -> list[Effect]:
        """A tenant's roll-call, for its subjects on Kafka partition `number`."""
        return self.partition(number, tenant).rollcall(event)

    def tick(self, number: int, at: int, budget: int | None = None) -> list[tuple[str, Effect]]:
        """(tenant, effect) of every subject due by `at` on the partition, tenant by tenant; with a
        `budget`, of that many subjects at most, shared fairly: the tenants take turns, a slice of
        the budget each, so that a tenant with a few checks due has them all in this batch however
        many another tenant has. What the budget leaves stays due for the next tick (`behind`)."""
        # A tick older than one already processed (a replay after a crash) changes nothing.
        self.last_tick[number] = max(at, self.last_tick.get(number, at))
        parts = self.partitions[number]
        if budget is None:
            return [(tenant, effect) for tenant, part in parts.items() for effect in part.tick(at)]
        out: list[tuple[str, Effect]] = []
        waiting = [(tenant, part) for tenant, part in parts.items() if part.behind(at)]
        while waiting and budget > 0:
            share = max(1, budget // len(waiting))
            for tenant, part in waiting:
                out += [(tenant, effect) for effect in part.tick(at, min(share, budget))]
                budget -= max(1, part.ticked)
                if budget <= 0:
                    break
            waiting = [(tenant, part) for tenant, part in waiting if part.behind(at)]
        return out

    def behind(self, number: int) -> bool:
        """Subjects of the partition due by its last tick that a budget left for the next one."""
        at = self.last_tick.get(number)
        return at is not None and any(part.behind(at) for part in self.partitions.get(number, {}).values())

    def drain(self, number: int) -> dict[tuple[str, str], State | None]:
        """The states written since the last drain (the last one per subject): what must be saved;
        None for a subject that is gone (withdrawn): its saved state is deleted."""
        out: dict[tuple[str, str], State | None] = {}
        for tenant, part in self.partitions[number].items():
            table = part.table
            changed, table.changed = table.changed, {}
            out.update(((tenant, subject), state) for subject, state in changed.items())
        return out

    def drain_faults(self, number: int) -> list[tuple[str, str, object, str]]:
        """(tenant, subject, tick or roll-call, reason) of subjects one could not step."""
        return [(tenant, *fault) for tenant, part in self.partitions[number].items() for fault in part.drain_faults()]

    def state(self, number: int, tenant: str, subject: str) -> State | None:
        part = self.partitions.get(number, {}).get(tenant)
        return part.table.get(subject) if part is not None else None

    def revoke(self, numbers: Iterable[int]) -> None:
        """Forget partitions (moved to another worker, or their batch was not saved): install again."""
        for number in numbers:
            self.partitions.pop(number, None)
            self.last_tick.pop(number, None)

    def due_size(self) -> int:
        return sum(len(p.due) for tenants in self.partitions.values() for p in tenants.values())
