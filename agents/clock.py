"""Local calendar <-> epoch milliseconds, in the tenant's zone. Pure: the tz database is static data.

Both directions are cached because a tenant's members share a few check times and zones, and the
engine converts on every cycle.
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from bisect import bisect_right
from functools import lru_cache
from zoneinfo import ZoneInfo

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# The instants the calendar below can place slots around: [1970-01-01, 2300-01-01) UTC, epoch ms.
# The core refuses any event outside them (agents/subject.admit).
EARLIEST, LATEST = 0, 10_413_792_000_000


@lru_cache(maxsize=None)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=1 << 18)
def local_to_epoch(zone_name: str, ordinal: int, minute: int) -> int:
    """Epoch ms of local wall time `minute` after midnight on date `ordinal` (the earlier one if ambiguous)."""
    d = date.fromordinal(ordinal)
    local = datetime(d.year, d.month, d.day, minute // 60, minute % 60, tzinfo=zone(zone_name))
    return int(local.timestamp()) * 1000


@lru_cache(maxsize=1 << 18)
def _offset_ms(zone_name: str, minute_index: int) -> int:
    # Zone offsets only change on whole minutes, so one lookup serves a whole minute of instants.
    instant = datetime.fromtimestamp(minute_index * 60, timezone.utc)
    return int(instant.astimezone(zone(zone_name)).utcoffset().total_seconds()) * 1000


_hourly: dict[str, dict[int, int | None]] = {}  # zone -> hour index -> its offset, None if it changes within


def _hour_offset(zone_name: str, hour: int) -> int | None:
    first, last = _offset_ms(zone_name, hour * 60), _offset_ms(zone_name, hour * 60 + 59)
    return first if first == last else None


def offset_ms(zone_name: str, at: int) -> int:
    """The zone's UTC offset at `at`. Cached by the hour; only an hour with a DST change goes by the minute."""
    hours = _hourly.get(zone_name)
    if hours is None or len(hours) > 1 << 20:
        hours = _hourly[zone_name] = {}
    hour = at // HOUR
    offset = hours.get(hour, _UNKNOWN)
    if offset is _UNKNOWN:
        offset = hours[hour] = _hour_offset(zone_name, hour)
    return _offset_ms(zone_name, at // MINUTE) if offset is None else offset


_UNKNOWN = object()


def local_ordinal(zone_name: str, at: int) -> int:
    """The local calendar date (as an ordinal) of instant `at`."""
    return _EPOCH_ORDINAL + (at + offset_ms(zone_name, at)) // DAY


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def iso(zone_name: str, at: int) -> str:
    """ISO 8601 with the zone's offset; milliseconds only when there are some."""
    # replace(), not + timedelta: arithmetic on an aware datetime drops `fold` in the repeated DST hour
    moment = datetime.fromtimestamp(at // 1000, zone(zone_name)).replace(microsecond=at % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds" if at % 1000 else "seconds")


def midnight(zone_name: str, ordinal: int) -> int:
    return local_to_epoch(zone_name, ordinal, 0)



def steady(zone_name: str, lo: int, hi: int) -> bool:
    """True if the zone's offset never changes in [lo, hi]: there, local time is UTC plus a constant."""
    span = _spans.get(zone_name)
    if span is None or not (span[0] <= lo and hi < span[1]):
        span = _spans[zone_name] = _span_around(zone_name, lo)
    return span[0] <= lo and hi < span[1]


_spans: dict[str, tuple[int, int]] = {}  # per zone, the last span found without an offset change


def _span_around(zone_name: str, at: int, reach: int = 2) -> tuple[int, int]:
    """[start, end) around `at` with no offset change inside, looking at most `reach` years each way."""
    year = _utc_year(at)
    start, end = _NEW_YEARS[year - 1970 - reach], _NEW_YEARS[year - 1970 + reach + 1]
    for y in range(year - reach, year + reach + 1):
        for change in _changes_in(zone_name, y):
            if change <= at:
                start = change
            elif change < end:
                end = change
    return start, end


def _utc_year(at: int) -> int:
    return 1970 + bisect_right(_NEW_YEARS, at) - 1


_NEW_YEARS = [int(datetime(y, 1, 1, tzinfo=timezone.utc).timestamp()) * 1000 for y in range(1970, 2400)]


@lru_cache(maxsize=None)
def _changes_in(zone_name: str, year: int) -> tuple[int, ...]:
    """The instants in UTC `year` at which the zone's offset changes (epoch ms, to the minute)."""
    hour0 = int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()) // 3600
    hour1 = int(datetime(year + 1, 1, 1, tzinfo=timezone.utc).timestamp()) // 3600
    out, before = [], _offset_ms(zone_name, hour0 * 60 - 1)
    for hour in range(hour0, hour1):
        after = _offset_ms(zone_name, hour * 60 + 59)
        if after != before:
            minute = next(m for m in range(hour * 60, hour * 60 + 60) if _offset_ms(zone_name, m) != before)
            out.append(minute * MINUTE)
            before = after
    return tuple(out)
