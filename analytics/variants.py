"""The variant report of one rule: does any variant do better than doing nothing (or than the first)?

Recipients are counted by intention to treat: every message the rule decided in the period with a
variant (a decided, held_out, suppressed or deferred row) counts for that variant, whatever happened
next (sent, suppressed for want of a channel, capped, held out), because the split by hash is the
only thing that makes the arms comparable. A recipient is delivered, engaged (opened, read or
clicked) or converted when a row of that status exists for its message at any time since the start
of the period (conversions come days later).

Everything is computed in ClickHouse in one query: the per-message pass, the per-variant counts, the
Wilson interval of each conversion rate, and against the baseline (the control share, else the
first variant) the relative lift with its interval (the log method for a ratio of two proportions)
and the p-value of a two-sided two-proportion z-test (pooled), from `erfc`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from rich import box
from rich.console import Console
from rich.table import Table

from analytics.report import print_whole
from settings.errors import SwitchboardError

Z95 = 1.959963984540054
"""The two-sided 95 % quantile of the standard normal distribution."""

ENGAGED = ("opened", "read", "clicked")

DECISIONS = ("decided", "held_out", "suppressed", "deferred")
"""The statuses decide records with the rule and variant: a message is the rule's recipient in the
period when one of them falls in it (a later `converted` row carries the variant too, but is no
decision)."""

# Per message of the rule: its variant (the last decision's, should a reload have changed it),
# whether it was held out, and whether it reached each outcome; HAVING keeps the messages the rule
# decided in the period. Every stage writes the rule on a message's later rows (sends, receipts,
# reads, clicks, conversions), so only rows of this rule, or of none (a receipt posted without it),
# are read: one pass, the other rules' rows skipped on the rule column.
_PER_VARIANT = """
SELECT
    assigned               AS variant,
    count()                AS recipients,
    max(held)              AS control,
    sum(delivered)         AS delivered,
    sum(engaged)           AS engaged,
    sum(converted)         AS converted
FROM (
    SELECT
        message_id,
        argMaxIf(variant, event_time, rule_id = {rule:String} AND variant != ''
                 AND status IN DECISIONS)                    AS assigned,
        max(status = 'held_out')                             AS held,
        max(status = 'delivered')                            AS delivered,
        max(status IN ('opened', 'read', 'clicked'))         AS engaged,
        max(status = 'converted')                            AS converted
    FROM message_events
    WHERE event_time >= {since:DateTime64(3, 'UTC')} AND rule_id IN ({rule:String}, '')
    GROUP BY message_id
    HAVING countIf(rule_id = {rule:String} AND variant != '' AND status IN DECISIONS
                   AND event_time < {until:DateTime64(3, 'UTC')}) > 0
)
GROUP BY assigned
""".replace("DECISIONS", "(" + ", ".join(f"'{status}'" for status in DECISIONS) + ")")

# The statistics over the few per-variant rows, the baseline's counts spread to every row by window.
_REPORT = """
WITH Z95 AS z
SELECT
    variant, control, recipients, delivered, engaged, converted, baseline,
    rate, rate_low, rate_high,
    if(is_base OR base_rate = 0, NULL, rate / base_rate - 1) AS lift,
    if(is_base OR converted = 0 OR base_x = 0, NULL,
       exp(log(rate / base_rate) - z * log_se) - 1)        AS lift_low,
    if(is_base OR converted = 0 OR base_x = 0, NULL,
       exp(log(rate / base_rate) + z * log_se) - 1)        AS lift_high,
    if(is_base OR pooled_se = 0, NULL, erfc(abs(rate - base_rate) / pooled_se / sqrt(2))) AS p_value
FROM (
    SELECT *,
        sqrt(1 / converted - 1 / recipients + 1 / base_x - 1 / base_n) AS log_se,
        sqrt(pooled * (1 - pooled) * (1 / recipients + 1 / base_n))   AS pooled_se
    FROM (
        SELECT *,
            variant = baseline                                         AS is_base,
            sumIf(recipients, is_base) OVER ()                         AS base_n,
            sumIf(converted, is_base) OVER ()                          AS base_x,
            base_x / base_n                                            AS base_rate,
            (converted + base_x) / (recipients + base_n)               AS pooled,
            converted / recipients                                     AS rate,
            (rate + z * z / (2 * recipients)
                - z * sqrt(rate * (1 - rate) / recipients + z * z / (4 * recipients * recipients)))
                / (1 + z * z / recipients)                             AS rate_low,
            (rate + z * z / (2 * recipients)
                + z * sqrt(rate * (1 - rate) / recipients + z * z / (4 * recipients * recipients)))
                / (1 + z * z / recipients)                             AS rate_high
        FROM (
            SELECT *,
                if(max(control) OVER () = 1, anyIf(variant, control = 1) OVER (),
                   if(countIf(variant = {first:String}) OVER () > 0, {first:String},
                      min(variant) OVER ()))                           AS baseline
            FROM (PER_VARIANT)
        )
    )
)
ORDER BY is_base DESC, variant
""".replace("Z95", repr(Z95)).replace("PER_VARIANT", _PER_VARIANT)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class VariantLine:
    """One variant of the rule: its recipients, outcomes, conversion rate and lift over the baseline."""

    variant: str
    control: bool
    recipients: int
    delivered: int
    engaged: int
    converted: int
    rate: float
    """Converted recipients / recipients."""
    rate_low: float
    rate_high: float
    """The 95 % Wilson interval of the rate."""
    lift: float | None
    """rate / baseline rate - 1; None for the baseline itself, or when the baseline converted nobody."""
    lift_low: float | None
    lift_high: float | None
    """The 95 % interval of the lift (log method); None where either side converted nobody."""
    p_value: float | None
    """Two-sided two-proportion z-test against the baseline; None for the baseline."""


@dataclass(frozen=True)
class VariantReport:
    rule: str
    since: datetime
    until: datetime | None
    baseline: str
    """The control share, else the first variant; '' when the rule decided nothing in the period."""
    lines: tuple[VariantLine, ...]

    def line(self, variant: str) -> VariantLine:
        found = next((line for line in self.lines if line.variant == variant), None)
        if found is None:
            known = ", ".join(line.variant for line in self.lines) or "none"
            raise KeyError(f"rule {self.rule} has no variant {variant!r} in this period (has: {known})")
        return found


def variant_report(
    client: Client,
    rule: str,
    since: datetime,
    until: datetime | None = None,
    first: str = "",
) -> VariantReport:
    """The report of `rule` for the messages it decided in [since, until); `first` names the baseline
    when the rule has no control share (else the variant first by name is)."""
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"variant report: {name}={moment.isoformat()} needs a timezone offset")
    parameters: dict[str, Any] = {"rule": rule, "since": since, "until": until or _FAR, "first": first}
    result = client.query(_REPORT, parameters=parameters)
    lines = tuple(_line(dict(zip(result.column_names, row, strict=True))) for row in result.result_rows)
    baseline = str(result.result_rows[0][result.column_names.index("baseline")]) if lines else ""
    return VariantReport(rule=rule, since=since, until=until, baseline=baseline, lines=lines)


def _line(row: dict[str, Any]) -> VariantLine:
    def number(key: str) -> float | None:
        value = row[key]
        return None if value is None or math.isnan(value) else float(value)

    return VariantLine(
        variant=str(row["variant"]),
        control=bool(row["control"]),
        recipients=int(row["recipients"]),
        delivered=int(row["delivered"]),
        engaged=int(row["engaged"]),
        converted=int(row["converted"]),
        rate=float(row["rate"]),
        rate_low=float(row["rate_low"]),
        rate_high=float(row["rate_high"]),
        lift=number("lift"),
        lift_low=number("lift_low"),
        lift_high=number("lift_high"),
        p_value=number("p_value"),
    )


def as_dict(report: VariantReport) -> dict[str, Any]:
    """JSON-ready: rates and lifts as fractions (0.05 is 5 %), None where undefined."""
    return {
        "rule": report.rule,
        "since": report.since.isoformat(),
        "until": report.until.isoformat() if report.until else None,
        "baseline": report.baseline,
        "variants": [asdict(line) for line in report.lines],
    }


COLUMNS: Sequence[str] = (
    "variant", "control", "recipients", "delivered", "engaged", "converted", "rate", "rate_low",
    "rate_high", "lift", "lift_low", "lift_high", "p_value",
)


def as_csv(report: VariantReport) -> str:
    """One line per variant with a header; empty cells where a figure is undefined."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rule", "baseline", *COLUMNS])
    for line in report.lines:
        values = asdict(line)
        cells = ("" if values[column] is None else values[column] for column in COLUMNS)
        writer.writerow([report.rule, report.baseline, *cells])
    return out.getvalue()


_AGO = re.compile(r"^(\d+)([mhdw])$")
_AGO_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1),
              "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `12h`, `7d`, `2w` before `now`, or an ISO date or time (UTC unless it has an offset)."""
    match = _AGO.match(text.strip())
    if match:
        return now - int(match.group(1)) * _AGO_UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SwitchboardError(
            f"--since {text!r}: write how far back (30m, 12h, 7d, 2w) or a date or time (2026-11-01)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def render_table(report: VariantReport) -> Table:
    """Rates with their intervals, lift with its interval and p-value; the baseline's line comes first."""
    until = f" to {report.until:%Y-%m-%d %H:%M}" if report.until else ""
    table = Table(
        title=f"Variants of rule {report.rule}, decided since {report.since:%Y-%m-%d %H:%M} UTC{until}",
        caption=f"lift against {report.baseline}; intervals are 95 %",
        box=box.SIMPLE_HEAD,
    )
    for name in ("variant", "recipients", "delivered", "engaged", "converted", "rate", "rate 95 %",
                 "lift", "lift 95 %", "p-value"):
        table.add_column(name, justify="left" if name == "variant" else "right", no_wrap=True)
    for line in report.lines:
        label = line.variant + (" (control)" if line.control else "")
        low, high = line.lift_low, line.lift_high
        lift_range = "-" if low is None else f"{_signed(low)} .. {_signed(high)}"
        table.add_row(
            label, f"{line.recipients:,}", f"{line.delivered:,}", f"{line.engaged:,}", f"{line.converted:,}",
            _percent(line.rate), f"{_percent(line.rate_low)} .. {_percent(line.rate_high)}",
            _signed(line.lift), lift_range, "-" if line.p_value is None else f"{line.p_value:.3g}",
        )
    return table


def print_table(report: VariantReport, console: Console | None = None) -> None:
    """Printed whole, at its own width if the terminal is narrower (as the reach report is)."""
    console = console or Console()
    if not report.lines:
        since = report.since.isoformat()
        console.print(f"rule {report.rule} decided no message with a variant since {since}")
        return
    print_whole(render_table(report), console)


def require_events(client: Client) -> None:
    """A clear error, not an engine one, when the analytics hold no message_events table yet."""
    if not client.command("EXISTS TABLE message_events"):
        raise SwitchboardError(
            "no analytics yet (no message_events table): they are written once Switchboard has run"
        )
