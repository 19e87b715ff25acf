"""One sender for many municipalities, fair: a big town's burst does not hold up a small town's checks.

LINE's limits are per channel, so each tenant has its own token buckets (in Redis, shared by the
sender replicas) and its own lane: the worker writes each town's part of a batch with a mark of its
own, fewest messages first, and the sender delivers each part through its own channel side by side.
Here the big town's 1,000 cards at 9:00 are eight multicasts at 1 a second (set low, so that the
burst lasts as a million cards would at LINE's 200 a second); the small town's, due at the same
tick, go out within a second of it."""
import asyncio
import signal
import time
import uuid

import pytest
import redis.asyncio as aioredis

from kafka_edges import kill, start_sender
from linesim import Channel, Config, ManualClock, run_linesim, user_id_for
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.kafka import simulate as kafka_simulate
from streams.kafka.records import Naming, tick_messages
from streams.kafka.settings import Settings, partition_of
from streams.tenants import registry as tenant_registry
from streams.tenants import settings as ts
from streams.tenants.in_redis import ENTRIES, RedisRegistry

pytestmark = pytest.mark.usefixtures("running_services")
START = 1_796_050_800  # 2026-12-01T00:00+09:00, virtual (seconds)
DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo", None)
BIG, SMALL = 1_000, 5
MULTICASTS_PER_SECOND = 1


def test_a_big_towns_burst_does_not_delay_a_small_towns_cards():
    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        big = Tenant(run.settings.prefix, "b" * 32, "big-token-" + "b" * 30)
        small = Tenant(f"small-{uuid.uuid4().hex[:8]}", "s" * 32, "small-token-" + "s" * 30)
        naming, parts = Naming(run.settings.prefix), run.settings.partitions
        redis = aioredis.from_url(run.settings.redis)
        await RedisRegistry(redis).add(tenant_registry.new_entry(small.id, "小さな町", START * 1000),
                                       ts.merged(None, START * 1000, channel_secret=small.channel_secret,
                                                 channel_access_token=small.channel_access_token))
        clock = ManualClock(START)
        config = Config([Channel(t.id, t.channel_access_token, t.channel_secret) for t in (big, small)], clock=clock)
        sender = None
        try:
            async with run_linesim(config) as sim:
                run.start_worker()
                sender = start_sender(run.settings, big, sim.base_url, ANPI_LINE_RATE_MULTICAST=str(MULTICASTS_PER_SECOND))
                people = [(big.id, user_id_for(f"fair-big-{i}")) for i in range(BIG)]
                # the small town's few residents on one partition: one batch, one multicast (spread over
                # partitions, each would be a call of its own, each waiting for the channel's low rate here)
                ids = (user_id_for(f"fair-small-{i}") for i in range(10_000))
                people += [(small.id, uid) for uid in ids
                           if partition_of(naming.key(small.id, uid), parts) == 0][:SMALL]
                await run.produce([naming.event_message(tenant, uid, Register(
                    START * 1000, MemberSettings(uid, "watch", DAILY_9, "090-0000-0000")), parts)
                    for tenant, uid in people])
                # a first tick (8:00, nothing due) goes all the way round: every process is up
                flush = uuid.uuid4().hex
                await run.produce(tick_messages((START + 8 * 3600) * 1000, parts, flush))
                await run.collect(flush, timeout=120)
                await asyncio.sleep(3.0)               # the sender has its partitions

                def arrived(channel: str) -> int:
                    return sum(1 for d in sim.state.deliveries if d.channel == channel)

                clock.set(START + 9 * 3600)
                ticked = time.monotonic()
                await run.produce(tick_messages((START + 9 * 3600) * 1000, parts))
                small_done = big_done = None
                while big_done is None and time.monotonic() - ticked < 120:
                    now = time.monotonic() - ticked
                    if small_done is None and arrived(small.id) >= 1 and _recipients(sim, small.id) == SMALL:
                        small_done = now
                    if _recipients(sim, big.id) == BIG:
                        big_done = now
                    await asyncio.sleep(0.02)
                return small_done, big_done, _recipients(sim, small.id), _recipients(sim, big.id), sim.state
        finally:
            kill(sender)
            run.kill_worker(signal.SIGTERM)
            await redis.hdel(ENTRIES, small.id)
            await redis.delete(f"anpi:{{{small.id}}}:tenant")
            await redis.aclose()
            await run.delete_topics()

    small_done, big_done, small_n, big_n, state = asyncio.run(go())
    print(f"\nfair sender: the small town's {small_n} cards after {small_done} s; the big town's {big_n} after "
          f"{big_done} s ({MULTICASTS_PER_SECOND} multicasts/s per channel)")
    assert big_n == BIG and small_n == SMALL and state.duplicates == 0
    assert big_done > 3.0                      # the burst really lasts (8 multicasts at 1 a second)
    assert small_done < 1.0                    # and the small town's cards did not wait for it


def _recipients(sim, channel: str) -> int:
    return len({d.to for d in sim.state.deliveries if d.channel == channel and d.delivered})
