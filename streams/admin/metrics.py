"""What the admin screen knows that an SRE needs on Prometheus: the cases open right now, per tenant
and kind (staff calls waiting for a worker, family notices not yet acknowledged), how long the
oldest of them has waited, and each tenant's limit for a staff call (設定; alert StaffCallTooOld).

Read from the read side (streams/admin/backends.ReadSide, either runtime's) when Prometheus
scrapes, so a series is as fresh as the call queue staff see. Tenants are the ones the deployment
serves, kinds are fixed: the label cardinality is bounded.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from agents import readside as rs
from schemas import effects as fx
from streams.tenants import settings as tenant_settings


class OpenCases:
    def __init__(self, readside, tenants: Iterable[str], registry: CollectorRegistry | None = None, *,
                 settings=None, now_ms: Callable[[], int] | None = None):
        """`settings`: the tenants' registry (streams/tenants), for their limits; `now_ms`: the clock
        the ages are measured on (the runtime's own)."""
        self.readside, self.tenants = readside, tenants   # read at each refresh: a live mapping may grow
        self.settings, self.now_ms = settings, now_ms or (lambda: int(time.time() * 1000))
        self.registry = registry or CollectorRegistry()
        self.gauge = Gauge("anpi_open_cases", "Cases open now, by tenant and kind (staff_call: waiting for "
                           "staff; contacts_notified: the family not yet answered)", ["tenant", "kind"],
                           registry=self.registry)
        self.oldest = Gauge("anpi_oldest_open_case_age_seconds", "How long the oldest open case has been "
                            "open, by tenant and kind (0: none open)", ["tenant", "kind"], registry=self.registry)
        self.limit = Gauge("anpi_staff_call_limit_seconds", "The tenant's limit for an open staff call (設定): "
                           "older ones fire StaffCallTooOld", ["tenant"], registry=self.registry)
        self.rollcall = Gauge("anpi_rollcall_members", "Members of the tenant's latest roll-call (drill: 1 for "
                              "the latest drill, kept apart) by status: asked, safe, need_help, listed (no answer "
                              "after the resend), waiting", ["tenant", "drill", "status"], registry=self.registry)
        self.rollcall_started = Gauge("anpi_rollcall_started_timestamp_seconds", "When the tenant's latest "
                                      "roll-call (or drill) went out", ["tenant", "drill"], registry=self.registry)

    async def refresh(self) -> None:
        now = self.now_ms()
        for tenant in list(self.tenants):
            for kind in fx.ESCALATIONS:
                self.gauge.labels(tenant, kind).set(await self.readside.open_count(tenant, kind))
                since = await self.readside.oldest_open(tenant, kind)
                self.oldest.labels(tenant, kind).set(max(0, now - since) / 1000 if since is not None else 0)
            stored = await self.settings.settings(tenant) if self.settings is not None else None
            self.limit.labels(tenant).set(tenant_settings.staff_call_limit_ms(stored) / 1000)
            await self._rollcalls(tenant)

    async def _rollcalls(self, tenant: str) -> None:
        latest = {}
        for roll in await self.readside.rollcalls(tenant, 50):  # newest first
            latest.setdefault(str(int(bool(roll["drill"]))), roll)
        for drill, roll in latest.items():
            counts = (await self.readside.rollcall_tally(tenant, roll["rollcall"]))["*"]
            for status in (*rs.STATUSES, "asked"):
                self.rollcall.labels(tenant, drill, status).set(counts[status])
            self.rollcall_started.labels(tenant, drill).set((roll["at"] or 0) / 1000)


def metrics_app(open_cases: OpenCases) -> web.Application:
    """/metrics alone, for a port of its own (the admin screen's port faces staff's browsers)."""
    async def metrics(request: web.Request) -> web.Response:
        await open_cases.refresh()
        return web.Response(body=generate_latest(open_cases.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
