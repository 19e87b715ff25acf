"""Another process's clock, read over HTTP: how the Kafka runtime's processes share the demo's (or a
test's) virtual time, which linesim serves at /linesim/clock ({"now": epoch seconds, "pace":
virtual seconds per real second now, 0 for a clock moved by hand or held; "speed": its pace when it
runs}).

Set ANPI_CLOCK_URL and `anpi sender` judges reply tokens by it, `anpi admin serve` shows its "now".
The clock is read again every `every` seconds in a thread; in between, it runs on at its speed.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request


class SharedClock:
    def __init__(self, url: str, every: float = 0.05):
        self.url, self.every = url, every
        self._reading = self._read()    # fails here, at start-up, when the clock cannot be reached
        self._last = self._reading[0]
        threading.Thread(target=self._follow, name="shared clock", daemon=True).start()

    @property
    def speed(self) -> float:
        """How many times faster than real time it runs (1 for a clock moved by hand)."""
        return self._reading[3] or 1.0

    def now(self) -> float:
        at, read_at, pace, _ = self._reading
        self._last = max(self._last, at + (time.monotonic() - read_at) * pace)   # never back
        return self._last

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def _read(self) -> tuple[float, float, float, float]:
        with urllib.request.urlopen(self.url, timeout=5) as answer:
            got = json.load(answer)
        return float(got["now"]), time.monotonic(), float(got.get("pace", 0.0)), float(got.get("speed", 0.0))

    def _follow(self) -> None:
        while True:
            time.sleep(self.every)
            try:
                self._reading = self._read()
            except OSError:
                pass   # the clock's server stopping (the demo ending): keep running on the last reading
