"""`anpi serve`: every tenant of one SQLite file — webhooks, engines and senders — in this process, on
wall-clock time.

Tenants are data (streams/tenants): those added with `anpi tenant add --db <the same file>`, served
from the next second on without a restart, and the one of the environment, as before: ANPI_TENANT
(tenant id, default "demo"), ANPI_CHANNEL_SECRET and ANPI_CHANNEL_ACCESS_TOKEN (the LINE channel's),
ANPI_TIMEZONE (Asia/Tokyo). ANPI_LINE_API (default https://api.line.me). Settings saved on the admin
screen's 設定 page override the environment's; with credentials saved there the environment's may be
left out. The SQLite file then holds the channels' secrets: protect it like a secrets file (chmod
600, careful backups).

Each tenant's webhook is /webhook/<id>, its admin screen /admin/<id> (create its first account with
`anpi admin create-user --db <the same file> --tenant <id> --login <name>`), its My Page
/mypage/<id>: residents reach it from LINE by a signed link to ANPI_PUBLIC_URL (default: this
server's address), or by LIFF with ANPI_LIFF_CHANNEL_ID / ANPI_LIFF_ID.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import time
from dataclasses import replace

from aiohttp import web

from agents import mypage_link
from schemas.tenant import Tenant
from streams import mypage, startup
from streams.simulation import scenario as scenario_module
from streams.admin.app import create_app as admin_app
from streams.admin import accounts
from streams.admin.backends import SqliteReadSide, SqliteStaff
from streams.admin.metrics import OpenCases
from streams.embedded.runtime import Runtime, Town
from streams.embedded.store import Store
from streams.notices.delivery import NoticeDelivery
from streams.notices.in_sqlite import SqliteNotices
from streams.process import until_stopped
from streams.tenants import registry as tenant_registry
from streams.tenants import settings as tenant_settings
from streams.tenants.from_env import tenant_from_env
from streams.tenants.in_sqlite import SqliteRegistry

log = logging.getLogger("anpi.serve")


def main(db: str, host: str, port: int, roster: str | None) -> int:
    startup.sqlite_file(db)
    startup.port(port, host=host)
    has_env = bool(os.environ.get("ANPI_CHANNEL_SECRET") and os.environ.get("ANPI_CHANNEL_ACCESS_TOKEN"))
    seeds = [tenant_from_env("serve", "demo")] if has_env else []
    if has_env and seeds[0] is None:
        return 2
    if not has_env and not _stored_tenants(db):
        print("anpi serve: no tenant to serve: set ANPI_CHANNEL_SECRET and ANPI_CHANNEL_ACCESS_TOKEN (the LINE "
              f"channel's), or add one with `anpi tenant add ID --db {db}`", file=sys.stderr)
        return 2
    registrations = []
    if roster:
        try:
            registrations = scenario_module.load(roster).registrations
        except (OSError, scenario_module.ScenarioError) as e:
            print(f"anpi serve: {roster}: {e}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
    roster_tenant = seeds[0].id if seeds else startup.tenant_id(os.environ.get("ANPI_TENANT", "demo"))
    asyncio.run(_serve(Store(db), seeds, host, port, roster_tenant, registrations))
    return 0


def _stored_tenants(db: str) -> bool:
    """Whether the file already has a tenant that can run (its credentials saved there)."""
    if not os.path.exists(db):
        return False
    store = Store(db)
    try:
        return bool(asyncio.run(tenant_registry.running(SqliteRegistry(store))))
    finally:
        store.close()


async def _serve(store: Store, seeds: list[Tenant], host: str, port: int, roster_tenant: str,
                 registrations) -> None:
    now_ms = lambda: int(time.time() * 1000)  # noqa: E731 — the only clock read: ticks carry it
    at = now_ms()
    for event in registrations:  # a roster import; a member already registered is left as is
        store.accept(roster_tenant, None, [(event.settings.id, replace(event, at=at))])
    runtime = ServedRuntime(store, seeds, os.environ.get("ANPI_LINE_API", "https://api.line.me"), now_ms)
    url = await runtime.start(host, port)
    for tenant_id in runtime.towns:
        print(f"anpi serve: tenant {tenant_id}: LINE webhook URL {url}/webhook/{tenant_id}; "
              f"admin screen {url}/admin/{tenant_id}/login", flush=True)
    print(f"anpi serve: data {store.path}; tenants added with `anpi tenant add --db {store.path}` are served "
          "without a restart", flush=True)
    await until_stopped()
    await runtime.close()
    store.close()


class ServedRuntime(Runtime):
    """The embedded runtime with the admin screen under /admin and My Page under /mypage on the same
    server, each tenant's notice delivery (streams/notices/delivery.py) through its Sender, and the
    tenant registry (streams/tenants) watched.

    The admin screen's "now" is the runtime's clock (virtual in the demo), so what staff commit
    lands at the engine's time.

    Tenants as they run (`reload`): the registry's, and the seeds (the environment's) with what is
    stored laid over them. At start, when the registry's version moves (`anpi tenant add` from
    another process: within a second) and right after staff save the 設定 page: a new tenant gets
    its engine, sender and notice delivery; for every tenant the ingress verifies signatures with the
    stored channel secret and signs up new friends in the stored zone, the sender sends with the
    stored access token and wording, and My Page links are keyed by the stored secret — from the next
    request on, without a restart.
    """

    def __init__(self, store: Store, seeds, line_api: str, now_ms, **kwargs):
        self.seeds = {t.id: t for t in seeds}     # as started (the environment): what stored parts fall back to
        super().__init__(store, [], line_api, now_ms, **kwargs)
        self.registry = SqliteRegistry(store)
        accounts.install(store.db)
        self.staff = SqliteStaff(store)           # staff alerts on LINE: who links, who is on duty
        self.staff_links = self.staff.link_line
        self.zones: dict[str, str] = {}           # the admin screen's: tenant id -> zone
        self.base_texts: dict[str, object] = {}   # per tenant: its sender's wording as built (before settings)
        self.public_url = ""
        self.mypage = None
        self.notices: dict[str, NoticeDelivery] = {}
        open_cases = OpenCases(SqliteReadSide(self.store), self.tenants,  # the call queue, on /metrics
                               settings=self.registry, now_ms=now_ms)
        self.registries.append(open_cases.registry)
        self.refreshers.append(open_cases.refresh)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        for tenant in self.seeds.values():        # listed, so that `anpi tenant list` shows them
            await tenant_registry.seed(self.registry, tenant, self.now_ms())
        await self.reload()                       # what staff stored before this start
        url = await super().start(host, port)
        # the My Page button in LINE links here: the public address if one is set (behind a proxy)
        self.public_url = os.environ.get("ANPI_PUBLIC_URL") or url
        await self.reload()                       # now with the link to My Page, and notice deliveries
        self._tasks.append(asyncio.create_task(tenant_registry.follow(self.registry, self.reload), name="tenants"))
        return url

    async def settings_changed(self, tenant_id: str) -> None:
        """The admin screen saved a tenant's settings: apply them now."""
        await self.reload()

    async def reload(self) -> None:
        """Serve every tenant of the registry (and the seeds) as stored now."""
        for tenant_id, running in (await tenant_registry.running(self.registry, self.seeds)).items():
            town = self.towns.get(tenant_id)
            if town is None:
                town = self.add(running.tenant)
                self.base_texts[tenant_id] = town.sender.texts
                log.info("tenant %s: served from now on", tenant_id)
            self._apply(town, running)

    def _apply(self, town: Town, running: tenant_registry.Running) -> None:
        tenant = running.tenant
        if tenant.channel_secret != town.tenant.channel_secret:
            log.info("tenant %s: a new LINE channel secret is in use", tenant.id)  # never the value
        town.tenant = tenant
        self.tenants[tenant.id] = tenant          # the ingress reads this mapping on every webhook
        self.zones[tenant.id] = tenant.timezone
        texts = running.texts(self.base_texts[tenant.id])
        if self.public_url:
            texts = replace(texts, mypage=mypage_link.linker(self.public_url, tenant.id, tenant.channel_secret),
                            calls_url=f"{self.public_url}/admin/{tenant.id}/calls")
        town.sender.use(tenant, texts)
        town.engine.retention_ms = tenant_settings.retention_ms(running.stored)
        town.sender.on_call_source = functools.partial(self.staff.on_call, tenant.id)
        if self.mypage is not None:
            self.mypage.tenants[tenant.id] = tenant
            self.mypage.keys[tenant.id] = mypage_link.key_for(tenant.channel_secret)
        if self.public_url and tenant.id not in self.notices:   # started: deliver its notices
            delivery = self.notices[tenant.id] = NoticeDelivery(SqliteNotices(self.store), tenant.id, town.sender,
                                                                        self.now_ms)
            self._tasks.append(asyncio.create_task(delivery.run(), name=f"notices {tenant.id}"))

    def web_app(self) -> web.Application:
        app = super().web_app()
        app.add_subapp("/admin", admin_app(self.store, self.zones, self.now_ms, on_settings=self.settings_changed))
        self.mypage = mypage.add_routes(app, self.store, self.tenants, self.now_ms, line_api=self.line_api,
                                        liff_channel_id=os.environ.get("ANPI_LIFF_CHANNEL_ID") or None,
                                        liff_id=os.environ.get("ANPI_LIFF_ID") or None)
        return app
