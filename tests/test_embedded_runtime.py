"""The embedded runtime's sender over real HTTP against linesim: a crash mid-batch sends nothing twice."""
import asyncio
from collections import Counter

from agents.clock import HOUR
from agents.messages import SENDS_MESSAGES
from linesim import Channel, Config, run_linesim, user_id_for
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from schemas.tenant import Tenant
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.line.sender import Limits, Sender

START = 1_796_050_800_000  # 2026-12-01T00:00+09:00
TENANT = Tenant("t", "secret-" + "s" * 20, "token-" + "t" * 30)


def morning_checks(store: Store, members: range, tick: int) -> None:
    """Members registered at midnight; one engine step at `tick` decides all their 09:00 checks."""
    for i in members:
        uid = user_id_for(f"member-{i}")
        store.accept(TENANT.id, None, [(uid, Register(START, MemberSettings(
            uid, "watch", Schedule("1d", 9 * 60, "Asia/Tokyo", None), "090-0000-0000")))])
    Engine(store, TENANT.id).step(tick)


async def send_one_step(store: Store, sim, limits: Limits, give_up_after: float | None) -> bool:
    """The runtime's sender loop for one step; True if it finished and marked the step sent."""
    rows = store.unsent(TENANT.id, SENDS_MESSAGES)
    async with Sender(TENANT, sim.base_url, limits=limits) as sender:
        delivery = asyncio.ensure_future(sender.deliver([e for _, e in rows]))
        try:
            await asyncio.wait_for(asyncio.shield(delivery), give_up_after)
        except asyncio.TimeoutError:
            delivery.cancel()  # the process dies here: some requests accepted, the step not marked
            await asyncio.gather(delivery, return_exceptions=True)
            return False
    store.mark_sent(seq for seq, _ in rows)
    return True


def test_a_sender_killed_mid_step_and_restarted_sends_every_check_once(tmp_path):
    n = 1_000  # two multicasts, decided in one step
    store = Store(str(tmp_path / "anpi.db"))
    morning_checks(store, range(n), START + 9 * HOUR)
    slow = Limits(multicast=2.0, burst_seconds=0.5)  # one request now, the next half a second later

    async def go():
        async with run_linesim(Config([Channel("t", TENANT.channel_access_token, TENANT.channel_secret)])) as sim:
            assert not await send_one_step(store, sim, slow, give_up_after=0.25)  # killed mid-step
            accepted_before = len(sim.state.deliveries)
            assert 0 < accepted_before < n, "the kill did not land mid-step"
            # meanwhile the engine decided the same card for 300 late registrations: a batch that
            # mixed them in would shift every multicast's recipients, and with them the retry keys
            morning_checks(store, range(n, n + 300), START + 9 * HOUR + HOUR // 2)
            again = Store(store.path)  # restarted: the killed step is still unsent, and comes first
            assert len(again.unsent(TENANT.id, SENDS_MESSAGES)) == n
            assert await send_one_step(again, sim, slow, give_up_after=None)
            assert len(again.unsent(TENANT.id, SENDS_MESSAGES)) == 300
            assert await send_one_step(again, sim, slow, give_up_after=None)
            assert again.unsent(TENANT.id, SENDS_MESSAGES) == []
            return sim.state

    state = asyncio.run(go())
    per_member = Counter(d.to for d in state.deliveries if d.delivered)
    assert len(per_member) == n + 300 and set(per_member.values()) == {1}
    assert state.duplicates == 0
    statuses = Counter((e, s) for (e, s) in state.requests)
    assert statuses[("multicast", 409)] >= 1  # the restart repeated an accepted request: LINE said so


def test_a_reply_cut_off_by_a_crash_is_not_sent_again_as_a_push(tmp_path):
    """A reply has no retry key: if the process dies after LINE took it, a restart must not send the
    thanks again (its token is spent, and the fallback would push it: twice)."""
    from agents.member import RESEND_AFTER
    from linesim.residents import user_source
    from schemas.events import Ok
    from streams.embedded.runtime import Runtime

    store = Store(str(tmp_path / "anpi.db"))
    morning_checks(store, range(1), START + 9 * HOUR)
    member = user_id_for("member-0")
    store.mark_sent(seq for seq, _ in store.unsent(TENANT.id, SENDS_MESSAGES))  # the card went out

    class Crash(BaseException):
        pass

    async def go():
        async with run_linesim(Config([Channel("t", TENANT.channel_access_token, TENANT.channel_secret)])) as sim:
            token = sim.state.issue_reply_token("t", user_source(member))
            tapped = START + 9 * HOUR + 60_000
            store.accept(TENANT.id, None, [(member, Ok(tapped, member), (token, tapped))])
            Engine(store, TENANT.id).step(None)  # confirmed: the thanks waits for the sender

            def crash(_seqs):
                raise Crash  # the process dies after LINE took the reply, before the step is marked sent
            first = Runtime(store, [TENANT], sim.base_url, lambda: tapped,
                            sender_for=lambda t, metrics: Sender(t, sim.base_url, wall=lambda: tapped / 1000))
            first.store.mark_sent = crash
            town = first.towns[TENANT.id]
            try:
                await first._sender_loop(town)
            except Crash:
                pass
            await town.sender.close()
            assert [d.endpoint for d in sim.state.deliveries_to(member)] == ["reply"]

            again = Store(store.path)  # restarted
            second = Runtime(again, [TENANT], sim.base_url, lambda: tapped + RESEND_AFTER,
                             sender_for=lambda t, metrics: Sender(t, sim.base_url, wall=lambda: tapped / 1000 + 1))
            town = second.towns[TENANT.id]
            loop = asyncio.ensure_future(second._sender_loop(town))
            for _ in range(100):
                if not again.unsent(TENANT.id, SENDS_MESSAGES):
                    break
                await asyncio.sleep(0.05)
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await town.sender.close()
            assert again.unsent(TENANT.id, SENDS_MESSAGES) == []
            return [d.endpoint for d in sim.state.deliveries_to(member)]

    assert asyncio.run(go()) == ["reply"]  # once, by reply; no push after the restart
