"""Tenants are data: the registry on both backends (SQLite, Redis) with the same tests, `anpi tenant
add | list` as a user runs it, and a tenant added to a running `anpi serve` served without a restart,
on its own channel, with nothing crossing between tenants."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiohttp
import pytest
import redis.asyncio as aioredis

from proving_ground import until
from linesim import Channel, Config, ManualClock, run_linesim, user_id_for
from linesim.residents import follow_event, signed_webhook
from schemas import effects as fx
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams import sealed
from streams.tools import services
from streams.embedded.serve import ServedRuntime
from streams.embedded.store import Store
from streams.line.sender import Sender
from streams.tenants import look as looks
from streams.tenants import registry as tenant_registry
from streams.tenants import settings as ts
from streams.tenants.in_redis import RedisRegistry
from streams.tenants.in_sqlite import SqliteRegistry

START = 1_796_050_800  # 2026-12-01T00:00+09:00, virtual (seconds)
SECRET_A, TOKEN_A = "a" * 32, "token-of-a-" + "A" * 40
SECRET_B, TOKEN_B = "b" * 32, "token-of-b-" + "B" * 40
A = Tenant("city-a", SECRET_A, TOKEN_A)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
TEST_DB = 9   # the Redis registry's tests own this database (flushed at their start)


def redis_url() -> str:
    cfg = services.local()
    return f"redis://{cfg.redis_host}:{cfg.redis_port}/{TEST_DB}"


# --- the registry: one suite, both backends ------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def registry(request, tmp_path):
    """`async with registry() as r`: a fresh registry of that backend, in the test's own loop."""
    if request.param == "sqlite":
        store = Store(str(tmp_path / "anpi.db"))
        yield lambda: _Fresh(SqliteRegistry(store))
        store.close()
        return
    request.getfixturevalue("running_services")
    url = redis_url()
    yield lambda: _Fresh(None, url)


async def within(registry, story):
    async with registry() as r:
        await story(r)


class _Fresh:
    def __init__(self, registry, url: str | None = None):
        self.registry, self.url, self.client = registry, url, None

    async def __aenter__(self):
        if self.url is not None:   # this suite's own database, emptied
            self.client = aioredis.from_url(self.url)
            await self.client.flushdb()
            self.registry = RedisRegistry(self.client)
        return self.registry

    async def __aexit__(self, *exc):
        if self.client is not None:
            await self.client.aclose()


def test_a_tenant_is_added_once_listed_and_read_back(registry):
    async def story(r):
        v0 = await r.version()
        settings = ts.merged(None, 1000, timezone="Asia/Tokyo", channel_secret=SECRET_B, channel_access_token=TOKEN_B)
        await r.add(tenant_registry.new_entry("abiko", "我孫子市", 1000), settings)
        with pytest.raises(tenant_registry.Exists):
            await r.add(tenant_registry.new_entry("abiko", "別の市", 2000), None)
        await r.add(tenant_registry.new_entry("kashiwa", None, 3000), None)
        assert [(e.id, e.name) for e in await r.entries()] == [("abiko", "我孫子市"), ("kashiwa", "kashiwa")]
        assert (await r.entry("abiko")).created_at == 1000 and await r.entry("nowhere") is None
        assert await r.settings("abiko") == settings and await r.settings("kashiwa") is None
        assert await r.version() == v0 + 2   # each add moves it: a running process reloads
    asyncio.run(within(registry, story))


def test_settings_and_look_are_saved_whole_with_their_audit_row(registry):
    async def story(r):
        await r.add(tenant_registry.new_entry("abiko", None, 1000), None)
        v = await r.version()
        s = ts.merged(None, 2000, check_text="お変わりありませんか？", quotes="一期一会\n七転び八起き")
        look = looks.merged(None, 2000, top_image=PNG, terms="我孫子市の利用規約")
        await r.save("abiko", tenant_registry.AuditRow(2000, "suzuki", "settings.message", "確認の文言"),
                     settings=s, look=look)
        assert await r.settings("abiko") == s and s.quotes == ("一期一会", "七転び八起き")
        assert await r.look("abiko") == look and look.image_type == "image/png"
        assert await r.version() == v + 1
        cleared = ts.merged(s, 3000, check_text=None, quotes=None)   # back to the built-in wording
        await r.save("abiko", None, settings=cleared, look=looks.merged(look, 3000, top_image=None))
        assert (await r.settings("abiko")).check_text is None and (await r.settings("abiko")).quotes is None
        assert (await r.look("abiko")).top_image is None and (await r.look("abiko")).terms == "我孫子市の利用規約"
        assert await r.look("kashiwa") is None   # another tenant's: nothing
    asyncio.run(within(registry, story))


def test_audit_rows_of_a_save_are_the_admin_screens(registry, tmp_path):
    """The row lands where the admin screen's 操作の記録 reads it, on either backend."""
    async def story(r):
        await r.add(tenant_registry.new_entry("abiko", None, 1000), None)
        await r.save("abiko", tenant_registry.AuditRow(2000, "suzuki", "settings.timezone", "Asia/Tokyo → UTC"),
                     settings=ts.merged(None, 2000, timezone="UTC"))
        if isinstance(r, SqliteRegistry):
            from streams.admin.backends import SqliteStaff
            staff = SqliteStaff(r.store)
        else:
            from streams.admin.redis_accounts import RedisStaff
            staff = RedisStaff(r.redis)
        rows = await staff.audit_log("abiko")
        assert [(x["login"], x["action"], x["detail"]) for x in rows] == [("suzuki", "settings.timezone",
                                                                           "Asia/Tokyo → UTC")]
    asyncio.run(within(registry, story))


def test_the_tenants_a_process_runs_lay_the_store_over_the_environment(registry):
    async def story(r):
        await r.add(tenant_registry.new_entry("abiko", None, 1000),
                    ts.merged(None, 1000, timezone="Asia/Tokyo", channel_secret=SECRET_B, channel_access_token=TOKEN_B))
        await r.add(tenant_registry.new_entry("no-channel", None, 1000), ts.merged(None, 1000, timezone="UTC"))
        await tenant_registry.seed(r, A, 1000)                      # the environment's tenant, listed
        await r.save(A.id, None, settings=ts.merged(None, 2000, timezone="Asia/Seoul", check_text="元気？"))
        running = await tenant_registry.running(r, {A.id: A})
        assert sorted(running) == ["abiko", A.id]                  # no channel yet: not served
        assert running["abiko"].tenant == Tenant("abiko", SECRET_B, TOKEN_B, "Asia/Tokyo")
        assert running[A.id].tenant == Tenant(A.id, SECRET_A, TOKEN_A, "Asia/Seoul")   # stored zone wins
        assert running[A.id].texts(Sender(A, "http://unused").texts).check == "元気？"
        watch = tenant_registry.Watch(r)
        assert await watch.changed() and not await watch.changed()
        await r.add(tenant_registry.new_entry("kashiwa", None, 3000), None)
        assert await watch.changed()
    asyncio.run(within(registry, story))


# --- `anpi tenant` as a user runs it ---------------------------------------------------------------------


def anpi(*args: str, env: dict | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], input=stdin, capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("ANPI_CHANNEL")},
                               **(env or {})}, timeout=60)


def test_tenant_add_and_list_with_the_secrets_from_stdin_or_the_environment(tmp_path):
    db = str(tmp_path / "anpi.db")
    added = anpi("tenant", "add", "abiko", "--name", "我孫子市", "--db", db, stdin=f"{SECRET_B}\n{TOKEN_B}\n")
    assert added.returncode == 0, added.stderr
    assert "/webhook/abiko" in added.stdout
    env = {"ANPI_CHANNEL_SECRET": SECRET_A, "ANPI_CHANNEL_ACCESS_TOKEN": TOKEN_A}
    assert anpi("tenant", "add", "kashiwa", "--timezone", "Asia/Seoul", "--db", db, env=env).returncode == 0
    again = anpi("tenant", "add", "abiko", "--db", db, stdin=f"{SECRET_B}\n{TOKEN_B}\n")
    assert again.returncode == 2 and "exists already" in again.stderr
    listed = anpi("tenant", "list", "--db", db)
    assert listed.stdout.splitlines() == ["id\tname\ttimezone\tline_channel", "abiko\t我孫子市\tAsia/Tokyo\tset",
                                          "kashiwa\tkashiwa\tAsia/Seoul\tset"]
    for run in (added, again, listed):
        assert SECRET_B not in run.stdout + run.stderr and TOKEN_B not in run.stdout + run.stderr
    store = Store(db)
    (stored,) = store.db.execute("SELECT channel_secret FROM tenant_settings WHERE tenant = 'abiko'").fetchone()
    assert stored.startswith("sealed:") and sealed.unseal(stored) == SECRET_B   # sealed at rest
    assert SqliteRegistry(store).settings_now("abiko").channel_secret == SECRET_B
    store.close()
    with open(db, "rb") as f:
        data = f.read()
    assert SECRET_B.encode() not in data and TOKEN_B.encode() not in data


@pytest.mark.parametrize("args,stdin,says", [
    (["tenant", "add", "bad id"], "", "a tenant id is"),
    (["tenant", "add", "city.a"], "", "a tenant id is"),   # '.' ends a tenant in a session id: one rule everywhere
    (["tenant", "add", "abiko", "--timezone", "Mars/Base"], "", "not a time zone"),
    (["tenant", "add", "abiko"], "", "ANPI_CHANNEL_SECRET"),
    (["tenant", "add", "abiko"], "has spaces in it\nand here\n", "チャネルシークレット"),
])
def test_tenant_add_refuses_what_cannot_run_and_says_why(tmp_path, args, stdin, says):
    db = str(tmp_path / "anpi.db")
    refused = anpi(*args, "--db", db, stdin=stdin)
    assert refused.returncode == 2 and says in refused.stderr
    assert anpi("tenant", "list", "--db", db).stdout.splitlines() == ["id\tname\ttimezone\tline_channel"]


def test_tenant_add_and_list_in_the_kafka_deployments_redis(running_services):
    url = redis_url()

    async def flush():
        client = aioredis.from_url(url)
        await client.flushdb()
        await client.aclose()
    asyncio.run(flush())
    assert anpi("tenant", "add", "abiko", "--name", "我孫子市", "--redis", url,
                stdin=f"{SECRET_B}\n{TOKEN_B}\n").returncode == 0
    assert anpi("tenant", "list", "--redis", url).stdout.splitlines()[1:] == ["abiko\t我孫子市\tAsia/Tokyo\tset"]
    unreachable = anpi("tenant", "list", "--redis", "redis://127.0.0.1:1/0")
    assert unreachable.returncode == 1 and "cannot reach Redis" in unreachable.stderr


# --- a running `anpi serve` takes a new tenant -----------------------------------------------------------


def test_a_tenant_added_to_a_running_serve_gets_its_first_checks_without_a_restart(tmp_path):
    db = str(tmp_path / "anpi.db")
    resident_a, resident_b = user_id_for("tenant-resident-a"), user_id_for("tenant-resident-b")
    daily_9 = Schedule("1d", 9 * 60, "Asia/Tokyo", None)

    async def go():
        clock = ManualClock(START)
        store = Store(db)
        line = ["http://unused"]
        runtime = ServedRuntime(store, [A], "", lambda: int(clock.now() * 1000), grace_ms=0, step_seconds=0.02,
                                sender_for=lambda t, metrics: _Sender(t, line, clock, metrics))
        url = await runtime.start()
        channels = [Channel(A.id, TOKEN_A, SECRET_A, webhook_url=f"{url}/webhook/{A.id}"),
                    Channel("abiko", TOKEN_B, SECRET_B, webhook_url=f"{url}/webhook/abiko")]
        try:
            async with run_linesim(Config(channels, clock=clock)) as sim, aiohttp.ClientSession() as http:
                line[0] = sim.base_url
                for town in runtime.towns.values():
                    town.sender.base_url = sim.base_url

                async def webhook(tenant: str, secret: str, channel: str, user: str) -> int:
                    body, headers = signed_webhook(secret, sim.channel(channel).bot_user_id,
                                                   [follow_event(user, reply_token="r" * 32)])
                    async with http.post(f"{url}/webhook/{tenant}", data=body, headers=headers) as r:
                        return r.status

                assert await webhook("abiko", SECRET_B, "abiko", resident_b) == 404   # not a tenant yet
                added = await asyncio.to_thread(anpi, "tenant", "add", "abiko", "--name", "我孫子市", "--db", db,
                                                stdin=f"{SECRET_B}\n{TOKEN_B}\n")
                assert added.returncode == 0, added.stderr
                await until(lambda: "abiko" in runtime.towns, 20, "the new tenant to be served")
                # nothing crosses: A's secret on B's address, B's on A's
                assert await webhook("abiko", SECRET_A, "abiko", resident_b) == 401
                assert await webhook(A.id, SECRET_B, A.id, resident_a) == 401
                for tenant, member in ((A.id, resident_a), ("abiko", resident_b)):   # each town's roster
                    settings = MemberSettings(member, "watch", daily_9, "090-0000-0000", ())
                    store.accept(tenant, None, [(member, Register(START * 1000, settings))])
                clock.set(START + 9 * 3600 + 60)                                       # 9:01
                await until(lambda: all(store.effects(t) for t in (A.id, "abiko")), 20, "both towns' checks")
                await runtime.drain()
                to = {d.to: d.channel for d in sim.state.deliveries if d.delivered}
                assert to == {resident_a: A.id, resident_b: "abiko"}   # each by its own channel's token
                assert [e.effect for e in store.effects("abiko")] == [fx.CHECK_SENT]
                assert [e.subject for e in store.effects(A.id)] == [resident_a]
        finally:
            await runtime.close()
            store.close()
    asyncio.run(go())


def _Sender(tenant: Tenant, line: list, clock, metrics) -> Sender:
    return Sender(tenant, line[0], wall=clock.now, metrics=metrics)


# --- a tenant's areas and its 気象庁 trigger (issue 14) -------------------------------------------------

AREAS_CSV = "id,name,city,region\nkita,北町,0421300,220\nminami,南町,0421500,\nhigashi,東町,,\n"


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_tenant_areas_are_set_from_a_csv_kept_with_the_other_settings_and_read_back(tmp_path, request, kind):
    db = str(tmp_path / "anpi.db")
    where = ["--db", db]
    if kind == "redis":
        request.getfixturevalue("running_services")
        url = redis_url()

        async def flush():
            client = aioredis.from_url(url)
            await client.flushdb()
            await client.aclose()
        asyncio.run(flush())
        where = ["--redis", url]
    assert anpi("tenant", "add", "abiko", *where, stdin=f"{SECRET_B}\n{TOKEN_B}\n").returncode == 0
    (tmp_path / "areas.csv").write_text(AREAS_CSV, encoding="utf-8")
    done = anpi("tenant", "areas", "abiko", str(tmp_path / "areas.csv"), "--threshold", "５強", "--hold", "3",
                "--drills", *where)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("anpi tenant areas: abiko: 3 areas; a roll-call starts at 震度5強 or more "
                                   "after 3 min; 訓練 bulletins start drills")

    if kind == "redis":
        async def read():
            client = aioredis.from_url(url)
            try:
                return await RedisRegistry(client).settings("abiko")
            finally:
                await client.aclose()
        settings = asyncio.run(read())
    else:
        store = Store(db)
        settings = SqliteRegistry(store).settings_now("abiko")
        store.close()
    assert settings.quake == ts.QuakeConfig(
        (ts.Area("kita", "北町", "0421300", "220"), ts.Area("minami", "南町", "0421500", None),
         ts.Area("higashi", "東町", None, None)), "5+", 3, True)
    assert settings.channel_secret == SECRET_B  # the other settings are kept
    refused = anpi("tenant", "areas", "abiko", "-", *where, stdin="kita,北町\nkita,北町2\n")
    assert refused.returncode == 2 and "ID「kita」が2回あります" in refused.stderr
    assert anpi("tenant", "areas", "nobody", "-", *where, stdin="kita,北町\n").returncode == 2


@pytest.mark.parametrize("text, says", [
    ("kita,北町,12345,\n", "市町村コードは気象庁の7桁"),
    ("kita,北町,,1\n", "細分区域コードは気象庁の3桁"),
    ("kita,\n", "名前は40文字まで"),
    ("ki ta,北町\n", "IDは空白やカンマのない"),
    ("a,b,c,d,e\n", "4つまで"),
    ("".join(f"a{i},名{i}\n" for i in range(2001)), "2000件まで"),
])
def test_areas_that_cannot_be_used_are_refused_with_the_line_and_the_reason(text, says):
    with pytest.raises(ts.Invalid) as error:
        ts.clean_areas(text)
    assert says in str(error.value)
    for threshold in ("5", "震度8", "つよい"):
        with pytest.raises(ts.Invalid):
            ts.clean_threshold(threshold)
    assert ts.clean_threshold("震度６弱以上") == "6-" and ts.clean_hold("０") == 0
    with pytest.raises(ts.Invalid):
        ts.clean_hold("61")
