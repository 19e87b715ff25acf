"""The proving ground, read side: Redis killed while `anpi readside` applies, and started again.

The read side applies each partition's batch and its offset in one script. With Redis down, a batch
failed; it then tried to read Redis's offsets to seek back, could not (Redis was still down), and
read on from where the fetch had left off: when Redis came back the batches after the failed ones
were applied past them, and the failed ones never were (823 confirmations lost in the issue's run,
counts never repaired). Now it reads nothing on until it has sought back.

The worker runs a busy town (fed while it runs) on the shared broker; the read side follows into a
Redis of its own that keeps its data on disk; that Redis is killed (-9) mid-run and started again
after a while. Every read-side key must then equal a fresh replay of the same topics.
"""
import asyncio
import signal
import uuid

import pytest
import redis.asyncio as aioredis

from streams.simulation import scenario as scenario_module
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import feed
from streams.kafka import readside_app
from streams.kafka.readside_app import ReadSideConsumer
from streams.kafka.settings import Settings
from proving_ground import RedisServer, feed_slowly, until
from test_admin_kafka import ZONE, catch_up, snapshot
from test_kafka_runtime import _count_effects, busy_town

pytestmark = pytest.mark.usefixtures("running_services")


def test_redis_killed_under_the_read_side_loses_no_count(tmp_path):
    loaded = scenario_module.parse(busy_town(members=2_000, groups=10, days=8))
    server = RedisServer(tmp_path / "redis")
    server.start()

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        redis = aioredis.from_url(server.url, socket_timeout=2, socket_connect_timeout=2)
        fresh = aioredis.from_url(server.url.replace("/0", "/1"))
        stop = asyncio.Event()
        try:
            run.start_worker()
            flush = uuid.uuid4().hex
            feeding = asyncio.ensure_future(feed_slowly(run, list(feed(loaded, run.settings.partitions,
                                                                         run.tick_every, flush)), 20))
            follower = ReadSideConsumer(run.settings, redis, ZONE)
            await follower.start()
            following = asyncio.ensure_future(follower.run(stop))
            await _count_effects(run, 4_000, timeout=240)
            await until(lambda: follower.applied > 0, 60, "the read side to apply something")
            server.kill()                    # Redis goes down while effects keep coming
            await asyncio.sleep(5)
            during = metrics(follower)       # an SRE sees it wait
            server.start()                   # and comes back with what it had on disk
            await feeding
            await run.collect(flush, timeout=300)
            await until(lambda: _caught_up(follower), 120, "the read side to catch up")
            await asyncio.sleep(readside_app.LAG_EVERY + 1)  # the lag read once more
            after = metrics(follower)
            stop.set()
            await following
            await follower.stop()
            replay = ReadSideConsumer(run.settings, fresh, ZONE, from_beginning=True)
            await replay.start()
            await catch_up(replay)
            await replay.stop()
            return (await snapshot(redis, run.settings.prefix), await snapshot(fresh, run.settings.prefix),
                    during, after)
        finally:
            stop.set()
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()
            await redis.aclose()
            await fresh.aclose()
            server.kill()

    followed, replayed, during, after = asyncio.run(go())
    assert len(replayed) > 100
    assert followed == replayed
    assert during["behind"] == 1 and during["failures"] > 0
    assert after["behind"] == 0 and after["lag"] == 0 and after["records"] > during["records"] > 0


def metrics(consumer: ReadSideConsumer) -> dict[str, float]:
    """The consumer's anpi_readside_* series, as its /metrics page serves them."""
    tenant = {"tenant": consumer.settings.prefix}
    return {name: consumer.metrics.registry.get_sample_value(f"anpi_readside_{name}{suffix}", tenant)
            for name, suffix in (("records", "_total"), ("failures", "_total"), ("behind", ""), ("lag", ""))}


async def _caught_up(consumer: ReadSideConsumer) -> bool:
    if await consumer.lag() != 0:
        return False
    stored = await consumer.position()
    ends = await consumer.consumer.end_offsets(consumer.parts)
    # every partition with records has its last record applied (a trailing commit marker aside)
    return all(ends[tp] == 0 or stored.get((consumer.topics[tp.topic], tp.partition), -1) >= ends[tp] - 2
               for tp in consumer.parts)
