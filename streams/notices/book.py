"""The notices a tenant has sent, with their recipients and progress: one interface, two backends.

    in_sqlite.SqliteNotices   the embedded store's file (`anpi serve`, `anpi demo`)
    in_redis.RedisNotices     Redis (the Kafka runtime: the admin screen commits, `anpi sender` delivers)

A notice is committed with its recipients (fixed then, so progress has a fixed denominator and a
restart resumes the same list), cut into chunks (agents/notices.chunks: a multicast of ≤ 500 users
or a push to one group) and its audit row, all or nothing; a notice id is committed once (the draft
id: a form sent twice commits one notice). Each chunk is pending until LINE took it or refused it;
`finish` records that with the notice's counts and the month's billing, once: a chunk already
finished (a second delivery loop, a replica) changes nothing.

Recipients are chosen from each subject's read-model label (agents/readside.label) through
agents/notices.selects: the embedded store reads its states, Redis the worker's label hash.
"""
from __future__ import annotations

import uuid
from typing import NamedTuple, Protocol

from agents import notices as nt
from streams.tenants.registry import AuditRow

SENDING, DONE = "sending", "done"
PENDING, SENT, FAILED = "pending", "sent", "failed"
COLUMNS = ("id", "tenant", "kind", "title", "body", "segment", "messages", "created_by", "created_at", "total",
           "sent", "failed", "state", "finished_at")


class Work(NamedTuple):
    """One chunk still to deliver."""
    notice: str
    chunk: int
    endpoint: str
    size: int


class Notices(Protocol):
    async def choose(self, tenant: str, segment: nt.Segment) -> tuple[list[str], list[str]]:
        """(user ids, group ids) the segment reaches now."""

    async def commit(self, tenant: str, notice_id: str, d: nt.Draft, users: list[str], groups: list[str],
                     created_by: str, at: int, audit: AuditRow | None = None) -> bool:
        """The notice, its chunks, recipients and audit row together; False if the id was committed before."""

    async def get(self, tenant: str, notice_id: str) -> dict | None:
        """One notice of this tenant (COLUMNS; segment and messages decoded); another tenant's id: None."""

    async def recent(self, tenant: str, limit: int = 30) -> list[dict]:
        """The tenant's latest notices, newest first."""

    async def pending(self, tenant: str, limit: int) -> list[Work]:
        """Chunks not yet handed to LINE: oldest notice first, in chunk order."""

    async def recipients(self, tenant: str, work: Work) -> list[str]:
        """Who is in a chunk, sorted."""

    async def messages(self, tenant: str, notice_id: str) -> list[dict]:
        """The LINE messages of a notice, as committed."""

    async def claim(self, tenant: str, work: Work, ttl_ms: int) -> bool:
        """This process delivers the chunk for the next `ttl_ms` (the others leave it); False if another does."""

    async def finish(self, tenant: str, work: Work, accepted: bool, status: int | None, at: int) -> None:
        """A chunk's outcome, the notice's counts and the billing, once; done with the last chunk."""

    async def chunk_states(self, tenant: str, notice_id: str) -> dict[str, int]:
        """{state: chunks}"""


def new_id() -> str:
    """A notice id (also the draft's, so a form sent twice commits one notice): random, never reused."""
    return uuid.uuid4().hex


def valid_id(notice_id: str) -> bool:
    try:
        return uuid.UUID(hex=notice_id).hex == notice_id
    except (ValueError, TypeError, AttributeError):
        return False


def segment_record(d: nt.Draft) -> dict:
    """What is stored of the segment (with the button, which the progress page shows)."""
    return {**d.segment.to_obj(), "ok_button": d.ok_button}
