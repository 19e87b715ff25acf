"""The Kafka runtime's sender (`anpi sender`, streams/kafka/sender_app.py) killed mid-batch and
restarted sends nothing twice (issue 4; tests/test_embedded_runtime.py has the embedded version).

The real worker process decides one morning's checks for 2,400 members in one tick, so each outbox
partition gets one batch of ~1,200 check_sent effects and its batch_end mark: three multicasts a
batch. linesim stands in for LINE, with one change in front of /multicast: calls are taken one at a
time, the first sender's after some latency, and right after LINE has accepted the first one the
sender process is SIGKILLed, before the answer leaves. So the kill lands mid-batch, and on the worst request: one LINE
accepted but whose answer the sender never saw. The multicasts still queued behind it die with their
process (LINE never gets them). A new sender process (same group) must then deliver the batch again
whole, coalesced into the same requests with the same retry keys: LINE answers 409 to the one it had
accepted and takes the others, and every member ends up with exactly one card.
"""
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from linesim import Channel, Config, user_id_for
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams import codec
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import event_message, tick_messages
from streams.kafka.settings import Settings
from proving_ground import linesim_with, until

pytestmark = pytest.mark.usefixtures("running_services")
ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / os.environ.get("ANPI_VAR", "var")  # where the sender (cwd ROOT) keeps its Faust files
START = 1_796_050_800  # 2026-12-01T00:00+09:00, in seconds
MEMBERS = 2_400        # two partitions of ~1,200: three multicasts (500, 500, ~200) per batch
MULTICAST = "/v2/bot/message/multicast"
# LINE's latency for the first sender's multicasts (the restarted one's get none). Longer than
# Faust's commit interval (2.8 s), so that a sender which acked (and so committed) a batch before
# delivering it would have committed it by the time of the kill, and the restart would skip it:
# members left without their card.
LATENCY = 4.0


class KillAfterFirstAccept:
    """linesim's /multicast one call at a time; the sender dies right after LINE accepts the first.

    Calls its dead process had already sent are refused without effect (they never reached LINE);
    calls from the restarted process are served as LINE would."""

    def __init__(self, sim_state):
        self.state = sim_state
        self.lock = asyncio.Lock()
        self.pid: int | None = None       # the sender to kill
        self.killed = asyncio.Event()
        self.restarted = False            # set before the second sender starts
        self.at_kill: int | None = None   # deliveries linesim had made when the sender died
        self.lost = 0                     # calls of the dead sender that never reached LINE

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.path != MULTICAST:
            return await handler(request)
        from_first_sender = not self.restarted
        async with self.lock:
            if from_first_sender and self.killed.is_set():
                self.lost += 1
                return web.json_response({"message": "sender gone"}, status=503)
            if from_first_sender:
                await asyncio.sleep(LATENCY)
            response = await handler(request)
            if not self.killed.is_set() and response.status == 200:
                # accepted and delivered: the sender dies before it hears so
                self.at_kill = sum(1 for d in self.state.deliveries if d.delivered)
                os.kill(self.pid, signal.SIGKILL)
                self.killed.set()
            return response


def linesim_killing_the_sender(config: Config):
    """run_linesim, with KillAfterFirstAccept in front of its handlers."""
    return linesim_with(config, KillAfterFirstAccept)


async def batch_marks(settings: Settings, timeout: float = 60.0) -> dict[int, int]:
    """Per outbox partition, the offset of its last batch_end mark (committed records only)."""
    return {number: max(marks) for number, marks in (await every_batch_mark(settings, timeout)).items()}


async def every_batch_mark(settings: Settings, timeout: float = 60.0) -> dict[int, set[int]]:
    """Per outbox partition, the offsets of its batch_end marks (committed records only)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    marks: dict[int, set[int]] = {}
    try:
        parts = [TopicPartition(settings.outbox, n) for n in range(settings.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)  # the last stable offsets, under read_committed
        deadline = asyncio.get_running_loop().time() + timeout
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the outbox could not be read to its end")
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    if "batch_end" in codec.loads(record.value):
                        marks.setdefault(tp.partition, set()).add(record.offset)
    finally:
        await consumer.stop()
    return marks


async def committed(settings: Settings, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == settings.outbox}


def test_a_kafka_sender_killed_mid_batch_and_restarted_sends_nothing_twice():
    members = [user_id_for(f"sender-crash-{i}") for i in range(MEMBERS)]
    daily = Schedule("1d", 9 * 60, "Asia/Tokyo", None)

    async def go():
        run = kafka_simulate.KafkaRun(replace(Settings.from_env(), partitions=2))  # a fresh topic prefix
        s = run.settings
        await run.create_topics()
        tenant = Tenant(s.prefix, "s" * 32, "t" * 40)
        group = f"{s.prefix}-sender"
        sender_log = VAR / "runs" / f"{s.prefix}-sender.log"
        sender_log.parent.mkdir(parents=True, exist_ok=True)
        senders: list[subprocess.Popen] = []
        config = Config([Channel(tenant.id, tenant.channel_access_token, tenant.channel_secret)])
        try:
            async with linesim_killing_the_sender(config) as (sim, crash):
                env = {**os.environ, **s.env(), "ANPI_CHANNEL_SECRET": tenant.channel_secret,
                       "ANPI_CHANNEL_ACCESS_TOKEN": tenant.channel_access_token, "ANPI_LINE_API": sim.base_url}

                def start_sender() -> subprocess.Popen:
                    with open(sender_log, "ab") as log:
                        proc = subprocess.Popen([sys.executable, "-m", "streams.kafka.sender_app"], env=env,
                                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
                    senders.append(proc)
                    return proc

                def dead(proc: subprocess.Popen | None = None):
                    def check():
                        if run.worker is None or run.worker.poll() is not None:
                            return f"the worker exited (log: {run.log_path})"
                        if proc is not None and proc.poll() is not None:
                            return f"the sender exited with {proc.returncode} (log: {sender_log})"
                        return None
                    return check

                def delivered() -> Counter:
                    return sim.state.delivery_counts()

                run.start_worker()
                first = start_sender()
                crash.pid = first.pid
                # every member's first check falls due at 09:00: one tick decides them all
                await run.produce([event_message(uid, Register(START * 1000, MemberSettings(
                    uid, "watch", daily, "090-0000-0000")), s.partitions) for uid in members])
                await run.produce(tick_messages((START + 9 * 3600) * 1000, s.partitions, uuid.uuid4().hex))

                await until(crash.killed.is_set, 120, "the first multicast to be accepted", dead(first))
                await until(lambda: first.poll() is not None, 30, "the killed sender to be gone")
                assert first.returncode == -signal.SIGKILL
                at_kill = crash.at_kill
                assert 0 < at_kill < MEMBERS, "the kill did not land mid-batch"

                crash.restarted = True
                second = start_sender()
                await until(lambda: len(delivered()) == MEMBERS, 120, "every member's card", dead(second))
                # done only once the second sender has committed its position past every batch_end
                # mark: from then on no restart can deliver those batches again
                marks = await batch_marks(s)
                assert sorted(marks) == list(range(s.partitions))

                async def past_the_marks() -> bool:
                    at = await committed(s, group)
                    return all(at.get(p, -1) > offset for p, offset in marks.items())

                await until(past_the_marks, 60, "the sender to commit its batches", dead(second))
                return sim.state, at_kill, crash.lost
        finally:
            for proc in senders:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()
            shutil.rmtree(VAR / "faust" / group, ignore_errors=True)

    state, at_kill, lost = asyncio.run(go())
    per_member = state.delivery_counts()
    assert set(per_member) == set(members)
    assert set(per_member.values()) == {1}, Counter(per_member.values())  # nobody got the card twice
    assert state.duplicates == 0
    assert lost >= 1  # the rest of the batch died with the first sender: the second one sent it
    statuses = Counter(state.requests)
    assert statuses[("multicast", 409)] >= 1   # the accepted call came again, same key: LINE said so
    assert set(statuses) <= {("multicast", 200), ("multicast", 409)}, statuses  # no 429: within limits
    # the second sender rebuilt the same requests: each member's card went in one accepted call, and
    # the calls accepted add up to the members, whatever the first sender had got through
    assert sum(1 for d in state.deliveries if d.delivered) == MEMBERS
    assert len({d.retry_key for d in state.deliveries}) == statuses[("multicast", 200)]
    assert len({str(d.messages) for d in state.deliveries}) == 1  # all the same morning card
