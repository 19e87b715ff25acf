"""The engine against an independent, deliberately naive model of the rules (tests/oracle.py), which
walks time minute by minute. Two implementations written apart must agree on random histories."""
from hypothesis import HealthCheck, given, settings

import engine
import oracle
from strategies import examples, scenarios


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_matches_the_oracle(scenario):
    assert engine.records(scenario) == oracle.simulate(scenario)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_members=12, max_groups=3, max_events=150, max_days=40))
def test_engine_matches_the_oracle_on_busy_histories(scenario):
    assert engine.records(scenario) == oracle.simulate(scenario)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(rollcalls=True))
def test_engine_matches_the_oracle_with_rollcalls(scenario):
    """Areas, roll-calls and their answers (`safe` / `need_help`, also in a group) among the events."""
    assert engine.records(scenario) == oracle.simulate(scenario)
