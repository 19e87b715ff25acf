"""`anpi demo`: the whole service on one machine, with no LINE account — the seed's 2週間お試し.

linesim plays LINE and a few hundred residents; the embedded runtime (`anpi serve`) runs the
engine, the webhook ingress and the sender on a fresh SQLite file; time runs `speed` times faster.
Live, the terminal shows each virtual hour in which something happened, and the admin screen is
open on the same server (a login "demo" with a fresh password, printed once). With `--exit` it stops
after `days` virtual days and prints one JSON summary line (a contract checked from outside).
With `tenants` > 1 it runs that many municipalities at once in the same process (tenants are data:
one runtime serves them all), each with its own LINE channel and `n` residents; the summary then
adds `tenants: {id: summary}`, and its top-level counts are their sums. `--runtime kafka` runs the
same towns on the Kafka runtime's processes (streams/demo/on_kafka.py), with the same summary.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

from agents.clock import HOUR
from linesim import Channel, Config, Resident, run_linesim
from linesim.limits import ScaledClock
from linesim.residents import user_id_for
from schemas import effects as fx
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.admin import accounts
from streams.embedded.serve import ServedRuntime
from streams.embedded.store import Store
from streams.line.sender import Sender

ZONE = "Asia/Tokyo"
# who the simulated residents are: most answer, some forget the first card, a few never answer
# and a few block the account (so every rung of the ladder shows)
BEHAVIOURS = (("answer", 0.70), ("forget", 0.14), ("never", 0.10), ("block", 0.06))
LABELS = ((fx.CHECK_SENT, "確認を送信"), (fx.CONFIRMED, "OK"), (fx.CHECK_RESENT, "再送"),
          (fx.STAFF_CALL, "職員へ連絡"), (fx.CONTACTS_NOTIFIED, "家族へ連絡"),
          (fx.STAFF_REMINDER, "職員へ再通知"), (fx.RESOLVED_AFTER_ESCALATION, "連絡後に応答"),
          (fx.ALL_CLEAR, "家族へ応答を連絡"), (fx.UNFOLLOWED, "ブロック"))


def residents(n: int, seed: int, town: str | None = None) -> list[tuple[Resident, MemberSettings]]:
    """n residents: half 見守り (staff are called), half 安否通知 (a family contact is told); `town`: the
    municipality (its LINE channel) whose own they are (their ids and behaviours), None: the one town
    of a plain demo."""
    rnd = random.Random(seed if town is None else f"{seed}-{town}")
    label = "" if town is None else f"{town}-"
    weights = [w for _, w in BEHAVIOURS]
    out = []
    for i in range(n):
        uid = user_id_for(f"demo-resident-{label}{i}")
        behaviour = rnd.choices([b for b, _ in BEHAVIOURS], weights)[0]
        resident = Resident(uid, behaviour, delay=rnd.randint(1, 90) * 60.0, jitter=600.0, channel=town)
        schedule = Schedule("1d", 9 * 60, ZONE, None)
        if i % 2:
            settings = MemberSettings(uid, "watch", schedule, f"090-0000-{i:04d}", ())
        else:
            settings = MemberSettings(uid, "notify", schedule, None, (user_id_for(f"demo-family-{label}{i}"),))
        out.append((resident, settings))
    return out


def town_ids(tenants: int) -> list[str]:
    return ["demo"] if tenants == 1 else [f"demo-{k}" for k in range(1, tenants + 1)]


async def demo(n: int = 300, days: float = 3, speed: float = 5000, exit_after: bool = False, seed: int = 1,
               db: str | None = None, out=sys.stdout, tenants: int = 1) -> dict:
    start = datetime.now(ZoneInfo(ZONE)).replace(hour=0, minute=0, second=0, microsecond=0)
    clock = ScaledClock(speed=speed, start=start.timestamp())
    now_ms = lambda: int(clock.now() * 1000)  # noqa: E731
    towns = [Tenant(i, secrets.token_hex(16), secrets.token_urlsafe(32), ZONE) for i in town_ids(tenants)]
    people = {t.id: residents(n, seed, None if tenants == 1 else t.id) for t in towns}
    behaviour_of = {t.id: {r.user_id: r.behaviour for r, _ in people[t.id]} for t in towns}

    path = db or os.path.join(tempfile.mkdtemp(prefix="anpi-demo-"), "anpi.db")
    # the runtime's own log (retries, refused replies) goes beside the data, not over the live view
    logging.basicConfig(filename=os.path.join(os.path.dirname(path), "anpi.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store(path)
    at = now_ms()
    for town in towns:  # each municipality's roster, imported at the start
        for _, settings in people[town.id]:
            store.accept(town.id, None, [(settings.id, Register(at, settings))])

    # grace: a tap is in flight for some real milliseconds, which are many virtual seconds here
    grace_ms = int(max(5.0, 0.05 * speed) * 1000)
    step_seconds = 0.02

    def sender_for(t: Tenant, metrics) -> Sender:
        # reply tokens last a minute of *real* time (it is LINE's latency they allow for): speed minutes here
        return Sender(t, "http://unused", wall=clock.now, reply_max_age=50.0 * speed, metrics=metrics)
    runtime = ServedRuntime(store, towns, "", now_ms, grace_ms=grace_ms, step_seconds=step_seconds,
                            sender_for=sender_for)
    url = await runtime.start()
    channels = [Channel(t.id, t.channel_access_token, t.channel_secret, webhook_url=f"{url}/webhook/{t.id}")
                for t in towns]
    config = Config(channels, residents=[r for t in towns for r, _ in people[t.id]], clock=clock, seed=seed,
                    reply_token_ttl=60.0 * speed)
    lines = HourLines(out, behind_ms=HOUR)
    runtime.listeners.append(lines.add)
    try:
        async with run_linesim(config) as sim:
            for town in runtime.towns.values():
                town.sender.base_url = sim.base_url
            hooks = ", ".join(f"{url}/webhook/{t.id}" for t in towns)
            many = f" in each of {tenants} towns" if tenants > 1 else ""
            print(f"anpi demo: {n} residents{many}, {speed:g}x time, webhook {hooks}, LINE simulator "
                  f"{sim.base_url}, data and log in {os.path.dirname(path)}", file=out, flush=True)
            if not exit_after:  # the password goes to the terminal only, never to the log
                for town in towns:
                    password = demo_login(store, town.id)
                    print(f"anpi demo: 管理画面 {url}/admin/{town.id}/login  ログインID {DEMO_LOGIN}  "
                          f"パスワード {password}（この表示だけです）", file=out, flush=True)
            end = at + int(days * 24 * HOUR)
            while not exit_after or now_ms() < end:
                await asyncio.sleep(0.05)
                lines.show(now_ms())
            await runtime.stop_engine()
            await runtime.drain()
            await asyncio.sleep(0.2)
            lines.show(now_ms(), final=True)
            summary = summarize({t.id: store.effects(t.id) for t in towns}, sim.state.stats(), behaviour_of)
    finally:
        await runtime.close()
        store.close()
    if exit_after:
        print(json.dumps(summary, ensure_ascii=False), file=out, flush=True)
    return summary


DEMO_LOGIN = "demo"


def demo_login(store: Store, tenant: str) -> str:
    """The demo tenant's administrator "demo" with a fresh random password (returned, not logged)."""
    password = accounts.random_password()
    accounts.install(store.db)
    with store.transaction():
        if not accounts.set_password(store.db, tenant, DEMO_LOGIN, password):
            accounts.create_user(store.db, tenant, DEMO_LOGIN, accounts.ADMIN, password, int(time.time() * 1000))
    return password


class HourLines:
    """The live view: one line per virtual hour in which something happened, each effect counted in
    the hour it fell due (its own `at`), the line printed once the hour is `behind_ms` past (what a
    runtime still has in flight for it has come by then). One that comes later still goes in the
    next line."""

    def __init__(self, out, behind_ms: int):
        self.out, self.behind_ms = out, behind_ms
        self.hours: dict[int, Counter] = {}
        self.printed_until = 0   # every hour before this one has had its line

    def add(self, effects) -> None:
        for effect in effects:
            slot = max(effect.at - effect.at % HOUR, self.printed_until)
            self.hours.setdefault(slot, Counter())[effect.effect] += 1

    def show(self, now: int, final: bool = False) -> None:
        for slot in sorted(self.hours):
            if not final and slot + HOUR + self.behind_ms > now:
                break
            counts = self.hours.pop(slot)
            when = datetime.fromtimestamp(slot / 1000, ZoneInfo(ZONE)).strftime("%m/%d %H時台")
            parts = [f"{label} {counts[kind]}" for kind, label in LABELS if counts[kind]]
            if parts:
                print(f"{when}  " + "  ".join(parts), file=self.out, flush=True)
            self.printed_until = max(self.printed_until, slot + HOUR)


def tally(effects) -> dict:
    c = Counter(e.effect for e in effects)
    return {"checks_sent": c[fx.CHECK_SENT], "oks": c[fx.CONFIRMED] + c[fx.RESOLVED_AFTER_ESCALATION],
            "resends": c[fx.CHECK_RESENT],
            "escalations": {fx.STAFF_CALL: c[fx.STAFF_CALL], fx.CONTACTS_NOTIFIED: c[fx.CONTACTS_NOTIFIED]}}


def summarize(effects_of: dict[str, list], stats: dict, behaviour_of: dict[str, dict[str, str]]) -> dict:
    """The `--exit` summary (a contract): the counts, by behaviour too, and what LINE billed; LINE's
    requests and duplicates over all. Several towns: `tenants` has each one's, the top level their sums."""
    requests: dict = {}
    for row in stats["requests"]:
        requests.setdefault(row["endpoint"], {})[str(row["status"])] = row["count"]
    towns = {}
    for town, effects in effects_of.items():
        behaviours = behaviour_of[town]
        towns[town] = {**tally(effects), "messages_billed": stats["channels"][town]["used"],
                       "by_behaviour": {b: tally([e for e in effects if behaviours.get(e.subject) == b])
                                        for b in sorted(set(behaviours.values()))}}
    total = _sum(list(towns.values()))
    summary = {"checks_sent": total["checks_sent"], "oks": total["oks"], "resends": total["resends"],
               "escalations": total["escalations"], "line_requests": requests,
               "messages_billed": total["messages_billed"], "duplicates": stats["duplicates"],
               "by_behaviour": total["by_behaviour"]}
    if len(towns) > 1:
        summary["tenants"] = towns
    return summary


def _sum(parts: list[dict]) -> dict:
    """Counts added up, nested dicts key by key."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            out[key] = _sum([out.get(key, {}), value]) if isinstance(value, dict) else out.get(key, 0) + value
    return out


def main(n: int, days: float, speed: float, exit_after: bool, seed: int = 1, tenants: int = 1,
         runtime: str = "embedded") -> int:
    try:
        if runtime == "kafka":
            from streams.demo.on_kafka import demo_on_kafka
            asyncio.run(demo_on_kafka(n, days, speed, exit_after, seed, sys.stdout, tenants))
        else:
            asyncio.run(demo(n, days, speed, exit_after, seed, tenants=tenants))
    except KeyboardInterrupt:
        print("anpi demo: stopped", file=sys.stderr)
    except RuntimeError as error:   # a process of the Kafka runtime that did not start or stopped
        print(f"anpi demo: {error}", file=sys.stderr)
        return 1
    return 0
