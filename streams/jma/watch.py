"""`anpi jma watch`: the 気象庁 feed polled, its earthquake bulletins turned into the tenants' roll-calls.

Each round (`Watch.round`):

    the feed      a conditional GET (If-None-Match / If-Modified-Since with what the last answer
                  gave); 304: nothing new, and nothing else is fetched
    its entries   the VXSE51/52/53 not seen before (the ids seen are kept, bounded, in the store),
                  oldest first; each bulletin fetched once and read (streams/jma/bulletin.py)
    the decision  for every tenant with areas: trigger.on_bulletin, then trigger.release for the
                  held roll-calls whose hold is over (streams/jma/trigger.py, pure: this module is
                  its shell: HTTP, the clock, logs, metrics, and the store)
    the actions   Start: the roll-call goes to the runtime (`QuakeStore.start`); Hold, Cancel and
                  Skip: one log line and a metric; all but the noise also in the tenant's audit log

Where tenants, memories and roll-calls live is a `QuakeStore`, one seam with two backends:
streams/jma/in_sqlite.py (the embedded runtime's file: the roll-call into the tenant's inbox) and
streams/jma/in_kafka.py (the Kafka deployment's Redis, and its inbound topic).

Crashes. A tenant's memory is saved after its actions are applied, and an entry is marked seen after
every tenant's memory is saved: a crash in between fetches and applies the bulletin again. A tenant
whose memory was saved finds nothing new in it (trigger rule 4: "already_started"); one whose
memory was not starts the same roll-call again, under the same id, which the engine takes as a
replay: agents/rollcall.py `start` does nothing for a member whose current roll-call has that id
(and `post` the same for a group). Only a roll-call that staff started in the minutes between the
crash and the restart would make the repeat reach people again.

Nothing stops the watcher: a feed or bulletin that cannot be fetched, a bulletin that cannot be read
(one line each, without the body; counted) or a store that does not answer (the round ends there,
and the next one tries again: nothing is marked seen that was not applied). Run one watcher per
deployment; a second would only repeat the first's roll-calls under the same ids.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from schemas.events import RollCall
from streams import startup
from streams.jma import bulletin, feed, trigger
from streams.jma.trigger import Action, Cancel, Hold, Memory, QuakeSettings, Start
from streams.tenants.registry import AuditRow
from streams.tenants.settings import QuakeConfig

log = logging.getLogger("anpi.jma")

DEFAULT_FEED_URL = "https://www.data.jma.go.jp/developer/xml/feed/eqvol.xml"   # 地震火山, high frequency
# JMA's page on its PULL feeds (xml.kishou.go.jp/xmlpull.html) asks clients not to fetch again what
# they fetched once (it blocks addresses that download the same files over and over): hence the
# conditional GET and the ids kept. Its high-frequency feed changes at most about once a minute (as
# JMA describes it; the page's wording on the cycle was not at hand when this was written): polling
# faster fetches nothing new, so 60 s is the default and the floor.
POLL_SECONDS = MIN_POLL_SECONDS = 60
TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10, sock_read=20)   # every request: a hung JMA is a failed round
MAX_BYTES = 10 << 20     # a VXSE53 of a great quake is a few hundred kB; the long feed about 1 MB
SEEN_KEEP = 20_000       # entry ids kept; every id the current feed lists is re-marked each time it changes
TRIES = 5                # a bulletin that fails this many rounds in a row (HTTP) is given up, and logged
USER_AGENT = "anpi-jma-watch"
AUDIT_LOGIN = "jma"      # who the audit log says did it: the 気象庁 feed, not a member of staff
RELEASE_FLOOR = 1.0      # seconds: a release that failed is retried no faster than this

# Skip reasons that are about the tenant, kept in its audit log; the others (a quake elsewhere, a
# test bulletin, a repeat, an old one) come with almost every bulletin for almost every tenant:
# they are counted and logged at DEBUG, or they would bury the rest.
AUDITED_SKIPS = frozenset({trigger.S_BELOW_THRESHOLD, trigger.S_WEAKER_AFTERSHOCK, trigger.S_SUPERSEDED,
                           trigger.S_CANCELLED, trigger.S_DRILL_NOT_OPTED_IN})


def wall_ms() -> int:
    return int(time.time() * 1000)


# --- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchSettings:
    feed_url: str = DEFAULT_FEED_URL
    poll_seconds: float = POLL_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "WatchSettings":
        """ANPI_JMA_FEED_URL, ANPI_JMA_POLL_SECONDS; `startup.BadSetting` names the first that is wrong."""
        url = env.get("ANPI_JMA_FEED_URL") or DEFAULT_FEED_URL
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise startup.BadSetting(f"ANPI_JMA_FEED_URL={url!r}: expected an http(s) URL, e.g. {DEFAULT_FEED_URL}")
        raw = env.get("ANPI_JMA_POLL_SECONDS")
        poll = startup.number(env, "ANPI_JMA_POLL_SECONDS", POLL_SECONDS, float)
        if poll < MIN_POLL_SECONDS:
            raise startup.BadSetting(f"ANPI_JMA_POLL_SECONDS={raw!r}: must be at least {MIN_POLL_SECONDS} "
                                     "(JMA's feed changes about once a minute; faster polling only loads its servers)")
        return cls(url, poll)


def quake_settings(tenant: str, config: QuakeConfig) -> QuakeSettings:
    """A tenant's stored QuakeConfig as the trigger reads it (ValueError: not one it can use)."""
    return QuakeSettings(tenant, config.areas, config.threshold, config.hold_minutes * 60_000, config.drills)


# --- the seam -------------------------------------------------------------------------------------


class QuakeStore(Protocol):
    """Where the watcher's state is and where its roll-calls go: one backend per runtime."""

    async def tenants(self) -> list[tuple[str, QuakeConfig]]:
        """Every tenant with a QuakeConfig and at least one area."""
    async def memory(self, tenant: str) -> Memory:
        """The tenant's trigger memory (an empty Memory the first time)."""
    async def save(self, tenant: str, memory: Memory, audit: Iterable[AuditRow] = ()) -> None:
        """The memory and the audit rows of what it decided, together."""
    async def seen(self) -> set[str]: ...
    async def mark_seen(self, ids: Iterable[str], at: int) -> None:
        """Remember these entry ids (seen at `at`, epoch ms); the oldest beyond SEEN_KEEP are forgotten."""
    async def start(self, tenant: str, rollcall: RollCall) -> None:
        """The roll-call on the runtime's way in, durably, when it returns."""


async def quake_tenants(registry) -> list[tuple[str, QuakeConfig]]:
    """The tenants of a registry (streams/tenants) the feed can start roll-calls for."""
    out = []
    for entry in await registry.entries():
        stored = await registry.settings(entry.id)
        if stored is not None and stored.quake is not None and stored.quake.areas:
            out.append((entry.id, stored.quake))
    return out


# --- metrics and the round's record -----------------------------------------------------------------


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.polls = Counter("anpi_jma_feed_polls", "Polls of the 気象庁 feed, by outcome (new, unchanged: "
                             "answered 304, failed)", ["outcome"], registry=self.registry)
        self.bulletins = Counter("anpi_jma_bulletins", "Bulletins, by outcome (applied; bad: fetched but not a "
                                 "bulletin that can be read; failed: HTTP error or timeout, tried again; "
                                 "given_up: failed too often)", ["outcome"], registry=self.registry)
        self.actions = Counter("anpi_jma_actions", "The trigger's decisions, by tenant, action (start, hold, "
                               "cancel, skip) and reason", ["tenant", "action", "reason"], registry=self.registry)
        self.store_errors = Counter("anpi_jma_store_errors", "Rounds cut short: the store or the runtime did not "
                                    "answer (tried again next round)", registry=self.registry)
        self.last_poll = Gauge("anpi_jma_last_poll_timestamp_seconds", "When the feed last answered (200 or 304)",
                               registry=self.registry)


@dataclass
class Round:
    """What one round did, for the caller (the CLI's summary, the tests)."""
    feed: str = "skipped"          # new | unchanged (304) | failed | skipped (a release-only round)
    fetched: list[str] = field(default_factory=list)   # bulletin URLs fetched
    bad: int = 0                   # fetched, not readable: skipped for good
    failed: int = 0                # not fetched (HTTP error, timeout): tried again next round
    actions: list[tuple[str, Action]] = field(default_factory=list)   # (tenant, action), in order
    error: str | None = None       # the store failed: the round stopped there

    @property
    def ok(self) -> bool:
        return self.error is None and self.feed != "failed"

    def started(self) -> list[tuple[str, RollCall]]:
        return [(tenant, a.rollcall) for tenant, a in self.actions if isinstance(a, Start)]


class _StoreFailed(Exception):
    pass


class _Unfetched(Exception):
    """An HTTP answer that is no document: `str(error)` is the one line to log."""


# --- the watcher ------------------------------------------------------------------------------------


class Watch:
    """The I/O shell around trigger.py. `clock` gives epoch ms: the `now` of every decision.

        async with Watch(store, settings, clock) as watch:
            await watch.round()      # or: await watch.run(stop)
    """

    def __init__(self, store: QuakeStore, settings: WatchSettings = WatchSettings(),
                 clock: Callable[[], int] = wall_ms, metrics: Metrics | None = None,
                 session: aiohttp.ClientSession | None = None):
        self.store, self.settings, self.clock = store, settings, clock
        self.metrics = metrics or Metrics()
        self._session, self._own_session = session, session is None
        self._validators: dict[str, str] = {}   # the feed's last ETag / Last-Modified, as request headers
        self._seen: set[str] | None = None      # loaded from the store at the first round
        self._tries: dict[str, int] = {}        # entry id -> rounds its bulletin failed in a row
        self.next_due: int | None = None        # the earliest held roll-call, epoch ms (for `run`)
        feed_url = urlsplit(settings.feed_url)
        self._origin = (feed_url.scheme, feed_url.netloc)

    async def __aenter__(self) -> "Watch":
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self

    async def __aexit__(self, *exc) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop`: a poll every poll_seconds, and in between a release when a hold ends
        (a held roll-call starts on time, not up to a minute late)."""
        next_poll = 0.0
        while not stop.is_set():
            polling = time.monotonic() >= next_poll
            try:
                await self.round(fetch=polling)
            except Exception:   # a bug of ours: logged, and the next round runs all the same
                log.exception("jma watch: the round failed")
            if polling:
                next_poll = time.monotonic() + self.settings.poll_seconds
            wait = next_poll - time.monotonic()
            if self.next_due is not None:
                wait = min(wait, max(RELEASE_FLOOR, (self.next_due - self.clock()) / 1000))
            try:
                await asyncio.wait_for(stop.wait(), max(wait, 0.0))
            except asyncio.TimeoutError:
                pass

    async def round(self, fetch: bool = True) -> Round:
        """One poll of the feed (unless `fetch` is False: the release only) and its consequences."""
        done = Round()
        try:
            tenants = await self._tenants()
        except Exception as error:   # without the tenants nothing can be decided: fetch nothing either
            return self._store_failed(done, error)
        memories: dict[str, Memory] = {}
        try:
            if fetch:
                await self._poll(tenants, memories, done)
            await self._release(tenants, memories, done)
        except _StoreFailed:
            pass
        return done

    # --- the feed ---------------------------------------------------------------------------------

    async def _poll(self, tenants, memories, done: Round) -> None:
        try:
            status, body, headers = await self._get(self.settings.feed_url, self._validators)
            if status == 304:
                done.feed = "unchanged"
                self.metrics.polls.labels("unchanged").inc()
                self.metrics.last_poll.set(self.clock() / 1000)
                return
            if status != 200:
                raise _Unfetched(f"HTTP {status}")
            listed = feed.entries(body)
        except (aiohttp.ClientError, asyncio.TimeoutError, _Unfetched, feed.BadFeed) as error:
            log.warning("jma feed %s: not read (%s)", _shown(self.settings.feed_url), _one_line(error))
            done.feed = "failed"
            self.metrics.polls.labels("failed").inc()
            return
        done.feed = "new"
        self.metrics.polls.labels("new").inc()
        self.metrics.last_poll.set(self.clock() / 1000)
        seen = await self._seen_ids(done)
        if seen and listed and not any(entry.id in seen for entry in listed):
            # the feed keeps only its latest entries: the watcher was away longer than it reaches back
            log.warning("jma feed: none of its %d entries was seen before; bulletins may have been missed "
                        "while the watcher was away (JMA's eqvol_l.xml reaches back further)", len(listed))
        for entry in reversed(listed):   # the feed is newest first; an event's bulletins apply in order
            if entry.kind is not None and entry.id not in seen:
                await self._bulletin(entry, tenants, memories, done)
        # What the feed lists is marked again, so that SEEN_KEEP drops only ids it no longer lists; a
        # bulletin left to try again is not, and the validators are kept only when none is left: a
        # 304 would otherwise hide it until the feed changes.
        waiting = {entry.id for entry in listed if entry.id in self._tries}
        for lost in set(self._tries) - waiting:   # left the feed before it could be fetched
            log.error("jma feed: an entry whose bulletin was never fetched is no longer listed; it is lost")
            del self._tries[lost]
        await self._mark([entry.id for entry in listed if entry.id not in waiting], done)
        self._validators = {} if waiting else _validators(headers)

    async def _bulletin(self, entry: feed.Entry, tenants, memories, done: Round) -> None:
        name = entry.url.rsplit("/", 1)[-1]
        parts = urlsplit(entry.url)
        if parts.netloc != self._origin[1] or parts.scheme not in ("https", self._origin[0]):
            # JMA's feed names its own files (https may stand for the feed's http); anything else is
            # not fetched: the feed is no list of addresses for this process to visit
            log.warning("jma bulletin %s: not on the feed's host; not fetched", name)
            return await self._bad(entry, done)
        try:
            done.fetched.append(entry.url)
            status, body, _ = await self._get(entry.url)
            if status != 200:
                raise _Unfetched(f"HTTP {status}")
        except (aiohttp.ClientError, asyncio.TimeoutError, _Unfetched) as error:
            return self._failed(entry, name, error, done)
        self._tries.pop(entry.id, None)
        try:
            read = bulletin.parse(body)
        except bulletin.BadBulletin as error:
            log.warning("jma bulletin %s: not read: %s", name, _one_line(error))
            return await self._bad(entry, done)
        now = self.clock()
        log.info("jma bulletin %s: %s %s %s of event %s", name, read.kind, read.status, read.info_type, read.event_id)
        for tenant, settings in tenants:
            memory = await self._memory(tenant, memories, done)
            after, actions = trigger.on_bulletin(memory, settings, read, now)
            await self._apply(tenant, memory, after, actions, now, memories, done)
        self.metrics.bulletins.labels("applied").inc()
        await self._mark([entry.id], done)

    def _failed(self, entry: feed.Entry, name: str, error: Exception, done: Round) -> None:
        done.failed += 1
        tries = self._tries[entry.id] = self._tries.get(entry.id, 0) + 1
        if tries < TRIES:
            log.warning("jma bulletin %s: not fetched (%s); tried again next round", name, _one_line(error))
            self.metrics.bulletins.labels("failed").inc()
            return
        log.error("jma bulletin %s: not fetched in %d rounds (%s); given up", name, tries, _one_line(error))
        self.metrics.bulletins.labels("given_up").inc()
        del self._tries[entry.id]   # marked with the rest of the feed: never fetched again

    async def _bad(self, entry: feed.Entry, done: Round) -> None:
        # the same bytes would fail the same way: marked seen at once, never fetched again
        done.bad += 1
        self.metrics.bulletins.labels("bad").inc()
        await self._mark([entry.id], done)

    async def _get(self, url: str, headers: Mapping[str, str] = {}) -> tuple[int, bytes, Mapping[str, str]]:
        if self._session is None:
            raise RuntimeError("Watch.round outside `async with Watch(...)`")
        async with self._session.get(url, headers=dict(headers), timeout=TIMEOUT) as answer:
            if answer.status != 200:
                return answer.status, b"", answer.headers
            body = bytearray()
            async for chunk in answer.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > MAX_BYTES:
                    raise _Unfetched(f"more than {MAX_BYTES} bytes")
            return 200, bytes(body), answer.headers

    # --- the decision's consequences ------------------------------------------------------------------

    async def _release(self, tenants, memories, done: Round) -> None:
        now, due = self.clock(), []
        for tenant, settings in tenants:
            memory = await self._memory(tenant, memories, done)
            after, actions = trigger.release(memory, settings, now)
            await self._apply(tenant, memory, after, actions, now, memories, done)
            due.append(trigger.next_due(after))
        # A tenant no longer listed (its areas removed) keeps its held roll-calls in its memory, and
        # they never start: staff who take the areas away have stopped the trigger.
        self.next_due = min((d for d in due if d is not None), default=None)

    async def _apply(self, tenant: str, before: Memory, after: Memory, actions: list[Action], now: int,
                     memories: dict[str, Memory], done: Round) -> None:
        """Start first, then save: see the module's docstring for why this order is safe."""
        audit = []
        try:
            for action in actions:
                if isinstance(action, Start):
                    await self.store.start(tenant, action.rollcall)
                done.actions.append((tenant, action))
                row = self._report(tenant, action, now)
                if row is not None:
                    audit.append(row)
            if after != before or audit:
                await self.store.save(tenant, after, audit)
        except Exception as error:
            self._store_failed(done, error)
            raise _StoreFailed from error
        memories[tenant] = after

    def _report(self, tenant: str, action: Action, now: int) -> AuditRow | None:
        """One log line (tenant, ids, areas: no personal data), a metric, and the audit row, if any."""
        if isinstance(action, Start):
            rc = action.rollcall
            self.metrics.actions.labels(tenant, "start", "").inc()
            log.info("tenant %s: roll-call %s started%s for %s", tenant, rc.id, " (drill)" if rc.drill else "",
                     _areas(rc.areas))
            return AuditRow(now, AUDIT_LOGIN, "jma_rollcall_started", _areas(rc.areas), rc.id)
        if isinstance(action, Hold):
            rc = action.rollcall
            self.metrics.actions.labels(tenant, "hold", "").inc()
            log.info("tenant %s: roll-call %s held until %s for %s", tenant, rc.id, _utc(action.until),
                     _areas(rc.areas))
            return AuditRow(now, AUDIT_LOGIN, "jma_rollcall_held",
                            json.dumps({"until": action.until, "areas": list(rc.areas or ())}), rc.id)
        if isinstance(action, Cancel):
            what = "reported_cancelled" if action.started else "cancelled"
            self.metrics.actions.labels(tenant, "cancel", what).inc()
            log.info("tenant %s: roll-call %s %s by JMA's 取消", tenant, action.rollcall_id,
                     "already out: reported" if action.started else "cancelled before it started")
            return AuditRow(now, AUDIT_LOGIN, f"jma_rollcall_{what}", None, action.rollcall_id)
        self.metrics.actions.labels(tenant, "skip", action.reason).inc()
        audited = action.reason in AUDITED_SKIPS
        log.log(logging.INFO if audited else logging.DEBUG, "tenant %s: event %s: %s%s", tenant, action.event_id,
                action.reason, f" ({_areas(action.areas)})" if action.areas else "")
        if not audited:
            return None
        return AuditRow(now, AUDIT_LOGIN, "jma_skipped",
                        json.dumps({"reason": action.reason, "areas": list(action.areas)}), action.event_id)

    # --- the store ------------------------------------------------------------------------------------

    async def _tenants(self) -> list[tuple[str, QuakeSettings]]:
        out = []
        for tenant, config in await self.store.tenants():
            try:
                out.append((tenant, quake_settings(tenant, config)))
            except ValueError as error:   # stored before a rule tightened: the others go on
                log.error("tenant %s: its quake settings cannot be used (%s); no roll-calls", tenant, error)
        return out

    async def _memory(self, tenant: str, memories: dict[str, Memory], done: Round) -> Memory:
        if tenant not in memories:
            try:
                memories[tenant] = await self.store.memory(tenant)
            except Exception as error:
                self._store_failed(done, error)
                raise _StoreFailed from error
        return memories[tenant]

    async def _seen_ids(self, done: Round) -> set[str]:
        if self._seen is None:
            try:
                self._seen = set(await self.store.seen())
            except Exception as error:
                self._store_failed(done, error)
                raise _StoreFailed from error
        return self._seen

    async def _mark(self, ids: list[str], done: Round) -> None:
        if not ids:
            return
        try:
            await self.store.mark_seen(ids, self.clock())
        except Exception as error:
            self._store_failed(done, error)
            raise _StoreFailed from error
        self._seen.update(ids)

    def _store_failed(self, done: Round, error: Exception) -> Round:
        # Nothing more this round; and the feed is read in full next time, so that what was not
        # applied is applied then (a 304 would hide it).
        done.error = f"{type(error).__name__}: {_one_line(error)}"
        self._validators = {}
        self.metrics.store_errors.inc()
        log.error("jma watch: the store did not answer (%s); trying again next round", done.error)
        return done


def _validators(headers: Mapping[str, str]) -> dict[str, str]:
    out = {}
    if headers.get("ETag"):
        out["If-None-Match"] = headers["ETag"]
    if headers.get("Last-Modified"):
        out["If-Modified-Since"] = headers["Last-Modified"]
    return out


def _areas(areas) -> str:
    return "the whole tenant" if areas is None else ",".join(areas)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(url: str) -> str:
    """A URL as logged: no user, password or query (a proxy's credentials must not reach the log)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _one_line(error: Exception, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "…"


# --- `anpi jma watch` ---------------------------------------------------------------------------------


def summary(done: Round) -> str:
    """The CLI's line about a round: the feed, the bulletins, what started, held or was cancelled."""
    n = len(done.fetched)
    parts = [f"feed {done.feed}", f"{n} bulletin{'' if n == 1 else 's'} fetched ({done.bad} bad, {done.failed} failed)"]
    for tenant, action in done.actions:
        if isinstance(action, Start):
            parts.append(f"{tenant}: started {action.rollcall.id} ({_areas(action.rollcall.areas)})")
        elif isinstance(action, Hold):
            parts.append(f"{tenant}: held {action.rollcall.id} ({_areas(action.rollcall.areas)})")
        elif isinstance(action, Cancel):
            parts.append(f"{tenant}: {'reported' if action.started else 'cancelled'} {action.rollcall_id}")
    if done.error:
        parts.append(f"stopped: {done.error}")
    return "; ".join(parts)


def main(db: str | None, kafka: bool, once: bool, env: Mapping[str, str] = os.environ) -> int:
    """`anpi jma watch [--db FILE | --kafka] [--once]`. A bad setting raises startup.BadSetting (exit 2);
    --once: 0 when the round went through, 1 when the feed or the store failed."""
    settings = WatchSettings.from_env(env)
    kafka_settings = None
    if kafka:
        from streams.kafka.settings import Settings
        kafka_settings = Settings.from_env(env)
    else:
        startup.sqlite_file(db)
        if not os.path.exists(db):
            raise startup.BadSetting(f"--db {db}: no such file (its tenants and areas come first: anpi tenant add, "
                                     "anpi tenant areas)")
    host = kafka_settings.web_host if kafka_settings is not None else "127.0.0.1"
    metrics_port = startup.metrics_port(env, "ANPI_JMA_METRICS_PORT", host)
    clock = wall_ms
    if env.get("ANPI_CLOCK_URL"):   # a demo's or a test's virtual time (streams/shared_clock.py)
        from streams.shared_clock import SharedClock
        clock = SharedClock(env["ANPI_CLOCK_URL"]).now_ms
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("aiohttp", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    metrics = Metrics()
    if metrics_port:
        from prometheus_client import start_http_server
        start_http_server(metrics_port, host, registry=metrics.registry)
    return asyncio.run(_main(settings, db, kafka_settings, once, clock, metrics))


async def _main(settings: WatchSettings, db, kafka_settings, once: bool, clock, metrics: Metrics) -> int:
    async with _store(db, kafka_settings) as store:
        async with Watch(store, settings, clock, metrics) as watch:
            where = f"Kafka {kafka_settings.inbound}" if kafka_settings is not None else db
            if once:
                done = await watch.round()
                print(f"anpi jma watch: {summary(done)}")
                return 0 if done.ok else 1
            log.info("jma watch: %s every %g s, roll-calls into %s", _shown(settings.feed_url), settings.poll_seconds,
                     where)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await watch.run(stop)
            return 0


class _store:
    """The backend the command runs on, opened and closed."""

    def __init__(self, db: str | None, kafka_settings):
        self.db, self.kafka_settings, self.close = db, kafka_settings, None

    async def __aenter__(self) -> QuakeStore:
        if self.kafka_settings is None:
            from streams.embedded.store import Store
            from streams.jma.in_sqlite import SqliteQuakeStore
            store = Store(self.db)
            self.close = _sync(store.close)
            return SqliteQuakeStore(store)
        import redis.asyncio as aioredis
        from streams.jma.in_kafka import KafkaQuakeStore
        redis = aioredis.from_url(self.kafka_settings.redis, socket_timeout=10, socket_connect_timeout=5)
        store = KafkaQuakeStore(self.kafka_settings, redis)

        async def close() -> None:
            await store.stop()
            await redis.aclose()
        self.close = close
        return store

    async def __aexit__(self, *exc) -> None:
        if self.close is not None:
            await self.close()


def _sync(fn: Callable[[], None]) -> Callable[[], object]:
    async def run() -> None:
        fn()
    return run
