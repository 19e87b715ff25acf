"""Time and budgets: clocks, LINE's per-channel rate limits (token buckets) and the monthly quota.

Every time-dependent rule in linesim reads one clock, so tests can freeze or advance time and a
demo can run a month in seconds. A clock has `now()` (virtual epoch seconds, float), `now_ms()`
and an async `sleep(virtual_seconds)`.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable
from zoneinfo import ZoneInfo


class WallClock:
    """Real time."""

    def pace(self) -> float:
        """Virtual seconds per real second now (what /linesim/clock tells other processes)."""
        return 1.0

    def now(self) -> float:
        return time.time()

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock(WallClock):
    """Virtual time running `speed` times faster than real time, from `start` (epoch seconds)."""

    def __init__(self, speed: float = 1.0, start: float | None = None, held: bool = False):
        """`held`: standing at `start` until `run()` (the demo, while its processes start up)."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.start = time.time() if start is None else start
        self._t0 = time.monotonic()  # monotonic: a wall-clock jump must not move virtual time
        self.held = held

    def now(self) -> float:
        return self.start if self.held else self.start + (time.monotonic() - self._t0) * self.speed

    def run(self) -> None:
        """Start running from where it stands."""
        if self.held:
            self._t0, self.held = time.monotonic(), False

    def pace(self) -> float:
        return 0.0 if self.held else self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ManualClock(WallClock):
    """Time that moves only when told to (`advance`, `set`): for exact, instant tests."""

    def pace(self) -> float:
        return 0.0

    def __init__(self, start: float = 1_796_000_000.0):
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties wake in the order they went to sleep

    def now(self) -> float:
        return self._now

    def set(self, t: float) -> None:
        if t < self._now:
            raise ValueError("time does not go backwards")
        self._now = float(t)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), fut))
        await fut


@dataclass(frozen=True, slots=True)
class Rate:
    requests: int
    per_seconds: float


# LINE's documented limits per channel (see DESIGN.md, "LINE facts"). Endpoints LINE does not list
# separately (quota) fall under the general 2,000 requests/s.
LINE_RATES: dict[str, Rate] = {
    "push": Rate(2000, 1),
    "reply": Rate(2000, 1),
    "multicast": Rate(200, 1),
    "broadcast": Rate(60, 3600),
    "narrowcast": Rate(60, 3600),
    "profile": Rate(2000, 1),
    "group_member": Rate(2000, 1),
    "quota": Rate(2000, 1),
    "quota_consumption": Rate(2000, 1),
}


class TokenBucket:
    """Holds up to `rate.requests` tokens, refilled evenly over `rate.per_seconds`."""

    def __init__(self, rate: Rate, now: Callable[[], float]):
        self.capacity = float(rate.requests)
        self.refill_per_second = rate.requests / rate.per_seconds
        self.tokens = self.capacity
        self._now = now
        self._stamp = now()

    def take(self, n: float = 1.0) -> bool:
        t = self._now()
        if t > self._stamp:
            self.tokens = min(self.capacity, self.tokens + (t - self._stamp) * self.refill_per_second)
            self._stamp = t
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class RateLimiter:
    """One bucket per (channel, endpoint), created on first use."""

    def __init__(self, now: Callable[[], float], rates: dict[str, Rate] | None = None):
        self.rates = {**LINE_RATES, **(rates or {})}
        self._now = now
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def allow(self, channel: str, endpoint: str) -> bool:
        rate = self.rates.get(endpoint)
        if rate is None:
            return True
        key = (channel, endpoint)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, self._now)
        return bucket.take()


class MonthlyQuota:
    """Messages (recipients) sent per channel per calendar month, as LINE counts them (in JST)."""

    ZONE = ZoneInfo("Asia/Tokyo")

    def __init__(self, now: Callable[[], float]):
        self._now = now
        self._limits: dict[str, int | None] = {}
        self._used: dict[tuple[str, str], int] = {}

    def set_limit(self, channel: str, limit: int | None) -> None:
        self._limits[channel] = limit

    def limit(self, channel: str) -> int | None:
        return self._limits.get(channel)

    def _month(self) -> str:
        return datetime.fromtimestamp(self._now(), self.ZONE).strftime("%Y-%m")

    def used(self, channel: str) -> int:
        return self._used.get((channel, self._month()), 0)

    def try_spend(self, channel: str, count: int) -> bool:
        """Spends `count` if it fits in what is left this month; all or nothing, like LINE."""
        limit = self._limits.get(channel)
        key = (channel, self._month())
        used = self._used.get(key, 0)
        if limit is not None and used + count > limit:
            return False
        self._used[key] = used + count
        return True
