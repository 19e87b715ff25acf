"""The engine loop of the embedded runtime: inbox and clock in, states and effects out, per commit.

One tenant's subjects live in one partition of a `SubjectAgent`, loaded from the store at start.
Each `step` runs the inbox rows that arrived since the last one, then a tick, through the batch
step both runtimes share (streams/step.py), and commits what it decided — the changed states, the
effects with their reply tokens, what was set aside, the new position — together
(store.commit_step). The pure core decides everything; this module only moves records between it
and SQLite.

Nothing stops it: a row the engine cannot decode or apply is set aside in the same commit that
passes it (streams/quarantine.py), and a step that fails as a whole (the disk, a lock) is retried
from what the store holds, after a pause; `health` says whether steps are being committed.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

from agents.subject_agent import SubjectAgent
from schemas.effects import Effect
from schemas.events import Tick
from streams import codec, quarantine
from streams.embedded.store import Pending, Store
from streams.step import Aside, Input, step
from streams.tenants.settings import retention_ms

log = logging.getLogger("anpi.engine")

ONE = 0  # the embedded engine's one partition of the SubjectAgent
STALE_AFTER = 30.0  # seconds without a committed step (the loop steps every half second) = unhealthy
PRUNE_EVERY = 3_600_000                     # engine time between two retention prunes (Store.prune)


class Metrics:
    """The engines' series: one set per process, shared by every tenant's engine."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.quarantined = quarantine.counter(self.registry)
        self.last_step = Gauge("anpi_engine_last_step_timestamp_seconds", "Wall time of the engine's last "
                               "step, committed or with nothing to commit", ["tenant"], registry=self.registry)


class Engine:
    def __init__(self, store: Store, tenant: str, metrics: Metrics | None = None):
        self.store, self.tenant = store, tenant
        self.metrics = metrics or Metrics()
        self.registry = self.metrics.registry
        self.quarantined = self.metrics.quarantined
        self.last_step = self.metrics.last_step.labels(tenant)
        self.stepped_at: float | None = None  # monotonic time of the last step that went through
        self.retention_ms = retention_ms(None)  # the default until the runtime sets the tenant's (設定 → 記録を残す期間): the runtime sets it
        self.pruned_at = float("-inf")            # engine time of the last prune (one an hour)
        self.load()

    def load(self) -> None:
        """(Re)build the subjects and the position from what the store holds."""
        self.agent = SubjectAgent()  # one partition (ONE): the tenant's every subject
        self.agent.install(ONE, ((self.tenant, subject, state) for subject, state in self.store.states(self.tenant)))
        self.inbox, self.last_tick = self.store.cursor(self.tenant)
        self.behind = False  # the last tick left subjects due (streams/step.TICK_BUDGET): tick again at once

    def step(self, tick_at: int | None) -> list[Effect]:
        """Apply what waits in the inbox, then tick at `tick_at` (if later than the last); commit."""
        pending = self.store.pending(self.tenant, self.inbox)
        inputs: list = [(f"inbox row {row.seq}", row.subject, row) for row in pending]
        if self.behind and self.last_tick is not None:  # what the last tick's budget left, at once
            tick_at = self.last_tick if tick_at is None else max(tick_at, self.last_tick)
        ticks = tick_at is not None and (self.last_tick is None or tick_at > self.last_tick or self.behind)
        if ticks:
            inputs.append(("a tick", "", Input(None, None, Tick(tick_at))))
        done = step(self.agent, ONE, inputs, self._read)
        self.behind = done.behind
        if ticks:  # taken, or set aside: either way passed, as a Kafka offset is
            self.last_tick = tick_at
        if pending:
            self.inbox = pending[-1].seq
        aside = [self._aside(entry) for entry in done.aside]
        effects = [effect for _, effect in done.effects]
        if pending or done.states or effects or aside:
            self.store.commit_step(self.tenant, self.inbox, self.last_tick,
                                   {subject: state for (_, subject), state in done.states.items()}, effects, aside,
                                   at=tick_at if tick_at is not None else self.last_tick, replies=done.replies)
        for _, _, kind, _ in aside:
            self.quarantined.labels(kind).inc()
        if tick_at is not None and tick_at - self.pruned_at >= PRUNE_EVERY:
            self.pruned_at = tick_at
            self.store.prune(self.tenant, tick_at - self.retention_ms)
        self.stepped_at = time.monotonic()
        self.last_step.set(time.time())
        return effects

    def _read(self, raw) -> Input:
        if isinstance(raw, Pending):
            return Input(self.tenant, raw.subject, codec.event_from_obj(json.loads(raw.event)), raw.reply)
        return raw  # the engine's own tick

    def _aside(self, entry: Aside) -> tuple[str, str, str, str]:
        """The quarantine row (subject, record as stored, kind, reason), and the log line (the reason
        only: the record may hold personal data)."""
        record = entry.raw.event if isinstance(entry.raw, Pending) else json.dumps(codec.event_to_obj(entry.raw))
        log.error("tenant %s: %s set aside (%s: %s); the engine goes on", self.tenant, entry.position, entry.kind,
                  entry.reason)
        return entry.subject, record, entry.kind, entry.reason

    def health(self) -> tuple[bool, str]:
        """(healthy, why): steps are going through, the last one less than STALE_AFTER seconds ago."""
        if self.stepped_at is None:
            return False, "the engine has not stepped yet"
        age = time.monotonic() - self.stepped_at
        if age > STALE_AFTER:
            return False, f"the engine's last step was {age:.0f} s ago"
        return True, "ok"

    async def run(self, now: Callable[[], int], grace_ms: int, every_seconds: float, stop: asyncio.Event,
                  on_effects: Callable[[list[Effect]], None] | None = None) -> None:
        """This engine alone: `run_engines` with one tenant."""
        await run_engines({self.tenant: self}, now, grace_ms, every_seconds, stop, on_effects)


async def run_engines(towns, now: Callable[[], int], grace_ms: int, every_seconds: float, stop: asyncio.Event,
                      on_effects: Callable[[list[Effect]], None] | None = None) -> None:
    """Step every tenant's engine (`towns`: id -> an Engine, or an object with `.engine`; read each
    beat, so a tenant added meanwhile is stepped from the next) every `every_seconds` (wall) until `stop`; ticks trail
    `now()` by `grace_ms`. One tenant's failed step is retried from what the store holds; the others go on."""
    while not stop.is_set():
        behind = False
        for town in list(towns.values()):
            engine = getattr(town, "engine", town)
            try:
                effects = engine.step(now() - grace_ms)
            except Exception:  # the step did not commit: start again from what the store holds
                log.exception("tenant %s: engine step failed; retrying from the stored position", engine.tenant)
                effects = []
                try:
                    engine.load()
                except Exception:
                    log.exception("tenant %s: could not reload the engine's state", engine.tenant)
            if effects and on_effects is not None:
                on_effects(effects)
            behind = behind or engine.behind
        if behind:  # a big tenant's checks go on in the next round, after every other tenant's step
            await asyncio.sleep(0)
            continue
        try:
            await asyncio.wait_for(stop.wait(), every_seconds)
        except asyncio.TimeoutError:
            pass
