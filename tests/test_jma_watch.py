"""`anpi jma watch` (streams/jma/watch.py): the 気象庁 feed polled and its bulletins turned into roll-calls,
on the embedded runtime (SQLite: the tenant's inbox) and the Kafka runtime (Redis, the inbound topic).

A local server plays JMA: an Atom feed built from the entries a test publishes (with an ETag: 304
when If-None-Match matches) and the bulletin files of tests/fixtures/jma (real bulletins and JMA's
samples). Nothing is downloaded. The watcher runs round by round on a clock the test moves, set at
each bulletin's own report time, so nothing depends on today's date and nothing sleeps."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
import uuid
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from schemas import effects as fx
from schemas.events import Register, RollCall
from schemas.settings import MemberSettings, Schedule
from streams import codec
from streams.admin import accounts
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.jma import bulletin as jb
from streams.jma.in_sqlite import SqliteQuakeStore
from streams.jma.trigger import Cancel, Hold, Skip, Start
from streams.jma.watch import Watch, WatchSettings
from streams.tenants import registry as tenant_registry
from streams.tenants import settings as ts
from streams.tenants.in_sqlite import SqliteRegistry

JMA = Path(__file__).resolve().parent / "fixtures" / "jma"
MINUTE = 60_000

# 2011-03-11 東北地方太平洋沖地震 (JMA's samples): the 震度速報 at 14:48, the first VXSE53 at 14:54
TOHOKU_51, TOHOKU_53 = "32-39_11_01_120615_VXSE51.xml", "32-39_11_05_120615_VXSE53.xml"
TOHOKU = "jma-20110311144640"
# 2008-06-14 岩手・宮城内陸地震 (JMA's samples): VXSE53 serial 1 at 08:47, its 取消 at 09:06
IWATE_53, IWATE_CANCEL = "32-35_06_03_100915_VXSE53.xml", "32-35_06_06_100915_VXSE53.xml"
IWATE = "jma-20080614084350"
# 2021-02-18, real: 相馬市 震度2 at 15:05, 19:40 (4 h 35 min later, as strong) and 21:46, three quakes
SOMA_1, SOMA_2, SOMA_3 = ("20210218060544_0_VXSE53_010000.xml", "20210218104033_0_VXSE53_010000.xml",
                          "20210218124610_0_VXSE53_010000.xml")
VOLCANO = "20110311145500_0_VFVO50_010000.xml"       # shares the feed; never fetched
BROKEN = "20110311144700_0_VXSE51_010000.xml"        # announced as a bulletin; not XML

TITLES = {"VXSE51": "震度速報", "VXSE52": "震源に関する情報", "VXSE53": "震源・震度に関する情報", "VFVO50": "噴火警報・予報"}

# the tenant's areas, with the codes the files above name (市町村等, 細分区域)
AREAS = ("kurihara,栗原市,0421300,220\n"      # 宮城県北部: 震度7 in 2011, 6強 in 2008
         "chiyoda,千代田区,1310100,350\n"     # 東京都２３区: not in the 2011 震度速報, 5強 in its VXSE53
         "hitachi,日立市,0820200,300\n"       # 茨城県北部: 4 in the 震度速報, 6強 in the VXSE53
         "sapporo,札幌市中央区,0110100,100\n")  # far away: never hit
IWATE_AREAS = "oshu,奥州市,0321500,213\nkurihara,栗原市,0421300,220\n"
SOMA_AREAS = "soma,相馬市,0720900,251\n"


def kind(name: str) -> str:
    return re.search(r"_(V[A-Z]{3}\d{2})[_.]", name)[1]


def at(name: str) -> int:
    return jb.parse((JMA / name).read_bytes()).report_at_ms


class Clock:
    def __init__(self, now: int):
        self.now = now

    def __call__(self) -> int:
        return self.now


class JmaServer:
    """JMA's PULL feed on 127.0.0.1: `publish` adds entries (the feed lists them newest first),
    `requests` records every (path, status) answered."""

    def __init__(self):
        self.listed: list[str] = []
        self.files = {path.name: path.read_bytes() for path in JMA.glob("*.xml")}
        self.files[BROKEN] = b"<Report><Control><Title>\xe9\x9c\x87\xe5\xba\xa6\xe9\x80\x9f\xe5\xa0\xb1</Title>"
        self.failing: dict[str, int] = {}   # file -> how many more times it answers 503
        self.requests: list[tuple[str, int]] = []
        self.clock_ms = 0                    # what /clock says (the CLI's ANPI_CLOCK_URL)
        self.runner = None
        self.base = ""

    def publish(self, *names: str) -> None:
        self.listed.extend(names)

    @property
    def settings(self) -> WatchSettings:
        return WatchSettings(feed_url=f"{self.base}/developer/xml/feed/eqvol.xml")

    def fetched(self) -> list[str]:
        """The bulletin files asked for, in order."""
        return [path.rsplit("/", 1)[-1] for path, _ in self.requests if "/data/" in path]

    def feed_answers(self) -> list[int]:
        return [status for path, status in self.requests if path.endswith("eqvol.xml")]

    def atom(self) -> bytes:
        entries = "".join(
            f"<entry><title>{TITLES[kind(name)]}</title>"
            f"<id>urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}</id><updated>2011-03-11T05:48:00Z</updated>"
            f"<author><name>気象庁</name></author>"
            f'<link type="application/xml" href="{self.base}/developer/xml/data/{name}"/>'
            f'<content type="text">【{TITLES[kind(name)]}】</content></entry>'
            for name in reversed(self.listed))
        return ('<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" lang="ja">'
                "<title>高頻度（地震火山）</title><subtitle>JMAXML publishing feed</subtitle>"
                f"<updated>2011-03-11T05:48:00Z</updated><id>urn:uuid:{uuid.uuid4()}</id>{entries}</feed>").encode()

    async def _feed(self, request: web.Request) -> web.Response:
        body = self.atom()
        body_without_id = body.split(b"<id>", 1)[0] + body.split(b"</id>", 1)[1]
        etag = '"' + hashlib.sha1(body_without_id).hexdigest()[:16] + '"'
        status = 304 if request.headers.get("If-None-Match") == etag else 200
        self.requests.append((request.path, status))
        if status == 304:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/atom+xml", headers={"ETag": etag})

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.failing.get(name):
            self.failing[name] -= 1
            self.requests.append((request.path, 503))
            return web.Response(status=503, text="busy")
        if name not in self.files:
            self.requests.append((request.path, 404))
            return web.Response(status=404)
        self.requests.append((request.path, 200))
        return web.Response(body=self.files[name], content_type="application/xml")

    async def _clock(self, request: web.Request) -> web.Response:
        return web.json_response({"now": self.clock_ms / 1000, "pace": 0})

    async def __aenter__(self) -> "JmaServer":
        app = web.Application()
        app.router.add_get("/developer/xml/feed/eqvol.xml", self._feed)
        app.router.add_get("/developer/xml/data/{name}", self._file)
        app.router.add_get("/clock", self._clock)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


async def add_tenant(registry, tenant: str, areas: str, threshold: str = "5弱", hold: str = "0") -> None:
    """As `anpi tenant add` and `anpi tenant areas` leave it (no channel needed for the watcher)."""
    now = at(TOHOKU_51)
    await registry.add(tenant_registry.new_entry(tenant, None, now),
                       ts.merged(None, now, quake=ts.quake_config(areas, threshold, hold)))


def inbox(store: Store, tenant: str) -> list[RollCall]:
    """The roll-calls in the tenant's inbox, in order (the rows the engine will apply)."""
    events = [codec.event_from_obj(json.loads(row.event)) for row in store.pending(tenant, 0, 10_000)]
    return [e for e in events if type(e) is RollCall]


def kinds(done) -> list[type]:
    return [type(action) for _, action in done.actions]


def sample(watch: Watch, name: str, **labels) -> float:
    return watch.metrics.registry.get_sample_value(name, labels) or 0.0


# --- the embedded runtime ---------------------------------------------------------------------------


def test_a_quake_starts_a_roll_call_then_widens_it_and_the_engine_asks_exactly_those_areas(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))
    members = {"m-kurihara": "kurihara", "m-chiyoda": "chiyoda", "m-hitachi": "hitachi",
               "m-sapporo": "sapporo", "m-nowhere": None}

    async def go():
        await add_tenant(SqliteRegistry(store), "town", AREAS)
        engine = Engine(store, "town")
        joined = at(TOHOKU_51) - 24 * 60 * MINUTE
        for member, area in members.items():
            store.accept("town", None, [(member, Register(joined, MemberSettings(
                member, "notify", Schedule("1d", 9 * 60), area=area)))])
        engine.step(joined)
        clock = Clock(at(TOHOKU_51) + 30_000)
        async with JmaServer() as jma:
            jma.publish(TOHOKU_51, VOLCANO)
            async with Watch(SqliteQuakeStore(store), jma.settings, clock) as watch:
                first = await watch.round()
                quick = RollCall(clock.now, TOHOKU, ("kurihara",))
                assert first.ok and first.feed == "new" and jma.fetched() == [TOHOKU_51]   # not the volcano's
                assert first.started() == [("town", quick)]
                assert inbox(store, "town") == [quick]

                # the VXSE53 six minutes later: Tokyo and 茨城県北部 are new; 栗原市 is not asked again
                clock.now = at(TOHOKU_53) + 30_000
                jma.publish(TOHOKU_53)
                second = await watch.round()
                wider = RollCall(clock.now, TOHOKU + "-2", ("chiyoda", "hitachi"))
                assert jma.fetched() == [TOHOKU_51, TOHOKU_53]
                assert second.started() == [("town", wider)]
                assert inbox(store, "town") == [quick, wider]

                # nothing new: JMA answers 304 and nothing else is fetched
                clock.now += MINUTE
                third = await watch.round()
                assert third.ok and third.feed == "unchanged" and jma.feed_answers()[-1] == 304
                assert jma.fetched() == [TOHOKU_51, TOHOKU_53] and third.actions == []

            # a restart: the feed is read in full (the validators were the old process's), nothing fetched
            async with Watch(SqliteQuakeStore(store), jma.settings, clock) as again:
                clock.now += MINUTE
                done = await again.round()
                assert done.ok and done.feed == "new" and jma.feed_answers()[-1] == 200
                assert jma.fetched() == [TOHOKU_51, TOHOKU_53] and done.actions == []
        assert inbox(store, "town") == [quick, wider]

        # the engine applies them: exactly the members of the hit areas, each in their own roll-call
        effects = engine.step(clock.now)
        sent = {(e.subject, e.rollcall, e.area) for e in effects if e.effect == fx.ROLLCALL_SENT}
        assert sent == {("m-kurihara", TOHOKU, "kurihara"), ("m-chiyoda", TOHOKU + "-2", "chiyoda"),
                        ("m-hitachi", TOHOKU + "-2", "hitachi")}

    asyncio.run(go())
    store.close()


def test_a_cancellation_stops_a_held_roll_call_and_both_are_in_the_audit_log(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))

    async def go():
        await add_tenant(SqliteRegistry(store), "town", IWATE_AREAS, hold="3")
        clock = Clock(at(IWATE_53) + 20_000)
        due = clock.now + 3 * MINUTE
        async with JmaServer() as jma, Watch(SqliteQuakeStore(store), jma.settings, clock) as watch:
            jma.publish(IWATE_53)
            first = await watch.round()
            assert [a for _, a in first.actions] == [Hold(RollCall(due, IWATE, ("oshu", "kurihara")), due)]
            assert watch.next_due == due and inbox(store, "town") == []

            clock.now += MINUTE
            jma.publish(IWATE_CANCEL)
            second = await watch.round()
            assert [a for _, a in second.actions] == [Cancel(IWATE, started=False)]
            assert watch.next_due is None

            clock.now = due + MINUTE   # the hold would have ended: nothing starts
            third = await watch.round()
            assert third.feed == "unchanged" and third.actions == []
        assert inbox(store, "town") == []
        log = accounts.audit_log(store.db, "town")
        assert [(row["login"], row["action"], row["target"]) for row in log] == [
            ("jma", "jma_rollcall_cancelled", IWATE), ("jma", "jma_rollcall_held", IWATE)]

    asyncio.run(go())
    store.close()


def test_a_held_roll_call_starts_when_its_hold_ends_stamped_with_that_instant(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))

    async def go():
        await add_tenant(SqliteRegistry(store), "town", IWATE_AREAS, hold="3")
        clock = Clock(at(IWATE_53) + 20_000)
        due = clock.now + 3 * MINUTE
        async with JmaServer() as jma, Watch(SqliteQuakeStore(store), jma.settings, clock) as watch:
            jma.publish(IWATE_53)
            await watch.round()
            clock.now = due - 1_000
            assert (await watch.round(fetch=False)).actions == [] and inbox(store, "town") == []
            clock.now = due + 10_000   # released late (a round is not exactly on time): stamped with `due`
            released = await watch.round(fetch=False)
            assert released.feed == "skipped" and jma.feed_answers() == [200]
            assert released.started() == [("town", RollCall(due, IWATE, ("oshu", "kurihara")))]
        assert inbox(store, "town") == [RollCall(due, IWATE, ("oshu", "kurihara"))]

    asyncio.run(go())
    store.close()


def test_a_weaker_aftershock_within_6h_adds_nothing_and_a_later_quake_asks_again(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))

    async def go():
        await add_tenant(SqliteRegistry(store), "town", SOMA_AREAS, threshold="2")
        clock = Clock(0)
        async with JmaServer() as jma, Watch(SqliteQuakeStore(store), jma.settings, clock) as watch:
            rounds = []
            for name in (SOMA_1, SOMA_2, SOMA_3):
                clock.now = at(name) + 30_000
                jma.publish(name)
                rounds.append(await watch.round())
        one, two, three = rounds
        assert [a for _, a in two.actions] == [Skip("20210218193739", "weaker_aftershock", ("soma",))]
        assert inbox(store, "town") == [RollCall(at(SOMA_1) + 30_000, "jma-20210218150250", ("soma",)),
                                        RollCall(at(SOMA_3) + 30_000, "jma-20210218214309", ("soma",))]
        assert accounts.audit_log(store.db, "town")[1]["action"] == "jma_skipped"

    asyncio.run(go())
    store.close()


def test_a_broken_bulletin_is_counted_and_skipped_and_one_that_fails_is_fetched_again(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))

    async def go():
        await add_tenant(SqliteRegistry(store), "town", AREAS)
        clock = Clock(at(TOHOKU_51) + 30_000)
        async with JmaServer() as jma, Watch(SqliteQuakeStore(store), jma.settings, clock) as watch:
            jma.publish(BROKEN, TOHOKU_51)   # the broken one first: the next still goes through
            first = await watch.round()
            assert first.ok and first.bad == 1 and first.failed == 0
            assert first.started() == [("town", RollCall(clock.now, TOHOKU, ("kurihara",)))]
            assert sample(watch, "anpi_jma_bulletins_total", outcome="bad") == 1
            assert sample(watch, "anpi_jma_bulletins_total", outcome="applied") == 1

            clock.now = at(TOHOKU_53) + 30_000
            jma.publish(TOHOKU_53)
            jma.failing[TOHOKU_53] = 1   # JMA busy once
            second = await watch.round()
            assert second.ok and second.failed == 1 and second.actions == []

            clock.now += MINUTE   # the feed has not changed, but it is read in full: the failed one is retried
            third = await watch.round()
            assert third.feed == "new" and third.failed == 0 and third.bad == 0
            assert third.started() == [("town", RollCall(clock.now, TOHOKU + "-2", ("chiyoda", "hitachi")))]
            assert jma.fetched() == [BROKEN, TOHOKU_51, TOHOKU_53, TOHOKU_53]   # the broken one never again

            clock.now += MINUTE
            assert (await watch.round()).feed == "unchanged"

    asyncio.run(go())
    store.close()


class _CrashOnce(SqliteQuakeStore):
    """The process dies after the roll-call went in and before the memory was saved."""

    crashed = False

    async def save(self, tenant, memory, audit=()):
        if not self.crashed:
            self.crashed = True
            raise OSError("the disk went away")
        await super().save(tenant, memory, audit)


def test_a_crash_between_start_and_save_repeats_the_same_id_which_the_engine_sends_once(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))

    async def go():
        await add_tenant(SqliteRegistry(store), "town", AREAS)
        engine = Engine(store, "town")
        store.accept("town", None, [("m-1", Register(at(TOHOKU_51) - MINUTE, MemberSettings(
            "m-1", "notify", Schedule("1d", 9 * 60), area="kurihara")))])
        clock = Clock(at(TOHOKU_51) + 30_000)
        async with JmaServer() as jma:
            jma.publish(TOHOKU_51)
            async with Watch(_CrashOnce(store), jma.settings, clock) as watch:
                crashed = await watch.round()
                assert not crashed.ok and "OSError" in crashed.error and kinds(crashed) == [Start]
                clock.now += MINUTE
                again = await watch.round()   # fetched again (never marked seen) and started again
                assert again.ok and kinds(again) == [Start] and jma.fetched() == [TOHOKU_51, TOHOKU_51]
        assert [rc.id for rc in inbox(store, "town")] == [TOHOKU, TOHOKU]
        effects = engine.step(clock.now)
        assert [(e.subject, e.rollcall) for e in effects if e.effect == fx.ROLLCALL_SENT] == [("m-1", TOHOKU)]

    asyncio.run(go())
    store.close()


def test_run_polls_at_once_and_stops_when_told(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))

    async def go():
        await add_tenant(SqliteRegistry(store), "town", AREAS)
        async with JmaServer() as jma, Watch(SqliteQuakeStore(store), jma.settings,
                                             Clock(at(TOHOKU_51) + 30_000)) as watch:
            jma.publish(TOHOKU_51)
            stop = asyncio.Event()
            running = asyncio.ensure_future(watch.run(stop))
            for _ in range(500):
                if inbox(store, "town"):
                    break
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(running, 5)   # not a minute later: the wait ends with the event
            assert jma.feed_answers() == [200] and [rc.id for rc in inbox(store, "town")] == [TOHOKU]

    asyncio.run(go())
    store.close()


# --- the command ------------------------------------------------------------------------------------


async def _anpi(*args: str, env: dict) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.cli", *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


def test_anpi_jma_watch_once_against_the_local_feed(tmp_path):
    db = str(tmp_path / "anpi.db")
    store = Store(db)

    async def go():
        await add_tenant(SqliteRegistry(store), "town", AREAS)
        async with JmaServer() as jma:
            jma.publish(TOHOKU_51)
            jma.clock_ms = at(TOHOKU_51) + 30_000   # the command's now (ANPI_CLOCK_URL), as a demo sets it
            env = {"ANPI_JMA_FEED_URL": jma.settings.feed_url, "ANPI_CLOCK_URL": f"{jma.base}/clock"}
            code, out, err = await _anpi("jma", "watch", "--db", db, "--once", env=env)
            assert code == 0, err
            assert out == (f"anpi jma watch: feed new; 1 bulletin fetched (0 bad, 0 failed); "
                           f"town: started {TOHOKU} (kurihara)\n")
            assert f"tenant town: roll-call {TOHOKU} started for kurihara" in err
            assert inbox(store, "town") == [RollCall(jma.clock_ms, TOHOKU, ("kurihara",))]

            code, out, err = await _anpi("jma", "watch", "--db", db, "--once", env=env)   # seen: fetched once
            assert code == 0 and out == "anpi jma watch: feed new; 0 bulletins fetched (0 bad, 0 failed)\n"
            assert jma.fetched() == [TOHOKU_51]

            code, out, err = await _anpi("jma", "watch", "--db", db, "--once",
                                         env={**env, "ANPI_JMA_POLL_SECONDS": "10"})
            assert code == 2 and out == "" and err.startswith("anpi jma: ANPI_JMA_POLL_SECONDS='10': must be at least 60")
            code, _, err = await _anpi("jma", "watch", "--db", str(tmp_path / "nope.db"), "--once", env=env)
            assert code == 2 and "no such file" in err

        # JMA unreachable: one line, exit 1, and nothing is marked
        code, out, err = await _anpi("jma", "watch", "--db", db, "--once",
                                     env={**env, "ANPI_CLOCK_URL": "", "ANPI_JMA_FEED_URL": jma.settings.feed_url})
        assert code == 1 and out.startswith("anpi jma watch: feed failed") and "not read" in err

    asyncio.run(go())
    store.close()


# --- the Kafka runtime --------------------------------------------------------------------------------

REDIS_DB = 12   # this file's tests own this Redis database (emptied at their start)


def test_on_kafka_roll_calls_reach_the_inbound_topic_once_per_partition_named_as_the_worker_reads_them(request):
    request.getfixturevalue("running_services")
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.jma.in_kafka import KafkaQuakeStore
    from streams.kafka import simulate as kafka_simulate
    from streams.kafka.records import Naming
    from streams.kafka.settings import Settings
    from streams.tenants.in_redis import RedisRegistry
    from streams.tools import services

    cfg = services.local()
    base = replace(Settings.from_env(), redis=f"redis://{cfg.redis_host}:{cfg.redis_port}/{REDIS_DB}")

    async def read_inbound(settings) -> list[tuple[int, bytes]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(settings.inbound, n) for n in range(settings.partitions)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            out = []
            for _ in range(60):
                if all([await consumer.position(p) >= ends[p] for p in parts]):
                    return out
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    out.extend((tp.partition, r.value) for r in records)
            raise AssertionError("the inbound topic was not read to its end")
        finally:
            await consumer.stop()

    async def go():
        run = kafka_simulate.KafkaRun(base)
        settings = run.settings
        await run.create_topics()
        redis = aioredis.from_url(settings.redis)
        await redis.flushdb()
        home, other = settings.prefix, "town-b"   # the home tenant (named like the prefix), and one more
        registry = RedisRegistry(redis)
        await add_tenant(registry, home, AREAS)
        await add_tenant(registry, other, IWATE_AREAS, hold="3")
        try:
            async with JmaServer() as jma:
                store = KafkaQuakeStore(settings, redis)
                async with Watch(store, jma.settings, Clock(0)) as watch:
                    clock = watch.clock
                    # 2008: 栗原市 6強; the home tenant asks at once, town-b holds 3 minutes; then the 取消
                    clock.now = iwate_at = at(IWATE_53) + 20_000
                    jma.publish(IWATE_53)
                    first = await watch.round()
                    assert [(t, type(a)) for t, a in first.actions] == [(home, Start), (other, Hold)]
                    clock.now += MINUTE
                    jma.publish(IWATE_CANCEL)
                    second = await watch.round()
                    assert [(t, a) for t, a in second.actions] == [(home, Cancel(IWATE, started=True)),
                                                                   (other, Cancel(IWATE, started=False))]
                    # 2011: the 震度速報 starts home's, town-b's is held; the VXSE53 widens home's and
                    # finds town-b's hold over (it starts first, stamped with its instant)
                    clock.now = quick_at = at(TOHOKU_51) + 30_000
                    jma.publish(TOHOKU_51)
                    third = await watch.round()
                    assert [(t, type(a)) for t, a in third.actions] == [(home, Start), (other, Hold)]
                    clock.now = wide_at = at(TOHOKU_53) + 30_000
                    jma.publish(TOHOKU_53)
                    fourth = await watch.round()
                    assert fourth.started() == [(home, RollCall(wide_at, TOHOKU + "-2", ("chiyoda", "hitachi"))),
                                                (other, RollCall(quick_at + 3 * MINUTE, TOHOKU, ("oshu", "kurihara")))]
                    clock.now += MINUTE
                    fifth = await watch.round()
                    assert fifth.feed == "unchanged" and fifth.actions == []
                await store.stop()

                # a restart: nothing fetched again, nothing sent again
                fetched = jma.fetched()
                assert fetched == [IWATE_53, IWATE_CANCEL, TOHOKU_51, TOHOKU_53]
                store = KafkaQuakeStore(settings, redis)
                async with Watch(store, jma.settings, clock) as again:
                    clock.now += MINUTE
                    done = await again.round()
                    assert done.ok and done.feed == "new" and done.actions == [] and jma.fetched() == fetched
                await store.stop()

            records = await read_inbound(settings)
            naming = Naming(settings.prefix)   # as the worker reads them
            got = {}
            for partition, value in records:
                read = naming.read(value)
                got.setdefault((read.tenant, read.event), []).append(partition)
                assert read.subject is None and ("tenant" in json.loads(value)) == (read.tenant != home)
            everywhere = list(range(settings.partitions))
            assert {key: sorted(parts) for key, parts in got.items()} == {
                (home, RollCall(iwate_at, IWATE, ("kurihara",))): everywhere,
                (home, RollCall(quick_at, TOHOKU, ("kurihara",))): everywhere,
                (home, RollCall(wide_at, TOHOKU + "-2", ("chiyoda", "hitachi"))): everywhere,
                (other, RollCall(quick_at + 3 * MINUTE, TOHOKU, ("oshu", "kurihara"))): everywhere}
            log = await redis.lrange(f"anpi:{{{other}}}:admin:audit", 0, -1)
            assert [(json.loads(row)["action"], json.loads(row)["target"]) for row in reversed(log)] == [
                ("jma_rollcall_held", IWATE), ("jma_rollcall_cancelled", IWATE),
                ("jma_rollcall_held", TOHOKU), ("jma_rollcall_started", TOHOKU)]
        finally:
            await redis.aclose()
            await run.delete_topics()

    asyncio.run(go())


def test_on_kafka_a_topic_of_another_size_is_refused_and_nothing_is_marked(request):
    request.getfixturevalue("running_services")
    import redis.asyncio as aioredis

    from streams.jma.in_kafka import KafkaQuakeStore
    from streams.kafka import simulate as kafka_simulate
    from streams.kafka.settings import Settings
    from streams.tenants.in_redis import RedisRegistry
    from streams.tools import services

    cfg = services.local()
    base = replace(Settings.from_env(), redis=f"redis://{cfg.redis_host}:{cfg.redis_port}/{REDIS_DB}")

    async def go():
        run = kafka_simulate.KafkaRun(base)
        await run.create_topics()
        wrong = replace(run.settings, partitions=run.settings.partitions + 1)
        redis = aioredis.from_url(wrong.redis)
        await redis.flushdb()
        await add_tenant(RedisRegistry(redis), "town", AREAS)
        store = KafkaQuakeStore(wrong, redis)
        try:
            async with JmaServer() as jma, Watch(store, jma.settings, Clock(at(TOHOKU_51) + 30_000)) as watch:
                jma.publish(TOHOKU_51)
                done = await watch.round()
                assert not done.ok and "partitions" in done.error and await store.seen() == set()
        finally:
            await store.stop()
            await redis.aclose()
            await run.delete_topics()

    asyncio.run(go())
