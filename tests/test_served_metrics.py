"""`anpi serve`'s /metrics: what an SRE reads of one embedded process, the same series the Kafka
runtime's processes serve (the open cases of the call queue, the webhooks by outcome), here all
on the one server."""
import asyncio
import re
import time

import aiohttp

from linesim import user_id_for
from linesim.server import run_linesim
from schemas import effects as fx
from schemas.events import Register
from schemas.settings import MemberSettings
from streams.embedded.serve import ServedRuntime
from streams.embedded.store import Store
from test_admin_notices import A, TENANT_A, TOKYO, sim_config

DAY_MS = 86_400_000


def test_anpi_serve_counts_the_open_cases_of_its_call_queue_on_metrics(tmp_path):
    """Three watched residents and two with family never answer: after the check, the resend and
    the hours after it, /metrics has five staff calls open (the family, told, did not go within 3 h),
    the oldest as old as the first escalation, and the tenant's limit for them."""
    store = Store(str(tmp_path / "anpi.db"))
    start = (int(time.time() * 1000) // DAY_MS) * DAY_MS  # a midnight (UTC): the check is at 09:00 JST
    watched = [user_id_for(f"metrics-watch-{i}") for i in range(3)]
    told = [user_id_for(f"metrics-notify-{i}") for i in range(2)]
    family = user_id_for("metrics-family")
    store.accept(A, None, [(m, Register(start, MemberSettings(m, "watch", TOKYO, "090-0000-0000"))) for m in watched]
                 + [(m, Register(start, MemberSettings(m, "notify", TOKYO, None, (family,)))) for m in told])
    clock = [start]

    async def go():
        async with run_linesim(sim_config()) as sim:
            runtime = ServedRuntime(store, [TENANT_A], sim.base_url, lambda: clock[0], step_seconds=0.05)
            url = await runtime.start()
            try:
                async with aiohttp.ClientSession() as http:
                    async def open_cases() -> dict[str, float]:
                        async with http.get(f"{url}/metrics") as response:
                            text = await response.text()
                        return {kind: float(n) for kind, tenant, n in
                                re.findall(r'anpi_open_cases\{kind="(\w+)",tenant="([^"]+)"\} (\S+)', text)
                                if tenant == A}, text

                    first, _ = await open_cases()
                    clock[0] = start + 3 * DAY_MS  # checks, resends and escalations all fall due
                    deadline = time.monotonic() + 60
                    while (now := await open_cases())[0] != {fx.STAFF_CALL: 5.0, fx.CONTACTS_NOTIFIED: 0.0}:
                        assert time.monotonic() < deadline, now[0]
                        await asyncio.sleep(0.1)
                    return first, now[1]
            finally:
                await runtime.close()

    first, text = asyncio.run(go())
    assert first == {fx.STAFF_CALL: 0.0, fx.CONTACTS_NOTIFIED: 0.0}
    assert "# TYPE anpi_ingress_webhooks_total counter" in text  # the ingress's series, on the same page
    # escalated 27 h after the check at `start`, read 3 days after it: 45 h; the default limit is 12 h
    assert f'anpi_oldest_open_case_age_seconds{{kind="staff_call",tenant="{A}"}} 162000.0' in text
    assert f'anpi_staff_call_limit_seconds{{tenant="{A}"}} 43200.0' in text
