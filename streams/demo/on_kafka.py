"""`anpi demo --runtime kafka`: the demo's simulated towns (streams/demo/town.py) on the Kafka runtime.

The broker and Redis are started if they are not running (and stopped again at the end if the demo
started them); then the worker, the ingress, the sender, the read side and the admin screen each run
as a process of their own, as in a deployment, on topics of their own (prefix anpi-demo-<random>,
deleted at the end) and Redis database DEMO_DB (emptied at the start: the demo's own). Each town is
a tenant of the registry there, with its own LINE channel in linesim.

Time: linesim's clock, sped up, is everyone's. It stands at midnight while the processes start
(seconds that would otherwise be days of virtual time), and runs once every one of them answers.
The sender and the admin screen read it (ANPI_CLOCK_URL); the worker's own ticker is off and this
process sends the ticks, trailing the clock by the same grace as the embedded demo's engine. At the
end a last tick at the end time goes round with a flush mark, and the summary counts every effect
of the effects topic up to it: for one seed, the same counts as the embedded demo.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from agents.clock import HOUR
from linesim import Channel, Config, run_linesim
from linesim.limits import ScaledClock
from schemas.events import Register
from schemas.tenant import Tenant
from streams import codec
from streams.tools import services
from streams.admin import accounts
from streams.admin.redis_accounts import RedisStaff
from streams.kafka.records import Naming, tick_messages
from streams.kafka.settings import Settings
from streams.kafka.simulate import KafkaRun
from streams.tenants import registry as tenant_registry
from streams.tenants import settings as ts
from streams.tenants.in_redis import RedisRegistry

log = logging.getLogger("anpi.demo")
DEMO_DB = 11            # the demo's Redis database, emptied at its start
READY_SECONDS = 180.0   # for the processes to start and take their partitions
PARTITIONS = 2          # a few hundred residents a town: fewer transactions and sender batches per tick


async def demo_on_kafka(n: int, days: float, speed: float, exit_after: bool, seed: int, out, tenants: int) -> dict:
    from streams.demo import town as d  # the towns, the summary and the hourly lines: the embedded demo's own

    folder = tempfile.mkdtemp(prefix="anpi-demo-kafka-")
    logging.basicConfig(filename=os.path.join(folder, "anpi.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started_services = not all(services.status().values())
    if started_services:
        print("anpi demo: starting Kafka and Redis (anpi services up)…", file=out, flush=True)
        if await asyncio.to_thread(services.up, None, 180.0, _Quiet()) != 0:
            raise SystemExit("anpi demo: Kafka and Redis did not start (try `anpi services up`)")
    base = Settings.from_env()
    prefix = f"anpi-demo-{uuid.uuid4().hex[:8]}"
    settings = replace(base, redis=_database(base.redis, DEMO_DB), tick_seconds=0.0, partitions=PARTITIONS)
    run = KafkaRun(settings, prefix=prefix)
    run.log_path = os.path.join(folder, "worker.log")
    settings = run.settings
    start = datetime.now(ZoneInfo(d.ZONE)).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    clock = ScaledClock(speed=speed, start=start, held=True)
    now_ms = lambda: int(clock.now() * 1000)  # noqa: E731
    towns = [Tenant(i, secrets.token_hex(16), secrets.token_urlsafe(32), d.ZONE) for i in d.town_ids(tenants)]
    people = {t.id: d.residents(n, seed, None if tenants == 1 else t.id) for t in towns}
    behaviour_of = {t.id: {r.user_id: r.behaviour for r, _ in people[t.id]} for t in towns}
    redis = aioredis.from_url(settings.redis)
    processes: dict[str, subprocess.Popen] = {}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all", enable_idempotence=True, linger_ms=5)
    reading = ticking = None
    try:
        await redis.flushdb()
        at = now_ms()
        registry = RedisRegistry(redis)
        for town in towns:
            await registry.add(tenant_registry.new_entry(town.id, town.id, at), ts.merged(
                None, at, timezone=d.ZONE, channel_secret=town.channel_secret,
                channel_access_token=town.channel_access_token))
        await run.create_topics()
        await producer.start()
        naming, parts = Naming(settings.prefix), settings.partitions
        for town in towns:   # each municipality's roster, imported at the start
            for _, member in people[town.id]:
                number, key, value = naming.event_message(town.id, member.id, Register(at, member), parts)
                await producer.send(settings.inbound, value, key=key or None, partition=number)
        await producer.flush()

        ingress_port, admin_port = _free_port(), _free_port()
        hook = f"http://127.0.0.1:{ingress_port}/webhook"
        channels = [Channel(t.id, t.channel_access_token, t.channel_secret, webhook_url=f"{hook}/{t.id}")
                    for t in towns]
        config = Config(channels, residents=[r for t in towns for r, _ in people[t.id]], clock=clock, seed=seed,
                        reply_token_ttl=60.0 * speed)
        async with run_linesim(config) as sim:
            env = {**os.environ, **settings.env(), "ANPI_TENANT": towns[0].id,
                   "ANPI_PUBLIC_URL": f"http://127.0.0.1:{ingress_port}",   # My Page, on the ingress
                   "ANPI_CHANNEL_SECRET": towns[0].channel_secret,
                   "ANPI_CHANNEL_ACCESS_TOKEN": towns[0].channel_access_token, "ANPI_TIMEZONE": d.ZONE,
                   "ANPI_LINE_API": sim.base_url, "ANPI_CLOCK_URL": f"{sim.base_url}/linesim/clock"}
            run.start_worker(env=env)
            processes["worker"] = run.worker
            for name, command in (("ingress", ["ingress", "--port", str(ingress_port)]), ("sender", ["sender"]),
                                  ("readside", ["readside"]),
                                  ("admin", ["admin", "serve", "--port", str(admin_port)])):
                processes[name] = _start(name, command, env, folder)
            print(f"anpi demo: {n} residents" + (f" in each of {tenants} towns" if tenants > 1 else "") +
                  f", {speed:g}x time, on Kafka (topics {prefix}-*, Redis database {DEMO_DB}): worker, ingress, "
                  f"sender, readside and admin processes; webhook {hook}/<town>, LINE simulator {sim.base_url}, "
                  f"logs in {folder}", file=out, flush=True)

            # the worker steps a first tick (at midnight: nothing due) all the way round, the sender
            # and the read side have their partitions, the two web servers answer: then time runs
            effects: dict[str, tuple[str, object]] = {}
            flushed: dict[str, set[int]] = {}
            lines = d.HourLines(out, behind_ms=2 * HOUR)   # effects come a virtual hour or so after they fell due
            reading = asyncio.ensure_future(_read_effects(run, naming, effects, flushed, lines))
            deadline = time.monotonic() + READY_SECONDS
            ready = uuid.uuid4().hex
            await _send_ticks(producer, settings, at, ready)
            await _until(lambda: len(flushed.get(ready, ())) == parts, deadline, processes, "the worker's first tick")
            await _until_groups_stable(settings, [f"{prefix}-sender"], deadline, processes)
            for port in (ingress_port, admin_port):
                await _until(lambda p=port: _answers(p), deadline, processes, f"port {port}")
            clock.run()
            grace_ms = int(max(5.0, 0.05 * speed) * 1000)   # as the embedded demo's engine
            ticking = asyncio.ensure_future(_ticker(producer, settings, now_ms, grace_ms, 0.05))
            if not exit_after:   # the password goes to the terminal only, never to the log
                for town in towns:
                    password = accounts.random_password()
                    await RedisStaff(redis).create_user(town.id, d.DEMO_LOGIN, accounts.ADMIN, password,
                                                        int(time.time() * 1000), "(anpi demo)")
                    print(f"anpi demo: 管理画面 http://127.0.0.1:{admin_port}/admin/{town.id}/login  ログインID "
                          f"{d.DEMO_LOGIN}  パスワード {password}（この表示だけです）", file=out, flush=True)
            end = at + int(days * 24 * HOUR)
            while not exit_after or now_ms() < end:
                await asyncio.sleep(0.05)
                _alive(processes)
                lines.show(now_ms())
            ticking.cancel()
            last = uuid.uuid4().hex   # every effect up to the end, then what LINE was sent
            await _send_ticks(producer, settings, end, last)
            await _until(lambda: len(flushed.get(last, ())) == parts, time.monotonic() + 120, processes,
                         "the last tick")
            await _until_quiet(sim, processes)
            lines.show(now_ms(), final=True)
            by_town = {t.id: [e for tenant, e in effects.values() if tenant == t.id] for t in towns}
            summary = d.summarize(by_town, sim.state.stats(), behaviour_of)
    finally:
        for task in (ticking, reading):
            if task is not None:
                task.cancel()
        await producer.stop()
        _stop_all(processes)
        await run.delete_topics()
        await redis.aclose()
        if started_services:
            await asyncio.to_thread(services.down, None, _Quiet())
    if exit_after:
        import json
        print(json.dumps(summary, ensure_ascii=False), file=out, flush=True)
    return summary


# --- time -------------------------------------------------------------------------------------------------


async def _send_ticks(producer: AIOKafkaProducer, settings: Settings, at: int, flush: str | None = None) -> None:
    for number, key, value in tick_messages(at, settings.partitions, flush):
        await producer.send(settings.inbound, value, key=key or None, partition=number)
    await producer.flush()


async def _ticker(producer, settings: Settings, now_ms, grace_ms: int, every: float) -> None:
    """A tick per partition every `every` real seconds, at the clock's time less the grace."""
    while True:
        await _send_ticks(producer, settings, now_ms() - grace_ms)
        await asyncio.sleep(every)


# --- what happened ----------------------------------------------------------------------------------------


async def _read_effects(run: KafkaRun, naming: Naming, effects: dict, flushed: dict, lines) -> None:
    """Every committed effect of the run (by id: a batch written again counts once), its tenant, and
    which partitions have echoed each flush mark; each new one onto the hourly `lines`."""
    async for batch in run.effect_records():
        for obj in batch:
            if "flush" in obj:
                flushed.setdefault(obj["flush"], set()).add(obj["partition"])
            elif obj["id"] not in effects:
                tenant = naming.tenant_of(obj)
                effect = codec.effect_from_obj({k: v for k, v in obj.items() if k != "tenant"})
                effects[obj["id"]] = (tenant, effect)
                lines.add([effect])


async def _until_quiet(sim, processes, quiet: float = 3.0, timeout: float = 120.0) -> None:
    """Until linesim has had no request for `quiet` seconds: the sender has delivered what it had."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        count = sum(sim.state.requests.values())
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        _alive(processes)
        await asyncio.sleep(0.2)


# --- the processes ----------------------------------------------------------------------------------------


def _start(name: str, command: list[str], env: dict, folder: str) -> subprocess.Popen:
    with open(os.path.join(folder, f"{name}.log"), "ab") as log_file:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", *command], env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _alive(processes: dict[str, subprocess.Popen]) -> None:
    for name, process in processes.items():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the {name} process exited ({process.returncode}); see its log")


def _stop_all(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for process in processes.values():
        if process is None:
            continue
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def _until(condition, deadline: float, processes, what: str) -> None:
    """Until `condition()` (or the coroutine it returns) is true, every process still running."""
    while True:
        done = condition()
        if asyncio.iscoroutine(done):
            done = await done
        if done:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        _alive(processes)
        await asyncio.sleep(0.1)


async def _until_groups_stable(settings: Settings, groups: list[str], deadline: float, processes) -> None:
    """Until each consumer group has members and a settled assignment (the broker says Stable)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        while True:
            states = {}
            for response in await admin.describe_consumer_groups(groups):
                for group in response.groups:
                    states[group[1]] = (group[2], len(group[5]))
            if all(states.get(g, ("", 0))[0] == "Stable" and states[g][1] > 0 for g in groups):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gave up waiting for the consumer groups ({states})")
            _alive(processes)
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


class _Quiet:
    """Where `anpi services`' progress goes in the demo: nowhere (the demo says what it does)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
