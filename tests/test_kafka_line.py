"""A full ladder through the Kafka runtime and real HTTP: linesim's residents tap OK by signed
webhook → ingress → inbound topic → subject agent (worker process) → outbox → the sender (its own
Faust worker process) → linesim. Time is virtual: the test sets linesim's clock and sends the ticks."""
import asyncio
import json
import signal
import uuid
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiohttp import web

from agents import hooks
from backends import key_contents
from kafka_edges import ingress_in_process, kill, start_sender
from linesim import Channel, Config, ManualClock, Resident, run_linesim, user_id_for
from linesim.residents import follow_event, message_event, postback_event, user_source
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.admin.redis_accounts import RedisStaff
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import event_message, tick_messages
from streams.kafka.settings import Settings
from streams.tenants import settings as ts
from streams.tenants.in_redis import RedisRegistry

pytestmark = pytest.mark.usefixtures("running_services")
START = 1_796_050_800  # 2026-12-01T00:00+09:00, in seconds: linesim's clock, which every process here reads
HOOK_SECRET = "call-centre-" + "k" * 32


@asynccontextmanager
async def _cleanup(runner):
    try:
        yield runner
    finally:
        await runner.cleanup()


async def until(condition, timeout: float = 90.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        await asyncio.sleep(0.1)


async def topic_bytes(settings: Settings) -> bytes:
    """Every record (key, headers, value) of every topic of the run, committed or not, end to end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        names = [n for n in await admin.list_topics() if n.startswith(settings.prefix)]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False,
                                isolation_level="read_uncommitted")
    await consumer.start()
    try:
        parts = [TopicPartition(n, p) for n in names for p in range(settings.partitions)]   # every topic's
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out, quiet = [], 0
        while quiet < 2:   # read until two fetches in a row bring nothing
            batches = await consumer.getmany(timeout_ms=1000)
            quiet = 0 if batches else quiet + 1
            for records in batches.values():
                out += [b"".join([r.key or b"", *(v for _, v in r.headers), r.value or b""]) for r in records]
        return b"\n".join(out)
    finally:
        await consumer.stop()


def test_an_answer_and_an_escalation_go_all_the_way_round_through_kafka():
    answers, silent, family = user_id_for("kafka-a"), user_id_for("kafka-b"), user_id_for("kafka-family")
    newcomer, staff = user_id_for("kafka-newcomer"), user_id_for("kafka-staff")
    daily = Schedule("1d", 9 * 60, "Asia/Tokyo", None)
    posts: list[tuple[bytes, dict]] = []

    async def receive(request):
        posts.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        tenant = Tenant(run.settings.prefix, "s" * 32, "t" * 40)
        edges = AsyncExitStack()
        redis = aioredis.from_url(run.settings.redis)
        accounts = RedisStaff(redis)
        hook = (await edges.enter_async_context(ingress_in_process(run.settings, {tenant.id: tenant},
                                                                   accounts.link_line))).hook
        hook += "/" + tenant.id
        clock = ManualClock(START)
        config = Config([Channel("town", tenant.channel_access_token, tenant.channel_secret, webhook_url=hook)],
                        residents=[Resident(answers, "answer", delay=600), Resident(silent, "never"),
                                   Resident(family, "never")], clock=clock)
        sender = None
        # a call centre's receiver for the tenant's outgoing webhook
        receiver = web.Application()
        receiver.router.add_post("/hook", receive)
        centre = web.AppRunner(receiver)
        await centre.setup()
        await edges.enter_async_context(_cleanup(centre))
        site = web.TCPSite(centre, "127.0.0.1", 0)
        await site.start()
        hook_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"
        # the wording and the webhook staff saved on the 設定 page (the tenant registry in Redis): the
        # sender follows them
        await RedisRegistry(redis).save(tenant.id, None, settings=ts.merged(
            None, START * 1000, check_text="今朝もお元気ですか？", hook_url=hook_url, hook_secret=HOOK_SECRET))
        try:
            async with run_linesim(config) as sim:
                run.start_worker()
                sender = start_sender(run.settings, tenant, sim.base_url,   # on linesim's clock
                                      ANPI_ADMIN_URL="https://admin.example")
                parts = run.settings.partitions

                async def tick(at_seconds: int) -> None:
                    clock.set(at_seconds)
                    await run.produce(tick_messages(at_seconds * 1000, parts, uuid.uuid4().hex))

                def got(uid):
                    return len(sim.state.deliveries_to(uid))

                await run.produce([event_message(m.id, Register(START * 1000, m), parts) for m in (
                    MemberSettings(answers, "watch", daily, "090-0000-0001"),
                    MemberSettings(silent, "notify", daily, None, (family,)))])
                # a newcomer signs up in LINE: the answers to her own taps go by the free reply API
                me = user_source(newcomer)
                for make in (lambda token: follow_event(newcomer, reply_token=token, timestamp=START * 1000),
                             lambda token: postback_event(me, "action=enroll&s=notify&i=1d&t=540", reply_token=token,
                                                          timestamp=START * 1000 + 5000)):
                    before = got(newcomer)
                    await sim.state.crowd.post("town", [make(sim.state.issue_reply_token("town", me))])
                    await until(lambda: got(newcomer) > before, what="the answer to the newcomer")
                assert [d.endpoint for d in sim.state.deliveries_to(newcomer)] == ["reply", "reply"]
                assert "登録しました" in str(sim.state.deliveries_to(newcomer)[-1].messages)
                # a staff member links their LINE with the code the admin screen showed them
                await accounts.add_user(tenant.id, "kafka-sato", "operator", "x", START * 1000, "(test)")
                code = await accounts.line_code(tenant.id, "kafka-sato", START * 1000)
                await sim.state.crowd.post("town", [message_event(
                    user_source(staff), f"職員 {code}", reply_token=sim.state.issue_reply_token("town", user_source(staff)),
                    timestamp=START * 1000 + 6000)])
                await until(lambda: got(staff) == 1, what="the answer to the staff member's code")
                assert "職員のお知らせ（kafka-sato）" in str(sim.state.deliveries_to(staff)[0].messages)
                await tick(START + 9 * 3600)                           # 09:00: all three get the card
                await until(lambda: got(answers) == 1 and got(silent) == 1 and got(newcomer) == 3,
                            what="the morning cards")
                clock.set(START + 9 * 3600 + 900)                      # 09:15: the first has tapped OK
                await sim.settle()
                await tick(START + 9 * 3600 + 900)
                await until(lambda: got(answers) == 2, what="the thanks for the OK")
                await tick(START + 33 * 3600)                          # next day 09:00: the resend
                await until(lambda: got(silent) == 2, what="the resend")
                assert got(answers) == 3                               # the first one's next card
                await tick(START + 36 * 3600)                          # 12:00: the family is told
                await until(lambda: got(family) == 1, what="the family's notice")
                # the newcomer (安否通知 with no contacts yet) did not answer either: staff are called,
                # and the staff member is told on LINE
                await until(lambda: got(staff) == 2, what="the staff alert")
                await tick(START + 39 * 3600)                          # 15:00: the family did not go: staff
                await until(lambda: got(staff) == 3, what="the second staff alert")
                await until(lambda: len(posts) == 2, what="the call centre's two posts")
                await asyncio.sleep(1.0)                               # nothing more comes
                # no phone number or secret in clear on any topic of the run, or in Redis
                secrets_ = ["090-0000-0001", "09000000001", tenant.channel_secret, tenant.channel_access_token,
                            HOOK_SECRET]
                on_topics = await topic_bytes(run.settings)
                assert len(on_topics) > 10_000 and [x for x in secrets_ if x.encode() in on_topics] == []
                in_redis = b"".join([k + b"=" + repr(await key_contents(redis, k)).encode()
                                     for k in await redis.keys("*")])
                assert [x for x in secrets_ if x.encode() in in_redis] == []
                return sim.state
        finally:
            kill(sender)
            run.kill_worker(signal.SIGTERM)
            await redis.delete(f"anpi:{{{tenant.id}}}:tenant", *await redis.keys(f"anpi:{{{tenant.id}}}:admin:*"))
            await redis.aclose()
            await edges.aclose()
            await run.delete_topics()

    state = asyncio.run(go())
    assert state.duplicates == 0
    # card, thanks; next day's card, and its thanks (the resident tapped while the clock ran to 12:00)
    assert len(state.deliveries_to(answers)) == 4 and len(state.deliveries_to(silent)) == 2
    assert "ありがとう" in str(state.deliveries_to(answers)[1].messages)
    assert "今朝もお元気ですか？" in str(state.deliveries_to(answers)[0].messages)   # the saved wording
    notice = state.deliveries_to(family)[0].messages
    assert any("見に行きます" in str(m) for m in notice)  # the family can say they will go and look
    assert {status for (_, status) in state.requests} <= {200}
    alerts = [str(d.messages) for d in state.deliveries_to(staff)[1:]]
    assert "確認にお返事がありません" in alerts[0] and "3時間動けていません" in alerts[1]
    assert all("https://admin.example/admin/" in a and silent not in a and newcomer not in a for a in alerts)
    assert [d.endpoint for d in state.deliveries_to(staff)] == ["reply", "push", "push"]
    # the call centre got both staff calls, signed, each once, keyed by the effect id
    bodies = [json.loads(raw) for raw, _ in posts]
    assert sorted((b["member"], b["reason"]) for b in bodies) == sorted([(newcomer, "no_answer"), (silent, "unclaimed")])
    for raw, headers in posts:
        assert hooks.verify(HOOK_SECRET, raw, headers["X-Anpi-Signature"])
        assert headers["Idempotency-Key"] == json.loads(raw)["id"]
