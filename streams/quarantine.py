"""Quarantine: an inbound record the engine cannot decode or apply is kept aside, and the engine goes on.

One bad record (a forged postback, a record of a newer version, a bug the core raises on) must not
stop processing for anyone else, and must not be lost either. Both runtimes do the same with it:

    decode (streams/codec.py: Undecodable) ─▶ apply (agents/partition.py: Refused, or a bug) ─▶ effects
           └───────────── fails ─────────────────────┘
                     ▼
    kept with its reason (embedded: the `quarantine` table, in the step's transaction;
    Kafka: the `<prefix>-quarantine` topic, in the batch's transaction), counted in
    anpi_quarantined_total{kind}, logged with the reason only (never the record: it may hold a
    phone number or a message's meaning), and never applied again by a restart: the position
    that passed it commits with it. `anpi quarantine list` shows them; `anpi quarantine retry ID`
    puts one back on the engine's way in after a fix (it is applied then like a late event).

This module is what the two share: how a failure is named, the counter, and how a row is shown.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from agents.subject import Refused
from streams.codec import Undecodable

UNDECODABLE, REFUSED, ERROR = "undecodable", "refused", "error"


@dataclass(frozen=True, slots=True)
class Entry:
    """One quarantined record: where it came from, what it held (as stored), and why it is aside."""
    id: str            # embedded: the row's number; Kafka: "<partition>:<offset>[:<subject>]"
    subject: str       # "" when the record did not say (or could not be read)
    record: str        # the record as it was read (JSON text, or a note when it was not text)
    kind: str          # UNDECODABLE | REFUSED | ERROR
    reason: str        # one line, no personal data
    at: int | None     # epoch ms: the engine's time when it was set aside
    retried: bool = False


def classify(error: BaseException) -> tuple[str, str]:
    """(kind, reason) of a failure to decode or apply one record. The reason never quotes data: the
    core's and the codec's messages name fields and kinds only; anything else is named by its type."""
    if isinstance(error, Undecodable):
        return UNDECODABLE, str(error)
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
        return UNDECODABLE, "not JSON text"
    if isinstance(error, RecursionError):
        return UNDECODABLE, "nested too deeply"
    if isinstance(error, Refused):
        return REFUSED, str(error)
    return ERROR, f"{type(error).__name__} while applying it (a fault of the engine's: please report it)"


def counter(registry: CollectorRegistry) -> Counter:
    return Counter("anpi_quarantined", "Inbound records set aside because the engine could not decode or "
                   "apply them, by kind (undecodable, refused, error)", ["kind"], registry=registry)


def show(entry: Entry) -> str:
    """One line for `anpi quarantine list`."""
    state = "retried" if entry.retried else "held"
    return f"{entry.id}\t{state}\t{entry.kind}\t{entry.subject or '-'}\t{entry.reason}"


# --- `anpi quarantine list | retry` ----------------------------------------------------------------


def command(what: str, entry_id: str | None, db: str | None, tenant: str, kafka: bool, out) -> int:
    """List the entries (held and retried), or put one held entry back on the engine's way in."""
    if kafka:
        import asyncio

        from streams.kafka import quarantine as kafka_quarantine
        from streams.kafka.settings import Settings

        settings = Settings.from_env()
        if what == "list":
            entries = asyncio.run(kafka_quarantine.entries(settings))
        else:
            done = asyncio.run(kafka_quarantine.retry(settings, entry_id))
    else:
        from streams import startup
        from streams.embedded.store import Store

        startup.sqlite_file(db)
        store = Store(db)
        try:
            if what == "list":
                entries = store.quarantined(tenant)
            else:
                done = entry_id.isdigit() and store.retry_quarantined(tenant, int(entry_id))
        finally:
            store.close()
    if what == "list":
        print("id\tstate\tkind\tsubject\treason", file=out)
        for entry in entries:
            print(show(entry), file=out)
        return 0
    if not done:
        print(f"anpi quarantine: no held entry {entry_id!r}", file=out)
        return 1
    print(f"anpi quarantine: {entry_id} put back; the engine applies it next (at its own time, or later)", file=out)
    return 0
