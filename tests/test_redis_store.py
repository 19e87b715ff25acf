"""streams/kafka/redis_store.py against the real Redis server (db 15), and agents/readside.label()."""
import asyncio
import os
from collections import Counter
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import group, member
from agents.readside import label
from schemas.events import Follow, Message, Ok, Pause, Register, Resolve, Tick, Unfollow
from schemas.settings import GroupSettings, MemberSettings, Schedule
from streams.kafka.redis_store import ReadModel, first_delivery

TEST_DB = 15


def redis_url() -> str:
    url = urlsplit(os.environ.get("ANPI_REDIS") or "redis://127.0.0.1:6379/0")
    return urlunsplit(url._replace(path=f"/{TEST_DB}"))


def on_redis(test):
    """Run `await test(redis)` on a fresh client to an emptied db 15, and empty it again after."""
    async def main():
        redis = aioredis.Redis.from_url(redis_url())
        try:
            await redis.flushdb()
            return await test(redis)
        finally:
            await redis.flushdb()
            await redis.aclose()
    return asyncio.run(main())


# ------------------------------------------------------------------------ webhook de-duplication

@pytest.mark.usefixtures("running_services")
def test_first_delivery_then_redelivery():
    async def test(redis):
        assert await first_delivery(redis, "city-1", "01FZ74A0TDDPYRVKNK77XKC3ZR") is True
        assert await first_delivery(redis, "city-1", "01FZ74A0TDDPYRVKNK77XKC3ZR") is False
        assert await first_delivery(redis, "city-1", "01FZ74A0TDDPYRVKNK77XKC3ZS") is True
        ttl = await redis.ttl("anpi:city-1:webhook:01FZ74A0TDDPYRVKNK77XKC3ZR")
        assert 7 * 24 * 3600 - 5 <= ttl <= 7 * 24 * 3600
        assert await first_delivery(redis, "city-1", "short", ttl_seconds=60) is True
        assert 55 <= await redis.ttl("anpi:city-1:webhook:short") <= 60
    on_redis(test)


@pytest.mark.usefixtures("running_services")
def test_first_delivery_tenants_are_independent():
    async def test(redis):
        assert await first_delivery(redis, "city-1", "E1") is True
        assert await first_delivery(redis, "city-2", "E1") is True
        assert await first_delivery(redis, "city-2", "E1") is False
        assert await first_delivery(redis, "city-1", "E1") is False
    on_redis(test)


@pytest.mark.usefixtures("running_services")
def test_first_delivery_rejects_bad_ids():
    async def test(redis):
        for bad in ("", "a:b", "a b", "x" * 129):
            with pytest.raises(ValueError, match="webhook event id"):
                await first_delivery(redis, "city-1", bad)
        with pytest.raises(ValueError, match="tenant id"):
            await first_delivery(redis, "city:1", "E1")
        with pytest.raises(ValueError, match="ttl_seconds"):
            await first_delivery(redis, "city-1", "E1", ttl_seconds=0)
        assert await redis.dbsize() == 0
    on_redis(test)


# ---------------------------------------------------------------------------------- read model

@pytest.mark.usefixtures("running_services")
def test_counts_follow_label_changes_of_many_subjects():
    subjects = [f"U{i:032x}" for i in range(2500)]  # more than one script call's chunk

    async def test(redis):
        model = ReadModel(redis)
        assert await model.counts("city-1") == {}
        assert await model.record_many("city-1", {s: "watch:idle" for s in subjects}) == 2500
        assert await model.counts("city-1") == {"watch:idle": 2500}
        assert await model.record_many("city-1", {s: "watch:sent" for s in subjects[:1000]}) == 1000
        assert await model.counts("city-1") == {"watch:idle": 1500, "watch:sent": 1000}
        await model.record_many("city-1", {s: "watch:resent" for s in subjects[:10]}
                                | {s: "watch:escalated" for s in subjects[10:13]}
                                | {s: "notify:idle" for s in subjects[2000:]})
        assert await model.counts("city-1") == {"watch:idle": 1000, "watch:sent": 987, "watch:resent": 10,
                                                "watch:escalated": 3, "notify:idle": 500}
        await model.record_many("city-1", {s: "watch:idle" for s in subjects[:1000]})
        # a label nobody has any more is left out, not reported as 0
        assert await model.counts("city-1") == {"watch:idle": 2000, "notify:idle": 500}
        assert await model.record_many("city-1", {}) == 0
    on_redis(test)


@pytest.mark.usefixtures("running_services")
def test_applying_the_same_batch_twice_changes_nothing():
    batch = {f"U{i}": ("watch:sent" if i % 3 else "notify:escalated") for i in range(300)} | {"C1": "group:posted"}

    async def test(redis):
        model = ReadModel(redis)
        await model.record_many("city-1", {f"U{i}": "watch:idle" for i in range(100)})
        assert await model.record_many("city-1", batch) == 301
        once = await model.counts("city-1")
        labels = await redis.hgetall("anpi:city-1:label")
        assert await model.record_many("city-1", batch) == 0  # the replay after a crash
        assert await model.counts("city-1") == once == {"watch:sent": 200, "notify:escalated": 100,
                                                        "group:posted": 1}
        assert await redis.hgetall("anpi:city-1:label") == labels
    on_redis(test)


@pytest.mark.usefixtures("running_services")
def test_empty_label_removes_the_subject():
    async def test(redis):
        model = ReadModel(redis)
        await model.record_many("city-1", {"U1": "watch:idle", "U2": "watch:idle", "C1": "group:idle"})
        assert await model.record_many("city-1", {"U1": "", "C1": ""}) == 2
        assert await model.counts("city-1") == {"watch:idle": 1}
        assert await model.record_many("city-1", {"U1": "", "U9": ""}) == 0  # gone already, or never there
        assert await model.counts("city-1") == {"watch:idle": 1}
        assert await redis.hkeys("anpi:city-1:label") == [b"U2"]
        await model.record_many("city-1", {"U1": "watch:sent"})  # and may come back
        assert await model.counts("city-1") == {"watch:idle": 1, "watch:sent": 1}
    on_redis(test)


@pytest.mark.usefixtures("running_services")
def test_tenants_never_mix():
    async def test(redis):
        model = ReadModel(redis)
        await model.record_many("city-1", {"U1": "watch:idle", "U2": "watch:sent"})
        await model.record_many("city-2", {"U1": "notify:escalated"})  # the same subject id elsewhere
        assert await model.counts("city-1") == {"watch:idle": 1, "watch:sent": 1}
        assert await model.counts("city-2") == {"notify:escalated": 1}
        await model.record_many("city-2", {"U1": "", "U2": ""})
        assert await model.counts("city-1") == {"watch:idle": 1, "watch:sent": 1}
        assert await model.counts("city-2") == {}
        assert await model.counts("city-3") == {}
        keys = sorted(k.decode() for k in await redis.keys("*"))
        assert keys == ["anpi:city-1:counts", "anpi:city-1:label"]
    on_redis(test)


@pytest.mark.usefixtures("running_services")
def test_invalid_tenant_ids_are_refused():
    async def test(redis):
        model = ReadModel(redis)
        for bad in ("", "a:b", "a*", "a b", "x" * 65, "市役所", "a\n", "a{b}", None, 7):
            with pytest.raises(ValueError, match="tenant id"):
                await model.record_many(bad, {"U1": "watch:idle"})
            with pytest.raises(ValueError, match="tenant id"):
                await model.counts(bad)
        assert await model.counts("A-z_09" + "x" * 58) == {}  # 64 characters: fine
        with pytest.raises(ValueError, match="subject"):
            await model.record_many("city-1", {"": "watch:idle"})
        assert await redis.dbsize() == 0
    on_redis(test)


LABELS = ["", "watch:idle", "watch:sent", "watch:resent", "watch:escalated", "watch:unfollowed",
          "notify:idle", "group:idle", "group:posted"]
batches = st.lists(st.tuples(st.sampled_from(["city-1", "city-2"]),
                             st.dictionaries(st.sampled_from([f"U{i}" for i in range(12)]), st.sampled_from(LABELS),
                                             max_size=12),
                             st.booleans()),  # replay the batch right away, as after a crash
                   max_size=15)


@pytest.mark.usefixtures("running_services")
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_counts_match_a_plain_model(history):
    expected: dict[str, dict[str, str]] = {"city-1": {}, "city-2": {}}

    async def test(redis):
        model = ReadModel(redis)
        for tenant, updates, replay in history:
            changed = sum(expected[tenant].get(s, "") != v for s, v in updates.items())
            assert await model.record_many(tenant, updates) == changed
            if replay:
                assert await model.record_many(tenant, updates) == 0
            for subject, value in updates.items():
                if value:
                    expected[tenant][subject] = value
                else:
                    expected[tenant].pop(subject, None)
            for name, labels in expected.items():
                assert await model.counts(name) == dict(Counter(labels.values()))
    on_redis(test)


# ------------------------------------------------------------------------- label() of a state

TOKYO = ZoneInfo("Asia/Tokyo")
H = 3600 * 1000


def at(text: str) -> int:
    return int(datetime.fromisoformat(f"2026-{text}:00").replace(tzinfo=TOKYO).timestamp() * 1000)


def a_member(service="watch"):
    settings = MemberSettings(id="U001", service=service, schedule=Schedule("1d", 9 * 60),
                              phone="090-1234-5678" if service == "watch" else None,
                              contacts=("U900",) if service == "notify" else ())
    return member.register(Register(at("12-01 00:00"), settings))


@pytest.mark.parametrize("service", ["watch", "notify"])
def test_label_of_a_member_follows_its_ladder(service):
    state = a_member(service)
    assert label(state) == f"{service}:idle"
    state, _ = member.step(state, Tick(at("12-01 09:00")))
    assert label(state) == f"{service}:sent"
    state, _ = member.step(state, Tick(at("12-02 09:00")))
    assert label(state) == f"{service}:resent"
    state, _ = member.step(state, Tick(at("12-02 12:00")))
    assert label(state) == f"{service}:escalated"
    state, _ = member.step(state, Ok(at("12-02 13:00"), "U001"))
    assert label(state) == f"{service}:idle"


def test_label_of_an_unfollowed_member():
    # a 見守り resident who blocks the account is a case for staff (rule 6), not a count of blocked ones
    state, _ = member.step(a_member(), Tick(at("12-01 09:00")))
    state, _ = member.step(state, Unfollow(at("12-01 10:00"), "U001"))
    assert label(state) == "watch:escalated"
    state, _ = member.step(state, Follow(at("12-01 11:00"), "U001"))
    assert label(state) == "watch:escalated"   # until staff resolve it
    state, _ = member.step(state, Resolve(at("12-01 12:00"), "U001"))
    assert label(state) == "watch:idle"
    state, _ = member.step(state, Unfollow(at("12-01 13:00"), "U001"))
    state, _ = member.step(state, Resolve(at("12-01 14:00"), "U001"))
    assert label(state) == "watch:unfollowed"   # resolved while blocked: no case, no checks


def test_a_paused_member_is_idle():
    until = datetime(2026, 12, 5).toordinal()
    state, _ = member.step(a_member("notify"), Pause(at("12-01 08:00"), "U001", until))
    assert state.paused_until is not None
    assert label(state) == "notify:idle"
    state, _ = member.step(state, Unfollow(at("12-01 10:00"), "U001"))
    assert label(state) == "notify:unfollowed"


def test_label_of_a_group():
    settings = GroupSettings(id="C001", schedule=Schedule("1d", 8 * 60), members=("U010", "U011"))
    state = group.register(Register(at("12-01 00:00"), settings))
    assert label(state) == "group:idle"
    state, _ = group.step(state, Tick(at("12-01 08:00")))
    assert label(state) == "group:posted"
    state, _ = group.step(state, Ok(at("12-01 08:30"), "U010", "C001"))
    assert label(state) == "group:posted"
    state, _ = group.step(state, Message(at("12-01 08:40"), "U012", "C001"))
    state, _ = group.step(state, Ok(at("12-01 08:45"), "U011", "C001"))
    assert label(state) == "group:posted"  # U012, seen in the group, has not confirmed yet
    state, _ = group.step(state, Tick(at("12-02 07:00")))
    assert label(state) == "group:idle"  # closed at post + 23 h


def test_label_refuses_what_is_not_a_state():
    with pytest.raises(TypeError):
        label(None)
