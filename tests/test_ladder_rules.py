"""Nobody is left waiting (issue 12): each rule by example, on the engine and on the oracle.

Times are "MM-DD HH:MM" in Tokyo, December 2026. A daily 09:00 check left unanswered is resent at
09:00 the next day and escalates at 12:00.
"""
import oracle
from timeline import member, run, scenario

NOTIFY = dict(service="notify", contacts=["U901", "U900"])


def both(**kwargs) -> list[tuple]:
    """The engine's effects; the oracle must print the same."""
    out = run(**kwargs)
    assert [_row(r) for r in oracle.simulate(scenario(**kwargs))] == out
    return out


def _row(r: dict) -> tuple:
    row = (r["at"][5:16].replace("T", " "), r["effect"], r["subject"], r.get("cycle"))
    extra = next((r[k] for k in ("to", "member", "members", "reason", "n") if k in r), None)
    return row + ((extra,) if extra is not None else ())


def ev(at, kind, who="U001", **more):
    return {"at": at, "type": kind, "member": who, **more}


LADDER_TO_CONTACTS = [
    ("12-01 09:00", "check_sent", "U001", 1),
    ("12-02 09:00", "check_resent", "U001", 1),
    ("12-02 12:00", "contacts_notified", "U001", 1, ["U901", "U900"]),
]


# --- 1. unclaimed --------------------------------------------------------------------------------


def test_contacts_who_do_not_answer_within_3h_bring_in_staff_then_reminders_every_6h():
    assert both(members=[member(**NOTIFY)], end="12-03 04:00") == LADDER_TO_CONTACTS + [
        ("12-02 15:00", "staff_call", "U001", 1, "unclaimed"),
        ("12-02 21:00", "staff_reminder", "U001", 1, 1),
        ("12-03 03:00", "staff_reminder", "U001", 1, 2),
    ]


def test_an_ack_exactly_at_the_3h_deadline_counts_as_before_it():
    assert both(members=[member(**NOTIFY)], end="12-03 04:00",
                events=[ev("12-02 15:00", "ack", contact="U900")]) == LADDER_TO_CONTACTS + [
        ("12-02 15:00", "contact_acknowledged", "U001", 1, "U900"),
    ]


def test_the_cycle_closing_before_the_deadline_means_no_staff_call_and_an_all_clear():
    assert both(members=[member(**NOTIFY)], end="12-02 20:00",
                events=[ev("12-02 14:59", "ok")]) == LADDER_TO_CONTACTS + [
        ("12-02 14:59", "all_clear", "U001", 1, ["U900", "U901"]),
        ("12-02 14:59", "resolved_after_escalation", "U001", 1),
    ]


# --- 2. acknowledge ------------------------------------------------------------------------------


def test_each_contact_told_acknowledges_once_and_an_ack_is_not_a_sign_of_life():
    out = both(members=[member(**NOTIFY)], end="12-03 00:00", events=[
        ev("12-02 12:30", "ack", contact="U901"),
        ev("12-02 12:40", "ack", contact="U901"),   # again: nothing
        ev("12-02 13:00", "ack", contact="U900"),
    ])
    assert out == LADDER_TO_CONTACTS + [
        ("12-02 12:30", "contact_acknowledged", "U001", 1, "U901"),
        ("12-02 13:00", "contact_acknowledged", "U001", 1, "U900"),
    ]  # and the cycle stays open: no check on 12-03 09:00 either (end is before it, but no close)


def test_an_ack_from_someone_not_told_or_with_no_escalation_open_changes_nothing():
    quiet = both(members=[member(**NOTIFY)], end="12-03 00:00")
    assert both(members=[member(**NOTIFY)], end="12-03 00:00", events=[
        ev("12-01 10:00", "ack", contact="U900"),   # a check is open but nobody was told
        ev("12-02 12:30", "ack", contact="U777"),   # not a contact
    ]) == quiet


def test_a_contact_added_after_the_notice_was_not_told_and_cannot_acknowledge():
    # (the oracle knows no settings changes: the engine alone)
    changed = {**NOTIFY, "contacts": ["U901"]}
    out = run(members=[member(**changed)], end="12-02 16:00", events=[
        ev("12-02 13:00", "settings", contacts=["U901", "U900"]),   # a sign of life: closes the cycle
    ])
    assert out[-1] == ("12-02 13:00", "resolved_after_escalation", "U001", 1)
    held = run(members=[member(**changed)], end="12-02 16:00", events=[
        ev("12-02 12:10", "help"),                                   # now only resolve closes it
        ev("12-02 13:00", "settings", contacts=["U901", "U900"]),
        ev("12-02 13:30", "ack", contact="U900"),                   # not told
    ])
    assert held[-1] == ("12-02 15:00", "staff_call", "U001", 1, "unclaimed")


def test_an_ack_after_the_staff_call_is_recorded_and_reminders_go_on():
    out = both(members=[member(**NOTIFY)], end="12-02 22:00", events=[ev("12-02 16:00", "ack", contact="U900")])
    assert out[-3:] == [
        ("12-02 15:00", "staff_call", "U001", 1, "unclaimed"),
        ("12-02 16:00", "contact_acknowledged", "U001", 1, "U900"),
        ("12-02 21:00", "staff_reminder", "U001", 1, 1),
    ]


# --- 3. reminders --------------------------------------------------------------------------------


def test_reminders_stop_when_the_cycle_closes_and_a_tie_goes_to_the_close():
    assert both(members=[member()], end="12-03 09:00", events=[ev("12-03 00:00", "resolve")]) == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-02 09:00", "check_resent", "U001", 1),
        ("12-02 12:00", "staff_call", "U001", 1, "no_answer"),
        ("12-02 18:00", "staff_reminder", "U001", 1, 1),
        ("12-03 00:00", "resolved_after_escalation", "U001", 1),
    ]


# --- 4. help -------------------------------------------------------------------------------------


def test_help_on_an_open_check_calls_staff_at_once_and_drops_the_resend():
    assert both(members=[member()], end="12-02 12:00", events=[ev("12-01 10:00", "help")]) == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 10:00", "help_requested", "U001", 1),
        ("12-01 10:00", "staff_call", "U001", 1, "help"),
        ("12-01 16:00", "staff_reminder", "U001", 1, 1),
        ("12-01 22:00", "staff_reminder", "U001", 1, 2),
        ("12-02 04:00", "staff_reminder", "U001", 1, 3),
        ("12-02 10:00", "staff_reminder", "U001", 1, 4),
    ]


def test_help_with_no_cycle_open_opens_one_without_a_check_and_only_resolve_closes_it():
    # (the oracle knows no settings changes: the engine alone)
    out = run(members=[member()], end="12-03 10:01", events=[
        ev("12-01 09:30", "ok"),
        ev("12-01 12:00", "help"),
        ev("12-01 13:00", "ok"),
        ev("12-01 13:10", "message"),
        ev("12-01 13:20", "pause", until="2026-12-03"),   # sets the pause, closes nothing
        ev("12-01 13:30", "settings", time="10:00"),      # changes the time, closes nothing
        ev("12-01 14:00", "resolve"),
    ])
    assert out == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 09:30", "confirmed", "U001", 1),
        ("12-01 12:00", "help_requested", "U001", 2),
        ("12-01 12:00", "staff_call", "U001", 2, "help"),
        ("12-01 14:00", "resolved_after_escalation", "U001", 2),
        ("12-03 10:00", "check_sent", "U001", 3),   # after the pause, at the new time
    ]


def test_help_tells_the_contacts_of_a_notify_resident_and_rules_1_to_3_follow():
    assert both(members=[member(**NOTIFY)], end="12-01 19:00", events=[ev("12-01 10:00", "help")]) == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 10:00", "contacts_notified", "U001", 1, ["U901", "U900"]),
        ("12-01 10:00", "help_requested", "U001", 1),
        ("12-01 13:00", "staff_call", "U001", 1, "unclaimed"),
        ("12-01 19:00", "staff_reminder", "U001", 1, 1),
    ][:-1]


def test_help_on_an_escalated_cycle_only_says_so_and_its_timers_stand():
    out = both(members=[member(**NOTIFY)], end="12-02 16:00", events=[ev("12-02 13:00", "help")])
    assert out == LADDER_TO_CONTACTS + [
        ("12-02 13:00", "help_requested", "U001", 1),
        ("12-02 15:00", "staff_call", "U001", 1, "unclaimed"),
    ]


def test_help_from_someone_who_does_not_follow_is_ignored_and_a_notify_unfollow_keeps_a_help_open():
    notify = member(service="notify")   # no contacts: staff are called
    out = both(members=[notify], end="12-01 17:00", events=[
        ev("12-01 10:00", "help"),
        ev("12-01 11:00", "unfollow"),   # the help stands: the cycle stays open
        ev("12-01 12:00", "help"),       # not following: ignored
    ])
    assert out == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 10:00", "help_requested", "U001", 1),
        ("12-01 10:00", "staff_call", "U001", 1, "help"),
        ("12-01 11:00", "unfollowed", "U001", None),
        ("12-01 16:00", "staff_reminder", "U001", 1, 1),
    ]


# --- 5. all clear --------------------------------------------------------------------------------


def test_the_all_clear_goes_to_the_contacts_told_when_staff_resolve_too():
    out = both(members=[member(**NOTIFY)], end="12-02 18:00", events=[ev("12-02 17:00", "resolve")])
    assert out[-2:] == [("12-02 17:00", "all_clear", "U001", 1, ["U900", "U901"]),
                        ("12-02 17:00", "resolved_after_escalation", "U001", 1)]


# --- 6. a 見守り resident who unfollows ---------------------------------------------------------


def test_a_watch_unfollow_calls_staff_and_only_resolve_closes_the_case_follow_does_not():
    out = both(members=[member()], end="12-03 10:00", events=[
        ev("12-01 09:30", "ok"),
        ev("12-01 20:00", "unfollow"),
        ev("12-02 01:00", "follow"),
        ev("12-02 01:30", "ok"),          # does not close it: staff must reach the person
        ev("12-02 09:30", "resolve"),     # the next check: the first slot strictly after 09:30
    ])
    assert out == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 09:30", "confirmed", "U001", 1),
        ("12-01 20:00", "staff_call", "U001", 2, "unfollowed"),
        ("12-01 20:00", "unfollowed", "U001", None),
        ("12-02 01:00", "followed", "U001", None),
        ("12-02 02:00", "staff_reminder", "U001", 2, 1),
        ("12-02 08:00", "staff_reminder", "U001", 2, 2),
        ("12-02 09:30", "resolved_after_escalation", "U001", 2),
        ("12-03 09:00", "check_sent", "U001", 3),
    ]


def test_a_watch_unfollow_on_an_open_check_escalates_it_and_on_a_staff_call_only_says_so():
    open_check = both(members=[member()], end="12-01 17:00", events=[ev("12-01 10:00", "unfollow")])
    assert open_check == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 10:00", "staff_call", "U001", 1, "unfollowed"),
        ("12-01 10:00", "unfollowed", "U001", None),
        ("12-01 16:00", "staff_reminder", "U001", 1, 1),
    ]
    called = both(members=[member()], end="12-02 19:00", events=[ev("12-02 13:00", "unfollow")])
    assert called[-3:] == [("12-02 12:00", "staff_call", "U001", 1, "no_answer"),
                           ("12-02 13:00", "unfollowed", "U001", None),
                           ("12-02 18:00", "staff_reminder", "U001", 1, 1)]


def test_after_a_resolve_while_unfollowed_the_next_check_follows_the_follow():
    out = both(members=[member()], end="12-04 10:00", events=[
        ev("12-01 08:00", "unfollow"), ev("12-01 09:00", "resolve"), ev("12-03 09:00", "follow")])
    assert out == [
        ("12-01 08:00", "staff_call", "U001", 1, "unfollowed"),
        ("12-01 08:00", "unfollowed", "U001", None),
        ("12-01 09:00", "resolved_after_escalation", "U001", 1),
        ("12-03 09:00", "followed", "U001", None),
        ("12-04 09:00", "check_sent", "U001", 2),   # strictly after the follow
    ]


# --- consent both ways: a contact may stop being one ------------------------------------------------


def test_a_contact_who_leaves_is_told_no_more_and_the_resident_learns_of_it():
    from agents.partition import Partition
    from schemas import effects as fx
    from schemas.events import LeaveContact, Ok, Register
    from schemas.settings import MemberSettings, Schedule
    part = Partition()
    at = 1_796_050_800_000  # 2026-12-01T00:00+09:00
    part.apply("U001", Register(at, MemberSettings("U001", "notify", Schedule("1d", 540, "Asia/Tokyo"), None,
                                                   ("U900", "U901"))))
    part.tick(at + 36 * 3600_000)  # check, resend, the contacts told at 12-02 12:00
    left = part.apply("U001", LeaveContact(at + 36 * 3600_000 + 1, "U001", "U900"))
    assert [(e.effect, e.member) for e in left] == [(fx.LEFT_AS_CONTACT, "U900"), (fx.CONTACT_LEFT, "U900")]
    state = part.table["U001"]
    assert state.settings.contacts == ("U901",) and state.told == ("U901",)
    again = part.apply("U001", LeaveContact(at + 36 * 3600_000 + 2, "U001", "U900"))   # a second tap
    assert [e.effect for e in again] == [fx.LEFT_AS_CONTACT]   # answered again; the resident is not
    closed = part.apply("U001", Ok(at + 37 * 3600_000, "U001"))
    [clear] = [e for e in closed if e.effect == fx.ALL_CLEAR]
    assert clear.to == ("U901",)   # not to the one who left
    part.apply("U001", LeaveContact(at + 38 * 3600_000, "U001", "U901"))
    later = part.tick(at + 4 * 86_400_000)  # nobody left to tell: staff are called
    assert [e.data for e in later if e.effect == fx.STAFF_CALL] == ["no_answer"]
    assert all(e.effect != fx.CONTACTS_NOTIFIED for e in later)
