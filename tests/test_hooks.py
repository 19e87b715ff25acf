"""A tenant's outgoing webhook (issue 12): staff calls, their reminders and their ends handed to a call
centre as signed JSON, the effect id as the idempotency key, tried again with backoff. The rules
(pure), the queue on both stores, the setting on both registries, and the whole way round on `anpi
serve`: staff save the address on 設定, a help in LINE reaches a real HTTP receiver, which refuses
the first try."""
from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from agents import hooks
from agents.clock import HOUR, MINUTE
from backends import backend, store_and_redis  # noqa: F401 (backend: the fixture)
from linesim import user_id_for
from linesim.residents import postback_event, user_source
from schemas import effects as fx
from schemas.effects import Effect
from schemas.events import Register
from schemas.settings import MemberSettings
from streams.hooks.in_redis import RedisHooks
from streams.hooks.in_sqlite import SqliteHooks
from streams.hooks.queue import LEASE_MS, HookItem
from streams.tenants import settings as tenant_settings
from streams.tenants.in_redis import RedisRegistry
from streams.tenants.in_sqlite import SqliteRegistry
from test_admin_settings import DAILY_9, RESIDENT, TENANT, Town, audit_rows, csrf_in, served

T0 = 1_796_050_800_000 + 10 * HOUR   # 2026-12-01 10:00 in Tokyo


# --- the rules --------------------------------------------------------------------------------------


def test_the_body_names_the_case_and_its_reason_and_nothing_personal_and_is_the_same_every_time():
    call = Effect(T0, fx.STAFF_CALL, RESIDENT, 4, data=fx.HELP)
    raw = hooks.body("town", "Asia/Tokyo", call, "https://admin.example/admin/town/calls")
    assert raw == hooks.body("town", "Asia/Tokyo", call, "https://admin.example/admin/town/calls")
    obj = json.loads(raw)
    assert obj == {"id": call.id, "type": "staff_call", "tenant": "town", "at": "2026-12-01T10:00:00+09:00",
                   "member": RESIDENT, "cycle": 4, "reason": "help",
                   "link": f"https://admin.example/admin/town/calls#{obj['link'].split('#')[1]}"}
    assert json.loads(hooks.body("town", "Asia/Tokyo", Effect(T0, fx.STAFF_REMINDER, RESIDENT, 4, data="2")))["n"] == 2
    ended = Effect(T0, fx.RESOLVED_AFTER_ESCALATION, RESIDENT, 4, data="staff")
    assert json.loads(hooks.body("town", "Asia/Tokyo", ended))["by"] == "staff"
    assert json.loads(hooks.body("town", "Asia/Tokyo", ended._replace(data=None)))["by"] == "resident"
    signed = hooks.signature("k" * 40, raw)
    assert signed.startswith("sha256=") and hooks.verify("k" * 40, raw, signed)
    assert not hooks.verify("k" * 40, raw + b" ", signed) and not hooks.verify("x" * 40, raw, signed)


def test_a_failed_post_is_tried_again_after_a_minute_doubling_to_an_hour_and_given_up_after_a_day():
    waits = [hooks.next_try(T0, n, T0) - T0 for n in range(1, 10)]
    assert waits == [MINUTE, 2 * MINUTE, 4 * MINUTE, 8 * MINUTE, 16 * MINUTE, 32 * MINUTE, HOUR, HOUR, HOUR]
    assert hooks.next_try(T0, 30, T0 + 24 * HOUR) is None


@pytest.mark.parametrize("url", ["http://call-centre.example/hook", "ftp://x.example/", "https://user:pw@x.example/",
                                 "https://", "https://x.example/a b", "https://x.example/" + "a" * 600, "hook"])
def test_a_webhook_address_must_be_https(url):
    with pytest.raises(tenant_settings.Invalid):
        tenant_settings.clean_hook_url(url)


def test_https_and_this_machine_are_taken():
    for url in ("https://call-centre.example/anpi?town=1", "http://127.0.0.1:8089/hook", "http://localhost/x"):
        assert tenant_settings.clean_hook_url(url) == url


# --- the queue and the setting, on both stores ---------------------------------------------------------


def test_the_queue_keeps_each_post_once_until_delivered_or_given_up_on_both_stores(tmp_path, backend):
    async def go():
        async with store_and_redis(str(tmp_path / "anpi.db"), backend) as (store, client):
            queue = RedisHooks(client, "town") if client is not None else SqliteHooks(store, "town")
            a, b = HookItem("a", '{"id":"a"}', T0, 0, T0), HookItem("b", '{"id":"b"}', T0, 0, T0 + MINUTE)
            await queue.add([a, b])
            await queue.add([a._replace(body="changed")])       # a batch delivered twice: kept as it was
            assert await queue.due(T0) == [a]
            await queue.again(a, 1, T0 + 2 * MINUTE)
            due = await queue.due(T0 + 2 * MINUTE)
            assert [(i.key, i.attempts, i.body) for i in due] == [("b", 0, '{"id":"b"}'), ("a", 1, '{"id":"a"}')]
            await queue.done(["a", "b"])
            assert await queue.due(T0 + DAY_MS) == []
            if client is not None:   # a replica that took an item and died: the next takes it after the lease
                await queue.add([a])
                assert len(await queue.due(T0)) == 1 and await queue.due(T0 + 1) == []
                assert len(await queue.due(T0 + LEASE_MS)) == 1
    asyncio.run(go())


DAY_MS = 24 * HOUR


def test_both_registries_keep_the_address_and_its_secret_and_the_tenant_runs_with_them(tmp_path):
    async def go():
        async with store_and_redis(str(tmp_path / "anpi.db")) as (store, client):
            for registry in (SqliteRegistry(store), RedisRegistry(client)):
                saved = tenant_settings.merged(None, 5, hook_url="https://cc.example/h", hook_secret="s" * 43)
                await registry.save("town", None, settings=saved)
                back = await registry.settings("town")
                assert (back.hook_url, back.hook_secret, back.hook_updated_at) == ("https://cc.example/h", "s" * 43, 5)
                assert "s" * 43 not in repr(back) and "s" * 43 not in repr(tenant_settings.tenant_with(TENANT, back))
                running = tenant_settings.tenant_with(TENANT, back)
                assert (running.hook_url, running.hook_secret) == ("https://cc.example/h", "s" * 43)
                await registry.save("town", None, settings=tenant_settings.merged(back, 6, hook_url=None))
                gone = await registry.settings("town")
                assert gone.hook_url is None and gone.hook_secret is None
    asyncio.run(go())


# --- the whole way round --------------------------------------------------------------------------------


def test_a_help_reaches_the_call_centre_signed_once_even_when_its_first_try_is_refused(tmp_path):
    posts: list[tuple[bytes, dict]] = []

    async def receive(request: web.Request) -> web.Response:
        posts.append((await request.read(), dict(request.headers)))
        return web.Response(status=503 if len(posts) == 1 else 204)   # busy the first time

    async def story(t: Town):
        receiver = web.Application()
        receiver.router.add_post("/anpi", receive)
        runner = web.AppRunner(receiver)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/anpi"
        try:
            admin = t.staff()
            await admin.login(TENANT.id, "town-admin")
            status, page, _ = await admin.post("/admin/town/settings/hook", {"csrf": await admin.csrf(TENANT.id),
                                                                              "hook_url": "http://call-centre.example/"})
            assert status == 400 and "https://" in page
            status, page, _ = await admin.post("/admin/town/settings/hook", {"csrf": await admin.csrf(TENANT.id),
                                                                              "hook_url": url})
            assert status == 200 and "いまだけ" in page
            secret = page.split('id="hook-secret">')[1].split("<strong style=\"font-size:18px\">")[1].split("</strong>")[0]
            _, page = await admin.get("/admin/town/settings")
            assert secret not in page and url in page                     # shown once, never again
            assert audit_rows(t.store)[-1][1:] == ("settings.hook", None, "新しい鍵")
            assert t.runtime.tenants[TENANT.id].hook_url == url
            # the resident asks for help: staff are called, and the call centre is told
            me = user_source(RESIDENT)
            t.clock.advance(60)
            for data in ("action=help", "action=help&sure=1"):
                token = t.sim.state.issue_reply_token(TENANT.id, me)
                t.clock.advance(2)
                assert await t.webhook(TENANT.channel_secret, [postback_event(me, data, reply_token=token,
                                                                              timestamp=t.clock.now_ms())]) == 200
            await t.until(lambda: len(posts) == 1, "the first try")
            t.clock.advance(61)                                           # a minute later, again
            await t.until(lambda: len(posts) == 2, "the second try")
            await asyncio.sleep(1.5)
            assert len(posts) == 2                                        # delivered: never again
            (first, first_headers), (raw, headers) = posts
            assert raw == first and headers["Idempotency-Key"] == first_headers["Idempotency-Key"]
            assert hooks.verify(secret, raw, headers["X-Anpi-Signature"])
            obj = json.loads(raw)
            assert (obj["type"], obj["reason"], obj["member"], obj["id"]) == ("staff_call", "help", RESIDENT,
                                                                             headers["Idempotency-Key"])
            assert obj["link"].startswith(f"{t.runtime.url}/admin/town/calls#case-")
            samples = {s.labels["outcome"]: s.value for m in t.runtime.towns[TENANT.id].sender.registry.collect()
                       if m.name == "anpi_hook_deliveries" for s in m.samples if s.name.endswith("_total")}
            assert samples == {"retry": 1.0, "delivered": 1.0}
            await admin.close()
        finally:
            await runner.cleanup()

    served(story, members=(MemberSettings(RESIDENT, "watch", DAILY_9, "09012345678", ()),))(tmp_path)
