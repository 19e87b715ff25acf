"""The subject agent's logic without Kafka: batches, saved states, and reloads after a revoke."""
import random
from collections import Counter
from pathlib import Path

import pytest

from agents import member
from schemas.events import Register
from schemas.settings import MemberSettings, Schedule
from streams.kafka import changelog

from agents.subject_agent import SubjectAgent
from streams import codec
from streams.simulation import scenario as scenario_module
from streams.simulation import simulator
from streams.kafka.feed import feed
from streams.kafka.settings import partition_of

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
START = 1_796_050_800_000  # a virtual instant (00:00 JST)


def messages_by_partition(loaded):
    out = {n: [] for n in range(PARTITIONS)}
    for number, _key, value in feed(loaded, PARTITIONS, 3_600_000, "end"):
        out[number].append(codec.loads(value))
    return out


@pytest.mark.parametrize("decoded", ["at once", "when first stepped"])
def test_batches_saved_by_drain_and_reloaded_after_revokes_give_the_simulators_effects(decoded):
    """Reloaded as the Kafka worker did (every state decoded), and as it does now (changelog.Saved:
    the states left as saved bytes, the due-index from each record's due header)."""
    loaded = scenario_module.load(ROOT / "examples" / "danchi.yaml")
    saved: dict[str, tuple[bytes, int | None]] = {}  # what the changelog holds: only drained states
    decodes = Counter()

    def load(number):
        for subject, (raw, _) in saved.items():
            if partition_of(subject, PARTITIONS) == number:
                yield "t", subject, codec.state_from_obj(codec.loads(raw))

    def decode(subject, raw):
        decodes[subject] += 1
        return codec.state_from_obj(codec.loads(raw))

    def install(number):
        if decoded == "at once":
            return agent.install(number, load(number))
        decodes.clear()
        table = changelog.Saved(decode, lambda subject, error: pytest.fail(f"{subject}: {error}"))
        mine = [(subject, raw, due) for subject, (raw, due) in saved.items()
                if partition_of(subject, PARTITIONS) == number]
        dict.update(table, ((subject, raw) for subject, raw, _ in mine))
        agent.install(number, saved={"t": (table, [(subject, due) for subject, _, due in mine])} if mine else {})

    agent, rnd, effects, worst = SubjectAgent(), random.Random(3), [], 0
    for number, messages in messages_by_partition(loaded).items():
        i = 0
        while i < len(messages):
            if number not in agent.partitions:
                install(number)
            batch = messages[i:i + rnd.randint(1, 40)]
            i += len(batch)
            for message in batch:
                if "tick" in message:
                    effects += [e for _, e in agent.tick(number, message["tick"])]
                else:
                    effects += agent.apply(number, "t", message["subject"], codec.event_from_obj(message["event"]))
            worst = max(worst, *decodes.values(), 0)
            for (_, subject), state in agent.drain(number).items():
                saved[subject] = (codec.dumps(codec.state_to_obj(state)), state.due)
            if rnd.random() < 0.2:  # the partition moves away and back: rebuilt from what was saved
                agent.revoke([number])
    assert simulator.sort(effects) == simulator.run(loaded)
    if decoded != "at once":  # some states came back as bytes, each decoded at most once a reload
        assert worst == 1


def test_a_saved_state_that_cannot_be_decoded_is_left_out_when_first_read_and_the_tick_goes_on():
    good = member.register(Register(START, MemberSettings("U1", "watch", Schedule("1d", 9 * 60), "090-0000-0000")))
    rejected = []
    table = changelog.Saved(lambda subject, raw: codec.state_from_obj(codec.loads(raw)),
                            lambda subject, error: rejected.append((subject, type(error).__name__)))
    dict.update(table, {"U1": codec.dumps(codec.state_to_obj(good)), "U2": b'["m", {"id": "U2"}]'})
    agent = SubjectAgent()
    agent.install(0, saved={"t": (table, [("U1", good.due), ("U2", good.due)])})
    assert dict.__getitem__(table, "U1") == codec.dumps(codec.state_to_obj(good))   # not decoded yet
    effects = agent.tick(0, good.due)
    assert [e.effect for _, e in effects] == ["check_sent"] and effects[0][1].subject == "U1"
    assert [subject for subject, _ in rejected] == ["U2"] and "U2" not in table
    assert agent.drain_faults(0) == []   # told once, when it was read: no fault of the tick's besides
    assert agent.state(0, "t", "U2") is None and agent.state(0, "t", "U1").phase == "sent"


def test_two_tenants_on_one_partition_keep_apart_and_one_tick_steps_both():
    """The same member id in two tenants: two subjects, each with its own state; a tick fires both."""
    loaded = scenario_module.load(ROOT / "examples" / "watch.yaml")
    agent = SubjectAgent()
    number = partition_of(loaded.registrations[0].settings.id, PARTITIONS)
    agent.install(number, [])
    for message in messages_by_partition(loaded)[number]:
        for tenant in ("abiko", "kashiwa"):
            if "tick" not in message:
                agent.apply(number, tenant, message["subject"], codec.event_from_obj(message["event"]))
        if "tick" in message:
            fired = agent.tick(number, message["tick"])
            by_tenant = {t: [(e.subject, e.effect, e.at) for tt, e in fired if tt == t] for t in ("abiko", "kashiwa")}
            assert by_tenant["abiko"] == by_tenant["kashiwa"]
    assert agent.partition(number, "abiko").table == agent.partition(number, "kashiwa").table
    assert agent.partition(number, "abiko").table is not agent.partition(number, "kashiwa").table
    assert {t for t, _ in agent.drain(number)} == {"abiko", "kashiwa"}


def test_drain_returns_each_changed_subject_once_with_its_last_state_then_nothing():
    loaded = scenario_module.load(ROOT / "examples" / "watch.yaml")
    agent = SubjectAgent()
    number = partition_of(loaded.registrations[0].settings.id, PARTITIONS)
    agent.install(number, [])
    for message in messages_by_partition(loaded)[number]:
        if "tick" in message:
            agent.tick(number, message["tick"])
        else:
            agent.apply(number, "t", message["subject"], codec.event_from_obj(message["event"]))
    drained = agent.drain(number)
    assert drained == {("t", subject): state for subject, state in agent.partition(number, "t").table.items()}
    assert agent.drain(number) == {}


def test_a_budgeted_tick_gives_a_small_tenant_all_its_checks_at_once_and_the_big_one_the_rest_later():
    """A tick with a budget (streams/step.TICK_BUDGET on both runtimes) shares it out by turns: a
    tenant with a few subjects due has them all in the first batch, whatever another has; what is
    left stays due and the next ticks fire it, each effect at the instant it fell due."""
    from schemas.events import Register
    from schemas.settings import MemberSettings, Schedule
    daily = Schedule("1d", 9 * 60, "Asia/Tokyo", None)
    start = 1_796_050_800_000  # 2026-12-01T00:00+09:00; the first checks at 09:00
    agent = SubjectAgent()
    agent.install(0, [])
    for tenant, n in (("big", 1_000), ("small", 5)):
        for i in range(n):
            member = f"U{tenant}{i:04d}"
            agent.apply(0, tenant, member, Register(start, MemberSettings(member, "notify", daily, None, ("Ufamily",))))
    nine = start + 9 * 3_600_000
    first = agent.tick(0, nine + 60_000, budget=100)
    sent = lambda fired, t: sorted(e.subject for tenant, e in fired if tenant == t)  # noqa: E731
    assert sent(first, "small") == [f"Usmall{i:04d}" for i in range(5)]
    assert len(sent(first, "big")) == 95 and agent.behind(0)
    rest = []
    while agent.behind(0):
        rest += agent.tick(0, nine + 120_000, budget=100)
    assert sorted(sent(first, "big") + sent(rest, "big")) == [f"Ubig{i:04d}" for i in range(1_000)]
    assert {e.at for _, e in first + rest} == {nine}   # each check at the instant it fell due
    assert agent.tick(0, nine + 180_000, budget=100) == [] and not agent.behind(0)
