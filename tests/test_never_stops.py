"""Nothing stops the embedded runtime (`anpi serve`): through real HTTP, with validly signed webhooks.

- The two poison messages once found (an invitation code and a 「見に行きます」 naming a LINE group)
  are refused at the edge, with their reason in the audit; rows the engine cannot decode or apply
  (left in an inbox by an older version, or a bug) are set aside in the quarantine table, counted
  on /metrics, never applied again by a restart; every other resident's checks and answers flow.
- A row set aside by a fault of the engine's is applied after the fix with `anpi quarantine retry`.
- /healthz says when the engine loop has stopped.
- A tap that reaches the engine after the tick that sent its card closes it at that tick.
Time is linesim's ManualClock, read by the engine and the sender alike.
"""
import asyncio
import base64
import io
import json

import aiohttp
import pytest

from agents import member as member_rules
from linesim import user_id_for
from linesim.residents import group_id_for, group_source, join_event, message_event, postback_event, user_source
from schemas.events import Ok, Register
from schemas.settings import MemberSettings, Schedule
from streams import cli
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from test_conversations import DAY, HOUR, START, TENANT, Town, texts, town

DAILY_9 = Schedule("1d", 9 * 60, "Asia/Tokyo")


def register(store: Store, *uids: str) -> None:
    for uid in uids:
        store.accept(TENANT.id, None, [(uid, Register(START * 1000, MemberSettings(uid, "watch", DAILY_9,
                                                                                  "0312345678")))])


def audit_reasons(store: Store) -> list[str]:
    return [json.loads(r)["reason"] for (r,) in store.db.execute("SELECT record FROM audit WHERE tenant = ?",
                                                                 (TENANT.id,))]


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return answer.status, await answer.text()


def test_poison_messages_are_refused_or_set_aside_and_every_other_resident_goes_on(tmp_path):
    alice, bob, mallory = user_id_for("alice"), user_id_for("bob"), user_id_for("mallory")
    group = group_id_for("the-club")

    async def story(t: Town, store: Store):
        register(store, alice, bob)
        await t.send(group_source(group, mallory), lambda **kw: join_event(group, **kw))
        forged = "招待 " + base64.urlsafe_b64encode(group.encode()).decode().rstrip("=") + ".abcdefghijkl"
        token = t.sim.state.issue_reply_token(TENANT.id, user_source(mallory))
        assert await t.sim.state.crowd.post(TENANT.id, [message_event(user_source(mallory), forged, reply_token=token,
                                                                      timestamp=t.clock.now_ms())]) == 200
        assert await t.sim.state.crowd.post(TENANT.id, [postback_event(user_source(mallory),
                                                                       f"action=ack&member={group}&cycle=1",
                                                                       reply_token=token,
                                                                       timestamp=t.clock.now_ms())]) == 200
        # what an older version (or a bug) could have left in the inbox, past the edge's checks
        from schemas.events import AcceptInvite, Acknowledge
        store.accept(TENANT.id, None, [(group, AcceptInvite(START * 1000 + 1, group, mallory, "x.abcdefghijkl")),
                                       (group, Acknowledge(START * 1000 + 2, group, mallory, 1))])
        with store.transaction():
            store.db.execute("INSERT INTO inbox (tenant, subject, event) VALUES (?, ?, ?)",
                             (TENANT.id, alice, "{not json"))
        await t.at(START + 9 * HOUR)                    # the morning's cards go out all the same
        assert "お元気ですか？" in texts(t.seen(alice)[-1].messages)
        assert "お元気ですか？" in texts(t.seen(bob)[-1].messages)
        thanks = await t.tap(alice, "元気です", t.seen(alice)[-1].messages)
        assert "ありがとう" in texts(thanks)
        assert await get(f"{t.runtime.url}/healthz") == (200, "ok")
        metrics = (await get(f"{t.runtime.url}/metrics"))[1]
        return [(q.kind, q.reason) for q in store.quarantined(TENANT.id)], audit_reasons(store), metrics

    held, reasons, metrics = town(story)(tmp_path)
    assert "invite_not_for_a_person" in reasons and "ack_not_for_a_person" in reasons
    assert held == [("refused", "AcceptInvite: does not apply to a group"),
                    ("refused", "Acknowledge: does not apply to a group"),
                    ("undecodable", "not JSON text")]
    assert 'anpi_quarantined_total{kind="refused"} 2.0' in metrics
    assert 'anpi_quarantined_total{kind="undecodable"} 1.0' in metrics
    # a restart reads the same file: nothing set aside is applied (or set aside) again
    store = Store(str(tmp_path / "anpi.db"))
    engine = Engine(store, TENANT.id)
    assert engine.step((START + 9 * HOUR + 60) * 1000) == []
    assert len(store.quarantined(TENANT.id)) == 3
    assert engine.registry.get_sample_value("anpi_quarantined_total", {"kind": "refused"}) is None


def test_a_row_set_aside_by_a_fault_of_the_engine_is_applied_after_the_fix(tmp_path, monkeypatch, capsys):
    store = Store(str(tmp_path / "anpi.db"))
    alice = user_id_for("alice")
    register(store, alice)
    engine = Engine(store, TENANT.id)
    engine.step((START + 9 * HOUR) * 1000)                     # her card
    store.accept(TENANT.id, None, [(alice, Ok((START + 9 * HOUR + 60) * 1000, alice))])

    def broken(*args):
        raise ZeroDivisionError("a bug")
    with monkeypatch.context() as patch:
        patch.setattr(member_rules, "_sign_of_life", broken)
        assert engine.step((START + 9 * HOUR + 120) * 1000) == []
    assert engine.registry.get_sample_value("anpi_quarantined_total", {"kind": "error"}) == 1.0
    db = str(tmp_path / "anpi.db")
    assert cli.main(["quarantine", "list", "--db", db, "--tenant", TENANT.id]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == ["id\tstate\tkind\tsubject\treason",
                      f"1\theld\terror\t{alice}\tZeroDivisionError while applying it (a fault of the engine's: "
                      "please report it)"]
    assert cli.main(["quarantine", "retry", "1", "--db", db, "--tenant", TENANT.id]) == 0   # the fix is in
    assert cli.main(["quarantine", "retry", "1", "--db", db, "--tenant", TENANT.id]) == 1   # once only
    effects = engine.step((START + 9 * HOUR + 180) * 1000)
    # applied now, at its own time (nothing happened to her since): the card is answered
    assert [(e.effect, e.at) for e in effects] == [("confirmed", (START + 9 * HOUR + 60) * 1000)]
    assert [q.retried for q in store.quarantined(TENANT.id)] == [True]


def test_healthz_fails_when_the_engine_loop_has_stopped(tmp_path):
    async def story(t: Town, store: Store):
        assert await get(f"{t.runtime.url}/healthz") == (200, "ok")
        t.runtime._tasks[0].cancel()
        await asyncio.sleep(0.05)
        return await get(f"{t.runtime.url}/healthz")

    assert town(story)(tmp_path) == (503, "the engine loop is not running")


def test_a_step_that_fails_as_a_whole_is_retried_from_the_store_and_health_says_so(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "anpi.db"))
    alice = user_id_for("alice")
    register(store, alice)
    engine = Engine(store, TENANT.id)
    engine.step(START * 1000)
    assert engine.health() == (True, "ok")
    commit = store.commit_step

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(store, "commit_step", disk_full)

    async def run(seconds):
        stop = asyncio.Event()
        loop = asyncio.create_task(engine.run(lambda: (START + 9 * HOUR) * 1000, 0, 0.01, stop))
        await asyncio.sleep(seconds)
        stop.set()
        await loop

    asyncio.run(run(0.3))                        # it keeps trying, and nothing is lost meanwhile
    monkeypatch.setattr(store, "commit_step", commit)
    engine.stepped_at -= 60                      # as if the disk had been full for a minute
    assert engine.health()[0] is False and "last step was" in engine.health()[1]
    asyncio.run(run(1.5))
    assert engine.health() == (True, "ok")
    assert [e.effect for e in store.effects(TENANT.id)] == ["check_sent"]


def test_a_tap_that_arrives_after_the_tick_that_sent_the_card_closes_it_at_that_tick(tmp_path):
    alice = user_id_for("alice")

    async def story(t: Town, store: Store):
        register(store, alice)
        await t.at(START + 9 * HOUR)                        # the card goes out at 09:00
        card = t.seen(alice)[-1].messages
        # a tap stamped 46 s before the card (her phone's earlier card), delivered only now
        token = t.sim.state.issue_reply_token(TENANT.id, user_source(alice))
        await t.sim.state.crowd.post(TENANT.id, [postback_event(user_source(alice), "action=ok", reply_token=token,
                                                                timestamp=(START + 9 * HOUR - 46) * 1000)])
        await t.until(lambda: len(t.seen(alice)) == 2, "the thanks")
        await t.at(START + 9 * HOUR + 600)
        await t.at(START + DAY + 9 * HOUR)
        assert "お元気ですか？" in texts(card)
        return [(e.effect, e.at // 1000, e.cycle) for e in store.effects(TENANT.id)]

    assert town(story)(tmp_path) == [("check_sent", START + 9 * HOUR, 1), ("confirmed", START + 9 * HOUR, 1),
                                     ("check_sent", START + DAY + 9 * HOUR, 2)]
