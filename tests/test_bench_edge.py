"""`anpi bench ingress` and `anpi bench sender` at tiny sizes: the JSON they print, and that nothing was lost."""
import json

import pytest

from streams.cli import main


def _run(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_ingress_bench_on_sqlite_answers_every_request_200_after_storing_it(capsys):
    out = _run(capsys, ["bench", "ingress", "--requests", "200", "--sink", "sqlite", "--concurrency", "8"])
    assert out["bench"] == "ingress" and out["sink"] == "sqlite" and out["requests"] == 200
    assert out["statuses"] == {"200": 200} and out["ok"] == 200
    assert out["all_stored"] and out["stored"] == 200 + out["warmup"]
    assert out["requests_per_second"] > 0 and 0 < out["p50_ms"] <= out["p99_ms"]


@pytest.mark.usefixtures("running_services")
def test_ingress_bench_on_kafka_answers_every_request_200_after_the_broker_has_it(capsys):
    out = _run(capsys, ["bench", "ingress", "--requests", "200", "--sink", "kafka", "--concurrency", "8"])
    assert out["sink"] == "kafka" and out["statuses"] == {"200": 200}
    assert out["all_stored"] and out["stored"] == 200 + out["warmup"]
    assert 0 < out["p50_ms"] <= out["p99_ms"]


def test_sender_bench_delivers_exactly_once_to_every_member(capsys):
    out = _run(capsys, ["bench", "sender", "--members", "2000"])
    assert out["bench"] == "sender" and out["members"] == 2000
    assert out["requests"] == out["accepted"] == 4 and out["failed"] == 0 and out["retries"] == 0
    assert out["linesim_requests"] == {"multicast:200": 4}
    assert out["delivered"] == 2000 and out["every_member_once"] and out["duplicates"] == 0
    # seconds is printed to the millisecond: over a 20 ms floor that alone moves the ratio by 0.025
    assert out["floor_seconds"] == 0.02 and out["ratio_to_floor"] == pytest.approx(out["seconds"] / 0.02, abs=0.03)
