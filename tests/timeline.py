"""Terse scenarios for rule tests: times are "MM-DD HH:MM" in Tokyo in December 2026."""
from __future__ import annotations

import engine

WATCH = {"service": "watch", "phone": "090-1234-5678"}


def t(short: str) -> str:
    month_day, hour_minute = short.split()
    return f"2026-{month_day}T{hour_minute}:00+09:00"


def scenario(members=(), groups=(), events=(), start="12-01 00:00", end="12-08 00:00", **extra) -> dict:
    return {"start": t(start), "end": t(end), "members": list(members), "groups": list(groups),
            "events": [{**e, "at": t(e["at"])} for e in events], **extra}


def member(mid="U001", interval="1d", time="09:00", **settings) -> dict:
    base = dict(WATCH) if settings.get("service", "watch") == "watch" else {}
    return {"id": mid, "interval": interval, "time": time, **base, **settings}


def run(**kwargs) -> list[tuple]:
    """Effects as ("MM-DD HH:MM", effect, subject, cycle[, extra]) tuples."""
    out = []
    for r in engine.records(scenario(**kwargs)):
        row = (r["at"][5:16].replace("T", " "), r["effect"], r["subject"], r.get("cycle"))
        extra = next((r[k] for k in ("to", "member", "members", "reason", "n") if k in r), None)
        out.append(row + ((extra,) if extra is not None else ()))
    return out
