"""Independent reference implementation ("oracle") of the check-in engine rules.

Used only by tests to cross-check the real engine.  Deliberately naive: it
walks virtual time one minute at a time from `start` (inclusive) to `end`
(exclusive).  At every minute it first applies all inbound events stamped
with that minute (in file order), then lets the clock trigger whatever is due
("ties go to the resident").

API:  simulate(scenario: dict) -> list[dict]

Interpretation choices where the rules leave room (kept in one place):
  * Events stamped before `start` or at/after `end` are ignored.
  * Member-level events (ok/message/pause/resolve/follow/unfollow) for a user
    who is not in `members` have no member-level effect; the group part
    (roster / group confirmation) of ok/message still applies.
  * `group` on pause/resolve/follow/unfollow is ignored (only ok/message touch
    the group roster).
  * Groups are independent of follow/unfollow of the member service.
  * Pause while idle (no open cycle, following): next = first lattice slot
    >= max(now, midnight(D)), so a later pause with an earlier date brings the
    check forward again ("a later pause replaces an earlier one").
  * After any close the next check is the first slot strictly after the close
    time and >= the recorded pause midnight (the latter never binds in
    practice, see rules).
  * A group with an empty roster posts nothing at P+23h (no one is missing).
  * Nobody is left waiting (issue 12): `ack` and `help`, staff calls with a reason, reminders every
    6 h while a staff call stays open, the all clear to the contacts told; a cycle held by a help
    or a 見守り unfollow closes only by `resolve`.
  * Output is sorted by (instant, subject, effect); the instant is compared as
    an epoch (identical to comparing `at` strings for fixed-offset zones such
    as Asia/Tokyo).
  * Roll-calls (安否確認): a `rollcall` is an inbound event like any other (file
    order within a minute).  A member it is not sent to (outside its areas,
    or not following) keeps the roll-call they had.  A member's roll-call
    keeps: sent, resend_after, answered safe / need_help; its resend falls at
    sent + resend_after unless answered or not following then, its listing at
    sent + 2 x resend_after unless answered.  A `safe` is a sign of life
    exactly as an OK; a `need_help` is exactly a `help` (but only the answer
    when the member's current roll-call is a drill); on top of that they
    answer the member's current roll-call, if any (at most one safe, one
    need_help, and no safe after a need_help).  In a group, the same answer
    is the member's own (when the user is in `members`) and, when the group
    has a roll-call, goes on the group's card once per member (same counting).
    A `safe` / `need_help` in a group puts the user on the group's roster
    ("anyone seen in the group") but does not confirm its daily check (only
    an OK does).  A roll-call without `areas` reaches every member and every group; with
    `areas`, only members / groups whose `area` is one of them.
"""

from __future__ import annotations

from datetime import date, datetime, time as dtime, timedelta
from zoneinfo import ZoneInfo

MINUTE = 60
HOUR = 3600

INTERVAL_DAYS = {
    "1d": 1,
    "2d": 2,
    "3d": 3,
    "5d": 5,
    "30d": 30,
    "weekly": 7,
    "biweekly": 14,
}
WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


# --------------------------------------------------------------------------
# time helpers
# --------------------------------------------------------------------------

def _to_epoch(value, tz: ZoneInfo) -> int:
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(str(value))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return int(dt.timestamp())


def _to_date(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _parse_hhmm(value) -> dtime:
    hh, mm = str(value).split(":")
    return dtime(int(hh), int(mm))


def _delay_minutes(value) -> int:
    """`resend_after`: `Nm` or `Nh` (1m to 24h), in whole minutes."""
    text = str(value).strip()
    if text.endswith("m"):
        return int(text[:-1])
    if text.endswith("h"):
        return int(text[:-1]) * 60
    raise ValueError(f"resend_after: {value!r}")


def _local_epoch(d: date, t: dtime, tz: ZoneInfo) -> int:
    return int(datetime.combine(d, t, tzinfo=tz).timestamp())


def _fmt(epoch: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch, tz).isoformat(timespec="seconds")


class Lattice:
    """Fixed slot lattice: slot k = local date (anchor + k*N days) at HH:MM."""

    def __init__(self, registered: int, interval: str, hhmm, weekday, tz: ZoneInfo):
        self.tz = tz
        self.n = INTERVAL_DAYS[str(interval)]
        self.t = _parse_hhmm(hhmm)
        d = datetime.fromtimestamp(registered, tz).date()
        if self.n in (7, 14) and str(interval) in ("weekly", "biweekly"):
            want = WEEKDAYS[str(weekday).lower()[:3]]
            while d.weekday() != want:
                d += timedelta(days=1)
            if _local_epoch(d, self.t, tz) < registered:
                d += timedelta(days=7)
        else:
            if _local_epoch(d, self.t, tz) < registered:
                d += timedelta(days=1)
        self.anchor = d

    def slot(self, k: int) -> int:
        return _local_epoch(self.anchor + timedelta(days=k * self.n), self.t, self.tz)

    def first_at_or_after(self, epoch: int) -> int:
        k = 0
        while self.slot(k) < epoch:
            k += 1
        return self.slot(k)

    def first_after(self, epoch: int) -> int:
        k = 0
        while self.slot(k) <= epoch:
            k += 1
        return self.slot(k)


# --------------------------------------------------------------------------
# subjects
# --------------------------------------------------------------------------

class Member:
    def __init__(self, cfg: dict, start: int, tz: ZoneInfo):
        self.id = str(cfg["id"])
        self.service = str(cfg.get("service", "watch"))
        self.contacts = [str(c) for c in (cfg.get("contacts") or [])]
        self.lattice = Lattice(start, cfg["interval"], cfg["time"], cfg.get("weekday"), tz)
        self.following = True
        self.cycle = 0
        # while a cycle is open: dict(S=..., resent=bool, escalated=bool, told=list|None, told_at=...,
        # acked=set, called=epoch|None, held=bool)
        self.open = None
        self.next = self.lattice.first_at_or_after(start)  # scheduled check (None if unfollowed)
        self.pause_midnight = None
        self.area = cfg.get("area")
        # the current roll-call: dict(id=, drill=, sent=, after=, safe=bool, need=bool, resent=bool)
        self.rollcall = None

    def next_after_close(self, close: int) -> int:
        s = self.lattice.first_after(close)
        if self.pause_midnight is not None and s < self.pause_midnight:
            s = self.lattice.first_at_or_after(self.pause_midnight)
        return s


class Group:
    def __init__(self, cfg: dict, start: int, tz: ZoneInfo):
        self.id = str(cfg["id"])
        self.configured = [str(m) for m in (cfg.get("members") or [])]
        self.seen: set[str] = set()
        self.lattice = Lattice(start, cfg["interval"], cfg["time"], cfg.get("weekday"), tz)
        self.cycle = 0
        self.open = None  # dict(P=..., confirmed=set())
        self.next = self.lattice.first_at_or_after(start)
        self.area = cfg.get("area")
        # the current roll-call card: dict(id=, drill=, safe=set(), need=set())
        self.rollcall = None

    def roster(self) -> set[str]:
        return set(self.configured) | self.seen


# --------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------

def simulate(scenario: dict) -> list[dict]:
    tz = ZoneInfo(scenario.get("timezone") or "Asia/Tokyo")
    start = _to_epoch(scenario["start"], tz)
    end = _to_epoch(scenario["end"], tz)

    members = {}
    for cfg in scenario.get("members") or []:
        m = Member(cfg, start, tz)
        members[m.id] = m
    groups = {}
    for cfg in scenario.get("groups") or []:
        g = Group(cfg, start, tz)
        groups[g.id] = g

    # inbound events bucketed per minute, file order preserved inside a bucket
    by_minute: dict[int, list[dict]] = {}
    for ev in scenario.get("events") or []:
        at = _to_epoch(ev["at"], tz)
        if at < start or at >= end:
            continue
        by_minute.setdefault(at, []).append(ev)

    out: list[tuple[int, dict]] = []

    def emit(at, effect, subject, cycle=None, **extra):
        d = {"at": _fmt(at, tz), "effect": effect, "subject": subject}
        if cycle is not None:
            d["cycle"] = cycle
        for key in ("to", "member", "members", "reason", "n", "rollcall", "drill"):
            if key in extra:
                d[key] = extra[key]
        out.append((at, d))

    # ---- member-level inbound handling ----

    def new_cycle(m: Member, start):
        m.cycle += 1
        m.open = {"S": start, "resent": False, "escalated": False, "told": None, "told_at": None,
                  "acked": set(), "called": None, "held": False}

    def close(m: Member, t: int):
        o = m.open
        emit(t, "resolved_after_escalation" if o["escalated"] else "confirmed", m.id, m.cycle)
        if o["told"]:
            emit(t, "all_clear", m.id, m.cycle, to=sorted(o["told"]))
        m.open = None

    def call_staff(m: Member, t: int, reason: str):
        m.open["escalated"] = True
        m.open["called"] = t
        emit(t, "staff_call", m.id, m.cycle, reason=reason)

    def escalate(m: Member, t: int, reason: str):
        if m.service == "notify" and m.contacts:
            m.open["escalated"] = True
            m.open["told"], m.open["told_at"] = list(m.contacts), t
            emit(t, "contacts_notified", m.id, m.cycle, to=list(m.contacts))
        else:
            call_staff(m, t, reason)

    def close_by_sign_of_life(m: Member, t: int) -> bool:
        """Close an open cycle at t because of a sign of life.  Returns True if closed."""
        if m.open is None or m.open["held"]:
            return False
        close(m, t)
        return True

    def member_ok_or_message(m: Member, t: int):
        if not m.following:
            return
        if close_by_sign_of_life(m, t):
            m.next = m.next_after_close(t)

    def member_pause(m: Member, t: int, until):
        midnight = _local_epoch(_to_date(until), dtime(0, 0), tz)
        m.pause_midnight = midnight  # later pause replaces earlier date
        if not m.following:
            return
        if close_by_sign_of_life(m, t):
            m.next = m.next_after_close(t)  # > t and >= midnight
        else:
            # "a later pause replaces an earlier one": an earlier date brings the check forward again
            m.next = m.lattice.first_at_or_after(max(t, midnight))

    def member_resolve(m: Member, t: int):
        if m.open is None or not m.open["escalated"]:
            return
        close(m, t)
        m.next = m.next_after_close(t) if m.following else None

    def member_unfollow(m: Member, t: int):
        if not m.following:
            return
        emit(t, "unfollowed", m.id)
        m.following = False
        m.next = None
        if m.service == "watch":  # staff must phone them
            if m.open is None:
                new_cycle(m, None)
            if m.open["called"] is None:
                call_staff(m, t, "unfollowed")
            m.open["held"] = True
        elif m.open is not None and not m.open["held"]:
            m.open = None  # closes silently: the resident chose to leave

    def member_follow(m: Member, t: int):
        if m.following:
            return
        emit(t, "followed", m.id)
        m.following = True
        if m.open is None:
            m.next = m.next_after_close(t)  # > follow instant, >= pause midnight
        # else: the held cycle's close sets the next check (strictly after the close, so after this)

    def member_help(m: Member, t: int):
        if not m.following:
            return
        if m.open is None:
            new_cycle(m, None)
        emit(t, "help_requested", m.id, m.cycle)
        if not m.open["escalated"]:
            escalate(m, t, "help")
        m.open["held"] = True

    def member_ack(m: Member, contact: str, t: int):
        o = m.open
        if o is None or not o["told"] or contact not in o["told"] or contact in o["acked"]:
            return
        o["acked"].add(contact)
        emit(t, "contact_acknowledged", m.id, m.cycle, member=contact)

    # ---- roll-calls (安否確認) ----

    def rollcall_start(ev: dict, t: int):
        rid = str(ev["id"])
        drill = bool(ev.get("drill", False))
        after = _delay_minutes(ev.get("resend_after", "30m")) * MINUTE
        areas = ev.get("areas")
        areas = None if areas is None else {str(a) for a in areas}
        for m in members.values():
            if areas is not None and (m.area is None or str(m.area) not in areas):
                continue
            if not m.following:
                continue  # gets nothing (and keeps whatever roll-call they had)
            # a new roll-call replaces the current one, its timers with it
            m.rollcall = {"id": rid, "drill": drill, "sent": t, "after": after,
                          "safe": False, "need": False, "resent": False}
            emit(t, "rollcall_sent", m.id, rollcall=rid, drill=drill)
        for g in groups.values():
            if areas is not None and (g.area is None or str(g.area) not in areas):
                continue
            g.rollcall = {"id": rid, "drill": drill, "safe": set(), "need": set()}
            emit(t, "group_rollcall_posted", g.id, rollcall=rid, drill=drill)

    def member_answer(m: Member, kind: str, t: int):
        """A `safe` / `need_help` from the member (directly or in a group)."""
        rc = m.rollcall
        if rc is not None:  # counts for the current roll-call, once each; no safe after need_help
            if kind == "safe" and not rc["safe"] and not rc["need"]:
                rc["safe"] = True
                emit(t, "rollcall_safe", m.id, rollcall=rc["id"], drill=rc["drill"])
            elif kind == "need_help" and not rc["need"]:
                rc["need"] = True
                emit(t, "rollcall_need_help", m.id, rollcall=rc["id"], drill=rc["drill"])
        if kind == "safe":
            member_ok_or_message(m, t)  # a sign of life, as an OK
        elif rc is None or not rc["drill"]:
            member_help(m, t)  # a help (ladder rule 4); in a drill, the answer only

    def group_answer(g: Group, user: str, kind: str, t: int):
        g.seen.add(user)  # seen in the group: on the daily roster from now on (but not a group OK)
        rc = g.rollcall
        if rc is None:
            return
        if kind == "safe" and user not in rc["safe"] and user not in rc["need"]:
            rc["safe"].add(user)
            emit(t, "group_rollcall_safe", g.id, member=user, rollcall=rc["id"], drill=rc["drill"])
        elif kind == "need_help" and user not in rc["need"]:
            rc["need"].add(user)
            emit(t, "group_rollcall_need_help", g.id, member=user, rollcall=rc["id"], drill=rc["drill"])

    # ---- group inbound handling ----

    def group_event(g: Group, user: str, kind: str, t: int):
        g.seen.add(user)
        if kind != "ok" or g.open is None:
            return
        if user in g.open["confirmed"]:
            return
        g.open["confirmed"].add(user)
        emit(t, "group_confirmed", g.id, g.cycle, member=user)
        if g.roster() <= g.open["confirmed"]:
            g.open = None
            g.next = g.lattice.first_after(t)

    # ---- main loop ----

    t = start
    while t < end:
        # 1. inbound events first
        for ev in by_minute.get(t, []):
            kind = str(ev["type"])
            user = str(ev.get("member")) if ev.get("member") is not None else None
            m = members.get(user) if user is not None else None
            if kind in ("ok", "message"):
                gid = ev.get("group")
                if gid is not None and str(gid) in groups and user is not None:
                    group_event(groups[str(gid)], user, kind, t)
                if m is not None:
                    member_ok_or_message(m, t)
            elif kind == "pause":
                if m is not None:
                    member_pause(m, t, ev["until"])
            elif kind == "resolve":
                if m is not None:
                    member_resolve(m, t)
            elif kind == "unfollow":
                if m is not None:
                    member_unfollow(m, t)
            elif kind == "follow":
                if m is not None:
                    member_follow(m, t)
            elif kind == "help":
                if m is not None:
                    member_help(m, t)
            elif kind == "ack":
                if m is not None:
                    member_ack(m, str(ev["contact"]), t)
            elif kind == "rollcall":
                rollcall_start(ev, t)
            elif kind in ("safe", "need_help"):
                gid = ev.get("group")
                if gid is not None and str(gid) in groups and user is not None:
                    group_answer(groups[str(gid)], user, kind, t)
                if m is not None:
                    member_answer(m, kind, t)
            else:
                raise ValueError(f"unknown event type {kind!r}")

        # 2. clock
        for m in members.values():
            if m.open is not None:
                o = m.open
                if o["escalated"]:
                    if o["called"] is None:
                        if not o["acked"] and t == o["told_at"] + 3 * HOUR:
                            call_staff(m, t, "unclaimed")
                    elif t > o["called"] and (t - o["called"]) % (6 * HOUR) == 0:
                        emit(t, "staff_reminder", m.id, m.cycle, n=(t - o["called"]) // (6 * HOUR))
                elif not o["resent"] and t == o["S"] + 24 * HOUR:
                    emit(t, "check_resent", m.id, m.cycle)
                    o["resent"] = True
                elif o["resent"] and t == o["S"] + 27 * HOUR:
                    escalate(m, t, "no_answer")
            elif m.following and m.next == t:
                new_cycle(m, t)
                emit(t, "check_sent", m.id, m.cycle)

        for m in members.values():
            rc = m.rollcall
            if rc is None or rc["safe"] or rc["need"]:
                continue  # answered (ties go to the resident: answers above came first)
            if t == rc["sent"] + rc["after"] and m.following:  # no resend to someone who left
                rc["resent"] = True
                emit(t, "rollcall_resent", m.id, rollcall=rc["id"], drill=rc["drill"])
            elif t == rc["sent"] + 2 * rc["after"]:
                emit(t, "rollcall_unanswered", m.id, rollcall=rc["id"], drill=rc["drill"])

        for g in groups.values():
            if g.open is not None:
                if t == g.open["P"] + 23 * HOUR:
                    missing = sorted(g.roster() - g.open["confirmed"])
                    if missing:  # everyone (vacuously, no one) confirmed: nothing is posted
                        emit(t, "group_unconfirmed", g.id, g.cycle, members=missing)
                    g.open = None
                    g.next = g.lattice.first_after(t)
            elif g.next == t:
                g.cycle += 1
                g.open = {"P": t, "confirmed": set()}
                emit(t, "group_check_posted", g.id, g.cycle)

        t += MINUTE

    out.sort(key=lambda pair: (pair[0], pair[1]["subject"], pair[1]["effect"]))
    return [d for _, d in out]


# --------------------------------------------------------------------------
# self-tests (hand-computed expectations)
# --------------------------------------------------------------------------

def _e(at, effect, subject, cycle=None, **extra):
    d = {"at": at, "effect": effect, "subject": subject}
    if cycle is not None:
        d["cycle"] = cycle
    d.update(extra)
    return d


def _watch(**kw):
    cfg = {"id": "U001", "service": "watch", "interval": "1d", "time": "09:00",
           "phone": "090-1234-5678"}
    cfg.update(kw)
    return cfg


def test_oracle_watch_never_answers():
    # (a) no answer: check, resend at +24h, staff call at +27h, then the
    # escalated cycle stays open, so no further checks are sent; staff are
    # reminded every 6 h.
    sc = {
        "start": "2026-12-01T00:00:00+09:00",
        "end": "2026-12-04T00:00:00+09:00",
        "members": [_watch()],
        "events": [],
    }
    assert simulate(sc) == [
        _e("2026-12-01T09:00:00+09:00", "check_sent", "U001", 1),
        _e("2026-12-02T09:00:00+09:00", "check_resent", "U001", 1),
        _e("2026-12-02T12:00:00+09:00", "staff_call", "U001", 1, reason="no_answer"),
        _e("2026-12-02T18:00:00+09:00", "staff_reminder", "U001", 1, n=1),
        _e("2026-12-03T00:00:00+09:00", "staff_reminder", "U001", 1, n=2),
        _e("2026-12-03T06:00:00+09:00", "staff_reminder", "U001", 1, n=3),
        _e("2026-12-03T12:00:00+09:00", "staff_reminder", "U001", 1, n=4),
        _e("2026-12-03T18:00:00+09:00", "staff_reminder", "U001", 1, n=5),
    ]


def test_oracle_notify_answers_resend():
    # (b) Cycle 1 opens at 12-01 09:00, resend at 12-02 09:00 (cycle still
    # open, so the 12-02 09:00 lattice slot is NOT used for a new check: only
    # one cycle may be open).  The answer at 12-02 10:00 closes cycle 1 with
    # `confirmed` (not yet escalated; escalation would be at 12:00).  The next
    # check is the first slot strictly after the close time 12-02 10:00; the
    # 12-02 09:00 slot lies before the close, so the next one is 12-03 09:00.
    sc = {
        "start": "2026-12-01T00:00:00+09:00",
        "end": "2026-12-04T00:00:00+09:00",
        "members": [{"id": "U002", "service": "notify", "interval": "1d",
                     "time": "09:00", "contacts": ["U900", "U901"]}],
        "events": [{"at": "2026-12-02T10:00:00+09:00", "type": "ok", "member": "U002"}],
    }
    assert simulate(sc) == [
        _e("2026-12-01T09:00:00+09:00", "check_sent", "U002", 1),
        _e("2026-12-02T09:00:00+09:00", "check_resent", "U002", 1),
        _e("2026-12-02T10:00:00+09:00", "confirmed", "U002", 1),
        _e("2026-12-03T09:00:00+09:00", "check_sent", "U002", 2),
    ]


def test_oracle_notify_contacts_notified():
    sc = {
        "start": "2026-12-01T00:00:00+09:00",
        "end": "2026-12-03T00:00:00+09:00",
        "members": [{"id": "U002", "service": "notify", "interval": "1d",
                     "time": "09:00", "contacts": ["U901", "U900"]},
                    {"id": "U003", "service": "notify", "interval": "1d",
                     "time": "09:00"}],
        "events": [],
    }
    assert simulate(sc) == [
        _e("2026-12-01T09:00:00+09:00", "check_sent", "U002", 1),
        _e("2026-12-01T09:00:00+09:00", "check_sent", "U003", 1),
        _e("2026-12-02T09:00:00+09:00", "check_resent", "U002", 1),
        _e("2026-12-02T09:00:00+09:00", "check_resent", "U003", 1),
        _e("2026-12-02T12:00:00+09:00", "contacts_notified", "U002", 1, to=["U901", "U900"]),
        _e("2026-12-02T12:00:00+09:00", "staff_call", "U003", 1, reason="no_answer"),
        _e("2026-12-02T15:00:00+09:00", "staff_call", "U002", 1, reason="unclaimed"),
        _e("2026-12-02T18:00:00+09:00", "staff_reminder", "U003", 1, n=1),
        _e("2026-12-02T21:00:00+09:00", "staff_reminder", "U002", 1, n=1),
    ]


def test_oracle_group_two_of_three():
    # (c) post at 12-01 08:00; U010 and U011 confirm; at +23h (12-02 07:00)
    # the list names U012 and the cycle closes; next post is the first slot
    # strictly after 07:00 -> 12-02 08:00 (cycle 2).
    sc = {
        "start": "2026-12-01T00:00:00+09:00",
        "end": "2026-12-02T12:00:00+09:00",
        "groups": [{"id": "C001", "members": ["U010", "U011", "U012"],
                    "interval": "1d", "time": "08:00"}],
        "events": [
            {"at": "2026-12-01T09:00:00+09:00", "type": "ok", "member": "U011", "group": "C001"},
            {"at": "2026-12-01T08:30:00+09:00", "type": "ok", "member": "U010", "group": "C001"},
            {"at": "2026-12-01T10:00:00+09:00", "type": "ok", "member": "U010", "group": "C001"},
        ],
    }
    assert simulate(sc) == [
        _e("2026-12-01T08:00:00+09:00", "group_check_posted", "C001", 1),
        _e("2026-12-01T08:30:00+09:00", "group_confirmed", "C001", 1, member="U010"),
        _e("2026-12-01T09:00:00+09:00", "group_confirmed", "C001", 1, member="U011"),
        _e("2026-12-02T07:00:00+09:00", "group_unconfirmed", "C001", 1, members=["U012"]),
        _e("2026-12-02T08:00:00+09:00", "group_check_posted", "C001", 2),
    ]


def test_oracle_group_all_confirm_and_member_sign_of_life():
    # U010 is also a watch member (check at 09:00); the group OK at 09:30
    # confirms both.  Unconfigured U099 joins the roster via OK and confirms.
    sc = {
        "start": "2026-12-01T00:00:00+09:00",
        "end": "2026-12-02T09:00:00+09:00",
        "members": [_watch(id="U010")],
        "groups": [{"id": "C001", "members": ["U010", "U011"],
                    "interval": "1d", "time": "08:00"}],
        "events": [
            {"at": "2026-12-01T08:10:00+09:00", "type": "ok", "member": "U011", "group": "C001"},
            {"at": "2026-12-01T08:20:00+09:00", "type": "ok", "member": "U099", "group": "C001"},
            {"at": "2026-12-01T09:30:00+09:00", "type": "ok", "member": "U010", "group": "C001"},
        ],
    }
    assert simulate(sc) == [
        _e("2026-12-01T08:00:00+09:00", "group_check_posted", "C001", 1),
        _e("2026-12-01T08:10:00+09:00", "group_confirmed", "C001", 1, member="U011"),
        _e("2026-12-01T08:20:00+09:00", "group_confirmed", "C001", 1, member="U099"),
        _e("2026-12-01T09:00:00+09:00", "check_sent", "U010", 1),
        _e("2026-12-01T09:30:00+09:00", "group_confirmed", "C001", 1, member="U010"),
        _e("2026-12-01T09:30:00+09:00", "confirmed", "U010", 1),
        _e("2026-12-02T08:00:00+09:00", "group_check_posted", "C001", 2),
    ]


def test_oracle_ok_at_exactly_24h_prevents_resend():
    # (d) OK at exactly S+24h is applied before the clock: confirmed, no
    # resend; next check strictly after 12-02 09:00 -> 12-03 09:00.
    sc = {
        "start": "2026-12-01T00:00:00+09:00",
        "end": "2026-12-03T12:00:00+09:00",
        "members": [_watch()],
        "events": [{"at": "2026-12-02T09:00:00+09:00", "type": "ok", "member": "U001"}],
    }
    assert simulate(sc) == [
        _e("2026-12-01T09:00:00+09:00", "check_sent", "U001", 1),
        _e("2026-12-02T09:00:00+09:00", "confirmed", "U001", 1),
        _e("2026-12-03T09:00:00+09:00", "check_sent", "U001", 2),
    ]


def test_oracle_pause_unfollow_follow_resolve():
    sc = {
        "start": "2026-12-01T00:00:00+09:00",
        "end": "2026-12-12T00:00:00+09:00",
        # 安否通知 with nobody to tell: staff are called, and an unfollow closes the cycle
        "members": [{"id": "U001", "service": "notify", "interval": "2d", "time": "09:00"}],  # slots 12-01, 03, …
        "events": [
            # cycle 1 (12-01 09:00) closed by pause; no checks before 12-05 00:00
            {"at": "2026-12-01T12:00:00+09:00", "type": "pause", "member": "U001", "until": "2026-12-05"},
            # resolve with no escalated cycle: ignored
            {"at": "2026-12-04T12:00:00+09:00", "type": "resolve", "member": "U001"},
            # cycle 2 at 12-05 09:00 escalates 12-06 12:00; resolved 12-06 13:00
            {"at": "2026-12-06T13:00:00+09:00", "type": "resolve", "member": "U001"},
            # cycle 3 at 12-07 09:00; unfollow closes it silently
            {"at": "2026-12-07T10:00:00+09:00", "type": "unfollow", "member": "U001"},
            {"at": "2026-12-07T11:00:00+09:00", "type": "unfollow", "member": "U001"},
            {"at": "2026-12-07T12:00:00+09:00", "type": "ok", "member": "U001"},
            # follow exactly at a slot: next slot strictly after -> 12-11 09:00
            {"at": "2026-12-09T09:00:00+09:00", "type": "follow", "member": "U001"},
        ],
    }
    assert simulate(sc) == [
        _e("2026-12-01T09:00:00+09:00", "check_sent", "U001", 1),
        _e("2026-12-01T12:00:00+09:00", "confirmed", "U001", 1),
        _e("2026-12-05T09:00:00+09:00", "check_sent", "U001", 2),
        _e("2026-12-06T09:00:00+09:00", "check_resent", "U001", 2),
        _e("2026-12-06T12:00:00+09:00", "staff_call", "U001", 2, reason="no_answer"),
        _e("2026-12-06T13:00:00+09:00", "resolved_after_escalation", "U001", 2),
        _e("2026-12-07T09:00:00+09:00", "check_sent", "U001", 3),
        _e("2026-12-07T10:00:00+09:00", "unfollowed", "U001"),
        _e("2026-12-09T09:00:00+09:00", "followed", "U001"),
        _e("2026-12-11T09:00:00+09:00", "check_sent", "U001", 4),
    ]


def test_oracle_weekly_anchor_and_key_order():
    # 2026-12-01 is a Tuesday; weekly mon -> first slot Mon 12-07 09:00.
    sc = {
        "start": "2026-12-01T00:00:00+09:00",
        "end": "2026-12-15T00:00:00+09:00",
        "members": [_watch(interval="weekly", weekday="mon")],
        "events": [{"at": "2026-12-07T09:00:00+09:00", "type": "message", "member": "U001"},
                   {"at": "2026-12-07T09:05:00+09:00", "type": "message", "member": "U001"}],
    }
    res = simulate(sc)
    assert res == [
        _e("2026-12-07T09:00:00+09:00", "check_sent", "U001", 1),
        _e("2026-12-07T09:05:00+09:00", "confirmed", "U001", 1),
        _e("2026-12-14T09:00:00+09:00", "check_sent", "U001", 2),
    ]
    assert list(res[0].keys()) == ["at", "effect", "subject", "cycle"]
