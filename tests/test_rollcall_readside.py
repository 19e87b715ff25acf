"""The roll-call's tally on the read side (what the staff's page shows), from the committed effects:
by area and in all, the lists, the answer-time curve, drills apart and clearable."""
import asyncio
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agents import readside as rs
from agents.subject import addressed
from schemas.events import RollCall
from backends import redis_url
from streams import codec
from streams.embedded import readside as embedded
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.simulation import scenario as scenario_module
from streams.kafka.readside import EFFECTS, Reader, Writer
from streams.simulation import simulator

ROOT = Path(__file__).resolve().parent.parent
REAL, DRILL = "jma-20261201233600", "drill-1202"


def expected_tally(effects, rollcall: str) -> dict:
    """The tally worked out from the effects alone: each member's last word on the roll-call."""
    status, area = {}, {}
    for e in effects:
        if e.rollcall != rollcall or e.subject.startswith("C"):
            continue
        area[e.subject] = e.area or ""
        if e.effect == "rollcall_sent":
            status.setdefault(e.subject, rs.WAITING)
        elif e.effect == "rollcall_unanswered" and status[e.subject] == rs.WAITING:
            status[e.subject] = rs.LISTED
        elif e.effect == "rollcall_safe" and status[e.subject] != rs.NEED_HELP:
            status[e.subject] = rs.SAFE
        elif e.effect == "rollcall_need_help":
            status[e.subject] = rs.NEED_HELP
    counted = Counter((area[member], said) for member, said in status.items())
    return rs.roll_tally((a, said, n) for (a, said), n in counted.items())


def run_embedded(tmp_path, loaded, tenant="town"):
    store = Store(str(tmp_path / "anpi.db"))
    for event in loaded.registrations:
        store.accept(tenant, None, [(event.settings.id, event)])
    engine = Engine(store, tenant)
    at = loaded.start
    for event in loaded.events:
        while at + 3_600_000 < event.at:
            at += 3_600_000
            engine.step(at)
        rows = [("", event)] if type(event) is RollCall else [(s, event) for s in addressed(event)]
        store.accept(tenant, None, rows)
    engine.step(loaded.end - 1)
    return store


class EmbeddedTally:
    """The embedded read side, stepped by the embedded engine (effects committed with it)."""
    def __init__(self, store):
        self.store, self.db = store, store.db

    async def rollcalls(self, tenant):
        return embedded.rollcalls(self.db, tenant)

    async def rollcall_tally(self, tenant, rollcall):
        return embedded.rollcall_tally(self.db, tenant, rollcall)

    async def rollcall_members(self, tenant, rollcall, status):
        return embedded.rollcall_members(self.db, tenant, rollcall, status)

    async def rollcall_curve(self, tenant, rollcall, until):
        return embedded.rollcall_curve(self.db, tenant, rollcall, until)

    async def clear_drill(self, tenant, rollcall):
        return embedded.clear_drill(self.db, tenant, rollcall)


async def redis_tally(effects, tenant, client):
    """The Kafka runtime's read side: the effects as the effects topic holds them, applied by the
    Writer `anpi readside` runs (twice: a replay changes nothing), read by the admin screen's Reader."""
    await client.flushdb()
    writer = Writer(client, tenant)
    records = [(offset, codec.dumps(codec.effect_to_obj(e))) for offset, e in enumerate(effects)]
    for _ in range(2):
        for start in range(0, len(records), 7):  # batches of a few records, as fetches come
            await writer.apply([(EFFECTS, 0, records[start:start + 7])])
    return Reader(client)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_the_tally_by_area_the_lists_and_the_curve_follow_the_committed_effects(tmp_path, request, kind):
    loaded = scenario_module.load(ROOT / "examples" / "jishin.yaml")
    effects = simulator.run(loaded)
    store = run_embedded(tmp_path, loaded)

    async def story():
        client = None
        if kind == "redis":
            request.getfixturevalue("running_services")
            client = aioredis.from_url(redis_url())
            side = await redis_tally(effects, "town", client)
        else:
            side = EmbeddedTally(store)
        try:
            assert [r["rollcall"] for r in await side.rollcalls("town")] == [DRILL, REAL]
            for rollcall in (REAL, DRILL):
                assert await side.rollcall_tally("town", rollcall) == expected_tally(effects, rollcall)
            real = await side.rollcall_tally("town", REAL)
            assert real["kita"] == {"need_help": 1, "listed": 0, "waiting": 0, "safe": 2, "asked": 3}
            assert real["*"]["asked"] == 3 and "minami" not in real
            [asked] = await side.rollcall_members("town", REAL, rs.NEED_HELP)
            assert (asked["member"], asked["area"], asked["answered_at"]) == ("U002", "kita", epoch_ms("2026-12-01T23:41"))
            drill = await side.rollcall_tally("town", DRILL)
            assert drill["*"] == {"need_help": 1, "listed": 2, "waiting": 0, "safe": 1, "asked": 4}
            listed = await side.rollcall_members("town", DRILL, rs.LISTED)
            assert [(m["member"], m["area"]) for m in listed] == [("U002", "kita"), ("U004", "kita")]
            # answered 2 min (U001) and 5 min (U002, need help) after it went out; U004 the next morning
            curve = await side.rollcall_curve("town", REAL, 10)
            assert curve[:6] == [0, 0, 1, 1, 1, 2] and curve[10] == 2
            assert await side.clear_drill("town", REAL) == 0   # a real roll-call is the record: never cleared
            assert await side.clear_drill("town", DRILL) == 4
            assert [r["rollcall"] for r in await side.rollcalls("town")] == [REAL]
            assert await side.rollcall_tally("town", REAL) == real
        finally:
            if client is not None:
                await client.aclose()
    asyncio.run(story())
    store.close()


def epoch_ms(local: str) -> int:
    return round(datetime.fromisoformat(local + ":00+09:00").timestamp() * 1000)


def test_in_redis_a_roll_calls_member_lists_are_forgotten_like_closed_cases_and_its_tally_like_daily_counts(running_services):
    from streams.kafka.readside import CLOSED_DAYS, DAILY_DAYS
    effects = simulator.run(scenario_module.load(ROOT / "examples" / "jishin.yaml"))

    async def ttls():
        client = aioredis.from_url(redis_url())
        try:
            await redis_tally(effects, "town", client)
            keys = [k.decode() async for k in client.scan_iter("anpi:{town}:rs:roll:*")]
            return {k: await client.pttl(k) for k in keys}
        finally:
            await client.aclose()
    day = 86_400_000
    found = asyncio.run(ttls())
    lists = {k: t for k, t in found.items() if k.endswith((":st", ":need_help", ":kita", ":minami"))}
    tallies = {k: t for k, t in found.items() if k not in lists}
    assert lists and tallies and any(k.endswith(":curve") for k in tallies)
    assert all((CLOSED_DAYS - 1) * day < t <= CLOSED_DAYS * day for t in lists.values()), lists
    assert all((DAILY_DAYS - 1) * day < t <= DAILY_DAYS * day for t in tallies.values()), tallies
