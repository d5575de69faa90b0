"""When to send a decided delivery: quiet hours and best send time, in the recipient's own timezone.

Pure functions of the plan, the clock and the user's history, so every timezone and daylight-saving
case can be tested without services. A deferred delivery is decided again at its time; each rule is
written so that, at the time it chose, it lets the delivery through instead of deferring it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from records.plan import BestTime, DeliveryPlan, QuietHours


@dataclass(frozen=True)
class Timing:
    """What timing says about one delivery: send `now`, `defer` to `at`, or `drop`; and why."""

    action: Literal["now", "defer", "drop"]
    at: datetime | None = None
    reason: str = ""
    best_time: datetime | None = None
    """A best-time moment chosen now, to be remembered for this message."""


NOW = Timing("now")


def in_quiet_hours(moment: datetime, zone: ZoneInfo, quiet: QuietHours) -> bool:
    """True when `moment`, read on the recipient's wall clock, falls in [start, end)."""
    local = moment.astimezone(zone).time().replace(tzinfo=None)
    start, end = quiet.start, quiet.end
    if start == end:
        return False  # an empty window, not a day-long one
    if start < end:
        return start <= local < end
    return local >= start or local < end  # the window spans midnight


def quiet_hours_end(moment: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime | None:
    """When the quiet window holding `moment` ends (UTC), or None if `moment` is not in one."""
    if not in_quiet_hours(moment, zone, quiet):
        return None
    local = moment.astimezone(zone)
    day = local.date()
    if quiet.start > quiet.end and local.time().replace(tzinfo=None) >= quiet.start:
        day += timedelta(days=1)  # in the evening part of a window that ends tomorrow morning
    return _wall_clock(day, quiet.end, zone)


def next_best_time(moment: datetime, zone: ZoneInfo, hour: int, within: timedelta) -> datetime | None:
    """The next start of local `hour` after `moment`, if it comes within `within`; None: send now.

    Within the best hour itself the answer is None, so a delivery deferred to that hour goes out then.
    """
    if not 0 <= hour <= 23:
        raise ValueError(f"best hour must be 0-23, got {hour}")
    local = moment.astimezone(zone)
    if local.hour == hour:
        return None
    target = _wall_clock(local.date(), time(hour), zone)
    if target <= moment:
        target = _wall_clock(local.date() + timedelta(days=1), time(hour), zone)
    return target if target - moment <= within else None


def plan_timing(
    now: datetime,
    timezone: str,
    plan: DeliveryPlan,
    best_hour: int | None = None,
    chosen_best_time: datetime | None = None,
) -> Timing:
    """Quiet hours first (defer to their end or drop), then best time; bypassed rules are skipped."""
    zone = ZoneInfo(timezone)
    quiet = plan.quiet_hours if "quiet_hours" not in plan.bypass else None
    if quiet is not None:
        end = quiet_hours_end(now, zone, quiet)
        if end is not None:
            window = f"quiet hours {quiet.start:%H:%M}-{quiet.end:%H:%M} {timezone}"
            if quiet.action == "drop":
                return Timing("drop", reason=f"{window}: dropped")
            return Timing("defer", at=end, reason=f"{window}: deferred until {end.isoformat()}")
    best = plan.best_time if "best_time" not in plan.bypass else None
    if best is not None:
        return _best_time(now, zone, best, quiet, best_hour, chosen_best_time)
    return NOW


def _best_time(
    now: datetime,
    zone: ZoneInfo,
    best: BestTime,
    quiet: QuietHours | None,
    best_hour: int | None,
    chosen: datetime | None,
) -> Timing:
    if chosen is not None:
        # A time was chosen for this message before: it stands, however the history moved since.
        if chosen <= now:
            return NOW
        return Timing("defer", at=chosen, reason=f"best send time: deferred until {chosen.isoformat()}")
    if best_hour is None:
        return NOW
    target = next_best_time(now, zone, best_hour, best.within)
    if target is None or (quiet is not None and in_quiet_hours(target, zone, quiet)):
        return NOW
    return Timing(
        "defer",
        at=target,
        reason=f"best send time {best_hour:02d}:00: deferred until {target.isoformat()}",
        best_time=target,
    )


def _wall_clock(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """`day` at `clock` in `zone`, as UTC. A repeated wall time means its first occurrence; one
    skipped by a spring-forward jump means the jump itself, the first moment past it."""
    naive = datetime.combine(day, clock)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _local(first, zone) == naive:
        return first
    # In the gap, fold=1 lands before the jump and fold=0 after it: search the jump to the second.
    low = int(naive.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    high = int(first.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _local(datetime.fromtimestamp(middle, UTC), zone) >= naive:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)
