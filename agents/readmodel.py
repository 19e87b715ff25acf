"""The read-model label of a subject's state: what the admin screen counts subjects by.

Pure, like the rest of agents/: no clock is read, so a paused member is simply "idle" (its pause
shows as no check being sent, not as a state of its own).

    member  "{service}:{phase}"  phase: idle | sent | resent | escalated, or "unfollowed"
    group   "group:idle" | "group:posted", or "group:left" once the account has left the group
"""
from __future__ import annotations

from agents.group import GroupState
from agents.member import MemberState

GROUP_IDLE, GROUP_POSTED, GROUP_LEFT = "group:idle", "group:posted", "group:left"


def label(state: MemberState | GroupState) -> str:
    if type(state) is MemberState:
        phase = state.phase if state.following else "unfollowed"
        return f"{state.settings.service}:{phase}"
    if type(state) is GroupState:
        if not state.active:
            return GROUP_LEFT
        return GROUP_POSTED if state.posted_at is not None else GROUP_IDLE
    raise TypeError(f"label: not a subject state: {state!r}")
