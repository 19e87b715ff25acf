"""The residents' profiles and the imported roster not yet linked: the seam both runtimes implement.

    embedded (SQLite)  streams/residents/in_sqlite.py   one sealed row per resident, per roster row
    Kafka + Redis      streams/residents/in_redis.py    one sealed hash field per resident, per roster row

A profile is staff's, not the engine's: saving one is audited in the same write; a withdrawal
(effect `withdrawn`) deletes it, on Kafka by `anpi readside` with the rest of what names them.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

from streams.residents.profile import Profile, fold
from streams.residents.roster import Row


class Pending(NamedTuple):
    code_hash: str
    row: Row
    created_at: int
    valid_until: int
    used_by: str | None    # the LINE that sent the code (None: not yet linked)


SEARCH_LIMIT = 200


class Profiles(Protocol):
    async def get(self, tenant: str, member: str) -> Profile | None: ...

    async def many(self, tenant: str, members: list[str]) -> dict[str, Profile]: ...

    async def put(self, tenant: str, member: str, profile: Profile, audit: tuple) -> None:
        """Save (an empty profile removes it) with its audit row (at, login, action, target, detail)."""

    async def all(self, tenant: str) -> dict[str, Profile]: ...

    async def delete(self, tenant: str, member: str) -> None: ...

    # imported residents not yet linked (streams/residents/roster.py, codes.py)

    async def add_pending(self, tenant: str, entries: list[tuple[str, Row]], at: int, audit: tuple) -> None:
        """(code hash, row) of each: registered until the code is sent from a LINE, with the audit row."""

    async def pending(self, tenant: str) -> list[Pending]: ...

    async def claim(self, tenant: str, code_hash: str, line_user: str, at: int) -> Row | None:
        """The row a code registers `line_user` as (its profile saved under their id, the code spent);
        None for a code that is wrong, expired or spent by another LINE."""


def by_import(pending: list[Pending]) -> list[Pending]:
    """As staff imported them: file by file, each in its own order."""
    return sorted(pending, key=lambda p: (p.created_at, p.row.line, p.code_hash))


def matches(profiles: dict[str, Profile], query: str, limit: int = SEARCH_LIMIT) -> list[tuple[str, Profile]]:
    """The profiles whose words hold every word of `query` (folded alike), by ふりがな then 氏名."""
    words = [fold(w) for w in query.split() if w]
    found = [(m, p) for m, p in profiles.items() if all(w in p.words() or w in m.lower() for w in words)]
    return sorted(found, key=lambda mp: (fold(mp[1].kana or mp[1].name), mp[0]))[:limit]
