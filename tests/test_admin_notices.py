"""Notices (お知らせ配信) over real HTTP and linesim, on both backends (tests/backends.py: the embedded
store's SQLite file, and Redis as the Kafka runtime keeps them): compose, preview, send to a segment,
delivery in chunks of ≤ 500 with deterministic retry keys, a crash mid-delivery that resumes without
sending anyone anything twice, tenant isolation and CSRF. The Kafka processes end to end:
tests/test_kafka_notices.py."""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from contextlib import asynccontextmanager

import aiohttp
import pytest

from agents import notices as nt
from agents import outbound as ob
from agents.messages import OK_DATA
from backends import admin_server, backend, side_of  # noqa: F401 (backend: the fixture)
from linesim import user_id_for
from linesim.server import Channel, Config, run_linesim
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.admin import accounts, flex
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.notices import book
from streams.notices.book import Work
from streams.notices.delivery import NoticeDelivery
from streams.notices.in_sqlite import SqliteNotices
from streams.line.sender import Sender
from test_admin_routes import (A, B, FAMILY, GROUP, NOTIFY_FORGETS, NOTIFY_SILENT, PASSWORD, START, WATCH_LATE,
                               WATCH_OK, WATCH_SILENT, Browser, World, build_world, csrf_in)

TENANT_A = Tenant(A, "secret-a", "token-a")
TENANT_B = Tenant(B, "secret-b", "token-b")
TOKYO = Schedule("1d", 9 * 60, "Asia/Tokyo", None)
ZONES = {A: "Asia/Tokyo", B: "Asia/Tokyo"}
HASHED = accounts.hash_password(PASSWORD)   # once: argon2 is slow on purpose


def sim_config() -> Config:
    return Config(channels=[Channel.from_tenant(TENANT_A), Channel.from_tenant(TENANT_B)])


@asynccontextmanager
async def on(backend: str, world: World, staff: bool = True):
    """The backend over `world`, with staff admin and operator of A, admin of B."""
    async with side_of(backend, world, ZONES) as side:
        if staff:
            for tenant, login, role in ((A, "a-admin", "admin"), (A, "a-operator", "operator"), (B, "b-admin", "admin")):
                await side.add_staff(tenant, login, role, HASHED, START)
        yield side


@asynccontextmanager
async def delivering(notices, sim, tenant: Tenant = TENANT_A, **kw):
    """A notice delivery loop of `tenant` over `notices`, sending to linesim, for the `async with`."""
    sender = Sender(tenant, sim.base_url)
    loop = NoticeDelivery(notices, tenant.id, sender, lambda: START, idle_seconds=0.02, **kw)
    task = asyncio.create_task(loop.run())
    try:
        yield sender
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sender.close()


async def until_done(notices, tenant: str, notice_id: str, timeout: float = 20.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while (n := await notices.get(tenant, notice_id))["state"] != book.DONE:
        assert asyncio.get_running_loop().time() < deadline, f"delivery stuck at {n['sent']}/{n['total']}"
        await asyncio.sleep(0.02)
    return n


def statuses(sim, endpoint: str) -> dict[int, int]:
    return {s: n for (e, s), n in sim.state.requests.items() if e == endpoint}


def form(kind="disaster", title="避難所を開設しました", body="○○小学校の体育館を避難所として開設しました。\n毛布があります。",
         services=("watch", "notify"), unanswered=False, ok_button=True, **extra) -> dict:
    data = {"kind": kind, "title": title, "body": body, "services": list(services), **extra}
    if unanswered:
        data["unanswered"] = "1"
    if ok_button:
        data["ok_button"] = "1"
    return data


async def post_form(user: Browser, path: str, data: dict):
    """A form with repeated fields (services) as aiohttp sends it: a list of pairs."""
    pairs = [(k, v) for k, vs in data.items() for v in (vs if isinstance(vs, list) else [vs])]
    async with user.http.post(user.url(path), data=pairs, allow_redirects=False) as r:
        return r.status, await r.text(), r


class Remote(Browser):
    """The same user agent against a server started elsewhere (a runtime's own)."""

    def __init__(self, base: str):
        self.base, self.http = base, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    def url(self, path: str) -> str:
        return self.base + path


def register_many(path: str, n: int, tenant: str = A) -> tuple[World, list[str]]:
    """n 安否通知 members of `tenant`, registered and stepped once by the engine (so they have states)."""
    store = Store(path)
    members = [user_id_for(f"many-{i}") for i in range(n)]
    store.accept(tenant, None, [(m, Register(START, MemberSettings(m, "notify", TOKYO, None, ()))) for m in members])
    engine = Engine(store, tenant)
    while store.pending(tenant, engine.inbox, limit=1):   # the engine takes ≤ 1,000 events a step
        engine.step(START + 60_000)
    return World(store, engine), members


def draft_in(page: str) -> str:
    return page.split('name="draft" value="')[1].split('"')[0]


# --- the pure part ------------------------------------------------------------------------------------------


def test_a_draft_says_clearly_what_is_wrong_and_cleans_what_staff_typed():
    d, errors = nt.draft("disaster", "  避難\r\n指示\u200b ", "本文\r\n二行目\t", ["group", "watch"], False, True)
    assert errors == [] and d.title == "避難 指示" and d.body == "本文\n二行目"
    assert d.segment.services == ("watch", "group") and d.ok_button
    assert nt.draft("info", "t", "b", ["watch"], ok_button=True)[0].ok_button is False  # disaster notices only
    _, errors = nt.draft("flood", "", "x" * (nt.BODY_MAX + 1), [])
    assert any("種類" in e for e in errors) and "件名を入力してください。" in errors
    assert f"本文は{nt.BODY_MAX:,}文字以内にしてください（いま{nt.BODY_MAX + 1:,}文字です）。" in errors
    assert "送り先を一つ以上選んでください。" in errors
    _, errors = nt.draft("info", "あ" * (nt.TITLE_MAX + 1), "b", ["watch"])
    assert errors == [f"件名は{nt.TITLE_MAX}文字以内にしてください（いま{nt.TITLE_MAX + 1}文字です）。"]


def test_segments_follow_the_read_model_labels():
    everyone, roll_call = nt.make_segment(["watch", "notify", "group"]), nt.make_segment(["watch", "notify"], True)
    assert nt.selects(everyone, "watch:idle") and nt.selects(everyone, "group:posted")
    assert not nt.selects(everyone, "watch:unfollowed") and not nt.selects(everyone, None)
    assert not nt.selects(everyone, "group:left")      # the account has left that group
    assert [p for p in ("idle", "sent", "resent", "escalated") if nt.selects(roll_call, f"notify:{p}")] == \
        ["sent", "resent", "escalated"]
    assert not nt.selects(roll_call, "group:posted")
    labels = {"watch:idle": 5, "watch:sent": 2, "notify:escalated": 1, "watch:unfollowed": 4, "group:idle": 3}
    assert nt.estimate(labels, everyone) == (8, 3) and nt.estimate(labels, roll_call) == (3, 0)


def test_chunks_and_retry_keys_are_deterministic():
    users = [f"U{i:032x}" for i in range(1201)]
    plan = nt.chunks(reversed(users), ["C" + "2" * 32, "C" + "1" * 32])
    assert [(c.endpoint, len(c.recipients)) for c in plan] == [("multicast", 500)] * 2 + [("multicast", 201),
                                                                                          ("push", 1), ("push", 1)]
    assert plan[0].recipients[0] == users[0] and plan[3].recipients == ("C" + "1" * 32,)
    assert plan == nt.chunks(users, ["C" + "1" * 32, "C" + "2" * 32])
    keys = {nt.retry_key(A, "n1", i) for i in range(5)}
    assert len(keys) == 5 and nt.retry_key(A, "n1", 0) == nt.retry_key(A, "n1", 0) != nt.retry_key(B, "n1", 0)
    assert nt.percent(0, 0, 0) == 100 and nt.percent(999, 0, 1000) == 99 and nt.percent(990, 10, 1000) == 100


def test_the_card_is_one_bubble_and_a_disaster_card_answers_with_action_ok():
    d, _ = nt.draft("disaster", "避難指示", "すぐに避難してください。", ["watch"], ok_button=True)
    [card] = nt.messages(d)
    assert card["type"] == "flex" and card["altText"] == "【災害・避難情報】避難指示"
    action = card["contents"]["footer"]["contents"][0]["action"]
    assert action == {"type": "postback", "label": "無事です", "data": OK_DATA, "displayText": "無事です"}
    html = str(flex.render([card]))
    assert "避難指示" in html and "無事です" in html and 'data-postback="action=ok"' in html
    plain, _ = nt.draft("info", "<b>", "a & b", ["watch"])
    assert "footer" not in nt.card(plain)["contents"]
    assert "&lt;b&gt;" in str(flex.render(nt.messages(plain))) and "<b>" not in str(flex.render(nt.messages(plain)))


# --- compose → preview → send → linesim -------------------------------------------------------------------------


def test_compose_preview_send_reaches_exactly_the_segment_once_each_and_the_progress_reaches_100(tmp_path, backend):
    world = build_world(str(tmp_path / "anpi.db"))

    async def go():
        async with run_linesim(sim_config()) as sim, on(backend, world) as side, admin_server(side) as (server, _), \
                delivering(side.notices, sim):
            user = Browser(server)
            await user.login(A, "a-operator")   # operators send too
            status, page, _ = await user.get("/admin/city-a/notices")
            assert status == 200 and "お知らせ配信" in page and 'class="here"' in page and "準備中" not in page
            assert "確認に<strong>まだ返事のない方だけ</strong>" in page and "約3人" in page
            assert "地域" in page and "まだできません" not in page
            csrf = csrf_in(page)
            draft = draft_in(page)
            roll_call = form(services=("watch", "notify"), unanswered=True, csrf=csrf, draft=draft)
            status, page, _ = await post_form(user, "/admin/city-a/notices/preview", roll_call)
            assert status == 200 and 'class="line-bubble"' in page and "避難所を開設しました" in page
            assert "約3人" in page and "無事です" in page and "見守り・安否通知（確認に未回答の方だけ）" in page
            assert await side.notices.recent(A) == [] and sim.state.deliveries == []  # nothing sent yet
            status, _, response = await post_form(user, "/admin/city-a/notices/send", roll_call)
            assert status == 303 and response.headers["Location"] == f"/admin/city-a/notices/{draft}"
            n = await until_done(side.notices, A, draft)
            assert (n["total"], n["sent"], n["failed"]) == (3, 3, 0)
            # the three who have not answered (escalated), once each, by one multicast valid for LINE
            assert Counter(d.to for d in sim.state.deliveries) == {WATCH_SILENT: 1, WATCH_LATE: 1, NOTIFY_SILENT: 1}
            assert statuses(sim, "multicast") == {200: 1} and sim.state.duplicates == 0
            delivered = sim.state.deliveries[0]
            assert delivered.retry_key == nt.retry_key(A, draft, 0)
            assert delivered.messages[0]["contents"]["footer"]["contents"][0]["action"]["data"] == OK_DATA
            assert "\n毛布があります。" in json.dumps(delivered.messages, ensure_ascii=False).replace("\\n", "\n")
            status, page, _ = await user.get(f"/admin/city-a/notices/{draft}")
            assert status == 200 and 'id="percent">100%' in page and "配信済み" in page
            assert '<meta http-equiv="refresh"' not in page   # done: no more reloading
            # the same form again (a double click, a reload): the same notice, nothing sent again
            status, _, response = await post_form(user, "/admin/city-a/notices/send", roll_call)
            assert status == 303 and response.headers["Location"].endswith(draft)
            assert len(await side.notices.recent(A)) == 1

            # a notice to everyone: the five members by one multicast, the group by one push
            status, page, _ = await user.get("/admin/city-a/notices")
            everyone = form(kind="info", title="お祭りのお知らせ", body="週末に夏祭りがあります。", ok_button=False,
                            services=("watch", "notify", "group"), csrf=csrf, draft=draft_in(page))
            before = len(sim.state.deliveries)
            status, _, response = await post_form(user, "/admin/city-a/notices/send", everyone)
            assert status == 303
            n = await until_done(side.notices, A, everyone["draft"])
            assert (n["total"], n["sent"]) == (6, 6)
            new = sim.state.deliveries[before:]
            assert Counter(d.to for d in new) == {m: 1 for m in (WATCH_SILENT, WATCH_OK, WATCH_LATE, NOTIFY_SILENT,
                                                                 NOTIFY_FORGETS, GROUP)}
            assert FAMILY not in {d.to for d in new}   # a contact is not a member: not in any segment
            assert [d.endpoint for d in new if d.to == GROUP] == ["push"]
            assert "footer" not in new[0].messages[0]["contents"]
            page = (await user.get("/admin/city-a/notices"))[1]
            assert "お祭りのお知らせ" in page and "避難所を開設しました" in page and "6 / 6" in page
            log = await side.audit_log(A)
            assert [r["action"] for r in log[:3]] == ["notice.send", "notice.send", "notice.preview"]
            assert log[0]["login"] == "a-operator" and log[0]["target"] == "お知らせ「お祭りのお知らせ」"
            audit_page = (await Browser(server).get("/admin/city-a/audit"))  # an anonymous user: login page
            assert audit_page[0] == 302
            await user.close()
    asyncio.run(go())
    world.store.close()


def test_a_group_the_account_has_left_gets_no_notice(tmp_path, backend):
    """Its label is group:left (the account was removed from it): neither counted nor sent to."""
    from schemas.events import GroupLeft
    world = build_world(str(tmp_path / "anpi.db"))
    world.store.accept(A, None, [(GROUP, GroupLeft(world.now[0], GROUP))])
    world.step(world.now[0] + 60_000)

    async def go():
        async with run_linesim(sim_config()) as sim, on(backend, world) as side:
            assert dict(side.world.store.states(A))[GROUP].active is False
            users, groups = await side.notices.choose(A, nt.make_segment(["watch", "notify", "group"]))
            assert groups == [] and len(users) == 5
            async with admin_server(side) as (server, _), delivering(side.notices, sim):
                user = Browser(server)
                await user.login(A, "a-admin")
                page = (await user.get("/admin/city-a/overview"))[1]
                assert "退出したグループ 1" in page
                status, _, _ = await post_form(user, "/admin/city-a/notices/send",
                                               form(services=("group",), csrf=await user.csrf(A), draft=book.new_id()))
                assert status == 400 and sim.state.deliveries == []   # nobody to send to: said so, nothing sent
                await user.close()
    asyncio.run(go())
    world.store.close()


def test_a_bad_draft_gets_a_clear_message_keeps_what_was_typed_and_sends_nothing(tmp_path, backend):
    world = build_world(str(tmp_path / "anpi.db"))

    async def go():
        async with on(backend, world) as side, admin_server(side) as (server, _):
            user = Browser(server)
            await user.login(A, "a-admin")
            csrf = await user.csrf(A)
            long_body = "長い本文です。" * 200
            for path in ("/admin/city-a/notices/preview", "/admin/city-a/notices/send"):
                status, page, _ = await post_form(user, path, form(title="", body=long_body, services=(), csrf=csrf,
                                                                   draft=book.new_id()))
                assert status == 400 and "件名を入力してください。" in page and "送り先を一つ以上選んでください。" in page
                assert f"本文は1,000文字以内にしてください（いま{len(long_body):,}文字です）" in page
                assert long_body in page   # nothing typed is lost
            # 書き直す: back to the form as typed
            status, page, _ = await post_form(user, "/admin/city-a/notices/preview",
                                              form(title="直す件名", csrf=csrf, edit="1", draft=book.new_id()))
            assert status == 200 and 'value="直す件名"' in page and 'id="errors"' not in page
            assert await side.notices.recent(A) == []
            await user.close()
    asyncio.run(go())
    world.store.close()


# --- scale: chunks of 500, and a crash in the middle ------------------------------------------------------------


def test_a_notice_to_1200_members_goes_by_three_multicasts(tmp_path, backend):
    world, members = register_many(str(tmp_path / "anpi.db"), 1200)

    async def go():
        async with run_linesim(sim_config()) as sim, on(backend, world, staff=False) as side, \
                delivering(side.notices, sim):
            d, _ = nt.draft("important", "断水のお知らせ", "明日は断水します。", ["notify"])
            users, groups = await side.notices.choose(A, d.segment)
            assert sorted(users) == sorted(members) and groups == []
            notice_id = book.new_id()
            assert await side.notices.commit(A, notice_id, d, users, groups, "a-admin", START)
            assert not await side.notices.commit(A, notice_id, d, users, groups, "a-admin", START)   # once
            n = await until_done(side.notices, A, notice_id)
            assert (n["total"], n["sent"], n["failed"]) == (1200, 1200, 0)
            assert statuses(sim, "multicast") == {200: 3}
            sizes = Counter(d.request_id for d in sim.state.deliveries)
            assert sorted(sizes.values()) == [200, 500, 500]
            assert Counter(d.to for d in sim.state.deliveries) == {m: 1 for m in members}
            assert await side.notices.chunk_states(A, notice_id) == {book.SENT: 3}
    asyncio.run(go())
    world.store.close()


def test_a_crash_mid_delivery_resumes_the_same_list_and_sends_nobody_anything_twice(tmp_path, backend):
    path = str(tmp_path / "anpi.db")
    world, members = register_many(path, 1200)

    async def go():
        async with run_linesim(sim_config()) as sim, on(backend, world, staff=False) as side:
            d, _ = nt.draft("disaster", "避難指示", "高台へ避難してください。", ["notify"], ok_button=True)
            notice_id = book.new_id()
            users, groups = await side.notices.choose(A, d.segment)
            await side.notices.commit(A, notice_id, d, users, groups, "a-admin", START)

            # the first process: chunk 0 goes and is committed; chunk 1 is accepted by LINE, and the
            # process dies before it commits that (on Redis its claim on chunk 1 runs out after 0.5 s)
            sender = Sender(TENANT_A, sim.base_url)
            real, calls, crashed = sender.send_prepared, [], asyncio.Event()

            async def dies_after_the_second_call(*args, **kw):
                verdict = await real(*args, **kw)
                calls.append(verdict)
                if len(calls) == 2:
                    crashed.set()
                    await asyncio.Event().wait()   # killed here
                return verdict
            sender.send_prepared = dies_after_the_second_call
            first = NoticeDelivery(side.notices, A, sender, lambda: START, window=1, idle_seconds=0.02, claim_ms=500)
            task = asyncio.create_task(first.run())
            await asyncio.wait_for(crashed.wait(), 20)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sender.close()
            assert statuses(sim, "multicast") == {200: 2}

            # a new process resumes from what was committed: on the same file, or on the same Redis
            if backend == "sqlite":
                world.store.close()
                world.store = Store(path)
            async with side_of(backend, world, {A: "Asia/Tokyo"}) if backend == "sqlite" else _same(side) as again:
                n = await again.notices.get(A, notice_id)
                assert (n["sent"], n["state"]) == (500, book.SENDING)
                async with delivering(again.notices, sim):
                    n = await until_done(again.notices, A, notice_id)
            assert (n["total"], n["sent"], n["failed"]) == (1200, 1200, 0)
            assert statuses(sim, "multicast") == {200: 3, 409: 1}   # chunk 1 again: LINE had it
            assert sim.state.duplicates == 0
            assert Counter(d.to for d in sim.state.deliveries) == {m: 1 for m in members}
    asyncio.run(go())
    world.store.close()


@asynccontextmanager
async def _same(side):
    """Another process on the same Redis: a new RedisNotices (its own claims)."""
    from backends import Side
    from streams.notices.in_redis import RedisNotices
    again = Side(side.kind, side.world, side.zones, side.redis)
    assert isinstance(again.notices, RedisNotices) and again.notices.owner != side.notices.owner
    yield again


def test_two_sender_replicas_share_a_notices_chunks_and_each_goes_once(tmp_path, running_services):
    """Kafka runs a delivery loop in every `anpi sender`: each chunk is claimed by one of them (Redis)."""
    world, members = register_many(str(tmp_path / "anpi.db"), 2600)

    async def go():
        async with run_linesim(sim_config()) as sim, on("redis", world, staff=False) as side, \
                _same(side) as other, delivering(side.notices, sim), delivering(other.notices, sim):
            d, _ = nt.draft("important", "断水のお知らせ", "明日は断水します。", ["notify"])
            notice_id = book.new_id()
            users, groups = await side.notices.choose(A, d.segment)
            await side.notices.commit(A, notice_id, d, users, groups, "a-admin", START)
            n = await until_done(side.notices, A, notice_id)
            assert (n["total"], n["sent"], n["failed"]) == (2600, 2600, 0)
            assert statuses(sim, "multicast") == {200: 6}   # no chunk twice, not even a 409
            assert Counter(d.to for d in sim.state.deliveries) == {m: 1 for m in members}
    asyncio.run(go())
    world.store.close()


def test_a_refused_chunk_counts_as_failed_and_the_notice_still_finishes(tmp_path, backend):
    world, members = register_many(str(tmp_path / "anpi.db"), 3)

    async def go():
        config = sim_config()
        config.channels[0] = Channel.from_tenant(TENANT_A, monthly_quota=1)   # the month's messages are spent
        async with run_linesim(config) as sim, on(backend, world, staff=False) as side, delivering(side.notices, sim):
            d, _ = nt.draft("info", "お知らせ", "本文", ["notify"])
            notice_id = book.new_id()
            await side.notices.commit(A, notice_id, d, members, [], "a-admin", START)
            n = await until_done(side.notices, A, notice_id)
            assert (n["total"], n["sent"], n["failed"]) == (3, 0, 3)
            assert statuses(sim, "multicast") == {429: 1}
            assert await side.notices.chunk_states(A, notice_id) == {book.FAILED: 1}
    asyncio.run(go())
    world.store.close()


def test_a_chunk_line_did_not_take_goes_again_later_with_the_same_key(tmp_path, backend):
    world, members = register_many(str(tmp_path / "anpi.db"), 3)

    async def go():
        async with run_linesim(sim_config()) as sim, on(backend, world, staff=False) as side:
            sender = Sender(TENANT_A, "http://127.0.0.1:9", retry=ob.RetryPolicy(base=0.01, attempts=2))  # LINE down
            real, tried = sender.send_prepared, []

            async def watched(*args, **kw):
                outcome = await real(*args, **kw)
                tried.append((args[3], outcome))
                sender.base_url = sim.base_url   # LINE is back
                return outcome
            sender.send_prepared = watched
            loop = NoticeDelivery(side.notices, A, sender, lambda: START, idle_seconds=0.02, retry_seconds=0.05)
            task = asyncio.create_task(loop.run())
            d, _ = nt.draft("info", "お知らせ", "本文", ["notify"])
            notice_id = book.new_id()
            await side.notices.commit(A, notice_id, d, members, [], "a-admin", START)
            n = await until_done(side.notices, A, notice_id)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sender.close()
            assert (n["sent"], n["failed"]) == (3, 0)
            assert [outcome for _, outcome in tried] == [(ob.GIVE_UP, None), (ob.OK, 200)]
            assert tried[0][0] == tried[1][0] == nt.retry_key(A, notice_id, 0)
            assert Counter(d.to for d in sim.state.deliveries) == {m: 1 for m in members}
    asyncio.run(go())
    world.store.close()


# --- who may see and send --------------------------------------------------------------------------------------


def test_another_tenants_staff_can_neither_see_nor_send_a_notice(tmp_path, backend):
    world = build_world(str(tmp_path / "anpi.db"))
    d, _ = nt.draft("disaster", "A市の避難指示", "本文", ["watch"])
    notice_id = book.new_id()

    async def go():
        async with on(backend, world) as side, admin_server(side) as (server, _):
            await side.notices.commit(A, notice_id, d, [WATCH_OK], [], "a-admin", START)
            stranger = Browser(server)
            await stranger.login(B, "b-admin")
            csrf = await stranger.csrf(B)
            for path in (f"/admin/city-b/notices/{notice_id}", f"/admin/city-a/notices/{notice_id}",
                         "/admin/city-a/notices", "/admin/city-b/notices/not-an-id"):
                status, page, _ = await stranger.get(path)
                assert status == 404 and "A市の避難指示" not in page, path
            assert "A市の避難指示" not in (await stranger.get("/admin/city-b/notices"))[1]
            # B's staff send to their own members only, even with A's notice id as their draft
            status, page, _ = await post_form(stranger, "/admin/city-a/notices/send",
                                              form(csrf=csrf, draft=book.new_id()))
            assert status == 404
            status, _, response = await post_form(stranger, "/admin/city-b/notices/send",
                                                  form(csrf=csrf, draft=notice_id, services=("watch",)))
            # the embedded store's ids are one space (refused); Redis keeps each tenant's apart (B's own)
            assert status == (400 if backend == "sqlite" else 303)
            a_notice = await side.notices.get(A, notice_id)
            assert a_notice["title"] == "A市の避難指示" and a_notice["total"] == 1
            assert await side.notices.recipients(A, Work(notice_id, 0, "multicast", 1)) == [WATCH_OK]
            draft = book.new_id()
            status, _, response = await post_form(stranger, "/admin/city-b/notices/send",
                                                  form(csrf=csrf, draft=draft, services=("watch",)))
            assert status == 303
            assert await side.notices.recipients(B, Work(draft, 0, "multicast", 1)) == [user_id_for("b-resident")]
            assert await side.notices.recipients(A, Work(draft, 0, "multicast", 1)) == []
            assert [n["id"] for n in await side.notices.recent(A)] == [notice_id]
            await stranger.close()
    asyncio.run(go())
    world.store.close()


@pytest.mark.parametrize("token", [None, "", "forged", "other-session"])
def test_sending_without_the_sessions_csrf_token_sends_nothing(tmp_path, token, backend):
    world = build_world(str(tmp_path / "anpi.db"))

    async def go():
        async with on(backend, world) as side, admin_server(side) as (server, _):
            user, other = Browser(server), Browser(server)
            await user.login(A, "a-admin")
            await other.login(A, "a-operator")
            data = form(draft=book.new_id())
            if token == "other-session":
                data["csrf"] = await other.csrf(A)
            elif token is not None:
                data["csrf"] = token
            for path in ("/admin/city-a/notices/preview", "/admin/city-a/notices/send"):
                status, page, _ = await post_form(user, path, data)
                assert status == 403 and "操作を受け付けられませんでした" in page
            assert await side.notices.recent(A) == []
            assert not [r for r in await side.audit_log(A) if r["action"].startswith("notice")]
            for u in (user, other):
                await u.close()
    asyncio.run(go())
    world.store.close()


def test_anpi_serve_delivers_the_notices_sent_from_its_admin_screen(tmp_path):
    """The runtime of `anpi serve` (ServedRuntime) runs the delivery loop beside its engine and sender."""
    import time

    from streams.embedded.serve import ServedRuntime

    store = Store(str(tmp_path / "anpi.db"))
    now = int(time.time() * 1000)
    members = [user_id_for(f"served-{i}") for i in range(4)]
    store.accept(A, None, [(m, Register(now, MemberSettings(m, "notify", TOKYO, None, ()))) for m in members])
    accounts.install(store.db)
    accounts.create_user(store.db, A, "a-admin", accounts.ADMIN, "a long enough password", now)

    async def go():
        async with run_linesim(sim_config()) as sim:
            runtime = ServedRuntime(store, [TENANT_A], sim.base_url, lambda: int(time.time() * 1000), step_seconds=0.05)
            url = await runtime.start()
            try:
                while len(list(store.states(A))) < len(members):   # the engine registers them
                    await asyncio.sleep(0.05)
                user = Remote(url)
                await user.login(A, "a-admin", "a long enough password")
                draft = book.new_id()
                status, _, _ = await post_form(user, "/admin/city-a/notices/send",
                                               form(services=("notify",), csrf=await user.csrf(A), draft=draft))
                assert status == 303
                n = await until_done(SqliteNotices(store), A, draft)
                assert (n["total"], n["sent"]) == (4, 4)
                assert Counter(d.to for d in sim.state.deliveries if d.endpoint == "multicast") == {m: 1 for m in members}
                await user.close()
            finally:
                await runtime.close()
    asyncio.run(go())
    store.close()
