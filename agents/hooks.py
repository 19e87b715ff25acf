"""A tenant's outgoing webhook: the staff calls, their reminders and their ends, handed to a
municipal call centre or a contracted 見守り service as signed JSON. Pure: which effects go, the
exact body, its signature, and when a failed delivery is tried again.

    POST <the tenant's URL>
    Content-Type: application/json
    X-Anpi-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed by the tenant's hook secret>
    Idempotency-Key: <the effect id>        (the same on every retry: the receiver drops repeats)

    {"id": "U…:3:staff_call", "type": "staff_call", "tenant": "town", "at": "2026-12-02T21:00:00+09:00",
     "member": "U…", "cycle": 3, "reason": "help", "link": "https://…/admin/town/calls#case-…"}

`member` is the resident's LINE user id (what the admin screen shows); no name, number or message
ever goes in a body. A 2xx answer is delivered; anything else (or none within the timeout) is tried
again after RETRY_FIRST, doubling to RETRY_CAP, for up to GIVE_UP_AFTER, then given up and counted.
"""
from __future__ import annotations

import hashlib
import hmac
import json

from agents.clock import HOUR, MINUTE, iso
from agents.on_call import case_anchor
from schemas import effects as fx
from schemas.effects import Effect

HOOKED = frozenset({fx.STAFF_CALL, fx.STAFF_REMINDER, fx.RESOLVED_AFTER_ESCALATION})
RETRY_FIRST, RETRY_CAP, GIVE_UP_AFTER = MINUTE, HOUR, 24 * HOUR
SIGNATURE_HEADER, IDEMPOTENCY_HEADER = "X-Anpi-Signature", "Idempotency-Key"


def body(tenant: str, zone: str, effect: Effect, calls_url: str = "") -> bytes:
    """The request body for `effect` (one of HOOKED): the same bytes every time it is built."""
    obj = {"id": effect.id, "type": effect.effect, "tenant": tenant, "at": iso(zone, effect.at),
           "member": effect.subject, "cycle": effect.cycle}
    if effect.effect == fx.STAFF_CALL:
        obj["reason"] = effect.data
    elif effect.effect == fx.STAFF_REMINDER:
        obj["n"] = int(effect.data or 0)
    else:
        obj["by"] = "staff" if effect.data else "resident"   # who ended the case: staff, or the resident's answer
    if calls_url:
        obj["link"] = f"{calls_url}#{case_anchor(effect.subject, effect.cycle)}"
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def verify(secret: str, raw: bytes, header: str | None) -> bool:
    """What a receiver does (and the tests): constant-time comparison of the header with the body's."""
    return header is not None and hmac.compare_digest(signature(secret, raw), header)


def next_try(first_tried: int, attempts: int, now: int) -> int | None:
    """When to try again after `attempts` failed tries (the first at `first_tried`); None: give up."""
    if now - first_tried >= GIVE_UP_AFTER:
        return None
    return now + min(RETRY_CAP, RETRY_FIRST * 2 ** (attempts - 1))
