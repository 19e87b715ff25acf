"""The Kafka runtime's edges for the end-to-end tests: the ingress served in the test's own process
(its KafkaSink onto the shared inbound topic), and `anpi sender` as a process of its own judging
reply tokens by linesim's clock (ANPI_CLOCK_URL: a test's linesim runs on a virtual clock, and a
token issued "at" a fixed date must not look fresh or stale depending on the day the test runs)."""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from schemas.tenant import Tenant
from streams.line import ingress
from streams.kafka.settings import Settings

@dataclass
class Ingress:
    hook: str                 # http://127.0.0.1:<port>/webhook (a tenant's is hook + "/" + its id)
    sink: ingress.KafkaSink


@asynccontextmanager
async def ingress_in_process(settings: Settings, tenants: dict[str, Tenant], staff_links=None):
    """`tenants` is read on every webhook: a test adds a tenant there as `anpi ingress` would.
    `staff_links`: the staff accounts' link_line, as `anpi ingress` checks staff link codes."""
    sink = ingress.KafkaSink(settings)
    await sink.start()
    runner = web.AppRunner(ingress.create_app(tenants, sink, ingress.MemoryDedupe(), staff_links=staff_links))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Ingress(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/webhook", sink)
    finally:
        await runner.cleanup()
        await sink.stop()


def start_sender(settings: Settings, tenant: Tenant, line_api: str, **env: str) -> subprocess.Popen:
    """`anpi sender` for `settings`, the environment's tenant `tenant`, LINE at `line_api`."""
    return start(["sender"], settings, tenant, line_api, **env)


def start(command: list[str], settings: Settings, tenant: Tenant, line_api: str, **env: str) -> subprocess.Popen:
    """`anpi <command>` for `settings`, the environment's tenant `tenant`, LINE at `line_api` (and its clock)."""
    env = {**os.environ, **settings.env(), "ANPI_TENANT": tenant.id, "ANPI_CHANNEL_SECRET": tenant.channel_secret,
           "ANPI_CHANNEL_ACCESS_TOKEN": tenant.channel_access_token, "ANPI_LINE_API": line_api,
           "ANPI_CLOCK_URL": f"{line_api}/linesim/clock", **env}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", *command], env=env, start_new_session=True)


def kill(process: subprocess.Popen | None) -> None:
    """SIGKILL: a crash is what every process must survive anyway."""
    if process is not None:
        process.kill()
        process.wait(timeout=30)
