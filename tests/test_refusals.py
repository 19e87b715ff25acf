"""Nothing stops the engine: the whole core, every event type on every kind of subject state.

Any event, with any ids and any times, applied to a member (watch or notify, in any phase), a group
(posted or not, active or not), a subject nobody registered, or a state stored under another id,
either returns or raises `Refused`, and a refusal changes nothing. A tick never raises for one
subject's sake. And late events (older than the subject's last applied instant) act at that instant.
"""
from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.clock import DAY, EARLIEST, HOUR, LATEST, MINUTE
from agents.partition import Partition
from agents.subject import Refused, admit, step
from schemas import effects as fx
from schemas.events import (AcceptInvite, Acknowledge, ChangeSettings, Enroll, Follow, GroupJoined, GroupLeft,
                            Invite, Message, Ok, OpenMyPage, Pause, Phone, Register, Resolve, Roster, Setup, Tick,
                            Unfollow)
from schemas.settings import GroupSettings, MemberSettings, Schedule
from strategies import examples

T0 = 1_796_050_800_000  # 2026-12-01T00:00+09:00: a fixed virtual instant (no wall clock here)
WATCHER, NOTIFIED, GROUP, STRANGER, CONTACT = "U001", "U002", "C001", "U999", "U900"
IDS = [WATCHER, NOTIFIED, GROUP, STRANGER, CONTACT, "", "R001"]
DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo")
EXTREME = [-(1 << 63), -1, EARLIEST - 1, LATEST, LATEST + DAY, (1 << 63) - 1, 2 ** 70]


def times():
    normal = st.integers(T0 - DAY, T0 + 40 * DAY)
    return st.one_of(normal, normal, st.sampled_from(EXTREME + [EARLIEST, LATEST - 1]))


def schedules():
    return st.builds(Schedule, st.sampled_from(["1d", "2d", "weekly", "30d"]), st.integers(0, 1439),
                     st.sampled_from(["Asia/Tokyo", "UTC", "America/New_York"]),
                     st.one_of(st.none(), st.integers(0, 6)))


ids = st.sampled_from(IDS)
member_settings = st.builds(MemberSettings, ids, st.sampled_from(["watch", "notify"]), schedules(),
                            st.one_of(st.none(), st.just("0312345678")), st.lists(ids, max_size=3).map(tuple))
group_settings = st.builds(GroupSettings, ids, schedules(), st.lists(ids, max_size=3).map(tuple))
events = st.one_of(
    st.builds(Tick, times()),
    st.builds(Register, times(), st.one_of(member_settings, group_settings)),
    st.builds(ChangeSettings, times(), st.one_of(member_settings, group_settings)),
    st.builds(Enroll, times(), st.one_of(member_settings, group_settings)),
    st.builds(Ok, times(), ids, st.one_of(st.none(), ids)),
    st.builds(Message, times(), ids, st.one_of(st.none(), ids)),
    st.builds(Pause, times(), ids, st.one_of(st.integers(739_000, 740_000), st.integers(-(1 << 40), 1 << 40))),
    st.builds(Resolve, times(), ids), st.builds(Unfollow, times(), ids), st.builds(Follow, times(), ids),
    st.builds(Setup, times(), ids, st.sampled_from(["", "s=notify", "s=watch&i=1d", "junk=&&"])),
    st.builds(Phone, times(), ids, st.just("09012345678")),
    st.builds(Invite, times(), ids, st.text(max_size=8)),
    st.builds(AcceptInvite, times(), ids, ids, st.text(max_size=8)),
    st.builds(Acknowledge, times(), ids, ids, st.integers(-3, 5)),
    st.builds(OpenMyPage, times(), ids),
    st.builds(GroupJoined, times(), ids, schedules()),
    st.builds(GroupLeft, times(), ids),
    st.builds(Roster, times(), ids, st.lists(ids, max_size=2).map(tuple), st.lists(ids, max_size=2).map(tuple)),
)


def town() -> Partition:
    """A watcher and a notified member in different phases, and a group with a check open."""
    part = Partition()
    part.apply(WATCHER, Register(T0, MemberSettings(WATCHER, "watch", DAILY_9, "0312345678")))
    part.apply(NOTIFIED, Register(T0, MemberSettings(NOTIFIED, "notify", DAILY_9, None, (CONTACT,))))
    part.apply(GROUP, Register(T0, GroupSettings(GROUP, DAILY_9, (WATCHER, CONTACT))))
    part.tick(T0 + 9 * HOUR)                           # every one's check is open
    part.apply(NOTIFIED, Ok(T0 + 10 * HOUR, NOTIFIED))   # one answered
    part.tick(T0 + 36 * HOUR)                          # the watcher's case went to staff
    return part


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ids, events), min_size=1, max_size=25), st.lists(times(), max_size=3))
def test_every_event_on_every_subject_returns_or_is_refused_and_a_refusal_changes_nothing(applied, ticks):
    part = town()
    part.table[STRANGER] = part.table[GROUP]  # a state stored under another subject's id
    part.due.set(STRANGER, part.table[GROUP].due)
    for subject, event in applied:
        before = copy.copy(dict(part.table))
        try:
            part.apply(subject, event)
        except Refused as refusal:
            assert dict(part.table) == before, "a refusal changed a state"
            assert str(refusal) and not any(i and i in str(refusal) for i in IDS), "ids in a refusal"
    for at in ticks:
        try:
            part.tick(at)
        except Refused:
            pass  # a tick out of range is refused before anything moves
    assert part.drain_faults() == []  # no subject's step raised in a tick


@settings(max_examples=examples(200), deadline=None)
@given(st.sampled_from(["member", "group", None]), events)
def test_subject_step_itself_returns_or_is_refused(kind, event):
    part = town()
    state = {"member": part.table[WATCHER], "group": part.table[GROUP], None: None}[kind]
    try:
        step(state, event)
    except Refused:
        pass


def test_a_time_the_calendar_cannot_take_is_refused():
    for at in EXTREME:
        try:
            admit(WATCHER, None, Ok(at, WATCHER))
        except Refused as refusal:
            assert "time out of range" in str(refusal)
        else:
            raise AssertionError(f"{at} was admitted")


def test_an_invitation_or_an_acknowledgement_naming_a_group_is_refused():
    part = town()
    for event in (AcceptInvite(T0 + DAY, GROUP, CONTACT, "abc.defghijklmno"), Acknowledge(T0 + DAY, GROUP, CONTACT, 1),
                  Pause(T0 + DAY, GROUP, 739_900), Phone(T0 + DAY, GROUP, "0312345678")):
        try:
            part.apply(GROUP, event)
        except Refused as refusal:
            assert "does not apply to a group" in str(refusal)
        else:
            raise AssertionError(f"{event} was applied to a group")
    try:
        part.apply(WATCHER, Roster(T0 + DAY, WATCHER, joined=(CONTACT,)))
    except Refused as refusal:
        assert "does not apply to a member" in str(refusal)
    else:
        raise AssertionError("a roster was applied to a member")


# --- late events --------------------------------------------------------------------------------


def test_a_tap_applied_after_the_tick_that_sent_the_check_closes_it_at_that_tick_not_before():
    """Seen against an independent LINE emulator: a tap stamped 08:59:14 reached the engine after the
    09:00 tick had sent the card. It must not close the card "before" it was sent, nor free the
    09:00 slot for a second card."""
    part = Partition()
    part.apply(WATCHER, Register(T0, MemberSettings(WATCHER, "watch", DAILY_9, "0312345678")))
    assert [e.effect for e in part.tick(T0 + 9 * HOUR)] == [fx.CHECK_SENT]
    late = part.apply(WATCHER, Ok(T0 + 9 * HOUR - 46_000, WATCHER))
    assert [(e.effect, e.at, e.cycle) for e in late] == [(fx.CONFIRMED, T0 + 9 * HOUR, 1)]
    assert part.tick(T0 + 9 * HOUR + MINUTE) == []            # no second card for the same slot
    assert [(e.effect, e.at, e.cycle) for e in part.tick(T0 + 33 * HOUR)] == [(fx.CHECK_SENT, T0 + 33 * HOUR, 2)]


def test_a_late_event_acts_at_the_subjects_own_time_for_groups_too():
    part = Partition()
    part.apply(GROUP, Register(T0, GroupSettings(GROUP, DAILY_9, (WATCHER, CONTACT))))
    part.tick(T0 + 9 * HOUR)
    part.apply(GROUP, Ok(T0 + 10 * HOUR, WATCHER, GROUP))
    done = part.apply(GROUP, Ok(T0 + 9 * HOUR - 1, CONTACT, GROUP))  # tapped before the post, arrived after
    assert [(e.effect, e.at) for e in done] == [(fx.GROUP_CONFIRMED, T0 + 10 * HOUR)]
    assert part.table[GROUP].due == T0 + 33 * HOUR  # the next slot, not the one just used


def test_events_in_time_order_are_never_moved():
    """`anpi simulate` applies events in time order: there, the clock rule changes nothing."""
    part = Partition()
    part.apply(WATCHER, Register(T0, MemberSettings(WATCHER, "watch", DAILY_9, "0312345678")))
    part.tick(T0 + 9 * HOUR)
    assert [(e.effect, e.at) for e in part.apply(WATCHER, Ok(T0 + 9 * HOUR + 1, WATCHER))] == \
        [(fx.CONFIRMED, T0 + 9 * HOUR + 1)]
