"""The roll-call after a disaster, by the rules README.md spells out (`anpi simulate`'s contract)."""
from collections import defaultdict
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings

import engine
from streams.simulation import scenario as scenario_module
from strategies import examples, scenarios

SETTINGS = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime.fromisoformat("2026-12-01T00:00:00+09:00")
ROLLCALL_EFFECTS = {"rollcall_sent", "rollcall_resent", "rollcall_unanswered", "rollcall_safe", "rollcall_need_help"}


def at(hours: float = 0, minutes: float = 0) -> str:
    return (T0 + timedelta(hours=hours, minutes=minutes)).isoformat()


def town(*events, members=None, groups=(), days=3) -> dict:
    members = members or [
        {"id": "U001", "service": "watch", "interval": "1d", "time": "09:00", "phone": "090-1234-5678", "area": "kita"},
        {"id": "U002", "service": "notify", "interval": "1d", "time": "09:00", "contacts": ["U900"], "area": "kita"},
        {"id": "U003", "service": "notify", "interval": "1d", "time": "09:00", "area": "minami"},
        {"id": "U004", "service": "watch", "interval": "1d", "time": "09:00", "phone": "090-1234-5679"},
    ]
    return {"start": at(), "end": at(24 * days), "areas": [{"id": "kita", "name": "北町", "city": "0120200",
                                                             "region": "106"}, {"id": "minami", "name": "南町"}],
            "members": members, "groups": list(groups), "events": list(events)}


def rollcall_records(scenario, subject=None):
    return [r for r in engine.records(scenario) if r["effect"].startswith(("rollcall", "group_rollcall"))
            and subject in (None, r["subject"])]


def quake(hours=23.6, **fields):
    return {"at": at(hours), "type": "rollcall", "id": "R1", **fields}


def test_a_rollcall_asks_every_following_member_in_its_areas_and_no_one_else():
    sent = [r for r in rollcall_records(town(quake(areas=["kita"]))) if r["effect"] == "rollcall_sent"]
    assert [(r["subject"], r["at"], r["rollcall"], r["drill"]) for r in sent] == [
        ("U001", at(23.6), "R1", False), ("U002", at(23.6), "R1", False)]
    everyone = [r["subject"] for r in rollcall_records(town(quake())) if r["effect"] == "rollcall_sent"]
    assert everyone == ["U001", "U002", "U003", "U004"]  # no areas named: the whole tenant, with or without one


def test_no_answer_gets_one_resend_after_the_delay_then_the_member_is_listed():
    records = rollcall_records(town(quake(areas=["kita"], resend_after="45m")), "U001")
    assert [(r["effect"], r["at"]) for r in records] == [
        ("rollcall_sent", at(23.6)), ("rollcall_resent", at(23.6, 45)), ("rollcall_unanswered", at(23.6, 90))]
    default = rollcall_records(town(quake(areas=["kita"])), "U001")
    assert [r["at"] for r in default] == [at(23.6), at(23.6, 30), at(23.6, 60)]  # 30 minutes by default


def test_safe_is_the_answer_and_a_sign_of_life_and_needs_no_open_check():
    # U001 answered today's check at 9:05, U003's is still open when the quake comes
    records = engine.records(town(
        {"at": at(9, 5), "type": "ok", "member": "U001"}, quake(),
        {"at": at(23.7), "type": "safe", "member": "U001"}, {"at": at(23.8), "type": "safe", "member": "U003"}))
    of = defaultdict(list)
    for r in records:
        of[r["subject"]].append(r["effect"])
    assert {r["effect"] for r in records if r["subject"] == "U001" and r["at"] == at(23.7)} == {"rollcall_safe"}
    assert of["U001"].count("confirmed") == 1 and "rollcall_resent" not in of["U001"]  # nothing open to close
    u003 = [r for r in records if r["subject"] == "U003" and r["at"] == at(23.8)]
    assert {r["effect"] for r in u003} == {"rollcall_safe", "confirmed"}  # the open check closes with it
    assert "check_resent" not in of["U003"][:of["U003"].index("rollcall_safe")]


def test_need_help_is_a_help_request_at_once():
    records = engine.records(town(quake(), {"at": at(23.7), "type": "need_help", "member": "U001"},
                                  {"at": at(23.7), "type": "need_help", "member": "U002"}))
    now = {(r["subject"], r["effect"], r.get("reason")) for r in records if r["at"] == at(23.7)}
    assert now == {("U001", "rollcall_need_help", None), ("U001", "help_requested", None),
                   ("U001", "staff_call", "help"),
                   ("U002", "rollcall_need_help", None), ("U002", "help_requested", None),
                   ("U002", "contacts_notified", None)}
    assert not [r for r in records if r["effect"] in ("rollcall_resent", "rollcall_unanswered")
                and r["subject"] in ("U001", "U002")]


def test_need_help_after_safe_counts_and_safe_after_need_help_does_not():
    records = rollcall_records(town(quake(), {"at": at(23.7), "type": "safe", "member": "U001"},
                                    {"at": at(23.8), "type": "need_help", "member": "U001"},
                                    {"at": at(23.9), "type": "safe", "member": "U001"},
                                    {"at": at(23.95), "type": "safe", "member": "U001"}), "U001")
    assert [(r["effect"], r["at"]) for r in records] == [
        ("rollcall_sent", at(23.6)), ("rollcall_safe", at(23.7)), ("rollcall_need_help", at(23.8))]


def test_an_answer_after_the_listing_still_counts():
    records = rollcall_records(town(quake(), {"at": at(26), "type": "safe", "member": "U001"}), "U001")
    assert [r["effect"] for r in records] == ["rollcall_sent", "rollcall_resent", "rollcall_unanswered",
                                              "rollcall_safe"]


def test_an_answer_with_no_rollcall_is_only_a_sign_of_life_or_a_help():
    records = engine.records(town({"at": at(10), "type": "safe", "member": "U001"},
                                  {"at": at(11), "type": "need_help", "member": "U003"}))
    assert not [r for r in records if r["effect"].startswith("rollcall")]
    assert ("U001", "confirmed") in {(r["subject"], r["effect"]) for r in records if r["at"] == at(10)}
    assert ("U003", "help_requested") in {(r["subject"], r["effect"]) for r in records if r["at"] == at(11)}


def test_an_unfollowed_member_gets_no_card_and_a_paused_one_does():
    records = rollcall_records(town({"at": at(1), "type": "unfollow", "member": "U002"},
                                    {"at": at(1), "type": "pause", "member": "U001", "until": "2026-12-10"},
                                    quake(areas=["kita"])))
    assert {r["subject"] for r in records} == {"U001"}
    blocked_later = rollcall_records(town(quake(areas=["kita"]), {"at": at(23.7), "type": "unfollow", "member": "U002"}),
                                     "U002")
    assert [r["effect"] for r in blocked_later] == ["rollcall_sent", "rollcall_unanswered"]  # no resend to a block


def test_a_drill_is_marked_and_a_new_rollcall_replaces_the_last():
    records = rollcall_records(town(quake(drill=True), {"at": at(23.7), "type": "rollcall", "id": "R2",
                                                        "areas": ["kita"]}), "U001")
    assert [(r["effect"], r["rollcall"], r["drill"], r["at"]) for r in records] == [
        ("rollcall_sent", "R1", True, at(23.6)), ("rollcall_sent", "R2", False, at(23.7)),
        ("rollcall_resent", "R2", False, at(23.7, 30)), ("rollcall_unanswered", "R2", False, at(23.7, 60))]


def test_a_group_in_the_area_gets_one_card_and_tallies_each_answer_once():
    group = {"id": "C001", "members": ["U001", "U010"], "interval": "1d", "time": "08:00", "area": "kita"}
    other = {"id": "C002", "members": ["U011"], "interval": "1d", "time": "08:00", "area": "minami"}
    records = rollcall_records(town(
        quake(areas=["kita"]), {"at": at(23.7), "type": "safe", "member": "U010", "group": "C001"},
        {"at": at(23.75), "type": "safe", "member": "U010", "group": "C001"},
        {"at": at(23.8), "type": "need_help", "member": "U001", "group": "C001"}, groups=[group, other]))
    assert [(r["effect"], r["subject"], r.get("member")) for r in records if r["subject"].startswith("C")] == [
        ("group_rollcall_posted", "C001", None), ("group_rollcall_safe", "C001", "U010"),
        ("group_rollcall_need_help", "C001", "U001")]
    # U001's answer in the group is their own answer too
    assert ("rollcall_need_help", "U001") in {(r["effect"], r["subject"]) for r in records}


@pytest.mark.parametrize("change, where", [
    ({"members": [{"id": "U1", "service": "notify", "interval": "1d", "time": "09:00", "area": "nishi"}]},
     "members[0].area: unknown area 'nishi'"),
    ({"events": [quake(areas=["nishi"])]}, "events[0].areas[0]: unknown area 'nishi'"),
    ({"events": [quake(areas=[])]}, "events[0].areas: names no area"),
    ({"events": [quake(), quake(hours=30)]}, "events[1].id: 'R1': the same roll-call starts only once"),
    ({"events": [quake(resend_after="0m")]}, "events[0].resend_after: must be a delay"),
    ({"events": [quake(resend_after=30)]}, "events[0].resend_after: must be a delay"),
    ({"events": [quake(drill="yes")]}, "events[0].drill: must be true or false"),
    ({"events": [{"at": at(1), "type": "rollcall"}]}, "events[0].id: is required"),
    ({"events": [{"at": at(1), "type": "safe", "member": "U9"}]}, "events[0].member: unknown member 'U9'"),
    ({"areas": [{"id": "kita", "city": 120200}]}, "areas[0].city: must be the 気象庁's 7-digit code"),
    ({"areas": [{"id": "kita"}, {"id": "kita"}]}, "areas[1].id: 'kita' appears twice"),
])
def test_a_bad_rollcall_scenario_names_the_field_and_the_problem(change, where):
    with pytest.raises(scenario_module.ScenarioError) as error:
        scenario_module.parse({**town(), **change})
    assert str(error.value).startswith(where), str(error.value)


# --- properties ---------------------------------------------------------------------------------


def epoch_ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


@SETTINGS
@given(scenarios(rollcalls=True))
def test_each_member_is_sent_each_rollcall_once_resent_and_listed_only_unanswered_at_their_delay(scenario):
    records = engine.records(scenario)
    delays = {e["id"]: scenario_module._minutes(e.get("resend_after", "30m"), "") * 60_000
              for e in scenario["events"] if e["type"] == "rollcall"}
    parts = defaultdict(list)
    for r in records:
        if r["effect"] in ROLLCALL_EFFECTS:
            parts[r["subject"], r["rollcall"]].append(r)
    for (subject, rid), got in parts.items():
        kinds = [r["effect"] for r in got]  # sorted by (at, subject, effect): an answer at the same instant first
        assert kinds.count("rollcall_sent") == 1
        assert all(kinds.count(k) <= 1 for k in ROLLCALL_EFFECTS)
        sent = epoch_ms(next(r["at"] for r in got if r["effect"] == "rollcall_sent"))
        assert all(epoch_ms(r["at"]) >= sent for r in got)
        answered = [epoch_ms(r["at"]) for r in got if r["effect"] in ("rollcall_safe", "rollcall_need_help")]
        for r in got:
            if r["effect"] == "rollcall_resent":
                assert epoch_ms(r["at"]) == sent + delays[rid]
            if r["effect"] == "rollcall_unanswered":
                assert epoch_ms(r["at"]) == sent + 2 * delays[rid]
            if r["effect"] in ("rollcall_resent", "rollcall_unanswered"):
                assert not [a for a in answered if a <= epoch_ms(r["at"])], "asked again after an answer"


def test_in_a_drill_need_help_is_the_answer_only_and_calls_no_one():
    records = engine.records(town(quake(drill=True), {"at": at(23.7), "type": "need_help", "member": "U001"},
                                  {"at": at(23.8), "type": "need_help", "member": "U004"}, days=1))
    assert {(r["subject"], r["effect"]) for r in records if r["at"] in (at(23.7), at(23.8))} == {
        ("U001", "rollcall_need_help"), ("U004", "rollcall_need_help")}
    real = engine.records(town(quake(), {"at": at(23.7), "type": "need_help", "member": "U001"}, days=1))
    assert ("U001", "staff_call") in {(r["subject"], r["effect"]) for r in real}
