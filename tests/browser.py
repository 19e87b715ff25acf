"""A headless Chromium for browser tests, driven by Playwright's Python package.

It is Debian's /usr/bin/chromium (installed by .ci/run), never a browser downloaded at run time
(`playwright install` is not used). Use it from a test module with

    from browser import browser  # noqa: F401  (the fixture)

    def test_something(browser):
        page = browser.new_page()

The sync API runs its own event loop, so a server under test runs in a thread of its own
(see `ServerThread`).
"""
from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("ANPI_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (each test opens its own contexts or pages).

    Not per session: while Playwright's sync API is running it marks an event loop as running in
    the main thread, and every later test that calls asyncio.run() would fail.
    """
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class ServerThread:
    """An asyncio loop in a thread: `start(setup)` runs `setup()` there and returns its result (a URL,
    say); `call(coro_fn)` runs more there; `stop()` runs the teardown and ends the loop."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="server", daemon=True)

    def start(self, setup: Callable[[], Awaitable]):
        self.thread.start()
        return self.call(setup)

    def call(self, fn: Callable[[], Awaitable], timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def stop(self, teardown: Callable[[], Awaitable] | None = None) -> None:
        if teardown is not None:
            self.call(teardown)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def app_server(make_app: Callable[[], object]) -> tuple[ServerThread, str]:
    """(the server thread, its base URL) of the aiohttp app `make_app()` makes there, on a free port;
    `server.stop(server.cleanup)` ends it."""
    from aiohttp import web

    server, state = ServerThread(), {}

    async def setup() -> str:
        state["runner"] = runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    base = server.start(setup)
    server.cleanup = lambda: state["runner"].cleanup()
    return server, base
