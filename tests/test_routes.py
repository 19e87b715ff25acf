"""Where effects go is one table (agents/routes.py), and both runtimes' senders read the same: a
resident who blocked the account is left out of the pushes meant for them on the embedded runtime
too (the Kafka runtime's outbox carried unfollows before; `anpi serve`'s did not)."""
import asyncio
import time

from agents import routes
from agents.messages import SENDS_MESSAGES, STAFF_ALERTS
from linesim import user_id_for
from linesim.server import run_linesim
from schemas import effects as fx
from schemas.events import Register, Unfollow
from schemas.settings import MemberSettings
from streams.embedded.runtime import Runtime
from streams.embedded.store import Store
from test_admin_notices import A, TENANT_A, TOKYO, sim_config

DAY_MS = 86_400_000


def test_the_table_sends_every_message_and_tells_the_sender_of_blocks():
    assert SENDS_MESSAGES | {fx.UNFOLLOWED, fx.FOLLOWED} | STAFF_ALERTS == routes.OUTBOX   # alerts: to the staff
    assert STAFF_ALERTS == {fx.STAFF_CALL, fx.STAFF_REMINDER}
    assert set(fx.ESCALATIONS) <= routes.ESCALATIONS and not routes.ESCALATIONS & {fx.CHECK_SENT, fx.CONFIRMED}


def test_the_embedded_sender_leaves_out_the_family_notice_to_someone_who_blocked_the_account(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))
    start = (int(time.time() * 1000) // DAY_MS) * DAY_MS
    relative, resident = user_id_for("routes-relative"), user_id_for("routes-resident")
    store.accept(A, None, [(relative, Register(start, MemberSettings(relative, "notify", TOKYO, None, ()))),
                           (resident, Register(start, MemberSettings(resident, "notify", TOKYO, None, (relative,)))),
                           (relative, Unfollow(start + 60_000, relative))])
    clock = [start + 120_000]

    async def go():
        async with run_linesim(sim_config()) as sim:
            sim.state.block(A, relative)  # LINE knows: the unfollow came from it
            runtime = Runtime(store, [TENANT_A], sim.base_url, lambda: clock[0], step_seconds=0.05)
            await runtime.start()
            try:
                await asyncio.sleep(0.5)
                clock[0] = start + 3 * DAY_MS  # the resident's check, resend and family notice fall due
                deadline = time.monotonic() + 60
                while not any(e.effect == fx.CONTACTS_NOTIFIED for e in store.effects(A)):
                    assert time.monotonic() < deadline, "no family notice was decided"
                    await asyncio.sleep(0.05)
                await runtime.drain()
                return sim, runtime.towns[TENANT_A.id].sender.blocked, runtime.sender_metrics.registry.get_sample_value(
                    "anpi_sender_blocked_skipped_total")
            finally:
                await runtime.close()

    sim, blocked, skipped = asyncio.run(go())
    assert blocked == {relative}
    # the family notice, a push of its own, was never sent for LINE to drop; the day's check card
    # reached LINE in a multicast that keeps its members whatever the sender knows (LINE drops it)
    to_relative = sim.state.deliveries_to(relative)
    assert {d.endpoint for d in to_relative} <= {"multicast"} and skipped >= 1
    assert not any(d.delivered for d in to_relative)
    assert sim.state.deliveries_to(resident)  # the resident's own cards went
