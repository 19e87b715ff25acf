"""Process settings shared by every runtime."""
from __future__ import annotations

import gc


def tune_gc() -> None:
    """Make the cyclic garbage collector rare.

    The engine's records are acyclic tuples, freed by reference counting; but the collector still
    walks every live object on each full pass, and a partition holds hundreds of thousands of states,
    so the default thresholds spend a quarter of the time scanning memory that is never garbage.
    """
    gc.freeze()  # what is alive now (modules, settings) is never scanned again
    gc.set_threshold(50_000, 20, 100)
