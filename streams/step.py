"""One batch of one partition's input, stepped: what both runtimes run between reading and committing.

    (position, key, raw) ─▶ read ─▶ SubjectAgent: apply an event | tick | roll-call ─▶ Stepped
                             └── fails (Undecodable, Refused, a bug) ──▶ Stepped.aside; on with the next

`Stepped` is all that the shell makes durable together, and nothing of it is durable before: the
effects (with their tenant, in order), the subjects' new states, the reply tokens the answers may
use, what was set aside and why, and the flush tokens a driver waits for. The embedded runtime
commits it in one SQLite transaction (streams/embedded/engine.py), the Kafka runtime in one Kafka
transaction per partition batch (streams/kafka/app.py); where each effect goes is agents/routes.py.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agents.messages import answers, reply_holder
from agents.subject import State
from agents.subject_agent import SubjectAgent
from schemas.effects import Effect
from schemas.events import RollCall
from streams import quarantine


@dataclass(frozen=True, slots=True)
class Input:
    """One input as the engine takes it: an event for one subject of one tenant, a tick, or a
    tenant's roll-call (for every subject of that tenant on the partition)."""
    tenant: str | None                  # None for a tick (every tenant of the partition)
    subject: str | None                 # None for a tick or a roll-call
    event: object                       # Tick, RollCall, or an inbound event
    reply: tuple[str, int] | None = None  # the reply token that came with the event, and its time
    flush: str | None = None            # a driver's token, echoed once the batch is out


@dataclass(frozen=True, slots=True)
class Aside:
    """One input set aside: where it was, under what subject, what it held, and why."""
    position: object     # the inbox row's number, the message's offset
    tenant: str | None   # None when the input could not be read
    subject: str         # the input's subject (its key as stored), "" when it had none
    raw: object          # the input as stored, or the Tick a subject could not take
    kind: str            # quarantine.UNDECODABLE | REFUSED | ERROR
    reason: str          # one line, no personal data (quarantine.classify)


@dataclass(slots=True)
class Stepped:
    effects: list[tuple[str, Effect]] = field(default_factory=list)         # (tenant, effect)
    states: dict[tuple[str, str], State | None] = field(default_factory=dict)  # (tenant, subject) -> state (None: gone)
    replies: dict[str, tuple[str, int]] = field(default_factory=dict)       # effect id -> (token, at)
    aside: list[Aside] = field(default_factory=list)
    flushes: list[str] = field(default_factory=list)
    events: list[object] = field(default_factory=list)                      # the events applied
    ticked: bool = False
    behind: bool = False  # a tick's budget left subjects due: the shell ticks again at once


# Subjects a tick steps at most per batch (about half a second of the core's time): a big tenant's
# thousands of checks due at once go out over several batches, each committed, and a small tenant on
# the same partition has all of its checks in the first (SubjectAgent.tick shares the budget out).
TICK_BUDGET = 5_000


def step(agent: SubjectAgent, number: int, inputs: Iterable[tuple[object, str, object]],
         read: Callable[[object], Input], budget: int | None = TICK_BUDGET) -> Stepped:
    """Apply `inputs` — (position, subject as stored, raw) — in order to partition `number` of
    `agent`; `read(raw)` decodes one, or raises saying why it cannot. A tick steps `budget`
    subjects at most (None: all that are due), but a tick with a flush token all of them: a
    driver that waits for it expects every effect up to its time."""
    out = Stepped()
    for position, key, raw in inputs:
        try:
            record = read(raw)
            if type(record.event) is RollCall:  # every subject of the tenant here in its areas
                out.effects += [(record.tenant, e) for e in agent.rollcall(number, record.tenant, record.event)]
                out.aside += [Aside(position, tenant, subject, event, quarantine.ERROR, reason)
                              for tenant, subject, event, reason in agent.drain_faults(number)]
            elif record.subject is None:
                out.effects += agent.tick(number, record.event.at, budget if record.flush is None else None)
                out.ticked = True
                out.aside += [Aside(position, tenant, subject, tick, quarantine.ERROR, reason)
                              for tenant, subject, tick, reason in agent.drain_faults(number)]
            else:
                tenant = record.tenant
                effects = agent.apply(number, tenant, record.subject, record.event)
                if record.reply is not None:  # answers to the person's own tap may use its reply token
                    holder = answers(record.event)
                    out.replies.update((e.id, record.reply) for e in effects if reply_holder(e) == holder)
                out.effects += [(tenant, e) for e in effects]
                out.events.append(record.event)
        except Exception as error:  # nothing of it was applied (Partition.apply changes nothing then)
            out.aside.append(Aside(position, None, key, raw, *quarantine.classify(error)))
            continue
        if record.flush is not None:
            out.flushes.append(record.flush)
    out.states = agent.drain(number)
    out.behind = out.ticked and agent.behind(number)
    return out
