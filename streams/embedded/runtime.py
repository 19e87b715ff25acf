"""`anpi serve`: webhook ingress, engine and sender in one process over one SQLite file.

    LINE ─webhook─▶ ingress (streams/ingress.py) ─commit─▶ inbox ─▶ engine loop ─commit─▶ states,
                                                                   (streams/embedded/engine.py)  effects
    LINE ◀──────── sender (streams/sender.py) ◀── effects not yet sent ◀───────────────────────────┘

Every hop is a committed row, so a restart resumes where the last commit left off: the engine from
its cursor, the sender from the effects not marked sent (it rebuilds the same requests with the
same retry keys, and LINE answers 409 to any it had already accepted).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents import routes
from agents.messages import reply_holder
from agents.subject import addressed
from schemas.effects import Effect
from schemas.tenant import Tenant
from streams import codec, ingress
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.sender import Sender
from streams.webhook_events import Routed

log = logging.getLogger("anpi.serve")


class StoreSink:
    """Ingress's sink: one webhook body's events, audit records and reply tokens in one commit."""

    def __init__(self, store: Store):
        self.store = store

    async def put(self, tenant_id: str, routed: Routed) -> None:
        events = [(subject, event) for event in routed.events for subject in addressed(event)]
        replies = [(member, token, at) for member, (token, at) in routed.reply_tokens.items()]
        await self.store.accept_grouped(tenant_id, events, routed.audit, replies)  # committed when it returns


class StoreDedupe:
    """Ingress's de-duplication by webhookEventId, in the same file: it survives restarts."""

    def __init__(self, store: Store):
        self.store = store

    async def first(self, tenant_id: str, webhook_event_id: str) -> bool:
        return await self.store.claim_webhook(tenant_id, webhook_event_id)

    async def forget(self, tenant_id: str, webhook_event_id: str) -> None:
        self.store.forget_webhook(tenant_id, webhook_event_id)


class Runtime:
    def __init__(self, store: Store, tenant: Tenant, line_api: str, now_ms: Callable[[], int], *,
                 grace_ms: int = 5_000, step_seconds: float = 0.5, sender: Sender | None = None):
        self.store, self.tenant, self.now_ms, self.grace_ms = store, tenant, now_ms, grace_ms
        # what the ingress reads per request: replace the Tenant here and the next webhook uses it
        self.tenants: dict[str, Tenant] = {tenant.id: tenant}
        self.step_seconds = step_seconds
        self.engine = Engine(store, tenant.id)
        self.sender = sender or Sender(tenant, line_api)
        self.ingress_metrics = ingress.Metrics()
        self.registries = [self.engine.registry, self.sender.registry, self.ingress_metrics.registry]  # /metrics
        self.refreshers: list[Callable[[], Awaitable[None]]] = []  # series read when /metrics is asked
        self.listeners: list[Callable[[list[Effect]], None]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the webhook endpoint and start the engine and sender loops; the ingress URL."""
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # port 0: the OS chose one
        self.url = f"http://{host}:{bound}"
        self._tasks = [asyncio.create_task(self._engine_loop(), name="engine"),
                       asyncio.create_task(self._sender_loop(), name="sender")]
        return self.url

    def web_app(self) -> web.Application:
        """What the server serves: the webhook, /healthz and /metrics (subclasses mount more, e.g. the
        admin screen)."""
        app = ingress.create_app(self.tenants, StoreSink(self.store), StoreDedupe(self.store), self.health,
                                 self.ingress_metrics)
        app.router.add_get("/metrics", self._metrics)
        return app

    def health(self) -> tuple[bool, str]:
        """Healthy while the engine loop runs and commits its steps (it steps every half second)."""
        if not self._tasks or self._tasks[0].done():
            return False, "the engine loop is not running"
        return self.engine.health()

    async def _metrics(self, request: web.Request) -> web.Response:
        for refresh in self.refreshers:
            await refresh()
        body = b"".join(generate_latest(registry) for registry in self.registries)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop_engine(self) -> None:
        """No more steps (the sender keeps draining what was decided)."""
        self._stop.set()
        await self._tasks[0]

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every effect for the sender has been handed to it (and LINE)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.store.unsent(self.tenant.id, routes.OUTBOX):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the sender did not finish in time")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.sender.close()

    async def _engine_loop(self) -> None:
        def tell(effects: list[Effect]) -> None:
            for listener in self.listeners:
                listener(effects)
        await self.engine.run(self.now_ms, self.grace_ms, self.step_seconds, self._stop, tell)

    async def _sender_loop(self) -> None:
        while True:
            try:
                sent = await self._send_one_step()
            except Exception:  # LINE unreachable, the store, a bug: keep the rows, try again (same retry keys)
                log.exception("tenant %s: delivery failed; retrying", self.tenant.id)
                sent = False
                await asyncio.sleep(1.0)
            if not sent:
                await asyncio.sleep(self.step_seconds / 2)

    async def _send_one_step(self) -> bool:
        """Deliver the earliest step's unsent messages; False when there was nothing to send."""
        tenant = self.tenant.id
        rows = self.store.unsent(tenant, routes.OUTBOX)  # unfollow / follow too, as on Kafka
        if not rows:
            return False
        outbox, claims = [], []
        done = self.store.replied(tenant, (e.id for _, e in rows if reply_holder(e) is not None))
        for _, effect in rows:
            if effect.id in done:
                continue  # answered by reply before a restart: never twice
            obj = codec.effect_to_obj(effect)
            # an answer to someone's own tap goes by the free reply API while their token is fresh
            holder = reply_holder(effect)
            if holder is not None and (token := self.store.reply_token(tenant, holder)):
                obj["reply_token"], obj["reply_token_at"] = token
                claims.append((effect.id, holder, token[0]))
            outbox.append(obj)
        self.store.claim_replies(tenant, claims)
        report = await self.sender.deliver(outbox)  # LINE unreachable: raises, and the loop tries again
        for failure in report.failed:
            log.warning("tenant %s: %s gave up (%s %s)", tenant, failure.endpoint, failure.status, failure.reason)
        self.store.mark_sent(seq for seq, _ in rows)
        return True
