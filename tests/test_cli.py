"""`anpi simulate` as users call it: a real subprocess, real files, exit codes and stderr."""
import json
import subprocess
from datetime import datetime
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANPI = [sys.executable, "-m", "streams.cli"]


def simulate(path, *args):
    return subprocess.run([*ANPI, "simulate", str(path), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
start: "2026-12-01T00:00:00+09:00"
end:   "2026-12-03T00:00:00+09:00"
members:
  - id: U001
    service: watch
    interval: 1d
    time: "09:00"
    phone: "090-1234-5678"
events:
  - {at: "2026-12-01T09:05:00+09:00", type: ok, member: U001}
"""


def test_yaml_scenario_prints_one_json_object_per_effect(tmp_path):
    done = simulate(write(tmp_path, GOOD))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"at": "2026-12-01T09:00:00+09:00", "effect": "check_sent", "subject": "U001", "cycle": 1},
        {"at": "2026-12-01T09:05:00+09:00", "effect": "confirmed", "subject": "U001", "cycle": 1},
        {"at": "2026-12-02T09:00:00+09:00", "effect": "check_sent", "subject": "U001", "cycle": 2},
        # its resend would fall on 12-03 09:00: at or after end, so not emitted
    ]
    assert done.stderr == ""


def test_json_scenario_gives_the_same_output_as_yaml(tmp_path):
    import yaml
    as_json = write(tmp_path, json.dumps(yaml.safe_load(GOOD)), "s.json")
    assert simulate(as_json).stdout == simulate(write(tmp_path, GOOD)).stdout


def test_unquoted_yaml_times_and_dates_are_read_as_written(tmp_path):
    text = GOOD.replace('"2026-12-01T00:00:00+09:00"', "2026-12-01T00:00:00+09:00").replace('"09:00"', "9:00")
    text += "  - {at: 2026-12-01T10:00:00+09:00, type: pause, member: U001, until: 2026-12-02}\n"
    done = simulate(write(tmp_path, text))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["at"] == "2026-12-01T09:00:00+09:00"


@pytest.mark.parametrize("change, message", [
    (("phone: \"090-1234-5678\"", "nickname: taro"), "members[0].nickname: unknown field"),
    (("    phone: \"090-1234-5678\"\n", ""), "members[0].phone: required for the watch service"),
    (("interval: 1d", "interval: 4d"), "members[0].interval: must be one of 1d 2d 3d 5d 30d weekly biweekly"),
    (("interval: 1d", "interval: weekly"), "members[0].weekday: weekly needs a weekday"),
    (('time: "09:00"', 'time: "25:00"'), "members[0].time: must be a local time HH:MM"),
    (("service: watch", "service: nurse"), "members[0].service: must be watch (見守り) or notify (安否通知)"),
    (("type: ok, member: U001", "type: ok, member: U404"), "events[0].member: unknown member 'U404'"),
    (("type: ok", "type: okay"), "events[0].type: must be one of"),
    (("2026-12-01T09:05:00+09:00", "yesterday"), "events[0].at: not an ISO 8601 time: 'yesterday'"),
    (("2026-12-01T09:05:00+09:00", "2026-11-30T09:05:00+09:00"), "events[0].at: is before start"),
    (('end:   "2026-12-03T00:00:00+09:00"', 'end:   "2026-11-03T00:00:00+09:00"'), "end: must be after start"),
    (("start:", "timezone: Mars/Olympus\nstart:"), "timezone: unknown time zone 'Mars/Olympus'"),
    (("events:", "events: 3\nx:"), "x: unknown field"),
    (("members:\n", "members:\n  - 7\n"), "members[0]: must be a member: a mapping of fields"),
    (("type: ok, member: U001", "type: ok, member: U001, mood: good"), "events[0].mood: unknown field"),
    (("type: ok, member: U001", "type: ok"), "events[0].member: is required"),
    (("type: ok, member: U001", "type: ok, member: \"  \""), "events[0].member: must be a LINE id string"),
    (("{at: \"2026-12-01T09:05:00+09:00\", type: ok, member: U001}", "7"), "events[0]: must be an event"),
    (("at: \"2026-12-01T09:05:00+09:00\", ", ""), "events[0].at: is required"),
    (("\"2026-12-01T09:05:00+09:00\"", "20261201"), "events[0].at: must be an ISO 8601 time"),
])
def test_a_bad_scenario_gets_exit_2_and_one_line_naming_the_field(tmp_path, change, message):
    done = simulate(write(tmp_path, GOOD.replace(*change)))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert message in lines[0]


def test_unreadable_and_unparsable_files_are_clear_errors(tmp_path):
    missing = simulate(tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "nope.yaml: cannot read" in missing.stderr
    broken = simulate(write(tmp_path, "members: [\n"))
    assert broken.returncode == 2 and "not valid YAML" in broken.stderr and len(broken.stderr.splitlines()) == 1
    broken_json = simulate(write(tmp_path, "{", "s.json"))
    assert broken_json.returncode == 2 and "not valid JSON" in broken_json.stderr


def test_output_is_sorted_by_at_subject_effect_for_every_example():
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        done = simulate(path)
        assert done.returncode == 0, (path, done.stderr)
        records = [json.loads(line) for line in done.stdout.splitlines()]
        assert records, path
        keys = [(datetime.fromisoformat(r["at"]), r["subject"], r["effect"]) for r in records]
        assert keys == sorted(keys), path


def test_a_reader_that_stops_early_gets_no_traceback():
    """`anpi simulate … | head`: the pipe closes after one line; anpi stops quietly with exit 0."""
    proc = subprocess.Popen([*ANPI, "simulate", "examples/danchi.yaml"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b'{"at"')
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == b"", err.decode()


def test_bench_simulate_times_the_command_end_to_end_beside_the_core_on_the_same_work():
    done = subprocess.run([*ANPI, "bench", "simulate", "--members", "20", "--days", "2"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["lines"] == 20 * 2 * 2            # each day: a check and its confirmation per member
    assert result["simulate_seconds"] > 0 and result["core_seconds"] >= 0
    assert result["ratio"] == round(result["core_seconds"] / result["simulate_seconds"], 2)
    refused = subprocess.run([*ANPI, "bench", "simulate", "--members", "0"], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
    assert refused.returncode == 2 and "--members and --days must be positive" in refused.stderr
