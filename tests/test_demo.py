"""`anpi demo … --exit`: the whole service through real HTTP (linesim → signed webhook → ingress →
engine → sender → linesim) and its one-line JSON summary, a contract checked from outside."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"checks_sent", "oks", "resends", "escalations", "line_requests", "messages_billed", "duplicates",
        "by_behaviour"}


def test_demo_runs_every_rung_of_the_ladder_and_ends_with_one_json_summary_line():
    # 1.75 virtual days from midnight: checks at 09:00, resends a day later, escalations 3 h after that
    done = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--residents", "120", "--days", "1.75",
                           "--speed", "10000", "--exit"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary) == KEYS
    assert summary["duplicates"] == 0
    assert any("確認を送信" in line for line in lines[:-1]), "the live view shows checks going out"

    b = summary["by_behaviour"]
    assert set(b) == {"answer", "forget", "never", "block"}
    # residents who answer: every check confirmed, nothing resent, nobody called
    assert b["answer"]["checks_sent"] > 0 and b["answer"]["oks"] == b["answer"]["checks_sent"]
    assert b["answer"]["resends"] == 0 and set(b["answer"]["escalations"].values()) == {0}
    # residents who forget the first card answer the resend, before anyone is called
    assert b["forget"]["resends"] > 0 and b["forget"]["oks"] == b["forget"]["resends"]
    assert set(b["forget"]["escalations"].values()) == {0}
    # residents who never answer: resent, then staff (見守り) or family (安否通知) are told
    assert b["never"]["oks"] == 0 and b["never"]["resends"] == b["never"]["checks_sent"]
    assert b["never"]["escalations"]["staff_call"] > 0 and b["never"]["escalations"]["contacts_notified"] > 0
    # residents who block the account get no resend: unfollow is an event, not silence; a 見守り
    # resident who blocks is phoned by staff (a staff call), a 安否通知 resident chose to leave
    assert b["block"]["resends"] == 0 and b["block"]["escalations"]["contacts_notified"] == 0
    assert b["block"]["escalations"]["staff_call"] > 0

    totals = {key: sum(x[key] for x in b.values()) for key in ("checks_sent", "oks", "resends")}
    assert totals == {key: summary[key] for key in totals}
    # LINE saw only accepted requests: no rate limit hit, nothing refused; thanks went by free replies
    statuses = {status for by_status in summary["line_requests"].values() for status in by_status}
    assert statuses == {"200"}
    assert summary["line_requests"]["reply"]["200"] == summary["oks"]
    assert summary["line_requests"]["multicast"]["200"] >= 2  # the day's identical cards, coalesced
    assert summary["messages_billed"] < summary["checks_sent"] + summary["resends"] + 10 * b["never"]["checks_sent"]


def test_demo_of_three_towns_runs_them_in_one_process_and_sums_their_counts():
    done = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--tenants", "3", "--residents", "40",
                           "--days", "1.75", "--speed", "10000", "--exit"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) == KEYS | {"tenants"} and summary["duplicates"] == 0
    towns = summary["tenants"]
    assert sorted(towns) == ["demo-1", "demo-2", "demo-3"]
    for town in towns.values():   # each town's own ladder ran: checks, OKs, resends, someone called
        assert town["checks_sent"] >= 40 and town["oks"] > 0 and town["resends"] > 0
        assert sum(town["escalations"].values()) > 0 and town["messages_billed"] > 0
    for key in ("checks_sent", "oks", "resends", "messages_billed"):
        assert summary[key] == sum(town[key] for town in towns.values()), key
    for kind in summary["escalations"]:
        assert summary["escalations"][kind] == sum(town["escalations"][kind] for town in towns.values())
    # each town's residents are its own: different people, different behaviours, the same rules
    assert len({json.dumps(town["by_behaviour"], sort_keys=True) for town in towns.values()}) > 1


# --- the same demo on the Kafka runtime ------------------------------------------------------------------------

COUNTS = ("checks_sent", "oks", "resends", "escalations")


def both_demos(*args: str) -> tuple[dict, dict, str]:
    """The embedded demo, then the Kafka one with the same arguments: their summaries, and what the
    Kafka one printed before its summary."""
    command = [sys.executable, "-m", "streams.cli", "demo", *args, "--exit"]
    embedded = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert embedded.returncode == 0, embedded.stderr
    kafka = subprocess.run([*command, "--runtime", "kafka"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert kafka.returncode == 0, kafka.stderr
    out = kafka.stdout
    return json.loads(embedded.stdout.strip().splitlines()[-1]), json.loads(out.strip().splitlines()[-1]), out


def test_the_demo_on_kafka_counts_what_the_embedded_demo_counts(running_services):
    """The README's command: worker, ingress, sender, readside and admin as processes of their own."""
    # at the README's 5,000x a second of delivery latency is over an hour of virtual time, and an
    # answer to a resend (up to 100 minutes after it) must still come before its 3 h deadline: the
    # demo's topics have 2 partitions (streams/demo/on_kafka.PARTITIONS), and with 8 the counts
    # parted on a loaded machine
    embedded, kafka, printed = both_demos("--residents", "300", "--days", "3", "--speed", "5000", "--seed", "7")
    assert set(kafka) == KEYS and kafka["duplicates"] == 0 == embedded["duplicates"]
    assert {k: kafka[k] for k in COUNTS} == {k: embedded[k] for k in COUNTS}
    assert kafka["by_behaviour"] == embedded["by_behaviour"]
    assert kafka["checks_sent"] > 600 and kafka["escalations"]["staff_call"] > 0   # three days of a real ladder
    assert kafka["line_requests"]["reply"]["200"] == kafka["oks"]   # thanks by the free reply, on its clock
    assert "worker, ingress, sender, readside and admin processes" in printed and "確認を送信" in printed


def test_three_towns_on_kafka_share_its_processes_and_count_what_they_count_embedded(running_services):
    # 2,000x: a card reaches a resident through the worker's commit and the sender in about a second
    # of real time on a loaded machine, and their answer (up to 100 minutes after it) must still come
    # before the 3 h deadline; at 5,000x that second is over an hour of virtual time, a thin margin
    embedded, kafka, _ = both_demos("--tenants", "3", "--residents", "60", "--days", "3", "--speed", "2000")
    assert set(kafka) == KEYS | {"tenants"} and kafka["duplicates"] == 0
    assert sorted(kafka["tenants"]) == ["demo-1", "demo-2", "demo-3"]
    for town in kafka["tenants"]:
        assert {k: kafka["tenants"][town][k] for k in COUNTS} == {k: embedded["tenants"][town][k] for k in COUNTS}
    assert {k: kafka[k] for k in COUNTS} == {k: embedded[k] for k in COUNTS}
