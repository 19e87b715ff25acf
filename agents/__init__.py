"""The logic each agent runs: pure functions from (state, event) to (state, effects)."""
