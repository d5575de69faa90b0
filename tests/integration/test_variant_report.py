"""The variant report against the test chdb: rows inserted here, the arithmetic checked independently."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from statistics import NormalDist

import pytest
from clickhouse_connect.driver.client import Client

from analytics.sink import ReceiptSink
from analytics.variants import as_csv, as_dict, variant_report
from records.topics import Receipt, Status
from tests.integration.moments import now

Z = NormalDist().inv_cdf(0.975)



@pytest.fixture
def rule() -> str:
    return f"trial-{uuid.uuid4().hex[:8]}"


def wilson(x: int, n: int) -> tuple[float, float]:
    p = x / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return centre - half, centre + half


def lift_interval(x: int, n: int, bx: int, bn: int) -> tuple[float, float, float]:
    ratio = (x / n) / (bx / bn)
    se = math.sqrt(1 / x - 1 / n + 1 / bx - 1 / bn)
    return ratio - 1, ratio * math.exp(-Z * se) - 1, ratio * math.exp(Z * se) - 1


def p_value(x: int, n: int, bx: int, bn: int) -> float:
    pooled = (x + bx) / (n + bn)
    z = (x / n - bx / bn) / math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / bn))
    return 2 * (1 - NormalDist().cdf(abs(z)))


class Arm:
    """Rows for `n` recipients of one variant: `delivered`, `engaged` and `converted` of them reach
    those states (the first ones), with the receipts a real flow writes."""

    def __init__(self, rule: str, variant: str, n: int, delivered: int, engaged: int, converted: int,
                 control: bool = False) -> None:
        self.rule, self.variant, self.n = rule, variant, n
        self.delivered, self.engaged, self.converted, self.control = delivered, engaged, converted, control

    def receipts(self, hours_ago: float) -> list[Receipt]:
        start = now() - timedelta(hours=hours_ago)
        rows: list[Receipt] = []
        for i in range(self.n):
            mid = f"{self.rule}-{self.variant}-{i}"

            def row(status: Status, minutes: int, channel: str = "email", i: int = i, mid: str = mid,
                    **extra: str) -> Receipt:
                return Receipt(
                    event_time=start + timedelta(minutes=minutes), message_id=mid, app="shop",
                    user_id=f"u{i}", channel=channel, status=status, rule_id=self.rule,
                    variant=self.variant, **extra,
                )

            if self.control:
                rows.append(row("held_out", 0, channel="", reason=f"held out: control share of {self.rule}"))
            else:
                rows += [row("decided", 0), row("sent", 1)]
                if i < self.delivered:
                    rows.append(row("delivered", 2))
                if i < self.engaged:
                    rows.append(row(("opened", "read", "clicked")[i % 3], 30))
            if i < self.converted:
                rows.append(row("converted", 600, channel="email" if not self.control else ""))
        return rows


def test_rates_intervals_lift_and_p_values_against_the_control(clickhouse: Client, rule: str) -> None:
    arms = [
        Arm(rule, "a", 400, delivered=380, engaged=120, converted=40),
        Arm(rule, "b", 420, delivered=400, engaged=150, converted=63),
        Arm(rule, "holdout", 200, delivered=0, engaged=0, converted=12, control=True),
    ]
    sink = ReceiptSink(clickhouse)
    for arm in arms:
        sink.write(arm.receipts(hours_ago=30))
    # Noise the report must not count: a redelivered conversion (same key), another rule's messages,
    # and this rule's messages decided before the period.
    sink.write([r for r in arms[0].receipts(hours_ago=30) if r.status == "converted"][:5])
    sink.write(Arm(f"{rule}-other", "a", 50, 50, 50, 50).receipts(hours_ago=30))
    before = Arm(rule, "b", 30, 30, 30, 30).receipts(hours_ago=24 * 9)
    sink.write([r.model_copy(update={"message_id": "old-" + r.message_id}) for r in before])

    report = variant_report(clickhouse, rule, since=now() - timedelta(days=7))

    assert report.baseline == "holdout"
    assert [line.variant for line in report.lines] == ["holdout", "a", "b"]
    control = report.line("holdout")
    assert (control.control, control.recipients, control.delivered, control.converted) == (True, 200, 0, 12)
    assert control.lift is None and control.p_value is None
    for arm in arms:
        line = report.line(arm.variant)
        assert (line.recipients, line.delivered, line.engaged, line.converted) == (
            arm.n, arm.delivered, arm.engaged, arm.converted
        )
        assert line.rate == pytest.approx(arm.converted / arm.n)
        assert (line.rate_low, line.rate_high) == pytest.approx(wilson(arm.converted, arm.n), rel=1e-9)
    for arm in arms[:2]:
        line = report.line(arm.variant)
        expected = lift_interval(arm.converted, arm.n, 12, 200)
        assert (line.lift, line.lift_low, line.lift_high) == pytest.approx(expected, rel=1e-9)
        assert line.p_value == pytest.approx(p_value(arm.converted, arm.n, 12, 200), rel=1e-6)
    # b converts 15 % against 6 %: significant; a converts 10 %: not at 5 %.
    assert report.line("b").p_value < 0.01 < 0.05 < report.line("a").p_value  # type: ignore[operator]

    payload = as_dict(report)
    assert payload["baseline"] == "holdout" and payload["variants"][1]["converted"] == 40
    csv_lines = as_csv(report).splitlines()
    assert csv_lines[0].startswith("rule,baseline,variant,control,recipients")
    assert csv_lines[1].startswith(f"{rule},holdout,holdout,True,200,0,0,12,0.06,")
    assert len(csv_lines) == 4


def test_without_control_the_first_variant_is_the_baseline(clickhouse: Client, rule: str) -> None:
    sink = ReceiptSink(clickhouse)
    sink.write(Arm(rule, "inbox", 300, 300, 90, 30).receipts(hours_ago=2))
    sink.write(Arm(rule, "email", 300, 280, 60, 0).receipts(hours_ago=2))
    since = now() - timedelta(days=1)

    named = variant_report(clickhouse, rule, since=since, first="inbox")
    assert named.baseline == "inbox" and [line.variant for line in named.lines] == ["inbox", "email"]
    email = named.line("email")
    assert email.converted == 0 and email.lift == pytest.approx(-1.0)
    assert email.lift_low is None and email.lift_high is None  # no interval on a log of zero
    assert email.p_value == pytest.approx(p_value(0, 300, 30, 300), rel=1e-6)
    assert (email.rate_low, email.rate_high) == pytest.approx(wilson(0, 300), abs=1e-12)

    unnamed = variant_report(clickhouse, rule, since=since)
    assert unnamed.baseline == "email"  # first by name, when the caller knows no order
    assert unnamed.line("inbox").lift is None  # the baseline converted nobody: no ratio


def test_a_rule_with_nothing_in_the_period_is_an_empty_report(clickhouse: Client, rule: str) -> None:
    report = variant_report(clickhouse, rule, since=now() - timedelta(days=1))
    assert (report.baseline, report.lines) == ("", ())
    with pytest.raises(KeyError, match="has no variant 'a' in this period"):
        report.line("a")
    with pytest.raises(ValueError, match="needs a timezone offset"):
        variant_report(clickhouse, rule, since=now().replace(tzinfo=None))
