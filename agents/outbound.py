"""How outbound messages become LINE API calls: coalescing, retry keys, rate limits, retry policy. Pure.

Everything the sender decides that does not need a socket lives here, so it can be tested with plain
values and a fake clock, and so a sender restarted after a crash rebuilds byte-identical requests
(same bodies, same X-Line-Retry-Key) from the same effects: LINE then answers 409 instead of sending
a second time.
"""
from __future__ import annotations

import json
import random
import uuid
from typing import NamedTuple

PUSH, MULTICAST, REPLY = "push", "multicast", "reply"
MULTICAST_MAX_TO = 500      # user ids per multicast call
MESSAGES_MAX = 5            # message objects per call
# Fixed namespace: retry keys must come out the same in every process and every release.
RETRY_KEY_NAMESPACE = uuid.UUID("5b0f6a7e-3c1d-5e2a-9a41-616e70692d31")


class Item(NamedTuple):
    """One recipient's messages for one effect."""
    to: str                        # userId (U…), groupId (C…) or roomId (R…)
    messages: tuple[dict, ...]
    effect_id: str
    reply_token: str | None = None


class Request(NamedTuple):
    endpoint: str                  # push | multicast | reply
    body: dict                     # exactly the JSON body LINE gets
    retry_key: str | None          # None on reply (LINE refuses the header there)
    effect_ids: tuple[str, ...]
    recipients: tuple[str, ...]    # who is billed: one message count each (none for a reply)


def is_user(to: str) -> bool:
    return to.startswith("U")      # multicast takes user ids only; groups and rooms go by push


def retry_key(parts, scope: str = "") -> str:
    """A UUID that depends only on what the request carries (effect id → recipient pairs, sorted).

    Pairs, not bare effect ids: one contacts_notified effect goes to several contacts, and if they
    ended up in separate pushes, a key made of the effect id alone would make LINE drop all but one
    as "already accepted". `scope` (the tenant) keeps two tenants' keys apart.
    """
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, scope + "\n" + "\n".join(sorted(parts))))


def _pair(item: Item) -> str:
    return f"{item.effect_id}>{item.to}"


def _messages_key(messages: tuple[dict, ...]) -> str:
    return json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def coalesce(items: list[Item], *, scope: str = "", multicast_max: int = MULTICAST_MAX_TO) -> list[Request]:
    """Group identical message lists into multicasts of ≤ 500 users; groups and lone users go by push.

    Deterministic: the same items (in any order) give the same requests in the same order, so a
    restarted sender reuses the same retry keys. Replies are not here: they go one by one, first.
    """
    groups: dict[str, list[Item]] = {}
    keys: dict[int, str] = {}  # by object: a day's check card is one shared tuple, serialised once
    for item in items:
        if len(item.messages) > MESSAGES_MAX:
            raise ValueError(f"{item.effect_id}: more than {MESSAGES_MAX} messages for one recipient")
        if item.messages:
            key = keys.get(id(item.messages))
            if key is None:
                key = keys[id(item.messages)] = _messages_key(item.messages)
            groups.setdefault(key, []).append(item)
    out: list[Request] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda i: (i.to, i.effect_id))
        messages = list(members[0].messages)
        users = [i for i in members if is_user(i.to)]
        others = [i for i in members if not is_user(i.to)]
        for chunk in _chunks(users, multicast_max) if len(users) > 1 else [[u] for u in users]:
            if len(chunk) == 1:
                others.append(chunk[0])
                continue
            out.append(Request(MULTICAST, {"to": [i.to for i in chunk], "messages": messages},
                               retry_key([_pair(i) for i in chunk], scope),
                               tuple(i.effect_id for i in chunk), tuple(i.to for i in chunk)))
        for item in sorted(others, key=lambda i: (i.to, i.effect_id)):
            out.append(push_request(item, scope))
    return out


def _chunks(users: list[Item], size: int) -> list[list[Item]]:
    """Chunks of ≤ size with no user twice in one chunk (a multicast sends once per listed id).

    Rare repeats (two effects, same messages, same person) go to later rounds. Linear in the items."""
    rounds: list[list[Item]] = []
    seen: dict[str, int] = {}
    for item in users:
        n = seen.get(item.to, 0)
        seen[item.to] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(item)
    return [r[i:i + size] for r in rounds for i in range(0, len(r), size)]


def push_request(item: Item, scope: str = "") -> Request:
    return Request(PUSH, {"to": item.to, "messages": list(item.messages)}, retry_key([_pair(item)], scope),
                   (item.effect_id,), (item.to,))


def reply_requests(items: list[Item]) -> tuple[list[tuple[Request, list[Item]]], list[Item]]:
    """Answers that share a reply token as one reply each (a token answers once: a 「無事です」 that
    also closes a check is thanked in one message pair, not two replies of which LINE refuses the
    second), at most MESSAGES_MAX messages; (the replies with their items, the items that did not
    fit, to go by push)."""
    by_token: dict[str, list[Item]] = {}
    for item in items:
        by_token.setdefault(item.reply_token, []).append(item)
    out, overflow = [], []
    for token, group in by_token.items():
        taken, messages = [], []
        for item in group:
            if len(messages) + len(item.messages) > MESSAGES_MAX:
                overflow.append(item._replace(reply_token=None))
                continue
            taken.append(item)
            messages += item.messages
        out.append((Request(REPLY, {"replyToken": token, "messages": messages}, None,
                            tuple(i.effect_id for i in taken), ()), taken))
    return out, overflow


# --- token bucket ---------------------------------------------------------------------------------


class Bucket(NamedTuple):
    """Tokens refill at `rate` a second up to `burst`. `tokens` may go below zero: that is a queue of
    callers who already reserved their turn and are sleeping until it comes."""
    rate: float
    burst: float
    tokens: float
    stamp: float          # the clock reading `tokens` refers to


def bucket(rate: float, burst: float | None = None, now: float = 0.0) -> Bucket:
    burst = rate if burst is None else burst
    return Bucket(rate, burst, burst, now)


def take(state: Bucket, now: float, cost: float = 1.0) -> tuple[Bucket, float]:
    """Reserve `cost` tokens: (new state, seconds to wait before using them)."""
    now = max(now, state.stamp)   # a clock that steps back must not mint tokens
    tokens = min(state.burst, state.tokens + (now - state.stamp) * state.rate) - cost
    wait = -tokens / state.rate if tokens < 0 else 0.0
    return state._replace(tokens=tokens, stamp=now), wait


# --- retry policy ---------------------------------------------------------------------------------

OK, DUPLICATE, RETRY, GIVE_UP = "ok", "duplicate", "retry", "give_up"
MONTHLY_LIMIT = "monthly limit"   # LINE's 429 body: "You have reached your monthly limit."


class RetryPolicy(NamedTuple):
    """How long a call LINE did not take (5xx, 429, no answer) is tried again, with the same key.

    By default for as long as LINE fails, up to `patience`: LINE keeps a retry key 24 hours, so a
    call it took without our hearing (a lost answer) is answered 409 for that long, and after that
    a repeat could reach the person twice. A call not taken in 24 hours has also been overtaken by
    the ladder: the check it carried was resent and escalated meanwhile."""
    # Short waits: the rate limiters (streams/line/sender.py) already keep retries within LINE's limits,
    # and with 30 % of calls failing the slowest of thousands fails about seven times in a row: with
    # 0.5 s doubling to 30 s that one call alone took 48 s, and the drain with it.
    base: float = 0.1                # seconds before the first retry (before jitter)
    cap: float = 5.0                 # longest single wait
    attempts: int | None = None      # tries in all, the first included; None: until `patience` ends
    patience: float = 24 * 3600.0    # seconds from the first try after which a call is given up


def classify(status: int | None, message: str = "") -> str:
    """What to do with an answer. None is a timeout or a broken connection: the request may or may
    not have been accepted, which is exactly what the retry key is for."""
    if status is None:
        return RETRY
    if 200 <= status < 300:
        return OK
    if status == 409:
        return DUPLICATE   # accepted earlier under this retry key: success, nothing sent twice
    if status == 429:
        return GIVE_UP if MONTHLY_LIMIT in (message or "").lower() else RETRY
    if status >= 500:
        return RETRY
    return GIVE_UP         # 400, 401, 403, 404…: sending again cannot help; report it


def backoff(policy: RetryPolicy, attempt: int, seed: str) -> float:
    """Seconds before retry number `attempt` (1, 2, …): exponential with jitter, seeded by the
    request's key so a run replays exactly while many senders still spread out."""
    ceiling = min(policy.cap, policy.base * 2 ** (attempt - 1))
    return ceiling / 2 + random.Random(f"{seed}:{attempt}").random() * ceiling / 2
