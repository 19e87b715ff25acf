"""My Page on the Kafka runtime, end to end, every piece a process of its own as deployed: a resident
taps 「マイページ」 in LINE, the worker answers with a signed link that `anpi sender` sends (its
ANPI_PUBLIC_URL: `anpi ingress`, which serves My Page), the page shows the state `anpi readside`
keeps in Redis from the changelog, a change goes onto the inbound topic and shows at once (stepped
on top until the read side has it), the worker applies it: the next check moves. Time is virtual:
the test moves linesim's clock, which every process reads (ANPI_CLOCK_URL)."""
import asyncio
import html
import json
import re
import signal
import socket
import uuid

import aiohttp
import pytest
import redis.asyncio as aioredis

from kafka_edges import kill, start, start_sender
from linesim import Channel, Config, ManualClock, run_linesim, user_id_for
from linesim.residents import postback_event, user_source
from proving_ground import until
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams import codec
from streams.kafka import simulate as kafka_simulate
from streams.kafka.readside_app import ReadSideConsumer
from streams.kafka.records import Naming, tick_messages
from streams.kafka.settings import Settings
from streams.kafka.readside import prefix as rs_prefix

pytestmark = pytest.mark.usefixtures("running_services")
START = 1_796_050_800  # 2026-12-01T00:00+09:00, virtual (seconds)
DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def words(page: str) -> str:
    page = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_my_page_on_kafka_shows_the_read_sides_state_takes_a_change_and_the_worker_applies_it():
    hana, daughter = user_id_for("kafka-mypage-hana"), user_id_for("kafka-mypage-daughter")

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        town = Tenant(run.settings.prefix, "m" * 32, "mypage-token-" + "m" * 30)
        naming, parts = Naming(run.settings.prefix), run.settings.partitions
        redis = aioredis.from_url(run.settings.redis)
        port = free_port()
        site = f"http://127.0.0.1:{port}"
        clock = ManualClock(START)
        config = Config([Channel(town.id, town.channel_access_token, town.channel_secret,
                                 webhook_url=f"{site}/webhook/{town.id}")], clock=clock)
        readside = ReadSideConsumer(run.settings, redis)
        processes, reading = [], None
        try:
            async with run_linesim(config) as sim, aiohttp.ClientSession(
                    cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                run.start_worker()
                processes.append(start_sender(run.settings, town, sim.base_url, ANPI_PUBLIC_URL=site))
                processes.append(start(["ingress", "--port", str(port)], run.settings, town, sim.base_url))

                def got() -> list:
                    return sim.state.deliveries_to(hana)

                async def tick(at: int) -> None:
                    clock.set(at)
                    await run.produce(tick_messages(at * 1000, parts, uuid.uuid4().hex))

                await run.produce([naming.event_message(town.id, hana, Register(START * 1000, MemberSettings(
                    hana, "notify", DAILY_9, None, (daughter,))), parts)])
                await tick(START + 9 * 3600)
                await until(lambda: len(got()) == 1, 90, "the morning card")
                await readside.start()
                reading = asyncio.ensure_future(readside.run())
                await until(lambda: _answers(port), 60, "anpi ingress")
                me = user_source(hana)

                async def tap(data: str, at: int) -> None:
                    clock.set(at)
                    await sim.state.crowd.post(town.id, [postback_event(
                        me, data, reply_token=sim.state.issue_reply_token(town.id, me), timestamp=at * 1000)])

                await tap("action=ok", START + 9 * 3600 + 60)
                await until(lambda: len(got()) == 2, 90, "the thanks")
                # 「マイページ」 in LINE: the answer is a card with the signed link to the ingress's My Page
                await tap("action=mypage", START + 9 * 3600 + 120)
                await until(lambda: len(got()) == 3, 90, "the My Page card")
                link = re.search(r'"uri": ?"([^"]+)"', json.dumps(got()[2].messages)).group(1)
                assert link.startswith(f"{site}/mypage/{town.id}?t=")

                state_key = rs_prefix(town.id) + "state:" + hana
                await until(lambda: redis.exists(state_key), 60, "the read side's copy of her state")
                async with browser.get(link) as r:
                    page = words(await r.text())
                    assert r.status == 200 and r.url.path == f"/mypage/{town.id}"   # the token left the address
                assert "安否通知・毎日 午前9時" in page
                # her history, from the effects topic
                assert "「お元気ですか？」をお送りしました" in page and "お返事をいただきました" in page
                async with browser.get(f"{site}/mypage/{town.id}") as r:
                    csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)

                # a new time: shown at once, then in the state the read side has, then the check moves
                async with browser.post(f"{site}/mypage/{town.id}/schedule", data={
                        "csrf": csrf, "interval": "1d", "weekday": "", "hour": "18", "minute": "30"}) as r:
                    page = words(await r.text())
                    assert r.status == 200 and "変更しました" in page and "安否通知・毎日 午後6時30分" in page

                async def applied() -> bool:
                    raw = await redis.get(state_key)
                    return codec.state_from_obj(json.loads(raw)).settings.schedule.minute == 18 * 60 + 30
                await until(applied, 60, "the change, applied by the worker and kept by the read side")
                await tick(START + 18 * 3600 + 31 * 60)
                await until(lambda: len(got()) == 4, 90, "the check at 18:30")
                async with browser.get(f"{site}/mypage/{town.id}") as r:
                    page = words(await r.text())
                assert "安否通知・毎日 午後6時30分" in page and "変更しました" not in page   # said once

                # another town's page with this session: nothing of hers
                async with browser.get(f"{site}/mypage/elsewhere") as r:
                    assert r.status == 404 and "午後6時30分" not in await r.text()
                return sim.state
        finally:
            if reading is not None:
                reading.cancel()
            for process in processes:
                kill(process)
            run.kill_worker(signal.SIGTERM)
            await readside.stop()
            for key in await redis.keys(f"anpi:{{{town.id}}}:*"):
                await redis.delete(key)
            await redis.aclose()
            await run.delete_topics()

    state = asyncio.run(go())
    assert state.duplicates == 0


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
