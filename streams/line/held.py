"""Deliveries held for the morning (agents/nights.py): the seam, with one store per runtime.

    the sender, a contacts_notified at night to a contact with quiet nights ─▶ hold(items)
    the sender, an all clear to a contact whose notice is still held ─▶ cancel(keys): neither goes
    the release loop (Sender.release_held) ─▶ due(now) ─▶ push, with the same retry key an immediate
        push would have had (so a release repeated after a crash reaches nobody twice) ─▶ done(keys)

    embedded (SQLite)  streams/embedded/held.py   rows of the store's file, the sender's own process
    Kafka + Redis      streams/kafka/held.py      a hash and a due-set per tenant; every sender
                                                  replica releases, each item leased to one at a time

A hold is written before the batch holding its notice is marked sent (embedded) or acked (Kafka),
so a crash in between holds it again (the same key: kept once); a cancel leaves a tombstone until a
day after the release, so a batch delivered again still finds the notice cancelled.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

LEASE_MS = 60_000            # a released item is another replica's to send again after this
TOMBSTONE_MS = 24 * 3_600_000


class HeldItem(NamedTuple):
    key: str                        # notice_key(member, cycle, contact)
    release_at: int                 # epoch ms: 7:00 after the notice fell due
    to: str
    effect_id: str
    messages: tuple[dict, ...]
    cancelled: bool = False         # an all clear came first: it goes to nobody, and is then forgotten


def notice_key(member: str, cycle: int | None, contact: str) -> str:
    return f"{member}:{cycle}>{contact}"


class Held(Protocol):
    async def hold(self, items: list[HeldItem]) -> None:
        """Keep each item until its release (an item already held, or cancelled, is left as it is)."""

    async def held(self, keys: list[str]) -> set[str]:
        """Those of `keys` held or cancelled now (not yet released)."""

    async def cancel(self, keys: list[str]) -> None:
        """Never release these (a tombstone a day past their release, for a batch delivered again)."""

    async def due(self, now: int, limit: int = 500) -> list[HeldItem]:
        """Items whose release has come (cancelled ones too, to be forgotten), leased for LEASE_MS."""

    async def done(self, keys: list[str]) -> None:
        """Released (or forgotten): gone from the store."""
