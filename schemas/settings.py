"""What a resident or a group chose: the service and the schedule of its checks."""
from __future__ import annotations

from dataclasses import dataclass

WATCH = "watch"      # 見守り: one person, staff call when unanswered
NOTIFY = "notify"    # 安否通知: one person, their chosen contacts are told
SERVICES = (WATCH, NOTIFY)

# interval name -> days between slots
INTERVALS = {"1d": 1, "2d": 2, "3d": 3, "5d": 5, "30d": 30, "weekly": 7, "biweekly": 14}
# The 8-day line: the police count a 孤立死 found after 8 days or more as the mark of failure. An
# unanswered check reaches someone 27 h after it went out; a schedule whose gap plus those 27 h
# passes 7 days can leave a fall unnoticed for 8 days or more.
NOTICED_AFTER_HOURS = 27
EIGHT_DAY_WARNING = "8日以上、誰にも気づかれない可能性があります"


def past_the_eight_day_line(interval: str) -> bool:
    """True for schedules where a person could lie unnoticed 8 days or more (weekly, biweekly, 30d)."""
    return INTERVALS[interval] * 24 + NOTICED_AFTER_HOURS > 7 * 24
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()


@dataclass(frozen=True, slots=True)
class Schedule:
    """Checks go every `every_days` days at `minute` (minutes after local midnight) in `zone`.

    `weekday` (0 = Monday) pins weekly and biweekly schedules; None for the day-count intervals.
    """

    interval: str
    minute: int
    zone: str = "Asia/Tokyo"
    weekday: int | None = None

    @property
    def every_days(self) -> int:
        return INTERVALS[self.interval]


# A phone number in a ChangeSettings that says "the one the member has": the Kafka runtime's copy of
# a state in Redis (My Page reads it) holds this, followed by the number's last four digits (the
# page's 「末尾 5678」), instead of the number, and a change built from that copy keeps the number the
# engine has. No phone number starts like it (scenarios and LINE refuse it).
PHONE_KEPT = "(kept)"


def kept_phone(phone: str) -> str:
    """The copy's stand-in for `phone`: PHONE_KEPT and its last four digits."""
    return PHONE_KEPT + phone[-4:]


@dataclass(frozen=True, slots=True)
class MemberSettings:
    id: str
    service: str
    schedule: Schedule
    phone: str | None = None          # watch only: staff call the person
    contacts: tuple[str, ...] = ()    # notify only: LINE userIds told when unanswered
    area: str | None = None           # the tenant's own area (地区) id, which a roll-call names


@dataclass(frozen=True, slots=True)
class GroupSettings:
    id: str
    schedule: Schedule
    members: tuple[str, ...] = ()     # the roster as configured; more are learned from events
    area: str | None = None
