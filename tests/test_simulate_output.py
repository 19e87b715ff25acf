"""`anpi simulate`'s lines are built by hand (streams/simulation/simulator.JsonLines, for speed): they
must stay byte for byte what json.dumps of the record gives, for any id a scenario may hold."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.clock import iso
from schemas import effects as fx
from schemas.effects import Effect
from streams.simulation.simulator import JsonLines
from streams.tools.bench_core import scenario_of
from streams.simulation import scenario


def reference(effect: Effect, zone: str) -> str:
    """The record as json.dumps writes it: the contract, spelled the slow way."""
    record: dict = {"at": iso(zone, effect.at), "effect": effect.effect, "subject": effect.subject}
    if effect.cycle is not None:
        record["cycle"] = effect.cycle
    if effect.to is not None:
        record["to"] = list(effect.to)
    if effect.member is not None:
        record["member"] = effect.member
    if effect.members is not None:
        record["members"] = list(effect.members)
    if effect.effect == fx.STAFF_CALL and effect.data is not None:
        record["reason"] = effect.data
    elif effect.effect == fx.STAFF_REMINDER:
        record["n"] = int(effect.data)
    return json.dumps(record, ensure_ascii=False)


ids = st.text(min_size=1, max_size=12)   # quotes, backslashes, control characters, kana, emoji
kinds = st.sampled_from([fx.CHECK_SENT, fx.STAFF_CALL, fx.STAFF_REMINDER, fx.CONTACTS_NOTIFIED, fx.ALL_CLEAR,
                         fx.GROUP_UNCONFIRMED, fx.GROUP_CONFIRMED, fx.CONFIRMED])


@st.composite
def effects(draw):
    kind = draw(kinds)
    data = str(draw(st.integers(1, 40))) if kind == fx.STAFF_REMINDER else draw(st.none() | st.sampled_from(
        [fx.NO_ANSWER, fx.HELP, "引用\"符"]))
    return Effect(draw(st.integers(0, 10_000_000_000_000)), kind, draw(ids), draw(st.none() | st.integers(0, 10**9)),
                  draw(st.none() | st.tuples(ids, ids)), draw(st.none() | ids), draw(st.none() | st.lists(ids).map(tuple)),
                  data)


@settings(max_examples=400, deadline=None)
@given(st.lists(effects(), min_size=1, max_size=8), st.sampled_from(["Asia/Tokyo", "America/New_York", "UTC"]))
def test_each_line_is_what_json_dumps_writes(batch, zone):
    lines = JsonLines(zone)
    for effect in batch + batch:   # the second time from the memo
        assert lines.line(effect) == reference(effect, zone)


def test_the_bench_scenario_is_a_valid_scenario_of_the_same_work():
    parsed = scenario.parse(scenario_of(10, 3, 5))
    assert len(parsed.registrations) == 10 and len(parsed.events) == 30
    assert {e.member for e in parsed.events} == {r.settings.id for r in parsed.registrations}
