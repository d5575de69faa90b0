"""Charts as SVG drawn on the server: no script, no chart library, readable without JavaScript.

Every label is escaped; colours come from CSS classes (`static/console.css`), so the page's
Content-Security-Policy needs no inline style.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 120
VALUE_WIDTH = 70


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, width: int = 520,
              series: str = "s0") -> Markup:
    """Horizontal bars, one per (label, value), longest value full width; `series` picks the colour
    class. An empty chart says so instead of drawing nothing."""
    height = max(1, len(bars)) * (BAR_HEIGHT + GAP) + GAP
    room = width - LABEL_WIDTH - VALUE_WIDTH
    top = max((value for _, value in bars), default=0.0)
    parts = [
        f'<svg class="chart bar-chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    if not bars:
        parts.append(f'<text class="chart-empty" x="{GAP}" y="{BAR_HEIGHT}">–</text>')
    for index, (label, value) in enumerate(bars):
        y = GAP + index * (BAR_HEIGHT + GAP)
        length = 0.0 if top <= 0 else max(1.0, room * value / top) if value > 0 else 0.0
        baseline = f"{y + BAR_HEIGHT * 0.7:.1f}"
        parts.append(
            f'<g class="bar"><text class="chart-label" x="{LABEL_WIDTH - GAP}" y="{baseline}" '
            f'text-anchor="end">{escape(label)}</text>'
            f'<rect class="chart-bar {escape(series)}" x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" '
            f'height="{BAR_HEIGHT}"><title>{escape(label)}: {_number(value)}</title></rect>'
            f'<text class="chart-value" x="{LABEL_WIDTH + length + 6:.1f}" y="{baseline}">'
            f"{_number(value)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  every piece of text in it went through escape()


def grouped_bar_chart(groups: Sequence[tuple[str, Sequence[float]]], series: Sequence[str], *, title: str,
                      width: int = 640) -> Markup:
    """Vertical bars: one group per (label, values), one bar per series in it (same order as `series`,
    coloured `s0`, `s1`...), scaled to the largest value; a legend under the chart names the series."""
    plot_top, plot_height, legend_row = 10, 160, 18
    label_room = 22
    legend_rows = (len(series) + 3) // 4
    height = plot_top + plot_height + label_room + legend_rows * legend_row + GAP
    top = max((value for _, values in groups for value in values), default=0.0)
    slot = (width - 2 * GAP) / max(1, len(groups))
    bar = max(2.0, min(26.0, (slot - 2 * GAP) / max(1, len(series))))
    parts = [
        f'<svg class="chart grouped-chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    base = plot_top + plot_height
    parts.append(f'<line class="chart-axis" x1="{GAP}" y1="{base}" x2="{width - GAP}" y2="{base}"/>')
    if not groups:
        parts.append(f'<text class="chart-empty" x="{GAP}" y="{base - GAP}">–</text>')
    for index, (label, values) in enumerate(groups):
        left = GAP + index * slot + (slot - bar * len(series)) / 2
        for number, value in enumerate(values):
            tall = 0.0 if top <= 0 or value <= 0 else max(1.0, plot_height * value / top)
            x = left + number * bar
            parts.append(
                f'<rect class="chart-bar s{number % 6}" x="{x:.1f}" y="{base - tall:.1f}" '
                f'width="{bar - 1:.1f}" height="{tall:.1f}"><title>{escape(label)} · '
                f"{escape(series[number])}: {_number(value)}</title></rect>"
            )
        parts.append(
            f'<text class="chart-label" x="{GAP + index * slot + slot / 2:.1f}" y="{base + 15}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    for number, name in enumerate(series):
        x = GAP + (number % 4) * (width - 2 * GAP) / 4
        y = base + label_room + (number // 4) * legend_row
        parts.append(
            f'<rect class="chart-bar s{number % 6}" x="{x:.1f}" y="{y}" width="10" height="10"/>'
            f'<text class="chart-label" x="{x + 14:.1f}" y="{y + 9}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  every piece of text in it went through escape()


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"
