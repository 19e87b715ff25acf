"""見守り / 安否通知: each rule of the member ladder, by example."""
from timeline import member, run


def test_unanswered_watch_check_is_resent_after_24h_then_staff_are_called_3h_later():
    assert run(members=[member()], end="12-03 00:00") == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-02 09:00", "check_resent", "U001", 1),
        ("12-02 12:00", "staff_call", "U001", 1, "no_answer"),
        # escalated: the cycle stays open, no new check stacks on it; staff are reminded (rule 3)
        ("12-02 18:00", "staff_reminder", "U001", 1, 1),
    ]


def test_ok_closes_the_cycle_and_the_next_check_keeps_to_the_schedule_not_the_tap_time():
    assert run(members=[member()], end="12-03 00:00",
               events=[{"at": "12-01 21:17", "type": "ok", "member": "U001"}]) == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 21:17", "confirmed", "U001", 1),
        ("12-02 09:00", "check_sent", "U001", 2),
    ]


def test_ok_after_the_resend_skips_the_slot_that_passed_while_the_cycle_was_open():
    assert run(members=[member()], end="12-04 00:00",
               events=[{"at": "12-02 10:00", "type": "ok", "member": "U001"}]) == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-02 09:00", "check_resent", "U001", 1),
        ("12-02 10:00", "confirmed", "U001", 1),
        ("12-03 09:00", "check_sent", "U001", 2),
    ]


def test_an_ok_exactly_at_a_deadline_counts_as_before_it():
    at_resend = run(members=[member()], end="12-02 12:00",
                    events=[{"at": "12-02 09:00", "type": "ok", "member": "U001"}])
    assert at_resend == [("12-01 09:00", "check_sent", "U001", 1), ("12-02 09:00", "confirmed", "U001", 1)]
    at_escalation = run(members=[member()], end="12-02 13:00",
                        events=[{"at": "12-02 12:00", "type": "message", "member": "U001"}])
    assert at_escalation[-1] == ("12-02 12:00", "confirmed", "U001", 1)
    assert all(e[1] != "staff_call" for e in at_escalation)


def test_notify_tells_the_chosen_contacts_and_falls_back_to_staff_without_any():
    out = run(members=[member(service="notify", contacts=["U901", "U900"]), member("U002", service="notify")],
              end="12-02 13:00")
    assert ("12-02 12:00", "contacts_notified", "U001", 1, ["U901", "U900"]) in out
    assert ("12-02 12:00", "staff_call", "U002", 1, "no_answer") in out


def test_after_escalation_an_ok_tells_staff_the_person_answered_and_checks_resume():
    assert run(members=[member()], end="12-05 00:00",
               events=[{"at": "12-03 08:00", "type": "ok", "member": "U001"}]) == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-02 09:00", "check_resent", "U001", 1),
        ("12-02 12:00", "staff_call", "U001", 1, "no_answer"),
        ("12-02 18:00", "staff_reminder", "U001", 1, 1),
        ("12-03 00:00", "staff_reminder", "U001", 1, 2),
        ("12-03 06:00", "staff_reminder", "U001", 1, 3),
        ("12-03 08:00", "resolved_after_escalation", "U001", 1),
        ("12-03 09:00", "check_sent", "U001", 2),
        ("12-04 09:00", "check_resent", "U001", 2),
        ("12-04 12:00", "staff_call", "U001", 2, "no_answer"),
        ("12-04 18:00", "staff_reminder", "U001", 2, 1),
    ]


def test_resolve_closes_only_an_escalated_cycle():
    out = run(members=[member()], end="12-03 10:00", events=[
        {"at": "12-01 10:00", "type": "resolve", "member": "U001"},   # not escalated: ignored
        {"at": "12-02 15:00", "type": "resolve", "member": "U001"},
    ])
    assert out == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-02 09:00", "check_resent", "U001", 1),
        ("12-02 12:00", "staff_call", "U001", 1, "no_answer"),
        ("12-02 15:00", "resolved_after_escalation", "U001", 1),
        ("12-03 09:00", "check_sent", "U001", 2),
    ]


def test_slots_form_a_lattice_from_registration_every_n_days():
    out = run(members=[member(interval="3d", time="07:30")], start="12-01 08:00", end="12-12 00:00", events=[
        {"at": "12-02 07:40", "type": "ok", "member": "U001"},
        {"at": "12-05 08:00", "type": "ok", "member": "U001"},
        {"at": "12-09 06:00", "type": "ok", "member": "U001"},  # after resend: next slot 12-11
    ])
    assert [e[0] for e in out if e[1] == "check_sent"] == ["12-02 07:30", "12-05 07:30", "12-08 07:30", "12-11 07:30"]


def test_weekly_and_biweekly_go_on_the_weekday():
    # 2026-12-01 is a Tuesday
    weekly = run(members=[member(interval="weekly", weekday="fri")], end="12-20 00:00", events=[
        {"at": "12-04 09:10", "type": "ok", "member": "U001"},
        {"at": "12-11 09:10", "type": "ok", "member": "U001"},
    ])
    assert [e[0] for e in weekly if e[1] == "check_sent"] == ["12-04 09:00", "12-11 09:00", "12-18 09:00"]
    biweekly = run(members=[member(interval="biweekly", weekday="tue", time="09:00")], end="12-31 00:00",
                   events=[{"at": "12-01 09:10", "type": "ok", "member": "U001"},
                           {"at": "12-15 09:10", "type": "ok", "member": "U001"}])
    assert [e[0] for e in biweekly if e[1] == "check_sent"] == ["12-01 09:00", "12-15 09:00", "12-29 09:00"]


def test_pause_is_a_sign_of_life_and_holds_checks_until_local_midnight_of_until():
    out = run(members=[member()], end="12-06 18:00", events=[
        {"at": "12-01 12:00", "type": "pause", "member": "U001", "until": "2026-12-04"},
        {"at": "12-04 09:01", "type": "ok", "member": "U001"},
    ])
    assert out == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 12:00", "confirmed", "U001", 1),
        ("12-04 09:00", "check_sent", "U001", 2),
        ("12-04 09:01", "confirmed", "U001", 2),
        ("12-05 09:00", "check_sent", "U001", 3),
        ("12-06 09:00", "check_resent", "U001", 3),
        ("12-06 12:00", "staff_call", "U001", 3, "no_answer"),
    ]


def test_a_later_pause_replaces_an_earlier_one_even_a_longer_one():
    out = run(members=[member()], end="12-10 00:00", events=[
        {"at": "12-01 10:00", "type": "ok", "member": "U001"},
        {"at": "12-01 11:00", "type": "pause", "member": "U001", "until": "2026-12-08"},
        {"at": "12-02 11:00", "type": "pause", "member": "U001", "until": "2026-12-04"},
    ])
    assert [e[0] for e in out if e[1] == "check_sent"] == ["12-01 09:00", "12-04 09:00"]


def test_a_notify_unfollow_closes_the_cycle_silently_and_follow_resumes_at_the_next_slot_after_it():
    out = run(members=[member(service="notify", contacts=["U900"])], end="12-06 00:00", events=[
        {"at": "12-01 10:00", "type": "unfollow", "member": "U001"},
        {"at": "12-01 11:00", "type": "unfollow", "member": "U001"},  # already unfollowed: ignored
        {"at": "12-02 10:00", "type": "ok", "member": "U001"},        # cannot happen on LINE: ignored
        {"at": "12-03 09:00", "type": "follow", "member": "U001"},    # exactly at a slot: next one
        {"at": "12-03 10:00", "type": "follow", "member": "U001"},    # already following: ignored
        {"at": "12-04 09:30", "type": "ok", "member": "U001"},
    ])
    assert out == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 10:00", "unfollowed", "U001", None),
        ("12-03 09:00", "followed", "U001", None),
        ("12-04 09:00", "check_sent", "U001", 2),
        ("12-04 09:30", "confirmed", "U001", 2),
        ("12-05 09:00", "check_sent", "U001", 3),
    ]


def test_settings_change_is_a_sign_of_life_and_re_anchors_the_lattice():
    out = run(members=[member()], end="12-06 01:00", events=[
        {"at": "12-01 10:00", "type": "settings", "member": "U001", "interval": "2d", "time": "18:00"},
        {"at": "12-01 18:05", "type": "ok", "member": "U001"},
        {"at": "12-03 18:05", "type": "ok", "member": "U001"},
        {"at": "12-04 12:00", "type": "settings", "member": "U001", "service": "notify", "contacts": ["U900"]},
    ])
    assert out[:6] == [
        ("12-01 09:00", "check_sent", "U001", 1),
        ("12-01 10:00", "confirmed", "U001", 1),
        ("12-01 18:00", "check_sent", "U001", 2),
        ("12-01 18:05", "confirmed", "U001", 2),
        ("12-03 18:00", "check_sent", "U001", 3),
        ("12-03 18:05", "confirmed", "U001", 3),
    ]
    # re-anchored at 12-04 12:00: the first 18:00 at or after it, then every 2 days; now notify
    assert out[6:] == [
        ("12-04 18:00", "check_sent", "U001", 4),
        ("12-05 18:00", "check_resent", "U001", 4),
        ("12-05 21:00", "contacts_notified", "U001", 4, ["U900"]),
        ("12-06 00:00", "staff_call", "U001", 4, "unclaimed"),   # nobody said 「見に行きます」 by +3 h
    ]


def test_nothing_at_or_after_end_is_emitted_or_applied():
    out = run(members=[member()], end="12-02 09:00", events=[{"at": "12-02 09:00", "type": "ok", "member": "U001"}])
    assert out == [("12-01 09:00", "check_sent", "U001", 1)]


def test_a_group_ok_is_a_sign_of_life_for_the_persons_own_service():
    out = run(members=[member()], groups=[{"id": "C001", "members": ["U001", "U002"], "interval": "1d", "time": "08:00"}],
              end="12-01 12:00", events=[{"at": "12-01 09:30", "type": "ok", "member": "U001", "group": "C001"}])
    assert ("12-01 09:30", "confirmed", "U001", 1) in out
    assert ("12-01 09:30", "group_confirmed", "C001", 1, "U001") in out


def test_a_check_time_that_daylight_saving_skips_keeps_its_wall_time_afterwards():
    # New York springs forward at 02:00 on 2027-03-14: that Sunday's 02:00 does not exist.
    from engine import records
    out = records({"timezone": "America/New_York", "start": "2027-03-11T07:01:00-05:00",
                   "end": "2027-03-22T00:00:00-04:00",
                   "members": [{"id": "U000", "service": "watch", "interval": "weekly", "weekday": "sun",
                                "time": "02:00", "phone": "090-1234-5678"}],
                   "events": [{"at": "2027-03-14T03:01:00-04:00", "type": "ok", "member": "U000"}]})
    assert [r["at"] for r in out if r["effect"] == "check_sent"] == ["2027-03-14T03:00:00-04:00",
                                                                      "2027-03-21T02:00:00-04:00"]


def test_a_change_built_without_the_phone_number_keeps_the_one_the_member_has():
    """The Kafka runtime's copy of a state (My Page reads it) holds PHONE_KEPT and the last four
    digits, never the number."""
    from agents import subject as m
    from schemas.events import ChangeSettings, Register
    from schemas.settings import PHONE_KEPT, MemberSettings, Schedule, kept_phone
    daily = Schedule("1d", 9 * 60, "Asia/Tokyo", None)
    state, _ = m.step(None, Register(0, MemberSettings("U001", "watch", daily, "090-1111-2222")))
    assert kept_phone("090-1111-2222") == PHONE_KEPT + "2222"
    later = Schedule("1d", 18 * 60, "Asia/Tokyo", None)
    state, _ = m.step(state, ChangeSettings(1000, MemberSettings("U001", "watch", later, kept_phone("09011112222"))))
    assert state.settings == MemberSettings("U001", "watch", later, "090-1111-2222")
    state, _ = m.step(state, ChangeSettings(2000, MemberSettings("U001", "watch", later, "03-1234-5678")))
    assert state.settings.phone == "03-1234-5678"   # a number typed anew replaces it
