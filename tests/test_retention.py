"""Retention: inbox and effect rows older than the tenant's period (設定 → 記録を残す期間, a year
unless set) are pruned to the counts the read side already holds; what is newer, what the sender
has yet to send, and every resident's state stay."""
from __future__ import annotations

from schemas import effects as fx
from schemas.events import Ok, Register
from schemas.settings import MemberSettings, Schedule
from streams.embedded.engine import Engine
from streams.embedded.store import Store
from streams.tenants import settings as ts

HOUR, DAY = 3_600_000, 86_400_000
START = 1_796_050_800_000  # 2026-12-01T00:00+09:00
DAILY = Schedule("1d", 9 * 60, "Asia/Tokyo", None)
MEMBER = "U" + "7" * 32


def counts(store: Store) -> dict:
    return dict(store.db.execute("SELECT kind, SUM(n) FROM rs_daily GROUP BY kind").fetchall())


def test_rows_older_than_the_period_are_pruned_to_counts_and_the_rest_stays(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))
    store.accept("town", None, [(MEMBER, Register(START, MemberSettings(MEMBER, "watch", DAILY, "09012345678")))])
    engine = Engine(store, "town")
    engine.retention_ms = 30 * DAY
    for day in range(60):   # sixty mornings, each card answered at 9:30
        engine.step(START + day * DAY + 9 * HOUR)
        store.accept("town", None, [(MEMBER, Ok(START + day * DAY + 9 * HOUR + 30 * 60_000, MEMBER))])
        engine.step(START + day * DAY + 10 * HOUR)
        store.mark_sent([seq for seq, _ in store.unsent("town", [fx.CHECK_SENT, fx.CONFIRMED])])
    before = counts(store)
    assert before[fx.CHECK_SENT] == 60
    now = START + 59 * DAY + 10 * HOUR
    oldest = store.db.execute("SELECT MIN(at) FROM effects").fetchone()[0]
    assert oldest < now - 30 * DAY   # the first prune ran at the first step, when nothing was old yet
    engine.pruned_at = float("-inf")
    engine.step(now + HOUR)          # the hourly prune
    assert store.db.execute("SELECT MIN(at) FROM effects").fetchone()[0] >= now + HOUR - 30 * DAY
    ats = [at for (at,) in store.db.execute("SELECT json_extract(event, '$.at') FROM inbox")]
    assert ats and min(ats) >= now + HOUR - 30 * DAY
    assert counts(store) == before                       # the counts stay
    assert MEMBER in dict(store.states("town"))          # and the resident
    kept = store.db.execute("SELECT COUNT(*) FROM effects WHERE kind = ?", (fx.CHECK_SENT,)).fetchone()[0]
    assert 29 <= kept <= 31
    store.close()


def test_what_the_sender_has_yet_to_send_is_never_pruned(tmp_path):
    store = Store(str(tmp_path / "anpi.db"))
    store.accept("town", None, [(MEMBER, Register(START, MemberSettings(MEMBER, "watch", DAILY, "09012345678")))])
    engine = Engine(store, "town")
    engine.step(START + 9 * HOUR)   # a card, never marked sent (LINE was down, say)
    assert store.prune("town", START + 400 * DAY)["effects"] == 0
    assert [e.effect for _, e in store.unsent("town", [fx.CHECK_SENT])] == [fx.CHECK_SENT]
    store.close()


def test_the_period_is_a_month_to_ten_years_and_a_year_by_default():
    assert ts.retention_ms(None) == 365 * DAY
    assert ts.clean_retention("３０") == 30 and ts.clean_retention("3650") == 3650
    for bad in ("29", "3651", "一年", ""):
        try:
            ts.clean_retention(bad)
        except ts.Invalid as e:
            assert "30 から 3650" in str(e)
        else:
            raise AssertionError(bad)
