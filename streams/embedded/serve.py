"""`anpi serve`: one tenant's webhook, engine and sender in this process, on wall-clock time.

Configured from the environment, so secrets stay out of argv and shell history:
ANPI_TENANT (tenant id, default "demo"), ANPI_CHANNEL_SECRET and ANPI_CHANNEL_ACCESS_TOKEN (the
LINE channel's), ANPI_LINE_API (default https://api.line.me), ANPI_TIMEZONE (Asia/Tokyo). Settings
saved on the admin screen's 設定 page (streams/embedded/tenant_settings.py) override these; with
credentials saved there the environment's may be left out. The SQLite file then holds the channel's
secrets: protect it like a secrets file (chmod 600, careful backups).

The admin screen (streams/admin) is served by the same server under /admin; create its first
account with `anpi admin create-user --db <the same file> --tenant <id> --login <name>`. My Page
(streams/mypage) is under /mypage/<tenant>: residents reach it from LINE by a signed link to
ANPI_PUBLIC_URL (default: this server's address), or by LIFF with ANPI_LIFF_CHANNEL_ID / ANPI_LIFF_ID.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import replace

from aiohttp import web

from agents import mypage_link
from schemas.tenant import Tenant
from streams import mypage, startup
from streams import scenario as scenario_module
from streams.admin.app import create_app as admin_app
from streams.admin.backends import SqliteReadSide
from streams.admin.metrics import OpenCases
from streams.embedded import tenant_settings
from streams.embedded.notices import NoticeDelivery
from streams.embedded.runtime import Runtime
from streams.embedded.store import Store
from streams.runtime import until_stopped
from streams.tenant_env import tenant_from_env

log = logging.getLogger("anpi.serve")


def main(db: str, host: str, port: int, roster: str | None) -> int:
    startup.sqlite_file(db)
    startup.port(port, host=host)
    tenant = _stored_tenant(db) if not (os.environ.get("ANPI_CHANNEL_SECRET")
                                        and os.environ.get("ANPI_CHANNEL_ACCESS_TOKEN")) else None
    tenant = tenant or tenant_from_env("serve", "demo")
    if tenant is None:
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
    asyncio.run(_serve(Store(db), tenant, host, port, registrations))
    return 0


def _stored_tenant(db: str) -> Tenant | None:
    """Without the channel's secrets in the environment: those saved on the admin screen's settings
    page, if this file has them (the environment still seeds a tenant whose file has none)."""
    if not os.path.exists(db):
        return None
    store = Store(db)
    try:
        tenant_settings.install(store.db)
        tenant_id = os.environ.get("ANPI_TENANT", "demo")
        s = tenant_settings.get(store.db, tenant_id)
        if s is None or not s.channel_secret or not s.channel_access_token:
            return None
        return Tenant(startup.tenant_id(tenant_id), s.channel_secret, s.channel_access_token,
                      startup.zone(s.timezone or os.environ.get("ANPI_TIMEZONE", "Asia/Tokyo")))
    finally:
        store.close()


async def _serve(store: Store, tenant: Tenant, host: str, port: int, registrations) -> None:
    now_ms = lambda: int(time.time() * 1000)  # noqa: E731 — the only clock read: ticks carry it
    at = now_ms()
    for event in registrations:  # a roster import; a member already registered is left as is
        store.accept(tenant.id, None, [(event.settings.id, replace(event, at=at))])
    runtime = ServedRuntime(store, tenant, os.environ.get("ANPI_LINE_API", "https://api.line.me"), now_ms)
    url = await runtime.start(host, port)
    print(f"anpi serve: tenant {tenant.id}: LINE webhook URL {url}/webhook/{tenant.id}; "
          f"admin screen {url}/admin/{tenant.id}/login; data {store.path}", flush=True)
    await until_stopped()
    await runtime.close()
    store.close()


class ServedRuntime(Runtime):
    """The embedded runtime with the admin screen under /admin on the same server, and the delivery
    of the notices staff send from it (streams/embedded/notices.py) through the runtime's Sender.

    The admin screen's "now" is the runtime's clock (virtual in the demo), so what staff commit
    lands at the engine's time.

    Tenant settings (streams/embedded/tenant_settings.py): what is stored is laid over the tenant the
    runtime was started with (the environment) at start, and again each time staff save the
    settings page (the admin app calls `settings_changed` after its commit): the ingress verifies
    signatures with the stored channel secret and signs up new friends in the stored zone, the
    sender sends with the stored access token and the stored wording, and My Page links are keyed
    by the stored secret — all from the next request on, without a restart.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = self.tenant                  # as started (the environment): what a NULL column falls back to
        self.base_texts = self.sender.texts      # the built-in wording (and the caller's names, friend link)
        self.public_url = ""
        self.mypage = None
        tenant_settings.install(self.store.db)
        open_cases = OpenCases(SqliteReadSide(self.store), [self.tenant.id])  # the call queue, on /metrics
        self.registries.append(open_cases.registry)
        self.refreshers.append(open_cases.refresh)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.settings_changed(self.tenant.id)    # what staff stored before this start
        url = await super().start(host, port)
        # the My Page button in LINE links here: the public address if one is set (behind a proxy)
        self.public_url = os.environ.get("ANPI_PUBLIC_URL") or url
        self.settings_changed(self.tenant.id)    # now with the link to My Page
        self.notices = NoticeDelivery(self.store, self.tenant.id, self.sender, self.now_ms)
        # after the engine and the sender: Runtime.stop_engine awaits _tasks[0]; close() cancels them all
        self._tasks.append(asyncio.create_task(self.notices.run(), name="notices"))
        return url

    def settings_changed(self, tenant_id: str) -> None:
        """Reload the tenant's stored settings into the running ingress, sender and My Page."""
        if tenant_id != self.seed.id:
            return
        stored = tenant_settings.get(self.store.db, tenant_id)
        tenant = tenant_settings.tenant_with(self.seed, stored)
        secret_changed = tenant.channel_secret != self.tenant.channel_secret
        self.tenant = tenant
        self.tenants[tenant.id] = tenant         # the ingress reads this mapping on every webhook
        texts = tenant_settings.texts_with(self.base_texts, stored)
        if self.public_url:
            texts = replace(texts, mypage=mypage_link.linker(self.public_url, tenant.id, tenant.channel_secret))
        self.sender.use(tenant, texts)
        if self.mypage is not None:
            self.mypage.tenants[tenant.id] = tenant
            self.mypage.keys[tenant.id] = mypage_link.key_for(tenant.channel_secret)
        if secret_changed:
            log.info("tenant %s: a new LINE channel secret is in use", tenant.id)  # never the value

    def web_app(self) -> web.Application:
        app = super().web_app()
        app.add_subapp("/admin", admin_app(self.store, {self.tenant.id: self.tenant.timezone}, self.now_ms,
                                           on_settings=self.settings_changed))
        self.mypage = mypage.add_routes(app, self.store, self.tenants, self.now_ms, line_api=self.sender.base_url,
                                        liff_channel_id=os.environ.get("ANPI_LIFF_CHANNEL_ID") or None,
                                        liff_id=os.environ.get("ANPI_LIFF_ID") or None)
        return app
