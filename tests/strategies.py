"""Random scenarios in the contract's own format (plain dicts, as a YAML file would load)."""
from __future__ import annotations

import os
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

INTERVALS = ["1d", "2d", "3d", "5d", "30d", "weekly", "biweekly"]
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
AREAS = ["kita", "minami", "higashi"]
# Tokyo is the product's home; New York and Berlin cross a daylight-saving change in these windows.
ZONES = [("Asia/Tokyo", datetime(2026, 12, 1)), ("UTC", datetime(2026, 12, 30)),
         ("America/New_York", datetime(2027, 3, 10)), ("Europe/Berlin", datetime(2027, 10, 28))]


def examples(n: int) -> int:
    """How many random cases a property test runs; ANPI_PROPERTY_SCALE=20 for a deep local soak."""
    return max(1, int(n * float(os.environ.get("ANPI_PROPERTY_SCALE", "1"))))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


@st.composite
def schedules(draw, hours_only: bool):
    interval = draw(st.sampled_from(INTERVALS))
    hour = draw(st.integers(0, 23))
    minute = 0 if hours_only else draw(st.sampled_from([0, 0, 30, 59, 1]))
    raw = {"interval": interval, "time": f"{hour:02d}:{minute:02d}"}
    if interval in ("weekly", "biweekly"):
        raw["weekday"] = draw(st.sampled_from(WEEKDAYS))
    return raw


@st.composite
def scenarios(draw, max_members=4, max_groups=2, max_events=40, max_days=20, rollcalls=False):
    """`rollcalls`: areas on members and groups, roll-calls, and their answers among the events."""
    zone_name, base = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(zone_name)
    start = (base + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))).replace(tzinfo=tz)
    days = draw(st.integers(1, max_days))
    end = start + timedelta(days=days)
    hours_only = draw(st.booleans())  # on-the-hour checks and events make ties with deadlines common

    n_members = draw(st.integers(0, max_members))
    member_ids = [f"U{i:03d}" for i in range(n_members)]
    members = []
    for mid in member_ids:
        service = draw(st.sampled_from(["watch", "notify"]))
        m = {"id": mid, "service": service, **draw(schedules(hours_only))}
        if service == "watch":
            m["phone"] = "090-1234-5678"
        else:
            m["contacts"] = draw(st.lists(st.sampled_from(["U900", "U901", "U902"]), max_size=2, unique=True))
        if rollcalls and draw(st.integers(0, 3)):
            m["area"] = draw(st.sampled_from(AREAS))
        members.append(m)

    pool = member_ids + ["U500", "U501", "U502", "U503"]  # group people, some with their own service
    groups = []
    for g in range(draw(st.integers(0 if n_members else 1, max_groups))):
        roster = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))
        groups.append({"id": f"C{g:03d}", "members": roster, **draw(schedules(hours_only))})
        if rollcalls and draw(st.booleans()):
            groups[-1]["area"] = draw(st.sampled_from(AREAS))

    events = []
    for _ in range(draw(st.integers(0, max_events))):
        if hours_only:
            offset = timedelta(hours=draw(st.integers(0, days * 24 - 1)))
        else:
            offset = timedelta(minutes=draw(st.integers(0, days * 24 * 60 - 1)))
        at = _iso((start + offset).astimezone(tz))
        choices = []
        if member_ids:
            choices += ["ok", "ok", "ok", "message", "pause", "resolve", "resolve", "unfollow", "follow",
                        "help", "ack", "ack"]
        if groups:
            choices += ["group_ok", "group_ok", "group_ok", "group_message"]
        if rollcalls:
            choices += ["rollcall", "rollcall"]
            choices += ["safe", "safe", "safe", "need_help"] if member_ids else []
            choices += ["group_safe", "group_need_help"] if groups else []
        kind = draw(st.sampled_from(choices))
        if kind == "rollcall":
            rollcall = {"at": at, "type": "rollcall", "id": f"R{len(events)}"}
            if draw(st.booleans()):
                rollcall["areas"] = draw(st.lists(st.sampled_from(AREAS), min_size=1, max_size=2, unique=True))
            if draw(st.booleans()):
                rollcall["drill"] = draw(st.booleans())
            if draw(st.booleans()):
                rollcall["resend_after"] = draw(st.sampled_from(["1m", "30m", "45m", "1h", "3h", "24h"]))
            events.append(rollcall)
        elif kind.startswith("group_"):
            group = draw(st.sampled_from(groups))
            who = draw(st.sampled_from(group["members"] + ["U777"]))
            events.append({"at": at, "type": kind[6:], "member": who, "group": group["id"]})
        elif kind == "pause":
            until = (start + offset + timedelta(days=draw(st.integers(-1, 6)))).date().isoformat()
            events.append({"at": at, "type": "pause", "member": draw(st.sampled_from(member_ids)), "until": until})
        elif kind == "ack":  # mostly a contact told; sometimes someone who is not one
            contact = draw(st.sampled_from(["U900", "U901", "U902", "U777"]))
            events.append({"at": at, "type": "ack", "member": draw(st.sampled_from(member_ids)), "contact": contact})
        else:
            events.append({"at": at, "type": kind, "member": draw(st.sampled_from(member_ids))})

    scenario = {"start": _iso(start), "end": _iso(end), "members": members, "groups": groups, "events": events}
    if rollcalls:
        scenario["areas"] = [{"id": a, "name": name} for a, name in zip(AREAS, ("北町", "南町", "東町"))]
    if zone_name != "Asia/Tokyo" or draw(st.booleans()):
        scenario["timezone"] = zone_name
    return scenario
