"""`anpi bench burst`: the drill's answer curve, how the tally's trail is read, and a small burst end to end."""
import json
import random
from collections import Counter

import pytest

from streams.cli import main
from streams.tools.bench_burst import answer_minutes, busiest, trailing


def test_the_answer_curve_peaks_at_two_minutes_with_a_tail_to_thirty():
    rng = random.Random(3)
    minutes = sorted(answer_minutes(rng) for _ in range(20_000))
    by_minute = Counter(int(m * 2) / 2 for m in minutes)   # half-minute bins
    assert max(by_minute, key=by_minute.get) in (1.5, 2.0)   # the most common answer: about 2 minutes
    within = sum(1 for m in minutes if m <= 3.5) / len(minutes)
    assert 0.6 < within < 0.8                                 # most within 2–3 minutes or so
    assert minutes[0] > 0 and minutes[-1] <= 30.0 and sum(1 for m in minutes if m > 15) > 500   # a tail to 30


def test_the_tally_trails_each_answer_until_a_read_counts_it():
    acks = [1.0, 1.5, 2.0, 9.0]
    reads = [(1.2, 0), (1.6, 1), (2.4, 3), (9.5, 3), (10.0, 4)]
    assert trailing(acks, reads) == pytest.approx([0.6, 0.9, 0.4, 1.0])
    assert trailing(acks, reads[:3]) == pytest.approx([0.6, 0.9, 0.4])   # the 4th never counted: left out
    assert busiest([0.0, 1.0, 2.0, 30.0], window=10.0) == pytest.approx(0.3)


@pytest.mark.usefixtures("running_services")
def test_a_small_burst_reaches_everyone_once_and_every_answer_is_tallied(capsys):
    assert main(["bench", "burst", "--members", "1200", "--speedup", "120"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    answering = int(1200 * 0.6)
    assert out["bench"] == "burst" and out["members"] == 1200
    assert out["notice"]["recipients"] == 1200 and out["notice"]["ratio_to_floor"] > 0
    answers = out["answers"]
    assert answers["posted"] == answers["acknowledged"] == answers["tallied"] == answering, answers
    assert answers["statuses"] == {"200": answering}
    assert 0 <= answers["tally_trails_p50_s"] <= answers["tally_trails_p99_s"] <= answers["tally_trails_max_s"]
    # a check card and the notice to each member, and a thanks to each who answered: nothing twice
    assert out["line"]["deliveries_per_member"] == {"2": 1200 - answering, "3": answering}, out["line"]
    assert out["line"]["duplicates"] == 0


@pytest.mark.usefixtures("running_services")
def test_a_small_roll_call_burst_reaches_everyone_once_and_every_safe_is_tallied(capsys):
    assert main(["bench", "burst", "--members", "1200", "--speedup", "120", "--rollcall"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    answering = int(1200 * 0.6)
    assert out["via"] == "rollcall" and out["notice"]["recipients"] == 1200
    answers = out["answers"]
    assert answers["posted"] == answers["acknowledged"] == answers["tallied"] == answering, answers
    # the check card and the roll-call's card to each member; to each who answered, the answer (one
    # reply: the roll-call's thanks and the check's confirmation together): nothing twice, no resend
    assert out["line"]["deliveries_per_member"] == {"2": 1200 - answering, "3": answering}, out["line"]
    assert out["line"]["duplicates"] == 0
