"""Everything that happens to a subject arrives as one of these; each carries its time `at` (epoch ms).

Inbound events come from people (through LINE or staff); `Tick` is the clock. The core never reads a
clock of its own, so any history of these records replays exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas.settings import GroupSettings, MemberSettings


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock says it is `at`: fire whatever fell due at or before it."""
    at: int


@dataclass(frozen=True, slots=True)
class Register:
    """A subject starts: a member (watch / notify) or a group (つながり)."""
    at: int
    settings: MemberSettings | GroupSettings


@dataclass(frozen=True, slots=True)
class ChangeSettings:
    """The member changed service or schedule (a sign of life; the slot lattice re-anchors)."""
    at: int
    settings: MemberSettings


@dataclass(frozen=True, slots=True)
class Ok:
    """The OK button. With `group`, it answers that group's check (and still counts for the member)."""
    at: int
    member: str
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """Any message from the member: a sign of life, not an answer to a group check."""
    at: int
    member: str
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """No checks until local midnight of `until` (a proleptic Gregorian ordinal, date.toordinal())."""
    at: int
    member: str
    until: int


@dataclass(frozen=True, slots=True)
class Resolve:
    """Staff or a contact closes an escalated case."""
    at: int
    member: str


@dataclass(frozen=True, slots=True)
class Unfollow:
    """The member blocked or unfollowed the account: an event of its own, never silence."""
    at: int
    member: str


@dataclass(frozen=True, slots=True)
class Follow:
    at: int
    member: str


Inbound = Register | ChangeSettings | Ok | Message | Pause | Resolve | Unfollow | Follow
Event = Inbound | Tick
