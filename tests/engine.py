"""The engine as the outside sees it: a scenario dict in, the JSON lines of `anpi simulate` out."""
from __future__ import annotations

import json

from streams.simulation import scenario as scenario_module
from streams.simulation import simulator


def lines(scenario: dict) -> list[str]:
    loaded = scenario_module.parse(scenario)
    return [simulator.to_json(e, loaded.zone) for e in simulator.run(loaded)]


def records(scenario: dict) -> list[dict]:
    return [json.loads(line) for line in lines(scenario)]
