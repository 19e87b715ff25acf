"""`anpi bench admin`: how long the admin screen's overview and call queue take for a tenant of N members.

Build: one tenant of N members in a temporary embedded store, through the engine's real path —
Register events into the inbox (Store.accept, in chunks), Engine.step, then `days` days of virtual
time in 15-minute ticks. Members are 見守り and 安否通知 alike, checked daily (one in eight every other
day) at 64 times from 06:00 to 21:45, and behave by a fixed share (by their number):

     2 %    never answer: the case stays open in the call queue (見守り) or the notices (安否通知)
     0.1 %  block the account two hours after their first check
    and of everyone else's checks (by member and cycle):
    96 %    answered 5–65 minutes after the check (Ok events committed in bulk before the next tick)
     3 %    answered only after the resend (+30 minutes)
     1 %    answered only after staff or the family were called (+60 minutes): the case closes
     groups (つながり): one per 2,000 members, 10 members each, posted daily at 08:00; those who
            answer at all answer in the group 10 minutes after the post

After each step that step's effects that send LINE messages are marked sent (Store.mark_sent, what the
sender does once LINE took them), so the month's message count is real; they are found by step number,
not with Store.unsent, whose cost grows with the effects that are never sent (see query_ms.sender_unsent).
The engine's clock ends at 22:00 of the last day, which is "today" on the overview. The store is a
temporary file, or `db` (kept, and measured again as it is by a later run).

Measure: the admin app (streams/admin/app.create_app) in a child process (its own core) on a real
port; an aiohttp client logs in as a created admin user, then GETs the overview
(/admin/{tenant}/overview: /admin/{tenant}/ only redirects there) and the call queue
(/admin/{tenant}/calls) `requests` times each, one after another, after `warmup` requests;
latency is taken at the client. Also: the server's CPU time per request, each read-side query's
own time and SQLite's plan for it (to see any scan), the store's size on disk, the build's time and
the rows of each rs_* table.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import sqlite3
import tempfile
import time
from collections import defaultdict
from statistics import median

from agents.clock import HOUR, MINUTE

START = 1_796_050_800_000  # 2026-12-01T00:00+09:00
DAY = 24 * HOUR
TENANT = "bench-city"
ZONE = "Asia/Tokyo"
LOGIN = "bench-admin"
PASSWORD = "bench-admin-password"
TICK = 15 * MINUTE
CHUNK = 10_000            # inbox rows accepted per commit while building
GROUP_EVERY = 2_000       # one つながり group per this many members
GROUP_SIZE = 10
PAGES = (("overview", "/admin/{tenant}/overview"), ("calls", "/admin/{tenant}/calls"))

# behaviours: per member by r = (i * 7919) % 1000 (independent of the check time, i % 64), and for the
# rest per cycle, so that every day has its resends and escalations
SILENT, LATE, FORGETS, BLOCKS, ANSWERS = "silent", "late", "forgets", "blocks", "answers"


def behaviour(i: int, cycle: int) -> str:
    r = (i * 7919) % 1000
    if r < 20:
        return SILENT
    if r == 20:
        return BLOCKS
    c = (r + cycle * 337) % 1000
    if c < 10:
        return LATE
    if c < 40:
        return FORGETS
    return ANSWERS


def member_id(i: int) -> str:
    return f"U{i:032x}"


def group_id(g: int) -> str:
    return f"C{g:032x}"


def _registrations(n: int, first: int, last: int):
    from schemas.events import Register
    from schemas.settings import NOTIFY, WATCH, MemberSettings, Schedule
    out = []
    for i in range(first, last):
        schedule = Schedule("2d" if i % 8 == 7 else "1d", 6 * 60 + (i % 64) * 15, ZONE, None)
        if i % 2:
            settings = MemberSettings(member_id(i), WATCH, schedule, phone=f"090-{i // 10000 % 10000:04d}-{i % 10000:04d}")
        else:
            settings = MemberSettings(member_id(i), NOTIFY, schedule, contacts=(f"U{(n + i):032x}",))
        out.append((settings.id, Register(START, settings)))
    return out


def _groups(n: int):
    from schemas.events import Register
    from schemas.settings import GroupSettings, Schedule
    out = []
    for g in range(n // GROUP_EVERY):
        roster = tuple(member_id(g * GROUP_EVERY + k) for k in range(GROUP_SIZE))
        out.append((group_id(g), Register(START, GroupSettings(group_id(g), Schedule("1d", 8 * 60, ZONE, None), roster))))
    return out


class Builder:
    """The engine over one store, fed in bounded chunks; the residents answer the effects it returns."""

    def __init__(self, path: str, members: int):
        from agents.messages import SENDS_MESSAGES
        from streams.embedded.engine import Engine
        from streams.embedded.store import Store
        self.store = Store(path)
        # building only: a 1 GiB page cache, so that a million members' rows are not read back from
        # the OS for each step (the server measured afterwards opens the file with the defaults)
        self.store.db.execute("PRAGMA cache_size = -1048576")
        self.engine = Engine(self.store, TENANT)
        self.n = members
        self.sends = tuple(sorted(SENDS_MESSAGES))
        self.answers: dict[int, list] = defaultdict(list)   # tick window -> [(subject, event)]
        self.steps = self.effects = self.inbound = 0
        self.kinds: dict[str, int] = defaultdict(int)

    def accept(self, rows: list) -> None:
        for k in range(0, len(rows), CHUNK):
            self.store.accept(TENANT, None, rows[k:k + CHUNK])
        self.inbound += len(rows)
        last = self.store.db.execute("SELECT MAX(seq) FROM inbox").fetchone()[0] or 0  # one tenant in this file
        while self.engine.inbox < last:  # Engine.step applies at most 1,000 inbox rows a step
            self._step(None)

    def _step(self, at: int | None) -> None:
        self._one_step(at)
        while self.engine.behind:  # a tick steps TICK_BUDGET subjects at most; the rest at once, as `anpi serve`
            self._one_step(at)

    def _one_step(self, at: int | None) -> None:
        from schemas import effects as fx
        effects = self.engine.step(at)
        self.steps += 1
        self.effects += len(effects)
        for e in effects:
            self.kinds[e.effect] += 1
            if e.effect == fx.STAFF_CALL:  # and why: a call on a cycle that told contacts takes over its case
                self.kinds[f"{e.effect}:{e.data}"] += 1
        self._respond(effects)
        if any(e.effect in self.sends for e in effects):
            # what the sender does once LINE took them (the month's message count): this step's rows,
            # found by step number (Store.unsent finds the same rows, slower: see `sender_unsent` below)
            db = self.store.db
            step = db.execute("SELECT step FROM cursors WHERE tenant = ?", (TENANT,)).fetchone()[0]
            marks = ",".join("?" * len(self.sends))
            seqs = [seq for (seq,) in db.execute(f"SELECT seq FROM effects WHERE tenant = ? AND sent = 0 AND step = ? "
                                                 f"AND kind IN ({marks})", (TENANT, step, *self.sends))]
            self.store.mark_sent(seqs)

    def _respond(self, effects) -> None:
        from schemas import effects as fx
        from schemas.events import Ok, Unfollow
        for e in effects:
            if e.subject[0] == "C":
                if e.effect == fx.GROUP_CHECK_POSTED:
                    g = int(e.subject[1:], 16)
                    for k in range(GROUP_SIZE):
                        i = g * GROUP_EVERY + k
                        if behaviour(i, 0) not in (SILENT, BLOCKS):
                            at = e.at + 10 * MINUTE
                            ok = Ok(at, member_id(i), e.subject)
                            self._later(at, [(e.subject, ok), (member_id(i), ok)])
                continue
            i = int(e.subject[1:], 16)
            kind, who = e.effect, behaviour(i, e.cycle or 0)
            if kind == fx.CHECK_SENT:
                if who == ANSWERS:
                    at = e.at + 5 * MINUTE + (i % 61) * MINUTE
                    self._later(at, [(e.subject, Ok(at, e.subject))])
                elif who == BLOCKS and e.cycle == 1:
                    at = e.at + 2 * HOUR
                    self._later(at, [(e.subject, Unfollow(at, e.subject))])
            elif kind == fx.CHECK_RESENT and who == FORGETS:
                at = e.at + 30 * MINUTE
                self._later(at, [(e.subject, Ok(at, e.subject))])
            elif kind in fx.ESCALATIONS and who == LATE:
                at = e.at + HOUR
                self._later(at, [(e.subject, Ok(at, e.subject))])

    def _later(self, at: int, rows: list) -> None:
        self.answers[(at - START) // TICK].extend(rows)

    def run(self, days: int) -> dict:
        """Register everyone, then tick through the days; seconds of each part."""
        from streams.process import tune_gc
        tune_gc()
        began = time.perf_counter()
        for first in range(0, self.n, 50_000):
            self.accept(_registrations(self.n, first, min(self.n, first + 50_000)))
        self.accept(_groups(self.n))
        registered = time.perf_counter()
        end = START + (days - 1) * DAY + 22 * HOUR
        window = 0
        while START + window * TICK < end:
            while rows := self.answers.pop(window, None):  # the answers given before this window's tick
                self.accept(rows)
            window += 1
            self._step(min(end, START + window * TICK))
        done = time.perf_counter()
        return {"register_seconds": round(registered - began, 1), "days_seconds": round(done - registered, 1),
                "end": end}

    def close(self) -> None:
        self.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.store.close()


# --- the server (child process) ---------------------------------------------------------------------


def _serve(path: str, now: int, conn, profile_path: str | None) -> None:
    async def main():
        from aiohttp import web

        from streams.admin.app import create_app
        from streams.embedded.store import Store
        store = Store(path)
        root = web.Application()
        root.add_subapp("/admin", create_app(store, {TENANT: ZONE}, lambda: now))
        runner = web.AppRunner(root, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        conn.send(site._server.sockets[0].getsockname()[1])
        profiler = None
        if profile_path:
            import cProfile
            profiler = cProfile.Profile()
        loop = asyncio.get_running_loop()
        cpu = 0.0
        while True:  # "go <page>" … "done", then "stop"
            word = await loop.run_in_executor(None, conn.recv)
            if word.startswith("go"):
                cpu = _cpu()
                if profiler is not None:
                    profiler.enable()
            elif word == "done":
                if profiler is not None:
                    profiler.disable()
                conn.send(_cpu() - cpu)
            elif word == "stop":
                break
        if profiler is not None:
            profiler.dump_stats(profile_path)
        await runner.cleanup()
        store.close()
        conn.send({"max_rss_mib": _peak_rss_mib()})

    asyncio.run(main())


def _peak_rss_mib() -> int:
    """This process's peak RSS (VmHWM: reset at exec, unlike ru_maxrss, which a spawned child inherits)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], q: float) -> float:
    import math
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


async def _measure(base: str, conn, requests: int, warmup: int) -> dict:
    import aiohttp
    out = {}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/admin/{TENANT}/login") as r:
            page = await r.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        async with http.post(f"{base}/admin/{TENANT}/login", allow_redirects=False,
                             data={"csrf": csrf, "login": LOGIN, "password": PASSWORD}) as r:
            if r.status != 303:
                raise RuntimeError(f"login failed: {r.status}")
        for name, path in PAGES:
            url = base + path.format(tenant=TENANT)
            statuses: dict[int, int] = defaultdict(int)
            for _ in range(warmup):
                async with http.get(url, allow_redirects=False) as r:
                    await r.read()
                    statuses[r.status] += 1
            conn.send(f"go {name}")
            await asyncio.sleep(0.05)
            times, size, body = [], 0, ""
            for _ in range(requests):
                began = time.perf_counter()
                async with http.get(url, allow_redirects=False) as r:
                    body = await r.text()
                    status = r.status
                times.append(time.perf_counter() - began)
                statuses[status] += 1
                size = len(body.encode())
            conn.send("done")
            cpu = conn.recv()
            out[name] = {"statuses": {str(k): v for k, v in sorted(statuses.items())},
                         "p50_ms": round(_percentile(times, 0.50) * 1000, 1),
                         "p99_ms": round(_percentile(times, 0.99) * 1000, 1),
                         "max_ms": round(max(times) * 1000, 1),
                         "server_cpu_ms": round(cpu * 1000 / requests, 1), "bytes": size,
                         "shown": _shown(name, body)}
    return out


def _shown(name: str, page: str) -> dict:
    """What the page showed: the overview's counts for today, the call queue's rows."""
    if name == "overview":
        found = {k: int(v.replace(",", "")) for k, v in re.findall(r'data-key="(\w+)">([\d,]+)<', page)}
        quota = re.search(r'id="quota">([\d,]+)<', page)
        found["quota"] = int(quota.group(1).replace(",", "")) if quota else None
        return found
    open_part, _, closed_part = page.partition('id="closed-cases"')
    return {"open_rows": open_part.count("<tr data-member="), "closed_rows": closed_part.count("<tr data-member=")}


# --- the read side's queries, on their own --------------------------------------------------------------


def _queries(path: str, now: int) -> tuple[dict, dict]:
    """Median ms of each read-side call the two pages make (over 20 calls), and SQLite's plan for each."""
    from datetime import date

    from agents import readside as rs
    from agents.clock import local_ordinal
    from agents.messages import SENDS_MESSAGES
    from schemas import effects as fx
    from streams.admin import chart
    from streams.embedded import readside
    from streams.embedded.store import Store

    store = Store(path)
    db = store.db
    today = date.fromordinal(local_ordinal(ZONE, now))
    first = chart.days_back(today, 30)[0].isoformat()
    open_rows = readside.cases(db, TENANT, fx.STAFF_CALL, "open")
    sample = open_rows[0] if open_rows else {"member": member_id(1), "cycle": 1}
    calls = {
        "labels": lambda: readside.labels(db, TENANT),
        "daily_30_days": lambda: readside.daily(db, TENANT, first, today.isoformat()),
        "usage": lambda: readside.usage(db, TENANT, rs.month_of(now)),
        "open_count_staff": lambda: readside.open_count(db, TENANT, fx.STAFF_CALL),
        "open_count_contacts": lambda: readside.open_count(db, TENANT, fx.CONTACTS_NOTIFIED),
        "cases_open_200": lambda: readside.cases(db, TENANT, fx.STAFF_CALL, "open"),
        "cases_closed_20": lambda: readside.cases(db, TENANT, fx.STAFF_CALL, "closed", limit=20),
        "state_of_x1": lambda: readside.state_of(db, TENANT, sample["member"]),
        "check_sent_at_x1": lambda: readside.check_sent_at(db, TENANT, sample["member"], sample["cycle"]),
        # not a page's query: what `anpi serve`'s sender loop runs on the same connection and event
        # loop as the admin pages, every half step (nothing unsent that sends a message, here)
        "sender_unsent": lambda: store.unsent(TENANT, SENDS_MESSAGES),
    }
    ms = {}
    for name, call in calls.items():
        call()
        runs = []
        for _ in range(20):
            began = time.perf_counter()
            call()
            runs.append(time.perf_counter() - began)
        ms[name] = round(median(runs) * 1000, 3)
    sql = {
        "labels": ("SELECT label, n FROM rs_labels WHERE tenant = ? AND n != 0", (TENANT,)),
        "daily_30_days": ("SELECT day, kind, n FROM rs_daily WHERE tenant = ? AND day BETWEEN ? AND ?",
                          (TENANT, first, today.isoformat())),
        "open_count": ("SELECT COUNT(*) FROM rs_cases WHERE tenant = ? AND kind = ? AND status = 'open'",
                       (TENANT, fx.STAFF_CALL)),
        "cases_open_200": (f"SELECT {', '.join(readside.CASE_COLUMNS)} FROM rs_cases WHERE tenant = ? AND kind = ? "
                           "AND status = ? ORDER BY at ASC LIMIT ?", (TENANT, fx.STAFF_CALL, "open", 200)),
        "cases_closed_20": (f"SELECT {', '.join(readside.CASE_COLUMNS)} FROM rs_cases WHERE tenant = ? AND kind = ? "
                            "AND status = ? ORDER BY closed_at DESC LIMIT ?", (TENANT, fx.STAFF_CALL, "closed", 20)),
        "check_sent_at": ("SELECT at FROM effects WHERE tenant = ? AND id = ?", (TENANT, "x")),
        "sender_unsent": ("SELECT MIN(step) FROM effects WHERE tenant = ? AND sent = 0 AND kind IN (?, ?)",
                          (TENANT, fx.CHECK_SENT, fx.CONFIRMED)),
    }
    plans = {name: "; ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {q}", args))
             for name, (q, args) in sql.items()}
    store.close()
    return ms, plans


def _rows(path: str) -> dict:
    from streams.embedded import readside
    db = sqlite3.connect(path)
    try:
        out = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in readside.TABLES}
        cases = db.execute("SELECT kind, status, COUNT(*) FROM rs_cases GROUP BY kind, status").fetchall()
        out["rs_cases_by_kind_status"] = {f"{k}:{s}": n for k, s, n in cases}
        for t in ("states", "effects", "inbox"):
            out[t] = db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        labels = dict(db.execute("SELECT label, n FROM rs_labels WHERE tenant = ?", (TENANT,)).fetchall())
        return out | {"labels": dict(sorted(labels.items()))}
    finally:
        db.close()


def _built(path: str) -> int | None:
    """The engine's clock in a file this bench built before (its last tick), or None."""
    if not os.path.exists(path):
        return None
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT tick FROM cursors WHERE tenant = ?", (TENANT,)).fetchone()
        users = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'admin_users'").fetchone()[0]
        if row is None or not users or db.execute("SELECT 1 FROM admin_users WHERE tenant = ? AND login = ?",
                                                  (TENANT, LOGIN)).fetchone() is None:
            raise ValueError(f"{path}: not a store built by this bench (remove it to build one)")
        return row[0]
    finally:
        db.close()


def _size(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal", path + "-shm") if os.path.exists(p))


def admin_bench(members: int = 1_000_000, days: int = 3, requests: int = 50, warmup: int = 3,
                profile: str | None = None, db: str | None = None) -> str:
    """One JSON line: the overview's and the call queue's p50/p99/max ms for a tenant of `members`.

    `db`: build into this file and keep it; if it already holds a built tenant, measure it as it is
    (no build: `members`, `days` and the build's figures are then those of the file, or null).
    """
    from streams.admin import accounts
    if members < 1 or days < 1 or requests < 1 or warmup < 0:
        raise ValueError("members, days and requests must be positive")
    load_before = os.getloadavg()
    tmp = None
    if db:
        path = db
    else:
        tmp = tempfile.TemporaryDirectory(prefix="anpi-bench-admin-")
        path = os.path.join(tmp.name, "admin.db")
    built: dict = {"register_seconds": None, "days_seconds": None}
    build_seconds = build_rss = steps = effects = inbound = kinds = None
    try:
        now = _built(path)
        if now is None:
            began = time.perf_counter()
            builder = Builder(path, members)
            built = builder.run(days)
            now = built.pop("end")
            accounts.install(builder.store.db)
            accounts.create_user(builder.store.db, TENANT, LOGIN, accounts.ADMIN, PASSWORD, START)
            build_rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            steps, effects, inbound, kinds = builder.steps, builder.effects, builder.inbound, dict(builder.kinds)
            builder.close()
            del builder
            build_seconds = round(time.perf_counter() - began, 1)
        else:
            members = None
            days = round((now - START - 22 * HOUR) / DAY) + 1
        size = _size(path)
        rows = _rows(path)
        load_build = os.getloadavg()

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        server = ctx.Process(target=_serve, args=(path, now, child, profile), daemon=True)
        server.start()
        try:
            if not parent.poll(300):
                raise TimeoutError("the admin server did not start")
            port = parent.recv()
            pages = asyncio.run(_measure(f"http://127.0.0.1:{port}", parent, requests, warmup))
            parent.send("stop")
            if not parent.poll(120):
                raise TimeoutError("the admin server did not stop")
            server_report = parent.recv()
            server.join(30)
        finally:
            if server.is_alive():
                server.kill()
        query_ms, plans = _queries(path, now)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return json.dumps({
        "bench": "admin", "members": members if members is not None else rows["states"] - rows["rs_groups"],
        "groups": rows["rs_groups"], "days": days, "built_now": build_seconds is not None,
        "requests": requests, "warmup": warmup, "pages": pages,
        "build_seconds": build_seconds, **built, "steps": steps, "inbound_events": inbound,
        "effects": effects, "effects_by_kind": dict(sorted(kinds.items())) if kinds else None,
        "store_bytes": size, "store_mib": round(size / 2**20, 1), "rows": rows,
        "query_ms": query_ms, "query_plans": plans,
        "build_max_rss_mib": build_rss, "server_max_rss_mib": server_report["max_rss_mib"],
        "load_before": [round(x, 2) for x in load_before], "load_after_build": [round(x, 2) for x in load_build],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
    }, ensure_ascii=False)
