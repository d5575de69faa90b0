"""Quiet hours and best send time in the recipient's own timezone, across midnight and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from processors.timing import in_quiet_hours, next_best_time, plan_timing, quiet_hours_end
from records.plan import BestTime, DeliveryPlan, QuietHours

NIGHT = QuietHours(start=time(22), end=time(7))
LUNCH = QuietHours(start=time(12), end=time(13, 30), action="drop")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("zone", "moment", "quiet", "expected"),
    [
        # Shanghai is UTC+8 all year: 15:00 UTC is 23:00 there.
        ("Asia/Shanghai", utc(2026, 11, 22, 15, 0), NIGHT, True),
        ("Asia/Shanghai", utc(2026, 11, 22, 13, 59), NIGHT, False),  # 21:59
        ("Asia/Shanghai", utc(2026, 11, 22, 14, 0), NIGHT, True),  # 22:00, the start is inside
        ("Asia/Shanghai", utc(2026, 11, 22, 22, 59), NIGHT, True),  # 06:59 next morning
        ("Asia/Shanghai", utc(2026, 11, 22, 23, 0), NIGHT, False),  # 07:00, the end is outside
        # New York in winter is UTC-5: 03:00 UTC is 22:00 there; in summer UTC-4: 02:00 UTC is 22:00.
        ("America/New_York", utc(2026, 1, 15, 3, 0), NIGHT, True),
        ("America/New_York", utc(2026, 1, 15, 2, 0), NIGHT, False),
        ("America/New_York", utc(2026, 7, 15, 2, 0), NIGHT, True),
        ("America/New_York", utc(2026, 7, 15, 11, 0), NIGHT, False),  # 07:00 EDT
        ("Europe/London", utc(2026, 6, 1, 11, 30), LUNCH, True),  # 12:30 BST
        ("Europe/London", utc(2026, 12, 1, 11, 30), LUNCH, False),  # 11:30 GMT
        ("Asia/Kolkata", utc(2026, 5, 1, 7, 0), LUNCH, True),  # 12:30 IST (+05:30)
        ("UTC", utc(2026, 5, 1, 12, 0), QuietHours(start=time(8), end=time(8)), False),  # empty window
    ],
)
def test_quiet_hours_read_the_recipients_wall_clock(
    zone: str, moment: datetime, quiet: QuietHours, expected: bool
) -> None:
    assert in_quiet_hours(moment, ZoneInfo(zone), quiet) is expected


@pytest.mark.parametrize(
    ("zone", "moment", "quiet", "end"),
    [
        # Evening part of a window that spans midnight: ends tomorrow morning.
        ("Asia/Shanghai", utc(2026, 11, 22, 15, 0), NIGHT, utc(2026, 11, 22, 23, 0)),
        # Morning part: ends this morning.
        ("Asia/Shanghai", utc(2026, 11, 22, 20, 0), NIGHT, utc(2026, 11, 22, 23, 0)),
        ("Asia/Shanghai", utc(2026, 11, 22, 10, 0), NIGHT, None),
        ("America/New_York", utc(2026, 1, 15, 4, 0), NIGHT, utc(2026, 1, 15, 12, 0)),
        # The night the clocks go forward (2026-03-08 02:00 EST → 03:00 EDT): 07:00 EDT is 11:00 UTC.
        ("America/New_York", utc(2026, 3, 8, 4, 0), NIGHT, utc(2026, 3, 8, 11, 0)),
        # The night they go back (2026-11-01 02:00 EDT → 01:00 EST): 07:00 EST is 12:00 UTC.
        ("America/New_York", utc(2026, 11, 1, 3, 0), NIGHT, utc(2026, 11, 1, 12, 0)),
        # A window ending in the skipped hour ends when the clock jumps past it.
        (
            "America/New_York",
            utc(2026, 3, 8, 5, 0),
            QuietHours(start=time(0), end=time(2, 30)),
            utc(2026, 3, 8, 7, 0),
        ),
        # A window ending in the repeated hour ends at its first occurrence (EDT).
        (
            "America/New_York",
            utc(2026, 11, 1, 5, 0),
            QuietHours(start=time(0), end=time(1, 30)),
            utc(2026, 11, 1, 5, 30),
        ),
        ("Europe/London", utc(2026, 6, 1, 11, 30), LUNCH, utc(2026, 6, 1, 12, 30)),
    ],
)
def test_quiet_hours_end_at_the_local_end_of_the_window(
    zone: str, moment: datetime, quiet: QuietHours, end: datetime | None
) -> None:
    found = quiet_hours_end(moment, ZoneInfo(zone), quiet)
    assert found == end
    if found is not None:
        assert not in_quiet_hours(found, ZoneInfo(zone), quiet)  # deciding again there lets it through
        assert in_quiet_hours(found - timedelta(seconds=1), ZoneInfo(zone), quiet)


@pytest.mark.parametrize(
    ("zone", "moment", "hour", "within", "expected"),
    [
        ("Asia/Shanghai", utc(2026, 11, 22, 1, 0), 19, timedelta(hours=12), utc(2026, 11, 22, 11, 0)),
        ("Asia/Shanghai", utc(2026, 11, 22, 1, 0), 19, timedelta(hours=6), None),  # too far: now
        ("Asia/Shanghai", utc(2026, 11, 22, 12, 0), 19, timedelta(days=1), utc(2026, 11, 23, 11, 0)),
        ("Asia/Shanghai", utc(2026, 11, 22, 11, 20), 19, timedelta(days=1), None),  # inside the hour
        ("America/New_York", utc(2026, 3, 7, 20, 0), 9, timedelta(days=1), utc(2026, 3, 8, 13, 0)),
        ("America/New_York", utc(2026, 3, 8, 5, 0), 2, timedelta(days=1), utc(2026, 3, 8, 7, 0)),
    ],
)
def test_next_best_time(
    zone: str, moment: datetime, hour: int, within: timedelta, expected: datetime | None
) -> None:
    assert next_best_time(moment, ZoneInfo(zone), hour, within) == expected


def test_a_bad_best_hour_is_named() -> None:
    with pytest.raises(ValueError, match="best hour must be 0-23, got 24"):
        next_best_time(utc(2026, 1, 1), ZoneInfo("UTC"), 24, timedelta(hours=1))


SHANGHAI_23H = utc(2026, 11, 22, 15, 0)


@pytest.mark.parametrize(
    ("plan", "best_hour", "chosen", "action", "at", "reason"),
    [
        (DeliveryPlan(), None, None, "now", None, ""),
        (
            DeliveryPlan(quiet_hours=NIGHT),
            None,
            None,
            "defer",
            utc(2026, 11, 22, 23, 0),
            "quiet hours 22:00-07:00",
        ),
        (
            DeliveryPlan(quiet_hours=NIGHT.model_copy(update={"action": "drop"})),
            None,
            None,
            "drop",
            None,
            "dropped",
        ),
        (DeliveryPlan(quiet_hours=NIGHT, bypass=frozenset({"quiet_hours"})), None, None, "now", None, ""),
        # Best hour 09:00 Shanghai is 01:00 UTC tomorrow, but quiet hours come first.
        (
            DeliveryPlan(best_time=BestTime(within=timedelta(hours=12))),
            9,
            None,
            "defer",
            utc(2026, 11, 23, 1, 0),
            "best send time 09:00",
        ),
        (DeliveryPlan(best_time=BestTime(within=timedelta(hours=12))), None, None, "now", None, ""),
        # A best hour inside quiet hours is ignored rather than breaking them.
        (
            DeliveryPlan(best_time=BestTime(within=timedelta(hours=12)), quiet_hours=LUNCH),
            12,
            None,
            "now",
            None,
            "",
        ),
        # A moment chosen earlier stands, and once reached lets the delivery through.
        (
            DeliveryPlan(best_time=BestTime(within=timedelta(hours=12))),
            20,
            utc(2026, 11, 22, 16, 0),
            "defer",
            utc(2026, 11, 22, 16, 0),
            "best send time",
        ),
        (
            DeliveryPlan(best_time=BestTime(within=timedelta(hours=12))),
            20,
            utc(2026, 11, 22, 15, 0),
            "now",
            None,
            "",
        ),
    ],
)
def test_plan_timing(
    plan: DeliveryPlan,
    best_hour: int | None,
    chosen: datetime | None,
    action: str,
    at: datetime | None,
    reason: str,
) -> None:
    timing = plan_timing(SHANGHAI_23H, "Asia/Shanghai", plan, best_hour, chosen)
    assert (timing.action, timing.at) == (action, at)
    assert reason in timing.reason


def test_a_delivery_deferred_by_a_rule_is_let_through_by_it_at_its_time() -> None:
    plan = DeliveryPlan(quiet_hours=NIGHT, best_time=BestTime(within=timedelta(hours=12)))
    first = plan_timing(SHANGHAI_23H, "Asia/Shanghai", plan, best_hour=None)
    assert first.action == "defer" and first.at is not None
    assert plan_timing(first.at, "Asia/Shanghai", plan, best_hour=None).action == "now"
    # At 07:00 the best hour (08:00) is ahead: best time defers once and remembers its choice...
    second = plan_timing(first.at, "Asia/Shanghai", plan, best_hour=8)
    assert second.action == "defer" and second.best_time == utc(2026, 11, 23, 0, 0)
    # ...and at that moment, even if the history now says 09:00, the remembered choice lets it go.
    assert plan_timing(second.best_time, "Asia/Shanghai", plan, 9, second.best_time).action == "now"
