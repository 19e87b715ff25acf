"""`anpi serve`: webhook ingress, engines and senders in one process over one SQLite file, for every
tenant the file serves.

    LINE ─webhook─▶ ingress (streams/line/ingress.py) ─commit─▶ inbox ─▶ engine loop ─commit─▶ states,
                                                                        (streams/embedded/engine.py)  effects
    LINE ◀──────── sender (streams/line/sender.py) ◀── effects not yet sent ◀───────────────────────────┘

Every hop is a committed row, so a restart resumes where the last commit left off: the engine from
its cursor, the sender from the effects not marked sent (it rebuilds the same requests with the
same retry keys, and LINE answers 409 to any it had already accepted).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents import routes
from agents.messages import reply_holder
from agents.subject import addressed
from schemas.effects import Effect
from schemas.tenant import Tenant
from streams import codec
from streams.line import ingress
from streams.embedded.engine import Engine, run_engines
from streams.embedded.engine import Metrics as EngineMetrics
from streams.embedded.held import SqliteHeld
from streams.hooks.in_sqlite import SqliteHooks
from streams.residents.in_sqlite import SqliteProfiles
from streams.embedded.store import Store
from streams.line.sender import Metrics as SenderMetrics
from streams.line.sender import Sender
from streams.line.webhook_events import Routed

log = logging.getLogger("anpi.serve")
RELEASE_EVERY = 1.0   # seconds between looks for held notices whose morning has come


class StoreSink:
    """Ingress's sink: one webhook body's events, audit records and reply tokens in one commit."""

    def __init__(self, store: Store):
        self.store = store

    async def put(self, tenant_id: str, routed: Routed) -> None:
        events = [(subject, event, routed.reply_for(event)) for event in routed.events for subject in addressed(event)]
        await self.store.accept_grouped(tenant_id, events, routed.audit)  # committed when it returns


class StoreDedupe:
    """Ingress's de-duplication by webhookEventId, in the same file: it survives restarts."""

    def __init__(self, store: Store):
        self.store = store

    async def first(self, tenant_id: str, webhook_event_id: str) -> bool:
        return await self.store.claim_webhook(tenant_id, webhook_event_id)

    async def forget(self, tenant_id: str, webhook_event_id: str) -> None:
        self.store.forget_webhook(tenant_id, webhook_event_id)


class Town:
    """One tenant in the running process: its engine (a cursor of its own over the shared file) and
    its sender (its own channel: token, limits, wording), with the sender's loop."""

    def __init__(self, tenant: Tenant, engine: Engine, sender: Sender):
        self.tenant, self.engine, self.sender = tenant, engine, sender
        self.task: asyncio.Task | None = None


class Runtime:
    """Every tenant of the store's file in one process: one engine loop steps each tenant's engine in
    turn; each tenant's sender has a loop of its own (a slow or failing channel delays no other).
    `add(tenant)` starts one more at run time (no restart): its engine loads what the file holds."""

    def __init__(self, store: Store, tenants: Iterable[Tenant], line_api: str, now_ms: Callable[[], int], *,
                 grace_ms: int = 5_000, step_seconds: float = 0.5,
                 sender_for: Callable[[Tenant, SenderMetrics], Sender] | None = None):
        """`sender_for(tenant, metrics)`: each tenant's Sender (default: LINE at `line_api`), reporting
        to the runtime's one set of sender series."""
        self.store, self.now_ms, self.grace_ms, self.line_api = store, now_ms, grace_ms, line_api
        # what the ingress reads per request: replace a Tenant here and the next webhook uses it
        self.tenants: dict[str, Tenant] = {}
        self.step_seconds = step_seconds
        self.engine_metrics, self.sender_metrics = EngineMetrics(), SenderMetrics()
        self._sender_for = sender_for or (lambda t, metrics: Sender(t, line_api, metrics=metrics))
        self.ingress_metrics = ingress.Metrics()
        self.registries = [self.engine_metrics.registry, self.sender_metrics.registry,
                           self.ingress_metrics.registry]  # /metrics
        self.refreshers: list[Callable[[], Awaitable[None]]] = []  # series read when /metrics is asked
        self.listeners: list[Callable[[list[Effect]], None]] = []
        self.towns: dict[str, Town] = {}
        self.staff_links = None   # the ingress's check of staff link codes (`anpi serve`: the staff accounts)
        self.resident_codes = SqliteProfiles(store).claim   # the imported roster's registration codes
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        for tenant in tenants:
            self.add(tenant)

    def add(self, tenant: Tenant) -> Town:
        """Serve one more tenant (its sender's loop starts now if the runtime has started)."""
        sender = self._sender_for(tenant, self.sender_metrics)
        sender.claim_replies = self._claims(tenant.id)
        sender.held = SqliteHeld(self.store, tenant.id)   # notices kept for the morning (quiet nights)
        sender.hooks = SqliteHooks(self.store, tenant.id)  # the tenant's outgoing webhook, if it has one
        town = self.towns[tenant.id] = Town(tenant, Engine(self.store, tenant.id, self.engine_metrics), sender)
        self.tenants[tenant.id] = tenant
        if self._tasks:
            town.task = asyncio.create_task(self._sender_loop(town), name=f"sender {tenant.id}")
        return town

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the webhook endpoint and start the engine and sender loops; the ingress URL."""
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # port 0: the OS chose one
        self.url = f"http://{host}:{bound}"
        self._tasks = [asyncio.create_task(self._engine_loop(), name="engine")]
        for town in self.towns.values():
            town.task = asyncio.create_task(self._sender_loop(town), name=f"sender {town.tenant.id}")
        return self.url

    def web_app(self) -> web.Application:
        """What the server serves: the webhook, /healthz and /metrics (subclasses mount more, e.g. the
        admin screen)."""
        app = ingress.create_app(self.tenants, StoreSink(self.store), StoreDedupe(self.store), self.health,
                                 self.ingress_metrics, self.staff_links, self.resident_codes)
        app.router.add_get("/metrics", self._metrics)
        return app

    def health(self) -> tuple[bool, str]:
        """Healthy while the engine loop runs and commits every tenant's steps (each every half second)."""
        if not self._tasks or self._tasks[0].done():
            return False, "the engine loop is not running"
        for town in self.towns.values():
            healthy, why = town.engine.health()
            if not healthy:
                return False, f"tenant {town.tenant.id}: {why}"
        return True, "ok"

    async def _metrics(self, request: web.Request) -> web.Response:
        for refresh in self.refreshers:
            await refresh()
        body = b"".join(generate_latest(registry) for registry in self.registries)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop_engine(self) -> None:
        """No more steps (the senders keep draining what was decided)."""
        self._stop.set()
        await self._tasks[0]

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every effect for the senders has been handed to them (and LINE)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(self.store.unsent(tenant, routes.OUTBOX) for tenant in self.towns):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the sender did not finish in time")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._stop.set()
        tasks = self._tasks + [t.task for t in self.towns.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        for town in self.towns.values():
            await town.sender.close()

    async def _engine_loop(self) -> None:
        def tell(effects: list[Effect]) -> None:
            for listener in self.listeners:
                try:
                    listener(effects)
                except Exception:  # a listener (the demo's report) must not stop the engine
                    log.exception("a listener failed")
        await run_engines(self.towns, self.now_ms, self.grace_ms, self.step_seconds, self._stop, tell)

    async def _sender_loop(self, town: Town) -> None:
        released = float("-inf")
        while True:
            try:
                if time.monotonic() - released >= RELEASE_EVERY:   # the morning's held notices, the webhook's
                    released = time.monotonic()
                    await town.sender.release_held()
                    await town.sender.post_hooks()
                sent = await self._send_one_step(town)
            except Exception:  # LINE unreachable, the store, a bug: keep the rows, try again (same retry keys)
                log.exception("tenant %s: delivery failed; retrying", town.tenant.id)
                sent = False
                await asyncio.sleep(1.0)
            if not sent:
                await asyncio.sleep(self.step_seconds / 2)

    def _claims(self, tenant: str):
        """Sender.claim_replies over the store: each answer replied at most once, across restarts."""
        async def claim(effect_ids: list[str], holder: str) -> set[str]:
            return self.store.claim_replies(tenant, effect_ids)
        return claim

    async def _send_one_step(self, town: Town) -> bool:
        """Deliver the earliest step's unsent messages; False when there was nothing to send."""
        tenant = town.tenant.id
        rows = self.store.unsent(tenant, routes.OUTBOX)  # unfollow / follow too, as on Kafka
        if not rows:
            return False
        # an answer to someone's own tap goes by the free reply API while their token is fresh
        tokens = self.store.reply_tokens(tenant, (e.id for _, e in rows if reply_holder(e) is not None))
        outbox = []
        for _, effect in rows:
            obj = codec.effect_to_obj(effect)
            if effect.id in tokens:
                obj["reply_token"], obj["reply_token_at"] = tokens[effect.id]
            outbox.append(obj)
        report = await town.sender.deliver(outbox)  # LINE unreachable: raises, and the loop tries again
        for failure in report.failed:
            log.warning("tenant %s: %s gave up (%s %s)", tenant, failure.endpoint, failure.status, failure.reason)
        self.store.mark_sent(seq for seq, _ in rows)
        return True
