"""Virtual time for the embedded runtime: the wall clock, or the wall clock sped up (`anpi demo`)."""
from __future__ import annotations

import asyncio
import time


class Clock:
    """Epoch milliseconds that start at `start_ms` (default: now) and run `speed` times the wall clock."""

    def __init__(self, start_ms: int | None = None, speed: float = 1.0):
        self.speed = speed
        self._wall0 = time.monotonic()
        self._start = int(time.time() * 1000) if start_ms is None else start_ms

    def now(self) -> int:
        return self._start + int((time.monotonic() - self._wall0) * 1000 * self.speed)

    async def sleep(self, virtual_seconds: float) -> None:
        await asyncio.sleep(virtual_seconds / self.speed)
