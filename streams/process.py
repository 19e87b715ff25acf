"""A process's life, the same in every runtime's shells: running until told to stop, the GC tuned."""
from __future__ import annotations

import asyncio
import gc
import signal


async def until_stopped() -> None:
    """Return on SIGINT or SIGTERM: the shells' way to run until told to stop."""
    stopped = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stopped.set)
    await stopped.wait()


def tune_gc() -> None:
    """Make the cyclic garbage collector rare.

    The engine's records are acyclic tuples, freed by reference counting; but the collector still
    walks every live object on each full pass, and a partition holds hundreds of thousands of states,
    so the default thresholds spend a quarter of the time scanning memory that is never garbage.
    """
    gc.freeze()  # what is alive now (modules, settings) is never scanned again
    gc.set_threshold(50_000, 20, 100)
