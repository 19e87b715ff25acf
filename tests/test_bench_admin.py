"""`anpi bench admin` at a tiny size: the JSON it prints, and that both pages answered 200 with the
read side's real numbers (no timing is asserted: the machine is shared)."""
import json

from streams.cli import main


def test_admin_bench_times_the_overview_and_the_call_queue_of_a_tenant_built_through_the_engine(capsys, tmp_path):
    db = tmp_path / "admin.db"
    assert main(["bench", "admin", "--members", "2000", "--days", "3", "--requests", "5", "--db", str(db)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bench"] == "admin" and out["members"] == 2000 and out["days"] == 3 and out["built_now"]
    assert out["groups"] == 1 and out["requests"] == 5 and out["warmup"] == 3

    for name in ("overview", "calls"):
        page = out["pages"][name]
        assert page["statuses"] == {"200": 8}, name           # warm-ups and timed requests, all 200
        assert 0 < page["p50_ms"] <= page["p99_ms"] <= page["max_ms"], name
        assert page["bytes"] > 1000 and page["server_cpu_ms"] > 0, name

    # the engine really ran: every rung of the ladder happened, and the residents answered most checks
    kinds = out["effects_by_kind"]
    for kind in ("check_sent", "confirmed", "check_resent", "staff_call", "contacts_notified",
                 "resolved_after_escalation", "group_check_posted", "group_unconfirmed", "unfollowed"):
        assert kinds.get(kind, 0) > 0, kind
    assert kinds["confirmed"] > 0.9 * kinds["check_sent"]

    rows = out["rows"]
    assert rows["states"] == 2000 + 1 and rows["rs_groups"] == 1 and rows["rs_usage"] == 1
    assert sum(rows["labels"].values()) == rows["states"]       # every subject counted once
    assert rows["rs_daily"] > 0 and rows["rs_labels"] == len(rows["labels"])
    by = rows["rs_cases_by_kind_status"]
    assert by["staff_call:open"] > 0 and by["staff_call:closed"] > 0 and by["contacts_notified:open"] > 0
    # one case per escalated cycle: a staff call where the contacts told did not go takes over theirs
    assert kinds["staff_call:unclaimed"] > 0
    assert rows["rs_cases"] == sum(by.values()) == \
        kinds["staff_call"] + kinds["contacts_notified"] - kinds["staff_call:unclaimed"]

    # the overview showed today's counts from the read side, the call queue its open and closed cases
    shown = out["pages"]["overview"]["shown"]
    assert shown["sent"] > 0 and 0 < shown["ok"] <= shown["sent"] and shown["resent"] > 0
    assert shown["staff"] > 0 and shown["contacts"] > 0 and shown["posted"] == 1 and shown["quota"] > 0
    calls = out["pages"]["calls"]["shown"]
    assert calls["open_rows"] == by["staff_call:open"] and calls["closed_rows"] == min(20, by["staff_call:closed"])

    assert out["store_bytes"] > 0 and out["build_seconds"] > 0 and out["sqlite"] and out["python"]
    assert set(out["query_ms"]) >= {"labels", "daily_30_days", "open_count_staff", "cases_open_200"}

    # the kept file is measured again as it is, without building
    assert main(["bench", "admin", "--requests", "2", "--warmup", "0", "--db", str(db)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not again["built_now"] and again["build_seconds"] is None and again["members"] == 2000
    assert again["pages"]["overview"]["shown"] == shown and again["rows"] == rows
