"""`anpi simulate --runtime kafka`: the scenario through real topics and a real worker process.

A run gets topics of its own (a fresh prefix), so runs never see each other's messages. The driver
feeds the inbound topic in virtual time, waits until every partition echoes the final flush, and
reads the effects topic, dropping duplicates by effect id as every downstream consumer does (a
second line only: the worker commits each effect once across crashes, rebalances and broker
restarts, and tests/test_faults_worker.py counts every copy to prove it).
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import replace

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.clock import HOUR
from schemas.effects import Effect
from streams import codec
from streams.kafka.feed import feed
from streams.kafka.settings import Settings
from streams.simulation.scenario import Scenario
from streams.simulation.simulator import sort


class KafkaRun:
    """One isolated run: its topics, its worker process, its producer and effects reader."""

    def __init__(self, settings: Settings | None = None, tick_every: int = HOUR, ticker_seconds: float = 0.0,
                 prefix: str | None = None):
        """`ticker_seconds` > 0 runs the worker's own wall-clock ticker (virtual-time runs tick themselves);
        `prefix`: the run's topics' (default: anpi-run-<random>)."""
        base = settings or Settings.from_env()
        prefix = prefix or f"anpi-run-{uuid.uuid4().hex[:12]}"
        # one worker at a time, restarted under the same name: it takes its partitions back at once
        self.settings = replace(base, prefix=prefix, tick_seconds=ticker_seconds, web_port=_free_port(),
                                instance=base.instance or f"{prefix}-worker")
        self.tick_every = tick_every
        self.worker: subprocess.Popen | None = None
        self.log_path = os.path.join(os.environ.get("ANPI_VAR", "var"), "runs", f"{self.settings.prefix}.log")

    async def create_topics(self) -> None:
        s = self.settings
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka)
        await admin.start()
        try:
            names = [s.inbound, s.effects, s.outbox, s.escalations]
            await admin.create_topics([NewTopic(name, s.partitions, 1) for name in names])
            for _ in range(100):  # created is not yet led: wait until every partition has a leader
                described = await admin.describe_topics(names)
                if all(t["error_code"] == 0 and len(t["partitions"]) == s.partitions
                       and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
                    break
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    async def delete_topics(self) -> None:
        s = self.settings
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka)
        await admin.start()
        try:
            names = await admin.list_topics()
            await admin.delete_topics([n for n in names if n.startswith(s.prefix)])
        except Exception:  # cleanup is best effort: a leftover topic costs disk, not correctness
            pass
        finally:
            await admin.close()

    def start_worker(self, script: str | None = None, env: dict[str, str] | None = None,
                     wrap: list[str] | None = None) -> None:
        """`script`: a Python file to run instead of the worker module (a test's harness around it);
        `wrap`: a command the worker's command line is appended to (a test's supervisor)."""
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        env = {**os.environ, **self.settings.env(), **(env or {})}
        with open(self.log_path, "ab") as log:
            loglevel = os.environ.get("ANPI_WORKER_LOGLEVEL", "warning")  # "info" shows rebalances and recovery
            command = [script] if script else ["-m", "streams.kafka.worker"]
            self.worker = subprocess.Popen([*(wrap or []), sys.executable, *command, loglevel], env=env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill_worker(self, sig: int = signal.SIGKILL) -> None:
        if self.worker is not None and self.worker.poll() is None:
            try:  # the whole process group: a wrapper and the worker under it
                os.killpg(self.worker.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.worker = None

    async def produce(self, messages, batch_bytes: int = 1 << 20) -> None:
        """`batch_bytes`: the produce batches' size (a worker's fetch returns whole ones, however large)."""
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka, acks="all", enable_idempotence=True,
                                    linger_ms=10, max_batch_size=batch_bytes)
        await producer.start()
        try:
            pending = []
            for number, key, value in messages:
                pending.append(await producer.send(self.settings.inbound, value, key=key or None,
                                                   partition=number))
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    async def effect_records(self):
        """Batches of the effects topic's records (committed only), decoded, from the start; may be empty."""
        async for batch in self.raw_effect_records():
            yield [codec.loads(value) for value in batch]

    async def raw_effect_records(self):
        """The same, each record's value as it is."""
        s = self.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka, enable_auto_commit=False,
                                    isolation_level="read_committed", auto_offset_reset="earliest")
        await consumer.start()
        try:
            parts = [TopicPartition(s.effects, n) for n in range(s.partitions)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                yield [r.value for records in batches.values() for r in records]
        finally:
            await consumer.stop()

    async def collect(self, flush: str, timeout: float) -> list[Effect]:
        """Effects from the start of the effects topic until every partition has echoed `flush`."""
        seen: dict[str, Effect] = {}
        flushed: set[int] = set()
        deadline = asyncio.get_running_loop().time() + timeout
        records = self.effect_records()
        try:
            async for batch in records:
                for obj in batch:
                    if "flush" not in obj:
                        seen.setdefault(obj["id"], codec.effect_from_obj(obj))
                    elif obj["flush"] == flush:
                        flushed.add(obj["partition"])
                if len(flushed) == self.settings.partitions:
                    return sort(list(seen.values()))
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"worker did not finish within {timeout:.0f} s ({len(flushed)}/"
                                       f"{self.settings.partitions} partitions done); log: {self.log_path}")
                if self.worker is not None and self.worker.poll() is not None:
                    raise RuntimeError(f"worker exited with {self.worker.returncode}; log: {self.log_path}")
        finally:
            await records.aclose()


async def run(scenario: Scenario, settings: Settings | None = None, timeout: float = 600.0) -> list[Effect]:
    """The effects of `scenario` through Kafka: the same list the embedded simulator returns."""
    kafka_run = KafkaRun(settings)
    await kafka_run.create_topics()
    kafka_run.start_worker()
    try:
        flush = uuid.uuid4().hex
        await kafka_run.produce(feed(scenario, kafka_run.settings.partitions, kafka_run.tick_every, flush))
        return await kafka_run.collect(flush, timeout)
    finally:
        kafka_run.kill_worker(signal.SIGTERM)
        await kafka_run.delete_topics()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
