"""`anpi worker` serves Prometheus metrics: Faust's sensors and the engine's own."""
import asyncio
import time
import urllib.request

import pytest

from schemas.events import Ok, Register
from schemas.settings import MemberSettings, Schedule
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import event_message
from streams.kafka.settings import Settings

pytestmark = pytest.mark.usefixtures("running_services")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_worker_metrics_count_events_effects_due_subjects_and_tick_lag():
    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env(), ticker_seconds=1.0)
        await run.create_topics()
        try:
            run.start_worker()
            now = int(time.time() * 1000)
            member = MemberSettings("U001", "watch", Schedule("1d", 9 * 60), phone="090-0000-0000")
            n = run.settings.partitions
            await run.produce([event_message("U001", Register(now, member), n), event_message("U001", Ok(now + 1, "U001"), n)])
            deadline, text = time.monotonic() + 90, ""
            while time.monotonic() < deadline:
                try:
                    text = await asyncio.to_thread(scrape, run.settings.web_port)
                except OSError:
                    text = ""  # the worker's web server is not up yet
                if value(text, 'anpi_events_in_total{type="ok"}') >= 1 and "anpi_tick_lag_seconds{" in text:
                    return text
                await asyncio.sleep(1)
            raise AssertionError(f"metrics never showed the events and a tick; last scrape:\n{text[-3000:]}")
        finally:
            run.kill_worker()
            await run.delete_topics()

    text = asyncio.run(go())
    assert value(text, 'anpi_events_in_total{type="register"}') == 1
    assert value(text, "anpi_due_index_size") == 1           # U001 waits for tomorrow's 09:00 check
    lags = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("anpi_tick_lag_seconds{")]
    assert lags and all(0 <= lag < 30 for lag in lags)       # the leader's ticker is ticking every partition
    assert "anpi_processing_seconds_bucket{" in text
    assert "faust_" in text                                   # Faust's own sensors, on the same page
