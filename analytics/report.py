"""The reach report: per channel, how many distinct messages reached each status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from rich import box
from rich.console import Console
from rich.table import Table

from records.topics import CHANNELS, STATUSES, Status
from settings import Settings
from settings.errors import SwitchboardError

# The columns of the rendered table; as_dict carries every status.
REPORT_STATUSES: tuple[Status, ...] = (
    "decided",
    "suppressed",
    "deferred",
    "capped",
    "sent",
    "delivered",
    "failed",
    "opened",
    "read",
    "clicked",
    "dead_lettered",
)
# The line of transitions with channel '': events dead-lettered or dropped as duplicates at ingest,
# and deliveries suppressed before any channel was chosen (no usable channel, a suppress rule).
NO_CHANNEL = "(no channel)"
TOTAL = "total"
_NO_DATA = "no analytics yet in"
_FIRST_RUN = "the analytics service creates them when it first runs (`switchboard analytics`)"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# uniqExact rather than FINAL: exact whether or not ReplacingMergeTree has merged duplicates yet.
_BY_CHANNEL = """
SELECT channel, status, uniqExact(message_id) FROM message_events
WHERE event_time >= {since:DateTime64(3, 'UTC')} AND ({app:String} = '' OR app = {app:String})
GROUP BY channel, status
"""
_BY_STATUS = """
SELECT status, uniqExact(message_id) FROM message_events
WHERE event_time >= {since:DateTime64(3, 'UTC')} AND ({app:String} = '' OR app = {app:String})
GROUP BY status
"""


@dataclass(frozen=True)
class ReachRow:
    """One line of the report: a channel (or NO_CHANNEL, or TOTAL) and distinct messages per status."""

    channel: str
    decided: int = 0
    suppressed: int = 0
    capped: int = 0
    deferred: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    opened: int = 0
    clicked: int = 0
    read: int = 0
    converted: int = 0
    dead_lettered: int = 0
    expired: int = 0
    held_out: int = 0
    pending_approval: int = 0
    approved: int = 0
    rejected: int = 0
    over_budget: int = 0
    erased: int = 0
    cancelled: int = 0
    recalled: int = 0

    @classmethod
    def from_counts(cls, channel: str, counts: Mapping[str, int]) -> ReachRow:
        by_status: dict[str, Any] = {status: counts.get(status, 0) for status in STATUSES}
        return cls(channel=channel, **by_status)

    def __getitem__(self, status: str) -> int:
        if status not in STATUSES:
            raise KeyError(f"{status!r} is not a status; known: {', '.join(STATUSES)}")
        count: int = getattr(self, status)
        return count


@dataclass(frozen=True)
class ReachReport:
    """Rows per channel, then totals; a total counts a message once even if it went on several channels."""

    since: datetime | None
    app: str | None
    rows: tuple[ReachRow, ...]
    totals: ReachRow

    def row(self, channel: str) -> ReachRow:
        """The line for `channel` (a channel name or NO_CHANNEL); all zeros if nothing happened there."""
        for row in self.rows:
            if row.channel == channel:
                return row
        return ReachRow(channel=channel)


def _parameters(since: datetime | None, app: str | None) -> dict[str, Any]:
    if since is not None and since.tzinfo is None:
        raise ValueError(f"reach report: since={since.isoformat()} needs a timezone offset")
    return {"since": since or _EPOCH, "app": app or ""}


def status_counts(
    client: Client, *, since: datetime | None = None, app: str | None = None
) -> dict[tuple[str, str], int]:
    """Distinct messages per (channel, status), channel '' as stored; duplicates never inflate them."""
    rows = client.query(_BY_CHANNEL, parameters=_parameters(since, app)).result_rows
    return {(str(channel), str(status)): int(count) for channel, status, count in rows}


def reach_report(client: Client, since: datetime | None = None, app: str | None = None) -> ReachReport:
    """One row per channel that saw any transition (known channels first, NO_CHANNEL last), plus totals."""
    by_channel: dict[str, dict[str, int]] = {}
    for (channel, status), count in status_counts(client, since=since, app=app).items():
        by_channel.setdefault(channel or NO_CHANNEL, {})[status] = count
    totals = {
        str(status): int(count)
        for status, count in client.query(_BY_STATUS, parameters=_parameters(since, app)).result_rows
    }
    order: dict[str, int] = {name: index for index, name in enumerate(CHANNELS)}
    lines = sorted(
        by_channel,
        key=lambda channel: (channel == NO_CHANNEL, order.get(channel, len(order)), channel),
    )
    return ReachReport(
        since=since,
        app=app,
        rows=tuple(ReachRow.from_counts(line, by_channel[line]) for line in lines),
        totals=ReachRow.from_counts(TOTAL, totals),
    )


def as_dict(report: ReachReport) -> dict[str, Any]:
    """JSON-ready form for `--json`: every status, zeros included."""

    def line(row: ReachRow) -> dict[str, Any]:
        return {"channel": row.channel, **{status: row[status] for status in STATUSES}}

    return {
        "since": report.since.isoformat() if report.since else None,
        "app": report.app,
        "rows": [line(row) for row in report.rows],
        "totals": line(report.totals),
    }


def render_table(report: ReachReport) -> Table:
    """A rich table for the CLI and the demo; its cells never wrap or shrink (see print_table)."""
    scope = [f"app {report.app}" if report.app else "all apps"]
    if report.since:
        scope.append(f"since {report.since.isoformat()}")
    table = Table(title=f"Reach ({', '.join(scope)}): distinct messages per status", box=box.SIMPLE_HEAD)
    table.add_column("channel", no_wrap=True)
    for status in REPORT_STATUSES:
        table.add_column(status.replace("_", " "), justify="right", no_wrap=True)
    for row in report.rows:
        table.add_row(row.channel, *(f"{row[status]:,}" for status in REPORT_STATUSES))
    table.add_section()
    table.add_row(TOTAL, *(f"{report.totals[status]:,}" for status in REPORT_STATUSES), style="bold")
    return table


def print_table(report: ReachReport, console: Console | None = None) -> None:
    """Print the table whole: wider than the terminal (or than the 80 columns rich assumes for a pipe),
    it is printed at its own width rather than with headers and counts cut to `…`."""
    print_whole(render_table(report), console)


def print_whole(table: Table, console: Console | None = None) -> None:
    """Print any report's table at its own width when wider than the terminal, rather than with cells
    cut to `…`."""
    console = console or Console()
    needed = console.measure(table, options=console.options.update_width(10_000)).maximum
    if needed > console.width:
        console = Console(
            file=console.file, width=needed, force_terminal=console.is_terminal, no_color=console.no_color
        )
    console.print(table)


def open_report_source(settings: Settings) -> Client:
    """The ClickHouse to report from: through the analytics service while it runs (`open_reader`); a
    SwitchboardError, not an engine error, while it holds no data yet."""
    from analytics.connection import open_reader, parse_dsn, service_listening

    target = parse_dsn(settings.clickhouse)
    served = service_listening(settings.analytics_host, settings.analytics_port, 2.0)
    if target.path is not None and not target.path.is_dir() and not served:
        raise SwitchboardError(f"{_NO_DATA} {target.safe_dsn}: {_FIRST_RUN}")
    client = open_reader(settings)
    if not client.command("EXISTS TABLE message_events"):
        raise SwitchboardError(f"{_NO_DATA} {target.safe_dsn} (no message_events table): {_FIRST_RUN}")
    return client
