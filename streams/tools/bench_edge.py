"""`anpi bench ingress` and `anpi bench sender`: the LINE edge, over real HTTP.

ingress  signed webhooks per second into streams/line/ingress.py, each body one postback OK from a
         distinct member with a distinct webhookEventId, `concurrency` requests in flight on
         keep-alive connections (aiohttp client). The server runs in a child process (its own core);
         every 200 comes after the sink has the event durably: a committed SQLite row (StoreSink +
         StoreDedupe on a temporary file) or a broker ack from all in-sync replicas (KafkaSink +
         RedisDedupe on a fresh tenant whose 8-partition inbound topic is created here and deleted
         after). Afterwards the stored events are counted: one per request.
sender   seconds for streams/sender.Sender to deliver one check to N distinct members (check_sent
         effects with the same card: multicasts of 500) against linesim with LINE's limits, running
         in a child process; and the ratio to the floor those limits allow (ceil(N/500) multicasts at
         200 requests/s). linesim counts deliveries per member instead of storing each one
         (Config(keep_deliveries=False)) and skips its OpenAPI body check (validate_requests=False: ~10 ms
         a check card here, which would cap it below 200 multicasts/s); the bench checks that every
         member got exactly one delivery.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
import uuid

BOT = "U" + "b" * 32
SECRET = "bench-channel-secret"
TOKEN = "bench-access-token"
OK_AT = 1_796_000_000_000  # epoch ms of every tap (the ingress takes the event's own timestamp)


def _spawn():
    return mp.get_context("spawn")


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


# --- ingress --------------------------------------------------------------------------------------


def _bodies(n: int, seed: str) -> list[tuple[bytes, dict]]:
    """n signed webhook bodies: one postback OK each, from n distinct members, n distinct event ids."""
    import random

    from linesim.residents import postback_event, signed_webhook, user_source

    rng = random.Random(seed)
    out = []
    for i in range(n):
        member = f"U{uuid.UUID(int=rng.getrandbits(128)).hex}"
        tap = postback_event(user_source(member), "action=ok", reply_token=f"{rng.getrandbits(128):032x}",
                             timestamp=OK_AT + i, rng=rng)
        out.append(signed_webhook(SECRET, BOT, [tap]))
    return out


def _ingress_server(kind: str, tenant_id: str, db_path: str, conn, profile_path: str | None,
                    shared_port: int = 0) -> None:
    """Child process: serve the ingress with the chosen sink until told to stop; report what it stored.
    `shared_port`: a port shared with other such processes (SO_REUSEPORT), else one of its own."""
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    from streams.process import tune_gc
    tune_gc()

    async def main():
        from aiohttp import web

        from schemas.tenant import Tenant
        from streams.line import ingress

        tenant = Tenant(tenant_id, SECRET, TOKEN)
        closers = []
        if kind in ("memory", "bare"):  # calibration only: nothing durable (not offered by the CLI)
            sink, dedupe = ingress.MemorySink(), ingress.MemoryDedupe(capacity=10**7)
        elif kind == "sqlite":
            from streams.embedded.runtime import StoreDedupe, StoreSink
            from streams.embedded.store import Store
            store = Store(db_path)
            sink, dedupe = StoreSink(store), StoreDedupe(store)
            closers.append(lambda: _async(store.close))
        else:
            from dataclasses import replace

            import redis.asyncio as aioredis

            from streams.kafka.settings import Settings
            settings = replace(Settings.from_env(), prefix=tenant_id, partitions=8)  # its home tenant
            sink = ingress.KafkaSink(settings)
            await sink.start()
            redis = aioredis.from_url(settings.redis)
            dedupe = ingress.RedisDedupe(redis)
            closers += [sink.stop, redis.aclose]
        app = ingress.create_app({tenant.id: tenant}, sink, dedupe)
        if kind == "bare":  # aiohttp alone: read the body, answer 200
            async def bare(request):
                await request.read()
                return web.json_response({"message": "ok"})
            app = web.Application()
            app.router.add_post("/webhook/{tenant}", bare)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", shared_port, reuse_port=bool(shared_port) or None)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        profiler = None
        if profile_path:
            import cProfile
            profiler = cProfile.Profile()
        conn.send(port)
        loop = asyncio.get_running_loop()
        cpu = 0.0
        while True:  # "go" (measure and profile from here), then "stop"
            word = await loop.run_in_executor(None, conn.recv)
            if word == "go":
                cpu, sys_ = _cpu(), _sys()
                if profiler is not None:
                    profiler.enable()
            if word == "stop":
                cpu, sys_ = _cpu() - cpu, _sys() - sys_
                break
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_path)
        await runner.cleanup()
        for close in closers:
            await close()
        report = {"max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "cpu_seconds": round(cpu, 3), "sys_seconds": round(sys_, 3)}
        if kind == "sqlite":
            from streams.embedded.store import Store
            store = Store(db_path)
            report["stored"] = store.db.execute("SELECT count(*) FROM inbox WHERE tenant = ?", (tenant_id,)).fetchone()[0]
            report["claimed"] = store.db.execute("SELECT count(*) FROM webhooks WHERE tenant = ?", (tenant_id,)).fetchone()[0]
            store.close()
        conn.send(report)

    asyncio.run(main())


class _Pipes:
    """The servers' pipes as one: a word goes to each; their answers come back merged."""

    def __init__(self, pipes):
        self.pipes = pipes

    def poll(self, timeout: float) -> bool:
        return all(pipe.poll(timeout) for pipe in self.pipes)

    def send(self, word) -> None:
        for pipe in self.pipes:
            pipe.send(word)

    def recv(self):
        answers = [pipe.recv() for pipe in self.pipes]
        if not isinstance(answers[0], dict):
            return answers[0]  # the port: the same for all
        merged = dict(answers[0])
        for key in ("cpu_seconds", "sys_seconds"):
            merged[key] = round(sum(a[key] for a in answers), 3)
        merged["max_rss_mib"] = max(a["max_rss_mib"] for a in answers)
        return merged


class _Servers:
    def __init__(self, processes):
        self.processes = processes

    def join(self, timeout: float) -> None:
        for p in self.processes:
            p.join(timeout)

    def is_alive(self) -> bool:
        return any(p.is_alive() for p in self.processes)

    def kill(self) -> None:
        for p in self.processes:
            if p.is_alive():
                p.kill()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sys() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


async def _async(fn):
    fn()


async def _post_all(url: str, bodies: list[tuple[bytes, dict]], concurrency: int) -> tuple[list[float], dict]:
    """POST every body, `concurrency` at a time over keep-alive connections: (latencies s, statuses)."""
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cursor = iter(bodies)
    clock = time.perf_counter

    async def worker(session):
        for body, headers in cursor:
            began = clock()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
            latencies.append(clock() - began)
            statuses[status] = statuses.get(status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies, statuses


async def _kafka_topic(tenant_id: str, create: bool) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streams.kafka.settings import Settings
    settings = Settings.from_env()
    topic = Settings(prefix=tenant_id).inbound
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        if not create:
            await admin.delete_topics([topic])
            return
        await admin.create_topics([NewTopic(topic, 8, 1)])
        for _ in range(100):  # created is not yet led: wait until every partition has a leader
            described = await admin.describe_topics([topic])
            if all(t["error_code"] == 0 and len(t["partitions"]) == 8 and all(p["leader"] >= 0 for p in t["partitions"])
                   for t in described):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"topic {topic} has no leaders")
    finally:
        await admin.close()


async def _kafka_count(tenant_id: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.kafka.settings import Settings
    topic = Settings(prefix=tenant_id).inbound
    consumer = AIOKafkaConsumer(bootstrap_servers=Settings.from_env().kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, n) for n in range(8)]
        begins, ends = await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
        return sum(ends[p] - begins[p] for p in parts)
    finally:
        await consumer.stop()


async def _redis_cleanup(tenant_id: str) -> None:
    import redis.asyncio as aioredis

    from streams.kafka.settings import Settings
    redis = aioredis.from_url(Settings.from_env().redis)
    try:
        batch = []
        async for key in redis.scan_iter(match=f"anpi:{tenant_id}:webhook:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await redis.delete(*batch)
                batch = []
        if batch:
            await redis.delete(*batch)
    finally:
        await redis.aclose()


def ingress_bench(requests: int = 5000, sink: str = "sqlite", concurrency: int = 64,
                  profile: str | None = None, warmup: int | None = None, processes: int = 1) -> str:
    """One JSON line: requests/s and client-side p50/p99 latency of signed webhooks answered 200;
    with `processes` > 1, that many servers on one port (SO_REUSEPORT), their CPU summed."""
    if sink not in ("sqlite", "kafka", "memory", "bare"):
        raise ValueError("sink must be sqlite or kafka")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    warmup = min(500, max(concurrency, requests // 10)) if warmup is None else warmup
    tenant_id = f"bench-{uuid.uuid4().hex[:10]}"
    bodies = _bodies(warmup + requests, tenant_id)
    tmp = tempfile.TemporaryDirectory(prefix="anpi-bench-ingress-")
    db_path = os.path.join(tmp.name, "ingress.db")
    if sink == "kafka":
        asyncio.run(_kafka_topic(tenant_id, create=True))
    ctx = _spawn()
    from streams.kafka.simulate import _free_port  # the one free-port helper the runs already use
    shared = _free_port() if processes > 1 else 0
    pipes, servers = [], []
    for i in range(processes):
        parent, child = ctx.Pipe()
        servers.append(ctx.Process(target=_ingress_server, daemon=True,
                                   args=(sink, tenant_id, db_path, child, profile if i == 0 else None, shared)))
        pipes.append(parent)
        servers[-1].start()
    server = _Servers(servers)
    parent = _Pipes(pipes)
    try:
        if not parent.poll(120):
            raise TimeoutError("the ingress server did not start")
        url = f"http://127.0.0.1:{parent.recv()}/webhook/{tenant_id}"

        async def go():
            _, warm_statuses = await _post_all(url, bodies[:warmup], concurrency)
            parent.send("go")
            await asyncio.sleep(0.05)  # the server has started measuring
            cpu, began = _cpu(), time.perf_counter()
            latencies, statuses = await _post_all(url, bodies[warmup:], concurrency)
            seconds = time.perf_counter() - began
            return warm_statuses, latencies, statuses, seconds, _cpu() - cpu

        warm_statuses, latencies, statuses, seconds, client_cpu = asyncio.run(go())
        parent.send("stop")
        if not parent.poll(120):
            raise TimeoutError("the ingress server did not stop")
        report = parent.recv()
        server.join(30)
        if sink == "kafka":
            report["stored"] = asyncio.run(_kafka_count(tenant_id))
    finally:
        if server.is_alive():
            server.kill()
        if sink == "kafka":
            asyncio.run(_kafka_topic(tenant_id, create=False))
            asyncio.run(_redis_cleanup(tenant_id))
        tmp.cleanup()
    latencies.sort()
    ok = statuses.get(200, 0) + warm_statuses.get(200, 0)
    return json.dumps({
        "bench": "ingress", "sink": sink, "processes": processes, "requests": requests, "concurrency": concurrency,
        "warmup": warmup, "ok": statuses.get(200, 0), "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "stored": report.get("stored"),
        "all_stored": report.get("stored") == ok == warmup + requests if sink in ("sqlite", "kafka") else None,
        "seconds": round(seconds, 3), "requests_per_second": round(requests / seconds),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        "server_cpu_ms_per_request": round(report["cpu_seconds"] * 1000 / requests, 3),
        "server_sys_share_of_cpu": round(report["sys_seconds"] / max(report["cpu_seconds"], 1e-9), 2),
        "server_cpu_share": round(report["cpu_seconds"] / seconds, 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / requests, 3),
        "server_max_rss_mib": report.get("max_rss_mib"),
        "python": platform.python_version(),
    })


# --- sender ---------------------------------------------------------------------------------------


def _linesim_server(conn, keep_deliveries: bool, validate: bool) -> None:
    """Child process: linesim with LINE's limits until told to stop; then a summary of what it delivered."""
    from streams.process import tune_gc
    tune_gc()

    async def main():
        from linesim import Channel, Config, run_linesim
        config = Config(channels=[Channel("bench", access_token=TOKEN, secret=SECRET)],
                        keep_deliveries=keep_deliveries, validate_requests=validate)
        async with run_linesim(config) as sim:
            conn.send(sim.base_url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            state = sim.state
            counts = state.delivery_counts()
            per_member = {}
            for n in counts.values():
                per_member[n] = per_member.get(n, 0) + 1
            conn.send({
                "requests": {f"{e}:{s}": n for (e, s), n in sorted(state.requests.items())},
                "delivered": sum(counts.values()), "recipients": len(counts),
                "deliveries_per_member": {str(k): v for k, v in sorted(per_member.items())},
                "duplicates": state.duplicates,
                "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            })

    asyncio.run(main())


def sender_bench(members: int = 100_000, keep_deliveries: bool = False, validate: bool = False) -> str:
    """One JSON line: seconds for one check to reach `members` people, and its ratio to LINE's floor."""
    from agents.messages import Texts
    from schemas import effects as fx
    from schemas.effects import Effect
    from schemas.tenant import Tenant
    from streams.process import tune_gc
    from streams.line.sender import Limits, Sender

    tenant = Tenant("bench", SECRET, TOKEN)
    at = OK_AT
    effects = [Effect(at, fx.CHECK_SENT, f"U{i:032x}", 1) for i in range(members)]
    limits = Limits()
    multicasts = math.ceil(members / 500) if members > 1 else 0
    floor = multicasts / limits.multicast if members > 1 else 1 / limits.push
    ctx = _spawn()
    parent, child = ctx.Pipe()
    sim = ctx.Process(target=_linesim_server, args=(child, keep_deliveries, validate), daemon=True)
    sim.start()
    try:
        if not parent.poll(120):
            raise TimeoutError("linesim did not start")
        base_url = parent.recv()
        tune_gc()
        # the pure planning on its own (the same work deliver() does first), for the breakdown
        began = time.perf_counter()
        requests, _ = Sender(tenant, base_url, texts=Texts()).plan(effects)
        plan_seconds = time.perf_counter() - began
        del requests

        async def go():
            async with Sender(tenant, base_url, limits=limits) as sender:
                began = time.perf_counter()
                report = await sender.deliver(effects)
                return report, time.perf_counter() - began

        report, seconds = asyncio.run(go())
        parent.send("stop")
        if not parent.poll(600):
            raise TimeoutError("linesim did not report")
        seen = parent.recv()
        sim.join(30)
    finally:
        if sim.is_alive():
            sim.kill()
    once = seen["deliveries_per_member"] == {"1": members}
    return json.dumps({
        "bench": "sender", "members": members, "linesim_validates": validate, "requests": report.requests, "accepted": report.accepted,
        "retries": report.retries, "failed": len(report.failed), "recipients": report.recipients,
        "linesim_requests": seen["requests"], "delivered": seen["delivered"],
        "every_member_once": once, "duplicates": seen["duplicates"],
        "seconds": round(seconds, 3), "plan_seconds": round(plan_seconds, 3),
        "floor_seconds": round(floor, 3), "ratio_to_floor": round(seconds / floor, 3),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "linesim_max_rss_mib": seen["max_rss_mib"], "python": platform.python_version(),
    })
