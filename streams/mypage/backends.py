"""What My Page reads and writes through, with one implementation per runtime.

    Members    a member's state as the engine will have it (with the changes not yet applied
               stepped on top), their own recent effects, and a change: state read, events built,
               events committed for the engine
    Sessions   the short logins a signed link or LIFF starts (streams/mypage/sessions.py)

    embedded (`anpi serve`, `anpi demo`)   in_sqlite: the store's states, inbox and effects
    Kafka    (`anpi ingress`)              in_redis: the states and history `anpi readside` keeps in
                                           Redis, the changes onto the inbound topic (KafkaSink)

Every method is a coroutine; the pages (streams/mypage/app.py) never see which one they have.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from agents.member import MemberState
from schemas.effects import Effect
from streams.mypage.sessions import Session


class NotRegistered(Exception):
    """A change for someone who is not (or no longer) a registered member."""


class Members(Protocol):
    async def state(self, tenant: str, member: str) -> MemberState | None:
        """None for someone not registered (or for a group's id)."""

    async def history(self, tenant: str, member: str, since: int, until: int) -> list[Effect]:
        """The member's own effects (subject = member) in [since, until], newest first."""

    async def change(self, tenant: str, member: str, build: Callable[[MemberState], list]) -> None:
        """`build(state)` → engine events, committed for the member; NotRegistered, or what `build` raises."""


class Sessions(Protocol):
    async def start(self, tenant: str, member: str, now: int) -> str: ...
    async def find(self, tenant: str, sid: str | None, now: int) -> Session | None: ...
    async def set_flash(self, tenant: str, sid: str, text: str) -> None: ...
    async def pop_flash(self, tenant: str, sid: str) -> str | None: ...
