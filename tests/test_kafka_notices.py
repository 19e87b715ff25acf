"""Notices (お知らせ配信) on the Kafka runtime, end to end, with every piece real: the worker writes each
resident's label to Redis, staff send from the admin screen over Redis (as `anpi admin serve`),
`anpi sender` (a process of its own) delivers the chunks with the tenant's token, and a resident's
tap on the notice's 「無事です」 goes through the ingress and the worker like a check's OK. Time is
virtual: the test moves linesim's clock and sends the ticks."""
import asyncio
import re
import signal
import uuid
from contextlib import AsyncExitStack

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents import notices as nt
from agents.messages import OK_DATA
from kafka_edges import ingress_in_process, kill, start_sender
from linesim import Channel, Config, ManualClock, run_linesim, user_id_for
from linesim.residents import postback_event, user_source
from proving_ground import until
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.admin.app import create_kafka_app
from streams.admin.backends import RedisReadSide
from streams.admin.redis_accounts import RedisStaff
from streams.kafka import simulate as kafka_simulate
from streams.kafka.records import Naming, tick_messages
from streams.kafka.settings import Settings
from streams.notices.in_redis import RedisNotices, prefix
from streams.kafka.redis_store import ReadModel
from streams.tenants.in_redis import RedisRegistry

pytestmark = pytest.mark.usefixtures("running_services")
START = 1_796_050_800  # 2026-12-01T00:00+09:00, virtual (seconds)
DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo", None)
PASSWORD = "a long enough password"


def csrf_in(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_a_notice_on_kafka_reaches_who_has_not_answered_and_its_button_closes_their_check():
    residents = [user_id_for(f"kafka-notice-{i}") for i in range(3)]

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        home = Tenant(run.settings.prefix, "n" * 32, "notice-token-" + "n" * 30)
        naming, parts = Naming(run.settings.prefix), run.settings.partitions
        redis = aioredis.from_url(run.settings.redis)
        edges = AsyncExitStack()
        entry = await edges.enter_async_context(ingress_in_process(run.settings, {home.id: home}))
        hook, sink = entry.hook, entry.sink
        clock = ManualClock(START)
        config = Config([Channel(home.id, home.channel_access_token, home.channel_secret,
                                 webhook_url=f"{hook}/{home.id}")], clock=clock)
        staff = RedisStaff(redis)
        await staff.create_user(home.id, "suzuki", "operator", PASSWORD, START * 1000, "(test)")
        root = web.Application()
        root.add_subapp("/admin", create_kafka_app(RedisReadSide(redis, sink, staff), staff, RedisRegistry(redis),
                                                   RedisNotices(redis), {home.id: "Asia/Tokyo"},
                                                   lambda: int(clock.now() * 1000)))
        admin = TestServer(root)
        await admin.start_server()
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sender = None

        async def get(path: str) -> str:
            async with http.get(admin.make_url(path)) as r:
                assert r.status == 200, path
                return await r.text()

        async def post(path: str, data) -> int:
            async with http.post(admin.make_url(path), data=data, allow_redirects=False) as r:
                return r.status

        try:
            async with run_linesim(config) as sim:
                run.start_worker()
                sender = start_sender(run.settings, home, sim.base_url)   # on linesim's clock

                def got(member: str) -> list:
                    return sim.state.deliveries_to(member)

                async def tap(member: str, at: int) -> None:
                    clock.set(at)
                    me = user_source(member)
                    await sim.state.crowd.post(home.id, [postback_event(
                        me, OK_DATA, reply_token=sim.state.issue_reply_token(home.id, me), timestamp=at * 1000)])

                await run.produce([naming.event_message(home.id, r, Register(
                    START * 1000, MemberSettings(r, "watch", DAILY_9, None)), parts) for r in residents])
                clock.set(START + 9 * 3600)
                await run.produce(tick_messages((START + 9 * 3600) * 1000, parts, uuid.uuid4().hex))
                await until(lambda: all(len(got(r)) == 1 for r in residents), 90, "the morning's three cards")
                await tap(residents[0], START + 9 * 3600 + 60)                 # one answers the check
                await until(lambda: len(got(residents[0])) == 2, 90, "the thanks")
                model = ReadModel(redis)
                await until(lambda: _counts_are(model, home.id, {"watch:sent": 2, "watch:idle": 1}), 60,
                            "the worker's labels in Redis")

                # staff send a disaster notice to those who have not answered, from the admin screen
                async with http.post(admin.make_url(f"/admin/{home.id}/login"), allow_redirects=False, data={
                        "csrf": csrf_in(await get(f"/admin/{home.id}/login")), "login": "suzuki",
                        "password": PASSWORD}) as r:
                    assert r.status == 303 and r.headers["Location"].endswith("/overview")
                page = await get(f"/admin/{home.id}/notices")
                assert "準備中" not in page and "約2人" in page
                draft = page.split('name="draft" value="')[1].split('"')[0]
                fields = [("kind", "disaster"), ("title", "避難所を開設しました"), ("body", "体育館が開いています。"),
                          ("services", "watch"), ("unanswered", "1"), ("ok_button", "1"),
                          ("csrf", csrf_in(page)), ("draft", draft)]
                assert await post(f"/admin/{home.id}/notices/send", fields) == 303
                await until(lambda: all(len(got(r)) == 2 for r in residents[1:]), 60, "the notice, by the sender")
                notice = [got(r)[1] for r in residents[1:]]
                assert {d.endpoint for d in notice} == {"multicast"} and len({d.request_id for d in notice}) == 1
                assert notice[0].retry_key == nt.retry_key(home.id, draft, 0)
                assert "避難所を開設しました" in str(notice[0].messages) and len(got(residents[0])) == 2
                # the sender commits the chunk just after LINE took it
                await until(lambda: _page_has(get, f"/admin/{home.id}/notices/{draft}", "配信済み"), 30, "配信済み")
                progress = await get(f"/admin/{home.id}/notices/{draft}")
                assert 'id="percent">100%' in progress and '<span id="sent">2</span> / <span id="total">2</span>' in progress

                # 「無事です」 on the notice: a sign of life, the open check closes as an OK would
                await tap(residents[1], START + 9 * 3600 + 600)
                await until(lambda: len(got(residents[1])) == 3, 90, "the thanks for 無事です")
                assert got(residents[1])[2].endpoint == "reply" and "ありがとう" in str(got(residents[1])[2].messages)
                await until(lambda: _counts_are(model, home.id, {"watch:sent": 1, "watch:idle": 2}), 60,
                            "the label after 無事です")
                return sim.state
        finally:
            await http.close()
            kill(sender)
            run.kill_worker(signal.SIGTERM)
            await admin.close()
            await edges.aclose()
            for key in await redis.keys(prefix(home.id) + "*"):
                await redis.delete(key)
            await redis.aclose()
            await run.delete_topics()

    state = asyncio.run(go())
    assert state.duplicates == 0
    assert {status for (_, status) in state.requests} <= {200}   # no 409: no chunk went twice


async def _page_has(get, path: str, words: str) -> bool:
    return words in await get(path)


async def _counts_are(model: ReadModel, tenant: str, expected: dict) -> bool:
    return await model.counts(tenant) == expected
