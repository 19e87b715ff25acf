"""What the admin screen knows that an SRE needs on Prometheus: the cases open right now, per tenant
and kind (staff calls waiting for a worker, family notices not yet acknowledged).

Read from the read side (streams/admin/backends.ReadSide, either runtime's) when Prometheus
scrapes, so a series is as fresh as the call queue staff see. Tenants are the ones the deployment
serves, kinds are fixed: the label cardinality is bounded.
"""
from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from schemas import effects as fx


class OpenCases:
    def __init__(self, readside, tenants: Iterable[str], registry: CollectorRegistry | None = None):
        self.readside, self.tenants = readside, tenants   # read at each refresh: a live mapping may grow
        self.registry = registry or CollectorRegistry()
        self.gauge = Gauge("anpi_open_cases", "Cases open now, by tenant and kind (staff_call: waiting for "
                           "staff; contacts_notified: the family not yet answered)", ["tenant", "kind"],
                           registry=self.registry)

    async def refresh(self) -> None:
        for tenant in list(self.tenants):
            for kind in fx.ESCALATIONS:
                self.gauge.labels(tenant, kind).set(await self.readside.open_count(tenant, kind))


def metrics_app(open_cases: OpenCases) -> web.Application:
    """/metrics alone, for a port of its own (the admin screen's port faces staff's browsers)."""
    async def metrics(request: web.Request) -> web.Response:
        await open_cases.refresh()
        return web.Response(body=generate_latest(open_cases.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
