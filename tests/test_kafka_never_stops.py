"""Nothing stops the Kafka worker, and nothing stops it wrongly: on a real broker.

- Records it cannot decode or apply, on one inbound partition among everyone's traffic, are set
  aside on the quarantine topic (with their reason), counted in anpi_quarantined_total, and every
  other resident's checks and answers flow exactly as the embedded runtime decides them; a restart
  never applies them again; `anpi quarantine list / retry --kafka` see and re-apply them.
- A batch that fails half-sent (an exception, not a SIGKILL) stops the worker without committing
  anything: the next worker starts from the last saved batch, and every effect appears once.
- /healthz fails when the worker has stopped applying while work waits.
- A tap that reaches the worker after the tick that sent its card closes it at that tick.
"""
import asyncio
import io
import os
import signal
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import replace

import pytest

from schemas import effects as fx
from streams import cli, codec
from streams.simulation import simulator
from streams.simulation import scenario as scenario_module
from streams.kafka import quarantine as kafka_quarantine
from streams.kafka import simulate as kafka_simulate
from streams.kafka.feed import event_message, feed, tick_messages
from streams.kafka.settings import Settings, partition_of
from schemas.events import Ok
from test_kafka_runtime import busy_town

pytestmark = pytest.mark.usefixtures("running_services")
HERE = os.path.dirname(os.path.abspath(__file__))
POISONED = 3  # the partition the bad records go to
T9 = 1_796_083_200_000  # 2026-12-01T09:00+09:00: a fixed virtual instant; every clock here is virtual


def bad_records(member: str) -> list[tuple[bytes, str]]:
    """(value, the kind its quarantine entry must have): each one the worker once crash-looped on."""
    ok = {"type": "ok", "member": member}
    return [(b"not json at all", "undecodable"), (b"", "undecodable"), (b"null", "undecodable"),
            (b"[1, 2]", "undecodable"),
            (codec.dumps({"subject": member, "event": {"type": "dance", "at": T9, "member": member}}), "undecodable"),
            (codec.dumps({"subject": member}), "undecodable"),
            (codec.dumps({"subject": member, "event": ok}), "undecodable"),
            (codec.dumps({"subject": member, "event": {**ok, "at": "soon"}}), "undecodable"),
            (codec.dumps({"tick": "soon"}), "undecodable"),
            (codec.dumps({"subject": member, "event": {**ok, "at": 1 << 62}}), "refused"),
            (codec.dumps({"subject": member, "event": {"type": "roster", "at": T9, "group": member}}), "refused"),
            (codec.dumps({"subject": member, "event": {**ok, "at": T9, "member": "U-someone-else"}}), "refused")]


def metric(port: int, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].split("} ")
            out[labels] = float(value)
    return out


def health(port: int) -> tuple[int, str]:
    try:
        answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
        return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_bad_records_on_one_partition_are_set_aside_and_everyone_elses_checks_flow():
    loaded = scenario_module.parse(busy_town(members=120, groups=2, days=3))
    expected = simulator.run(loaded)
    victim = next(m.settings.id for m in loaded.registrations if partition_of(m.settings.id, 8) == POISONED)
    bad = bad_records(victim)

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        try:
            run.start_worker()
            flush = uuid.uuid4().hex
            messages = list(feed(loaded, run.settings.partitions, run.tick_every, flush))
            first_tick = next(i for i, (_, key, _) in enumerate(messages) if key == b"")
            # among the first ticks and events: the partition must go on after them, not only end with them
            poisoned = [(POISONED, victim.encode(), value) for value, _ in bad]
            await run.produce(messages[:first_tick + 20] + poisoned + messages[first_tick + 20:])
            effects = await run.collect(flush, timeout=300)
            assert run.worker.poll() is None, "the worker stopped"
            counted = metric(run.settings.web_port, "anpi_quarantined_total")
            held = await kafka_quarantine.entries(run.settings)

            run.kill_worker(signal.SIGTERM)   # a restart reads the partition again from its last commit
            run.start_worker()
            again = uuid.uuid4().hex
            await run.produce(tick_messages(loaded.end - 1, run.settings.partitions, again))
            after_restart = await run.collect(again, timeout=300)
            held_after = await kafka_quarantine.entries(run.settings)
            return effects, counted, held, after_restart, held_after, run.settings

        finally:
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()

    effects, counted, held, after_restart, held_after, settings = asyncio.run(go())
    assert effects == expected                    # everyone else's checks, answers, escalations: all there
    assert after_restart == expected              # and nothing again after a restart
    assert [e.kind for e in held] == [kind for _, kind in bad]
    assert all(e.id.startswith(f"{POISONED}:") and e.reason for e in held)
    assert {e.reason for e in held} >= {"not JSON text", "empty message", "message: expected a JSON object",
                                        "event.type: not a type this engine knows", "event: missing",
                                        "ok.at: expected an integer (epoch ms)", "tick: expected an integer (epoch ms)",
                                        "Ok: time out of range (1970 to 2300, epoch ms)",
                                        "Roster: does not apply to a member",
                                        "Ok: not addressed to the subject it was applied to"}
    assert held_after == held                     # never applied (nor set aside) again
    assert counted == {'kind="undecodable"': 9.0, 'kind="refused"': 3.0}


def test_anpi_quarantine_lists_and_puts_back_on_kafka(monkeypatch):
    async def setup():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        run.start_worker()
        await run.produce([(0, b"U1", b"{broken"), *tick_messages(T9, run.settings.partitions, "f1")])
        await run.collect("f1", timeout=120)
        return run

    run = asyncio.run(setup())
    try:
        monkeypatch.setenv("ANPI_TOPIC_PREFIX", run.settings.prefix)
        out = io.StringIO()
        monkeypatch.setattr("sys.stdout", out)
        assert cli.main(["quarantine", "list", "--kafka"]) == 0
        lines = out.getvalue().splitlines()
        assert lines[0] == "id\tstate\tkind\tsubject\treason"
        assert lines[1:] == ["0:0\theld\tundecodable\tU1\tnot JSON text"]
        assert cli.main(["quarantine", "retry", "0:0", "--kafka"]) == 0
        assert cli.main(["quarantine", "retry", "0:0", "--kafka"]) == 1   # once only
        asyncio.run(run.produce(tick_messages(T9 + 1, run.settings.partitions, "f2")))
        asyncio.run(run.collect("f2", timeout=120))
        entries = asyncio.run(kafka_quarantine.entries(run.settings))
        # it was put back, and (still broken) set aside again under its new offset
        assert [(e.id.split(":")[0], e.retried, e.reason) for e in entries] == \
            [("0", True, "not JSON text"), ("0", False, "not JSON text")]
    finally:
        run.kill_worker(signal.SIGTERM)
        asyncio.run(run.delete_topics())


def test_a_batch_that_fails_half_sent_stops_the_worker_and_the_next_one_loses_and_repeats_nothing():
    loaded = scenario_module.parse(busy_town(members=200, groups=2, days=4, seed=3))
    expected = simulator.run(loaded)

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        try:
            # the 1,500th record sent in a transaction raises: mid-batch, with earlier batches of this
            # and other partitions taken (and maybe acked) but not committed
            run.start_worker(os.path.join(HERE, "faulty_worker.py"), {"ANPI_TEST_FAIL_AT_SEND": "1500"})
            flush = uuid.uuid4().hex
            await run.produce(feed(loaded, run.settings.partitions, run.tick_every, flush))
            for _ in range(600):
                if run.worker.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            code = run.worker.poll()
            run.worker = None
            run.start_worker()
            effects = await run.collect(flush, timeout=300)
            copies = Counter()
            records = run.effect_records()
            async for batch in records:  # committed records only (read_committed)
                if not batch:
                    break
                copies.update(obj["id"] for obj in batch if "id" in obj)
            await records.aclose()
            return code, effects, copies
        finally:
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()

    code, effects, copies = asyncio.run(go())
    assert code == 70, "the injected fault did not stop the worker the way it must"
    assert effects == expected                      # none lost
    assert max(copies.values()) == 1                # none committed twice, not even on the audit topic


def test_healthz_fails_when_the_worker_stops_applying_while_work_waits():
    async def go():
        run = kafka_simulate.KafkaRun(replace(Settings.from_env(), health_stale_seconds=2.0))
        await run.create_topics()
        try:
            run.start_worker(os.path.join(HERE, "faulty_worker.py"), {"ANPI_TEST_HANG_AFTER": "8"})
            port, statuses = run.settings.web_port, []
            await run.produce(tick_messages(T9, run.settings.partitions, "first"))
            await run.collect("first", timeout=120)    # one batch per partition: all applied
            statuses.append(health(port))
            await run.produce(tick_messages(T9 + 60_000, run.settings.partitions))  # now it hangs
            for _ in range(100):
                await asyncio.sleep(0.1)
                if health(port)[0] != 200:
                    break
            statuses.append(health(port))
            return statuses
        finally:
            run.kill_worker()
            await run.delete_topics()

    (ok, ok_text), (stuck, stuck_text) = asyncio.run(go())
    assert (ok, ok_text) == (200, "ok")
    assert stuck == 503 and "messages waiting, no batch saved for" in stuck_text


def test_a_tap_that_arrives_after_the_tick_that_sent_the_card_closes_it_at_that_tick():
    loaded = scenario_module.parse({"start": "2026-12-01T00:00:00+09:00", "end": "2026-12-03T00:00:00+09:00",
                                    "members": [{"id": "U001", "service": "watch", "interval": "1d",
                                                 "time": "09:00", "phone": "090-1234-5678"}]})

    async def go():
        run = kafka_simulate.KafkaRun(Settings.from_env())
        await run.create_topics()
        try:
            run.start_worker()
            parts = run.settings.partitions
            member = loaded.registrations[0]
            await run.produce([event_message("U001", member, parts), *tick_messages(T9, parts, "sent")])
            await run.collect("sent", timeout=120)
            # stamped 46 s before the card went out, delivered after it (a redelivery, a slow ingress)
            await run.produce([event_message("U001", Ok(T9 - 46_000, "U001"), parts),
                               *tick_messages(T9 + 60_000, parts),
                               *tick_messages(T9 + 86_400_000, parts, "next day")])
            return await run.collect("next day", timeout=120)
        finally:
            run.kill_worker(signal.SIGTERM)
            await run.delete_topics()

    effects = asyncio.run(go())
    assert [(e.effect, e.at, e.cycle) for e in effects] == [
        (fx.CHECK_SENT, T9, 1), (fx.CONFIRMED, T9, 1), (fx.CHECK_SENT, T9 + 86_400_000, 2)]
