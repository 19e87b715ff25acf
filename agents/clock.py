"""Local calendar <-> epoch milliseconds, in the tenant's zone. Pure: the tz database is static data.

Both directions are cached because a tenant's members share a few check times and zones, and the
engine converts on every cycle.
"""
from __future__ import annotations

from datetime import date, datetime, time, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


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


def local_ordinal(zone_name: str, at: int) -> int:
    """The local calendar date (as an ordinal) of instant `at`."""
    local_ms = at + _offset_ms(zone_name, at // MINUTE)
    return date(1970, 1, 1).toordinal() + local_ms // DAY


def iso(zone_name: str, at: int) -> str:
    """ISO 8601 with the zone's offset; milliseconds only when there are some."""
    # replace(), not + timedelta: arithmetic on an aware datetime drops `fold` in the repeated DST hour
    moment = datetime.fromtimestamp(at // 1000, zone(zone_name)).replace(microsecond=at % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds" if at % 1000 else "seconds")


def midnight(zone_name: str, ordinal: int) -> int:
    return local_to_epoch(zone_name, ordinal, 0)


def clock_time(minute: int) -> time:
    return time(minute // 60, minute % 60)
