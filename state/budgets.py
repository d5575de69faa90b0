"""Budgets per app or campaign and period, and what was spent against them, counted at send.

A budget caps what an app (or one campaign of it) may spend per day, week, month or in total, in the
providers' cost unit (the `cost` of a send: `cost_per_message` or the adapter's per-segment price).
Periods are calendar periods in the budget's timezone, taken from the real clock, never from a time a
caller passes in: the counters expire by Redis's own clock a little after their period ends.

Redis layout: `sb:{budgets}:defs` one hash, `app/campaign/period` -> the budget as JSON (a handful of
records, read by every stage and cached briefly). Spending is an integer of micro-units (1e-6 of the
unit; INCRBY, no float drift) per budget and period, `sb:budget:{app}:spent:<campaign>:<period>:<key>`;
`sb:budget:{app}:counted:<message>:<channel>:<step>` marks a send counted, so a redelivered or
re-recorded send never counts twice. Both carry the app's hash tag: the counting script touches one
Redis Cluster slot.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from records.vocabulary import Name
from state.keyspace import tag
from state.scripts import LuaScript

Period = Literal["day", "week", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "total")
MICROS = 1_000_000
"""Micro-units per unit of cost: counters are integers of these."""
DEFAULT_TIMEZONE = "Asia/Shanghai"
_DEFS = "sb:{budgets}:defs"
# A counter outlives its period by this much, so a send recorded just after the turn of the period
# (it was checked before) still finds its period's counter, and `show` can report the last period.
EXPIRY_MARGIN = timedelta(days=2)
_NO_CAMPAIGN = "-"

# KEYS[1] the send's counted-marker, KEYS[2..] the counters; ARGV[1] the marker's TTL, ARGV[2] the
# amount, ARGV[3..] each counter's expiry (unix seconds; 0: never). Counting only when the marker was
# absent makes a second run (a redelivery, a retried pipeline, NOSCRIPT's re-run) count nothing.
_COUNT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[2])
  if ARGV[i + 1] ~= '0' then redis.call('EXPIREAT', KEYS[i], ARGV[i + 1]) end
end
return 1
"""
COUNT_SCRIPT = LuaScript(_COUNT)


class BudgetError(ValueError):
    """A budget that cannot be set: the message names the field and why."""


class Budget(BaseModel):
    """At most `limit` (in `currency`, the providers' cost unit) per `period` for an app or a campaign."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app: Name
    campaign: Name | None = None
    """None: everything the app sends; else only this campaign of it."""
    period: Period
    limit_micros: int = Field(ge=1, le=10**18)
    currency: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z]+$")] = "CNY"
    warn_at: float = Field(0.8, gt=0, le=1)
    """The share of the limit from which the budget is `near`: rules may then prefer a cheaper channel."""
    timezone: str = DEFAULT_TIMEZONE

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value

    @property
    def id(self) -> str:
        return budget_id(self.app, self.campaign, self.period)

    @property
    def scope(self) -> str:
        return f"app {self.app}" + (f" campaign {self.campaign}" if self.campaign else "")

    @property
    def limit(self) -> float:
        return self.limit_micros / MICROS

    def applies_to(self, app: str, campaign: str) -> bool:
        return app == self.app and (self.campaign is None or self.campaign == campaign)

    def counter(self, window: PeriodWindow) -> str:
        return f"sb:budget:{tag(self.app)}:spent:{self.campaign or _NO_CAMPAIGN}:{self.period}:{window.key}"


def budget_id(app: str, campaign: str | None, period: str) -> str:
    return f"{app}/{campaign or _NO_CAMPAIGN}/{period}"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}: use an IANA name, e.g. Asia/Shanghai or UTC") from None


def to_micros(amount: float) -> int:
    """An amount of the cost unit as integer micro-units (what the counters hold)."""
    return round(amount * MICROS)


@dataclass(frozen=True)
class PeriodWindow:
    """One period of a budget: its counter's key part, its start and its end (None: `total`)."""

    key: str
    start: datetime | None
    end: datetime | None


_TOTAL = PeriodWindow("total", None, None)
_LATEST: dict[tuple[str, str], PeriodWindow] = {}
"""The last window computed per period and timezone: every send asks, and it changes once a day."""


def period_window(period: Period, timezone: str, at: datetime) -> PeriodWindow:
    """The calendar period holding `at`, in `timezone`; weeks start on Monday (ISO weeks)."""
    if period == "total":
        return _TOTAL
    latest = _LATEST.get((period, timezone))
    if latest is not None and latest.start is not None and latest.end is not None and (
        latest.start <= at < latest.end
    ):
        return latest
    window = _LATEST[(period, timezone)] = _window(period, timezone, at)
    return window


def _window(period: Period, timezone: str, at: datetime) -> PeriodWindow:
    local = at.astimezone(zone(timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end, key = midnight, _add_days(midnight, 1), midnight.strftime("%Y-%m-%d")
    elif period == "week":
        start = _add_days(midnight, -local.weekday())
        year, week, _ = local.isocalendar()
        end, key = _add_days(start, 7), f"{year}-W{week:02d}"
    else:
        start = midnight.replace(day=1)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        end, key = start.replace(year=year, month=month), start.strftime("%Y-%m")
    return PeriodWindow(key, start, end)


def _add_days(midnight: datetime, days: int) -> datetime:
    # Through the calendar date, not by adding hours: a day with a DST change is 23 or 25 hours long.
    day = (midnight.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=midnight.tzinfo)
    return day.astimezone(UTC).astimezone(midnight.tzinfo)


@dataclass(frozen=True)
class Standing:
    """A budget in its current period: spent so far (micro-units) against its limit."""

    budget: Budget
    window: PeriodWindow
    spent_micros: int

    @property
    def remaining_micros(self) -> int:
        return max(self.budget.limit_micros - self.spent_micros, 0)

    def state(self, extra_micros: int = 0) -> Literal["ok", "near", "over"]:
        """`over` when `extra_micros` more would pass the limit; `near` when it would reach `warn_at`."""
        after = self.spent_micros + extra_micros
        if after > self.budget.limit_micros or (extra_micros == 0 and after >= self.budget.limit_micros):
            return "over"
        if after >= self.budget.warn_at * self.budget.limit_micros:
            return "near"
        return "ok"

    def describe(self, extra_micros: int = 0) -> str:
        """`budget shop/bf/day: spent 0.45 of 0.5 CNY (2026-11-30)` for reasons and listings."""
        budget = self.budget
        spent = f"{self.spent_micros / MICROS:g}"
        cost = f" + {extra_micros / MICROS:g}" if extra_micros else ""
        limit = f"{budget.limit:g} {budget.currency}"
        return f"budget {budget.id}: spent {spent}{cost} of {limit} ({self.window.key})"

    def as_dict(self) -> dict[str, object]:
        budget = self.budget
        return {
            **budget.model_dump(mode="json"),
            "id": budget.id,
            "limit": budget.limit,
            "period_key": self.window.key,
            "period_start": self.window.start.isoformat() if self.window.start else None,
            "period_end": self.window.end.isoformat() if self.window.end else None,
            "spent": self.spent_micros / MICROS,
            "remaining": self.remaining_micros / MICROS,
            "state": self.state(),
        }


class BudgetStore:
    """Budgets' definitions and their counters. `cache_seconds`: how long a stage trusts definitions it
    read (a changed budget reaches the workers within it)."""

    def __init__(
        self, redis: Redis, *, cache_seconds: float = 0.0, counted_ttl_seconds: int = 7 * 86400
    ) -> None:
        self._redis = redis
        self._cache_seconds = cache_seconds
        self._counted_ttl = counted_ttl_seconds
        self._cached: tuple[float, list[Budget]] | None = None
        self._read: dict[str, tuple[float, Standing]] = {}

    async def set(self, budget: Budget) -> Budget | None:
        """Create or replace the budget of its scope and period; returns the one it replaced."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hget(_DEFS, budget.id)
            pipe.hset(_DEFS, budget.id, budget.model_dump_json())
            before, _ = await pipe.execute()
        self._cached = None
        return Budget.model_validate_json(before) if before else None

    async def get(self, app: str, campaign: str | None, period: str) -> Budget | None:
        raw = await self._redis.hget(_DEFS, budget_id(app, campaign, period))
        return Budget.model_validate_json(raw) if raw else None

    async def remove(self, app: str, campaign: str | None, period: str) -> Budget | None:
        """Remove the budget; a `total` budget's counter goes too (it has no period to expire with)."""
        budget = await self.get(app, campaign, period)
        if budget is None:
            return None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hdel(_DEFS, budget.id)
            if budget.period == "total":
                pipe.delete(budget.counter(period_window("total", budget.timezone, _now())))
            await pipe.execute()
        self._cached = None
        return budget

    async def all(self) -> list[Budget]:
        """Every budget, by id; cached for `cache_seconds`."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        raw = await self._redis.hgetall(_DEFS)
        budgets = sorted((Budget.model_validate_json(v) for v in raw.values()), key=lambda b: b.id)
        self._cached = (time.monotonic(), budgets)
        return budgets

    async def applying(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[Budget]]:
        """The budgets each (app, campaign) is under; pairs under none are left out."""
        budgets = await self.all()
        if not budgets:
            return {}
        found: dict[tuple[str, str], list[Budget]] = {}
        for app, campaign in set(pairs):
            under = [b for b in budgets if b.applies_to(app, campaign)]
            if under:
                found[(app, campaign)] = under
        return found

    async def standings(self, budgets: Sequence[Budget], max_age: float = 0.0) -> list[Standing]:
        """Each budget's current period and spending, read in one round trip (one GET per counter: a
        cluster pipeline splits them by slot, where MGET across apps could not). A standing read less
        than `max_age` seconds ago, in the same period, is not read again."""
        if not budgets:
            return []
        now, clock = _now(), time.monotonic()
        windows = [period_window(b.period, b.timezone, now) for b in budgets]
        fresh: dict[int, Standing] = {}
        for index, (budget, window) in enumerate(zip(budgets, windows, strict=True)):
            seen = self._read.get(budget.id)
            if seen is not None and clock - seen[0] < max_age and seen[1].window == window:
                fresh[index] = Standing(budget, window, seen[1].spent_micros)
        missing = [i for i in range(len(budgets)) if i not in fresh]
        if missing:
            async with self._redis.pipeline(transaction=False) as pipe:
                for index in missing:
                    pipe.get(budgets[index].counter(windows[index]))
                spent = await pipe.execute()
            for index, value in zip(missing, spent, strict=True):
                fresh[index] = Standing(budgets[index], windows[index], int(value or 0))
                if max_age > 0:
                    self._read[budgets[index].id] = (clock, fresh[index])
        return [fresh[i] for i in range(len(budgets))]

    def count_into(
        self, pipe: Pipeline, budgets: Sequence[Budget], send: tuple[str, str, int], amount_micros: int
    ) -> int:
        """Queue the counting of one send's cost against `budgets` (all of one app) on `pipe`, where the
        send's outcome is recorded; returns the number of answers added (0 or 1)."""
        if amount_micros <= 0 or not budgets:
            return 0
        app = budgets[0].app
        if any(b.app != app for b in budgets):
            raise ValueError(f"budgets of several apps for one send: {[b.id for b in budgets]}")
        now = _now()
        windows = [period_window(b.period, b.timezone, now) for b in budgets]
        marker = "sb:budget:{}:counted:{}:{}:{}".format(tag(app), *send)
        expiries = [int((w.end + EXPIRY_MARGIN).timestamp()) if w.end else 0 for w in windows]
        keys = [marker, *(b.counter(w) for b, w in zip(budgets, windows, strict=True))]
        COUNT_SCRIPT.queue(pipe, keys, [self._counted_ttl, amount_micros, *expiries])
        return 1

    async def add_spent(self, budget: Budget, amount_micros: int, window: PeriodWindow | None = None) -> None:
        """Add to a period's counter directly (tests and corrections; sends count through `count_into`)."""
        counter = budget.counter(window or period_window(budget.period, budget.timezone, _now()))
        await self._redis.incrby(counter, amount_micros)


def _now() -> datetime:
    # The real clock on purpose: periods and counters' expiry must agree with Redis's clock.
    return datetime.now(UTC)
