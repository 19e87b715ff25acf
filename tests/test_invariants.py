"""Properties the engine must keep on any schedule and any history of taps."""
from collections import Counter, defaultdict
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from agents.partition import Partition
from agents.subject import addressed
from streams.simulation import scenario as scenario_module
from streams.simulation import simulator
from strategies import examples, scenarios

SETTINGS = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOUR = 3600
ESCALATIONS = {"staff_call", "contacts_notified"}
SIGNS_OF_LIFE = {"ok", "message", "pause", "settings"}


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


# An event at exactly the check's instant applies before the check (ties go to the resident), so a
# cycle's window is (check, escalation].
def member_events(scenario):
    by_member = defaultdict(list)
    for e in scenario["events"]:
        by_member[e["member"]].append((epoch(e["at"]), e["type"]))
    return by_member


@SETTINGS
@given(scenarios())
def test_an_escalation_never_follows_a_sign_of_life_in_its_window(scenario):
    records = engine.records(scenario)
    sent = {(r["subject"], r["cycle"]): epoch(r["at"]) for r in records if r["effect"] == "check_sent"}
    events = member_events(scenario)
    for r in records:
        if r["effect"] in ESCALATIONS:
            window = (sent[r["subject"], r["cycle"]], epoch(r["at"]))
            assert not [e for e in events[r["subject"]]
                        if e[1] in SIGNS_OF_LIFE | {"unfollow"} and window[0] < e[0] <= window[1]]


@SETTINGS
@given(scenarios())
def test_every_unanswered_cycle_is_resent_and_escalated_exactly_once(scenario):
    records = engine.records(scenario)
    end = epoch(scenario["end"])
    events = member_events(scenario)
    per_cycle = Counter((r["subject"], r["cycle"], r["effect"]) for r in records if "cycle" in r)
    assert all(n == 1 for (_, _, effect), n in per_cycle.items() if effect != "group_confirmed")
    for r in records:
        if r["effect"] != "check_sent":
            continue
        slot, me, cycle = epoch(r["at"]), r["subject"], r["cycle"]
        deadline = slot + 27 * HOUR
        answered = [e for e in events[me] if e[1] in SIGNS_OF_LIFE | {"unfollow"} and slot < e[0] <= deadline]
        if not answered and deadline < end:
            resent = [x for x in records if x["subject"] == me and x.get("cycle") == cycle and x["effect"] == "check_resent"]
            escalated = [x for x in records if x["subject"] == me and x.get("cycle") == cycle and x["effect"] in ESCALATIONS]
            assert [epoch(x["at"]) for x in resent] == [slot + 24 * HOUR]
            assert [epoch(x["at"]) for x in escalated] == [deadline]


@SETTINGS
@given(scenarios())
def test_at_most_one_member_cycle_is_open_and_cycles_count_up_from_one(scenario):
    # (a group's cycle also closes silently when its last member confirms: the oracle test covers groups)
    members = {m["id"] for m in scenario["members"]}
    opened = {}
    for r in engine.records(scenario):
        me, effect = r["subject"], r["effect"]
        if me not in members:
            continue
        cycle, is_open = opened.get(me, (0, False))
        if effect == "check_sent":
            assert not is_open, f"{me}: a check stacked on an open cycle"
            assert r["cycle"] == cycle + 1
            opened[me] = (r["cycle"], True)
        elif effect in ("confirmed", "resolved_after_escalation", "unfollowed"):
            assert is_open or effect == "unfollowed"
            opened[me] = (cycle, False)
        elif effect in ("check_resent", "staff_call", "contacts_notified"):
            assert is_open and r["cycle"] == cycle


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_replaying_the_same_history_gives_byte_identical_output(scenario, rnd):
    first = engine.lines(scenario)
    assert engine.lines(scenario) == first
    # the file order of events with different times does not matter
    events = list(scenario["events"])
    rnd.shuffle(events)
    events.sort(key=lambda e: epoch(e["at"]))  # stable: same-instant events keep their shuffled order...
    same_instant = Counter(epoch(e["at"]) for e in events)
    if all(n == 1 for n in same_instant.values()):
        assert engine.lines({**scenario, "events": events}) == first


@SETTINGS
@given(scenarios(max_days=10), st.sampled_from([60, 7 * 60, 3600, 6 * 3600, 86400]))
def test_ticks_at_any_rate_give_the_same_effects_and_leave_nothing_due_behind(scenario, every):
    """A runtime ticking on a grid (as Kafka's ticker does) equals the simulator jumping between timers."""
    loaded = scenario_module.parse(scenario)
    expected = simulator.run(loaded)
    part = Partition()
    for r in loaded.registrations:
        part.apply(r.settings.id, r)
    out, clock = [], loaded.start - loaded.start % (every * 1000)
    step = every * 1000

    def tick_until(limit):  # grid ticks strictly before `limit`: a tie goes to the resident
        nonlocal clock
        while clock + step < limit:
            clock += step
            out.extend(part.tick(clock))
            assert all(s.due is None or s.due > clock for s in part.table.values()), "a due subject was missed"

    for event in loaded.events:
        tick_until(event.at)
        for subject in addressed(event):
            out.extend(part.apply(subject, event))
    tick_until(loaded.end)
    out.extend(part.tick(loaded.end - 1))
    assert simulator.sort(out) == expected
