"""Posting the outgoing webhook's queue (streams/hooks/queue.py): signed, with the effect id as the
idempotency key, tried again with backoff (agents/hooks.py) until the receiver answers 2xx or a day
has gone by. Logs carry the tenant, statuses and counts: never the URL's query, the secret or a body.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

import aiohttp

from agents import hooks
from schemas.effects import Effect
from schemas.tenant import Tenant
from streams.hooks.queue import HookItem, HookQueue

log = logging.getLogger("anpi.hooks")
TIMEOUT = aiohttp.ClientTimeout(total=10)


def items_for(tenant: Tenant, effects: list[Effect], calls_url: str, now: int) -> list[HookItem]:
    """What a batch adds to the queue: its HOOKED effects, if the tenant has a webhook."""
    if not tenant.hook_url:
        return []
    return [HookItem(e.id, hooks.body(tenant.id, tenant.timezone, e, calls_url).decode(), now, 0, now)
            for e in effects if e.effect in hooks.HOOKED]


async def post_due(queue: HookQueue, tenant: Tenant, session: aiohttp.ClientSession, now: int,
                   counted: Callable[[str], None] = lambda outcome: None) -> int:
    """Post what is due now; the number delivered. `counted(outcome)`: delivered, retry, given_up."""
    items = await queue.due(now)
    if not items:
        return 0
    if not tenant.hook_url:   # the webhook was removed meanwhile: nothing is to go there any more
        await queue.done([i.key for i in items])
        return 0
    outcomes = await asyncio.gather(*(_post(tenant, session, i) for i in items))
    delivered = [i.key for i, ok in zip(items, outcomes) if ok]
    for item, ok in zip(items, outcomes):
        if ok:
            counted("delivered")
            continue
        attempts = item.attempts + 1
        when = hooks.next_try(item.first_at, attempts, now)
        if when is None:
            log.warning("tenant %s: webhook delivery given up after %d tries", tenant.id, attempts)
            counted("given_up")
            delivered.append(item.key)   # forgotten: a day late is too late for a call centre
        else:
            counted("retry")
            await queue.again(item, attempts, when)
    await queue.done(delivered)
    return sum(outcomes)


async def _post(tenant: Tenant, session: aiohttp.ClientSession, item: HookItem) -> bool:
    raw = item.body.encode()
    headers = {"Content-Type": "application/json", hooks.SIGNATURE_HEADER: hooks.signature(tenant.hook_secret, raw),
               hooks.IDEMPOTENCY_HEADER: item.key}
    try:
        async with session.post(tenant.hook_url, data=raw, headers=headers, timeout=TIMEOUT, allow_redirects=False) as r:
            if 200 <= r.status < 300:
                return True
            log.info("tenant %s: webhook answered %d (tried again later)", tenant.id, r.status)
    except (asyncio.TimeoutError, aiohttp.ClientError) as error:
        log.info("tenant %s: webhook not reached (%s; tried again later)", tenant.id, type(error).__name__)
    return False
