"""The embedded runtime's engine on a real SQLite file: the simulator's effects, across restarts."""
import random
from functools import partial
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.subject import addressed
from schemas.events import RollCall
from streams.simulation import scenario as scenario_module
from streams.simulation import simulator
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from strategies import examples, scenarios

ROOT = Path(__file__).resolve().parent.parent


def test_inbox_batches_ticks_and_restarts_give_the_simulators_effects(tmp_path):
    loaded = scenario_module.load(ROOT / "examples" / "danchi.yaml")
    path, tenant, rnd = str(tmp_path / "anpi.db"), "danchi", random.Random(5)
    store = Store(path)
    for event in loaded.registrations:
        assert store.accept(tenant, None, [(event.settings.id, event)])
    engine = Engine(store, tenant)
    events = list(loaded.events)
    at, hour = loaded.start, 3_600_000
    while at < loaded.end - 1:
        at = min(at + rnd.choice([1, 2, 7, 30]) * hour, loaded.end - 1)
        while events and events[0].at <= at:  # what ingress accepted by then, one webhook at a time
            event = events.pop(0)
            assert store.accept(tenant, f"wh-{event.at}-{id(event)}", [(s, event) for s in addressed(event)])
        engine.step(at)
        if rnd.random() < 0.3:  # the process restarts: everything comes back from the file
            store.close()
            store = Store(path)
            engine = Engine(store, tenant)
    assert simulator.sort(store.effects(tenant)) == simulator.run(loaded)


def test_ticks_over_a_small_budget_catch_up_and_give_the_simulators_effects(tmp_path, monkeypatch):
    """A tick steps streams/step.TICK_BUDGET subjects at most; the engine ticks again at once while
    it is behind (run_engines does not wait then), and the effects are the simulator's."""
    from streams.step import step as batch_step
    monkeypatch.setattr("streams.embedded.engine.step", partial(batch_step, budget=3))
    loaded = scenario_module.load(ROOT / "examples" / "danchi.yaml")
    store, tenant = Store(str(tmp_path / "anpi.db")), "danchi"
    for event in loaded.registrations:
        store.accept(tenant, None, [(event.settings.id, event)])
    engine = Engine(store, tenant)
    events, at, behind = list(loaded.events), loaded.start, 0
    while at < loaded.end - 1:
        at = min(at + 6 * 3_600_000, loaded.end - 1)
        while events and events[0].at <= at:
            event = events.pop(0)
            store.accept(tenant, None, [(s, event) for s in addressed(event)])
        engine.step(at)
        while engine.behind:
            behind += 1
            engine.step(at)
    assert behind > 0  # the budget did cut ticks short
    assert simulator.sort(store.effects(tenant)) == simulator.run(loaded)


def test_a_webhook_event_id_is_accepted_once_and_the_rest_of_a_redelivery_is_kept_out(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))
    from schemas.events import Ok
    assert store.accept("t", "01HZX", [("U1", Ok(1, "U1"))])
    assert not store.accept("t", "01HZX", [("U1", Ok(1, "U1"))])
    assert [p.seq for p in store.pending("t", 0)] == [1]


def test_a_step_that_fails_to_commit_leaves_the_store_as_it_was(tmp_path):
    loaded = scenario_module.load(ROOT / "examples" / "watch.yaml")
    store = Store(str(tmp_path / "anpi.db"))
    for event in loaded.registrations:
        store.accept("t", None, [(event.settings.id, event)])
    engine = Engine(store, "t")
    store.db.execute("CREATE TRIGGER boom BEFORE INSERT ON effects BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    try:
        engine.step(loaded.end - 1)
    except Exception as e:
        assert "disk full" in str(e)
    else:
        raise AssertionError("the failing commit was not reported")
    assert store.cursor("t") == (0, None) and list(store.states("t")) == []


def test_a_file_from_before_reply_tokens_rode_with_events_opens_and_its_inbox_is_applied(tmp_path):
    """A file of the earlier schema (inbox and effects without `reply`, a per-member `replies` table)
    gains the columns when it is opened, loses the old table, and its waiting rows are applied."""
    import json
    import sqlite3

    from schemas.events import Register
    from schemas.settings import MemberSettings, Schedule
    from streams import codec
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, subject TEXT NOT NULL,
                            event TEXT NOT NULL);
        CREATE TABLE effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, step INTEGER NOT NULL,
                              id TEXT NOT NULL, kind TEXT NOT NULL, at INTEGER NOT NULL, effect TEXT NOT NULL,
                              sent INTEGER NOT NULL DEFAULT 0, UNIQUE (tenant, id));
        CREATE TABLE replies (tenant TEXT NOT NULL, member TEXT NOT NULL, token TEXT NOT NULL, at INTEGER NOT NULL,
                              PRIMARY KEY (tenant, member)) WITHOUT ROWID;
    """)
    settings = MemberSettings("U1", "watch", Schedule("1d", 9 * 60, "Asia/Tokyo", None), "090-0000-0001")
    old.execute("INSERT INTO inbox (tenant, subject, event) VALUES ('t', 'U1', ?)",
                (json.dumps(codec.event_to_obj(Register(1_796_050_800_000, settings))),))
    old.execute("INSERT INTO replies VALUES ('t', 'U1', 'token', 1)")
    old.commit()
    old.close()
    store = Store(path)
    Engine(store, "t").step(1_796_050_800_000 + 10 * 3_600_000)
    assert [e.effect for e in store.effects("t")] == ["check_sent"]
    tables = {name for (name,) in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "replies" not in tables
    assert {row[1] for row in store.db.execute("PRAGMA table_info(inbox)")} >= {"reply"}
    store.close()


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])
@given(scenarios(max_days=6, rollcalls=True), st.randoms(use_true_random=False))
def test_rollcalls_through_the_inbox_across_restarts_give_the_simulators_effects(tmp_path_factory, scenario, rnd):
    """A roll-call is one inbox row for the whole tenant (no subject), as a tick is the engine's own."""
    loaded = scenario_module.parse(scenario)
    path, tenant = str(tmp_path_factory.mktemp("rollcall") / "anpi.db"), "town"
    store = Store(path)
    for event in loaded.registrations:
        assert store.accept(tenant, None, [(event.settings.id, event)])
    engine = Engine(store, tenant)
    events = list(loaded.events)
    at, hour = loaded.start, 3_600_000
    while at < loaded.end - 1:
        at = min(at + rnd.choice([1, 2, 7]) * hour, loaded.end - 1)
        while events and events[0].at <= at:
            event = events.pop(0)
            rows = [("", event)] if type(event) is RollCall else [(s, event) for s in addressed(event)]
            assert store.accept(tenant, None, rows)
        engine.step(at)
        if rnd.random() < 0.3:
            store.close()
            store = Store(path)
            engine = Engine(store, tenant)
    assert simulator.sort(store.effects(tenant)) == simulator.run(loaded)
    store.close()
