"""`anpi ingress`: the webhook endpoint of the Kafka runtime, for one tenant (= topic prefix).

Events go to the tenant's inbound topic (acks=all) before LINE gets its 200; webhookEventIds are
de-duplicated in Redis, shared by every ingress process. Settings: ANPI_KAFKA, ANPI_REDIS,
ANPI_PARTITIONS, and the channel from the environment (streams/tenants/from_env.py), with what is
saved in the tenant registry in Redis laid over it (the admin screen's 設定, followed without a
restart); the tenant id defaults to ANPI_TOPIC_PREFIX. /metrics (anpi_ingress_*) on ANPI_INGRESS_METRICS_PORT (off unless
set), never on the webhook's port, which faces the internet.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import start_http_server

from streams import ingress, startup
from streams.kafka.settings import Settings
from streams.runtime import until_stopped
from streams.tenants import registry as tenant_registry
from streams.tenants.from_env import tenant_from_env
from streams.tenants.in_redis import RedisRegistry


def main(host: str, port: int) -> int:
    startup.port(port, host=host)
    settings = Settings.from_env()
    tenant = tenant_from_env("ingress", settings.prefix)
    if tenant is None:
        return 2
    metrics_port = startup.metrics_port(os.environ, "ANPI_INGRESS_METRICS_PORT", settings.web_host)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = ingress.Metrics()
    if metrics_port:
        start_http_server(metrics_port, settings.web_host, registry=metrics.registry)
    asyncio.run(_serve(replace(settings, prefix=tenant.id), tenant, host, port, metrics))
    return 0


async def _serve(settings: Settings, tenant, host: str, port: int, metrics: ingress.Metrics) -> None:
    redis = aioredis.from_url(settings.redis)
    tenants = {tenant.id: tenant}   # read on every webhook: a channel secret saved on 設定 applies at once
    registry = RedisRegistry(redis)

    async def reload() -> None:
        running = await tenant_registry.running_one(registry, tenant.id, tenant)
        if running is not None:
            tenants[tenant.id] = running.tenant
    following = asyncio.create_task(tenant_registry.follow(registry, reload), name="tenants")
    async with ingress.KafkaSink(settings) as sink:
        runner = web.AppRunner(ingress.create_app(tenants, sink, ingress.RedisDedupe(redis),
                                                  metrics=metrics), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        print(f"anpi ingress: tenant {tenant.id}: LINE webhook URL http://{host}:{port}/webhook/{tenant.id}",
              flush=True)
        await until_stopped()
        following.cancel()
        await runner.cleanup()
    await redis.aclose()
