"""`anpi ingress`: the webhook endpoint of the Kafka runtime, for every tenant of the deployment.

Each tenant's webhook is /webhook/<id>; its events go onto the deployment's shared inbound topic
(acks=all, the tenant in key and value: streams/kafka/records.py) before LINE gets its 200;
webhookEventIds are de-duplicated in Redis, shared by every ingress process. The tenants are the
registry's in Redis (`anpi tenant add --redis`, the admin screen's 設定), followed within a second
without a restart, and the one of the environment (streams/tenants/from_env.py: ANPI_TENANT,
default ANPI_TOPIC_PREFIX, and the channel's secrets) with what is saved for it laid over. Settings:
ANPI_KAFKA, ANPI_REDIS, ANPI_PARTITIONS. /metrics (anpi_ingress_*) on ANPI_INGRESS_METRICS_PORT (off
unless set), never on the webhook's port, which faces the internet.

My Page (/mypage/<id>, streams/mypage) is served here too, the other page residents reach from the
internet: states and history from the read side in Redis (`anpi readside`), changes onto the inbound
topic. Residents get its link from the sender (ANPI_PUBLIC_URL: this server's public address), or
by LIFF (ANPI_LIFF_CHANNEL_ID, ANPI_LIFF_ID, and ANPI_LINE_API to verify its ID tokens).
ANPI_CLOCK_URL: the engine's "now" from that clock (the demo's virtual time).

`--processes N` (or ANPI_INGRESS_PROCESSES) forks N servers on the one port (SO_REUSEPORT: the
kernel spreads the connections), for more webhooks per second than one core's; they share
everything through Kafka and Redis. With metrics on, process i serves them on the port + i. The
parent only waits: SIGTERM stops them all, and if one ends the others are stopped and the parent
exits with its code, for a supervisor to start them again.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

import redis.asyncio as aioredis
from prometheus_client import start_http_server

from agents import mypage_link
from streams import mypage, startup
from streams.line import ingress
from streams.admin.redis_accounts import RedisStaff
from streams.residents.in_redis import RedisProfiles
from streams.mypage.in_redis import RedisMembers, RedisSessions
from streams.kafka.settings import Settings
from streams.process import prefork, serve_until_stopped
from streams.tenants import registry as tenant_registry
from streams.tenants.from_env import tenant_from_env
from streams.tenants.in_redis import RedisRegistry


def main(host: str, port: int, processes: int | None = None) -> int:
    startup.port(port, host=host)
    settings = Settings.from_env()
    seed = tenant_from_env("ingress", settings.prefix)
    if seed is None:
        return 2
    processes, metrics_port = startup.ingress_processes(os.environ, processes, settings.web_host)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if processes == 1:
        _one(settings, seed, host, port, metrics_port, reuse_port=False)
        return 0
    return prefork(processes, lambda i: _one(settings, seed, host, port, metrics_port + i if metrics_port else 0, True),
                   "anpi ingress")


def _one(settings: Settings, seed, host: str, port: int, metrics_port: int, reuse_port: bool) -> None:
    metrics = ingress.Metrics()
    if metrics_port:
        start_http_server(metrics_port, settings.web_host, registry=metrics.registry)
    asyncio.run(_serve(settings, seed, host, port, metrics, reuse_port))


async def _serve(settings: Settings, seed, host: str, port: int, metrics: ingress.Metrics,
                 reuse_port: bool = False) -> None:
    redis = aioredis.from_url(settings.redis)
    tenants = {seed.id: seed}   # read on every webhook: a tenant added, a secret saved, applies at once
    registry = RedisRegistry(redis)
    residents = None   # My Page, once mounted

    async def reload() -> None:
        tenants.update({t: r.tenant for t, r in (await tenant_registry.running(registry, {seed.id: seed})).items()})
        if residents is not None:
            for tenant in tenants.values():
                residents.tenants[tenant.id] = tenant
                residents.keys[tenant.id] = mypage_link.key_for(tenant.channel_secret)
    following = asyncio.create_task(tenant_registry.follow(registry, reload), name="tenants")
    async with ingress.KafkaSink(settings) as sink:
        app = ingress.create_app(tenants, sink, ingress.RedisDedupe(redis), metrics=metrics,
                                 staff_links=RedisStaff(redis).link_line,
                                 resident_codes=RedisProfiles(redis).claim)
        if os.environ.get("ANPI_CLOCK_URL"):
            from streams.shared_clock import SharedClock
            now_ms = SharedClock(os.environ["ANPI_CLOCK_URL"]).now_ms
        else:
            now_ms = lambda: int(time.time() * 1000)  # noqa: E731
        residents = mypage.mount(app, RedisMembers(redis, sink, settings.prefix), RedisSessions(redis), registry,
                                 tenants, now_ms, line_api=os.environ.get("ANPI_LINE_API") or None,
                                 liff_channel_id=os.environ.get("ANPI_LIFF_CHANNEL_ID") or None,
                                 liff_id=os.environ.get("ANPI_LIFF_ID") or None, profiles=RedisProfiles(redis))
        await reload()
        await serve_until_stopped(app, host, port, reuse_port,
                                  f"anpi ingress: LINE webhook URLs http://{host}:{port}/webhook/<tenant> (tenant "
                                  f"{seed.id} and those added with `anpi tenant add --redis`), onto {settings.inbound}")
        following.cancel()
    await redis.aclose()
