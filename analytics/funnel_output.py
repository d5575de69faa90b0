"""The funnel as people read it: a table, JSON, CSV, or a PNG chart (matplotlib, Agg: no display)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from rich import box
from rich.table import Table

from analytics.funnel import COUNTS, STAGES, FunnelReport, FunnelRow
from analytics.report import print_whole

NONE_LABEL: Final = "(none)"
_TOP_GROUPS: Final = 12  # more bars or lines than this are unreadable; the rest are left out of the chart


def group_label(report: FunnelReport, row: FunnelRow) -> str:
    if not report.query.by:
        return "all"
    return " / ".join(value or NONE_LABEL for value in row.group)


def render_table(report: FunnelReport) -> Table:
    """A rich table: one line per group (and interval), every stage, outcome, conversion and cost."""
    query = report.query
    scope = f"app {query.app}" if query.app else "all apps"
    period = f"{query.since:%Y-%m-%d %H:%M} – {query.until:%Y-%m-%d %H:%M} UTC"
    table = Table(title=f"Funnel ({scope}, {period}): distinct messages", box=box.SIMPLE_HEAD)
    for dimension in query.by:
        table.add_column(dimension, no_wrap=True)
    if query.interval:
        table.add_column(query.interval, no_wrap=True)
    for count in COUNTS:
        table.add_column(count, justify="right", no_wrap=True)
    table.add_column("converted/sent", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    for row in report.rows:
        cells = [value or NONE_LABEL for value in row.group]
        if query.interval:
            cells.append(_bucket(row.bucket, query.interval))
        cells += [f"{getattr(row, name):,}" for name in COUNTS]
        rate = row.rate("converted")
        cells += ["–" if rate is None else f"{rate:.1%}", f"{row.cost:,.2f}"]
        table.add_row(*cells)
    return table


def as_json(report: FunnelReport) -> str:
    return json.dumps(report.as_dict(), ensure_ascii=False)


def as_csv(report: FunnelReport) -> str:
    """CSV with a header line; a spreadsheet formula in a group value is quoted as text."""
    records = report.as_records()
    header = [*report.query.by, *(["bucket"] if report.query.interval else []), *COUNTS, "cost"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: _cell(value) for key, value in record.items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    # A template or campaign name starting with = + - @ would run as a formula in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _bucket(bucket: datetime | None, interval: str) -> str:
    if bucket is None:
        return "–"
    return f"{bucket:%Y-%m-%d}" if interval == "day" else f"{bucket:%Y-%m-%d %H:00}"


def write_chart(report: FunnelReport, path: Path) -> Path:
    """A PNG: stacked funnel bars per group, or with an interval one line per stage over time."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no browser
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 6), dpi=100)
    try:
        if report.query.interval:
            _lines(report, axes)
        else:
            _bars(report, axes)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return path


def _title(report: FunnelReport) -> str:
    query = report.query
    scope = f"app {query.app}" if query.app else "all apps"
    by = f" by {', '.join(query.by)}" if query.by else ""
    return f"Funnel{by} ({scope}), {query.since:%Y-%m-%d %H:%M} – {query.until:%Y-%m-%d %H:%M} UTC"


def _bars(report: FunnelReport, axes: Any) -> None:
    """Each group one bar, split into the messages that stopped at each stage (a stacked funnel)."""
    rows = list(report.rows[:_TOP_GROUPS])
    labels = [group_label(report, row) for row in rows]
    bottoms = [0] * len(rows)
    for index, stage in enumerate(STAGES):
        later = STAGES[index + 1] if index + 1 < len(STAGES) else None
        # Messages that reached this stage and not the next; clamped since receipts may skip a stage.
        heights = [max(getattr(row, stage) - (getattr(row, later) if later else 0), 0) for row in rows]
        axes.bar(labels, heights, bottom=bottoms, label=f"stopped at {stage}" if later else stage)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    axes.set_ylabel("messages")
    axes.set_title(_title(report))
    axes.legend(loc="upper right", fontsize="small")
    axes.tick_params(axis="x", labelrotation=30)


def _lines(report: FunnelReport, axes: Any) -> None:
    """One line per stage over time, summed over groups (the groups are in the table, not the chart)."""
    buckets = sorted({row.bucket for row in report.rows if row.bucket is not None})
    totals: dict[str, list[int]] = {stage: [0] * len(buckets) for stage in STAGES}
    position = {bucket: i for i, bucket in enumerate(buckets)}
    for row in report.rows:
        if row.bucket is None:
            continue
        for stage in STAGES:
            totals[stage][position[row.bucket]] += int(getattr(row, stage))
    for stage in STAGES:
        axes.plot(buckets, totals[stage], marker="o", label=stage)
    axes.set_ylabel(f"messages per {report.query.interval}")
    axes.set_title(_title(report))
    axes.legend(loc="upper right", fontsize="small")
    axes.figure.autofmt_xdate()


def check_chart_path(path: Path) -> Path:
    """Refuse a chart path that cannot be a PNG file before any query runs."""
    from settings.errors import SwitchboardError

    if path.suffix.lower() != ".png":
        raise SwitchboardError(f"--chart {path}: charts are PNG files; name it with .png")
    if path.is_dir():
        raise SwitchboardError(f"--chart {path}: is a folder; give a file name ending in .png")
    return path


__all__: Sequence[str] = (
    "as_csv",
    "as_json",
    "check_chart_path",
    "print_whole",
    "render_table",
    "write_chart",
)
