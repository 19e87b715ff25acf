"""`anpi ingress --db FILE`: the LINE webhook of the embedded runtime in processes of its own, beside
`anpi serve --db FILE`, for more webhooks per second than `anpi serve`'s one process takes.

Each server writes what a webhook holds (its events, audit records, reply tokens, its
webhookEventId claim) into the file's inbox in one commit before LINE gets its 200, exactly as
`anpi serve`'s own /webhook/<id> does; `anpi serve` applies the inbox, whoever wrote it. SQLite takes
one writer at a time: the servers' commits (each a group of the webhooks of one turn of its loop,
~50 µs) and the engine's steps take turns on the file's lock, waiting for it up to 5 s. An inbox
row's number is given under that lock, so rows are numbered in the order they were committed and
the engine's cursor passes none.

Tenants: the file's registry (`anpi tenant add --db`, and those `anpi serve` listed), followed
within a second, with the environment's tenant (ANPI_TENANT and the channel's secrets) laid under
it when set. `--processes N` (or ANPI_INGRESS_PROCESSES): N servers on the one port (SO_REUSEPORT),
/metrics of server i on ANPI_INGRESS_METRICS_PORT + i (off unless set). LINE's webhook URL is
http(s)://<this host>:<port>/webhook/<tenant>; My Page and the admin screen stay on `anpi serve`.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys

from prometheus_client import start_http_server

from streams import startup
from streams.admin import accounts
from streams.admin.backends import SqliteStaff
from streams.embedded.runtime import StoreDedupe, StoreSink
from streams.residents.in_sqlite import SqliteProfiles
from streams.embedded.store import Store
from streams.line import ingress
from streams.process import prefork, serve_until_stopped
from streams.tenants import registry as tenant_registry
from streams.tenants.from_env import tenant_from_env
from streams.tenants.in_sqlite import SqliteRegistry

log = logging.getLogger("anpi.ingress")


def main(db: str, host: str, port: int, processes: int | None = None) -> int:
    startup.port(port, host=host)
    startup.sqlite_file(db)
    if not os.path.exists(db):
        print(f"anpi ingress: {db} does not exist: start `anpi serve --db {db}` first (it makes the file "
              "and applies what the ingress writes)", file=sys.stderr)
        return 2
    web_host = os.environ.get("ANPI_WEB_HOST", "127.0.0.1")
    processes, metrics_port = startup.ingress_processes(os.environ, processes, web_host)
    seeds = {}
    if os.environ.get("ANPI_CHANNEL_SECRET") or os.environ.get("ANPI_CHANNEL_ACCESS_TOKEN"):
        seed = tenant_from_env("ingress", "demo")
        if seed is None:
            return 2
        seeds[seed.id] = seed
    store = Store(db)   # the file's tables as this version has them, before any server opens it
    accounts.install(store.db)
    found = asyncio.run(tenant_registry.running(SqliteRegistry(store), seeds))
    store.close()
    if not found:
        print(f"anpi ingress: no tenant with a LINE channel in {db} (add one with `anpi tenant add --db {db}`, "
              "or set ANPI_CHANNEL_SECRET and ANPI_CHANNEL_ACCESS_TOKEN)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if processes == 1:
        _one(db, seeds, host, port, metrics_port, web_host, reuse_port=False)
        return 0
    return prefork(processes, lambda i: _one(db, seeds, host, port, metrics_port + i if metrics_port else 0,
                                             web_host, True), "anpi ingress")


def _one(db: str, seeds: dict, host: str, port: int, metrics_port: int, web_host: str, reuse_port: bool) -> None:
    metrics = ingress.Metrics()
    if metrics_port:
        start_http_server(metrics_port, web_host, registry=metrics.registry)
    asyncio.run(_serve(db, seeds, host, port, metrics, reuse_port))


async def _serve(db: str, seeds: dict, host: str, port: int, metrics: ingress.Metrics, reuse_port: bool) -> None:
    store = Store(db)   # this process's own connection to the file
    registry = SqliteRegistry(store)
    tenants: dict = {}  # read on every webhook: a tenant added, a secret saved, applies at once

    async def reload() -> None:
        tenants.update({t: r.tenant for t, r in (await tenant_registry.running(registry, seeds)).items()})
    await reload()
    following = asyncio.create_task(tenant_registry.follow(registry, reload), name="tenants")
    app = ingress.create_app(tenants, StoreSink(store), StoreDedupe(store), metrics=metrics,
                             staff_links=SqliteStaff(store).link_line, resident_codes=SqliteProfiles(store).claim)
    await serve_until_stopped(app, host, port, reuse_port,
                              f"anpi ingress: LINE webhook URLs http://{host}:{port}/webhook/<tenant> "
                              f"({', '.join(sorted(tenants))} and those added with `anpi tenant add --db {db}`), "
                              f"into {db}")
    following.cancel()
    store.close()
