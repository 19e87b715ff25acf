"""つながり: the group ladder, by example."""
from timeline import run

GROUP = {"id": "C001", "members": ["U010", "U011", "U012"], "interval": "1d", "time": "08:00"}


def ok(at, who, group="C001"):
    return {"at": at, "type": "ok", "member": who, "group": group}


def test_23h_after_the_post_the_group_hears_who_has_not_confirmed():
    assert run(groups=[GROUP], end="12-02 08:00", events=[ok("12-01 08:30", "U010"), ok("12-01 09:00", "U012"),
                                                           ok("12-01 09:10", "U012")]) == [
        ("12-01 08:00", "group_check_posted", "C001", 1),
        ("12-01 08:30", "group_confirmed", "C001", 1, "U010"),
        ("12-01 09:00", "group_confirmed", "C001", 1, "U012"),
        ("12-02 07:00", "group_unconfirmed", "C001", 1, ["U011"]),
    ]


def test_when_everyone_confirms_nothing_is_posted_and_the_cycle_closes_then():
    out = run(groups=[GROUP], end="12-03 08:00",
              events=[ok("12-01 08:01", "U011"), ok("12-01 08:02", "U012"), ok("12-01 08:03", "U010")])
    assert out == [
        ("12-01 08:00", "group_check_posted", "C001", 1),
        ("12-01 08:01", "group_confirmed", "C001", 1, "U011"),
        ("12-01 08:02", "group_confirmed", "C001", 1, "U012"),
        ("12-01 08:03", "group_confirmed", "C001", 1, "U010"),
        # no unconfirmed list on 12-02 07:00: everyone answered
        ("12-02 08:00", "group_check_posted", "C001", 2),
        ("12-03 07:00", "group_unconfirmed", "C001", 2, ["U010", "U011", "U012"]),
    ]


def test_the_roster_learns_people_seen_in_the_group():
    out = run(groups=[GROUP], end="12-02 08:00", events=[
        {"at": "12-01 07:00", "type": "message", "member": "U099", "group": "C001"},  # seen before the post
        ok("12-01 08:10", "U010"), ok("12-01 08:11", "U011"), ok("12-01 08:12", "U012"),
    ])
    assert out[-1] == ("12-02 07:00", "group_unconfirmed", "C001", 1, ["U099"])


def test_an_ok_at_exactly_23h_still_counts():
    out = run(groups=[GROUP], end="12-02 08:00", events=[ok("12-01 09:00", "U010"), ok("12-02 07:00", "U011")])
    assert out[-1] == ("12-02 07:00", "group_unconfirmed", "C001", 1, ["U012"])


def test_an_ok_with_no_open_group_check_confirms_nothing():
    out = run(groups=[GROUP], start="12-01 09:00", end="12-02 09:00", events=[ok("12-01 10:00", "U010")])
    assert out == [("12-02 08:00", "group_check_posted", "C001", 1)]
