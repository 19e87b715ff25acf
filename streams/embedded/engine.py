"""The engine loop of the embedded runtime: inbox and clock in, states and effects out, per commit.

One tenant's subjects live in one `Partition`, loaded from the store at start. Each `step` applies
the inbox rows that arrived since the last one, then a tick, and commits the changed states, the
effects and the new position together (store.commit_step). The pure core decides everything; this
module only moves records between it and SQLite.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from agents.partition import Partition
from agents.subject_agent import Tracked
from schemas.effects import Effect
from streams.embedded.store import Store


class Engine:
    def __init__(self, store: Store, tenant: str):
        self.store, self.tenant = store, tenant
        self.part = Partition(Tracked(store.states(tenant)))
        self.part.table.changed.clear()  # loaded, not changed
        self.inbox, self.last_tick = store.cursor(tenant)

    def step(self, tick_at: int | None) -> list[Effect]:
        """Apply what waits in the inbox, then tick at `tick_at` (if later than the last); commit."""
        effects: list[Effect] = []
        pending = self.store.pending(self.tenant, self.inbox)
        for row in pending:
            effects += self.part.apply(row.subject, row.event)
        if tick_at is not None and (self.last_tick is None or tick_at > self.last_tick):
            effects += self.part.tick(tick_at)
            self.last_tick = tick_at
        if pending:
            self.inbox = pending[-1].seq
        table = self.part.table
        changed, table.changed = table.changed, {}
        if pending or changed or effects:
            self.store.commit_step(self.tenant, self.inbox, self.last_tick, changed, effects)
        return effects

    async def run(self, now: Callable[[], int], grace_ms: int, every_seconds: float, stop: asyncio.Event,
                  on_effects: Callable[[list[Effect]], None] | None = None) -> None:
        """Step every `every_seconds` (wall) until `stop`; ticks trail `now()` by `grace_ms`."""
        while not stop.is_set():
            effects = self.step(now() - grace_ms)
            if effects and on_effects is not None:
                on_effects(effects)
            try:
                await asyncio.wait_for(stop.wait(), every_seconds)
            except asyncio.TimeoutError:
                pass
