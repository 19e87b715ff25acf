"""The admin screen on the Kafka runtime, on a real broker and a real Redis: a worker steps a day and a
half of residents, `anpi readside`'s consumer keeps the read side in Redis from the effects topic,
and the admin app reads it (and keeps accounts and sessions in Redis). What staff do goes onto the
inbound topic; the worker steps it and the read side follows. A replay of the whole effects topic
changes nothing; another tenant's staff see nothing."""
from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections import Counter

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents import readside as rs
from agents.clock import HOUR, MINUTE
from backends import key_contents, keys_of
from linesim import user_id_for
from schemas import effects as fx
from schemas.events import Acknowledge, Resolve
from streams import cli, codec, sealed
from streams.simulation import scenario as scenario_module
from streams.admin.app import create_kafka_app
from streams.admin.backends import RedisReadSide
from streams.admin.redis_accounts import RedisStaff
from streams.tenants.in_redis import RedisRegistry
from streams.notices.in_redis import RedisNotices
from streams.line.ingress import KafkaSink
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import event_message, feed, tick_messages
from streams.admin.metrics import OpenCases, metrics_app
from streams.kafka.readside_app import ReadSideConsumer
from streams.kafka.settings import Settings
from streams.kafka.readside import Reader

pytestmark = pytest.mark.usefixtures("running_services")

START = 1_796_050_800_000  # 2026-12-01T00:00+09:00
DAY = 24 * HOUR
NOW = START + DAY + 13 * HOUR  # day 2, 13:00: the calls of 12:00 are waiting
ZONE = "Asia/Tokyo"
PASSWORD = "correct horse battery"

W_OK = user_id_for("kafka-admin-watch-ok")          # answers every check within minutes
W_SILENT = user_id_for("kafka-admin-watch-silent")  # never answers: staff are called on day 2 at 12:00
W_RESEND = user_id_for("kafka-admin-watch-resend")  # answers the resend on day 2
N_SILENT = user_id_for("kafka-admin-notify-silent")  # never answers: the family is told
FAMILY = user_id_for("kafka-admin-family")
GROUP = "C" + uuid.uuid5(uuid.NAMESPACE_URL, "kafka-admin-group").hex
PHONES = {W_OK: "090-3333-0001", W_SILENT: "090-3333-0002", W_RESEND: "090-3333-0003"}


def scenario(end: int) -> dict:
    def at(ms: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S+09:00", time.gmtime(ms / 1000 + 9 * 3600))

    members = [{"id": m, "service": "watch", "interval": "1d", "time": "09:00", "phone": PHONES[m]}
               for m in (W_OK, W_SILENT, W_RESEND)]
    members.append({"id": N_SILENT, "service": "notify", "interval": "1d", "time": "09:00", "contacts": [FAMILY]})
    events = []
    for day in range(2):
        base = START + day * DAY
        events.append({"at": at(base + 8 * HOUR + 10 * MINUTE), "type": "ok", "member": W_OK, "group": GROUP})
        events.append({"at": at(base + 9 * HOUR + 5 * MINUTE), "type": "ok", "member": W_OK})
    events.append({"at": at(START + DAY + 9 * HOUR + 30 * MINUTE), "type": "ok", "member": W_RESEND})
    return {"timezone": ZONE, "start": at(START), "end": at(end), "members": members,
            "groups": [{"id": GROUP, "members": [W_OK, N_SILENT, FAMILY], "interval": "1d", "time": "08:00"}],
            "events": events}


class Browser:
    def __init__(self, server: TestServer):
        self.server = server
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str):
        async with self.http.get(self.server.make_url(path), allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict):
        async with self.http.post(self.server.make_url(path), data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def login(self, tenant: str, login: str, password: str = PASSWORD):
        _, page, _ = await self.get(f"/admin/{tenant}/login")
        return await self.post(f"/admin/{tenant}/login", {"csrf": csrf_in(page), "login": login, "password": password})

    async def close(self) -> None:
        await self.http.close()


def csrf_in(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


async def open_cases(server, tenant: str) -> dict[str, float]:
    """anpi_open_cases of `tenant` by kind, from a /metrics page over HTTP."""
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.get(server.make_url("/metrics")) as response:
            assert response.status == 200
            text = await response.text()
    out = {}
    for line in text.splitlines():
        found = re.fullmatch(r'anpi_open_cases\{kind="(\w+)",tenant="([^"]+)"\} (\S+)', line)
        if found and found[2] == tenant:
            out[found[1]] = float(found[3])
    return out


async def catch_up(consumer: ReadSideConsumer, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await consumer.step(timeout_ms=200)
        if await consumer.lag() == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, "the read side did not catch up"


async def snapshot(redis, tenant: str) -> dict:
    """Every read-side key of the tenant and its value (offsets included)."""
    return await keys_of(redis, f"anpi:{{{tenant}}}:rs:*")


async def inbound_events(settings: Settings) -> list:
    """Every engine event on the inbound topic (ticks left out), decoded."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        parts = [TopicPartition(settings.inbound, n) for n in range(settings.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out = []
        async def behind() -> bool:
            for tp in parts:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    obj = codec.loads(r.value)
                    if "event" in obj:
                        out.append((obj["subject"], codec.event_from_obj(obj["event"])))
        return out
    finally:
        await consumer.stop()


def billed_with_learned_rosters(effects) -> int:
    """The usage estimate by the read side's documented rule: a group's size is known from its first
    23 h list on (confirmed + not confirmed); before that a group message counts 1."""
    confirmed: Counter = Counter()
    roster: dict[str, int] = {}
    total = 0
    for e in effects:
        if e.effect == fx.GROUP_CHECK_POSTED:
            confirmed[e.subject] = 0
        elif e.effect == fx.GROUP_CONFIRMED:
            confirmed[e.subject] += 1
        elif e.effect == fx.GROUP_UNCONFIRMED:
            roster[e.subject] = confirmed[e.subject] + len(e.members)
        total += rs.billed(e, roster.get(e.subject, 1))
    return total


def test_the_admin_screen_on_kafka_reads_the_effects_from_redis_and_staff_actions_reach_the_engine(monkeypatch):
    run = kafka_simulate.KafkaRun(Settings.from_env())
    A = run.settings.prefix
    B = f"anpi-other-{uuid.uuid4().hex[:8]}"
    # the first accounts, as an operator would make them: `anpi admin create-user --redis`
    monkeypatch.setenv("ANPI_ADMIN_PASSWORD", PASSWORD)
    url = run.settings.redis
    for tenant, login, role in ((A, "a-admin", "admin"), (A, "a-operator", "operator"), (B, "b-admin", "admin")):
        assert cli.main(["admin", "create-user", "--redis", url, "--tenant", tenant, "--login", login,
                         "--role", role]) == 0
    assert cli.main(["admin", "create-user", "--redis", url, "--tenant", A, "--login", "a-admin"]) == 2  # taken

    async def go():
        redis = aioredis.from_url(url)
        sink, consumer, server = KafkaSink(run.settings), None, None
        started = time.perf_counter()
        try:
            await run.create_topics()
            run.start_worker()
            parts = run.settings.partitions
            flush = uuid.uuid4().hex
            await run.produce(feed(scenario_module.parse(scenario(NOW)), parts, run.tick_every, flush))
            effects = await run.collect(flush, timeout=180)
            took = {"worker, day 1-2": time.perf_counter() - started}

            # --- the read side catches up from the effects (and escalations) topics ---------------
            consumer = ReadSideConsumer(run.settings, redis, ZONE)
            await consumer.start()
            t = time.perf_counter()
            await catch_up(consumer)
            took["read side"] = time.perf_counter() - t
            reader = Reader(redis)

            # the counts, per day and kind, are the effects' own (counted here from the topic)
            by_day: Counter = Counter((rs.day_of(e.at, ZONE), e.effect) for e in effects if e.effect in rs.DAILY)
            days = ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03"]
            daily, usage, opens = await reader.overview(A, days, "2026-12")
            assert {(d, k): n for d, kinds in daily.items() for k, n in kinds.items() if k != rs.ANSWERED} \
                == dict(by_day)
            sent_day = {(e.subject, e.cycle): rs.day_of(e.at, ZONE) for e in effects if e.effect == fx.CHECK_SENT}
            answered = Counter(sent_day[(e.subject, e.cycle)] for e in effects if e.effect == fx.CONFIRMED)
            assert {d: k[rs.ANSWERED] for d, k in daily.items() if rs.ANSWERED in k} == dict(answered)
            assert answered["2026-12-01"] == 2  # W_OK's and the resend answered on day 2: day 1's checks
            assert opens == {fx.STAFF_CALL: 1, fx.CONTACTS_NOTIFIED: 1}
            assert usage == billed_with_learned_rosters(effects)

            # --- the admin app, on Redis and the inbound topic ---------------------------------------
            await sink.start()
            staff = RedisStaff(redis)
            wall = [START]
            admin = create_kafka_app(RedisReadSide(redis, sink, staff), staff, RedisRegistry(redis), RedisNotices(redis),
                                     {A: ZONE, B: ZONE}, lambda: NOW, lambda: wall[0])
            root = web.Application()
            root.add_subapp("/admin", admin)
            server = TestServer(root)
            await server.start_server()
            # an SRE's view of the same call queue: `anpi admin serve`'s /metrics (ANPI_ADMIN_METRICS_PORT)
            metrics = TestServer(metrics_app(OpenCases(RedisReadSide(redis, sink, staff), [A])))
            await metrics.start_server()
            assert await open_cases(metrics, A) == {fx.STAFF_CALL: 1.0, fx.CONTACTS_NOTIFIED: 1.0}
            for _ in range(100):  # the worker's own read model (labels) arrives on its half-second beat
                if (await redis.hgetall(f"anpi:{A}:counts")):
                    break
                await asyncio.sleep(0.1)

            user = Browser(server)
            status, _, response = await user.login(A, "a-operator")
            assert status == 303 and response.headers["Location"] == f"/admin/{A}/overview"
            status, page, _ = await user.get(f"/admin/{A}/overview")
            assert status == 200
            today = {k: int(v.replace(",", "")) for k, v in re.findall(r'data-key="(\w+)">([\d,]+)<', page)}
            t = {k: by_day[("2026-12-02", k)] for k in rs.DAILY}
            assert today == {"sent": t[fx.CHECK_SENT], "ok": t[fx.CONFIRMED] + t[fx.RESOLVED_AFTER_ESCALATION],
                             "resent": t[fx.CHECK_RESENT], "staff": t[fx.STAFF_CALL],
                             "contacts": t[fx.CONTACTS_NOTIFIED], "posted": t[fx.GROUP_CHECK_POSTED]}
            assert today == {"sent": 1, "ok": 2, "resent": 3, "staff": 1, "contacts": 1, "posted": 1}
            assert "職員からの電話を待っている方が <strong>1人</strong>" in page
            assert "確認 4件のうち 2件が連絡前に応答" in page  # day 1: the resend answered counts there
            assert "準備中" not in page and 'href="/admin/' + A + '/notices"' in page

            # the call queue: the staff call, with the phone the worker added on the escalations topic
            status, page, _ = await user.get(f"/admin/{A}/calls")
            assert status == 200 and PHONES[W_SILENT] in page and "1日と4時間" in page
            assert PHONES[W_OK] not in page and PHONES[W_RESEND] not in page
            status, page2, _ = await user.get(f"/admin/{A}/escalations")
            assert status == 200 and N_SILENT in page2
            status, page3, _ = await user.get(f"/admin/{A}/groups")
            assert status == 200 and GROUP in page3 and "3人" in page3  # learned from the 23 h list
            status, page4, _ = await user.get(f"/admin/{A}/notices")
            assert status == 200 and "準備中" not in page4 and 'name="draft"' in page4

            # 「連絡がつき無事」: a Resolve onto the inbound topic, and the case waits for the engine
            status, _, response = await user.post(f"/admin/{A}/calls/record", {
                "csrf": csrf_in(page), "member": W_SILENT, "cycle": "1", "outcome": rs.REACHED})
            assert status == 303 and "done=reached" in response.headers["Location"]
            assert (W_SILENT, Resolve(NOW, W_SILENT, 1)) in await inbound_events(run.settings)
            row = await reader.case(A, W_SILENT, 1)
            assert row["status"] == "open" and row["last_action"] == rs.REACHED
            assert "反映中" in (await user.get(f"/admin/{A}/calls"))[1]
            # the family says 「見に行きます」 meanwhile; then the worker steps both
            await run.produce([event_message(N_SILENT, Acknowledge(NOW + 500, N_SILENT, FAMILY, 1), parts)])
            flush = uuid.uuid4().hex
            t = time.perf_counter()
            await run.produce(tick_messages(NOW + 1_000, parts, flush))
            after = await run.collect(flush, timeout=120)
            new = [e for e in after if e not in set(effects)]
            assert [(e.subject, e.effect) for e in new if e.subject == W_SILENT] == \
                [(W_SILENT, fx.RESOLVED_AFTER_ESCALATION)]
            await catch_up(consumer)
            took["staff action round trip"] = time.perf_counter() - t
            row = await reader.case(A, W_SILENT, 1)
            assert row["status"] == "closed" and row["outcome"] == rs.REACHED
            status, page, _ = await user.get(f"/admin/{A}/calls")
            closed = page.split('id="closed-cases"')[1]
            assert W_SILENT in closed and "連絡がつき無事" in closed and 'id="no-open"' in page
            # the staff call closed; the family's 「見に行きます」 answers their case but does not close it
            assert await open_cases(metrics, A) == {fx.STAFF_CALL: 0.0, fx.CONTACTS_NOTIFIED: 1.0}
            await metrics.close()
            assert 'class="acks">1人<br><span class="muted">' in (await user.get(f"/admin/{A}/escalations"))[1]
            log = [r for r in await staff.audit_log(A) if r["action"] != "calls.view"]   # not the looks
            assert log[0]["action"] == "case.reached" and log[0]["login"] == "a-operator"
            assert log[0]["target"] == f"{W_SILENT}:1"

            # --- a replay of both topics from their beginning changes nothing -------------------------
            before = await snapshot(redis, A)
            await consumer.stop()
            consumer = ReadSideConsumer(run.settings, redis, ZONE, from_beginning=True)
            await consumer.start()
            t = time.perf_counter()
            await catch_up(consumer)
            took["replay"] = time.perf_counter() - t
            assert consumer.applied == 0
            assert await snapshot(redis, A) == before
            # and a consumer that starts where Redis says it is starts after what it applied
            await consumer.stop()
            consumer = ReadSideConsumer(run.settings, redis, ZONE)
            await consumer.start()
            assert await consumer.lag() <= len(consumer.parts)  # at most each partition's last commit marker
            await catch_up(consumer)
            assert consumer.applied == 0 and await snapshot(redis, A) == before

            # --- another tenant's staff get 404 everywhere in tenant A, and change nothing ------------
            stranger = Browser(server)
            assert (await stranger.login(B, "b-admin"))[0] == 303
            _, own_page, _ = await stranger.get(f"/admin/{B}/overview")
            token = csrf_in(own_page)
            for path in ("overview", "calls", "escalations", "groups", "users", "audit", "notices", "settings"):
                status, page, _ = await stranger.get(f"/admin/{A}/{path}")
                assert status == 404 and W_SILENT not in page and PHONES[W_SILENT] not in page, path
            audit_before = await staff.audit_log(A)
            for path, form in (("calls/record", {"member": W_SILENT, "cycle": "1", "outcome": rs.EMERGENCY}),
                               ("users", {"login": "intruder", "role": "admin"}),
                               ("users/unlock", {"login": "a-operator"}), ("logout", {})):
                status, page, _ = await stranger.post(f"/admin/{A}/{path}", {**form, "csrf": token})
                assert status == 404, path
            assert not await staff.exists(A, "intruder") and await staff.audit_log(A) == audit_before
            assert (await user.login(A, "b-admin"))[0] == 401  # B's account does not open A

            # --- 設定 on Kafka: B's administrator saves B's wording in the tenant registry (Redis) ------
            status, page, _ = await stranger.get(f"/admin/{B}/settings")
            assert status == 200 and "設定（準備中）" not in page and "お元気ですか？" in page
            form = {"csrf": csrf_in(page), "check_text": "Bです。お元気ですか？", "quotes": "一期一会"}
            assert (await stranger.post(f"/admin/{A}/settings/message", form))[0] == 404   # never A's
            status, _, response = await stranger.post(f"/admin/{B}/settings/message", form)
            assert status == 303 and "done=message" in response.headers["Location"]
            registry = RedisRegistry(redis)
            saved = await registry.settings(B)
            assert saved.check_text == "Bです。お元気ですか？" and saved.quotes == ("一期一会",)
            assert await registry.settings(A) is None
            assert [r["action"] for r in await staff.audit_log(B)][:1] == ["settings.message"]
            assert "Bです。お元気ですか？" in (await stranger.get(f"/admin/{B}/settings"))[1]
            await stranger.close()

            # --- what Redis holds: no names, and phone numbers only in the staff call's case hash, sealed
            keys = [k.decode() async for k in redis.scan_iter(match=f"anpi:*{A}*", count=1000)]
            assert keys and all(k.startswith((f"anpi:{{{A}}}:", f"anpi:{A}:")) for k in keys)
            for key in keys:
                assert not any(p in key for p in PHONES.values()) and "a-admin" not in key and "operator" not in key
                text = repr(await key_contents(redis, key))
                holds = [m for m, p in PHONES.items() if p in text]
                assert holds == [], key
                if key == f"anpi:{{{A}}}:rs:case:{W_SILENT}:1":
                    assert sealed.unseal((await redis.hget(key, "phone")).decode()) == PHONES[W_SILENT]
            await user.close()
            print("timings (s):", {k: round(v, 2) for k, v in took.items()})
        finally:
            run.kill_worker(signal.SIGTERM)
            if consumer is not None:
                await consumer.stop()
            if server is not None:
                await server.close()
            await sink.stop()
            await run.delete_topics()
            for tenant in (A, B):
                for pattern in (f"anpi:{{{tenant}}}:*", f"anpi:{tenant}:*"):
                    async for key in redis.scan_iter(match=pattern, count=1000):
                        await redis.delete(key)
            await redis.aclose()

    asyncio.run(go())
