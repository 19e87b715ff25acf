"""Two Kafka senders (`anpi sender`, streams/kafka/sender_app.py) on one outbox: a rebalance that
finds a sender partway through reading a batch neither stalls it nor sends anything twice.

A sender holds a batch's records un-acked until it has read the batch's batch_end mark. When a second
sender joins (a rolling restart, scaling out) the group rebalances, and Faust by default waited for
every message it had handed out to be acked before giving the partitions up: the mark of a half-read
batch never comes once fetching has stopped, so that wait never ended. The cards of the half-read
batch then went out only after the broker gave up on the stuck sender (the rebalance timeout, a
minute), and the stuck sender stayed alive and useless.

The real worker process decides one morning's checks in one tick, for members chosen so that one
outbox partition gets a small batch (SMALL cards: one multicast) and the other a large one (LARGE:
four). The first sender reads the two partitions in step (small fetches: FETCH_BYTES), so it reaches
the small batch's mark and starts delivering it while the large batch is read only partway. linesim
holds that first multicast; the second sender starts, and the held call goes on once the first
sender has begun to give its partitions up (its log says so), so the rebalance finds it holding
a half-read batch (no sleeps: each step waits on an event). Then every member must get exactly one
card, soon after the second sender started (not a rebalance timeout later), and both senders must
still work: the second stops cleanly, and the first takes its partition over, delivers the next
day's resends and commits them (its transactional producers must not be stale), and stops cleanly.
"""
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient

from linesim import Channel, Config, user_id_for
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import event_message, tick_messages
from streams.kafka.settings import Settings, partition_of
from proving_ground import linesim_with
from test_kafka_sender_crash import ROOT, START, VAR, batch_marks, committed, until

pytestmark = pytest.mark.usefixtures("running_services")
SMALL, LARGE = 400, 1_900  # LARGE > SMALL + 1,000 (the sender's take): its mark is not yet read
MULTICAST = "/v2/bot/message/multicast"
FETCH_BYTES = 16_384  # per partition and fetch (Faust's CONSUMER_MAX_FETCH_SIZE): ~60 records
REVOKING = b"Revoking previously assigned partitions"  # aiokafka's log line, at the start of a rebalance
PROMPT = 15.0  # seconds from the second sender's start by which every card must be out: the stuck
# sender would have been dropped only after the rebalance timeout (60 s), far later


def members_for(partitions: int) -> list[str]:
    """SMALL members on outbox partition 0 and LARGE on partition 1 (a subject's partition is crc32)."""
    wanted, chosen, i = {0: SMALL, 1: LARGE}, {0: [], 1: []}, 0
    while any(len(chosen[p]) < n for p, n in wanted.items()):
        uid = user_id_for(f"sender-rebalance-{i}")
        p = partition_of(uid, partitions)
        if len(chosen[p]) < wanted[p]:
            chosen[p].append(uid)
        i += 1
    return chosen[0] + chosen[1]


class HoldFirstMulticast:
    """linesim's /multicast, one call at a time (as LINE takes a retry key: a repeat gets 409 even
    when two senders send the same request at once); the very first call waits for `release`."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.path != MULTICAST:
            return await handler(request)
        if not self.held.is_set():
            self.held.set()
            await self.release.wait()
        async with self.lock:
            return await handler(request)


@asynccontextmanager
async def linesim_holding_the_first_multicast(config: Config):
    async with linesim_with(config, lambda state: HoldFirstMulticast()) as (sim, hold):
        try:
            yield sim, hold
        finally:
            hold.release.set()


async def group_state(settings: Settings, group: str) -> tuple[str, int]:
    """(state, number of members) of a consumer group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        described = (await admin.describe_consumer_groups([group]))[0].to_object()["groups"][0]
    finally:
        await admin.close()
    return described["state"], len(described["members"])


def test_a_second_kafka_sender_joining_mid_batch_neither_stalls_the_first_nor_sends_twice():
    daily = Schedule("1d", 9 * 60, "Asia/Tokyo", None)

    async def go():
        run = kafka_simulate.KafkaRun(replace(Settings.from_env(), partitions=2))  # a fresh topic prefix
        s = run.settings
        members = members_for(s.partitions)
        await run.create_topics()
        tenant = Tenant(s.prefix, "s" * 32, "t" * 40)
        group = f"{s.prefix}-sender"
        logs = {name: VAR / "runs" / f"{s.prefix}-sender-{name}.log" for name in ("first", "second")}
        logs["first"].parent.mkdir(parents=True, exist_ok=True)
        senders: dict[str, subprocess.Popen] = {}
        config = Config([Channel(tenant.id, tenant.channel_access_token, tenant.channel_secret)])
        timings: dict[str, float] = {}
        try:
            async with linesim_holding_the_first_multicast(config) as (sim, hold):
                env = {**os.environ, **s.env(), "ANPI_CHANNEL_SECRET": tenant.channel_secret,
                       "ANPI_CHANNEL_ACCESS_TOKEN": tenant.channel_access_token, "ANPI_LINE_API": sim.base_url,
                       "CONSUMER_MAX_FETCH_SIZE": str(FETCH_BYTES),
                       # one batch at a time: the held call keeps the first sender from reading on,
                       # so the rebalance finds the large batch half-read
                       "ANPI_SENDER_BATCHES_IN_FLIGHT": "1"}

                def start_sender(name: str) -> subprocess.Popen:
                    with open(logs[name], "ab") as log:  # info: rebalances, and what the sender dropped
                        senders[name] = subprocess.Popen(
                            [sys.executable, "-m", "streams.kafka.sender_app", "info"], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                    return senders[name]

                def dead(*names: str):
                    def check():
                        if run.worker is None or run.worker.poll() is not None:
                            return f"the worker exited (log: {run.log_path})"
                        for name in names:
                            if senders[name].poll() is not None:
                                return f"the {name} sender exited with {senders[name].returncode} (log: {logs[name]})"
                        return None
                    return check

                def delivered() -> Counter:
                    return sim.state.delivery_counts()

                # the worker's output in produce batches no larger than the sender's fetch: a fetch
                # returns a whole record batch however large, and the worker's own (512 KiB) would
                # bring the large batch in one read, never half of it
                run.start_worker(env={"PRODUCER_MAX_BATCH_SIZE": str(FETCH_BYTES)})
                # every member's first check falls due at 09:00: one tick decides them all
                await run.produce([event_message(uid, Register(START * 1000, MemberSettings(
                    uid, "watch", daily, "090-0000-0000")), s.partitions) for uid in members])
                await run.produce(tick_messages((START + 9 * 3600) * 1000, s.partitions, uuid.uuid4().hex))

                # both batches are in the outbox before the first sender reads it: it reads them in turn
                async def both_batches_out() -> bool:
                    return sorted(await batch_marks(s)) == list(range(s.partitions))

                await until(both_batches_out, 90, "the worker's two batches", dead())
                start_sender("first")
                await until(hold.held.is_set, 60, "the first sender's first multicast", dead("first"))

                started = time.monotonic()
                start_sender("second")

                def first_revoking() -> bool:  # its first rebalance (joining the group) says so too
                    return logs["first"].read_bytes().count(REVOKING) >= 2

                await until(first_revoking, 30, "the first sender to begin giving its partitions up",
                            dead("first", "second"))
                timings["revoking"] = time.monotonic() - started
                hold.release.set()  # the first sender's delivery goes on, the rebalance under way

                await until(lambda: len(delivered()) == len(members), PROMPT, "every member's card "
                            f"within {PROMPT:.0f} s of the second sender's start", dead("first", "second"))
                timings["cards"] = time.monotonic() - started
                state, count = await group_state(s, group)
                assert (state, count) == ("Stable", 2), (state, count)  # both still in the group
                marks = await batch_marks(s)

                async def past(marks: dict[int, int]) -> bool:
                    at = await committed(s, group)
                    return all(at.get(p, -1) > offset for p, offset in marks.items())

                # both senders ack what they delivered: each partition's owner commits past its mark
                await until(lambda: past(marks), 30, "the senders to commit the batches", dead("first", "second"))
                timings["committed"] = time.monotonic() - started
                cards = Counter(delivered())
                requests_after_cards = Counter(sim.state.requests)

                # the second sender stops cleanly; the first takes its partition over and delivers the
                # next day's resends (nobody tapped OK), both partitions' batches
                second = senders["second"]
                second.send_signal(signal.SIGTERM)
                await asyncio.get_running_loop().run_in_executor(None, second.wait, 30)
                assert second.returncode == 0, f"the second sender exited with {second.returncode}"
                resumed = time.monotonic()
                await run.produce(tick_messages((START + 33 * 3600) * 1000, s.partitions, uuid.uuid4().hex))
                await until(lambda: set(delivered().values()) == {2} and len(delivered()) == len(members), 60,
                            "the next day's resends, from the first sender alone", dead("first"))
                timings["resends"] = time.monotonic() - resumed
                # and commits them, its producer for the partition it got back a fresh one (not fenced)
                resent = await batch_marks(s)
                assert all(resent[p] > marks[p] for p in marks)  # each partition's second batch
                await until(lambda: past(resent), 30, "the first sender to commit the resends", dead("first"))
                first = senders["first"]
                first.send_signal(signal.SIGTERM)
                await asyncio.get_running_loop().run_in_executor(None, first.wait, 30)
                assert first.returncode == 0, f"the first sender exited with {first.returncode}"
                # what the rebalance found: the first sender held part of the large batch, and let it go
                assert b"half-read batch dropped" in logs["first"].read_bytes()
                print(f"\nrebalance timings (s): {', '.join(f'{k} {v:.1f}' for k, v in timings.items())}; "
                      f"requests before the resends {dict(requests_after_cards)}")
                return sim.state, members, cards, timings, requests_after_cards
        finally:
            for proc in senders.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()
            shutil.rmtree(VAR / "faust" / group, ignore_errors=True)

    state, members, cards, timings, _ = asyncio.run(go())
    assert set(cards) == set(members) and set(cards.values()) == {1}, Counter(cards.values())
    assert timings["cards"] < PROMPT
    per_member = state.delivery_counts()
    assert set(per_member) == set(members)
    assert set(per_member.values()) == {2}, Counter(per_member.values())  # a card and a resend each
    assert state.duplicates == 0
    statuses = Counter(state.requests)
    assert set(statuses) <= {("multicast", 200), ("multicast", 409)}, statuses  # no 429: within limits
    # every accepted call reached new people: the calls accepted add up to the cards and resends
    assert sum(1 for d in state.deliveries if d.delivered) == 2 * len(members)
    assert len({d.retry_key for d in state.deliveries}) == statuses[("multicast", 200)]
    assert len({str(d.messages) for d in state.deliveries}) == 2  # the morning card, and the resend
