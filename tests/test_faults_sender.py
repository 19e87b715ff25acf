"""The proving ground, LINE side: the real `anpi sender` drains a busy town's outbox into linesim
while LINE fails, and every person gets each message exactly once.

The worker first decides a busy town's whole history (thousands of members, groups, several
virtual days) into the outbox; then the sender process starts and drains it to linesim, through a
middleware that plays LINE's faults:

- down: every call answers 500 for a while, one call in three taken by LINE at its first try (the
  answer lost), every try after refused until LINE is back, so that two calls in three wait out the
  whole outage however many tries they get: the sender tried each call eight times, then logged
  `gave up` and acked the batch, and those messages were never sent;
- flaky: 30 % of calls answer 429 or 500, or hang past the sender's timeout and then are taken;
  batches went one at a time, each waiting for its slowest call.

Each run compares linesim's deliveries, per recipient, with the messages `anpi simulate` decides for
the same history (lost / duplicated / extra: all 0) and reports the drain time next to a
fault-free run's. Figures: BENCHMARKS.md, "Reliability".
"""
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest
from aiohttp import web

from agents.messages import SENDS_MESSAGES, recipients
from linesim import Channel, Config
from linesim.limits import Rate
from schemas.tenant import Tenant
from streams import codec
from streams.simulation import scenario as scenario_module
from streams.simulation import simulator
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import feed
from streams.kafka.settings import Settings
from proving_ground import RedisServer, Tally, linesim_with, report, until
from test_kafka_runtime import busy_town
from test_kafka_sender_crash import committed as sender_committed, every_batch_mark

pytestmark = pytest.mark.usefixtures("running_services")
ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / os.environ.get("ANPI_VAR", "var")
SEND = "/v2/bot/message/"
HISTORY_BYTES = 32 << 10  # the worker's fetch per partition while it decides the history: ~200 messages


class Faults:
    """LINE's failures, in front of linesim's message endpoints, from the moment `start()` is called."""

    def __init__(self, down_seconds: float = 0.0, flaky: float = 0.0, hang: float = 0.0, seed: int = 1):
        self.down_seconds, self.flaky, self.hang = down_seconds, flaky, hang
        self.rnd = random.Random(seed)
        self.started: float | None = None
        self.failed = Counter()
        self.tried: set[str] = set()  # retry keys seen during the outage

    def start(self) -> None:
        self.started = time.monotonic()

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if not request.path.startswith(SEND) or self.started is None:
            return await handler(request)
        if time.monotonic() - self.started < self.down_seconds:
            self.failed["down"] += 1
            key = request.headers.get("X-Line-Retry-Key")
            taken = key is not None and key not in self.tried and len(self.tried) % 3 == 0
            if key is not None:
                self.tried.add(key)
            if not taken:
                return web.json_response({"message": "Internal error"}, status=500)
            await handler(request)  # taken, and the answer lost
            return web.json_response({"message": "Internal error"}, status=500)
        roll = self.rnd.random()
        if roll < self.flaky:
            kind = ("429", "500", "hang")[int(roll / self.flaky * 3)] if self.hang else ("429", "500")[
                int(roll / self.flaky * 2)]
            self.failed[kind] += 1
            if kind == "429":
                return web.json_response({"message": "Too many requests"}, status=429)
            if kind == "500":
                return web.json_response({"message": "Internal error"}, status=500)
            await asyncio.sleep(self.hang)  # past the sender's timeout; then LINE takes it anyway
        return await handler(request)


def history(**town) -> tuple:
    """A busy town's history and the deliveries `anpi simulate` decides for it, per recipient."""
    loaded = scenario_module.parse(busy_town(**town))
    return loaded, Counter(to for e in simulator.run(loaded) if e.effect in SENDS_MESSAGES for to in recipients(e))


@pytest.fixture(scope="module")
def town():
    return history(members=1_500, groups=10, days=4)


def with_reply_tokens(messages):
    """The feed, each member's own OK carrying a reply token, as a tap from LINE does: its thanks
    are answers, claimed in Redis before they go (by reply, or by push once the token has aged).
    Issued now on the real clock (the sender judges a token's age by it), on any date: young when
    the first sender gets them (linesim does not know them: refused, so by push), long aged when
    its successor reads them again."""
    issued = int(time.time() * 1000)
    for n, (number, key, value) in enumerate(messages):
        obj = codec.loads(value)
        event = obj.get("event") or {}
        if event.get("type") == "ok" and not event.get("group"):
            obj["reply"] = [f"token-{n}", issued]
            value = codec.dumps(obj)
        yield number, key, value


class Drained(NamedTuple):
    delivered: Counter       # deliveries per recipient
    seconds: float           # from the senders' start to the last delivery
    answers: Counter         # LINE's answers by (endpoint, status)
    sample: dict             # the first sender's anpi_sender_* metrics `sample_at` seconds after its start
    by_sender: list[dict]    # each sender still up: its anpi_sender_* metrics at the end


def drain(loaded, expected: Counter, faults: Faults, sample_at: float | None = None, redis: str | None = None,
          tokens: bool = False, chaos=None, quiet: float = 3.0, replicas: int = 1,
          rates: dict[str, int] | None = None) -> Drained:
    """The town's outbox drained by `anpi sender` into linesim behind `faults`. `redis`: the senders' Redis; `tokens`: OKs carry reply tokens; `chaos(rig)`: a coroutine
    run beside the drain, which may `rig.kill_sender()` and `rig.start_sender()`; `quiet`: seconds
    with no new delivery that mean done; `replicas`: senders started together (one consumer group);
    `rates`: the channel's requests per second per endpoint, in linesim and in the senders."""
    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        s = run.settings
        await run.create_topics()
        tenant = Tenant(s.prefix, "s" * 32, "t" * 40)
        group = f"{s.prefix}-sender"
        log_path = VAR / "runs" / f"{s.prefix}-sender.log"
        senders: list[subprocess.Popen] = []  # every one started (all stopped at the end)
        live: list[subprocess.Popen] = []     # those not killed on purpose: each must stay up
        try:
            # the whole history decided first: the sender then drains a full outbox. The worker reads
            # it a few hundred messages at a time, as it would have read them live over the days: in
            # one fetch a partition's whole history made its outbox one batch, and every commit of
            # the sender's came at its very end
            run.start_worker(env={"CONSUMER_MAX_FETCH_SIZE": str(HISTORY_BYTES)})
            flush = uuid.uuid4().hex
            messages = feed(loaded, s.partitions, run.tick_every, flush)
            await run.produce(with_reply_tokens(messages) if tokens else messages, batch_bytes=HISTORY_BYTES // 2)
            await run.collect(flush, timeout=300)
            config = Config([Channel(tenant.id, tenant.channel_access_token, tenant.channel_secret)],
                            strict_ids=False,  # the town's ids are short, not LINE's 33 characters
                            rates={ep: Rate(n, 1) for ep, n in (rates or {}).items()})
            async with linesim_with(config, lambda state: faults) as (sim, _):
                ports: dict[subprocess.Popen, int] = {}  # each sender's /metrics
                env = {**os.environ, **s.env(), "ANPI_CHANNEL_SECRET": tenant.channel_secret,
                       "ANPI_CHANNEL_ACCESS_TOKEN": tenant.channel_access_token, "ANPI_LINE_API": sim.base_url,
                       **({"ANPI_REDIS": redis} if redis else {}),
                       **{f"ANPI_LINE_RATE_{ep.upper()}": str(n) for ep, n in (rates or {}).items()}}
                sample: dict = {}
                total = sum(expected.values())
                last = [0, time.monotonic()]

                class Rig:
                    settings = s

                    @staticmethod
                    def delivered() -> int:
                        return sum(sim.state.delivery_counts().values())

                    @staticmethod
                    def start_sender() -> None:
                        port = kafka_simulate._free_port()
                        with open(log_path, "ab") as log:
                            senders.append(subprocess.Popen(
                                [sys.executable, "-m", "streams.kafka.sender_app"],
                                env={**env, "ANPI_SENDER_METRICS_PORT": str(port)}, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True))
                        live.append(senders[-1])
                        ports[senders[-1]] = port

                    @staticmethod
                    def kill_sender() -> None:
                        """SIGKILL the latest: no commit of what it delivered since its last one."""
                        sender = live.pop()
                        sender.kill()
                        sender.wait(30)

                faults.start()
                started = time.monotonic()
                for _ in range(replicas):
                    Rig.start_sender()
                chaotic = asyncio.ensure_future(chaos(Rig)) if chaos is not None else None

                def done() -> bool:
                    n = Rig.delivered()
                    if n != last[0]:
                        last[:] = [n, time.monotonic()]
                    for sender in live:
                        assert sender.poll() is None, f"a sender exited with {sender.returncode} (log: {log_path})"
                    if sample_at is not None and not sample and time.monotonic() - started > sample_at:
                        sample.update(scrape(ports[senders[0]], "anpi_sender_"))
                    # everything delivered and nothing more for a while (a repeat would show by then)
                    return ((chaotic is None or chaotic.done()) and n >= total
                            and time.monotonic() - last[1] > quiet)

                await until(done, 600, "the outbox to drain")
                if chaotic is not None:
                    await chaotic  # its errors, if any
                return Drained(sim.state.delivery_counts(), last[1] - started, Counter(sim.state.requests), sample,
                               [scrape(ports[sender], "anpi_sender_") for sender in live])
        finally:
            for sender in senders:
                if sender.poll() is None:
                    sender.send_signal(signal.SIGTERM)
            for sender in senders:
                try:
                    sender.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    sender.kill()
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()
            shutil.rmtree(VAR / "faust" / group, ignore_errors=True)

    return asyncio.run(go())


def scrape(port: int, prefix: str) -> dict[str, float]:
    """Unlabelled samples (and labelled ones summed) of a /metrics page whose names start with prefix."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: Counter = Counter()
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, value = line.rpartition(" ")
            out[name.split("{")[0]] += float(value)
    return dict(out)


def by_recipient(expected: Counter, delivered: Counter) -> Tally:
    return Tally(lost=sum(max(0, n - delivered[to]) for to, n in expected.items()),
                 duplicated=sum(max(0, n - expected[to]) for to, n in delivered.items() if to in expected),
                 extra=sum(n for to, n in delivered.items() if to not in expected), seen=sum(delivered.values()))


def test_line_down_for_90_s_delays_every_message_and_loses_none(town):
    loaded, expected = town
    faults = Faults(down_seconds=90)
    delivered, seconds, answers, during, _ = drain(loaded, expected, faults, sample_at=60)
    conflicts = sum(n for (endpoint, status), n in answers.items() if status == 409)
    result = by_recipient(expected, delivered)
    report("LINE 500 for 90 s", result, drained_after=f"{seconds:.1f} s", calls_failed=faults.failed["down"],
           answered_409=conflicts, waiting_at_60_s=during.get("anpi_sender_retrying"))
    assert result.clean, result
    assert seconds > 90 and conflicts > 0  # held through the outage; the calls LINE took came again: 409
    # an SRE sees it: calls waiting, the oldest for most of the minute (LineBacklogOld fires on it)
    assert during["anpi_sender_retrying"] > 0 and during["anpi_sender_oldest_retry_seconds"] > 30


@pytest.mark.parametrize("name,faults", [
    ("fault-free", Faults()),
    ("LINE 30 % 429/500", Faults(flaky=0.3)),
    ("LINE 30 % 429/500/12 s hangs", Faults(flaky=0.3, hang=12.0)),
], ids=["fault-free", "flaky", "flaky-hangs"])
def test_line_slow_or_failing_delivers_everything_once(town, name, faults):
    loaded, expected = town
    delivered, seconds, *_ = drain(loaded, expected, faults)
    result = by_recipient(expected, delivered)
    report(name, result, drained_in=f"{seconds:.1f} s", calls_failed=sum(faults.failed.values()))
    assert result.clean, result


def test_redis_killed_under_the_sender_then_the_sender_killed_thanks_everyone_once(town, tmp_path):
    """Answers (the thanks for an OK tapped in LINE) are claimed in Redis before they go. Redis is
    killed as the sender starts and comes back 10 s later (it keeps its data: AOF); once every
    message is out the sender is SIGKILLed before it commits, and a new one reads its last batches
    again with the tokens long expired. Each person still gets each thanks once."""
    loaded, expected = town
    server = RedisServer(tmp_path / "redis")
    server.start()

    async def chaos(rig):
        server.kill()
        await asyncio.sleep(10)
        assert rig.delivered() < sum(expected.values()), "the answers did not wait for Redis"
        server.start()
        await until(lambda: rig.delivered() >= sum(expected.values()), 300, "everything delivered")
        rig.kill_sender()
        # what it committed lies just past a batch's mark on every partition: its successor reads
        # whole batches, and plans them into the same calls under the same retry keys
        marks = await every_batch_mark(rig.settings)
        at = await sender_committed(rig.settings, f"{rig.settings.prefix}-sender")
        inside = {p: o for p, o in at.items() if o - 1 not in marks.get(p, ())}
        assert at and not inside, f"committed inside a batch (partition: offset): {inside}"
        rig.start_sender()

    try:
        delivered, seconds, *_ = drain(loaded, expected, Faults(), redis=server.url, tokens=True,
                                                 chaos=chaos, quiet=20.0)
    finally:
        server.kill()
    result = by_recipient(expected, delivered)
    report("Redis kill -9 under the sender for 10 s, then sender SIGKILL", result, drained_in=f"{seconds:.1f} s")
    assert result.clean, result


@pytest.fixture(scope="module")
def small_town():
    return history(members=300, groups=2, days=3)


def test_two_senders_keep_together_to_their_channels_limit(small_town):
    """LINE's limits are per channel, however many senders deliver for it: two replicas (one
    consumer group, the partitions shared) take each call's turn from one bucket per endpoint in
    Redis, so together they keep to it. linesim answers 429 past it, as LINE does."""
    loaded, expected = small_town
    per_second = 40
    drained = drain(loaded, expected, Faults(), replicas=2, rates={"push": per_second})
    result = by_recipient(expected, drained.delivered)
    pushes = drained.answers[("push", 200)]
    report("two senders, pushes limited to 40/s", result, drained_in=f"{drained.seconds:.1f} s", pushes=pushes,
           answered_429=drained.answers[("push", 429)],
           calls_by_sender=[m.get("anpi_sender_requests_total", 0) for m in drained.by_sender])
    assert result.clean, result
    assert all(m.get("anpi_sender_requests_total", 0) > 0 for m in drained.by_sender) and len(drained.by_sender) == 2
    assert drained.answers[("push", 429)] == 0, drained.answers
    assert drained.seconds > 0.8 * pushes / per_second  # paced at the limit, not just lucky
