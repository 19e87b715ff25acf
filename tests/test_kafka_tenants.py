"""Many municipalities on one Kafka deployment: shared topics, one worker, one sender, one read side.

Two tenants with the same member id (LINE ids are per channel: the same number may be two people):
the home tenant (named like the prefix, as a deployment of before) from the environment, and one
added to the registry in Redis while the processes run (no restart). Each resident gets their check
by their own channel's token, the tap of one closes only their own check, and each tenant's read
side counts only its own. Time is virtual: the test moves linesim's clock and sends the ticks."""
import asyncio
import signal
import uuid
from contextlib import AsyncExitStack

import pytest
import redis.asyncio as aioredis

from proving_ground import until
from kafka_edges import ingress_in_process, kill, start_sender
from linesim import Channel, Config, ManualClock, run_linesim, user_id_for
from linesim.residents import postback_event, user_source
from schemas import effects as fx
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.kafka import simulate as kafka_simulate
from streams.kafka.readside_app import ReadSideConsumer
from streams.kafka.records import Naming, tick_messages
from streams.kafka.settings import Settings
from streams.kafka.readside import Reader
from streams.tenants import registry as tenant_registry
from streams.tenants import settings as ts
from streams.tenants.in_redis import ENTRIES, RedisRegistry

pytestmark = pytest.mark.usefixtures("running_services")
START = 1_796_050_800  # 2026-12-01T00:00+09:00, virtual (seconds)
DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo", None)


def test_two_tenants_share_the_topics_and_nothing_crosses():
    resident = user_id_for("kafka-tenants-resident")   # in both towns

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        home = Tenant(run.settings.prefix, "h" * 32, "home-token-" + "h" * 30)
        other = Tenant(f"town-{uuid.uuid4().hex[:8]}", "o" * 32, "other-token-" + "o" * 30)
        naming, parts = Naming(run.settings.prefix), run.settings.partitions
        redis = aioredis.from_url(run.settings.redis)
        tenants = {home.id: home}
        edges = AsyncExitStack()
        hook = (await edges.enter_async_context(ingress_in_process(run.settings, tenants))).hook
        clock = ManualClock(START)
        config = Config([Channel(t.id, t.channel_access_token, t.channel_secret, webhook_url=f"{hook}/{t.id}")
                         for t in (home, other)], clock=clock)
        sender = None
        readside = ReadSideConsumer(run.settings, redis)
        try:
            async with run_linesim(config) as sim:
                run.start_worker()
                sender = start_sender(run.settings, home, sim.base_url)   # on linesim's clock
                await readside.start()
                reading = asyncio.ensure_future(readside.run())

                def got(channel: str) -> list:
                    return [d for d in sim.state.deliveries_to(resident) if d.channel == channel]

                async def tick(at_seconds: int) -> None:
                    clock.set(at_seconds)
                    await run.produce(tick_messages(at_seconds * 1000, parts, uuid.uuid4().hex))

                # the home town's resident, and the first check: the deployment runs
                await run.produce([naming.event_message(home.id, resident, Register(
                    START * 1000, MemberSettings(resident, "watch", DAILY_9, "090-1111-1111")), parts)])
                await tick(START + 9 * 3600)
                await until(lambda: len(got(home.id)) == 1, 90, "the home town's first card")

                # a town joins: in the registry (as `anpi tenant add --redis` writes it), no restart
                await RedisRegistry(redis).add(tenant_registry.new_entry(other.id, "隣町", START * 1000),
                                               ts.merged(None, START * 1000, timezone="Asia/Tokyo",
                                                         channel_secret=other.channel_secret,
                                                         channel_access_token=other.channel_access_token))
                tenants[other.id] = other   # (this test's ingress; `anpi ingress` follows the registry)
                await run.produce([naming.event_message(other.id, resident, Register(   # day 2, 01:00
                    (START + 25 * 3600) * 1000, MemberSettings(resident, "notify", DAILY_9, None,
                                                               (user_id_for("kafka-tenants-family"),))), parts)])
                await tick(START + 33 * 3600)          # day 2, 09:00: home's resend; the new town's first card
                await until(lambda: len(got(other.id)) == 1 and len(got(home.id)) == 2, 90, "day 2's cards")

                # the new town's resident taps OK (in the new town's LINE): only that check closes
                me = user_source(resident)
                clock.set(START + 33 * 3600 + 60)
                await sim.state.crowd.post(other.id, [postback_event(
                    me, "action=ok", reply_token=sim.state.issue_reply_token(other.id, me),
                    timestamp=(START + 33 * 3600 + 60) * 1000)])
                await until(lambda: len(got(other.id)) == 2, 90, "the new town's thanks")
                await tick(START + 36 * 3600)          # 12:00: the home town's staff are called
                reader = Reader(redis)
                await until(lambda: reader.open_count(home.id, fx.STAFF_CALL), 60, "the home town's staff call")
                await asyncio.sleep(1.0)               # nothing more comes
                reading.cancel()
                opens = {t: await reader.open_count(t, fx.STAFF_CALL) for t in (home.id, other.id)}
                assert len(got(other.id)) == 2 and len(got(home.id)) == 2
                assert got(other.id)[1].endpoint == "reply" and "ありがとう" in str(got(other.id)[1].messages)
                return sim.state, opens, (home.id, other.id)
        finally:
            kill(sender)
            run.kill_worker(signal.SIGTERM)
            await readside.stop()
            await edges.aclose()
            await redis.hdel(ENTRIES, other.id)
            await redis.delete(f"anpi:{{{other.id}}}:tenant")
            await redis.aclose()
            await run.delete_topics()

    state, opens, ids = asyncio.run(go())
    assert state.duplicates == 0
    assert opens == {ids[0]: 1, ids[1]: 0}                      # the home town's staff call; none in the other
    assert {status for (_, status) in state.requests} <= {200}  # every call with its own channel's token


def test_records_of_a_tenant_without_a_channel_are_given_up_counted_and_looked_up_once_a_second():
    """Never holding up the batch, and never reading the whole registry again on every batch."""
    from streams.kafka.sender_app import Senders
    from streams.line.sender import Limits

    async def go():
        settings = Settings.from_env()
        redis = aioredis.from_url(settings.redis)
        home = Tenant(f"home-{uuid.uuid4().hex[:8]}", "h" * 32, "home-token-" + "h" * 30)
        senders = Senders(settings, home, "http://127.0.0.1:9", lambda: START, Limits(), redis)
        reads = []
        entries = senders.registry.entries

        async def counted():
            reads.append(1)
            return await entries()
        senders.registry.entries = counted
        ghost = {"id": "x:1:check_sent", "at": START * 1000, "effect": "check_sent", "subject": "U" + "0" * 32,
                 "cycle": 1, "tenant": f"ghost-{uuid.uuid4().hex[:8]}"}
        try:
            for _ in range(3):
                report = await senders.deliver([ghost])
                assert report.requests == 0
            failures = senders.metrics.registry.get_sample_value("anpi_sender_failures_total",
                                                                 {"endpoint": "none", "status": "no_channel"})
            return len(reads), failures
        finally:
            await senders.close()
            await redis.aclose()

    reads, failures = asyncio.run(go())
    assert failures == 3 and reads == 1
