"""One step for any subject: members (watch / notify) and groups share the same shape."""
from __future__ import annotations

from agents import group, member
from schemas.effects import Effect
from schemas.events import ChangeSettings, Event, Message, Ok, Register
from schemas.settings import GroupSettings

State = member.MemberState | group.GroupState


def step(state: State | None, event: Event) -> tuple[State, list[Effect]]:
    """step(state, event) -> (state, effects). `state` is None only for a Register."""
    if state is None:
        if type(event) is not Register:
            raise ValueError(f"{event!r}: no such subject")
        module = group if isinstance(event.settings, GroupSettings) else member
        return module.register(event), []
    if type(state) is member.MemberState:
        return member.step(state, event)
    return group.step(state, event)


def addressed(event: Event) -> tuple[str, ...]:
    """The subjects an inbound event concerns, in the order to apply it.

    An OK or message in a group answers the group and is also a sign of life for the person's own
    service. In the Kafka runtime each target lives on the partition of its own key, so ingress
    fans the event out by this list.
    """
    kind = type(event)
    if kind is Register or kind is ChangeSettings:
        return (event.settings.id,)
    if (kind is Ok or kind is Message) and event.group is not None:
        return (event.group, event.member)
    return (event.member,)
