"""linesim against real HTTP: LINE's rules, the spec validation, residents' signed webhooks, and the SDK.

Every test runs linesim on a free local port and talks to it with aiohttp (or line-bot-sdk); time is
a ManualClock (advanced by hand) or a fast ScaledClock, so nothing here waits in real time.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from linesim import (Channel, Config, Group, ManualClock, Resident, ScaledClock, group_id_for, run_linesim,
                     sign, user_id_for, verify, webhook_validator)
from linesim.residents import (callback_body, follow_event, group_source, join_event, member_joined_event,
                               message_event, ok_button_data, postback_event, unfollow_event, user_source)

TOKEN, SECRET = "test-access-token", "test-channel-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE, BOB, CAROL = user_id_for("alice"), user_id_for("bob"), user_id_for("carol")
GROUP = group_id_for("danchi-1")
TEXT = {"type": "text", "text": "お元気ですか？"}
CHECK_CARD = {
    "type": "flex", "altText": "お元気ですか？",
    "contents": {"type": "bubble", "body": {"type": "box", "layout": "vertical", "contents": [
        {"type": "text", "text": "お元気ですか？"},
        {"type": "button", "style": "primary", "action": {"type": "postback", "label": "OK", "data": "action=ok"}},
    ]}},
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def channel(**kw: Any) -> Channel:
    return Channel("city", access_token=TOKEN, secret=SECRET, **kw)


@asynccontextmanager
async def sim_and_client(config: Config) -> AsyncIterator[tuple[Any, aiohttp.ClientSession]]:
    async with run_linesim(config) as sim, aiohttp.ClientSession(sim.base_url) as http:
        yield sim, http


async def post(http: aiohttp.ClientSession, path: str, body: Any, **headers: str) -> tuple[int, dict, Any]:
    async with http.post(path, json=body, headers={**AUTH, **headers}) as r:
        return r.status, dict(r.headers), await r.json()


class Receiver:
    """A bot's webhook endpoint: checks the signature like a bot must, and keeps the bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if not verify(SECRET, raw, request.headers.get("x-line-signature", "")):
            self.bad_signatures += 1
            return web.Response(status=400)
        self.bodies.append(json.loads(raw))
        self.arrived.set()
        return web.Response(text="OK")

    async def wait(self, count: int = 1, timeout: float = 5.0) -> None:
        async def enough() -> None:
            while len(self.bodies) < count:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(enough(), timeout)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.bodies for e in b["events"]]


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/webhook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield rec, f"http://{host}:{port}/webhook"
    finally:
        await runner.cleanup()


# ---- auth, sending, recording ------------------------------------------------------------------

def test_wrong_or_missing_token_is_401():
    async def main() -> None:
        async with sim_and_client(Config([channel()])) as (sim, http):
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
                async with http.post("/v2/bot/message/push", json={"to": ALICE, "messages": [TEXT]},
                                     headers=headers) as r:
                    assert r.status == 401
                    assert "access token" in (await r.json())["message"]
            assert sim.state.deliveries == []
    run(main())


def test_push_and_multicast_are_accepted_and_recorded():
    async def main() -> None:
        async with sim_and_client(Config([channel()])) as (sim, http):
            status, headers, body = await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]})
            assert status == 200 and "x-line-request-id" in {k.lower() for k in headers}
            assert len(body["sentMessages"]) == 1 and body["sentMessages"][0]["id"]
            status, headers, body = await post(http, "/v2/bot/message/multicast",
                                               {"to": [ALICE, BOB, CAROL], "messages": [TEXT, CHECK_CARD]})
            assert status == 200 and body == {}
            multicast_id = headers["x-line-request-id"]

            to_alice = sim.state.deliveries_to(ALICE)
            assert [d.endpoint for d in to_alice] == ["push", "multicast"]
            assert to_alice[1].request_id == multicast_id and to_alice[1].messages == [TEXT, CHECK_CARD]
            async with http.get("/linesim/deliveries", params={"to": BOB}) as r:
                assert [d["endpoint"] for d in await r.json()] == ["multicast"]
            async with http.get("/linesim/stats") as r:
                stats = await r.json()
            assert stats["deliveries"] == {"total": 4, "delivered": 4, "not_delivered": 0}
            assert {"endpoint": "multicast", "status": 200, "count": 1} in stats["requests"]
            assert stats["duplicates"] == 0 and stats["channels"]["city"]["used"] == 4
            assert TOKEN not in json.dumps(stats) and SECRET not in json.dumps(stats)
    run(main())


def test_more_than_500_recipients_or_5_messages_is_400():
    async def main() -> None:
        async with sim_and_client(Config([channel()])) as (sim, http):
            many = [user_id_for(str(i)) for i in range(501)]
            status, _, body = await post(http, "/v2/bot/message/multicast", {"to": many, "messages": [TEXT]})
            assert status == 400 and body["details"][0]["property"] == "to"
            status, _, body = await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT] * 6})
            assert status == 400 and body["details"][0]["property"] == "messages"
            status, _, _ = await post(http, "/v2/bot/message/multicast", {"to": many[:500], "messages": [TEXT] * 5})
            assert status == 200
            assert len(sim.state.deliveries) == 500
    run(main())


@pytest.mark.parametrize("message, where", [
    ({"type": "text"}, "messages[0].text"),
    ({"type": "flex", "altText": "x"}, "messages[0].contents"),
    ({"type": "flex", "altText": "x", "contents": {"type": "bubble", "body": {"type": "box", "layout": "vertical",
                                                                             "contents": [{"type": "button"}]}}},
     "messages[0].contents.body.contents[0].action"),
    ({"type": "no-such-type"}, "messages[0].type"),
    ({"type": "text", "text": "hi", "quickReply": {"items": [{"type": "action"}] * 14}},
     "messages[0].quickReply.items"),
])
def test_a_body_the_spec_refuses_is_400_with_details(message, where):
    async def main() -> None:
        async with sim_and_client(Config([channel()])) as (sim, http):
            status, _, body = await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [message]})
            assert status == 400, body
            assert body["message"].startswith("The request body has")
            assert where in [d.get("property") for d in body["details"]]
            assert sim.state.deliveries == []
    run(main())


def test_a_bad_to_or_broken_json_is_400():
    async def main() -> None:
        async with sim_and_client(Config([channel()])) as (sim, http):
            status, _, _ = await post(http, "/v2/bot/message/push", {"to": "alice", "messages": [TEXT]})
            assert status == 400
            status, _, _ = await post(http, "/v2/bot/message/multicast", {"to": [GROUP], "messages": [TEXT]})
            assert status == 400  # multicast is for users, not groups
            async with http.post("/v2/bot/message/push", data=b"{not json", headers=AUTH) as r:
                assert r.status == 400
    run(main())


# ---- retry keys, reply tokens ------------------------------------------------------------------

def test_a_repeated_retry_key_is_409_and_sends_nothing_again():
    async def main() -> None:
        async with sim_and_client(Config([channel()])) as (sim, http):
            key = str(uuid.uuid4())
            body = {"to": [ALICE, BOB], "messages": [TEXT]}
            status, first, _ = await post(http, "/v2/bot/message/multicast", body, **{"X-Line-Retry-Key": key})
            assert status == 200
            status, again, answer = await post(http, "/v2/bot/message/multicast", body, **{"X-Line-Retry-Key": key})
            assert status == 409
            assert again["x-line-accepted-request-id"] == first["x-line-request-id"]
            assert again["x-line-request-id"] != first["x-line-request-id"]
            assert len(sim.state.deliveries) == 2 and sim.state.duplicates == 0

            push_key = str(uuid.uuid4())
            status, _, sent = await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]},
                                         **{"X-Line-Retry-Key": push_key})
            status, _, answer = await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]},
                                           **{"X-Line-Retry-Key": push_key})
            assert status == 409 and answer["sentMessages"] == sent["sentMessages"]
            status, _, _ = await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]},
                                      **{"X-Line-Retry-Key": "not-a-uuid"})
            assert status == 400
            assert len(sim.state.deliveries) == 3 and sim.state.stats()["duplicates"] == 0
    run(main())


def test_a_retry_key_expires_after_24_hours():
    async def main() -> None:
        clock = ManualClock()
        async with sim_and_client(Config([channel()], clock=clock)) as (sim, http):
            key = {"X-Line-Retry-Key": str(uuid.uuid4())}
            assert (await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]}, **key))[0] == 200
            clock.advance(23 * 3600)
            assert (await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]}, **key))[0] == 409
            clock.advance(3600 + 1)
            assert (await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]}, **key))[0] == 200
            assert sim.state.duplicates == 1  # the same key reached ALICE twice: what a sender must never do
    run(main())


def test_a_retry_key_on_reply_is_400():
    async def main() -> None:
        async with sim_and_client(Config([channel()])) as (sim, http):
            token = sim.state.issue_reply_token("city", user_source(ALICE))
            status, _, body = await post(http, "/v2/bot/message/reply", {"replyToken": token, "messages": [TEXT]},
                                         **{"X-Line-Retry-Key": str(uuid.uuid4())})
            assert status == 400 and "Retry-Key" in body["message"]
            assert sim.state.deliveries == []
            async with http.get(f"/v2/bot/profile/{ALICE}",
                                headers={**AUTH, "X-Line-Retry-Key": str(uuid.uuid4())}) as r:
                assert r.status == 400
            # The token was not spent by the refused request.
            assert (await post(http, "/v2/bot/message/reply", {"replyToken": token, "messages": [TEXT]}))[0] == 200
    run(main())


def test_a_reply_token_is_single_use_and_expires_after_60_seconds():
    async def main() -> None:
        clock = ManualClock()
        async with sim_and_client(Config([channel()], clock=clock)) as (sim, http):
            token = sim.state.issue_reply_token("city", user_source(ALICE))
            reply = {"replyToken": token, "messages": [TEXT]}
            status, _, body = await post(http, "/v2/bot/message/reply", reply)
            assert status == 200 and len(body["sentMessages"]) == 1
            status, _, body = await post(http, "/v2/bot/message/reply", reply)
            assert status == 400 and body["message"] == "Invalid reply token"

            fresh = sim.state.issue_reply_token("city", group_source(GROUP, ALICE))
            clock.advance(59)
            assert (await post(http, "/v2/bot/message/reply", {"replyToken": fresh, "messages": [TEXT]}))[0] == 200
            late = sim.state.issue_reply_token("city", user_source(ALICE))
            clock.advance(61)
            status, _, body = await post(http, "/v2/bot/message/reply", {"replyToken": late, "messages": [TEXT]})
            assert status == 400 and body["message"] == "Invalid reply token"
            assert [d.to for d in sim.state.deliveries] == [ALICE, GROUP]
    run(main())


# ---- rate limits and quota ---------------------------------------------------------------------

def test_the_201st_multicast_within_a_second_is_429_and_the_bucket_refills():
    async def main() -> None:
        clock = ManualClock()
        async with sim_and_client(Config([channel()], clock=clock)) as (sim, http):
            body = {"to": [ALICE], "messages": [TEXT]}
            statuses = [(await post(http, "/v2/bot/message/multicast", body))[0] for _ in range(200)]
            assert statuses == [200] * 200
            status, _, answer = await post(http, "/v2/bot/message/multicast", body)
            assert status == 429
            assert answer == {"message": "The API rate limit has been exceeded. Try again later."}
            # Other endpoints have buckets of their own.
            assert (await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]}))[0] == 200
            clock.advance(0.5)  # half a second refills half the bucket
            statuses = [(await post(http, "/v2/bot/message/multicast", body))[0] for _ in range(101)]
            assert statuses == [200] * 100 + [429]
            clock.advance(1)
            assert (await post(http, "/v2/bot/message/multicast", body))[0] == 200
            assert {"endpoint": "multicast", "status": 429, "count": 2} in sim.state.stats()["requests"]
    run(main())


def test_broadcast_is_limited_to_60_an_hour():
    async def main() -> None:
        clock = ManualClock()
        residents = [Resident(ALICE, "never"), Resident(BOB, "never")]
        async with sim_and_client(Config([channel()], residents=residents, clock=clock)) as (sim, http):
            statuses = [(await post(http, "/v2/bot/message/broadcast", {"messages": [TEXT]}))[0] for _ in range(61)]
            assert statuses == [200] * 60 + [429]
            clock.advance(60)  # one minute buys one more
            assert (await post(http, "/v2/bot/message/broadcast", {"messages": [TEXT]}))[0] == 200
            assert len(sim.state.deliveries_to(BOB)) == 61
    run(main())


def test_a_spent_quota_is_429_and_replies_still_work():
    async def main() -> None:
        async with sim_and_client(Config([channel(monthly_quota=3)])) as (sim, http):
            assert (await post(http, "/v2/bot/message/multicast", {"to": [ALICE, BOB], "messages": [TEXT]}))[0] == 200
            assert (await post(http, "/v2/bot/message/push", {"to": CAROL, "messages": [TEXT]}))[0] == 200
            status, _, body = await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]})
            assert status == 429 and body == {"message": "You have reached your monthly limit."}
            async with http.get("/v2/bot/message/quota", headers=AUTH) as r:
                assert await r.json() == {"type": "limited", "value": 3}
            async with http.get("/v2/bot/message/quota/consumption", headers=AUTH) as r:
                assert await r.json() == {"totalUsage": 3}
            token = sim.state.issue_reply_token("city", user_source(ALICE))
            assert (await post(http, "/v2/bot/message/reply", {"replyToken": token, "messages": [TEXT]}))[0] == 200
            assert len(sim.state.deliveries) == 4
    run(main())


def test_profile_and_group_member_lookups():
    async def main() -> None:
        residents = [Resident(ALICE, display_name="山田花子", groups=(GROUP,))]
        async with sim_and_client(Config([channel()], residents=residents)) as (sim, http):
            async with http.get(f"/v2/bot/profile/{ALICE}", headers=AUTH) as r:
                assert r.status == 200 and (await r.json())["displayName"] == "山田花子"
            async with http.get(f"/v2/bot/profile/{BOB}", headers=AUTH) as r:
                assert r.status == 404
            async with http.get(f"/v2/bot/group/{GROUP}/member/{ALICE}", headers=AUTH) as r:
                assert r.status == 200 and (await r.json())["userId"] == ALICE
            async with http.get(f"/v2/bot/group/{GROUP}/member/{BOB}", headers=AUTH) as r:
                assert r.status == 404
            async with http.get(f"/v2/bot/profile/{ALICE}") as r:
                assert r.status == 401
    run(main())


# ---- residents ---------------------------------------------------------------------------------

def test_an_answering_resident_posts_a_signed_valid_postback_whose_reply_token_works():
    async def main() -> None:
        # A ManualClock, so that the reply token's 60 s do not run out while the test reads the body.
        clock = ManualClock()
        async with receiver() as (rec, url):
            config = Config([channel(webhook_url=url)], residents=[Resident(ALICE, "answer", delay=1800)],
                            clock=clock, seed=7)
            async with sim_and_client(config) as (sim, http):
                sent_at = clock.now_ms()
                assert (await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [CHECK_CARD]}))[0] == 200
                clock.advance(1799)
                await asyncio.sleep(0.05)
                assert rec.bodies == []
                clock.advance(1)
                await rec.wait(1)
                body = rec.bodies[0]
                webhook_validator().validate(body)
                assert rec.bad_signatures == 0
                assert body["destination"] == sim.channel().bot_user_id
                (ev,) = body["events"]
                assert ev["type"] == "postback" and ev["postback"] == {"data": "action=ok"}
                assert ev["source"] == {"type": "user", "userId": ALICE}
                assert ev["mode"] == "active" and ev["deliveryContext"] == {"isRedelivery": False}
                assert len(ev["webhookEventId"]) == 26
                assert ev["timestamp"] - sent_at >= 1800 * 1000
                reply = {"replyToken": ev["replyToken"], "messages": [{"type": "text", "text": "ありがとう"}]}
                assert (await post(http, "/v2/bot/message/reply", reply))[0] == 200
                assert [d.endpoint for d in sim.state.deliveries_to(ALICE)] == ["push", "reply"]
    run(main())


def test_group_members_tap_with_the_group_as_source():
    async def main() -> None:
        clock = ManualClock()
        async with receiver() as (rec, url):
            residents = [Resident(ALICE, "answer", delay=60), Resident(BOB, "answer", delay=120),
                         Resident(CAROL, "never")]
            config = Config([channel(webhook_url=url)], residents=residents,
                            groups=[Group(GROUP, (ALICE, BOB, CAROL))], clock=clock)
            async with sim_and_client(config) as (sim, http):
                assert (await post(http, "/v2/bot/message/push", {"to": GROUP, "messages": [CHECK_CARD]}))[0] == 200
                assert sim.state.quota.used("city") == 3  # a group push counts its members
                await asyncio.sleep(0.05)
                assert rec.bodies == []  # virtual time has not moved
                clock.advance(60)
                await rec.wait(1)
                clock.advance(60)
                await rec.wait(2)
                await sim.settle()
                for body in rec.bodies:
                    webhook_validator().validate(body)
                sources = [e["source"] for e in rec.events]
                assert sources == [group_source(GROUP, ALICE), group_source(GROUP, BOB)]
    run(main())


def test_never_posts_nothing_and_forget_answers_only_the_resend():
    async def main() -> None:
        clock = ScaledClock(speed=5000)  # a demo's speed: the 30-minute delay takes 0.36 s
        async with receiver() as (rec, url):
            residents = [Resident(ALICE, "never", delay=1800), Resident(BOB, "forget", delay=1800)]
            config = Config([channel(webhook_url=url)], residents=residents, clock=clock)
            async with sim_and_client(config) as (sim, http):
                card = {"to": [ALICE, BOB], "messages": [CHECK_CARD]}
                assert (await post(http, "/v2/bot/message/multicast", card))[0] == 200  # the check
                await sim.settle()
                assert rec.bodies == []
                assert (await post(http, "/v2/bot/message/multicast", card))[0] == 200  # the resend
                await sim.settle()
                await rec.wait(1)
                assert [(e["type"], e["source"]["userId"]) for e in rec.events] == [("postback", BOB)]
                assert sim.state.stats()["webhooks"] == {"posted": 1, "by_status": {"200": 1}}
    run(main())


def test_a_blocking_resident_posts_unfollow_and_later_pushes_deliver_nothing():
    async def main() -> None:
        clock = ScaledClock(speed=100_000)
        async with receiver() as (rec, url):
            config = Config([channel(webhook_url=url)], residents=[Resident(ALICE, "block", delay=300)], clock=clock)
            async with sim_and_client(config) as (sim, http):
                assert (await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [CHECK_CARD]}))[0] == 200
                await rec.wait(1)
                (ev,) = rec.events
                assert ev["type"] == "unfollow" and ev["source"] == user_source(ALICE) and "replyToken" not in ev
                webhook_validator().validate(rec.bodies[0])
                used = sim.state.quota.used("city")
                status, _, _ = await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [CHECK_CARD]})
                assert status == 200  # LINE accepts it and delivers nothing
                assert [d.delivered for d in sim.state.deliveries_to(ALICE)] == [True, False]
                assert sim.state.quota.used("city") == used  # not billed either
                assert sim.state.stats()["deliveries"]["not_delivered"] == 1
                async with http.get(f"/v2/bot/profile/{ALICE}", headers=AUTH) as r:
                    assert r.status == 404
                await sim.unblock(ALICE)
                assert rec.events[-1]["type"] == "follow" and rec.events[-1]["follow"] == {"isUnblocked": True}
                await post(http, "/v2/bot/message/push", {"to": ALICE, "messages": [TEXT]})
                assert sim.state.deliveries_to(ALICE)[-1].delivered
    run(main())


def test_webhook_helpers_build_bodies_the_spec_accepts():
    import random
    rng, ts = random.Random(1), 1_796_000_000_000
    events = [
        follow_event(ALICE, reply_token="r1", timestamp=ts, rng=rng),
        follow_event(ALICE, reply_token="r2", is_unblocked=True, timestamp=ts, rng=rng),
        unfollow_event(ALICE, timestamp=ts, rng=rng),
        message_event(user_source(ALICE), "元気です", reply_token="r3", timestamp=ts, rng=rng),
        message_event(group_source(GROUP, BOB), "はい", reply_token="r4", timestamp=ts, rng=rng),
        join_event(GROUP, reply_token="r5", timestamp=ts, rng=rng),
        member_joined_event(GROUP, [ALICE, BOB], reply_token="r6", timestamp=ts, rng=rng),
        postback_event(group_source(GROUP, CAROL), "action=ok", reply_token="r7", timestamp=ts, rng=rng),
    ]
    body = callback_body(user_id_for("bot"), events)
    webhook_validator().validate(json.loads(body))
    assert verify(SECRET, body, sign(SECRET, body)) and not verify(SECRET, body + b" ", sign(SECRET, body))
    assert len({e["webhookEventId"] for e in events}) == len(events)
    with pytest.raises(ValueError):
        webhook_validator().validate({"destination": "bot", "events": [{"type": "postback"}]})
    assert ok_button_data([CHECK_CARD]) == "action=ok" and ok_button_data([TEXT]) is None


# ---- wire compatibility ------------------------------------------------------------------------

def test_line_bot_sdk_pushes_through_linesim():
    from linebot.v3.messaging import (ApiException, AsyncApiClient, AsyncMessagingApi, Configuration,
                                      FlexMessage, PushMessageRequest, TextMessage)

    async def main() -> None:
        async with run_linesim(Config([channel()])) as sim:
            async with AsyncApiClient(Configuration(host=sim.base_url, access_token=TOKEN)) as client:
                api = AsyncMessagingApi(client)
                key = str(uuid.uuid4())
                card = FlexMessage.from_dict(CHECK_CARD)
                request = PushMessageRequest(to=ALICE, messages=[TextMessage(text="こんにちは"), card])
                answer = await api.push_message(request, x_line_retry_key=key)
                assert len(answer.sent_messages) == 2
                with pytest.raises(ApiException) as e:
                    await api.push_message(request, x_line_retry_key=key)
                assert e.value.status == 409 and "x-line-accepted-request-id" in e.value.headers
            (d,) = sim.state.deliveries
            assert d.to == ALICE and d.messages[1] == CHECK_CARD
            unauthorized = Configuration(host=sim.base_url, access_token="wrong")
            async with AsyncApiClient(unauthorized) as client:
                with pytest.raises(ApiException) as e:
                    await AsyncMessagingApi(client).push_message(request)
                assert e.value.status == 401
    run(main())
