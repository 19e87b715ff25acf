"""The two backends of the admin screen, for feature tests that run on both (parity proven, not claimed).

    sqlite   the embedded store's file: create_app, as `anpi serve` mounts it
    redis    a real Redis (its own database, emptied): create_kafka_app with RedisReadSide,
             RedisStaff, RedisRegistry and RedisNotices, as `anpi admin serve` mounts it

The residents are stepped by the embedded engine in both (tests/test_admin_routes.build_world). On
Redis, the read-model labels are then written as the Kafka worker writes them (readside.label of
each state, streams/redis_store.ReadModel): `sync()` after each step. Staff accounts are created in
the backend's own store. The Kafka processes themselves are tested end to end elsewhere
(tests/test_kafka_notices.py)."""
from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents import readside
from streams import services
from streams.admin import accounts
from streams.admin.app import create_app, create_kafka_app
from streams.admin.backends import RedisReadSide, SqliteStaff
from streams.admin.redis_accounts import RedisStaff
from streams.notices.in_redis import RedisNotices
from streams.notices.in_sqlite import SqliteNotices
from streams.redis_store import ReadModel
from streams.tenants.in_redis import RedisRegistry

REDIS_DB = 10   # these tests own this database (emptied at each start)
KINDS = ("sqlite", "redis")


def redis_url() -> str:
    cfg = services.local()
    return f"redis://{cfg.redis_host}:{cfg.redis_port}/{REDIS_DB}"


@pytest.fixture(params=KINDS)
def backend(request) -> str:
    if request.param == "redis":
        request.getfixturevalue("running_services")
    return request.param


class Side:
    """One backend around a test world: its notices, staff and the admin app over them."""

    def __init__(self, kind: str, world, zones: dict[str, str], redis=None):
        self.kind, self.world, self.zones, self.redis = kind, world, zones, redis
        if redis is None:
            self.notices, self.staff = SqliteNotices(world.store), SqliteStaff(world.store)
        else:
            self.notices, self.staff = RedisNotices(redis), RedisStaff(redis)

    def app(self) -> web.Application:
        now, wall = (lambda: self.world.now[0]), (lambda: self.world.wall[0])
        if self.redis is None:
            return create_app(self.world.store, self.zones, now, wall)
        staff = RedisStaff(self.redis)
        return create_kafka_app(RedisReadSide(self.redis, None, staff), staff, RedisRegistry(self.redis),
                                RedisNotices(self.redis), self.zones, now, wall)

    async def sync(self) -> None:
        """Redis: every subject's read-model label, as the worker writes it after a batch."""
        if self.redis is None:
            return
        model = ReadModel(self.redis)
        for tenant in self.zones:
            await model.record_many(tenant, {s: readside.label(state) for s, state in self.world.store.states(tenant)})

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
