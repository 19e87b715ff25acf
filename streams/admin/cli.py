"""`anpi admin create-user`: the first administrator of a tenant (later ones are added on the screen),
in the embedded store's SQLite file, or with `--redis` in Redis (the Kafka runtime's admin screen).
`anpi admin serve`: the admin screen of the Kafka runtime.

The password comes from ANPI_ADMIN_PASSWORD or stdin, never from argv (argv shows in `ps` and in
shell history), and is never printed or logged.
"""
from __future__ import annotations

import getpass
import os
import sys
import time

from streams.admin import accounts
from streams.embedded.store import Store


def _password(stdin, err) -> str | None:
    password = os.environ.get("ANPI_ADMIN_PASSWORD")
    if password is None:
        if stdin.isatty():
            password = getpass.getpass("パスワード: ")
            if getpass.getpass("もう一度: ") != password:
                print("anpi admin: the two passwords differ", file=err)
                return None
        else:
            password = stdin.readline().rstrip("\r\n")
    return password


def create_user(db: str, tenant: str, login: str, role: str, stdin=None, err=None) -> int:
    stdin, err = stdin or sys.stdin, err or sys.stderr
    password = _password(stdin, err)
    if password is None:
        return 2
    try:
        accounts.check_new(login, role, password)
    except accounts.AccountError as e:
        print(f"anpi admin: {e}", file=err)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
    store = Store(db)
    try:
        accounts.install(store.db)
        with store.transaction():
            accounts.create_user(store.db, tenant, login, role, password, int(time.time() * 1000))
            accounts.audit(store.db, tenant, int(time.time() * 1000), "(anpi admin)", "user.create", login, role)
    except accounts.AccountError as e:
        print(f"anpi admin: {e}", file=err)
        return 2
    finally:
        store.close()
    print(f"anpi admin: {role} {login!r} created for tenant {tenant!r} in {db}", file=err)
    return 0


def create_user_redis(url: str, tenant: str, login: str, role: str, stdin=None, err=None) -> int:
    """The same, in Redis at `url` (the accounts `anpi admin serve` reads)."""
    import asyncio

    import redis.asyncio as aioredis

    from streams.admin.redis_accounts import RedisStaff

    stdin, err = stdin or sys.stdin, err or sys.stderr
    password = _password(stdin, err)
    if password is None:
        return 2

    async def go() -> None:
        redis = aioredis.from_url(url)
        try:
            await RedisStaff(redis).create_user(tenant, login, role, password, int(time.time() * 1000), "(anpi admin)")
        finally:
            await redis.aclose()

    try:
        asyncio.run(go())
    except (accounts.AccountError, ValueError) as e:
        print(f"anpi admin: {e}", file=err)
        return 2
    except OSError as e:
        print(f"anpi admin: cannot reach Redis ({type(e).__name__})", file=err)
        return 1
    print(f"anpi admin: {role} {login!r} created for tenant {tenant!r} in Redis", file=err)
    return 0


def unlock(tenant: str, login: str, db: str | None = None, redis_url: str | None = None, err=None) -> int:
    """`anpi admin unlock`: clear a login's lockouts from every address (accounts.LOCKOUT), audited,
    in the SQLite file `db` or, with `redis_url`, in Redis. 0 done, 2 no such account, 1 Redis unreachable."""
    import asyncio

    err = err or sys.stderr
    now = int(time.time() * 1000)
    if redis_url:
        import redis.asyncio as aioredis

        from streams.admin.redis_accounts import RedisStaff

        async def go() -> bool:
            redis = aioredis.from_url(redis_url)
            try:
                staff = RedisStaff(redis)
                done = await staff.unlock(tenant, login)
                if done:
                    await staff.audit(tenant, now, "(anpi admin)", "user.unlock", login)
                return done
            finally:
                await redis.aclose()
        try:
            done, where = asyncio.run(go()), "Redis"
        except ValueError as e:
            print(f"anpi admin: {e}", file=err)
            return 2
        except OSError as e:
            print(f"anpi admin: cannot reach Redis ({type(e).__name__})", file=err)
            return 1
    else:
        if not os.path.exists(db):
            print(f"anpi admin: {db}: no such file (the SQLite file of `anpi serve`: --db)", file=err)
            return 2
        store = Store(db)
        try:
            accounts.install(store.db)
            with store.transaction():
                done = accounts.unlock(store.db, tenant, login)
                if done:
                    accounts.audit(store.db, tenant, now, "(anpi admin)", "user.unlock", login)
        finally:
            store.close()
        where = db
    if not done:
        print(f"anpi admin: tenant {tenant!r} has no account {login!r} in {where}", file=err)
        return 2
    print(f"anpi admin: {login!r} of tenant {tenant!r} can log in again ({where})", file=err)
    return 0


def serve(host: str, port: int, env=os.environ) -> int:
    """`anpi admin serve`: /admin/<tenant> for every tenant of the Kafka deployment (ANPI_TENANT, by
    default ANPI_TOPIC_PREFIX, and those of the registry in Redis, followed without a restart): the
    read side in Redis (kept by `anpi readside`), accounts and sessions in Redis, staff's Resolve onto
    the shared inbound topic. ANPI_KAFKA, ANPI_REDIS, ANPI_PARTITIONS, ANPI_TIMEZONE (a tenant's zone
    saved on 設定 wins); /metrics (the open cases: streams/admin/metrics.py) on ANPI_ADMIN_METRICS_PORT,
    off unless set; ANPI_CLOCK_URL: "now" from that clock (the demo's virtual time, streams/shared_clock.py)."""
    import asyncio
    import logging

    import redis.asyncio as aioredis
    from aiohttp import web

    from agents.readside import DEFAULT_ZONE
    from streams.admin.app import create_kafka_app
    from streams.admin.backends import RedisReadSide
    from streams.admin.metrics import OpenCases, metrics_app
    from streams.admin.redis_accounts import RedisStaff
    from streams.line.ingress import KafkaSink
    from streams.tenants import registry as tenant_registry
    from streams.tenants.in_redis import RedisRegistry
    from streams.kafka.settings import Settings
    from streams.notices.in_redis import RedisNotices

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    from streams import startup

    startup.port(port, host=host)
    settings = Settings.from_env(env)
    tenant, zone = startup.tenant_id(env.get("ANPI_TENANT", settings.prefix)), startup.zone(
        env.get("ANPI_TIMEZONE", DEFAULT_ZONE))
    metrics_port = startup.metrics_port(env, "ANPI_ADMIN_METRICS_PORT", settings.web_host)
    if env.get("ANPI_CLOCK_URL"):
        from streams.shared_clock import SharedClock
        now_ms = SharedClock(env["ANPI_CLOCK_URL"]).now_ms
    else:
        now_ms = lambda: int(time.time() * 1000)  # noqa: E731

    async def start() -> web.AppRunner:
        redis = aioredis.from_url(settings.redis)
        sink = KafkaSink(settings)
        await sink.start()
        staff = RedisStaff(redis)
        readside = RedisReadSide(redis, sink, staff)
        registry, zones = RedisRegistry(redis), {tenant: zone}   # who may log in here, and their zones

        async def reload() -> None:
            for entry in [*(await registry.entries()), None]:
                tenant_id = entry.id if entry is not None else tenant
                stored = await registry.settings(tenant_id)
                zones[tenant_id] = stored.timezone if stored is not None and stored.timezone else zone
        following = asyncio.ensure_future(tenant_registry.follow(registry, reload))
        admin = create_kafka_app(readside, staff, registry, RedisNotices(redis), zones, now_ms)
        root = web.Application()
        root.add_subapp("/admin", admin)
        metrics = None
        if metrics_port:
            metrics = web.AppRunner(metrics_app(OpenCases(readside, zones, settings=registry, now_ms=now_ms)),
                                    access_log=None)
            await metrics.setup()
            await web.TCPSite(metrics, settings.web_host, metrics_port).start()

        async def close(_app) -> None:
            following.cancel()
            if metrics is not None:
                await metrics.cleanup()
            await sink.stop()
            await redis.aclose()
        root.on_cleanup.append(close)
        runner = web.AppRunner(root, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

    async def main() -> None:
        runner = await start()
        print(f"anpi admin: http://{host}:{port}/admin/{tenant}/login", file=sys.stderr)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0
