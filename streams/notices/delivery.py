"""The delivery of notices, the same loop on both runtimes: a tenant's pending chunks to LINE through
its Sender (rate limits, retry policy), a few at a time, each outcome committed through the
tenant's `Notices` (book.py). `anpi serve` runs one per tenant beside its engine; on Kafka every
`anpi sender` replica runs one per tenant, and a chunk is claimed (Redis) by one replica at a time.

Each chunk's X-Line-Retry-Key comes from the tenant, the notice id and the chunk index only
(agents/notices.retry_key): after a crash, or a claim that ran out, the chunk goes again with the
same key, LINE answers 409 to what it had taken, and nobody gets a notice twice.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agents import notices as nt
from agents import outbound as ob
from streams.notices.book import Notices, Work
from streams.line.sender import Report

log = logging.getLogger("anpi.notices")
CLAIM_MS = 30_000   # a replica that died holds its chunks this long; one slower is harmless (409)


class NoticeDelivery:
    """The background task of one tenant: pending chunks to LINE, `window` at a time, each committed.

    The Sender's limiter keeps to LINE's 200 multicasts a second; a chunk LINE did not take (no
    answer, 429 of the rate limit, 5xx: after the Sender's own retries) waits `retry_seconds` and
    goes again with the same key; one LINE refused (400, the month's quota spent) counts as failed.
    Cancel the task to stop it; a new one resumes the rest.
    """

    def __init__(self, notices: Notices, tenant: str, sender, now_ms: Callable[[], int], *, window: int = 8,
                 idle_seconds: float = 0.25, retry_seconds: float = 5.0, claim_ms: int = CLAIM_MS):
        self.notices, self.tenant, self.sender, self.now_ms = notices, tenant, sender, now_ms
        self.claim_ms = claim_ms
        self.window, self.idle_seconds, self.retry_seconds = window, idle_seconds, retry_seconds

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        flying: dict[tuple[str, int], asyncio.Task] = {}
        later: dict[tuple[str, int], float] = {}     # chunks LINE did not take (or another has): not before then
        try:
            while True:
                if len(flying) < self.window:
                    now = loop.time()
                    try:
                        work_list = await self.notices.pending(self.tenant, self.window + len(flying) + len(later))
                    except Exception as error:   # the store away for a moment (Redis): try again shortly
                        log.warning("tenant %s: pending notices not read (%s: %s)", self.tenant,
                                    type(error).__name__, error)
                        work_list = []
                    for work in work_list:
                        key = (work.notice, work.chunk)
                        if key in flying or later.get(key, 0.0) > now or len(flying) >= self.window:
                            continue
                        later.pop(key, None)
                        flying[key] = asyncio.create_task(self._one(work), name=f"notice {work.notice}:{work.chunk}")
                if not flying:
                    await asyncio.sleep(self.idle_seconds)
                    continue
                done, _ = await asyncio.wait(flying.values(), timeout=self.idle_seconds,
                                             return_when=asyncio.FIRST_COMPLETED)
                for key, task in list(flying.items()):
                    if task in done:
                        del flying[key]
                        if task.cancelled():
                            continue
                        if task.exception() is not None:
                            log.error("tenant %s: notice chunk %s failed: %r", self.tenant, key, task.exception())
                            later[key] = loop.time() + self.retry_seconds
                        elif task.result() is False:
                            later[key] = loop.time() + self.retry_seconds
        finally:
            for task in flying.values():
                task.cancel()
            await asyncio.gather(*flying.values(), return_exceptions=True)

    async def _one(self, work: Work) -> bool:
        """Deliver one chunk; False if it is to go again later (LINE never took it, or another process has it)."""
        if not await self.notices.claim(self.tenant, work, self.claim_ms):
            return False
        to = await self.notices.recipients(self.tenant, work)
        messages = await self.notices.messages(self.tenant, work.notice)
        key = nt.retry_key(self.tenant, work.notice, work.chunk)
        report = Report()
        verdict, status = await self.sender.send_prepared(work.endpoint, to if work.endpoint == ob.MULTICAST else to[0],
                                                          messages, key, report)
        reason = report.failed[-1].reason if report.failed else ""
        if verdict == ob.GIVE_UP and ob.classify(status, reason) == ob.RETRY:
            # no answer, busy (429 of the rate limit) or a server error, after the Sender's own retries:
            # not a refusal, so the chunk waits and goes again with the same key
            log.warning("tenant %s: notice %s chunk %d: LINE did not take it (status %s); will try again (key %s)",
                        self.tenant, work.notice, work.chunk, status, key)
            return False
        if verdict == ob.GIVE_UP:
            log.warning("tenant %s: notice %s chunk %d refused by LINE (status %s)", self.tenant, work.notice,
                        work.chunk, status)
        await self.notices.finish(self.tenant, work, verdict in (ob.OK, ob.DUPLICATE), status, self.now_ms())
        return True
