"""The registry of tenants: one interface, an embedded (SQLite) and a Kafka (Redis) backend.

A tenant is added once (`anpi tenant add`: its id, name, zone and channel credentials) and changed
from the admin screen's 設定 page; every process reads it through a `Registry`. Each change moves
the registry's `version`, which running processes poll (`Watch`): a new tenant starts and changed
settings apply without a restart. A backend stores whole records; what may be stored is decided
once, in settings.merged and look.merged.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from agents.messages import Texts
from schemas.tenant import Tenant
from streams import startup
from streams.tenants import look as looks
from streams.tenants import settings as ts

log = logging.getLogger("anpi.tenants")
DEFAULT_ZONE = "Asia/Tokyo"
WATCH_SECONDS = 1.0   # how often a running process polls the registry's version


@dataclass(frozen=True, slots=True)
class Entry:
    id: str            # URL-safe: /webhook/<id>, /admin/<id>, part of every key
    name: str          # 我孫子市: what staff and the provider call it
    created_at: int    # epoch ms


class AuditRow(NamedTuple):
    """The audit row a change is committed with (never the values of credentials)."""
    at: int
    login: str
    action: str
    detail: str | None = None
    target: str | None = None


class Exists(ValueError):
    """`add` of an id the registry has already."""


class Registry(Protocol):
    async def entries(self) -> list[Entry]: ...
    async def entry(self, tenant: str) -> Entry | None: ...
    async def add(self, entry: Entry, settings: ts.TenantSettings | None) -> None:
        """A new tenant with its first settings (None: none stored yet; settings stored before, by a
        file or Redis of an older version, are kept); `Exists` if the id is taken (nothing changes)."""
    async def settings(self, tenant: str) -> ts.TenantSettings | None: ...
    async def look(self, tenant: str) -> looks.Look | None: ...
    async def save(self, tenant: str, audit: AuditRow | None, *, settings: ts.TenantSettings | None = None,
                   look: looks.Look | None = None) -> None:
        """Store the records given and the audit row together (one transaction), and move the version."""
    async def version(self) -> int: ...


def new_entry(tenant_id: str, name: str | None, at: int) -> Entry:
    """`startup.BadSetting` for an id that cannot be a URL segment / key part."""
    tenant_id = startup.tenant_id(tenant_id, "ID")
    return Entry(tenant_id, (name or "").strip() or tenant_id, at)


class Running(NamedTuple):
    tenant: Tenant                      # as the process runs it: the channel, the zone
    stored: ts.TenantSettings | None    # for the wording (settings.texts_with)

    def texts(self, base: Texts) -> Texts:
        return ts.texts_with(base, self.stored)


async def running(registry: Registry, seeds: Mapping[str, Tenant] = {}) -> dict[str, Running]:
    """Every tenant that can run, by id: the registered ones and the seeds (the environment's), with
    what is stored laid over the seed. A registered tenant without a channel secret and token (in
    the store or the environment) cannot run yet: it is left out, and logged (its id only)."""
    ids = [e.id for e in await registry.entries()]
    ids += [i for i in seeds if i not in ids]
    out = {tenant_id: await running_one(registry, tenant_id, seeds.get(tenant_id)) for tenant_id in ids}
    return {tenant_id: r for tenant_id, r in out.items() if r is not None}


async def running_one(registry: Registry, tenant_id: str, seed: Tenant | None = None) -> Running | None:
    """One tenant as it runs (`running`'s rule), or None if it has no channel yet."""
    stored = await registry.settings(tenant_id)
    tenant = ts.tenant_with(seed or Tenant(tenant_id, "", "", DEFAULT_ZONE), stored)
    if not tenant.channel_secret or not tenant.channel_access_token:
        log.warning("tenant %s: no LINE channel secret and access token yet; not served", tenant_id)
        return None
    return Running(tenant, stored)


async def seed(registry: Registry, tenant: Tenant, at: int) -> None:
    """List the environment's tenant in the registry (its credentials stay in the environment)."""
    if await registry.entry(tenant.id) is None:
        try:
            await registry.add(Entry(tenant.id, tenant.id, at), None)
        except Exists:
            pass  # another process listed it meanwhile


class Watch:
    """What a running process polls: `changed()` is True once per move of the registry's version,
    and at least every `full_seconds` (a move missed while Redis was away is not missed for long)."""

    def __init__(self, registry: Registry, full_seconds: float = 60.0, clock=time.monotonic):
        self.registry, self.full_seconds, self.clock = registry, full_seconds, clock
        self.seen, self.loaded_at = None, 0.0

    async def changed(self) -> bool:
        version = await self.registry.version()
        if version == self.seen and self.clock() - self.loaded_at < self.full_seconds:
            return False
        self.seen, self.loaded_at = version, self.clock()
        return True


async def follow(registry: Registry, on_change: Callable[[], Awaitable[None]], every: float = WATCH_SECONDS) -> None:
    """Forever: `await on_change()` at once and after each change of the registry (a Kafka process's
    ingress, sender or admin screen: what staff saved applies within `every` seconds)."""
    watch = Watch(registry)
    while True:
        try:
            if await watch.changed():
                await on_change()
        except Exception as e:  # Redis away, a bad record: the tenants as they were keep running
            log.warning("the tenant registry could not be read (%s); trying again", type(e).__name__)
            watch.seen = None
        await asyncio.sleep(every)
