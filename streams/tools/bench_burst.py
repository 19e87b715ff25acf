"""`anpi bench burst`: a disaster roll-call end to end on the Kafka runtime, as a town would live it.

Every process of a deployment runs on its own (the worker, `anpi ingress`, `anpi sender`, `anpi
readside`, as `anpi demo --runtime kafka` starts them), on fresh topics and the bench's own Redis
database (BURST_DB, emptied at the start), with linesim as LINE (LINE's rate limits). One tenant of
N members, each on a daily check at 9:00:

    checks   a tick at 9:00: N check cards through the worker, the outbox and the sender to LINE
    notice   a 災害・避難 notice with its 「無事です」 button to all N, committed as the admin screen
             does and delivered by the sender's notice loop: multicasts of 500, LINE's floor is
             ceil(N/500) / 200 s
    answers  60 % of them tap 「無事です」 (the notice's postback action=ok, which closes the open
             check): signed webhooks to the ingress, each at a time drawn from the drill's answer
             curve (ANSWER_MINUTES), run `speedup` times faster than the drill; their thanks go back
             by reply. The live tally is the admin screen's count of answers for the day (anpi
             readside, in Redis), read every POLL seconds.

With `rollcall` (`--rollcall`), the notice is a roll-call (agents/rollcall.py: the engine's own,
the one the 気象庁 feed starts): a RollCall on every inbound partition, a card to each of the N
from the worker through the outbox and the sender (multicasts of 500), and the answers are its
「無事です」 (postback action=safe); the tally is the roll-call's, as its admin page reads it.

Reported: each phase's seconds and their ratio to LINE's floor (the notice's from its commit, which
is reported apart: choosing the recipients and storing its chunks); the answers' rate offered and taken
(the busiest 10 s); the CPU seconds of each process during the answers, and answers per CPU second
of the runtime's four processes (what one core buys); how far the tally trails the answers: for
the k-th answer acknowledged, the first read of the tally that counts k, less its 200 (p50, p99,
max). The webhooks are posted from a child process, so the poster does not share this process's
core with linesim.
"""
from __future__ import annotations

import asyncio
import json
import math
import multiprocessing as mp
import os
import platform
import random
import secrets
import time
import uuid
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from streams.tools.bench_edge import _percentile

BURST_DB = 12                 # the bench's Redis database, emptied at its start
ZONE = "Asia/Tokyo"
DAY = datetime(2026, 9, 1, tzinfo=ZoneInfo(ZONE))  # virtual: the engine takes time as data
POLL = 0.1                    # seconds between reads of the tally
ANSWER_SHARE = 0.6
READY_SECONDS = 180.0
PHASE_SECONDS = 900.0         # a phase not done by then: the bench stops and says which
BOT = "U" + "b" * 32          # the webhook's destination (the bot's own id)

# The drill's answer curve (an unannounced drill of 83,806 people: the most common answer time was
# 2 minutes, most within 2–3, a tail to 30): a log-normal of mode 2 min for most, the rest spread
# evenly over 3–30 min.
MODE_MINUTES, SIGMA, TAIL_SHARE, TAIL = 2.0, 0.45, 0.15, (3.0, 30.0)


def answer_minutes(rng: random.Random) -> float:
    """Minutes from the notice to one resident's answer, drawn from the drill's curve."""
    if rng.random() < TAIL_SHARE:
        return rng.uniform(*TAIL)
    return min(TAIL[1], rng.lognormvariate(math.log(MODE_MINUTES) + SIGMA ** 2, SIGMA))


def busiest(times: list[float], window: float = 10.0) -> float:
    """The most of `times` (sorted seconds) inside any `window` seconds, per second."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window


def trailing(acks: list[float], reads: list[tuple[float, int]]) -> list[float]:
    """For the k-th answer acknowledged (sorted times), seconds until a read of the tally counted k."""
    out, r = [], 0
    for k, at in enumerate(acks, start=1):
        while r < len(reads) and reads[r][1] < k:
            r += 1
        if r == len(reads):
            break
        out.append(max(0.0, reads[r][0] - at))
    return out


# --- the poster (a child process) ------------------------------------------------------------------

def _poster(conn, url: str, secret: str, plan: list[tuple[float, str, str]], concurrency: int,
            data: str = "action=ok") -> None:
    """Posts a signed 「無事です」 tap for each of `plan` ((seconds from go, member, reply token)) at its
    time, stamped with the virtual time then (as LINE stamps a tap); waits for (go: epoch seconds,
    virtual time then) first; sends back (200 times as epoch seconds, statuses)."""
    import aiohttp

    from linesim.residents import postback_event, signed_webhook, user_source

    rng = random.Random(7)
    conn.send("ready")
    go, go_virtual = conn.recv()

    async def main():
        acked: list[float] = []
        statuses: dict[int, int] = {}
        gate = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def post(member: str, token: str) -> None:
                try:
                    at = int((go_virtual + time.time() - go) * 1000)
                    body, headers = signed_webhook(secret, BOT, [postback_event(
                        user_source(member), data, reply_token=token, timestamp=at, rng=rng)])
                    for _ in range(20):  # a refused connection or a 5xx: LINE redelivers, so does this
                        try:
                            async with session.post(url, data=body, headers=headers) as resp:
                                await resp.read()
                                status = resp.status
                        except aiohttp.ClientError:
                            status = 0
                        if status == 200 or 400 <= status < 500:
                            break
                        await asyncio.sleep(0.5)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        acked.append(time.time())
                finally:
                    gate.release()

            tasks = []
            for offset, member, token in plan:
                delay = go + offset - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()
                tasks.append(asyncio.ensure_future(post(member, token)))
            await asyncio.gather(*tasks)
        return acked, statuses

    conn.send(asyncio.run(main()))


# --- CPU -------------------------------------------------------------------------------------------

def _cpu_of_session(sid: int) -> float:
    """CPU seconds (user + system) of every live process in session `sid` (a process started with
    start_new_session and the children it forked)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:   # fields after the name: state ppid pgrp session ...
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _machine_busy() -> float:
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    return (sum(cpu) - cpu[3] - cpu[4]) / os.sysconf("SC_CLK_TCK")   # all but idle and iowait


# --- the run ---------------------------------------------------------------------------------------

def burst_bench(members: int = 100_000, speedup: float = 10.0, ingress_processes: int = 1,
                share: float = ANSWER_SHARE, seed: int = 1, concurrency: int = 256, rollcall: bool = False) -> str:
    return json.dumps(asyncio.run(_burst(members, speedup, ingress_processes, share, seed, concurrency, rollcall)),
                      ensure_ascii=False)


async def _burst(members: int, speedup: float, ingress_processes: int, share: float, seed: int,
                 concurrency: int, rollcall: bool = False) -> dict:
    import tempfile

    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaProducer

    from agents import notices as nt
    from agents.messages import OK_DATA, SAFE_DATA
    from agents.readside import day_of
    from linesim import Channel, Config, run_linesim, user_id_for
    from linesim.limits import ScaledClock
    from schemas.events import Register, RollCall
    from schemas.settings import MemberSettings, Schedule
    from schemas.tenant import Tenant
    from streams.demo.on_kafka import (_alive, _answers, _database, _free_port, _send_ticks, _start, _stop_all,
                                       _until, _until_groups_stable)
    from streams.kafka.readside import Reader
    from streams.kafka.redis_store import ReadModel
    from streams.kafka.records import Naming
    from streams.kafka.settings import Settings
    from streams.kafka.simulate import KafkaRun
    from streams.notices import book
    from streams.notices.in_redis import RedisNotices
    from streams.tenants import registry as tenant_registry
    from streams.tenants import settings as ts
    from streams.tenants.in_redis import RedisRegistry
    from streams.tools import services

    if not all(services.status().values()):
        raise SystemExit("anpi bench burst: Kafka and Redis must be running (anpi services up)")
    folder = tempfile.mkdtemp(prefix="anpi-bench-burst-")
    base = Settings.from_env()
    settings = replace(base, redis=_database(base.redis, BURST_DB), tick_seconds=0.0)
    run = KafkaRun(settings)
    run.log_path = os.path.join(folder, "worker.log")
    settings = run.settings
    tenant = Tenant(f"burst{uuid.uuid4().hex[:6]}", secrets.token_hex(16), secrets.token_urlsafe(32), ZONE)
    start_ms = int(DAY.timestamp() * 1000)
    nine_ms = start_ms + 9 * 3600_000
    clock = ScaledClock(speed=1.0, start=nine_ms / 1000 + 60)   # the sender's and the ingress's now: 9:01
    people = [user_id_for(f"burst-{seed}-{i}") for i in range(members)]
    redis = aioredis.from_url(settings.redis)
    processes: dict = {}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all", enable_idempotence=True,
                                linger_ms=5, max_batch_size=1 << 20)
    reading = None
    out: dict = {"bench": "burst", "members": members, "answer_share": share, "speedup": speedup,
                 "ingress_processes": ingress_processes, "partitions": settings.partitions,
                 "via": "rollcall" if rollcall else "notice"}
    rid = "bench-rollcall"
    try:
        await redis.flushdb()
        await RedisRegistry(redis).add(tenant_registry.new_entry(tenant.id, tenant.id, start_ms), ts.merged(
            None, start_ms, timezone=ZONE, channel_secret=tenant.channel_secret,
            channel_access_token=tenant.channel_access_token))
        await run.create_topics()
        await producer.start()
        naming = Naming(settings.prefix)
        daily = Schedule("1d", 9 * 60, ZONE, None)
        for uid in people:
            number, key, value = naming.event_message(tenant.id, uid, Register(start_ms, MemberSettings(
                uid, "watch", daily, "090-0000-0000")), settings.partitions)
            await producer.send(settings.inbound, value, key=key or None, partition=number)
        await producer.flush()

        port = _free_port()
        config = Config([Channel(tenant.id, tenant.channel_access_token, tenant.channel_secret)], clock=clock,
                        keep_deliveries=False, validate_requests=False, reply_token_ttl=3600.0)
        async with run_linesim(config) as sim:
            env = {**os.environ, **settings.env(), "ANPI_TENANT": tenant.id, "ANPI_TIMEZONE": ZONE,
                   "ANPI_CHANNEL_SECRET": tenant.channel_secret,
                   "ANPI_CHANNEL_ACCESS_TOKEN": tenant.channel_access_token,
                   "ANPI_LINE_API": sim.base_url, "ANPI_CLOCK_URL": f"{sim.base_url}/linesim/clock"}
            run.start_worker(env=env)
            processes["worker"] = run.worker
            for name, command in (("ingress", ["ingress", "--port", str(port), "--processes", str(ingress_processes)]),
                                  ("sender", ["sender"]), ("readside", ["readside"])):
                processes[name] = _start(name, command, env, folder)
            flushed: dict[str, set[int]] = {}
            reading = asyncio.ensure_future(_watch_flushes(run, flushed))
            deadline = time.monotonic() + READY_SECONDS
            ready = uuid.uuid4().hex
            await _send_ticks(producer, settings, start_ms + 60_000, ready)   # registered: nothing due yet
            await _until(lambda: len(flushed.get(ready, ())) == settings.partitions, deadline + 600, processes,
                         "the registrations")
            await _until_groups_stable(settings, [f"{settings.prefix}-sender"], deadline, processes)
            await _until(lambda: _answers(port), deadline, processes, f"the ingress on port {port}")
            floor = math.ceil(members / 500) / 200

            # checks: one tick at 9:00 finds every member due
            began = time.monotonic()
            await _send_ticks(producer, settings, nine_ms)
            await _until(lambda: sim.state.delivered >= members, time.monotonic() + PHASE_SECONDS, processes,
                         "every check card")
            out["checks"] = {"seconds": round(time.monotonic() - began, 2), "floor_seconds": round(floor, 2),
                             "ratio_to_floor": round((time.monotonic() - began) / floor, 2)}

            # the notice, to all N, as the admin screen commits it (the worker's labels choose them);
            # the sender's notice loop delivers it
            labels = ReadModel(redis)

            async def labelled() -> bool:
                return sum((await labels.counts(tenant.id)).values()) >= members

            await _until(labelled, time.monotonic() + PHASE_SECONDS, processes, "every member's label")
            reader = Reader(redis)
            began = time.monotonic()
            if rollcall:   # the engine's roll-call, on every partition, as the feed's watcher puts it
                for number, key, value in naming.rollcall_messages(
                        tenant.id, RollCall(nine_ms + 60_000, rid), settings.partitions):
                    await producer.send(settings.inbound, value, key=key or None, partition=number)
                await producer.flush()
                users = people
            else:
                d, errors = nt.draft(nt.DISASTER, "地震の安否確認", "大きな地震がありました。ご無事でしたら、下の「無事です」を押してください。",
                                     [nt.WATCH], ok_button=True)
                assert not errors, errors
                notices = RedisNotices(redis)
                users, groups = await notices.choose(tenant.id, d.segment)
                await notices.commit(tenant.id, book.new_id(), d, users, groups, "bench", int(clock.now() * 1000))
            committed = time.monotonic()
            await _until(lambda: sim.state.delivered >= 2 * members, time.monotonic() + PHASE_SECONDS, processes,
                         "the notice to every member")
            seconds = time.monotonic() - committed   # delivery: from the notice committed to its last delivery
            out["notice"] = {"recipients": len(users), "commit_seconds": round(committed - began, 2),
                             "seconds": round(seconds, 2), "floor_seconds": round(floor, 2),
                             "ratio_to_floor": round(seconds / floor, 2)}

            # the answers: tokens as LINE would issue them with each tap, times from the drill's curve
            rng = random.Random(seed)
            answering = rng.sample(people, int(members * share))
            plan = sorted((answer_minutes(rng) * 60 / speedup, uid) for uid in answering)
            plan = [(offset, uid, sim.state.issue_reply_token(tenant.id, {"type": "user", "userId": uid}))
                    for offset, uid in plan]
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            poster = ctx.Process(target=_poster, args=(child, f"http://127.0.0.1:{port}/webhook/{tenant.id}",
                                                       tenant.channel_secret, plan, concurrency,
                                                       SAFE_DATA if rollcall else OK_DATA), daemon=True)
            poster.start()
            await _until(lambda: parent.poll(), time.monotonic() + 300, processes, "the poster's webhooks")
            parent.recv()
            day = day_of(nine_ms, ZONE)
            cpu_before = {name: _cpu_of_session(p.pid) for name, p in processes.items()}
            busy_before, began = _machine_busy(), time.time()
            parent.send((began, clock.now()))
            reads: list[tuple[float, int]] = []
            answered = 0
            done_at = None
            while True:
                if rollcall:
                    answered = (await reader.rollcall_tally(tenant.id, rid))["*"]["safe"]
                else:
                    answered = (await reader.daily(tenant.id, [day])).get(day, {}).get("answered", 0)
                reads.append((time.time(), answered))
                if done_at is None and parent.poll():
                    acked, statuses = parent.recv()
                    done_at = time.time()
                if done_at is not None and (answered >= len(acked) or time.time() - done_at > 120):
                    break
                _alive(processes)
                await asyncio.sleep(POLL)
            ended = time.time()
            # each answer's thanks may still be on its way to LINE once the tally has it
            thanked = time.monotonic() + 60
            while sim.state.delivered < 2 * members + answered and time.monotonic() < thanked:
                _alive(processes)
                await asyncio.sleep(POLL)
            cpu = {name: round(_cpu_of_session(p.pid) - cpu_before[name], 1) for name, p in processes.items()}
            busy = _machine_busy() - busy_before
            poster.join(30)
            acked.sort()
            lag = sorted(trailing(acked, reads))
            runtime_cpu = sum(cpu.values())
            out["answers"] = {
                "posted": len(plan), "acknowledged": len(acked), "statuses": {str(k): v for k, v in statuses.items()},
                "tallied": answered, "seconds": round(ended - began, 1),
                "offered_busiest_per_s": round(busiest([began + o for o, *_ in plan]), 1),
                "taken_busiest_per_s": round(busiest(acked), 1),
                "tallied_busiest_per_s": round(_tally_busiest(reads), 1),
                "cpu_seconds": cpu, "machine_busy_cpu_seconds": round(busy, 1),
                "answers_per_runtime_cpu_second": round(answered / runtime_cpu, 1) if runtime_cpu else None,
                "answers_per_machine_cpu_second": round(answered / busy, 1) if busy else None,
                "tally_trails_p50_s": round(_percentile(lag, 0.5), 2),
                "tally_trails_p99_s": round(_percentile(lag, 0.99), 2),
                "tally_trails_max_s": round(lag[-1], 2) if lag else None,
            }
            per_member: dict[str, int] = {}
            for n in sim.state.delivery_counts(tenant.id).values():
                per_member[str(n)] = per_member.get(str(n), 0) + 1
            out["line"] = {"delivered": sim.state.delivered, "duplicates": sim.state.duplicates,
                           "deliveries_per_member": dict(sorted(per_member.items())),
                           "requests": {f"{e}:{s}": n for (e, s), n in sorted(sim.state.requests.items())}}
    finally:
        if reading is not None:
            reading.cancel()
        await producer.stop()
        _stop_all(processes)
        await run.delete_topics()
        await redis.flushdb()
        await redis.aclose()
    out.update(python=platform.python_version(), cpus=os.cpu_count(), logs=folder)
    return out


def _tally_busiest(reads: list[tuple[float, int]], window: float = 10.0) -> float:
    """The tally's fastest climb over `window` seconds, per second."""
    best, lo = 0, 0
    for hi, (t, n) in enumerate(reads):
        while t - reads[lo][0] > window:
            lo += 1
        best = max(best, n - reads[lo][1])
    return best / window


async def _watch_flushes(run, flushed: dict[str, set[int]]) -> None:
    """Which partitions have echoed each flush mark on the effects topic (the rest read, not decoded)."""
    async for batch in run.raw_effect_records():
        for value in batch:
            if b'"flush"' in value:
                obj = json.loads(value)
                flushed.setdefault(obj["flush"], set()).add(obj["partition"])
