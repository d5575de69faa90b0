"""The reach report as a table: whole at any terminal width, never cut to `…`."""

from __future__ import annotations

import io

from rich.console import Console

from analytics.report import ReachReport, ReachRow, print_table


def test_the_report_prints_whole_on_80_columns() -> None:
    rows = (ReachRow.from_counts("wechat_mp", {"decided": 123_456, "dead_lettered": 7}),)
    report = ReachReport(None, None, rows, ReachRow.from_counts("total", {"decided": 123_456}))
    out = io.StringIO()
    print_table(report, Console(file=out, width=80))
    text = out.getvalue()
    assert "…" not in text
    for word in ("channel", "suppressed", "delivered", "dead lettered", "wechat_mp", "123,456"):
        assert word in text
