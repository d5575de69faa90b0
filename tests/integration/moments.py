"""Moments for integration tests, taken from the real clock.

Redis, the broker and ClickHouse keep their own time, so a test that hands the code a fixed date
passes only until that date is behind us. These give "the next 07:30 in Shanghai" or "three recent
days at 09:10" relative to the real now, so the same test holds on any date. Fixed dates belong in
pure unit tests only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def now() -> datetime:
    """The real now in UTC, to the whole second, so sums of milliseconds compare exactly."""
    return datetime.now(UTC).replace(microsecond=0)


def on_local_clock(day: date, hour: int, minute: int = 0, zone: ZoneInfo = SHANGHAI) -> datetime:
    """`day` at hour:minute on `zone`'s clock, in UTC."""
    return datetime.combine(day, time(hour, minute), zone).astimezone(UTC)


def next_local(
    hour: int,
    minute: int = 0,
    zone: ZoneInfo = SHANGHAI,
    *,
    after: datetime | None = None,
    weekday: int | None = None,
) -> datetime:
    """The first moment after `after` (default: now) at which `zone`'s clock shows hour:minute, on
    `weekday` if given (0 is Monday), in UTC. Local times a summer-time change skips are passed over."""
    start = after or now()
    first_day = start.astimezone(zone).date()
    for offset in range(9):
        candidate = datetime.combine(first_day + timedelta(days=offset), time(hour, minute), zone)
        exists = candidate.astimezone(UTC).astimezone(zone).time() == time(hour, minute)
        if candidate > start and exists and (weekday is None or candidate.weekday() == weekday):
            return candidate.astimezone(UTC)
    raise AssertionError(f"no {hour:02d}:{minute:02d} {zone.key} within 9 days of {start.isoformat()}")


def recent_days(
    count: int, at: time, *, before: datetime | None = None, steady: Sequence[ZoneInfo] = ()
) -> list[datetime]:
    """`count` consecutive days at `at` (UTC), the last at least a day before `before` (default:
    now), during which no zone in `steady` changes its clock, so each shows the same hour every day."""
    last = (before or now()).date() - timedelta(days=1)
    for back in range(0, 60):
        days = [
            datetime.combine(last - timedelta(days=back + count - 1 - i), at, UTC) for i in range(count)
        ]
        if all(len({d.astimezone(zone).utcoffset() for d in days}) == 1 for zone in steady):
            return days
    raise AssertionError(f"no {count} steady days before {last} for {[z.key for z in steady]}")
