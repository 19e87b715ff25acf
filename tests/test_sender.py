"""The sender: planning without I/O, the shared Redis bucket, and real HTTP against linesim."""
import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from streams.tools import services

from agents import outbound as ob
from schemas import effects as fx
from schemas.effects import Effect
from schemas.tenant import Tenant
from streams.codec import effect_to_obj
from streams.line.sender import Limits, LocalLimiter, RedisLimiter, Sender

JST = ZoneInfo("Asia/Tokyo")
AT = int(datetime(2026, 12, 1, 9, 0, tzinfo=JST).timestamp() * 1000)
TENANT = Tenant("demo-city", "s3cret", "t0ken")


def _sender(**kw) -> Sender:
    return Sender(TENANT, "http://127.0.0.1:9", **kw)


# --- planning -------------------------------------------------------------------------------------


def test_plan_coalesces_checks_and_skips_what_is_not_a_message():
    effects = [Effect(AT, fx.CHECK_SENT, f"U{i:04d}", 1) for i in range(1200)]
    effects += [Effect(AT, fx.STAFF_CALL, "U9999", 1), Effect(AT, fx.GROUP_CONFIRMED, "C1", 1, member="U1")]
    requests, replies = _sender().plan(effects)
    assert replies == []
    assert [(r.endpoint, len(r.recipients)) for r in requests] == [("multicast", 500), ("multicast", 500),
                                                                    ("multicast", 200)]


def test_plan_replies_only_with_a_fresh_token_and_only_to_answers():
    now = AT / 1000 + 10
    sender = _sender(wall=lambda: now)
    fresh = {**effect_to_obj(Effect(AT, fx.CONFIRMED, "U1", 1)), "reply_token": "r1"}
    stale = {**effect_to_obj(Effect(AT - 60_000, fx.CONFIRMED, "U2", 1)), "reply_token": "r2"}
    check = {**effect_to_obj(Effect(AT, fx.CHECK_SENT, "U3", 1)), "reply_token": "r3"}  # never a reply
    requests, answers = sender.plan([fresh, stale, check])
    assert [(i.to, i.reply_token) for i in answers] == [("U1", "r1"), ("U2", None)]  # U2's: by push
    assert sorted((r.endpoint, r.recipients) for r in requests) == [("push", ("U3",))]


def test_plan_skips_blocked_users_until_they_follow_again():
    sender = _sender()
    requests, _ = sender.plan([Effect(AT, fx.UNFOLLOWED, "U1"), Effect(AT, fx.CHECK_SENT, "U1", 1)])
    assert requests == [] and sender.blocked == {"U1"}
    requests, _ = sender.plan([Effect(AT, fx.FOLLOWED, "U1"), Effect(AT, fx.CHECK_SENT, "U1", 2)])
    assert [r.recipients for r in requests] == [("U1",)]


def test_the_token_never_reaches_the_metrics_or_repr():
    sender = _sender()
    from prometheus_client import generate_latest
    assert b"t0ken" not in generate_latest(sender.registry)
    assert "t0ken" not in repr(TENANT) and "s3cret" not in repr(TENANT)


def test_local_limiter_on_a_fake_clock():
    now = [0.0]
    limiter = LocalLimiter(rate=100, burst=1, clock=lambda: now[0])
    waits = [asyncio.run(limiter.reserve()) for _ in range(3)]
    assert waits == pytest.approx([0, 0.01, 0.02])


# --- the shared Redis bucket ------------------------------------------------------------------------


@pytest.fixture
def redis_url():
    """A throwaway redis-server of our own (no persistence), stopped by its pid afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:  # CI never skips: tests/run installs it
        assert os.environ.get("CI") != "true", "redis-server is missing: tests/run installs it"
        pytest.skip("no redis-server on this machine (tests/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _start_redis(binary, port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(5)


def _start_redis(binary: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=services.real_clock_env())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc


def test_redis_limiter_is_shared_by_several_senders(redis_url):
    import redis.asyncio as aioredis

    async def go():
        client = aioredis.from_url(redis_url)
        try:
            a = RedisLimiter(client, "anpi:ratelimit:t:multicast", rate=100, burst=2)
            b = RedisLimiter(client, "anpi:ratelimit:t:multicast", rate=100, burst=2)
            waits = [await (a if i % 2 else b).reserve() for i in range(10)]
            other = RedisLimiter(client, "anpi:ratelimit:u:multicast", rate=100, burst=2)
            return waits, await other.reserve()
        finally:
            await client.aclose()

    waits, other = asyncio.run(go())
    assert waits[:2] == [0, 0]
    # every later caller, whichever process, queues one turn (10 ms) behind the one before
    gaps = [b - a for a, b in zip(waits[2:], waits[3:])]
    assert all(0.005 < g < 0.015 for g in gaps), waits
    assert other == 0   # another channel's bucket is its own



def test_redis_limiter_keeps_to_the_limit_in_process_while_redis_is_away():
    """Redis is a helper: with nobody listening on its port, a call still gets its turn, paced by
    this process alone at the same rate, and each such turn is counted."""
    import redis.asyncio as aioredis

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go():
        client = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
        fallbacks = []
        try:
            limiter = RedisLimiter(client, "anpi:ratelimit:t:push", rate=100, burst=2,
                                   on_fallback=lambda: fallbacks.append(1))
            return [await limiter.reserve() for _ in range(4)], len(fallbacks)
        finally:
            await client.aclose()

    waits, fallbacks = asyncio.run(go())
    assert waits[:2] == [0, 0] and 0.005 < waits[2] < 0.015 < waits[3] < 0.025, waits  # the same pacing
    assert fallbacks == 4

# --- real HTTP against linesim --------------------------------------------------------------------

from linesim.limits import Rate  # noqa: E402
from linesim.server import Channel, Config, run_linesim  # noqa: E402


def uid(i: int) -> str:
    return f"U{i:032x}"


def gid(i: int) -> str:
    return f"C{i:032x}"


def _config(**rates) -> Config:
    return Config(channels=[Channel.from_tenant(TENANT)], rates={k: Rate(*v) for k, v in rates.items()} or None)


def _statuses(sim, endpoint: str) -> dict[int, int]:
    return {s: n for (e, s), n in sim.state.requests.items() if e == endpoint}


def _traced_session(seen: list):
    """A client session that records (endpoint, retry key, status) of every call: what went on the wire."""
    import aiohttp

    trace = aiohttp.TraceConfig()

    async def on_end(session, ctx, params):
        seen.append((params.url.path.rsplit("/", 1)[-1], params.headers.get("X-Line-Retry-Key"),
                     params.response.status))

    trace.on_request_end.append(on_end)
    return aiohttp.ClientSession(trace_configs=[trace])


def _notices(n: int, first: int = 0) -> list[Effect]:
    """contacts_notified effects with distinct texts (one per member): each goes by its own call."""
    return [Effect(AT, fx.CONTACTS_NOTIFIED, uid(i), 1, (uid(100_000 + i),)) for i in range(first, first + n)]


def test_checks_to_1200_members_arrive_once_each_by_multicast():
    async def go():
        async with run_linesim(_config()) as sim:
            async with Sender(TENANT, sim.base_url) as sender:
                effects = [effect_to_obj(Effect(AT, fx.CHECK_SENT, uid(i), 1)) for i in range(1200)]
                effects.append(effect_to_obj(Effect(AT, fx.GROUP_CHECK_POSTED, gid(1), 1)))
                effects.append(effect_to_obj(Effect(AT, fx.GROUP_UNCONFIRMED, gid(1), 1,
                                                    members=(uid(1), uid(2)))))
                effects.append(effect_to_obj(Effect(AT, fx.STAFF_CALL, uid(5), 1)))
                report = await sender.deliver(effects)
                return sim, sender, report

    sim, sender, report = asyncio.run(go())
    assert report.failed == [] and report.retries == 0
    assert _statuses(sim, "multicast") == {200: 3}
    assert _statuses(sim, "push") == {200: 2}
    to_users = [d.to for d in sim.state.deliveries if d.endpoint == "multicast"]
    assert sorted(to_users) == [uid(i) for i in range(1200)]          # everyone, once
    assert sim.state.duplicates == 0
    assert report.billed == 1202 == sum(sender.billed.values())
    month = datetime.fromtimestamp(time.time(), JST).strftime("%Y-%m")
    assert sender.billed == {("demo-city", month): 1202}
    assert sender.registry.get_sample_value("anpi_sender_requests_total",
                                            {"endpoint": "multicast", "status": "200"}) == 3
    assert sender.registry.get_sample_value("anpi_sender_recipients_total", {"endpoint": "multicast"}) == 1200


def test_a_429_is_retried_with_the_same_key_until_accepted():
    seen = []

    async def go():
        # LINE allows 2 multicasts now and 4 a second after; the sender believes it may send 200 a second.
        async with run_linesim(_config(multicast=(4, 1))) as sim:
            session = _traced_session(seen)
            sender = Sender(TENANT, sim.base_url, session=session, retry=ob.RetryPolicy(base=0.2, cap=1.0))
            try:
                effects = [Effect(AT, fx.CONTACTS_NOTIFIED, uid(i), 1, (uid(1000 + i), uid(2000 + i)))
                           for i in range(8)]
                return sim, sender, await sender.deliver(effects)
            finally:
                await session.close()

    sim, sender, report = asyncio.run(go())
    assert report.failed == [] and report.accepted == 8
    statuses = _statuses(sim, "multicast")
    assert statuses[429] >= 1 and statuses[200] == 8 and report.retries == statuses[429]
    for key in {k for _, k, s in seen if s == 429}:
        assert [s for _, k, s in seen if k == key][-1] == 200    # the retry carried the same key and got through
    assert len({k for _, k, s in seen if s == 200}) == 8
    assert sim.state.duplicates == 0 and len(sim.state.deliveries) == 16
    assert sender.registry.get_sample_value("anpi_sender_retries_total", {"endpoint": "multicast"}) == report.retries


def test_a_sender_killed_mid_batch_and_restarted_sends_nothing_twice():
    effects = [effect_to_obj(e) for e in _notices(400)]
    effects += [effect_to_obj(Effect(AT, fx.CHECK_SENT, uid(i), 1)) for i in range(1200)]

    async def go():
        async with run_linesim(_config()) as sim:
            first = Sender(TENANT, sim.base_url, limits=Limits(push=400))   # about a second for the pushes
            task = asyncio.create_task(first.deliver(effects))
            while sum(n for (e, s), n in sim.state.requests.items() if e == "push") < 120:
                await asyncio.sleep(0.005)
            task.cancel()                                                  # the process dies mid-batch
            with pytest.raises(asyncio.CancelledError):
                await task
            await first.close()
            before = len(sim.state.deliveries)
            async with Sender(TENANT, sim.base_url, limits=Limits(push=400)) as second:  # a new process
                report = await second.deliver(effects)
            return sim, before, report

    sim, before, report = asyncio.run(go())
    assert 120 <= before < 1600
    assert report.failed == [] and report.duplicates >= 120                 # LINE: "already accepted"
    assert report.accepted + report.duplicates == 400 + 3
    assert sim.state.duplicates == 0
    received = [(d.to, d.endpoint) for d in sim.state.deliveries]
    assert len(received) == len(set(received)) == 1600                     # each person got one message
    assert _statuses(sim, "push")[409] == report.duplicates - _statuses(sim, "multicast").get(409, 0)


def test_the_sender_keeps_within_line_rate_limits():
    async def go():
        # Scaled-down limits so the test runs in seconds: LINE and the sender agree on them.
        async with run_linesim(_config(multicast=(10, 1), push=(100, 1))) as sim:
            async with Sender(TENANT, sim.base_url, limits=Limits(multicast=10, push=100)) as sender:
                effects = [Effect(AT, fx.CONTACTS_NOTIFIED, uid(i), 1, (uid(1000 + i), uid(2000 + i)))
                           for i in range(20)]                              # 20 multicasts
                effects += _notices(200, first=100)                         # 200 pushes
                started = time.monotonic()
                report = await sender.deliver(effects)
                return sim, sender, report, time.monotonic() - started

    sim, sender, report, took = asyncio.run(go())
    assert report.failed == [] and report.retries == 0
    assert _statuses(sim, "multicast") == {200: 20} and _statuses(sim, "push") == {200: 200}
    assert 1.5 < took < 6                                                   # it did wait: 20 at 10/s
    assert sender.registry.get_sample_value("anpi_sender_rate_limit_wait_seconds_total",
                                            {"endpoint": "multicast"}) > 1


def test_thanks_go_by_free_reply_when_a_fresh_token_is_at_hand():
    async def go():
        async with run_linesim(_config()) as sim:
            async with Sender(TENANT, sim.base_url) as sender:
                now_ms = int(time.time() * 1000)
                source = lambda u: {"type": "user", "userId": u}  # noqa: E731
                fresh = sim.state.issue_reply_token(TENANT.id, source(uid(1)))
                used = sim.state.issue_reply_token(TENANT.id, source(uid(3)))
                sim.state.use_reply_token(TENANT.id, used)        # spent already: LINE refuses it
                effects = [
                    {**effect_to_obj(Effect(now_ms - 2000, fx.CONFIRMED, uid(1), 1)), "reply_token": fresh},
                    {**effect_to_obj(Effect(now_ms - 55_000, fx.CONFIRMED, uid(2), 1)), "reply_token": "old"},
                    {**effect_to_obj(Effect(now_ms - 1000, fx.RESOLVED_AFTER_ESCALATION, uid(3), 1)),
                     "reply_token": used},
                ]
                report = await sender.deliver(effects)
                return sim, report

    sim, report = asyncio.run(go())
    assert report.replies == 1 and report.failed == []
    by_user = {d.to: d.endpoint for d in sim.state.deliveries}
    assert by_user == {uid(1): "reply", uid(2): "push", uid(3): "push"}    # stale / refused token → push
    assert report.billed == 2 == sim.state.quota.used(TENANT.id)         # the reply cost nothing
    assert sim.state.deliveries_to(uid(1))[0].messages == [
        {"type": "text", "text": "お返事ありがとうございます。今日もよい一日を。"}]


def test_blocked_users_are_skipped_and_a_spent_quota_is_reported_not_retried():
    """A push to someone who blocked the account is left out; a multicast keeps its members (its
    retry key must come out the same after a restart that forgot the block), and LINE delivers it
    to, and bills, only those who follow."""
    async def go():
        config = Config(channels=[Channel.from_tenant(TENANT, monthly_quota=3)])
        async with run_linesim(config) as sim:
            sim.state.block(TENANT.id, uid(1))  # LINE knows: the unfollow came from it
            async with Sender(TENANT, sim.base_url) as sender:
                first = await sender.deliver([Effect(AT, fx.UNFOLLOWED, uid(1)), Effect(AT, fx.CONFIRMED, uid(1), 1)]
                                             + [Effect(AT, fx.CHECK_SENT, uid(i), 1) for i in range(1, 4)])
                second = await sender.deliver(_notices(2, first=10))
            async with Sender(TENANT, sim.base_url) as restarted:  # knows of no block: same multicast, same key
                again = await restarted.deliver([Effect(AT, fx.CHECK_SENT, uid(i), 1) for i in range(1, 4)])
            return sim, first, second, again

    sim, first, second, again = asyncio.run(go())
    assert first.skipped_blocked == 1 and first.billed == 2  # the thanks by push left out; the card to 2
    assert first.requests == 1 and again.duplicates == 1 and again.accepted == 0
    assert second.billed == 1 and second.retries == 0
    [failure] = second.failed
    assert failure.status == 429 and "monthly limit" in failure.reason
    assert not any(d.delivered for d in sim.state.deliveries_to(uid(1)))  # in the multicast, not delivered


def test_run_consumes_a_queue_and_coalesces_what_arrives_together():
    async def go():
        async with run_linesim(_config()) as sim:
            async with Sender(TENANT, sim.base_url) as sender:
                queue: asyncio.Queue = asyncio.Queue()
                reports = []
                task = asyncio.create_task(sender.run(queue, linger=0.05, on_report=reports.append))
                for i in range(600):
                    queue.put_nowait(effect_to_obj(Effect(AT, fx.CHECK_SENT, uid(i), 1)))
                await asyncio.wait_for(queue.join(), 10)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                return sim, sender, reports

    sim, sender, reports = asyncio.run(go())
    assert _statuses(sim, "multicast") == {200: 2} and sum(r.billed for r in reports) == 600
    assert sender.registry.get_sample_value("anpi_sender_queue_depth") == 0


def test_5xx_and_timeouts_are_retried_with_the_same_key():
    """linesim cannot fail on purpose, so a tiny stand-in does: 503, then silence, then 200."""
    from aiohttp import web

    calls: list[str] = []

    async def push(request: web.Request) -> web.Response:
        key = request.headers["X-Line-Retry-Key"]
        calls.append(key)
        n = calls.count(key)
        if n == 1:
            return web.json_response({"message": "Internal error"}, status=503)
        if n == 2:
            await asyncio.sleep(1)          # longer than the sender waits
        return web.json_response({"sentMessages": [{"id": "1"}]})

    async def go():
        async with serving("/v2/bot/message/push", push) as url:
            async with Sender(TENANT, url, timeout=0.2, retry=ob.RetryPolicy(base=0.01, cap=0.05)) as sender:
                return sender, await sender.deliver([Effect(AT, fx.CHECK_SENT, uid(1), 1)])

    sender, report = asyncio.run(go())
    assert report.accepted == 1 and report.retries == 2 and report.failed == []
    assert len(calls) == 3 and len(set(calls)) == 1
    assert sender.registry.get_sample_value("anpi_sender_requests_total", {"endpoint": "push", "status": "error"}) == 1


@pytest.mark.usefixtures("running_services")
def test_a_batch_delivered_again_replies_once_and_pushes_nothing():
    """The Kafka sender's claims in Redis: after a crash the outbox batch comes again with the same
    reply tokens; the second delivery must neither reply (the token is spent) nor fall back to a push."""
    import redis.asyncio as aioredis

    from streams.kafka.settings import Settings
    from streams.line.sender import redis_reply_claims

    tenant = f"claims-{uuid.uuid4().hex[:8]}"

    async def go():
        redis = aioredis.from_url(Settings.from_env().redis)
        try:
            async with run_linesim(_config()) as sim:
                now_ms = int(time.time() * 1000)
                token = sim.state.issue_reply_token(TENANT.id, {"type": "user", "userId": uid(1)})
                batch = [{**effect_to_obj(Effect(now_ms - 1000, fx.CONFIRMED, uid(1), 1)), "reply_token": token},
                         effect_to_obj(Effect(now_ms, fx.CHECK_SENT, uid(2), 1))]
                for _ in range(2):  # delivered, then the same batch again after a restart
                    async with Sender(TENANT, sim.base_url) as sender:
                        sender.claim_replies = redis_reply_claims(redis, tenant)
                        await sender.deliver(batch)
                return sim
        finally:
            for key in await redis.keys(f"anpi:{{{tenant}}}:*"):
                await redis.delete(key)
            await redis.aclose()

    sim = asyncio.run(go())
    assert [d.endpoint for d in sim.state.deliveries_to(uid(1))] == ["reply"]
    assert len(sim.state.deliveries_to(uid(2))) == 1 and sim.state.duplicates == 0  # the push's retry key: 409


def test_a_claim_redis_took_without_its_answer_reaching_us_is_won_on_its_retry_and_the_thanks_goes_once():
    """Redis can apply a SET NX and die (or time out) before its answer arrives. Retried, that claim
    must be won, not lost: the thanks would never go. A second delivery of the same effect (a
    restart, a batch read again) still loses it: it is another claim."""
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors

    from streams.kafka.settings import Settings
    from streams.line.sender import redis_reply_claims

    tenant = f"claims-{uuid.uuid4().hex[:8]}"

    async def go():
        redis = aioredis.from_url(Settings.from_env().redis)
        try:
            claim = redis_reply_claims(redis, tenant)
            retried = [await claim(["e1", "e2"], "one"), await claim(["e1", "e2"], "one")]
            other = await claim(["e1", "e3"], "two")

            async def answer_lost_once(effect_ids, holder, lost=[]):
                won = await claim(effect_ids, holder)  # applied in Redis...
                if not lost:
                    lost.append(won)
                    raise redis_errors.ConnectionError("Connection closed by server.")  # ...answer lost
                return won

            async with run_linesim(_config()) as sim:
                now = time.time()
                batch = [{**effect_to_obj(Effect(int(now * 1000) - 120_000, fx.CONFIRMED, uid(1), 1)),
                          "reply_token": "aged"}]  # too old to reply with: by push, claimed
                async with Sender(TENANT, sim.base_url, wall=lambda: now,
                                  retry=ob.RetryPolicy(base=0.01, cap=0.02)) as sender:
                    sender.claim_replies = answer_lost_once
                    await sender.deliver(batch)
                async with Sender(TENANT, sim.base_url, wall=lambda: now) as again:  # after a restart
                    again.claim_replies = redis_reply_claims(redis, tenant)
                    late = await again.deliver(batch)
                return retried, other, sim, late
        finally:
            for key in await redis.keys(f"anpi:{{{tenant}}}:*"):
                await redis.delete(key)
            await redis.aclose()

    retried, other, sim, late = asyncio.run(go())
    assert retried == [{"e1", "e2"}, {"e1", "e2"}] and other == {"e3"}
    assert [d.endpoint for d in sim.state.deliveries_to(uid(1))] == ["push"]  # sent, once
    assert late.requests == 0


@asynccontextmanager
async def serving(path: str, handler):
    """A tiny HTTP server with one POST route, standing in for LINE: yields its base URL."""
    from aiohttp import web
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


class Outage:
    """A stand-in for LINE in front of linesim: for `seconds` every call fails with a 500, and every
    third of them is taken by LINE first (its answer lost); then it passes calls through."""

    def __init__(self, target: str, seconds: float):
        self.target, self.until, self.failed = target, time.monotonic() + seconds, 0

    async def handle(self, request):
        import aiohttp
        from aiohttp import web
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type",
                                                                              "x-line-retry-key")}
        down = time.monotonic() < self.until
        if down:
            self.failed += 1
            if self.failed % 3:
                return web.json_response({"message": "Internal error"}, status=500)
        async with aiohttp.ClientSession() as session:
            async with session.post(self.target + request.path, data=body, headers=headers) as resp:
                answer = await resp.read()
                status = resp.status
        if down:
            return web.json_response({"message": "Internal error"}, status=500)  # taken, answer lost
        return web.Response(body=answer, status=status, content_type="application/json")


def test_line_down_for_a_while_delays_every_message_and_loses_or_repeats_none():
    """LINE answers 500 (having taken some calls anyway) for longer than eight tries with backoff
    last: the sender tried eight times and gave up, losing the batch. Now each call is tried again,
    same key, until LINE takes it; the backlog gauges say it is waiting."""
    async def go():
        async with run_linesim(_config()) as sim:
            outage = Outage(sim.base_url, seconds=3.0)
            async with serving("/v2/bot/message/{endpoint}", outage.handle) as url:
                async with Sender(TENANT, url, retry=ob.RetryPolicy(base=0.05, cap=0.3)) as sender:
                    effects = [Effect(AT, fx.CHECK_SENT, uid(i), 1) for i in range(1200)] + _notices(40, 2000)
                    delivering = asyncio.ensure_future(sender.deliver(effects))
                    await asyncio.sleep(1.5)
                    backlog = (sender.registry.get_sample_value("anpi_sender_retrying", {"tenant": TENANT.id}),
                               sender.registry.get_sample_value("anpi_sender_oldest_retry_seconds", {"tenant": TENANT.id}))
                    report = await delivering
                    after = sender.registry.get_sample_value("anpi_sender_retrying", {"tenant": TENANT.id})
                    return sim, report, backlog, after, outage.failed

    sim, report, (retrying, oldest), after, failed = asyncio.run(go())
    assert failed > 8 * 43, "the outage did not outlast the old eight tries"
    assert report.failed == [] and report.retries > 0
    counts = sim.state.delivery_counts()
    assert sorted(counts) == sorted([uid(i) for i in range(1200)] + [uid(100_000 + i) for i in range(2000, 2040)])
    assert set(counts.values()) == {1} and sim.state.duplicates == 0   # each once: the lost answers got 409
    assert retrying == 43 and oldest > 1.0 and after == 0


def test_redis_down_holds_an_answer_until_its_claim_is_made_and_a_late_repeat_sends_nothing(redis_url):
    """The Kafka sender claims each answer in Redis before replying. Redis down made the claim raise
    and the sender's agent crash; a restart then read the batch again with the token expired and
    pushed the thanks a second time, unclaimed. Now the claim waits for Redis, and an answer whose
    token has aged goes by push only if its claim is still free."""
    import redis.asyncio as aioredis

    from streams.line.sender import redis_reply_claims

    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    tenant = f"claims-{uuid.uuid4().hex[:8]}"

    async def go():
        redis = aioredis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        async with run_linesim(_config()) as sim:
            now = time.time()
            token = sim.state.issue_reply_token(TENANT.id, {"type": "user", "userId": uid(1)})
            batch = [{**effect_to_obj(Effect(int(now * 1000) - 1000, fx.CONFIRMED, uid(1), 1)), "reply_token": token}]
            try:
                await redis.shutdown(nosave=True)  # Redis goes down
            except Exception:
                pass  # the server closes the connection as it goes
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            async with Sender(TENANT, sim.base_url, wall=lambda: now,
                              retry=ob.RetryPolicy(base=0.05, cap=0.2)) as sender:
                sender.claim_replies = redis_reply_claims(redis, tenant)
                delivering = asyncio.ensure_future(sender.deliver(batch))
                await asyncio.sleep(1.5)
                held = (delivering.done(), len(sim.state.deliveries_to(uid(1))))
                back = _start_redis(shutil.which("redis-server"), port)
                try:
                    report = await delivering
                    waited = sender.registry.get_sample_value("anpi_sender_claim_retries_total")
                    # the same batch again, a minute later: the token is too old to reply with
                    async with Sender(TENANT, sim.base_url, wall=lambda: now + 60) as again:
                        again.claim_replies = redis_reply_claims(redis, tenant)
                        late = await again.deliver(batch)
                finally:
                    await redis.aclose()
                    back.terminate()
                    back.wait(5)
            return sim, held, report, waited, late

    sim, held, report, waited, late = asyncio.run(go())
    assert held == (False, 0)             # held while Redis was down, not dropped, not sent unclaimed
    assert report.replies == 1 and waited > 0
    assert late.requests == 0             # claimed already: no reply, no push
    assert [d.endpoint for d in sim.state.deliveries_to(uid(1))] == ["reply"]
