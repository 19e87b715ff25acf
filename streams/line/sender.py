"""The sender: outbox effects in, LINE Messaging API calls out.

    effects ─▶ messages (agents/messages.py) ─▶ items per recipient ─┬─ fresh reply token ─▶ /reply (free)
                                                                     └─ coalesce (agents/outbound.py)
                                                                          ─▶ /multicast (≤ 500 users), /push
    each call: wait on its endpoint's token bucket ─▶ POST with X-Line-Retry-Key ─▶ retry (same key) or report

A call whose answer got lost (timeout, crash, restart) is sent again with the same retry key; LINE
answers 409 if it had accepted it, so nobody gets a message twice. The decisions live in pure
functions (agents/outbound.py); this module only waits, talks HTTP and counts.

Logs carry endpoints, statuses, counts and retry keys: never tokens, secrets or message bodies (they
hold names).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Awaitable, Callable, Iterable, Protocol

import aiohttp
from redis import exceptions as redis_errors
from prometheus_client import CollectorRegistry, Counter, Gauge

from agents import outbound as ob
from agents.clock import zone as tz
from agents.messages import (REPLY_ONLY, REPLYABLE, ROLLCALL_CARDS, SENDS_MESSAGES, STAFF_ALERTS, Texts, local_date, messages_for,
                             recipients, staff_alert)
from agents import nights
from agents.on_call import OnCall, on_duty
from schemas import effects as fx
from schemas.effects import Effect
from schemas.tenant import Tenant
from streams.codec import effect_from_obj
from agents.hooks import HOOKED
from streams.hooks import delivery as hook_delivery
from streams.hooks.queue import HookQueue
from streams.line.held import Held, HeldItem, notice_key

log = logging.getLogger("anpi.sender")

REPLY_TOKEN_MAX_AGE = 50.0   # seconds: LINE keeps a reply token about a minute; leave room for the call
PLAN_SLICE = 2_000           # effects planned before their requests start (a multiple of 500: whole multicasts)
ON_CALL_FRESH = 10.0         # seconds the staff on call are read for (a link or new hours show within this)


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests per second per endpoint (LINE's per-channel limits by default) and the burst allowed."""
    multicast: float = 200.0
    push: float = 2000.0
    reply: float = 2000.0
    burst_seconds: float = 0.1   # a bucket holds this many seconds' worth: short bursts, never a second's double

    def rate(self, endpoint: str) -> float:
        return getattr(self, endpoint)


# --- rate limiters: in-process, or shared through Redis -------------------------------------------


class Limiter(Protocol):
    async def reserve(self, cost: float = 1.0) -> float:
        """Reserve a turn; returns the seconds to wait before using it."""


class LocalLimiter:
    """One process's token bucket (agents/outbound.take) on the monotonic clock."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._state = ob.bucket(rate, burst, clock())

    async def reserve(self, cost: float = 1.0) -> float:
        self._state, wait = ob.take(self._state, self._clock(), cost)
        return wait


# The same arithmetic as agents/outbound.take, run atomically inside Redis on Redis's own clock, so
# several sender processes share one channel's limit without trusting each other's clocks.
_TAKE_LUA = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(s[1]) or burst, tonumber(s[2]) or now
if now < stamp then now = stamp end
tokens = math.min(burst, tokens + (now - stamp) * rate) - cost
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'stamp', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(((burst - tokens) / rate + 60) * 1000))
if tokens < 0 then return string.format('%.6f', -tokens / rate) end
return '0'
"""


class RedisLimiter:
    """A token bucket shared by every sender of a channel (redis.asyncio client, one small Lua script).

    While Redis does not answer, each sender keeps to the limit on its own (a local bucket at the
    same rate, `on_fallback` told each time): Redis is a helper, and a sender never stops for it.
    Several replicas may then together go past the channel's limit; LINE answers 429 to the excess,
    which goes again with the same retry key."""

    def __init__(self, client, key: str, rate: float, burst: float, on_fallback: Callable[[], None] | None = None):
        self._script = client.register_script(_TAKE_LUA)
        self._key, self._rate, self._burst = key, rate, burst
        self._fallback = LocalLimiter(rate, burst)
        self._on_fallback = on_fallback
        self._away = False

    async def reserve(self, cost: float = 1.0) -> float:
        try:
            wait = float(await self._script(keys=[self._key], args=[self._rate, self._burst, cost]))
        except (OSError, TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError) as error:
            if not self._away:
                log.warning("shared rate limit %s unavailable (%s): keeping to it in this process", self._key,
                            type(error).__name__)
                self._away = True
            if self._on_fallback is not None:
                self._on_fallback()
            return await self._fallback.reserve(cost)
        if self._away:
            log.warning("shared rate limit %s back", self._key)
            self._away = False
        return wait


def redis_reply_claims(client, tenant_id: str, ttl_seconds: int = 2 * 24 * 3600):
    """Sender.claim_replies over Redis: one SET NX per effect id (a reply token lives a minute; a
    batch comes again within hours at most), so any number of senders answer each effect once.

    Each claim names its holder (one per claim, the same on its retries), and a key already held by
    the same holder is won: a SET that Redis applied but whose answer was lost (killed, timed out)
    is then won on the retry, not lost. Another claim of the same effect (a restart, a batch read
    again) has another holder and loses, as it must."""
    async def claim(effect_ids: list[str], holder: str) -> set[str]:
        value = holder.encode()
        async with client.pipeline(transaction=False) as pipe:
            for effect_id in effect_ids:
                key = f"anpi:{{{tenant_id}}}:replied:{effect_id}"
                pipe.set(key, value, nx=True, ex=ttl_seconds)
                pipe.get(key)
            answers = await pipe.execute()
        return {effect_id for effect_id, held in zip(effect_ids, answers[1::2]) if held == value}
    return claim


def local_limiters(limits: Limits) -> dict[str, Limiter]:
    return {ep: LocalLimiter(limits.rate(ep), max(1.0, limits.rate(ep) * limits.burst_seconds))
            for ep in (ob.PUSH, ob.MULTICAST, ob.REPLY)}


def redis_limiters(client, tenant_id: str, limits: Limits,
                   on_fallback: Callable[[], None] | None = None) -> dict[str, Limiter]:
    return {ep: RedisLimiter(client, f"anpi:ratelimit:{tenant_id}:{ep}", limits.rate(ep),
                             max(1.0, limits.rate(ep) * limits.burst_seconds), on_fallback)
            for ep in (ob.PUSH, ob.MULTICAST, ob.REPLY)}


# --- reports and metrics --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    endpoint: str
    status: int | None
    reason: str                 # LINE's error message, or what went wrong locally (no message bodies)
    effect_ids: tuple[str, ...]


@dataclass(slots=True)
class Report:
    """What one deliver() did."""
    requests: int = 0           # HTTP calls, retries included
    accepted: int = 0           # calls LINE accepted now (2xx)
    duplicates: int = 0         # calls LINE had accepted before (409 on the retry key): not sent again
    retries: int = 0
    replies: int = 0            # accepted replies (free)
    recipients: int = 0         # recipients of accepted push / multicast calls
    billed: int = 0             # messages counted against the monthly quota by this batch
    skipped_blocked: int = 0    # recipients left out because they blocked the account
    failed: list[Failure] = field(default_factory=list)
    held: list[HeldItem] = field(default_factory=list)   # notices kept for the morning (agents/nights.py)
    cancelled: list[str] = field(default_factory=list)   # held notices an all clear overtook: neither goes
    held_keys: set[str] = field(default_factory=set)     # of the batch's all clears, the notices held now


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("anpi_sender_requests", "LINE API calls, by endpoint and HTTP status "
                                "(error: no answer)", ["endpoint", "status"], registry=r)
        self.recipients = Counter("anpi_sender_recipients", "Recipients of accepted calls", ["endpoint"],
                                  registry=r)
        self.retries = Counter("anpi_sender_retries", "Calls sent again (same retry key)", ["endpoint"],
                               registry=r)
        self.wait = Counter("anpi_sender_rate_limit_wait_seconds", "Seconds spent waiting on the rate limiter",
                            ["endpoint"], registry=r)
        self.billed = Counter("anpi_sender_billed_messages", "Messages counted against the monthly quota",
                              ["tenant"], registry=r)
        self.failures = Counter("anpi_sender_failures", "Calls given up", ["endpoint", "status"], registry=r)
        self.blocked = Counter("anpi_sender_blocked_skipped", "Recipients skipped: they blocked the account",
                               registry=r)
        self.queue_depth = Gauge("anpi_sender_queue_depth", "Effects waiting for the sender", registry=r)
        self.batch_retries = Counter("anpi_sender_batch_retries", "Batches delivered again after an error "
                                     "outside LINE's answers (held, never acked undelivered)", registry=r)
        self.claims_waiting = Counter("anpi_sender_claim_retries", "Reply claims tried again: their store "
                                      "(Redis) did not answer; the answers wait", registry=r)
        self.limiter_fallbacks = Counter("anpi_sender_limiter_fallbacks", "Calls paced by this process alone: "
                                         "the shared rate limit (Redis) did not answer", registry=r)
        self.expired = Counter("anpi_sender_expired", "Calls given up because LINE failed for as long as "
                               "the retry key lasts (24 h)", ["endpoint"], registry=r)
        self.retrying = Gauge("anpi_sender_retrying", "Calls LINE has not taken yet, being tried again",
                              ["tenant"], registry=r)
        self.hooks = Counter("anpi_hook_deliveries", "The tenant's outgoing webhook: posts delivered, to be "
                             "tried again, or given up after a day", ["tenant", "outcome"], registry=r)
        self.oldest_retry = Gauge("anpi_sender_oldest_retry_seconds", "Seconds since the first try of the "
                                  "oldest call still being tried again (0: none)", ["tenant"], registry=r)


# --- the sender -----------------------------------------------------------------------------------


def _decode(raw) -> tuple[Effect, str | None, float | None]:
    """An outbox entry: an Effect, or its JSON object with optional reply_token (set by the ingress)."""
    if isinstance(raw, Effect):
        return raw, None, None
    token = raw.get("reply_token")
    token_at = raw.get("reply_token_at", raw["at"])  # epoch ms the token was issued (the tap's time)
    return effect_from_obj(raw), token, token_at


def _scan(effects: list) -> tuple[bool, list[str], list[Effect]]:
    """One pass over a batch: whether it has staff alerts, the notice keys its all clears name, and
    the effects the outgoing webhook takes. (A batch of a million checks: about 0.1 s.)"""
    alerts, keys, hooked = False, [], []
    wanted = _SCANNED
    for raw in effects:
        kind = raw.effect if type(raw) is Effect else raw.get("effect")
        if kind not in wanted:
            continue
        effect = raw if type(raw) is Effect else effect_from_obj(raw)
        alerts = alerts or kind in STAFF_ALERTS
        if kind == fx.ALL_CLEAR:
            keys += [notice_key(effect.subject, effect.cycle, to) for to in effect.to or ()]
        if kind in HOOKED:
            hooked.append(effect)
    return alerts, keys, hooked


_SCANNED = STAFF_ALERTS | HOOKED | {fx.ALL_CLEAR}


CARDS = frozenset({fx.CHECK_SENT, fx.CHECK_RESENT, fx.GROUP_CHECK_POSTED})  # the same for everyone that day


class Sender:
    def __init__(self, tenant: Tenant, base_url: str, *, texts: Texts = Texts(), limits: Limits = Limits(),
                 limiters: dict[str, Limiter] | None = None, retry: ob.RetryPolicy = ob.RetryPolicy(),
                 concurrency: int = 64, timeout: float = 5.0, reply_max_age: float = REPLY_TOKEN_MAX_AGE,
                 session: aiohttp.ClientSession | None = None, registry: CollectorRegistry | None = None,
                 metrics: Metrics | None = None, wall: Callable[[], float] = time.time, sleep=asyncio.sleep):
        self.tenant = tenant
        self.base_url = base_url.rstrip("/")
        self.texts = texts
        self.limiters = limiters or local_limiters(limits)
        self.retry = retry
        self.reply_max_age = reply_max_age
        self.metrics = metrics or Metrics(registry)   # one per process, shared by its tenants' senders
        self.blocked: set[str] = set()                # user ids that blocked the account: skipped
        self.billed: dict[tuple[str, str], int] = {}  # (tenant, "YYYY-MM") -> messages billed
        self._concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session, self._own_session = session, session is None
        self._wall, self._sleep = wall, sleep
        # (effect ids) -> those this sender may answer by reply now, never again: a reply has no retry
        # key, so a batch delivered again after a crash would reply with a spent token and fall back
        # to a push, twice. None: nothing is answered at most once (a test's sender alone).
        # (effect ids, holder: one per claim, the same on its retries) -> those this claim won
        self.claim_replies: Callable[[list[str], str], Awaitable[set[str]]] | None = None
        self._headers = {"Authorization": f"Bearer {tenant.channel_access_token}",
                         "Content-Type": "application/json"}
        self._retrying: dict[int, float] = {}  # calls being tried again -> monotonic time of their first try
        # the staff who linked their LINE, alerted on staff calls and reminders (agents/on_call.py),
        # read from the staff accounts through `on_call_source` at most every `on_call_fresh` seconds
        self.on_call: tuple[OnCall, ...] = ()
        self.on_call_source: Callable[[], Awaitable[Iterable[OnCall]]] | None = None
        self.on_call_fresh = ON_CALL_FRESH
        self._on_call_read = float("-inf")
        # notices to contacts with quiet nights, kept for the morning (streams/line/held.py); None:
        # nothing is held (every notice goes at once)
        self.held: Held | None = None
        # the tenant's outgoing webhook's queue (streams/hooks/); used when the tenant has a hook_url
        self.hooks: HookQueue | None = None
        self.metrics.retrying.labels(tenant.id).set_function(lambda: len(self._retrying))
        self.metrics.oldest_retry.labels(tenant.id).set_function(
            lambda: time.monotonic() - min(self._retrying.values()) if self._retrying else 0.0)

    def use(self, tenant: Tenant | None = None, texts: Texts | None = None) -> None:
        """Swap the channel (its access token and zone) and/or the wording at run time: staff saved new
        settings. Calls planned from now on use them; a call already under way keeps the token it
        started with."""
        if tenant is not None:
            self.tenant = tenant
            self._headers = {**self._headers, "Authorization": f"Bearer {tenant.channel_access_token}"}
        if texts is not None:
            self.texts = texts

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    async def __aenter__(self) -> "Sender":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self._concurrency))
        return self._session

    def mark_blocked(self, user_id: str) -> None:
        """LINE does not say so on a push (a 200 is no proof of delivery): the unfollow webhook does."""
        self.blocked.add(user_id)

    def mark_unblocked(self, user_id: str) -> None:
        self.blocked.discard(user_id)

    # -- planning (no I/O) --

    def plan(self, effects: Iterable, report: Report | None = None) -> tuple[list[ob.Request], list[ob.Item]]:
        """(push / multicast requests, answers) for a batch, pushes to the blocked left out. Answers are the
        items that came with the person's reply token: by reply while it is fresh (reply_token set),
        else (None) by push; each is claimed before it goes either way (see __init__)."""
        report = report if report is not None else Report()
        items: list[ob.Item] = []
        answers: list[ob.Item] = []
        alerts: list[ob.Request] = []
        now = self._wall()
        cards: dict[tuple[str, object], tuple[dict, ...]] = {}  # a check card depends on kind and day only
        # (keyed by day, and memoised by instant: a step's checks share one)
        for raw in effects:
            effect, token, token_at = _decode(raw)
            if effect.effect == fx.UNFOLLOWED:
                self.mark_blocked(effect.subject)
                continue
            if effect.effect == fx.FOLLOWED:
                self.mark_unblocked(effect.subject)
                continue
            if effect.effect in STAFF_ALERTS:
                alerts.extend(self._alerts(effect))
                continue
            if effect.effect not in SENDS_MESSAGES:
                continue                     # the call queue's job, not LINE's
            if effect.effect in CARDS:
                messages = cards.get((effect.effect, effect.at))  # a step's checks share their instant
                if messages is None:
                    key = (effect.effect, local_date(effect.at, self.tenant.timezone))
                    messages = cards.get(key)
                    if messages is None:
                        messages = cards[key] = tuple(messages_for(effect, self.texts, self.tenant.timezone))
                    cards[(effect.effect, effect.at)] = messages
            elif effect.effect in ROLLCALL_CARDS:  # one card for the whole roll-call (drill or not)
                messages = cards.get((effect.effect, effect.data))
                if messages is None:
                    messages = cards[(effect.effect, effect.data)] = tuple(
                        messages_for(effect, self.texts, self.tenant.timezone))
            else:
                messages = tuple(messages_for(effect, self.texts, self.tenant.timezone))
            if not messages:
                continue                     # e.g. a real 「助けが必要」: its help_requested answers it
            answer = token is not None and effect.effect in REPLYABLE
            fresh = answer and now - token_at / 1000 < self.reply_max_age
            if effect.effect in REPLY_ONLY and not fresh:
                continue                     # worth a free reply, not a paid push to a whole group
            quiet, morning = self._quiet(effect, now)
            for to in recipients(effect):
                if to in quiet:
                    key = notice_key(effect.subject, effect.cycle, to)
                    report.held.append(HeldItem(key, morning, to, effect.id, messages))
                    report.held_keys.add(key)
                    continue
                if effect.effect == fx.ALL_CLEAR and notice_key(effect.subject, effect.cycle, to) in report.held_keys:
                    report.cancelled.append(notice_key(effect.subject, effect.cycle, to))
                    continue
                (answers if answer else items).append(ob.Item(to, messages, effect.id, token if fresh else None))
        return self._leave_out_blocked(ob.coalesce(items, scope=self.tenant.id) + alerts, report), answers

    def _quiet(self, effect: Effect, now: float) -> tuple[frozenset[str], int]:
        """(the contacts whose notice waits for the morning, when it goes). Decided by the notice's own
        instant, so a batch delivered again decides the same; one whose morning has already come (a
        backlog) goes at once."""
        if self.held is None or effect.effect != fx.CONTACTS_NOTIFIED or not fx.notice_quiet(effect.data):
            return frozenset(), 0
        zone = self.tenant.timezone
        if not nights.quiet(effect.at, zone):
            return frozenset(), 0
        morning = nights.morning_after(effect.at, zone)
        return (fx.notice_quiet(effect.data), morning) if morning > now * 1000 else (frozenset(), 0)

    async def post_hooks(self) -> int:
        """Post the outgoing webhook's deliveries that are due (streams/hooks/delivery.py)."""
        if self.hooks is None:
            return 0
        return await hook_delivery.post_due(self.hooks, self.tenant, self._http(), int(self._wall() * 1000),
                                            lambda outcome: self.metrics.hooks.labels(self.tenant.id, outcome).inc())

    async def release_held(self, limit: int = 500) -> int:
        """Send the held notices whose morning has come (each a push, with the retry key an immediate
        push would have had); forget the cancelled ones. The number sent."""
        if self.held is None:
            return 0
        items = await self.held.due(int(self._wall() * 1000), limit)
        if not items:
            return 0
        going = [i for i in items if not i.cancelled and i.to not in self.blocked]
        report = Report()
        await asyncio.gather(*(self._send(ob.push_request(ob.Item(i.to, i.messages, i.effect_id), self.tenant.id),
                                          report) for i in going))
        await self.held.done([i.key for i in items])
        if going:
            log.info("tenant %s: %d notices held for the morning sent", self.tenant.id, len(going))
        return len(going)

    def _alerts(self, effect: Effect) -> list[ob.Request]:
        """A staff call or reminder, pushed to each staff member on duty at its instant. One push each,
        never a multicast: its retry key is then the same whoever else is on the list, so a batch
        delivered again after the staff changed their hours alerts nobody twice."""
        if not self.on_call:
            return []
        message = (staff_alert(self.texts, effect),)
        return [ob.push_request(ob.Item(to, message, effect.id), self.tenant.id)
                for to in on_duty(self.on_call, effect.at, self.tenant.timezone)]

    async def refresh_on_call(self) -> None:
        """Read the staff on call again (for a batch with alerts) if the last reading is older than
        on_call_fresh: a link or new hours count from the next alert on. A store that
        does not answer leaves the last reading in use: alerts go on, to whom they went before."""
        if self.on_call_source is None or time.monotonic() - self._on_call_read < self.on_call_fresh:
            return
        try:
            self.on_call = tuple(await self.on_call_source())
        except (OSError, TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError) as error:
            log.warning("staff on call unavailable (%s): alerting the %d read before", type(error).__name__,
                        len(self.on_call))
        self._on_call_read = time.monotonic()

    def _leave_out_blocked(self, requests: list[ob.Request], report: Report) -> list[ob.Request]:
        """A push to someone who blocked the account is left out: LINE would take it and deliver
        nothing. A multicast keeps them. Its members, and so its retry key, must not depend on what
        this process happened to learn before (a restarted sender has not: it would send the others
        the same message again under a new key); LINE delivers to, and bills, only those who follow."""
        kept = []
        for request in requests:
            if request.endpoint == ob.PUSH and request.recipients[0] in self.blocked:
                report.skipped_blocked += 1
                self.metrics.blocked.inc()
                continue
            kept.append(request)
        return kept

    # -- delivery --

    async def deliver(self, effects: Iterable, slice_size: int = PLAN_SLICE) -> Report:
        """Hand a batch to LINE. It is planned a slice at a time, and each slice's requests start while
        the next slice is planned: for a million members the first multicast leaves at once instead
        of after seconds of planning. Slices are cut by position, so the same batch (after a crash)
        plans into the same requests with the same retry keys."""
        report = Report()
        effects = effects if isinstance(effects, list) else list(effects)
        if self.on_call_source is not None or self.held is not None or self.hooks is not None:
            alerts, clears, hooked = _scan(effects)
            if alerts and self.on_call_source is not None:
                await self.refresh_on_call()
            if clears and self.held is not None:   # an all clear to a contact whose notice waits: neither goes
                report.held_keys = await self.held.held(clears)
            if hooked and self.hooks is not None and self.tenant.hook_url:   # before the batch is acked
                await self.hooks.add(hook_delivery.items_for(self.tenant, hooked, self.texts.calls_url,
                                                             int(self._wall() * 1000)))
        gate = asyncio.Semaphore(self._concurrency)
        sending = []
        for start in range(0, len(effects), slice_size):
            requests, answers = self.plan(effects[start:start + slice_size], report)
            sending.append(asyncio.ensure_future(self._deliver_planned(requests, answers, report, gate)))
            await asyncio.sleep(0)  # let the requests planned so far go out
        try:
            if report.held:        # stored before the batch is acked or marked sent: a crash holds it again
                await self.held.hold(report.held)
            if report.cancelled:
                await self.held.cancel(report.cancelled)
            await asyncio.gather(*sending)
        except BaseException:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)
            raise
        return report

    async def _deliver_planned(self, requests: list[ob.Request], answers: list[ob.Item], report: Report,
                               gate: asyncio.Semaphore) -> None:
        async def one(req: ob.Request, attempts: int | None = None) -> tuple[str, int | None]:
            async with gate:
                return await self._send(req, report, attempts)

        if answers and self.claim_replies is not None:  # at most once across restarts (see __init__)
            allowed = await self._claim([i.effect_id for i in answers])
            answers = [i for i in answers if i.effect_id in allowed]
        replies, overflow = ob.reply_requests([i for i in answers if i.reply_token is not None])
        # a token too old to use: by push, still claimed (a first delivery may have replied)
        requests = requests + self._leave_out_blocked(
            ob.coalesce([i for i in answers if i.reply_token is None] + overflow, scope=self.tenant.id), report)
        # Replies first (free, and the token is ageing), tried once: a reply has no retry key and its
        # token is single-use, so a second try proves nothing. One LINE refused (token spent or
        # expired, or busy) falls back to a push: billed, but it arrives. One that got no answer may
        # have arrived, so it is left at that rather than risk thanking someone twice.
        outcomes = await asyncio.gather(*(one(req, 1) for req, _ in replies))
        refused = [(req, items) for (req, items), (verdict, status) in zip(replies, outcomes)
                   if verdict == ob.GIVE_UP and status]
        fallback = [ob.push_request(i._replace(reply_token=None), self.tenant.id) for _, items in refused for i in items]
        if refused:
            fell_back = {req.effect_ids for req, _ in refused}
            report.failed[:] = [f for f in report.failed if not (f.endpoint == ob.REPLY and f.effect_ids in fell_back)]
        await asyncio.gather(*(one(r) for r in requests + fallback))

    async def _claim(self, effect_ids: list[str]) -> set[str]:
        """claim_replies, waiting for as long as its store (Redis) is down: an answer is never sent
        unclaimed, and the batch is held, not dropped, meanwhile."""
        attempt = 0
        holder = uuid.uuid4().hex
        while True:
            try:
                return await self.claim_replies(effect_ids, holder)
            except (OSError, TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError) as error:
                failure = error  # the store is away; any other error is a fault of ours: raised
            attempt += 1
            self.metrics.claims_waiting.inc()
            if attempt == 1 or attempt % 20 == 0:
                log.warning("reply claims unavailable (%s); holding %d answers and trying again",
                            type(failure).__name__, len(effect_ids))
            await self._sleep(ob.backoff(self.retry, min(attempt, 6), "claims"))

    async def send_prepared(self, endpoint: str, to, messages: list[dict], retry_key: str,
                            report: Report | None = None) -> tuple[str, int | None]:
        """Deliver a request built elsewhere (a notice's chunk): a multicast to a list of user ids, or a
        push to one id, with the caller's retry key, through this sender's limiters and retry policy.
        (verdict, last HTTP status): ob.OK, ob.DUPLICATE (accepted before: nothing sent twice) or
        ob.GIVE_UP (status None: LINE never answered, so it is safe to try again later, same key)."""
        recipients = tuple(to) if endpoint == ob.MULTICAST else (to,)
        body = {"to": list(recipients) if endpoint == ob.MULTICAST else to, "messages": list(messages)}
        request = ob.Request(endpoint, body, retry_key, (retry_key,), recipients)
        return await self._send(request, report if report is not None else Report())

    async def _send(self, req: ob.Request, report: Report, attempts: int | None = None) -> tuple[str, int | None]:
        """POST until LINE accepts, says it already had, or refuses: (verdict, last HTTP status)."""
        url = f"{self.base_url}/v2/bot/message/{req.endpoint}"
        headers = dict(self._headers)
        if req.retry_key:
            headers["X-Line-Retry-Key"] = req.retry_key
        attempts = attempts or self.retry.attempts
        first = time.monotonic()
        attempt = 0
        try:
            while True:
                attempt += 1
                verdict, status, message = await self._attempt(req, url, headers, report)
                if verdict != ob.RETRY:
                    return verdict, status
                if attempts is not None and attempt >= attempts:
                    break
                if time.monotonic() - first >= self.retry.patience:
                    self.metrics.expired.labels(req.endpoint).inc()
                    message = f"LINE did not take it within {self.retry.patience / 3600:g} h"
                    break
                report.retries += 1
                self.metrics.retries.labels(req.endpoint).inc()
                self._retrying[id(req)] = self._retrying.get(id(req), first)
                log.info("retrying %s (status %s, key %s, attempt %d)", req.endpoint, status, req.retry_key, attempt)
                await self._sleep(ob.backoff(self.retry, attempt, req.retry_key or req.effect_ids[0]))
        finally:
            self._retrying.pop(id(req), None)
        self._give_up(req, status, message or "retries exhausted", report)
        return ob.GIVE_UP, status

    async def _attempt(self, req: ob.Request, url: str, headers: dict, report: Report) -> tuple[str, int | None, str]:
        """One call, after its turn from the rate limiter: (verdict, status, LINE's message)."""
        wait = await self.limiters[req.endpoint].reserve(1)
        if wait > 0:
            self.metrics.wait.labels(req.endpoint).inc(wait)
            await self._sleep(wait)
        status, message = await self._post(url, headers, req.body)
        report.requests += 1
        self.metrics.requests.labels(req.endpoint, str(status) if status else "error").inc()
        verdict = ob.classify(status, message)
        if verdict == ob.OK:
            self._accepted(req, report)
        elif verdict == ob.DUPLICATE:
            report.duplicates += 1       # accepted (and billed) before a crash or a lost answer
        elif verdict == ob.GIVE_UP:
            self._give_up(req, status, message, report)
        return verdict, status, message

    async def _post(self, url: str, headers: dict, body: dict) -> tuple[int | None, str]:
        try:
            async with self._http().post(url, json=body, headers=headers, timeout=self._timeout) as resp:
                message = ""
                if resp.status >= 300:
                    try:
                        message = str((await resp.json(content_type=None)).get("message", ""))
                    except (ValueError, AttributeError, aiohttp.ClientError):
                        message = ""
                return resp.status, message
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            return None, type(exc).__name__

    def _accepted(self, req: ob.Request, report: Report) -> None:
        report.accepted += 1
        if req.endpoint == ob.REPLY:
            report.replies += 1
            self.metrics.recipients.labels(req.endpoint).inc()
            return
        # LINE bills each recipient of a push or multicast once, but none who blocked the account
        count = sum(1 for to in req.recipients if to not in self.blocked)
        report.recipients += count
        report.billed += count
        self.metrics.recipients.labels(req.endpoint).inc(count)
        self.metrics.billed.labels(self.tenant.id).inc(count)
        month = datetime.fromtimestamp(self._wall(), tz(self.tenant.timezone)).strftime("%Y-%m")
        key = (self.tenant.id, month)
        self.billed[key] = self.billed.get(key, 0) + count

    def _give_up(self, req: ob.Request, status: int | None, message: str, report: Report) -> None:
        self.metrics.failures.labels(req.endpoint, str(status) if status else "error").inc()
        report.failed.append(Failure(req.endpoint, status, message, req.effect_ids))
        log.warning("gave up on %s: status %s, %d effects, key %s", req.endpoint, status, len(req.effect_ids),
                    req.retry_key)

    # -- the embedded runtime's loop --

    async def run(self, queue: asyncio.Queue, *, batch_max: int = 5000, linger: float = 0.05,
                  on_report: Callable[[Report], None] | None = None) -> None:
        """Consume outbox entries forever: gather what arrives within `linger` (so a tick's checks
        coalesce into multicasts), deliver, mark them done."""
        while True:
            batch = [await queue.get()]
            if linger > 0:
                await asyncio.sleep(linger)
            while len(batch) < batch_max and not queue.empty():
                batch.append(queue.get_nowait())
            self.metrics.queue_depth.set(queue.qsize())
            try:
                report = await self.deliver(batch)
                if on_report is not None:
                    on_report(report)
            except asyncio.CancelledError:
                raise
            except Exception:   # one bad batch must not stop the loop; what failed is in the log
                log.exception("sender batch of %d failed", len(batch))
            finally:
                for _ in batch:
                    queue.task_done()
                self.metrics.queue_depth.set(queue.qsize())
