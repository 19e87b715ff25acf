"""Every record the engine makes survives the trip through Kafka and the state table unchanged."""
from hypothesis import HealthCheck, given, settings

from agents.partition import Partition
from agents.subject import addressed
from schemas.events import RollCall
from streams import codec
from streams.simulation import scenario as scenario_module
from strategies import examples, scenarios


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(rollcalls=True))
def test_events_states_and_effects_round_trip(scenario):
    loaded = scenario_module.parse(scenario)
    part = Partition()
    for event in (*loaded.registrations, *loaded.events):
        assert codec.event_from_obj(codec.loads(codec.dumps(codec.event_to_obj(event)))) == event
        if type(event) is RollCall:
            effects, subjects = part.rollcall(event), list(part.table)
        else:
            subjects = addressed(event)
            effects = [effect for subject in subjects for effect in part.apply(subject, event)]
        for effect in effects:
            again = codec.effect_from_obj(codec.loads(codec.dumps(codec.effect_to_obj(effect))))
            assert again == effect and again.id == effect.id
        for subject in subjects:
            state = part.table.get(subject)
            if state is not None:
                assert codec.state_from_obj(codec.loads(codec.dumps(codec.state_to_obj(state)))) == state
