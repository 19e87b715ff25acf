"""A process's life, the same in every runtime's shells: running until told to stop, the GC tuned."""
from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import signal
from collections.abc import Callable


async def until_stopped() -> None:
    """Return on SIGINT or SIGTERM: the shells' way to run until told to stop."""
    stopped = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stopped.set)
    await stopped.wait()


async def serve_until_stopped(app, host: str, port: int, reuse_port: bool, banner: str) -> None:
    """Serve an aiohttp app on host:port (shared with sibling processes when reuse_port) until SIGTERM/SIGINT."""
    from aiohttp import web
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    print(banner, flush=True)
    try:
        await until_stopped()
    finally:
        await runner.cleanup()


def tune_gc() -> None:
    """Make the cyclic garbage collector rare.

    The engine's records are acyclic tuples, freed by reference counting; but the collector still
    walks every live object on each full pass, and a partition holds hundreds of thousands of states,
    so the default thresholds spend a quarter of the time scanning memory that is never garbage.
    """
    gc.freeze()  # what is alive now (modules, settings) is never scanned again
    gc.set_threshold(50_000, 20, 100)


def prefork(processes: int, serve: Callable[[int], None], name: str) -> int:
    """Run `serve(i)` for i in range(processes), each in a forked process (servers on one port with
    SO_REUSEPORT: the kernel spreads the connections). The parent only waits: SIGTERM stops them
    all; the first that ends by itself ends the others, and its exit code is ours (for a supervisor
    to start them again). Fork before anything runs: no loop, no open connection."""
    fork = multiprocessing.get_context("fork")
    children = [fork.Process(target=serve, name=f"{name.replace(' ', '-')}-{i}", args=(i,), daemon=False)
                for i in range(processes)]
    for child in children:
        child.start()
    stopping = []

    def stop(*_):
        stopping.append(True)
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: each stops as one server does
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{name}: {processes} processes on one port", flush=True)
    from multiprocessing.connection import wait
    first = None
    while first is None:   # a signal may end the wait before any child has ended
        wait([child.sentinel for child in children], timeout=1.0)
        first = next((child for child in children if not child.is_alive()), None)
    if not stopping:
        logging.getLogger("anpi.process").error("%s ended (exit %s); stopping the others", first.name, first.exitcode)
        stop()
    for child in children:
        child.join()
    return 0 if stopping and first.exitcode in (0, -signal.SIGTERM) else (first.exitcode or 1)
