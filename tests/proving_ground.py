"""The proving ground's tools: a broker of its own to kill, a supervisor, and the tally.

Every fault test runs a history through the real runtime, breaks something in the middle, and
compares what was *committed* with `anpi simulate` on the same history, counting every copy:

    lost        effects the simulator decided that never appeared
    duplicated  effect ids that appeared more than once (consumers drop them, but none may exist)
    extra       effects the simulator never decided

The broker killed here is a second one (own data dir, own ports, the same jars), so a kill -9 never
touches the broker the rest of the suite shares.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import codec

from streams.tools import services

HERE = Path(__file__).resolve().parent


class RedisServer:
    """A redis-server of a test's own that keeps its data on disk (AOF, fsync always), as a
    production one does: killed -9 and started again, it comes back with what it had."""

    def __init__(self, var: Path):
        self.dir, self.port = var, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: tests/run installs it"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                                      "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=services.real_clock_env())
        deadline = time.monotonic() + 10
        while not services.redis_answers("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "the test's redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def free_port(pair: bool = False) -> int:
    """A free port (and, with pair, the next one free too: the broker's controller)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair or port > 65533:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


class PrivateBroker:
    """A single-node Kafka (and a Redis) in `var`, for one test to kill and bring back."""

    def __init__(self, var: Path):
        shared = services.local()
        (var / "kafka").mkdir(parents=True, exist_ok=True)
        libs = var / "kafka" / "libs"
        if not libs.exists():
            libs.symlink_to(shared.libs)  # fetched once by `anpi services up`: nothing downloads here
        self.cfg = services.local({"ANPI_KAFKA": f"127.0.0.1:{free_port(pair=True)}",
                                      "ANPI_REDIS": f"redis://127.0.0.1:{free_port()}/0", "ANPI_VAR": str(var)})
        self.kafka = f"{self.cfg.kafka_host}:{self.cfg.kafka_port}"
        self.redis = f"redis://{self.cfg.redis_host}:{self.cfg.redis_port}/0"

    def up(self) -> None:
        assert services.up(self.cfg, out=open(os.devnull, "w")) == 0, "the private broker did not start"

    def kill(self, name: str = "kafka") -> None:
        """kill -9: no shutdown, no flush, as when the machine under it fails."""
        pid = services.status(self.cfg)[name]
        assert pid is not None, f"the private {name} is not running"
        os.kill(pid, signal.SIGKILL)
        while services.status(self.cfg)[name] is not None:
            time.sleep(0.05)

    def down(self) -> None:
        services.down(self.cfg, out=open(os.devnull, "w"))


# a prefix for KafkaRun.start_worker(wrap=...): the worker under a supervisor that starts it again
# when it exits (compose's `restart: unless-stopped`), so that a worker which stops itself on a fault
# it cannot recover in place (exit 70) comes back and recovers from the changelog
SUPERVISED = [sys.executable, str(HERE / "supervise.py")]


async def feed_slowly(run, messages: list, seconds: float) -> None:
    """Produce `messages` in order over about `seconds`, so that a fault lands mid-traffic; a chunk
    the broker refused (it is down) is tried again until it is taken."""
    chunks = 60
    step = len(messages) // chunks + 1
    for i in range(0, len(messages), step):
        while True:
            try:
                await run.produce(messages[i:i + step])
                break
            except Exception:  # the broker is down: the producer gave up on this chunk; try again
                await asyncio.sleep(1.0)
        await asyncio.sleep(seconds / chunks)


async def committed(bootstrap: str, topic: str, partitions: int) -> list[dict]:
    """Every committed record of `topic` (read_committed, to its end), decoded, copies included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, n) for n in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        out: list[dict] = []
        while True:
            left = [tp for tp in parts if await consumer.position(tp) < end[tp]]
            if not left:
                return out
            batches = await consumer.getmany(*left, timeout_ms=1000, max_records=20_000)
            out += [codec.loads(r.value) for records in batches.values() for r in records]
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Tally:
    lost: int
    duplicated: int
    extra: int
    seen: int

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicated == self.extra == 0


def tally(expected_ids, seen_ids) -> Tally:
    """Compare ids decided by the simulator with ids seen (every copy)."""
    expected, counts = set(expected_ids), Counter(seen_ids)
    return Tally(lost=len(expected - counts.keys()), duplicated=sum(c - 1 for c in counts.values() if c > 1),
                 extra=len(counts.keys() - expected), seen=sum(counts.values()))


def effect_ids(records: list[dict]) -> list[str]:
    return [r["id"] for r in records if "id" in r and "flush" not in r and "batch_end" not in r]


def report(name: str, result: Tally, **figures) -> None:
    """One line per fault in the test log (and in BENCHMARKS.md's reliability table)."""
    extra = "".join(f", {k} {v}" for k, v in figures.items())
    print(f"\n[proving ground] {name}: lost {result.lost}, duplicated {result.duplicated}, extra {result.extra} "
          f"(of {result.seen} seen){extra}", flush=True)


@asynccontextmanager
async def linesim_with(config, fault):
    """linesim with a fault in front of its handlers: `fault(linesim's state)` makes an object
    whose `middleware` sees every request first. Yields (Sim, that object)."""
    from aiohttp import web

    from linesim.server import STATE, Sim, create_app
    app = create_app(config)
    made = fault(app[STATE])
    app.middlewares.append(made.middleware)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield Sim(f"http://{host}:{port}", app[STATE], app), made
    finally:
        await runner.cleanup()


async def until(condition, timeout: float, what: str, alive=None) -> None:
    """Polls `condition` (sync or async) until true; `alive` () -> str | None names a dead process."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        done = condition()
        if asyncio.iscoroutine(done):
            done = await done
        if done:
            return
        dead = alive() if alive is not None else None
        if dead:
            raise RuntimeError(f"{dead} while waiting for {what}")
        if loop.time() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        await asyncio.sleep(0.1)
