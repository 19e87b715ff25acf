"""`anpi sender` (streams/kafka/sender_app.py) judging reply tokens by linesim's clock, not the wall's.

A test whose linesim runs on a virtual clock issues reply tokens at virtual instants; the sender
must judge their age on the same clock, or a token issued "at" a fixed date looks fresh or stale
depending on the day the test runs. Run as `python tests/sender_on_linesim_clock.py` with the
sender's environment (ANPI_LINE_API: linesim's address).
"""
import json
import os
import sys
import threading
import time
import urllib.request

from streams.kafka import sender_app


def linesim_clock(base_url: str, every: float = 0.05):
    """A `wall` reading linesim's clock (GET /linesim/clock), refreshed in the background."""
    now = [json.load(urllib.request.urlopen(f"{base_url}/linesim/clock", timeout=5))["now"]]

    def follow() -> None:
        while True:
            try:
                now[0] = json.load(urllib.request.urlopen(f"{base_url}/linesim/clock", timeout=5))["now"]
            except OSError:
                pass  # linesim stopping with the test: keep the last reading
            time.sleep(every)

    threading.Thread(target=follow, daemon=True).start()
    return lambda: now[0]


if __name__ == "__main__":
    sys.exit(sender_app.main(wall=linesim_clock(os.environ["ANPI_LINE_API"])))
