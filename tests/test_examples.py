"""The shipped examples: their recorded output (examples/expected/) is what the engine prints, and the
independent oracle agrees with it, so the recordings are checked, not just replayed."""
import json
from pathlib import Path

import pytest
import yaml

import engine
import oracle
from streams.simulation.scenario import _Loader

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


def test_the_examples_include_a_danchi_with_50_residents_and_two_groups():
    danchi = yaml.load((EXAMPLES[0].parent / "danchi.yaml").read_text(encoding="utf-8"), Loader=_Loader)
    assert len(danchi["members"]) == 50 and len(danchi["groups"]) == 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_output_is_recorded_and_agrees_with_the_oracle(path):
    scenario = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    expected = (path.parent / "expected" / f"{path.stem}.jsonl").read_text(encoding="utf-8").splitlines()
    assert engine.lines(scenario) == expected
    assert oracle.simulate(scenario) == [json.loads(line) for line in expected]
