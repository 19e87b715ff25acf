"""The webhook ingress: LINE's signed POST -> the engine's inbound events, stored before we say 200.

  POST /webhook/{tenant}   unknown tenant 404; X-Line-Signature checked on the raw bytes before
                           anything reads them (401, nothing stored); body parsed (400 + reason);
                           events LINE already delivered dropped (webhookEventId); the rest routed
                           (streams/line/webhook_events.py) and handed to the sink; 200 only once the
                           sink has them durably, 500 otherwise (LINE redelivers, and we accept it)
  GET /metrics             not here: `Metrics` (anpi_ingress_*) are served by `anpi serve` on its
                           /metrics, by `anpi ingress` on ANPI_INGRESS_METRICS_PORT, off the
                           webhook's port (which faces the internet)
  GET /healthz             200 "ok" when the process answers and, where the app is given a health
                           check (the embedded runtime: its engine loop), that check passes; 503
                           and the reason when it does not

A sink takes a tenant's `Routed` record: `KafkaSink` here (the Kafka runtime's inbound topic, and an
audit topic); the embedded runtime brings its own against the same `Sink` protocol. De-duplication
is a `Dedupe`: Redis for the Kafka runtime (shared by every ingress process), memory for one process.

Never logged: channel secrets, access tokens, reply tokens, message text, postback data.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter

from agents.subject import addressed
from schemas.events import CodeRefused, Enroll, RollCall, StaffLinked
from schemas.tenant import Tenant
from streams import codec
from streams.kafka import redis_store
from streams.kafka.records import Naming
from streams.kafka.settings import Settings
from streams.line.webhook_events import Malformed, ResidentCode, Routed, StaffCode, parse, route
from streams.residents import codes as resident_codes

log = logging.getLogger("anpi.ingress")


# --- the seams ------------------------------------------------------------------------------------


class Sink(Protocol):
    async def put(self, tenant_id: str, routed: Routed) -> None:
        """Store the routed events durably; return only when they are, raise when they are not."""


class Dedupe(Protocol):
    async def first(self, tenant_id: str, webhook_event_id: str) -> bool:
        """True (and remember it) the first time this id is seen for the tenant; False for a repeat."""

    async def forget(self, tenant_id: str, webhook_event_id: str) -> None:
        """Undo `first`: the events could not be stored, so LINE's redelivery must be accepted."""


# --- metrics --------------------------------------------------------------------------------------

# what happened to a webhook request: the label values of anpi_ingress_webhooks_total{outcome}
ACCEPTED, UNSIGNED, MALFORMED, UNSTORED, NO_TENANT = "accepted", "unsigned", "malformed", "unstored", "no_tenant"


class Metrics:
    """Per tenant (ids the deployment configured; an unknown one counts as "unknown", so a stranger
    cannot grow the series): webhook requests by outcome, and their events, new or repeated."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.webhooks = Counter("anpi_ingress_webhooks", "Webhook requests, by tenant and outcome (accepted, "
                                "unsigned, malformed, unstored: answered 500 for LINE to redeliver, no_tenant)",
                                ["tenant", "outcome"], registry=self.registry)
        self.events = Counter("anpi_ingress_events", "Webhook events, by tenant; repeated: LINE delivered it "
                              "before (webhookEventId), dropped", ["tenant", "repeated"], registry=self.registry)


# --- the app --------------------------------------------------------------------------------------

TENANTS = web.AppKey("tenants", Mapping)
SINK = web.AppKey("sink", object)
DEDUPE = web.AppKey("dedupe", object)
HEALTH = web.AppKey("health", object)
METRICS = web.AppKey("metrics", Metrics)
# (tenant, code, LINE user id, at) -> the staff login linked, or None: a Staff store's link_line
STAFF_LINKS = web.AppKey("staff_links", object)
# (tenant, code hash, LINE user id, at) -> the imported roster's row it registers, or None: a Profiles' claim
RESIDENT_CODES = web.AppKey("resident_codes", object)


def create_app(tenants: Mapping[str, Tenant], sink: Sink, dedupe: Dedupe,
               health: Callable[[], tuple[bool, str]] | None = None, metrics: Metrics | None = None,
               staff_links: Callable[[str, str, str, int], Awaitable[str | None]] | None = None,
               resident_codes: Callable[[str, str, str, int], Awaitable[object | None]] | None = None) -> web.Application:
    app = web.Application()
    app[TENANTS], app[SINK], app[DEDUPE] = tenants, sink, dedupe
    app[STAFF_LINKS] = staff_links
    app[RESIDENT_CODES] = resident_codes
    app[HEALTH] = health or (lambda: (True, "ok"))
    app[METRICS] = metrics or Metrics()
    app.router.add_post("/webhook/{tenant}", webhook)
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(request: web.Request) -> web.Response:
    healthy, why = request.app[HEALTH]()
    return web.Response(text=why, status=200 if healthy else 503)


async def webhook(request: web.Request) -> web.Response:
    tenant = request.app[TENANTS].get(request.match_info["tenant"])
    metrics = request.app[METRICS]
    if tenant is None:
        metrics.webhooks.labels("unknown", NO_TENANT).inc()
        return _answer(404, "no such tenant")
    body = await request.read()
    if not signed(tenant.channel_secret, body, request.headers.get("X-Line-Signature")):
        log.warning("tenant %s: webhook with a missing or wrong signature refused", tenant.id)
        metrics.webhooks.labels(tenant.id, UNSIGNED).inc()
        return _answer(401, "missing or wrong X-Line-Signature")
    try:
        events = parse(body)
    except Malformed as error:
        log.warning("tenant %s: malformed webhook refused: %s", tenant.id, error)
        metrics.webhooks.labels(tenant.id, MALFORMED).inc()
        return _answer(400, str(error))

    dedupe: Dedupe = request.app[DEDUPE]
    marked: list[str] = []  # ids this request claimed: released again if the sink fails
    try:
        fresh = []
        for event in events:
            if await dedupe.first(tenant.id, event.webhook_event_id):
                marked.append(event.webhook_event_id)
                fresh.append(event)
        routed = route(tenant.id, fresh, tenant.timezone, tenant.long_intervals)
        await _link_staff(routed, tenant.id, request.app[STAFF_LINKS])
        await _link_residents(routed, tenant, request.app[RESIDENT_CODES])
        if routed.events or routed.audit:
            await request.app[SINK].put(tenant.id, routed)
    except BaseException as error:  # also cancellation: an unstored event must stay deliverable
        await _forget(dedupe, tenant.id, marked)
        if not isinstance(error, Exception):
            raise
        log.error("tenant %s: %d webhook events not stored (%s); answering 500 so LINE redelivers",
                  tenant.id, len(marked), error.__class__.__name__, exc_info=True)
        metrics.webhooks.labels(tenant.id, UNSTORED).inc()
        return _answer(500, "events not stored; please redeliver")
    metrics.webhooks.labels(tenant.id, ACCEPTED).inc()
    metrics.events.labels(tenant.id, "false").inc(len(marked))
    metrics.events.labels(tenant.id, "true").inc(len(events) - len(marked))
    log.info("tenant %s: %d events (%d new): %d applied, %d audited", tenant.id, len(events), len(marked),
             len(routed.events), len(routed.audit))
    return web.json_response({"message": "ok"})


async def _link_staff(routed: Routed, tenant_id: str, links) -> None:
    """Each staff link code becomes StaffLinked, the code checked (and spent) in the staff accounts:
    the code itself is stored nowhere. Linking again with the same code and person (a redelivery,
    or a 500 below) links again. Without a staff store here, every code is refused."""
    for i, event in enumerate(routed.events):
        if type(event) is StaffCode:
            login = await links(tenant_id, event.code, event.member, event.at) if links is not None else None
            routed.events[i] = StaffLinked(event.at, event.member, login or "")


async def _link_residents(routed: Routed, tenant: Tenant, claims) -> None:
    """Each registration code from a printed sheet becomes Enroll with the imported row's settings
    (its profile moved to the person's LINE id by the claim), or CodeRefused; the code is stored
    nowhere. Without a roster here, every code is refused."""
    for i, event in enumerate(routed.events):
        if type(event) is ResidentCode:
            row = await claims(tenant.id, resident_codes.code_hash(tenant.id, event.code), event.member, event.at) \
                if claims is not None else None
            routed.events[i] = Enroll(event.at, row.settings(event.member, tenant.timezone)) if row is not None \
                else CodeRefused(event.at, event.member)


def signed(secret: str, body: bytes, signature: str | None) -> bool:
    """X-Line-Signature = base64(HMAC-SHA256(channel secret, raw body)), compared in constant time."""
    if not signature:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


async def _forget(dedupe: Dedupe, tenant_id: str, ids: list[str]) -> None:
    try:
        await asyncio.shield(asyncio.gather(*(dedupe.forget(tenant_id, i) for i in ids)))
    except Exception:  # the mark then expires by itself; LINE's redelivery is dropped until it does
        log.error("tenant %s: could not release %d webhook event ids", tenant_id, len(ids), exc_info=True)


# --- de-duplication -------------------------------------------------------------------------------


class RedisDedupe:
    """Shared by every ingress process: SET NX EX in Redis (streams/redis_store.first_delivery).

    The claims of requests handled in the same turn of the event loop go to Redis together, in one
    pipeline (one round trip, one connection): each is still its own atomic SET NX, and each caller
    gets its answer only once Redis has given it.
    """

    def __init__(self, redis, ttl_seconds: int = redis_store.WEEK):
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds={ttl_seconds}: must be positive")
        self._redis = redis
        self._ttl = ttl_seconds
        self._queued: list[tuple[str, asyncio.Future]] = []

    async def first(self, tenant_id: str, webhook_event_id: str) -> bool:
        key = redis_store.webhook_key(tenant_id, _key_id(webhook_event_id))
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._queued.append((key, answer))
        if len(self._queued) == 1:
            loop.call_soon(lambda: loop.create_task(self._claim_queued()))
        return await answer

    async def _claim_queued(self) -> None:
        queued, self._queued = self._queued, []
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, _ in queued:
                pipe.set(key, b"1", nx=True, ex=self._ttl)
            results = await pipe.execute()
        except BaseException as error:
            for _, answer in queued:
                if not answer.done():
                    answer.set_exception(error if isinstance(error, Exception) else ConnectionError("cancelled"))
            if not isinstance(error, Exception):
                raise
            return
        for (_, answer), result in zip(queued, results):
            if not answer.done():
                answer.set_result(bool(result))

    async def forget(self, tenant_id: str, webhook_event_id: str) -> None:
        await self._redis.delete(redis_store.webhook_key(tenant_id, _key_id(webhook_event_id)))


_PLAIN_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _key_id(webhook_event_id: str) -> str:
    """LINE's ids are ULIDs and fit a Redis key as they are; any other string is keyed by its hash."""
    if _PLAIN_ID.fullmatch(webhook_event_id):
        return webhook_event_id
    return "sha256-" + hashlib.sha256(webhook_event_id.encode("utf-8", "surrogatepass")).hexdigest()


class MemoryDedupe:
    """One process (the embedded runtime, tests): the last `capacity` ids, no clock.

    No time-to-live on purpose: the embedded runtime runs in virtual time. A redelivery follows its
    original closely; by then a municipality's traffic has not pushed 100,000 newer ids through.
    """

    def __init__(self, capacity: int = 100_000):
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._capacity = capacity

    async def first(self, tenant_id: str, webhook_event_id: str) -> bool:
        key = (tenant_id, webhook_event_id)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    async def forget(self, tenant_id: str, webhook_event_id: str) -> None:
        self._seen.pop((tenant_id, webhook_event_id), None)


# --- sinks ----------------------------------------------------------------------------------------


class MemorySink:
    """Keeps what it is given, in order: for tests and tools that look at the routing only."""

    def __init__(self):
        self.puts: list[tuple[str, Routed]] = []

    async def put(self, tenant_id: str, routed: Routed) -> None:
        self.puts.append((tenant_id, routed))


class KafkaSink:
    """Each engine event onto the deployment's inbound topic (shared by its tenants), as the Kafka
    runtime reads it; audit records onto `<prefix>-audit`. Idempotent producer, acks from all in-sync
    replicas, and every send awaited: when `put` returns the events are on the broker.

    Events are placed with the runtime's own partitioner and carry their tenant
    (streams/kafka/records.py), one copy per addressed subject: a group OK goes to the group's
    partition and to the member's.

        async with KafkaSink(settings) as sink: ...
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.naming = Naming(settings.prefix)
        self._producer = None
        self._checked: set[str] = set()

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka, acks="all",
                                          enable_idempotence=True, linger_ms=2)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> "KafkaSink":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def put(self, tenant_id: str, routed: Routed) -> list[tuple[str, object, int, int]]:
        """On the broker when it returns; where each event went: (subject, event, partition, offset)."""
        if self._producer is None:
            raise RuntimeError("KafkaSink.put before start()")
        inbound, partitions = self.settings.inbound, self.settings.partitions
        await self._check_partitions(inbound, partitions)
        pending, placed = [], []
        for event in routed.events:
            if type(event) is RollCall:  # staff's: on every partition, for the tenant's subjects there
                for number, key, value in self.naming.rollcall_messages(tenant_id, event, partitions):
                    pending.append(await self._producer.send(inbound, value, key=key or None, partition=number))
                    placed.append(("", event))
                continue
            reply = routed.reply_for(event)  # for the worker to pass on to the sender
            for subject in addressed(event):
                number, key, value = self.naming.event_message(tenant_id, subject, event, partitions, reply)
                pending.append(await self._producer.send(inbound, value, key=key, partition=number))
                placed.append((subject, event))
        for record in routed.audit:
            pending.append(await self._producer.send(self.settings.audit, codec.dumps(record),
                                                     key=record["webhookEventId"].encode()))
        sent = await asyncio.gather(*pending)
        return [(subject, event, meta.partition, meta.offset) for (subject, event), meta in zip(placed, sent)]

    async def _check_partitions(self, topic: str, partitions: int) -> None:
        """The worker places subjects by crc32 % its partition count: a topic of another size would
        put a subject's events where its state is not. Refuse (500) rather than misplace them."""
        if topic in self._checked:
            return
        found = await self._producer.partitions_for(topic)
        if len(found) != partitions:
            raise RuntimeError(f"topic {topic} has {len(found)} partitions; this ingress places events "
                               f"for {partitions}")
        self._checked.add(topic)
