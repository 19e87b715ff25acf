"""`anpi bench core`: check cycles per second of the pure core in one process, over virtual time.

Every member answers `answer_after` minutes after each check, so each cycle is a check, an OK and a
confirmation: three steps through the core, the due-index and the event queue.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime

from agents.clock import MINUTE, iso, local_ordinal, local_to_epoch
from schemas.effects import CHECK_SENT
from schemas.events import Ok, Register
from schemas.settings import NOTIFY, WATCH, MemberSettings, Schedule
from streams.process import tune_gc
from streams.simulation.simulator import simulate

START = int(datetime.fromisoformat("2026-12-01T00:00:00+09:00").timestamp()) * 1000


def members(n: int) -> list[Register]:
    """A tenant: watch and notify, check times spread from 06:00 to 21:45 (as residents choose them)."""
    out = []
    for i in range(n):
        schedule = Schedule("1d", 6 * 60 + (i % 64) * 15)
        if i % 2:
            settings = MemberSettings(f"U{i:032x}", WATCH, schedule, phone="090-0000-0000")
        else:
            settings = MemberSettings(f"U{i:032x}", NOTIFY, schedule, contacts=(f"U{i + 1:032x}",))
        out.append(Register(START, settings))
    return out


def core_bench(n: int, days: int, answer_after: int) -> str:
    registrations = members(n)
    delay = answer_after * MINUTE

    def residents(effects):
        return [Ok(e.at + delay, e.subject) for e in effects if e.effect == CHECK_SENT]

    tune_gc()
    began = time.perf_counter()
    cycles = effects = 0
    for batch in simulate(registrations, (), START + days * 24 * 60 * MINUTE, respond=residents):
        effects += len(batch)
        cycles += sum(1 for e in batch if e.effect == CHECK_SENT)
    seconds = time.perf_counter() - began
    return json.dumps({
        "bench": "core", "members": n, "days": days, "cycles": cycles, "effects": effects,
        "seconds": round(seconds, 2), "cycles_per_second": round(cycles / seconds),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "python": platform.python_version(), "machine": platform.machine(),
    })


def scenario_of(n: int, days: int, answer_after: int) -> dict:
    """`members(n)` and their OK taps `answer_after` minutes after each check, as a scenario file holds
    them: what `anpi simulate` reads for the same work `core_bench` does in process."""
    zone = "Asia/Tokyo"
    out_members, events = [], []
    for registration in members(n):
        s = registration.settings
        entry = {"id": s.id, "service": s.service, "interval": s.schedule.interval,
                 "time": f"{s.schedule.minute // 60:02d}:{s.schedule.minute % 60:02d}"}
        entry.update({"phone": s.phone} if s.phone else {"contacts": list(s.contacts)})
        out_members.append(entry)
        for day in range(days):
            at = local_to_epoch(zone, local_ordinal(zone, START) + day, s.schedule.minute) + answer_after * MINUTE
            events.append({"at": iso(zone, at), "type": "ok", "member": s.id})
    return {"timezone": zone, "start": iso(zone, START), "end": iso(zone, START + days * 24 * 60 * MINUTE),
            "members": out_members, "events": events}


def simulate_bench(n: int, days: int, answer_after: int = 5) -> str:
    """`anpi simulate` end to end (reading the file, the engine, writing every line to a pipe), timed
    as a child process, beside `core_bench` on the same members and days in this one."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "scenario.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(scenario_of(n, days, answer_after), f, ensure_ascii=False)
        began = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "streams.cli", "simulate", path], stdout=subprocess.PIPE)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: child.stdout.read(1 << 20), b""))
        if child.wait() != 0:
            raise RuntimeError(f"anpi simulate exited {child.returncode}")
        seconds = round(time.perf_counter() - began, 2)   # a child's start alone is 0.3 s: never 0
        size = os.path.getsize(path)
    core = json.loads(core_bench(n, days, answer_after))
    cycles = core["cycles"]
    return json.dumps({
        "bench": "simulate", "members": n, "days": days, "scenario_mib": round(size / 2 ** 20, 1), "lines": lines,
        "simulate_seconds": seconds, "simulate_cycles_per_second": round(cycles / seconds),
        "core_seconds": core["seconds"], "core_cycles_per_second": core["cycles_per_second"],
        "ratio": round(core["seconds"] / seconds, 2),
        "python": platform.python_version(), "machine": platform.machine(),
    })


def tick_bench(sizes=(10_000, 1_000_000), due=1_000, ticks=10) -> str:
    """The cost of a tick with `due` subjects due, in tables of different sizes (median of `ticks`)."""
    from statistics import median

    from agents.clock import MINUTE as M
    from agents.member import register
    from agents.partition import Partition

    out = {}
    for n in sizes:
        table = {}
        for i, reg in enumerate(members(n)):
            # `due` subjects fall due at each of the first `ticks` minutes; the rest much later
            at = START + (i // due) * M if i < due * ticks else START + 10**9
            table[reg.settings.id] = register(reg)._replace(due=at)
        part = Partition(table)
        tune_gc()
        costs = []
        for k in range(ticks):
            began = time.perf_counter()
            fired = part.tick(START + k * M)
            costs.append(time.perf_counter() - began)
            assert len({e.subject for e in fired}) == due
        out[n] = median(costs)
    first, last = out[sizes[0]], out[sizes[-1]]
    return json.dumps({"bench": "tick", "due_per_tick": due,
                       **{f"ms_per_tick_{n}": round(c * 1000, 2) for n, c in out.items()},
                       "ratio": round(last / first, 2), "python": platform.python_version()})


def recovery_bench(n: int) -> str:
    """Seconds from restarting a SIGKILLed worker over n members' state to processing its next tick:
    from the changelog alone, then from the snapshot the restarted worker left on its disk.

    The state is made the real way, by registering n members through a worker; that worker is then
    killed (it writes no snapshot: ANPI_SNAPSHOT_SECONDS=0), and a new one
    must read the changelog whole; it writes a snapshot of what it read, and is killed in turn once
    the snapshot is on disk; a third reads the snapshot and the changelog's tail after it.
    """
    import asyncio
    import logging
    import os
    import signal
    import uuid

    from streams.kafka import snapshot
    from streams.kafka.feed import event_message, tick_messages
    from streams.kafka.settings import Settings
    from streams.kafka.simulate import KafkaRun
    from streams.tools.bench_kafka import rss_mib

    logging.getLogger("aiokafka").setLevel(logging.ERROR)

    async def go():
        run = KafkaRun(Settings.from_env())
        await run.create_topics()
        s = run.settings
        datadir = os.path.join(os.environ.get("ANPI_VAR", "var"), "faust", s.prefix)
        files = [snapshot.path(datadir, s.changelog, number) for number in range(s.partitions)]

        async def restart(at: int) -> tuple[float, int]:
            again = uuid.uuid4().hex
            await run.produce(tick_messages(at, s.partitions, again))
            began = time.perf_counter()
            run.start_worker()
            await run.collect(again, timeout=3600)
            return time.perf_counter() - began, rss_mib(run.worker.pid)

        try:
            run.start_worker(env={"ANPI_SNAPSHOT_SECONDS": "0"})  # none yet: the first restart reads it all
            registered = uuid.uuid4().hex
            await run.produce([*(event_message(r.settings.id, r, s.partitions) for r in members(n)),
                               *tick_messages(START, s.partitions, registered)])
            await run.collect(registered, timeout=7200)
            run.kill_worker(signal.SIGKILL)
            assert not any(os.path.exists(f) for f in files), "a snapshot before the first restart"
            from_changelog = await restart(START + 1)
            deadline = time.monotonic() + 600
            while not all(os.path.exists(f) for f in files):
                if time.monotonic() > deadline:
                    raise TimeoutError("the restarted worker wrote no snapshot")
                await asyncio.sleep(0.2)
            size = sum(os.path.getsize(f) for f in files)
            run.kill_worker(signal.SIGKILL)
            from_snapshot = await restart(START + 2)
            return from_changelog, from_snapshot, size
        finally:
            run.kill_worker()
            await run.delete_topics()
            for f in files:
                if os.path.exists(f):
                    os.unlink(f)

    (changelog_s, changelog_rss), (snapshot_s, snapshot_rss), size = asyncio.run(go())
    return json.dumps({"bench": "recovery", "members": n,
                       "from_changelog": {"seconds_to_next_tick": round(changelog_s, 1), "worker_rss_mib": changelog_rss},
                       "from_snapshot": {"seconds_to_next_tick": round(snapshot_s, 1), "worker_rss_mib": snapshot_rss,
                                         "snapshot_mib": round(size / 2 ** 20, 1)},
                       "python": platform.python_version()})
