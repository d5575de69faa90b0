"""Reach and conversion funnels: decided → sent → delivered → opened/read → clicked → converted, with
failures and cost, grouped by any of channel, provider, app, template, rule, campaign and variant, over a
period, optionally per day or hour. Computed in ClickHouse; rows come back typed.

Each message is first folded into one line (one per channel when the report groups by channel or
provider), so a receipt that does not repeat a message's template, rule or variant (an inbox read, a
provider's delivery report) still counts under the message's own. A message is counted in the
interval of its first transition in the period (a cohort), so every stage of a line is the same messages.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal, get_args
from weakref import WeakSet

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from settings.errors import SwitchboardError

Dimension = Literal["channel", "provider", "app", "template", "rule", "campaign", "variant"]
DIMENSIONS: Final[tuple[Dimension, ...]] = get_args(Dimension)
Interval = Literal["day", "hour"]
INTERVALS: Final[tuple[Interval, ...]] = get_args(Interval)
Source = Literal["raw", "rollup"]
SOURCES: Final[tuple[Source, ...]] = get_args(Source)
RAW_RETENTION: Final = timedelta(days=395)
"""About the 13 months message_events keeps (migration 007); a period starting earlier reads the rollup."""
STAGES: Final = ("decided", "sent", "delivered", "opened", "clicked", "converted")
"""The funnel in order; `opened` counts messages opened (email) or read (inbox, WeChat)."""
OUTCOMES: Final = ("failed", "suppressed", "capped")

_COLUMN: Final[dict[str, str]] = {d: "rule_id" if d == "rule" else d for d in DIMENSIONS}
_PER_CHANNEL: Final = frozenset({"channel", "provider"})
_REACHES: Final[dict[str, str]] = {  # when a row counts its message at a stage or outcome
    **{name: f"status = '{name}'" for name in (*STAGES, *OUTCOMES)},
    "opened": "status IN ('opened', 'read')",
}
_RELATIVE = re.compile(r"^(\d{1,5})([mhdw])$")
_UNITS: Final = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DEFAULT_SINCE: Final = timedelta(days=7)


class FunnelError(SwitchboardError, ValueError):
    """A funnel request that cannot be answered as asked: the message names the bad value, `parameter`
    the option or query parameter that carried it."""

    def __init__(self, message: str, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class FunnelQuery:
    """What to report: [since, until), grouped by `by`, for one app or all, per interval or whole."""

    since: datetime
    until: datetime
    by: tuple[Dimension, ...] = ()
    app: str | None = None
    interval: Interval | None = None
    source: Source = "raw"
    """`raw`: exact, from message_events. `rollup`: the daily rollup, kept 5 years; whole UTC days,
    distinct messages within about 1 %, each row under its own dimensions (not its message's)."""

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            if getattr(self, name).tzinfo is None:
                raise FunnelError(
                    f"funnel {name}={getattr(self, name).isoformat()} needs a timezone offset", name
                )
        if self.until <= self.since:
            raise FunnelError(
                f"funnel period is empty: until {self.until.isoformat()} is not after since "
                f"{self.since.isoformat()}",
                "until",
            )
        if self.source == "rollup" and self.interval == "hour":
            raise FunnelError(
                "hourly intervals need the raw rows, kept 13 months; the rollup is daily", "interval"
            )
        if len(set(self.by)) != len(self.by):
            raise FunnelError(f"funnel by={','.join(self.by)} names a dimension twice", "by")


@dataclass(frozen=True)
class FunnelRow:
    """One line of the funnel: its group's values (in `by` order), its interval start, distinct
    messages at each stage and outcome, and what the sends cost."""

    group: tuple[str, ...]
    bucket: datetime | None
    decided: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    converted: int
    failed: int
    suppressed: int
    capped: int
    cost: Decimal

    def rate(self, stage: str, of: str = "sent") -> float | None:
        """`stage` as a share of `of` (None when `of` is zero)."""
        base = int(getattr(self, of))
        return int(getattr(self, stage)) / base if base else None


COUNTS: Final = (*STAGES, *OUTCOMES)


@dataclass(frozen=True)
class FunnelReport:
    """The query and its rows, ordered by interval, then by messages decided (most first)."""

    query: FunnelQuery
    rows: tuple[FunnelRow, ...]

    def as_records(self) -> list[dict[str, Any]]:
        """Flat JSON/CSV-ready records: one key per dimension, `bucket`, every count, `cost`."""
        records: list[dict[str, Any]] = []
        for row in self.rows:
            record: dict[str, Any] = dict(zip(self.query.by, row.group, strict=True))
            if self.query.interval is not None:
                record["bucket"] = row.bucket.isoformat() if row.bucket else None
            record.update({name: getattr(row, name) for name in COUNTS})
            record["cost"] = str(row.cost)
            records.append(record)
        return records

    def as_dict(self) -> dict[str, Any]:
        query = self.query
        return {
            "since": query.since.isoformat(),
            "until": query.until.isoformat(),
            "by": list(query.by),
            "app": query.app,
            "interval": query.interval,
            "source": query.source,
            "stages": list(STAGES),
            "rows": self.as_records(),
        }


def parse_dimensions(text: str | Sequence[str] | None) -> tuple[Dimension, ...]:
    """`channel,app` → ('channel', 'app'); an unknown name is refused with the closest known one."""
    if text is None:
        return ()
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = [part.strip() for part in parts if part.strip()]
    chosen: list[Dimension] = []
    for name in names:
        if name not in DIMENSIONS:
            close = difflib.get_close_matches(name, DIMENSIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FunnelError(
                f"unknown dimension {name!r} in by{hint}; choose from {', '.join(DIMENSIONS)}", "by"
            )
        chosen.append(name)
    return tuple(chosen)


def parse_interval(text: str | None) -> Interval | None:
    if text is None or text == "":
        return None
    if text not in INTERVALS:
        raise FunnelError(f"unknown interval {text!r}; choose day or hour", "interval")
    return text


def parse_moment(text: str, now: datetime, name: str = "since") -> datetime:
    """`7d` (also m, h, w) before `now`, a date (`2026-11-01`, midnight UTC) or an ISO time (UTC unless
    it carries an offset)."""
    text = text.strip()
    if match := _RELATIVE.match(text):
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FunnelError(
            f"{name}={text!r} is not a time: give 7d, 12h, 30m, 2w, a date like 2026-11-01 or an ISO time",
            name,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def funnel_query(
    *,
    since: str | None,
    until: str | None,
    by: str | Sequence[str] | None = None,
    app: str | None = None,
    interval: str | None = None,
    source: str | None = None,
    now: datetime | None = None,
) -> FunnelQuery:
    """A FunnelQuery from what a person types (CLI options, query parameters); since defaults to 7 days."""
    now = now or datetime.now(UTC)
    start = parse_moment(since, now) if since else now - DEFAULT_SINCE
    if source not in (None, "", *SOURCES):
        raise FunnelError(f"unknown source {source!r}; choose raw or rollup", "source")
    chosen: Source = "rollup" if source == "rollup" or (not source and start < now - RAW_RETENTION) else "raw"
    return FunnelQuery(
        since=start,
        until=parse_moment(until, now, "until") if until else now,
        by=parse_dimensions(by),
        app=app or None,
        interval=parse_interval(interval),
        source=chosen,
    )


def _sql(query: FunnelQuery) -> str:
    per_channel = bool(_PER_CHANNEL & set(query.by))
    # Grouped by a 64-bit hash of the id (with the channel when the report splits a message by
    # channel): several times faster than by the string, a third faster than by hash and channel, and
    # two of a billion lines colliding has a chance of about 3 in 100 million.
    message_key = "cityHash64(message_id, channel)" if per_channel else "cityHash64(message_id)"
    # A message's own attributes (aliased d_*: ClickHouse would read an alias named like its column
    # inside the aggregate): the first non-empty value any of its rows carries. The provider is the
    # one that accepted the send, else any that tried it.
    known = {
        "channel": ["any(channel) AS d_channel"],
        "provider": [
            "argMinIf(provider, event_time, status = 'sent') AS sent_by",
            "if(sent_by != '', sent_by, anyIf(provider, provider != '')) AS d_provider",
        ],
    }
    # Only the attributes asked for: each is an aggregate over every row.
    attributes = [
        expression
        for d in query.by
        for expression in known.get(d, [f"anyIf({_COLUMN[d]}, {_COLUMN[d]} != '') AS d_{d}"])
    ]
    if query.interval:
        attributes.append("min(event_time) AS first_at")
    # One bit per stage or outcome (COUNTS order) OR-ed over the message's rows: a single aggregate
    # state per message instead of one max() each, so the 2 million-message fold is cheaper.
    reached = [
        "groupBitOr("
        + " + ".join(f"({_REACHES[name]}) * {1 << bit}" for bit, name in enumerate(COUNTS))
        + ") AS reached",
        "sum(cost) AS spent",
    ]
    bucket = {"day": "toStartOfDay(first_at)", "hour": "toStartOfHour(first_at)", None: "NULL"}[
        query.interval
    ]
    groups = [f"d_{d}" for d in query.by]
    # Only our own names and fixed expressions are formatted in; values travel as parameters.
    return (
        f"SELECT {''.join(g + ', ' for g in groups)}{bucket} AS bucket, "  # noqa: S608
        + ", ".join(f"sum(bitTest(reached, {bit})) AS n_{name}" for bit, name in enumerate(COUNTS))
        + ", sum(spent) "
        f"FROM (SELECT {message_key} AS message, "
        + ", ".join(attributes + reached)
        # FINAL: a redelivered receipt not merged yet would count its cost twice; the flags above
        # would be right without it.
        + " FROM message_events FINAL"
        " WHERE event_time >= {since:DateTime64(3, 'UTC')} AND event_time < {until:DateTime64(3, 'UTC')}"
        " AND ({app:String} = '' OR app = {app:String})"
        " GROUP BY message) "
        f"GROUP BY {', '.join([*groups, 'bucket'])} "
        f"ORDER BY bucket, n_decided DESC, n_sent DESC{''.join(', ' + g for g in groups)}"
    )


def _rollup_sql(query: FunnelQuery) -> str:
    """The funnel from message_rollup_daily: states of the same stage merged across days and groups."""
    groups = [f"{_COLUMN[d]} AS d_{d}" for d in query.by]
    bucket = "toDateTime(day, 'UTC')" if query.interval == "day" else "NULL"
    keys = [f"d_{d}" for d in query.by]
    return (
        f"SELECT {''.join(g + ', ' for g in groups)}{bucket} AS bucket, "  # noqa: S608 - our names only
        + ", ".join(f"uniqCombined64MergeIf(messages, {_REACHES[name]})" for name in COUNTS)
        + ", sum(cost) FROM message_rollup_daily"
        " WHERE day >= toDate({since:DateTime64(3, 'UTC')}) AND day <= toDate({until:DateTime64(3, 'UTC')})"
        " AND ({app:String} = '' OR app = {app:String})"
        f" GROUP BY {', '.join([*keys, 'bucket'])}"
        f" ORDER BY bucket, {COUNTS.index('decided') + len(keys) + 2} DESC{''.join(', ' + k for k in keys)}"
    )


# Parts merge only within a partition (a month of event_time), so FINAL need not merge across them and
# reads a fully merged month as it is: about a third less CPU on merged data, same rows.
_FINAL_WITHIN_PARTITIONS = " SETTINGS do_not_merge_across_partitions_select_final = 1"
_READ_ONLY: WeakSet[Client] = WeakSet()
"""Clients whose engine refused the setting: the analytics service's read-only reader, through which
the API and the command line read. They run the same query without it."""


def _query_raw(client: Client, sql: str, parameters: dict[str, Any]) -> Any:
    if client not in _READ_ONLY:
        try:
            return client.query(sql + _FINAL_WITHIN_PARTITIONS, parameters=parameters)
        except DatabaseError as exc:
            if "(READONLY)" not in str(exc):
                raise
            _READ_ONLY.add(client)
    return client.query(sql, parameters=parameters)


def funnel_report(client: Client, query: FunnelQuery) -> FunnelReport:
    """Run the funnel in ClickHouse; distinct messages per stage, exact whatever duplicates are stored."""
    parameters = {
        "since": query.since.astimezone(UTC),
        "until": query.until.astimezone(UTC),
        "app": query.app or "",
    }
    sql = _rollup_sql(query) if query.source == "rollup" else _sql(query)
    if query.source == "rollup":
        result = client.query(sql, parameters=parameters)
    else:
        result = _query_raw(client, sql, parameters)
    rows: list[FunnelRow] = []
    width = len(query.by)
    for line in result.result_rows:
        group = tuple(str(value) for value in line[:width])
        bucket = line[width]
        if isinstance(bucket, datetime) and bucket.tzinfo is None:
            bucket = bucket.replace(tzinfo=UTC)
        counts = {name: int(value) for name, value in zip(COUNTS, line[width + 1 :], strict=False)}
        cost = Decimal(str(line[-1])).normalize() if line[-1] else Decimal(0)
        rows.append(FunnelRow(group=group, bucket=bucket if query.interval else None, cost=cost, **counts))
    return FunnelReport(query=query, rows=tuple(rows))


FUNNEL_FIELDS: Final = tuple(f.name for f in fields(FunnelRow))
