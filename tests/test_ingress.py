"""The webhook ingress over real HTTP: signatures, parsing, de-duplication, and what lands on Kafka.

The Kafka tests give each case a fresh tenant (its own `<tenant>-inbound` and `<tenant>-audit`
topics, 8 partitions, deleted after) and read back what the runtime would read, decoded with
streams/codec.py. The fuzz generates bodies from LINE's own webhook spec (linesim/specs/webhook.yml)
and runs against an in-process sink, so it stays fast.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import http.client
import json
import re
import socket
import threading
import uuid
from unittest import mock
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs

import jsonschema
import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from agents import invitation
from agents.subject import addressed
from schemas.events import (Acknowledge, AskHelp, Follow, GroupJoined, GroupLeft, Help, LeaveContact, Message, Ok,
                            RollCall, Roster, StaffLinked, Unfollow)
from schemas.settings import Schedule
from schemas.tenant import Tenant
from streams import codec
from streams.admin.redis_accounts import RedisStaff
from streams.line.ingress import (KafkaSink, MemoryDedupe, MemorySink, RedisDedupe, create_app,
                             signed)
from streams.kafka.feed import event_message
from streams.kafka.records import Naming
from streams.kafka.settings import Settings, partition_of
from streams.line import webhook_events
from streams.line.webhook_events import Malformed, Routed, parse, phone_number, route

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "linesim" / "specs" / "webhook.yml"
pytestmark = pytest.mark.usefixtures("running_services")

SECRET = "s3cret-channel-secret"
PARTITIONS = 8
BOT = "U" + "f" * 32
T0 = 1_790_000_000_000  # epoch ms


# --- bodies ---------------------------------------------------------------------------------------


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def user(member: str) -> dict:
    return {"type": "user", "userId": member}


def in_group(group: str, member: str | None = None) -> dict:
    return {"type": "group", "groupId": group, **({"userId": member} if member else {})}


def event(kind: str, source: dict, at: int = T0, event_id: str | None = None, mode: str = "active",
          redelivery: bool = False, **fields) -> dict:
    return {"type": kind, "source": source, "timestamp": at, "mode": mode,
            "webhookEventId": event_id or "01" + uuid.uuid4().hex[:24].upper(),
            "deliveryContext": {"isRedelivery": redelivery}, **fields}


def ok_tap(source: dict, **kw) -> dict:
    return event("postback", source, replyToken=uuid.uuid4().hex, postback={"data": "action=ok"}, **kw)


def text(source: dict, words: str = "元気です", **kw) -> dict:
    return event("message", source, replyToken=uuid.uuid4().hex,
                 message={"type": "text", "id": "468789577898262530", "text": words, "quoteToken": "q"}, **kw)


def body_of(*events: dict) -> bytes:
    return json.dumps({"destination": BOT, "events": list(events)}, ensure_ascii=False).encode()


# --- a real HTTP server, in a thread of its own ---------------------------------------------------


@contextmanager
def serving(build):
    """Run `await build()` (-> web.Application) on its own loop and thread; yield the base URL."""
    loop = asyncio.new_event_loop()
    started: dict = {}
    ready = threading.Event()

    async def start():
        runner = web.AppRunner(await build(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        started["runner"], started["port"] = runner, runner.addresses[0][1]

    def main():
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as error:  # report it to the test instead of hanging
            started["error"] = error
        ready.set()
        if "error" not in started:
            loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in started:
        raise started["error"]
    try:
        yield f"127.0.0.1:{started['port']}"
    finally:
        asyncio.run_coroutine_threadsafe(started["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def post(host: str, path: str, body: bytes, signature: str | None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Line-Signature"] = signature
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def get(host: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- Kafka: a fresh tenant per test ---------------------------------------------------------------


@pytest.fixture
def kafka_tenant(running_services):
    """A tenant with its own 8-partition inbound and audit topics (and Redis keys), removed after."""
    base = Settings.from_env()
    tenant = Tenant(f"ingress-{uuid.uuid4().hex[:10]}", SECRET, "token-never-logged")
    topics = [Settings(prefix=tenant.id).inbound, Settings(prefix=tenant.id).audit]
    asyncio.run(_create_topics(base.kafka, topics))
    try:
        yield tenant
    finally:
        asyncio.run(_cleanup(base, topics, tenant.id))


async def _create_topics(kafka: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
        for _ in range(100):  # created is not yet led: wait until every partition has a leader
            described = await admin.describe_topics(names)
            if all(t["error_code"] == 0 and len(t["partitions"]) == PARTITIONS
                   and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"topics {names} have no leaders")
    finally:
        await admin.close()


async def _cleanup(base: Settings, topics: list[str], tenant_id: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=base.kafka)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()
    redis = aioredis.from_url(base.redis)
    try:
        keys = [key async for key in redis.scan_iter(match=f"anpi:{tenant_id}:webhook:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def read_topic(topic: str) -> list[tuple[int, bytes | None, bytes]]:
    """Every record on the topic now, as (partition, key, value). Sends were awaited before the 200,
    so the end offsets are final when this runs."""
    async def go():
        # earliest, not a seek after assign: the default reset to "latest", already under way when
        # assign returns, can land after a seek_to_beginning and skip everything
        consumer = AIOKafkaConsumer(bootstrap_servers=Settings.from_env().kafka, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            parts = [TopicPartition(topic, n) for n in range(PARTITIONS)]
            consumer.assign(parts)
            begins, ends = await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
            want = sum(ends[p] - begins[p] for p in parts)  # fresh topics: offsets have no gaps
            out = []
            deadline = asyncio.get_running_loop().time() + 30
            while len(out) < want:
                assert asyncio.get_running_loop().time() < deadline, f"could not read {topic}"
                batches = await consumer.getmany(timeout_ms=500)
                out += [(r.partition, r.key, r.value) for records in batches.values() for r in records]
            return out
        finally:
            await consumer.stop()
    return asyncio.run(go())


def inbound_of(tenant: Tenant) -> list[tuple[int, bytes, dict]]:
    return [(p, k, codec.loads(v)) for p, k, v in read_topic(Settings(prefix=tenant.id).inbound)]


def audit_of(tenant: Tenant) -> list[dict]:
    return [codec.loads(v) for _, _, v in read_topic(Settings(prefix=tenant.id).audit)]


@contextmanager
def kafka_ingress(tenant: Tenant):
    """The ingress as the Kafka runtime runs it: Kafka sink, Redis de-duplication."""
    base = Settings.from_env()

    async def build():
        sink = KafkaSink(replace(base, prefix=tenant.id))   # the home tenant: bare keys, its own topics
        await sink.start()
        redis = aioredis.from_url(base.redis)
        app = create_app({tenant.id: tenant}, sink, RedisDedupe(redis), staff_links=RedisStaff(redis).link_line)

        async def close(_app):
            await sink.stop()
            await redis.aclose()
        app.on_cleanup.append(close)
        return app

    with serving(build) as host:
        yield host


def expected_messages(events, replies=None) -> list[tuple[int, bytes, dict]]:
    """What the runtime expects for these engine events: one copy per addressed subject, with the reply
    token of the event it came with (`replies`: event -> (token, at))."""
    out = []
    for e in events:
        for subject in addressed(e):
            number, key, value = event_message(subject, e, PARTITIONS, (replies or {}).get(e))
            out.append((number, key, codec.loads(value)))
    return out


def by_place(messages):
    return sorted(messages, key=lambda m: (m[0], m[1], json.dumps(m[2], sort_keys=True)))


def ids_apart(prefix: str, other: str) -> str:
    """A LINE-shaped id (prefix + 32 hex digits) whose partition differs from `other`'s."""
    return next(f"{prefix}{n:032x}" for n in range(100)
                if partition_of(f"{prefix}{n}", PARTITIONS) != partition_of(other, PARTITIONS))


# --- Kafka tests ----------------------------------------------------------------------------------


def test_every_event_type_is_routed_onto_the_runtimes_inbound_topic(kafka_tenant):
    member, other, third = "U" + "a" * 32, "U" + "b" * 32, "U" + "c" * 32
    group = ids_apart("C", member)
    secret_words = "ひみつの言葉"  # must reach neither topic nor log
    events = [
        ok_tap(user(member), at=T0 + 1),
        text(user(other), secret_words, at=T0 + 2),
        text(in_group(group, other), secret_words, at=T0 + 3),
        event("follow", user(member), at=T0 + 4, replyToken="r", follow={"isUnblocked": True}),
        event("unfollow", user(other), at=T0 + 5),
        event("join", in_group(group), at=T0 + 6, replyToken="r"),
        event("memberJoined", in_group(group), at=T0 + 7, replyToken="r",
              joined={"members": [user(member)]}),
        event("memberLeft", in_group(group), at=T0 + 8, left={"members": [user(other)]}),
        event("leave", in_group(group), at=T0 + 9),
        event("postback", user(other), at=T0 + 10, replyToken="r",
              postback={"data": f"action=ack&member={member}&cycle=3"}),
        event("postback", user(third), at=T0 + 11, postback={"data": "action=help"}),         # 助けてほしい
        event("postback", user(third), at=T0 + 12, postback={"data": "action=help&sure=1"}),  # はい
        event("postback", user(third), at=T0 + 13, postback={"data": f"action=leave&member={member}"}),  # 連絡先をやめる
        text(user(third), "職員 2718 2818", at=T0 + 14),   # a staff link code: no account has it
    ]
    body = body_of(*events)
    with kafka_ingress(kafka_tenant) as host:
        assert post(host, f"/webhook/{kafka_tenant.id}", body, sign(body)) == (200, {"message": "ok"})

    applied = [Ok(T0 + 1, member), Message(T0 + 2, other), Message(T0 + 3, other, group),
               Follow(T0 + 4, member), Unfollow(T0 + 5, other),
               GroupJoined(T0 + 6, group, Schedule("1d", 9 * 60, "Asia/Tokyo")),
               Roster(T0 + 7, group, joined=(member,)), Roster(T0 + 8, group, left=(other,)), GroupLeft(T0 + 9, group),
               Acknowledge(T0 + 10, member, other, 3), AskHelp(T0 + 11, third), Help(T0 + 12, third),
               LeaveContact(T0 + 13, member, third), Message(T0 + 14, third), StaffLinked(T0 + 14, third, "")]
    inbound = inbound_of(kafka_tenant)
    # each event carries its own reply token, where one answers the person (or the group joined);
    # only a person's newest token is kept: the member's is the follow's, the other's the 見に行きます tap's
    replies = {applied[i]: (events[i]["replyToken"], events[i]["timestamp"]) for i in (3, 5, 9)}
    for typed in applied[-2:]:   # the staff code's text: its answer may use the token
        replies[typed] = (events[-1]["replyToken"], events[-1]["timestamp"])
    assert by_place(inbound) == by_place(expected_messages(applied, replies))
    # per partition, in the order LINE sent them
    for number in range(PARTITIONS):
        ats = [m[2]["event"]["at"] for m in inbound if m[0] == number]
        assert ats == sorted(ats)
    assert [codec.event_from_obj(m[2]["event"]) for m in inbound if m[2]["subject"] == other] == \
        [Message(T0 + 2, other), Message(T0 + 3, other, group), Unfollow(T0 + 5, other)]

    assert audit_of(kafka_tenant) == []  # every one of these kinds is applied
    raw = b"".join(v for _, _, v in read_topic(Settings(prefix=kafka_tenant.id).audit))
    for personal in (member, other, group, secret_words):  # ids, chat content: none of it in the audit
        assert personal.encode() not in raw
    inbound_raw = b"".join(v for _, _, v in read_topic(Settings(prefix=kafka_tenant.id).inbound))
    assert secret_words.encode() not in inbound_raw
    assert b"2718" not in inbound_raw   # a staff link code is checked at the door, never stored


def test_an_ok_in_a_group_reaches_both_the_members_and_the_groups_partition(kafka_tenant):
    member = "U" + "c" * 32
    group = ids_apart("C", member)
    body = body_of(ok_tap(in_group(group, member), at=T0))
    with kafka_ingress(kafka_tenant) as host:
        assert post(host, f"/webhook/{kafka_tenant.id}", body, sign(body))[0] == 200
    inbound = inbound_of(kafka_tenant)
    placed = {(p, k.decode(), m["subject"]) for p, k, m in inbound}
    assert placed == {(partition_of(group, PARTITIONS), group, group),
                      (partition_of(member, PARTITIONS), member, member)}
    assert {codec.event_from_obj(m["event"]) for _, _, m in inbound} == {Ok(T0, member, group)}
    assert audit_of(kafka_tenant) == []


def test_a_roll_call_staff_start_goes_onto_every_inbound_partition_for_the_tenant(kafka_tenant):
    """KafkaSink (the admin screen's way in on Kafka): a roll-call is the tenant's, not one subject's."""
    base = Settings.from_env()
    rollcall = RollCall(T0, "staff-0123456789abcdef", ("kita",), True)

    async def put():
        async with KafkaSink(replace(base, prefix=kafka_tenant.id)) as sink:   # the home tenant
            return await sink.put(kafka_tenant.id, Routed(events=[rollcall]))
    placed = asyncio.run(put())
    assert sorted(p for _, _, p, _ in placed) == list(range(PARTITIONS))
    inbound = inbound_of(kafka_tenant)
    assert sorted(p for p, _, _ in inbound) == list(range(PARTITIONS)) and {k for _, k, _ in inbound} == {None}
    naming = Naming(kafka_tenant.id)
    read = [naming.read(codec.dumps(m)) for _, _, m in inbound]
    assert {(r.tenant, r.subject, r.event) for r in read} == {(kafka_tenant.id, None, rollcall)}


def test_a_missing_or_wrong_signature_is_refused_and_nothing_is_stored(kafka_tenant):
    body = body_of(ok_tap(user("U" + "d" * 32)))
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x01
    path = f"/webhook/{kafka_tenant.id}"
    with kafka_ingress(kafka_tenant) as host:
        for signature, sent in [(None, body), ("", body), (sign(body, "another-secret"), body),
                                (sign(body)[:-2] + "==", body), ("not base64 at all é", body),
                                (sign(body), bytes(flipped))]:
            status, answer = post(host, path, sent, signature)
            assert status == 401 and "signature" in answer["message"].lower()
        assert inbound_of(kafka_tenant) == [] and audit_of(kafka_tenant) == []
        # nothing was marked as seen either: the genuine delivery is still taken
        assert post(host, path, body, sign(body))[0] == 200
    assert len(inbound_of(kafka_tenant)) == 1


@pytest.mark.parametrize("body, reason", [
    (b"", "not JSON"),
    (b"{\"destination\": ", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[]", "JSON object"),
    (json.dumps({"events": []}).encode(), "destination"),
    (json.dumps({"destination": BOT, "events": {}}).encode(), "events"),
    (json.dumps({"destination": BOT, "events": [7]}).encode(), "events[0]"),
    (body_of({k: v for k, v in ok_tap(user("U1")).items() if k != "webhookEventId"}), "webhookEventId"),
    (body_of({**ok_tap(user("U1")), "timestamp": "yesterday"}), "timestamp"),
    (body_of({**ok_tap(user("U1")), "timestamp": 1.5}), "timestamp"),
    (body_of({**ok_tap(user("U1")), "mode": "sleepy"}), "mode"),
    (body_of({**ok_tap(user("U1")), "deliveryContext": {}}), "isRedelivery"),
    (body_of(ok_tap(user("U1")), {**ok_tap(user("U1")), "postback": {"data": 5}}), "events[1]"),
    (body_of({k: v for k, v in text(user("U1")).items() if k != "message"}), "message"),
    (body_of(event("follow", user("U1"))), "events[0]"),
    (body_of(text({"type": "martian", "userId": "U1"})), "events[0]"),
    (body_of(ok_tap(user("U1"))).replace(b'"U1"', b'"\\ud800"'), "surrogate"),
], ids=lambda case: case if isinstance(case, str) else None)
def test_a_malformed_body_is_refused_with_a_reason_and_nothing_is_stored(kafka_tenant, body, reason):
    with kafka_ingress(kafka_tenant) as host:
        status, answer = post(host, f"/webhook/{kafka_tenant.id}", body, sign(body))
    assert status == 400 and reason in answer["message"]
    assert "\n" not in answer["message"] and "元気" not in answer["message"]
    assert inbound_of(kafka_tenant) == [] and audit_of(kafka_tenant) == []


def test_a_redelivered_event_is_answered_200_and_stored_once(kafka_tenant):
    member = "U" + "e" * 32
    first = ok_tap(user(member), at=T0)
    again = {**first, "deliveryContext": {"isRedelivery": True}}
    later = text(user(member), at=T0 + 60_000)
    path = f"/webhook/{kafka_tenant.id}"
    with kafka_ingress(kafka_tenant) as host:
        for body in (body_of(first), body_of(again), body_of(again, later), body_of(later, later)):
            assert post(host, path, body, sign(body)) == (200, {"message": "ok"})
    stored = [Ok(T0, member), Message(T0 + 60_000, member)]
    replies = {stored[0]: (first["replyToken"], T0), stored[1]: (later["replyToken"], T0 + 60_000)}
    assert by_place(inbound_of(kafka_tenant)) == by_place(expected_messages(stored, replies))


def test_an_unknown_event_type_is_answered_200_and_only_audited(kafka_tenant):
    novel = event("somethingLineAddsNextYear", user("U" + "f" * 32), surprise={"nested": [1, 2]})
    standby = ok_tap(user("U" + "f" * 32), mode="standby")  # another channel is in control
    body = body_of(novel, standby)
    with kafka_ingress(kafka_tenant) as host:
        assert post(host, f"/webhook/{kafka_tenant.id}", body, sign(body))[0] == 200
    assert inbound_of(kafka_tenant) == []
    audit = sorted(audit_of(kafka_tenant), key=lambda a: a["reason"])
    assert [(a["type"], a["reason"], a["webhookEventId"], a["timestamp"]) for a in audit] == [
        ("postback", "standby", standby["webhookEventId"], T0),
        ("somethingLineAddsNextYear", "unknown_type", novel["webhookEventId"], T0)]


# --- HTTP edges without Kafka ---------------------------------------------------------------------


class FailingOnce:
    """A sink whose first put fails (the broker was away), then keeps what it is given."""

    def __init__(self):
        self.failed, self.inner = False, MemorySink()

    async def put(self, tenant_id: str, routed: Routed) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("broker away")
        await self.inner.put(tenant_id, routed)


def test_when_the_sink_fails_the_answer_is_500_and_the_redelivery_is_taken(running_services):
    tenant = Tenant(f"ingress-{uuid.uuid4().hex[:10]}", SECRET, "token")
    sink = FailingOnce()

    async def build():
        redis = aioredis.from_url(Settings.from_env().redis)
        app = create_app({tenant.id: tenant}, sink, RedisDedupe(redis, ttl_seconds=60))

        async def close(_app):
            await redis.aclose()
        app.on_cleanup.append(close)
        return app

    tap = ok_tap(user("U" + "1" * 32), at=T0)
    body = body_of(tap)
    redelivered = body_of({**tap, "deliveryContext": {"isRedelivery": True}})
    try:
        with serving(build) as host:
            status, answer = post(host, f"/webhook/{tenant.id}", body, sign(body))
            assert status == 500 and "redeliver" in answer["message"]
            assert post(host, f"/webhook/{tenant.id}", redelivered, sign(redelivered))[0] == 200
            assert post(host, f"/webhook/{tenant.id}", redelivered, sign(redelivered))[0] == 200
    finally:
        asyncio.run(_cleanup_redis(tenant.id))
    assert [r.events for _, r in sink.inner.puts] == [[Ok(T0, "U" + "1" * 32)]]


async def _cleanup_redis(tenant_id: str) -> None:
    redis = aioredis.from_url(Settings.from_env().redis)
    try:
        keys = [key async for key in redis.scan_iter(match=f"anpi:{tenant_id}:webhook:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def test_unknown_tenants_get_404_health_gets_200_and_a_ping_with_no_events_gets_200():
    tenant = Tenant("demo-city", SECRET, "token")
    sink = MemorySink()

    async def build():
        return create_app({tenant.id: tenant}, sink, MemoryDedupe())

    empty = body_of()
    with serving(build) as host:
        assert post(host, "/webhook/elsewhere", empty, sign(empty))[0] == 404
        assert get(host, "/healthz") == (200, b"ok")
        assert post(host, "/webhook/demo-city", empty, sign(empty)) == (200, {"message": "ok"})
    assert sink.puts == []  # LINE's "verify" ping carries no events: nothing to store


# --- routing, pure --------------------------------------------------------------------------------


def test_routing_keeps_the_newest_one_to_one_reply_token_per_member_and_reads_oks_precisely():
    m = "U" + "2" * 32
    events = [
        event("postback", user(m), at=T0 + 5, replyToken="newer", postback={"data": "action=ok&cycle=4"}),
        event("postback", user(m), at=T0, replyToken="older", postback={"data": "action=ok"}),
        event("postback", in_group("C9", m), at=T0 + 9, replyToken="group-token", postback={"data": "action=ok"}),
        event("postback", user(m), at=T0 + 1, replyToken="r", postback={"data": "action=okay"}),
        event("postback", user(m), at=T0 + 1, replyToken="r", postback={"data": "no action here"}),
        text(in_group("C9"), at=T0 + 2),  # a group message from a client that hides its userId
        event("message", {"type": "room", "roomId": "R1", "userId": m}, at=T0 + 3, replyToken="room",
              message={"type": "hologram", "id": "1"}),  # a message type newer than the SDK
    ]
    routed = route("demo-city", parse(body_of(*events)))
    assert routed.events == [Ok(T0 + 5, m), Ok(T0, m), Ok(T0 + 9, m, "C9"), Message(T0 + 3, m)]
    assert routed.reply_tokens == {m: ("newer", T0 + 5)}
    assert [a["reason"] for a in routed.audit] == ["postback", "postback", "no_user"]
    assert [a.get("action") for a in routed.audit[:2]] == ["okay", None]


def test_the_signature_check_is_the_hmac_of_the_raw_bytes():
    body = body_of(ok_tap(user("U1")))
    assert signed(SECRET, body, sign(body))
    assert not signed(SECRET, body + b" ", sign(body))
    assert not signed(SECRET, body, None) and not signed(SECRET, body, "")


# --- fuzz: bodies generated from LINE's spec ------------------------------------------------------


def webhook_body_schema() -> dict:
    """webhook.yml's CallbackRequest as plain JSON Schema, every $ref inlined.

    OpenAPI's `discriminator` is what ties `type: "message"` to MessageEvent; JSON Schema has no such
    word, and dropping it would generate "message" events without a message. So each discriminated
    schema becomes anyOf its mapped subtypes, each pinned to its `type` value; Event and MessageContent
    also get a branch for types the mapping does not name (LINE adds them; we must take them).
    `format: int32/int64` become bounds, other formats are dropped (uri is not generated).
    """
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    schemas = copy.deepcopy(spec["components"]["schemas"])
    open_ended = {"Event", "MessageContent"}
    ref = "#/components/schemas/"
    for name in [n for n, s in schemas.items() if "discriminator" in s]:
        parent = schemas.pop(name)
        mapping = parent.pop("discriminator")["mapping"]
        schemas[f"{name}__base"] = parent
        for value, target in mapping.items():
            sub = schemas[target.removeprefix(ref)]
            for part in sub.get("allOf", []):
                if part.get("$ref") == ref + name:
                    part["$ref"] = ref + name + "__base"
            sub.setdefault("allOf", []).append({"properties": {"type": {"const": value}}})
        branches = [{"$ref": target} for target in mapping.values()]
        if name in open_ended:
            branches.append({"allOf": [{"$ref": ref + name + "__base"},
                                       {"properties": {"type": {"not": {"enum": sorted(mapping)}}}}]})
        schemas[name] = {"anyOf": branches}

    def inline(node):
        if isinstance(node, list):
            return [inline(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return inline(schemas[node["$ref"].removeprefix(ref)])
        out = {}
        for key, value in node.items():
            if key in ("description", "externalDocs", "example", "discriminator"):
                continue
            if key == "format":
                if value in ("int32", "int64"):
                    bound = 1 << (31 if value == "int32" else 63)
                    out.setdefault("minimum", -bound)
                    out.setdefault("maximum", bound - 1)
                continue
            if key == "nullable":  # OpenAPI's null, in JSON Schema's words
                continue
            out[key] = inline(value) if key != "properties" else {k: inline(v) for k, v in value.items()}
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out

    return flatten(inline(schemas["CallbackRequest"]))


def flatten(node):
    """allOf of plain object schemas merged into one: the same set of bodies, but hypothesis-jsonschema
    would otherwise re-merge them at every draw (seconds per example)."""
    if isinstance(node, list):
        return [flatten(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: flatten(v) if k != "properties" else {pk: flatten(pv) for pk, pv in v.items()}
            for k, v in node.items()}
    parts = node.pop("allOf", None)
    if parts is None:
        return node
    merged: dict = {}
    for part in [*parts, node]:
        assert not set(part) - {"type", "properties", "required"}, f"cannot merge {sorted(part)}"
        for key, value in part.items():
            if key == "properties":
                props = merged.setdefault("properties", {})
                for name, sub in value.items():
                    both = {**props.get(name, {})}
                    assert all(both.get(k, v) == v for k, v in sub.items()), f"conflict in {name}"
                    props[name] = {**both, **sub}
            elif key == "required":
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
            else:
                assert merged.get(key, value) == value
                merged[key] = value
    return merged


BODY_SCHEMA = webhook_body_schema()
VALIDATOR = jsonschema.Draft7Validator(BODY_SCHEMA)


def webhook_bodies():
    """Bodies valid by BODY_SCHEMA. Each holds one event of every kind the engine acts on (message,
    postback, follow, unfollow: from a person, but in any mode and chat) and up to two of any kind,
    in any order. Built from one strategy per flat branch: hypothesis-jsonschema would re-canonicalise
    the whole anyOf at every draw (about a second an example), and left to chance the kinds that
    matter would rarely be drawn at all."""
    branches = BODY_SCHEMA["properties"]["events"]["items"]["anyOf"]
    kind = [b["properties"]["type"].get("const") for b in branches]
    applied = [drawn_from(from_a_person(b)) for b, k in zip(branches, kind)
               if k in ("message", "postback", "follow", "unfollow")]
    anything = st.one_of([drawn_from(b) for b in branches] + [drawn_from(from_a_person(b)) for b in branches])
    events = st.tuples(st.tuples(*applied), st.lists(anything, max_size=2)).flatmap(
        lambda drawn: st.permutations([*drawn[0], *drawn[1]]))
    return st.fixed_dictionaries({"destination": from_schema(BODY_SCHEMA["properties"]["destination"]),
                                  "events": events})


def drawn_from(schema: dict):
    """from_schema(schema), but every anyOf below the top drawn by a strategy of its own, built once.

    hypothesis-jsonschema rebuilds an object's property strategies at every draw, and an anyOf among
    them costs a canonicalisation each time; split out, a body takes milliseconds, not a second.
    """
    if set(schema) == {"anyOf"}:
        return st.one_of([drawn_from(branch) for branch in schema["anyOf"]])
    if schema.get("type") == "array" and has_any_of(schema.get("items")):
        return st.lists(drawn_from(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=schema.get("maxItems", 3))
    props = schema.get("properties", {})
    split = {name: sub for name, sub in props.items() if has_any_of(sub)}
    if not split:
        return from_schema(schema)
    required = schema.get("required", [])
    rest = {**schema, "properties": {k: v for k, v in props.items() if k not in split},
            "required": [k for k in required if k not in split]}
    parts = st.fixed_dictionaries({k: drawn_from(v) for k, v in split.items() if k in required},
                                  optional={k: drawn_from(v) for k, v in split.items() if k not in required})
    # an open object may invent a key of the same name: the drawn part replaces (or removes) it
    return st.tuples(from_schema(rest), parts).map(
        lambda both: {**{k: v for k, v in both[0].items() if k not in split}, **both[1]})


def has_any_of(node) -> bool:
    if isinstance(node, dict):
        return "anyOf" in node or any(has_any_of(v) for v in node.values())
    if isinstance(node, list):
        return any(has_any_of(v) for v in node)
    return False


def from_a_person(branch: dict) -> dict:
    """The same event type narrowed to what LINE sends most (still valid by the spec): a source with
    a userId, a ULID, postback data of our own, no unknown keys. Left alone, the generator almost
    never adds the optional `source` and gives every event the id "", so nothing reaches the engine."""
    branch = closed(copy.deepcopy(branch))  # no extra random keys: small enough to fit an example
    props = branch["properties"]
    branch["required"] = [*branch["required"], "source"]
    for source in props["source"]["anyOf"]:
        source["required"] = [*source["required"], "userId"]
        source["properties"]["userId"]["pattern"] = "^U[0-9a-f]{32}$"
    props["webhookEventId"] = {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"}
    if "postback" in props:
        props["postback"]["properties"]["data"] = {
            "type": "string", "enum": ["action=ok", "action=ok&cycle=2", "action=ack&member=U1&cycle=3",
                                       "action=setup", "action=setup&s=watch&i=weekly",
                                       "action=enroll&s=notify&i=1d&t=540", "action=enroll&s=watch",
                                       "action=enroll&s=nope&i=1d&t=540", "action=invite", "action=mypage",
                                       "action=help", "action=help&sure=1", "action=leave&member=U1"]}
    return branch


def closed(node):
    if isinstance(node, dict):
        for value in node.values():
            closed(value)
        if "properties" in node:
            node.setdefault("additionalProperties", False)
    elif isinstance(node, list):
        for value in node:
            closed(value)
    return node


def applied_by_line_rules(event: dict) -> int:
    """Independently of the router: how many engine events does this (first-delivered) event make?"""
    source = event.get("source") or {}
    if event["mode"] != "active":
        return 0

    def person(uid) -> bool:  # LINE's user ids start with U, its group ids with C
        return isinstance(uid, str) and uid[:1] == "U"
    kind, in_group_chat = event["type"], source.get("type") == "group"
    if in_group_chat and str(source.get("groupId"))[:1] != "C":
        return 0
    if kind in ("join", "leave"):
        return int(in_group_chat)
    if kind in ("memberJoined", "memberLeft"):
        people = event["joined" if kind == "memberJoined" else "left"]["members"]
        return int(in_group_chat and any(person(p.get("userId")) for p in people))
    if not source.get("userId") or not person(source["userId"]):
        return 0
    one_to_one = source["type"] == "user"
    if kind == "message":
        text = event["message"].get("text") if event["message"]["type"] == "text" else None
        invited = invitation.read(text) if text is not None else None
        typed = one_to_one and text is not None and bool(
            (invited and person(invited[0])) or (not invited and phone_number(text)))
        return 1 + typed
    if kind == "postback":
        data = parse_qs(event["postback"]["data"])
        action = data.get("action")
        if action == ["ok"]:
            return 1
        if not one_to_one:
            return 0
        if action in (["setup"], ["invite"], ["mypage"], ["help"]):
            return 1
        if action == ["leave"]:   # 連絡先をやめる: names the resident it leaves
            return int(person(data.get("member", [""])[-1]) and bool(re.fullmatch(r"[A-Za-z0-9_-]{1,64}",
                                                                                data["member"][-1])))
        if action == ["ack"]:
            return int(data.get("cycle", [""])[-1].isdigit() and person(data.get("member", [""])[-1]))
        complete = data.get("s") in (["watch"], ["notify"]) and "i" in data and "t" in data
        return int(action == ["enroll"] and complete)
    return int(kind in ("follow", "unfollow") and one_to_one)


def test_the_bodies_written_by_hand_here_are_valid_by_lines_spec():
    m = "U" + "3" * 32
    for body in (body_of(ok_tap(user(m)), ok_tap(in_group("C1", m)), text(user(m)), text(in_group("C1", m)),
                         event("follow", user(m), replyToken="r", follow={"isUnblocked": False}),
                         event("unfollow", user(m)), event("leave", in_group("C1")),
                         event("memberLeft", in_group("C1"), left={"members": [user(m)]}),
                         event("somethingNew", user(m))),):
        VALIDATOR.validate(json.loads(body))
    assert not VALIDATOR.is_valid(json.loads(body_of(event("message", user(m)))))  # a message needs one


def read_both_ways(body: bytes):
    """parse(body) as the ingress reads it (a plain postback without the SDK's validation), and with
    every event through the SDK: each event with its type and its source's, or the Malformed reason."""
    def outcome():
        try:
            return [(type(e), type(getattr(e, "source", None)), e) for e in parse(body)]
        except Malformed as error:
            return str(error)
    shortcut = outcome()
    with mock.patch.object(webhook_events, "_plain_postback", lambda obj: None):
        return shortcut, outcome()


def test_a_plain_postback_is_read_without_the_sdk_as_the_sdk_reads_it_and_anything_else_goes_to_the_sdk():
    m = "U" + "4" * 32
    plain = [ok_tap(user(m)), ok_tap(in_group("C1", m)), ok_tap(in_group("C1")), ok_tap(user(m), mode="standby"),
             ok_tap(user(m), redelivery=True), event("postback", user(m), postback={"data": "action=ok"}),
             event("postback", user(m), replyToken=None, postback={"data": "action=help&sure=1"}),
             event("postback", {"type": "user"}, postback={"data": "招待"})]
    for tap in plain:
        assert webhook_events._plain_postback(tap) is not None, tap
    others = [ok_tap(user(m), extra=1), ok_tap({"type": "room", "roomId": "R1", "userId": m}),
              ok_tap({"type": "user", "userId": 7}), ok_tap(in_group(3, m)), ok_tap({"type": "group", "userId": m}),
              ok_tap({**user(m), "more": "x"}), ok_tap(user(m), deliveryContext={"isRedelivery": False, "x": 1}),
              event("postback", user(m), postback={"data": "action=ok", "params": {"date": "2026-12-03"}}),
              event("postback", user(m), postback={"data": 5}), event("postback", user(m), postback="action=ok"),
              event("postback", user(m), replyToken=5, postback={"data": "action=ok"}),
              event("postback", user(m)), event("postback", None, postback={"data": "action=ok"}),
              event("postback", "user", postback={"data": "action=ok"})]
    for tap in others:
        assert webhook_events._plain_postback(tap) is None, tap
    for tap in plain + others:
        shortcut, sdk = read_both_ways(body_of(tap))
        assert shortcut == sdk, tap
        if isinstance(sdk, list):
            events = [e for *_, e in sdk]
            assert route("t", [e for *_, e in shortcut]) == route("t", events)
            assert [webhook_events.audit_record("t", e, "r") for *_, e in shortcut] == \
                [webhook_events.audit_record("t", e, "r") for e in events]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(webhook_bodies())
def test_every_body_lines_spec_allows_reads_the_same_with_or_without_the_plain_postback_shortcut(payload):
    shortcut, sdk = read_both_ways(json.dumps(payload, ensure_ascii=False).encode())
    assert shortcut == sdk
    note(f"postbacks: {sum(e['type'] == 'postback' for e in payload['events'])}")


class ResettableDedupe(MemoryDedupe):
    def reset(self):
        self.__init__()


@pytest.fixture(scope="module")
def fuzz_server():
    tenant = Tenant("fuzz-city", SECRET, "token")
    sink, dedupe = MemorySink(), ResettableDedupe()

    async def build():
        return create_app({tenant.id: tenant}, sink, dedupe)

    with serving(build) as host:
        yield host, sink, dedupe


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(webhook_bodies())
def test_every_body_lines_spec_allows_is_taken_and_every_forgery_is_refused(fuzz_server, payload):
    host, sink, dedupe = fuzz_server
    assert VALIDATOR.is_valid(payload)
    dedupe.reset()
    sink.puts.clear()
    body = json.dumps(payload, ensure_ascii=False).encode()
    path = "/webhook/fuzz-city"

    assert post(host, path, body, None)[0] == 401
    if body:
        flipped = bytearray(body)
        flipped[len(body) // 2] ^= 0x20
        assert post(host, path, bytes(flipped), sign(body))[0] == 401
    assert sink.puts == []

    status, answer = post(host, path, body, sign(body))
    assert status == 200, answer
    firsts = list({e["webhookEventId"]: e for e in reversed(payload["events"])}.values())
    taken = [r for _, r in sink.puts]
    # every new event is either applied (one engine event) or audited (one record), never lost
    assert sum(len(r.events) for r in taken) == sum(map(applied_by_line_rules, firsts))
    assert sum(len(r.audit) for r in taken) == sum(not applied_by_line_rules(e) for e in firsts)
    for kind in ("message", "postback", "follow", "unfollow"):
        note(f"{kind} applied: {any(e['type'] == kind and applied_by_line_rules(e) for e in firsts)}")
    stamps = {e["timestamp"] for e in payload["events"]}
    for r in taken:
        assert all(e.at in stamps for e in r.events)
        assert all(set(a) >= {"tenant", "type", "webhookEventId", "timestamp", "reason"} for a in r.audit)
        codec.dumps([codec.event_to_obj(e) for e in r.events])  # everything routed can travel


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def anpi_ingress(tenant: Tenant, **env: str):
    """`anpi ingress` for `tenant` as a process of its own, answering; yields its host:port."""
    import os
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {**os.environ, **Settings.from_env().env(), "ANPI_TOPIC_PREFIX": tenant.id,
           "ANPI_PARTITIONS": str(PARTITIONS), "ANPI_CHANNEL_SECRET": tenant.channel_secret,
           "ANPI_CHANNEL_ACCESS_TOKEN": tenant.channel_access_token, **env}
    process = subprocess.Popen([sys.executable, "-m", "streams.cli", "ingress", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(host, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "anpi ingress did not start"
            time.sleep(0.2)
        yield host
    finally:
        process.terminate()
        process.wait(30)


def test_anpi_ingress_counts_each_webhook_by_outcome_on_its_own_metrics_port(kafka_tenant):
    """An SRE sees, per tenant, what LINE's webhooks came to: taken, refused (unsigned, malformed),
    for another tenant, repeated events; on a port of its own, never the webhook's, which faces the
    internet."""
    import urllib.request

    metrics_port = _free_port()
    path = f"/webhook/{kafka_tenant.id}"
    with anpi_ingress(kafka_tenant, ANPI_INGRESS_METRICS_PORT=str(metrics_port)) as host:
        tap = ok_tap(user("U" + "7" * 32), at=T0)
        once, twice = body_of(tap), body_of({**tap, "deliveryContext": {"isRedelivery": True}},
                                            text(user("U" + "7" * 32), at=T0 + 1))
        assert post(host, path, once, sign(once))[0] == 200
        assert post(host, path, twice, sign(twice))[0] == 200  # the tap again (dropped) and a new message
        assert post(host, path, once, "forged")[0] == 401
        assert post(host, path, b"{", sign(b"{"))[0] == 400
        assert post(host, "/webhook/somewhere-else", once, sign(once))[0] == 404
        assert get(host, "/metrics")[0] == 404  # not on the webhook's port
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
               if line.startswith("anpi_ingress_") and "_total{" in line}
    t = kafka_tenant.id
    assert samples == {
        f'anpi_ingress_webhooks_total{{outcome="accepted",tenant="{t}"}}': 2.0,
        f'anpi_ingress_webhooks_total{{outcome="unsigned",tenant="{t}"}}': 1.0,
        f'anpi_ingress_webhooks_total{{outcome="malformed",tenant="{t}"}}': 1.0,
        'anpi_ingress_webhooks_total{outcome="no_tenant",tenant="unknown"}': 1.0,
        f'anpi_ingress_events_total{{repeated="false",tenant="{t}"}}': 2.0,
        f'anpi_ingress_events_total{{repeated="true",tenant="{t}"}}': 1.0,
    }, samples


def test_anpi_ingress_takes_a_channel_secret_saved_on_the_settings_page_without_a_restart(kafka_tenant):
    """設定 on Kafka saves the new secret in the tenant registry (Redis); the running ingress follows it."""
    import time

    from streams.tenants import settings as ts
    from streams.tenants.in_redis import RedisRegistry

    new_secret = "f" * 32
    path = f"/webhook/{kafka_tenant.id}"
    tap = body_of(ok_tap(user("U" + "6" * 32), at=T0))

    async def save(settings) -> None:
        redis = aioredis.from_url(Settings.from_env().redis)
        try:
            if settings is None:
                await redis.delete(f"anpi:{{{kafka_tenant.id}}}:tenant")
            else:
                await RedisRegistry(redis).save(kafka_tenant.id, None, settings=settings)
        finally:
            await redis.aclose()

    try:
        with anpi_ingress(kafka_tenant) as host:
            assert post(host, path, tap, sign(tap))[0] == 200             # the environment's secret
            asyncio.run(save(ts.merged(None, T0, channel_secret=new_secret)))
            deadline = time.monotonic() + 10
            while post(host, path, tap, sign(tap, new_secret))[0] != 200:   # within a second or so
                assert time.monotonic() < deadline, "the saved secret was not taken up"
                time.sleep(0.2)
            assert post(host, path, tap, sign(tap))[0] == 401             # the old one no longer
    finally:
        asyncio.run(save(None))


def test_anpi_ingress_processes_share_one_port_and_each_takes_webhooks(kafka_tenant):
    """`--processes 2` (here ANPI_INGRESS_PROCESSES): two servers on the one port, the kernel
    spreading connections between them; every webhook is taken once, by one or the other, and each
    counts its own on its own metrics port (the port, the port + 1)."""
    import urllib.request

    metrics_port = _free_port()
    while True:  # the next port must be free too
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", metrics_port + 1))
            break
        except OSError:
            metrics_port = _free_port()
    path = f"/webhook/{kafka_tenant.id}"
    taps = 80
    with anpi_ingress(kafka_tenant, ANPI_INGRESS_PROCESSES="2", ANPI_INGRESS_METRICS_PORT=str(metrics_port)) as host:
        for i in range(taps):  # each on a connection of its own
            body = body_of(ok_tap(user(f"U{i:032x}"), at=T0 + i))
            assert post(host, path, body, sign(body))[0] == 200
        accepted = []
        for port in (metrics_port, metrics_port + 1):
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            accepted += [float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                         if line.startswith("anpi_ingress_webhooks_total{") and 'outcome="accepted"' in line]
    assert sum(accepted) == taps
    assert len(accepted) == 2 and min(accepted) > 0, accepted  # both processes took some
