"""The LINE Messaging API as an aiohttp app: the endpoints anpi uses, with LINE's rules.

Rules, in the order a request meets them: bearer token (401), rate limit per channel and endpoint
(429), X-Line-Retry-Key (400 where LINE refuses it, 409 on a repeat within 24 h), JSON body against
messaging-api.yml (400), reply token (400), monthly quota (429), then delivery: 200 with
`x-line-request-id`. A push to a resident who blocked the account is accepted and delivers nothing,
as on LINE. Every delivery is recorded for tests and the demo (`state.deliveries`, GET /linesim/...).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from aiohttp import web

from . import richmenus, spec
from .richmenus import RichMenus
from .limits import MonthlyQuota, Rate, RateLimiter, WallClock
from .residents import Crowd, Group, Resident, follow_event, unfollow_event, user_id_for

RETRY_KEY_ENDPOINTS = frozenset({"push", "multicast", "broadcast", "narrowcast"})
BILLED_ENDPOINTS = frozenset({"push", "multicast", "broadcast", "narrowcast"})
_USER_ID = re.compile(r"^U[0-9a-f]{32}$")
_CHAT_ID = re.compile(r"^[UCR][0-9a-f]{32}$")

MSG_AUTH = "Authentication failed. Confirm that the access token in the authorization header is valid."
MSG_RATE = "The API rate limit has been exceeded. Try again later."
MSG_QUOTA = "You have reached your monthly limit."
MSG_REPLY_TOKEN = "Invalid reply token"
MSG_RETRY_CONFLICT = "The retry key is already accepted"
MSG_RETRY_UNSUPPORTED = "The X-Line-Retry-Key header is not supported by this endpoint"
MSG_RETRY_INVALID = "The value of the X-Line-Retry-Key header is invalid"
MSG_TO_INVALID = "The property, 'to', in the request body is invalid (line: -, column: -)"
ID_TOKEN_TTL = 3600.0      # seconds an ID token is good for
ID_TOKEN_ISSUER = "https://access.line.me"


# ---- configuration -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Channel:
    """One LINE official account as linesim knows it."""
    name: str                                    # label in stats and deliveries (never the token)
    access_token: str = field(repr=False)
    secret: str = field(repr=False)
    bot_user_id: str = ""                        # webhook `destination`; derived from name if empty
    webhook_url: str | None = None               # where residents' webhooks go
    monthly_quota: int | None = None             # messages per month; None: no limit ("none")
    login_channel_id: str = ""                   # the LINE Login channel of its LIFF app: ID tokens' `aud`

    def __post_init__(self) -> None:
        if not self.bot_user_id:
            object.__setattr__(self, "bot_user_id", user_id_for("bot:" + self.name))
        if not self.login_channel_id:  # ten digits, like LINE's channel ids
            digits = int(hashlib.sha256(("login:" + self.name).encode()).hexdigest(), 16) % 9_000_000_000
            object.__setattr__(self, "login_channel_id", str(1_000_000_000 + digits))

    @classmethod
    def from_tenant(cls, tenant: Any, **kw: Any) -> "Channel":
        """From schemas.tenant.Tenant (its id becomes the channel name)."""
        return cls(name=tenant.id, access_token=tenant.channel_access_token, secret=tenant.channel_secret, **kw)


@dataclass(slots=True)
class Config:
    channels: list[Channel]
    residents: list[Resident] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    clock: Any = field(default_factory=WallClock)   # WallClock | ScaledClock | ManualClock
    seed: int = 0
    rates: dict[str, Rate] | None = None            # overrides of limits.LINE_RATES, per endpoint
    reply_token_ttl: float = 60.0
    retry_key_ttl: float = 24 * 3600.0
    strict_ids: bool = True   # refuse `to` values that are not LINE ids (U/C/R + 32 hex), as LINE does
    # False: count deliveries per (channel, recipient) instead of keeping a Delivery for each (for
    # benchmarks of a million recipients); `deliveries` then stays empty, use `delivery_counts()`
    keep_deliveries: bool = True
    # False: skip the OpenAPI check of request bodies (~10 ms of CPU per check card here, which caps
    # linesim below LINE's 200 multicasts/s): for benchmarks of the sender only; ids, limits, retry
    # keys and quota still apply
    validate_requests: bool = True


# ---- records -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Delivery:
    endpoint: str
    request_id: str
    channel: str
    to: str                          # userId or groupId
    messages: list[dict[str, Any]]
    delivered: bool                  # False: the resident had blocked the account
    at_ms: int
    retry_key: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _ReplyToken:
    channel: str
    source: dict[str, Any]
    issued_at: float


@dataclass(frozen=True, slots=True)
class _Accepted:
    request_id: str
    at: float
    body: dict[str, Any]


class Refusal(Exception):
    """An error answer, shaped as LINE's ErrorResponse."""

    def __init__(self, status: int, message: str, details: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body: dict[str, Any] = {"message": message, **({"details": details} if details else {}), **(extra or {})}


# ---- state -------------------------------------------------------------------------------------

class SimState:
    """Everything linesim remembers: what was sent, to whom, and the budgets spent."""

    def __init__(self, config: Config):
        if not config.channels:
            raise ValueError("linesim needs at least one channel")
        self.config = config
        self.clock = config.clock
        self.channels: dict[str, Channel] = {c.name: c for c in config.channels}
        self._by_token: dict[str, Channel] = {c.access_token: c for c in config.channels}
        self._rng = random.Random(config.seed)
        self.limiter = RateLimiter(self.clock.now, config.rates)
        self.quota = MonthlyQuota(self.clock.now)
        for c in config.channels:
            self.quota.set_limit(c.name, c.monthly_quota)
        self.deliveries: list[Delivery] = []
        self._counts: dict[str, Counter[str]] = {}          # keep_deliveries=False: channel -> to -> delivered
        self._not_delivered = 0                             # keep_deliveries=False: to blocked recipients
        self.requests: Counter[tuple[str, int]] = Counter()
        self.delivered = 0                                  # deliveries made (not to blocked ones), so far
        self.duplicates = 0
        self.blocked: set[tuple[str, str]] = set()
        self._delivered_keys: set[tuple[str, str, str]] = set()
        self._reply_tokens: dict[str, _ReplyToken] = {}
        self._retry_keys: dict[tuple[str, str], _Accepted] = {}
        self._message_seq = 0
        self.rich_menus = RichMenus()
        self.crowd = Crowd(config.residents, config.groups, self.channels, clock=self.clock, seed=config.seed,
                           issue_reply_token=self.issue_reply_token, block=self.block)

    # -- ids
    def new_request_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _new_message_id(self) -> str:
        self._message_seq += 1
        return str(500_000_000_000_000_000 + self._message_seq)

    # -- lookups
    def channel_for(self, authorization: str | None) -> Channel | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        return self._by_token.get(authorization[len("Bearer "):].strip())

    # -- reply tokens
    def issue_reply_token(self, channel: str, source: dict[str, Any]) -> str:
        """A fresh reply token for an event from `source`, good once within reply_token_ttl."""
        token = f"{self._rng.getrandbits(128):032x}"
        self._reply_tokens[token] = _ReplyToken(channel, source, self.clock.now())
        return token

    def use_reply_token(self, channel: str, token: str) -> dict[str, Any] | None:
        """The event source the token answers, consuming it; None if unknown, used, expired or foreign."""
        entry = self._reply_tokens.get(token)
        if entry is None or entry.channel != channel:
            return None
        del self._reply_tokens[token]  # single use, even when it turns out to be expired
        if self.clock.now() - entry.issued_at > self.config.reply_token_ttl:
            return None
        return entry.source

    # -- ID tokens (LIFF / LINE Login): HS256 JWTs signed with the channel secret, as LINE's are
    def issue_id_token(self, channel: str, user_id: str, ttl: float = ID_TOKEN_TTL) -> str:
        """What `liff.getIDToken()` returns to `user_id` in `channel`'s LIFF app."""
        ch = self.channels[channel]
        now = int(self.clock.now())
        claims: dict[str, Any] = {"iss": ID_TOKEN_ISSUER, "sub": user_id, "aud": ch.login_channel_id,
                                  "exp": now + int(ttl), "iat": now, "amr": ["linesso"]}
        r = self.crowd.resident(channel, user_id)
        if r is not None and r.display_name:
            claims["name"] = r.display_name
        head = _b64url(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
        body = _b64url(json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode())
        signature = hmac.new(ch.secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64url(signature)}"

    def verify_id_token(self, token: str, client_id: str) -> dict[str, Any]:
        """LINE's checks of POST /oauth2/v2.1/verify: the claims, or Refusal 400 with LINE's wording."""
        try:
            head, body, signature = token.split(".")
            claims = json.loads(_unb64url(body))
            given = _unb64url(signature)
        except (ValueError, UnicodeDecodeError):
            raise _id_token_refusal("Invalid IdToken.") from None
        if not isinstance(claims, dict):
            raise _id_token_refusal("Invalid IdToken.")
        channel = next((c for c in self.channels.values() if c.login_channel_id == claims.get("aud")), None)
        expected = hmac.new(channel.secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest() if channel else b""
        if channel is None or not hmac.compare_digest(expected, given):
            raise _id_token_refusal("Invalid IdToken.")
        if claims.get("iss") != ID_TOKEN_ISSUER:
            raise _id_token_refusal("Invalid IdToken Issuer.")
        if claims.get("aud") != client_id:
            raise _id_token_refusal("Invalid IdToken Audience.")
        if claims.get("exp", 0) <= self.clock.now():
            raise _id_token_refusal("IdToken expired.")
        return claims

    # -- blocking
    def block(self, channel: str, user_id: str) -> None:
        self.blocked.add((channel, user_id))

    def unblock(self, channel: str, user_id: str) -> None:
        self.blocked.discard((channel, user_id))

    def is_blocked(self, channel: str, user_id: str) -> bool:
        return (channel, user_id) in self.blocked

    # -- retry keys
    def accepted(self, channel: str, key: str) -> _Accepted | None:
        entry = self._retry_keys.get((channel, key))
        if entry is not None and self.clock.now() - entry.at > self.config.retry_key_ttl:
            del self._retry_keys[(channel, key)]
            return None
        return entry

    def accept(self, channel: str, key: str, request_id: str, body: dict[str, Any]) -> None:
        self._retry_keys[(channel, key)] = _Accepted(request_id, self.clock.now(), body)

    # -- deliveries
    def record(self, d: Delivery) -> None:
        self.deliveries.append(d)
        self.delivered += d.delivered
        if d.delivered and d.retry_key is not None:
            # The same retry key reaching the same recipient twice is a double send, whatever the content.
            key = (d.channel, d.retry_key, d.to)
            if key in self._delivered_keys:
                self.duplicates += 1
            self._delivered_keys.add(key)

    def count(self, channel: str, recipients: list[str], reachable: list[str], retry_key: str | None) -> None:
        """keep_deliveries=False: what `record` notes for each recipient, without keeping a Delivery."""
        counts = self._counts.get(channel)
        if counts is None:
            counts = self._counts[channel] = Counter()
        counts.update(reachable)
        self.delivered += len(reachable)
        self._not_delivered += len(recipients) - len(reachable)
        if retry_key is not None:
            keys = self._delivered_keys
            for to in reachable:
                key = (channel, retry_key, to)
                if key in keys:
                    self.duplicates += 1
                keys.add(key)

    def delivery_counts(self, channel: str | None = None) -> Counter[str]:
        """How many deliveries each recipient got (delivered ones only), in either recording mode."""
        if not self.config.keep_deliveries:
            if channel is not None:
                return Counter(self._counts.get(channel, {}))
            total: Counter[str] = Counter()
            for counts in self._counts.values():
                total.update(counts)
            return total
        return Counter(d.to for d in self.deliveries if d.delivered and (channel is None or d.channel == channel))

    def deliveries_to(self, to: str | None = None, channel: str | None = None) -> list[Delivery]:
        return [d for d in self.deliveries if (to is None or d.to == to) and (channel is None or d.channel == channel)]

    def stats(self) -> dict[str, Any]:
        if self.config.keep_deliveries:
            delivered = sum(1 for d in self.deliveries if d.delivered)
            not_delivered = len(self.deliveries) - delivered
        else:
            delivered = sum(sum(c.values()) for c in self._counts.values())
            not_delivered = self._not_delivered
        by_status = Counter(str(p.status) for p in self.crowd.posts)
        return {
            "requests": [{"endpoint": e, "status": s, "count": n} for (e, s), n in sorted(self.requests.items())],
            "deliveries": {"total": delivered + not_delivered, "delivered": delivered,
                           "not_delivered": not_delivered},
            "duplicates": self.duplicates,
            "webhooks": {"posted": len(self.crowd.posts), "by_status": dict(sorted(by_status.items()))},
            "channels": {name: {"quota": _quota_json(self.quota.limit(name)),
                                "used": self.quota.used(name),
                                "blocked": sum(1 for ch, _ in self.blocked if ch == name)}
                         for name in self.channels},
        }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _id_token_refusal(description: str) -> Refusal:
    # LINE Login answers in OAuth's shape, not the Messaging API's ErrorResponse
    refusal = Refusal(400, description)
    refusal.body = {"error": "invalid_request", "error_description": description}
    return refusal


def _quota_json(limit: int | None) -> dict[str, Any]:
    return {"type": "none"} if limit is None else {"type": "limited", "value": limit}


# ---- handlers ----------------------------------------------------------------------------------

STATE = web.AppKey("linesim_state", SimState)
Handler = Callable[[web.Request, SimState, Channel, str], Awaitable[web.Response]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _line_endpoint(name: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wraps a handler with what every LINE endpoint does: auth, rate limit, request id, counting."""

    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        request_id = state.new_request_id()
        try:
            channel = state.channel_for(request.headers.get("Authorization"))
            if channel is None:
                raise Refusal(401, MSG_AUTH)
            if not state.limiter.allow(channel.name, name):
                raise Refusal(429, MSG_RATE)
            if "X-Line-Retry-Key" in request.headers and name not in RETRY_KEY_ENDPOINTS:
                raise Refusal(400, MSG_RETRY_UNSUPPORTED)
            response = await handler(request, state, channel, request_id)
        except Refusal as r:
            response = _json(r.body, r.status, r.headers)
        response.headers["x-line-request-id"] = request_id
        state.requests[(name, response.status)] += 1
        return response

    return handle


async def _body(request: web.Request, path: str) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Refusal(400, "The request body could not be parsed as JSON") from None
    if not request.app[STATE].config.validate_requests:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise Refusal(400, "The request body has 1 error(s)")
        return body
    problems = spec.request_validator("post", path).problems(body)
    if problems:
        raise Refusal(400, spec.error_body(problems)["message"], [p.as_json() for p in problems])
    return body


def _retry_key(request: web.Request, state: SimState, channel: Channel, endpoint: str) -> str | None:
    key = request.headers.get("X-Line-Retry-Key")
    if key is None:
        return None
    try:
        uuid.UUID(key)
    except ValueError:
        raise Refusal(400, MSG_RETRY_INVALID) from None
    seen = state.accepted(channel.name, key)
    if seen is not None:
        # A retry of an accepted request: say so, and send nothing again.
        raise Refusal(409, MSG_RETRY_CONFLICT, headers={"x-line-accepted-request-id": seen.request_id},
                      extra={k: v for k, v in seen.body.items() if k == "sentMessages"})
    return key


def _send(endpoint: str, path: str) -> Handler:
    """push / multicast / broadcast / reply: one handler, the differences spelled out inline."""

    async def handler(request: web.Request, state: SimState, channel: Channel, request_id: str) -> web.Response:
        key = _retry_key(request, state, channel, endpoint)
        body = await _body(request, path)
        messages: list[dict[str, Any]] = body["messages"]
        strict = state.config.strict_ids
        if endpoint == "push":
            if strict and not _CHAT_ID.match(body["to"]):
                raise Refusal(400, MSG_TO_INVALID)
            recipients = [body["to"]]
        elif endpoint == "multicast":
            if strict and not all(_USER_ID.match(t) for t in body["to"]):
                raise Refusal(400, MSG_TO_INVALID)
            recipients = list(dict.fromkeys(body["to"]))  # one message per person, even if listed twice
        elif endpoint == "broadcast":
            recipients = [u for u in state.crowd.followers(channel.name) if not state.is_blocked(channel.name, u)]
        else:  # reply
            source = state.use_reply_token(channel.name, body["replyToken"])
            if source is None:
                raise Refusal(400, MSG_REPLY_TOKEN)
            recipients = [source.get("groupId") or source.get("roomId") or source["userId"]]

        reachable = [t for t in recipients if not state.is_blocked(channel.name, t)]
        if endpoint in BILLED_ENDPOINTS:
            # LINE counts one message per person reached; a group counts its members.
            cost = sum(max(1, len(state.crowd.members_of(channel.name, t))) if not t.startswith("U") else 1
                       for t in reachable)
            if not state.quota.try_spend(channel.name, cost):
                raise Refusal(429, MSG_QUOTA)

        if state.config.keep_deliveries:
            now_ms = state.clock.now_ms()
            reached = set(reachable)
            for t in recipients:
                state.record(Delivery(endpoint, request_id, channel.name, t, messages,
                                      t in reached, now_ms, key))
        else:
            state.count(channel.name, recipients, reachable, key)
        result: dict[str, Any] = {}
        if endpoint in ("push", "reply"):
            result = {"sentMessages": [{"id": state._new_message_id(),
                                        **({"quoteToken": f"q{state._rng.getrandbits(64):016x}"}
                                           if m.get("type") in ("text", "textV2", "sticker") else {})}
                                       for m in messages]}
        if key is not None:
            state.accept(channel.name, key, request_id, result)
        for t in reachable:
            state.crowd.on_delivery(channel.name, t, messages)
        return _json(result)

    return handler


async def _profile(request: web.Request, state: SimState, channel: Channel, request_id: str) -> web.Response:
    uid = request.match_info["userId"]
    r = state.crowd.resident(channel.name, uid)
    if r is None or state.is_blocked(channel.name, uid):
        raise Refusal(404, "Not found")
    return _json({"userId": uid, "displayName": r.display_name or f"resident {uid[-4:]}", "language": "ja"})


async def _group_member(request: web.Request, state: SimState, channel: Channel, request_id: str) -> web.Response:
    gid, uid = request.match_info["groupId"], request.match_info["userId"]
    if uid not in state.crowd.members_of(channel.name, gid):
        raise Refusal(404, "Not found")
    r = state.crowd.resident(channel.name, uid)
    return _json({"userId": uid, "displayName": (r.display_name if r else "") or f"member {uid[-4:]}"})


async def _quota(request: web.Request, state: SimState, channel: Channel, request_id: str) -> web.Response:
    return _json(_quota_json(state.quota.limit(channel.name)))


async def _consumption(request: web.Request, state: SimState, channel: Channel, request_id: str) -> web.Response:
    return _json({"totalUsage": state.quota.used(channel.name)})


async def _verify_id_token(request: web.Request) -> web.Response:
    """LINE Login's POST /oauth2/v2.1/verify (form fields id_token, client_id; optional user_id)."""
    state = request.app[STATE]
    form = await request.post()
    token, client_id = form.get("id_token"), form.get("client_id")
    try:
        if not isinstance(token, str) or not token or not isinstance(client_id, str) or not client_id:
            raise _id_token_refusal("Required parameter is missing.")
        claims = state.verify_id_token(token, client_id)
        user_id = form.get("user_id")
        if user_id is not None and user_id != claims.get("sub"):
            raise _id_token_refusal("Invalid IdToken Subject Identifier.")
    except Refusal as r:
        state.requests[("verify_id_token", r.status)] += 1
        return _json(r.body, r.status)
    state.requests[("verify_id_token", 200)] += 1
    return _json(claims)


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats())


async def _clock(request: web.Request) -> web.Response:
    """linesim's own time (epoch seconds), how fast it runs now (`pace`: virtual seconds per real
    second, 0 for a clock moved by hand or held) and when it runs (`speed`): what another process
    reads to share linesim's clock (streams/shared_clock.py)."""
    clock = request.app[STATE].clock
    return _json({"now": clock.now(), "pace": clock.pace(), "speed": getattr(clock, "speed", clock.pace())})


async def _deliveries(request: web.Request) -> web.Response:
    state = request.app[STATE]
    found = state.deliveries_to(request.query.get("to"), request.query.get("channel"))
    return _json([d.as_json() for d in found])


def create_app(config: Config) -> web.Application:
    state = SimState(config)
    app = web.Application()
    app[STATE] = state
    send_paths = {"push": "/v2/bot/message/push", "multicast": "/v2/bot/message/multicast",
                  "broadcast": "/v2/bot/message/broadcast", "reply": "/v2/bot/message/reply"}
    for endpoint, path in send_paths.items():
        app.router.add_post(path, _line_endpoint(endpoint, _send(endpoint, path)))
    app.router.add_get("/v2/bot/profile/{userId}", _line_endpoint("profile", _profile))
    app.router.add_get("/v2/bot/group/{groupId}/member/{userId}", _line_endpoint("group_member", _group_member))
    app.router.add_get("/v2/bot/message/quota", _line_endpoint("quota", _quota))
    app.router.add_get("/v2/bot/message/quota/consumption", _line_endpoint("quota_consumption", _consumption))
    richmenus.routes(app.router, _line_endpoint, Refusal, _json)
    app.router.add_post("/oauth2/v2.1/verify", _verify_id_token)
    app.router.add_get("/linesim/stats", _stats)
    app.router.add_get("/linesim/deliveries", _deliveries)
    app.router.add_get("/linesim/clock", _clock)

    async def start_crowd(app: web.Application) -> None:
        await app[STATE].crowd.start()

    async def stop_crowd(app: web.Application) -> None:
        await app[STATE].crowd.stop()

    app.on_startup.append(start_crowd)
    app.on_cleanup.append(stop_crowd)
    return app


# ---- running it --------------------------------------------------------------------------------

@dataclass(slots=True)
class Sim:
    """A running linesim: its address and its state."""
    base_url: str
    state: SimState
    app: web.Application

    def channel(self, name: str | None = None) -> Channel:
        return self.state.channels[name] if name else next(iter(self.state.channels.values()))

    async def block(self, user_id: str, channel: str | None = None) -> None:
        """The resident blocks the account now: deliveries stop and the bot gets `unfollow`."""
        ch = self.channel(channel)
        self.state.block(ch.name, user_id)
        await self.state.crowd.post(ch.name, [unfollow_event(user_id, timestamp=self.state.clock.now_ms())])

    async def unblock(self, user_id: str, channel: str | None = None) -> None:
        """The resident unblocks: deliveries resume and the bot gets `follow` with isUnblocked."""
        ch = self.channel(channel)
        self.state.unblock(ch.name, user_id)
        token = self.state.issue_reply_token(ch.name, {"type": "user", "userId": user_id})
        await self.state.crowd.post(ch.name, [follow_event(user_id, reply_token=token, is_unblocked=True,
                                                           timestamp=self.state.clock.now_ms())])

    async def settle(self) -> None:
        """Waits for every resident reaction scheduled so far (a ManualClock must be advanced first)."""
        await self.state.crowd.drain()


@asynccontextmanager
async def run_linesim(config: Config, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Sim]:
    """Serves linesim on host:port (0: a free port) for the duration of the `async with`."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield Sim(f"http://{bound_host}:{bound_port}", app[STATE], app)
    finally:
        await runner.cleanup()

