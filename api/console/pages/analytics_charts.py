"""The Analytics page's charts, drawn on the server as SVG (no script): the funnel of each group as
horizontal bars per stage, and each variant's conversion rate with its 95 % interval. Every label is
escaped; the result is `Markup` for the template."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 640
LABEL = 150
ROW = 14
GAP = 10
MAX_GROUPS = 12
"""More groups than this are unreadable as bars: the chart shows the first (the largest) only."""


@dataclass(frozen=True)
class FunnelBars:
    """One group of the funnel: its label and its count at each stage (in the stages' order)."""

    label: str
    counts: Sequence[int]


def funnel_chart(groups: Sequence[FunnelBars], stages: Sequence[str], title: str) -> Markup:
    """Bars of each stage per group, all on one scale (the largest count), the count at each bar's end."""
    shown = list(groups[:MAX_GROUPS])
    if not shown:
        return Markup('<p class="chart-empty">–</p>')
    top = max((max(g.counts, default=0) for g in shown), default=0) or 1
    span = WIDTH - LABEL - 60
    block = ROW * len(stages) + GAP
    height = block * len(shown) + 20 + ROW * 2
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
             f'height="{height}" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for g, group in enumerate(shown):
        y0 = g * block
        parts.append(f'<text class="chart-label" x="0" y="{y0 + ROW}">{escape(group.label[:24])}</text>')
        for s, count in enumerate(group.counts):
            y = y0 + s * ROW
            width = round(span * count / top, 1)
            parts.append(f'<rect class="chart-bar s{s}" x="{LABEL}" y="{y + 2}" width="{width}" '
                         f'height="{ROW - 3}"><title>{escape(stages[s])}: {count}</title></rect>')
            parts.append(
                f'<text class="chart-value" x="{LABEL + width + 4}" y="{y + ROW - 2}">{count}</text>'
            )
    legend_y = block * len(shown) + ROW
    for s, stage in enumerate(stages):
        x = s * (WIDTH // max(len(stages), 1))
        parts.append(f'<rect class="chart-bar s{s}" x="{x}" y="{legend_y}" width="10" height="10"></rect>')
        parts.append(f'<text class="chart-label" x="{x + 14}" y="{legend_y + 10}">{escape(stage)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  every piece of text in it went through escape()


@dataclass(frozen=True)
class VariantRate:
    """A variant's conversion rate and its 95 % interval, as fractions."""

    label: str
    rate: float
    low: float
    high: float
    baseline: bool = False


def variant_chart(variants: Sequence[VariantRate], title: str) -> Markup:
    """Each variant's rate as a dot on a line from its interval's low to its high end, on one scale."""
    if not variants:
        return Markup('<p class="chart-empty">–</p>')
    top = max(v.high for v in variants) or 1.0
    span = WIDTH - LABEL - 70
    height = len(variants) * (ROW + GAP) + 10
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
             f'height="{height}" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for i, v in enumerate(variants):
        y = i * (ROW + GAP) + ROW
        low, high, at = (LABEL + span * x / top for x in (v.low, v.high, v.rate))
        label = f"{v.label} ★" if v.baseline else v.label
        parts.append(f'<text class="chart-label" x="0" y="{y}">{escape(label[:24])}</text>')
        parts.append(f'<line class="chart-interval" x1="{low:.1f}" y1="{y - 4}" x2="{high:.1f}" y2="{y - 4}" '
                     f'stroke="currentColor"></line>')
        parts.append(f'<circle class="chart-bar s{0 if v.baseline else 3}" cx="{at:.1f}" cy="{y - 4}" r="4">'
                     f'<title>{escape(v.label)}: {v.rate:.2%} ({v.low:.2%}–{v.high:.2%})</title></circle>')
        parts.append(f'<text class="chart-value" x="{high + 6:.1f}" y="{y}">{v.rate:.1%}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  every piece of text in it went through escape()
