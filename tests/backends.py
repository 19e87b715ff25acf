"""The two backends of the screens, for feature tests that run on both (parity proven, not claimed).

    sqlite   the embedded store's file: create_app, as `anpi serve` mounts it
    redis    a real Redis (its own database, emptied): create_kafka_app with RedisReadSide,
             RedisStaff, RedisRegistry and RedisNotices, as `anpi admin serve` mounts it; My Page
             with RedisMembers and RedisSessions, as `anpi ingress` mounts it (mypage_app)

The residents are stepped by the embedded engine in both (tests/test_admin_routes.build_world). On
Redis, the read-model labels are then written as the Kafka worker writes them (readside.label of
each state, streams/kafka/redis_store.ReadModel): `sync()` after each step. Staff accounts are created in
the backend's own store. The Kafka processes themselves are tested end to end elsewhere
(tests/test_kafka_notices.py)."""
from __future__ import annotations

import json
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents import readside, routes
from agents.subject import addressed
from schemas.events import RollCall
from schemas import effects as fx
from streams import codec
from streams.admin import accounts
from streams.admin.app import create_app, create_kafka_app
from streams.admin.backends import RedisReadSide, SqliteReadSide, SqliteStaff
from streams.admin.redis_accounts import RedisStaff
from streams.kafka import readside as readside_store
from streams.kafka.readside import Writer
from streams.kafka.records import Naming
from streams.kafka.redis_store import ReadModel
from streams.notices.in_redis import RedisNotices
from streams.notices.in_sqlite import SqliteNotices
from streams.tenants.in_redis import RedisRegistry
from streams.tenants.in_sqlite import SqliteRegistry
from streams.tools import services

REDIS_DB = 10   # these tests own this database (emptied at each start)
KINDS = ("sqlite", "redis")


def redis_url() -> str:
    cfg = services.local()
    return f"redis://{cfg.redis_host}:{cfg.redis_port}/{REDIS_DB}"


async def key_contents(redis, key):
    """What one Redis key holds, read by its type (None for a type these tests do not use)."""
    kind = (await redis.type(key)).decode()
    if kind == "string":
        return await redis.get(key)
    if kind == "hash":
        return await redis.hgetall(key)
    if kind == "list":
        return await redis.lrange(key, 0, -1)
    if kind == "set":
        return await redis.smembers(key)
    if kind == "zset":
        return await redis.zrange(key, 0, -1, withscores=True)
    return None


async def keys_of(redis, match: str = "*") -> dict:
    """Every key matching `match`, with what it holds."""
    return {key: await key_contents(redis, key) async for key in redis.scan_iter(match=match, count=1000)}


async def redis_contents(client) -> str:
    """Every key of the database and what it holds, as one text (to look for what must not be there)."""
    return "\n".join(f"{key!r} {value!r}" for key, value in (await keys_of(client)).items())


@pytest.fixture(params=KINDS)
def backend(request) -> str:
    if request.param == "redis":
        request.getfixturevalue("running_services")
    return request.param


class Side:
    """One backend around a test world: its read side, notices and staff, and the screens over them.

    On Redis, `sync()` plays the Kafka processes that keep Redis from the engine's output: the
    worker's read-model labels, and `anpi readside` (ReadSideMirror); the screens' apps run it
    before every request, as those processes keep up in the background. What the screens send
    to the engine (a Resolve, a change on My Page) goes into the world's inbox (StoreInbound),
    where the embedded engine takes it, as the worker takes the inbound topic."""

    def __init__(self, kind: str, world, zones: dict[str, str], redis=None):
        self.kind, self.world, self.zones, self.redis = kind, world, zones, redis
        if redis is None:
            self.notices, self.staff = SqliteNotices(world.store), SqliteStaff(world.store)
            self.read = SqliteReadSide(world.store)
        else:
            self.notices, self.staff = RedisNotices(redis), RedisStaff(redis)
            self.inbound = StoreInbound(world.store)
            self.mirror = ReadSideMirror(world.store, redis, zones)
            self.read = RedisReadSide(redis, self.inbound, self.staff)

    def app(self) -> web.Application:
        now, wall = (lambda: self.world.now[0]), (lambda: self.world.wall[0])
        if self.redis is None:
            return create_app(self.world.store, self.zones, now, wall)
        staff = RedisStaff(self.redis)
        app = create_kafka_app(RedisReadSide(self.redis, self.inbound, staff), staff, RedisRegistry(self.redis),
                               RedisNotices(self.redis), self.zones, now, wall)
        app.middlewares.append(self._caught_up)
        return app

    @web.middleware
    async def _caught_up(self, request, handler):
        await self.sync()
        return await handler(request)

    async def sync(self) -> None:
        """Redis: every subject's read-model label, as the worker writes it after a batch, and the
        read side, as `anpi readside` keeps it."""
        if self.redis is None:
            return
        model = ReadModel(self.redis)
        for tenant in self.zones:
            await model.record_many(tenant, {s: readside.label(state) for s, state in self.world.store.states(tenant)})
        await self.mirror.sync()

    async def add_staff(self, tenant: str, login: str, role: str, hashed: str, at: int) -> None:
        await self.staff.add_user(tenant, login, role, hashed, at, "(test)")

    async def audit_log(self, tenant: str) -> list[dict]:
        return await self.staff.audit_log(tenant)


@asynccontextmanager
async def side_of(kind: str, world, zones: dict[str, str]):
    """The backend `kind` over `world`, its labels in sync."""
    if kind == "sqlite":
        accounts.install(world.store.db)
        yield Side(kind, world, zones)
        return
    redis = aioredis.from_url(redis_url())
    await redis.flushdb()
    try:
        side = Side(kind, world, zones, redis)
        await side.sync()
        yield side
    finally:
        await redis.aclose()


@asynccontextmanager
async def admin_server(side: Side):
    root = web.Application()
    admin = side.app()
    root.add_subapp("/admin", admin)
    server = TestServer(root)
    await server.start_server()
    try:
        yield server, admin
    finally:
        await server.close()


# --- the Kafka processes, played over the world's store --------------------------------------------

MYPAGE_DEPLOYMENT = "mp-test"  # the topic prefix whose APPLIED offsets RedisMembers reads


class StoreInbound:
    """The inbound topic, played by the embedded store's inbox: RedisMembers' sink, placing each event
    as KafkaSink does and saying where it went (partition 0, its inbox row as the offset). The
    embedded engine is the worker that takes them."""

    def __init__(self, store):
        self.store = store

    async def put(self, tenant: str, routed) -> list[tuple[str, object, int, int]]:
        # a roll-call is the tenant's, as KafkaSink puts it on every partition: one row, no subject
        events = [(subject, event) for event in routed.events
                  for subject in (addressed(event) if type(event) is not RollCall else ("",))]

        def write() -> list[int]:
            self.store.enqueue(tenant, events)
            rows = self.store.db.execute("SELECT seq FROM inbox WHERE tenant = ? ORDER BY seq DESC LIMIT ?",
                                         (tenant, len(events))).fetchall()
            return sorted(seq for (seq,) in rows)
        seqs = await self.store.grouped(write) if events else []
        return [(subject, event, 0, seq) for (subject, event), seq in zip(events, seqs)]


class ReadSideMirror:
    """`anpi readside` over the embedded store: each subject's state (the changelog), every effect
    (the effects topic), the escalations (with a staff call's phone) and the inbound position the
    states are up to (APPLIED), written by the read side's own Writer, exactly once per offset."""

    def __init__(self, store, redis, zones: dict[str, str]):
        self.store, self.redis, self.zones = store, redis, zones
        self.naming = Naming(MYPAGE_DEPLOYMENT)
        self.states_offset = 0
        self.sent: dict[tuple[str, str], bytes] = {}  # (tenant, subject) -> the state last written
        self.effects_seq: dict[str, int] = {}         # tenant -> the last effect row written

    async def sync(self) -> None:
        db = self.store.db
        for tenant, zone in self.zones.items():
            decoded = dict(self.store.states(tenant))
            states = [(subject, codec.dumps(codec.state_to_obj(state))) for subject, state in decoded.items()]
            states = [(subject, value) for subject, value in states if self.sent.get((tenant, subject)) != value]
            self.sent.update(((tenant, subject), value) for subject, value in states)  # a changelog: changes only
            records = [(self.states_offset + i, record) for i, record in enumerate(states)]
            self.states_offset += len(states)
            effects = [(seq, codec.effect_from_obj(json.loads(raw))) for seq, raw in
                       db.execute("SELECT seq, effect FROM effects WHERE tenant = ? AND seq > ? ORDER BY seq",
                                  (tenant, self.effects_seq.get(tenant, 0)))]
            if effects:
                self.effects_seq[tenant] = effects[-1][0]
            await Writer(self.redis, tenant, zone).apply([
                (readside_store.STATES, 0, records),
                (readside_store.EFFECTS, 0, [(seq, self.naming.effect(tenant, e)[1]) for seq, e in effects]),
                (readside_store.ESCALATIONS, 0, [(seq, self._escalation(tenant, e, decoded)) for seq, e in effects
                                                 if e.effect in routes.ESCALATIONS])])
        # the last inbound row before the first one some tenant's engine has not applied yet
        first_open = db.execute("SELECT MIN(seq) FROM inbox WHERE seq > COALESCE((SELECT inbox FROM cursors "
                                "WHERE cursors.tenant = inbox.tenant), 0)").fetchone()[0]
        applied = first_open - 1 if first_open is not None else db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM inbox").fetchone()[0]
        await self.redis.hset(f"anpi:{{{MYPAGE_DEPLOYMENT}}}:rs:applied", mapping={"0": applied})

    def _escalation(self, tenant: str, effect, states: dict) -> bytes:
        """The escalations topic's record, with a staff call's phone from the state, as the worker has it."""
        phone = None
        if effect.effect == fx.STAFF_CALL:
            state = states.get(effect.subject)
            phone = getattr(getattr(state, "settings", None), "phone", None)
        return self.naming.effect(tenant, effect, **({"phone": phone} if phone else {}))[1]


def mypage_app(kind: str, store, tenants, now_ms, redis=None, **options):
    """My Page over `kind`: (the app, its registry). On Redis the read side catches up before each
    request, as `anpi readside` keeps up in the background."""
    from streams import mypage
    from streams.mypage.in_redis import RedisMembers, RedisSessions
    from streams.residents.in_redis import RedisProfiles
    if kind == "sqlite":
        app = mypage.create_app(store, tenants, now_ms, **options)
        return app, SqliteRegistry(store)
    mirror = ReadSideMirror(store, redis, {t.id: t.timezone for t in tenants.values()})

    @web.middleware
    async def read_side(request, handler):
        await mirror.sync()
        return await handler(request)

    app = web.Application(client_max_size=64 * 1024, middlewares=[read_side])
    registry = RedisRegistry(redis)
    mypage.mount(app, RedisMembers(redis, StoreInbound(store), MYPAGE_DEPLOYMENT), RedisSessions(redis), registry,
                 tenants, now_ms, profiles=RedisProfiles(redis), **options)
    return app, registry


@asynccontextmanager
async def store_and_redis(path: str, backend: str = "redis"):
    """(an embedded store's file at `path`, a real Redis emptied, or None on the sqlite backend), for
    tests of the stores that line up behind one interface; both closed afterwards."""
    from streams.embedded.store import Store
    client = aioredis.from_url(redis_url()) if backend == "redis" else None
    store = Store(path)
    try:
        if client is not None:
            await client.flushdb()
        yield store, client
    finally:
        store.close()
        if client is not None:
            await client.aclose()
