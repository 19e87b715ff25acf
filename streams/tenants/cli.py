"""`anpi tenant add | list | areas`: the municipalities a deployment serves, in the embedded store's file
(`--db FILE`, what `anpi serve` reads) or the Kafka deployment's Redis (`--redis [URL]`).

The channel secret and access token come from ANPI_CHANNEL_SECRET / ANPI_CHANNEL_ACCESS_TOKEN, or
from stdin (two lines: the secret, then the token; asked for without echo on a terminal), never from
argv (argv shows in `ps` and in shell history); they are never printed. A running `anpi serve`, or
the Kafka processes, serve the new tenant within seconds, without a restart.
"""
from __future__ import annotations

import asyncio
import getpass
import os
import sys
import time
from contextlib import asynccontextmanager

from redis.exceptions import RedisError

from streams import startup
from streams.jma.bulletin import label
from streams.tenants import registry as tenant_registry
from streams.tenants import settings as ts

HEADER = ("id", "name", "timezone", "line_channel")
UNREACHABLE = (OSError, RedisError)   # Redis not answering (its ConnectionError is no OSError)


def _credentials(stdin, err) -> tuple[str, str] | None:
    secret, token = os.environ.get("ANPI_CHANNEL_SECRET"), os.environ.get("ANPI_CHANNEL_ACCESS_TOKEN")
    if secret and token:
        return secret, token
    if stdin.isatty():
        secret, token = getpass.getpass("チャネルシークレット: "), getpass.getpass("チャネルアクセストークン: ")
    else:
        secret, token = stdin.readline().strip(), stdin.readline().strip()
    if not secret or not token:
        print("anpi tenant: give the LINE channel's secret and access token in ANPI_CHANNEL_SECRET and "
              "ANPI_CHANNEL_ACCESS_TOKEN, or on stdin (two lines: the secret, then the token)", file=err)
        return None
    return secret, token


@asynccontextmanager
async def _registry(db: str | None, redis_url: str | None):
    if redis_url:
        import redis.asyncio as aioredis

        from streams.tenants.in_redis import RedisRegistry
        client = aioredis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            yield RedisRegistry(client)
        finally:
            await client.aclose()
    else:
        from streams.embedded.store import Store
        from streams.tenants.in_sqlite import SqliteRegistry
        startup.sqlite_file(db)
        os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
        store = Store(db)
        try:
            yield SqliteRegistry(store)
        finally:
            store.close()


def _where(db: str | None, redis_url: str | None) -> str:
    return "Redis" if redis_url else db


def add(tenant_id: str, name: str | None, zone: str, db: str | None, redis_url: str | None,
        stdin=None, out=None, err=None) -> int:
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    at = int(time.time() * 1000)
    try:
        entry = tenant_registry.new_entry(tenant_id, name, at)
        zone = startup.zone(zone, "--timezone")
    except startup.BadSetting as e:
        print(f"anpi tenant: {e}", file=err)
        return 2
    credentials = _credentials(stdin, err)
    if credentials is None:
        return 2
    try:
        settings = ts.merged(None, at, timezone=zone, channel_secret=credentials[0],
                             channel_access_token=credentials[1])
    except ts.Invalid as e:
        print(f"anpi tenant: {e}", file=err)
        return 2

    async def go() -> None:
        async with _registry(db, redis_url) as registry:
            await registry.add(entry, settings)
    try:
        asyncio.run(go())
    except tenant_registry.Exists:
        print(f"anpi tenant: tenant {entry.id!r} exists already in {_where(db, redis_url)} (change its settings "
              "on its admin screen's 設定 page)", file=err)
        return 2
    except UNREACHABLE as e:
        print(f"anpi tenant: cannot reach Redis ({type(e).__name__})", file=err)
        return 1
    print(f"anpi tenant: {entry.id} ({entry.name}) added in {_where(db, redis_url)}; its LINE webhook is "
          f"/webhook/{entry.id}, its admin screen /admin/{entry.id}/login", file=out)
    return 0


def list_tenants(db: str | None, redis_url: str | None, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def go() -> list[tuple[str, ...]]:
        async with _registry(db, redis_url) as registry:
            rows = []
            for entry in await registry.entries():
                s = await registry.settings(entry.id) or ts.TenantSettings()
                channel = "set" if s.channel_secret and s.channel_access_token else "environment"
                rows.append((entry.id, entry.name, s.timezone or tenant_registry.DEFAULT_ZONE, channel))
            return rows
    try:
        rows = asyncio.run(go())
    except UNREACHABLE as e:
        print(f"anpi tenant: cannot reach Redis ({type(e).__name__})", file=err)
        return 1
    for row in [HEADER, *rows]:
        print("\t".join(row), file=out)
    return 0


def areas(tenant_id: str, path: str, threshold: str, hold: str, drills: bool, db: str | None, redis_url: str | None,
          stdin=None, out=None, err=None) -> int:
    """The tenant's areas from a CSV file, with its 気象庁 trigger; the other settings are kept."""
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    try:
        if path == "-":
            text = stdin.read()
        else:
            with open(path, encoding="utf-8-sig") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"anpi tenant areas: {path}: cannot read ({getattr(e, 'strerror', None) or type(e).__name__})", file=err)
        return 2
    try:
        quake = ts.quake_config(text, threshold, hold, drills)
    except ts.Invalid as e:
        print(f"anpi tenant areas: {path}: {e}", file=err)
        return 2
    at = int(time.time() * 1000)

    async def go() -> bool:
        async with _registry(db, redis_url) as registry:
            if await registry.entry(tenant_id) is None:
                return False
            settings = ts.merged(await registry.settings(tenant_id), at, quake=quake)
            detail = f"{len(quake.areas)} areas, 震度{label(quake.threshold)}, hold {quake.hold_minutes} min" + (
                ", drills" if quake.drills else "")
            await registry.save(tenant_id, tenant_registry.AuditRow(at, "anpi tenant areas", "areas_set", detail),
                                settings=settings)
            return True
    try:
        found = asyncio.run(go())
    except UNREACHABLE as e:
        print(f"anpi tenant: cannot reach Redis ({type(e).__name__})", file=err)
        return 1
    if not found:
        print(f"anpi tenant areas: no tenant {tenant_id!r} in {_where(db, redis_url)} (add it with anpi tenant add)",
              file=err)
        return 2
    print(f"anpi tenant areas: {tenant_id}: {len(quake.areas)} areas; a roll-call starts at 震度{label(quake.threshold)} "
          f"or more{f' after {quake.hold_minutes} min' if quake.hold_minutes else ''}"
          f"{'; 訓練 bulletins start drills' if quake.drills else ''}", file=out)
    return 0
