"""Simulated residents, and the signed webhook bodies LINE would POST for them.

A resident reacts to a check card (any message holding a postback action whose data says
`action=ok`, the card's OK button) the way its behaviour says:

- `answer`: taps OK after `delay` virtual seconds;
- `forget`: lets a card go unanswered and taps the next one (the resend), so it alternates;
  with `answer_chance` (seeded) it sometimes taps the first card after all;
- `never`: never taps;
- `block`: after `delay`, blocks the account: linesim stops delivering to it and POSTs `unfollow`.

A tap is a `postback` webhook with a fresh reply token that linesim honours for 60 s. In a group
(つながり) every member of the group sees the card and taps with the group as the event's source.
All waiting goes through the injected clock, and every id comes from a seeded RNG, so a run is
repeatable and an accelerated clock runs a 30-minute delay in milliseconds.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs

import aiohttp

log = logging.getLogger("linesim.residents")

BEHAVIOURS = ("answer", "forget", "never", "block")
OK_ACTION = "ok"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# ---- records ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Resident:
    user_id: str
    behaviour: str = "answer"
    delay: float = 60.0            # virtual seconds between seeing a card and reacting to it
    jitter: float = 0.0            # plus a seeded uniform [0, jitter) on top of delay
    answer_chance: float = 0.0     # `forget` only: chance of tapping a first card anyway
    channel: str | None = None     # Channel.name; None: the first channel
    display_name: str = ""
    groups: tuple[str, ...] = ()   # groupIds this resident is in (also settable via Group)

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"resident {self.user_id}: behaviour must be one of {BEHAVIOURS}")


@dataclass(frozen=True, slots=True)
class Group:
    group_id: str
    members: tuple[str, ...]
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookPost:
    """One webhook linesim POSTed (the body is kept for tests; it holds no secrets)."""
    channel: str
    event_types: tuple[str, ...]
    status: int | None             # None: no webhook URL, or the request failed
    body: bytes = field(repr=False)


# ---- ids, signatures, bodies ------------------------------------------------------------------

def user_id_for(text: str) -> str:
    """A valid-looking LINE userId (U + 32 hex) derived from any text, e.g. user_id_for("alice")."""
    return "U" + hashlib.sha256(text.encode()).hexdigest()[:32]


def group_id_for(text: str) -> str:
    return "C" + hashlib.sha256(text.encode()).hexdigest()[:32]


def webhook_event_id(timestamp_ms: int, rng: random.Random) -> str:
    """A ULID: 48-bit millisecond time then 80 random bits, in Crockford base32 (26 characters)."""
    n = (timestamp_ms & ((1 << 48) - 1)) << 80 | rng.getrandbits(80)
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def sign(channel_secret: str, body: bytes) -> str:
    """x-line-signature: Base64(HMAC-SHA256(channel secret, raw body))."""
    return base64.b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()).decode()


def verify(channel_secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(channel_secret, body), signature)


def user_source(user_id: str) -> dict[str, Any]:
    return {"type": "user", "userId": user_id}


def group_source(group_id: str, user_id: str | None = None) -> dict[str, Any]:
    return {"type": "group", "groupId": group_id, **({"userId": user_id} if user_id else {})}


def event(kind: str, source: dict[str, Any], *, timestamp: int | None = None, rng: random.Random | None = None,
          reply_token: str | None = None, mode: str = "active", redelivery: bool = False,
          **fields: Any) -> dict[str, Any]:
    """A webhook event object with the common properties every event carries."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    out: dict[str, Any] = {
        "type": kind,
        "mode": mode,
        "timestamp": ts,
        "source": source,
        "webhookEventId": webhook_event_id(ts, rng or random.Random()),
        "deliveryContext": {"isRedelivery": redelivery},
    }
    if reply_token is not None:
        out["replyToken"] = reply_token
    out.update(fields)
    return out


def follow_event(user_id: str, *, reply_token: str, is_unblocked: bool = False, **kw: Any) -> dict[str, Any]:
    return event("follow", user_source(user_id), reply_token=reply_token,
                 follow={"isUnblocked": is_unblocked}, **kw)


def unfollow_event(user_id: str, **kw: Any) -> dict[str, Any]:
    return event("unfollow", user_source(user_id), **kw)


def message_event(source: dict[str, Any], text: str, *, reply_token: str, message_id: str | None = None,
                  **kw: Any) -> dict[str, Any]:
    rng = kw.get("rng") or random.Random()
    kw["rng"] = rng
    mid = message_id or str(rng.randrange(10**17, 10**18))
    content = {"type": "text", "id": mid, "text": text, "quoteToken": f"q{rng.getrandbits(64):016x}"}
    return event("message", source, reply_token=reply_token, message=content, **kw)


def join_event(group_id: str, *, reply_token: str, **kw: Any) -> dict[str, Any]:
    return event("join", group_source(group_id), reply_token=reply_token, **kw)


def member_joined_event(group_id: str, user_ids: Iterable[str], *, reply_token: str, **kw: Any) -> dict[str, Any]:
    return event("memberJoined", group_source(group_id), reply_token=reply_token,
                 joined={"members": [user_source(u) for u in user_ids]}, **kw)


def postback_event(source: dict[str, Any], data: str, *, reply_token: str, **kw: Any) -> dict[str, Any]:
    return event("postback", source, reply_token=reply_token, postback={"data": data}, **kw)


def callback_body(destination: str, events: list[dict[str, Any]]) -> bytes:
    """The raw body of one webhook request (sign exactly these bytes)."""
    return json.dumps({"destination": destination, "events": events},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signed_webhook(channel_secret: str, destination: str, events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) as LINE would POST them to a bot's webhook URL."""
    body = callback_body(destination, events)
    return body, {"Content-Type": "application/json; charset=utf-8",
                  "x-line-signature": sign(channel_secret, body),
                  "User-Agent": "LineBotWebhook/2.0"}


def ok_button_data(messages: list[dict[str, Any]]) -> str | None:
    """The data of the first postback action saying action=ok anywhere in the messages, else None."""
    stack: list[Any] = list(messages)
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            if node.get("type") == "postback" and isinstance(node.get("data"), str):
                if parse_qs(node["data"]).get("action") == [OK_ACTION]:
                    return node["data"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


# ---- the crowd ---------------------------------------------------------------------------------

class Crowd:
    """All residents of all channels; reacts to deliveries by POSTing webhooks in the background.

    `channels` maps Channel.name to a record with `secret`, `bot_user_id` and `webhook_url`.
    `issue_reply_token(channel, source)` and `block(channel, user_id)` are linesim's state, handed in
    so that this module does not depend on the server.
    """

    def __init__(self, residents: Iterable[Resident], groups: Iterable[Group], channels: dict[str, Any], *,
                 clock: Any, seed: int,
                 issue_reply_token: Callable[[str, dict[str, Any]], str],
                 block: Callable[[str, str], None]):
        self.channels = channels
        self.clock = clock
        self._rng = random.Random(seed)
        self._issue_reply_token = issue_reply_token
        self._block = block
        default = next(iter(channels), "")
        self.residents: dict[tuple[str, str], Resident] = {}
        self.group_members: dict[tuple[str, str], list[str]] = {}
        for r in residents:
            ch = r.channel or default
            self.residents[(ch, r.user_id)] = r
            for g in r.groups:
                self.group_members.setdefault((ch, g), []).append(r.user_id)
        for g in groups:
            members = self.group_members.setdefault((g.channel or default, g.group_id), [])
            members.extend(m for m in g.members if m not in members)
        self._last_answered: dict[tuple[str, str, str], bool] = {}
        self._last_messages: list[dict[str, Any]] | None = None   # held, so its id cannot be reused
        self._last_data: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.posts: list[WebhookPost] = []

    # -- lifecycle
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def drain(self) -> None:
        """Waits until every reaction scheduled so far has run (with a ManualClock, advance first)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- queries
    def members_of(self, channel: str, group_id: str) -> list[str]:
        return list(self.group_members.get((channel, group_id), ()))

    def followers(self, channel: str) -> list[str]:
        return [uid for (ch, uid) in self.residents if ch == channel]

    def resident(self, channel: str, user_id: str) -> Resident | None:
        return self.residents.get((channel, user_id))

    # -- reactions
    def on_delivery(self, channel: str, to: str, messages: list[dict[str, Any]]) -> None:
        """Called by linesim for every message actually delivered to `to` (a user or a group)."""
        if messages is not self._last_messages:  # a multicast hands the same list for each recipient
            self._last_messages, self._last_data = messages, ok_button_data(messages)
        data = self._last_data
        if data is None:
            return
        if to.startswith("U"):
            self._react(channel, to, None, data)
        else:
            for uid in self.members_of(channel, to):
                self._react(channel, uid, to, data)

    def _react(self, channel: str, user_id: str, group_id: str | None, data: str) -> None:
        r = self.residents.get((channel, user_id))
        if r is None:
            return
        key = (channel, user_id, group_id or "")
        # Randomness is drawn for every card in delivery order, so a seed fixes the whole run.
        wait = r.delay + (self._rng.random() * r.jitter if r.jitter else 0.0)
        lucky = self._rng.random() < r.answer_chance
        if r.behaviour == "answer":
            action = "tap"
        elif r.behaviour == "forget":
            answered_last = self._last_answered.get(key, True)
            action = "tap" if (not answered_last or lucky) else "ignore"
        elif r.behaviour == "block" and group_id is None:
            action = "block"
        else:
            action = "ignore"
        self._last_answered[key] = action == "tap"
        if action == "ignore":
            return
        coro = self._tap(channel, user_id, group_id, data, wait) if action == "tap" else \
            self._block_account(channel, user_id, wait)
        self._spawn(coro)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tap(self, channel: str, user_id: str, group_id: str | None, data: str, wait: float) -> None:
        await self.clock.sleep(wait)
        source = group_source(group_id, user_id) if group_id else user_source(user_id)
        token = self._issue_reply_token(channel, source)
        await self.post(channel, [postback_event(source, data, reply_token=token,
                                                 timestamp=self.clock.now_ms(), rng=self._rng)])

    async def _block_account(self, channel: str, user_id: str, wait: float) -> None:
        await self.clock.sleep(wait)
        self._block(channel, user_id)
        await self.post(channel, [unfollow_event(user_id, timestamp=self.clock.now_ms(), rng=self._rng)])

    async def post(self, channel: str, events: list[dict[str, Any]]) -> int | None:
        """POSTs one signed webhook with these events to the channel's webhook URL; returns the status."""
        ch = self.channels[channel]
        body, headers = signed_webhook(ch.secret, ch.bot_user_id, events)
        status: int | None = None
        if ch.webhook_url and self._session is not None:
            try:
                async with self._session.post(ch.webhook_url, data=body, headers=headers) as resp:
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                # LINE gives up too (redelivery is off by default); keep the run going.
                log.warning("webhook to channel %s failed: %s", channel, type(e).__name__)
        self.posts.append(WebhookPost(channel, tuple(e["type"] for e in events), status, body))
        return status
