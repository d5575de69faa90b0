"""Budgets without services: calendar periods in a timezone, verdicts of a batch, the rule language."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from records.plan import BudgetPolicy
from records.topics import EventCore
from rules.budgets import BatchBudgets
from rules.engine import DecisionRequest, RuleEngine
from rules.loader import check, load_ruleset
from state.budgets import MICROS, Budget, Period, PeriodWindow, Standing, period_window
from state.users import User

SHANGHAI = "Asia/Shanghai"
# Costs per message, as the providers file states them: SMS priced, email and inbox free.
COSTS = {"sms": 0.05, "email": 0.0, "inbox": 0.0}
SMS = (("sms", "+8613800000000"),)
EMAIL = ("email", "a@uni.example")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("period", "instant", "key", "start", "end"),
    [
        # 23:30 UTC on the 30th is already 1 December in Shanghai: the local calendar decides.
        ("day", "2026-11-30T23:30:00Z", "2026-12-01", "2026-12-01T00:00+08:00", "2026-12-02T00:00+08:00"),
        ("week", "2026-12-03T12:00:00+08:00", "2026-W49", "2026-11-30T00:00+08:00", "2026-12-07T00:00+08:00"),
        ("month", "2026-12-31T23:59:59+08:00", "2026-12", "2026-12-01T00:00+08:00", "2027-01-01T00:00+08:00"),
        ("week", "2027-01-01T09:00:00+08:00", "2026-W53", "2026-12-28T00:00+08:00", "2027-01-04T00:00+08:00"),
    ],
)
def test_periods_are_calendar_periods_in_the_budgets_timezone(
    period: str, instant: str, key: str, start: str, end: str
) -> None:
    window = period_window(period, SHANGHAI, at(instant))  # type: ignore[arg-type]
    assert window == PeriodWindow(key, at(start), at(end))


def test_a_day_with_a_clock_change_ends_at_the_next_local_midnight() -> None:
    # Europe/Berlin leaves summer time on 25 October 2026: that day lasts 25 hours.
    window = period_window("day", "Europe/Berlin", at("2026-10-25T12:00:00+00:00"))
    assert window.start == at("2026-10-25T00:00:00+02:00")
    assert window.end == at("2026-10-26T00:00:00+01:00")
    assert window.end is not None and window.start is not None
    assert (window.end.astimezone(UTC) - window.start.astimezone(UTC)).total_seconds() == 25 * 3600


def test_a_total_budget_has_one_period_without_end() -> None:
    assert period_window("total", SHANGHAI, datetime.now(UTC)) == PeriodWindow("total", None, None)


def test_a_bad_budget_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        Budget(app="shop", period="day", limit_micros=1, timezone="Mars/Olympus")
    assert "unknown timezone 'Mars/Olympus'" in str(caught.value)
    with pytest.raises(ValidationError, match="period"):
        Budget(app="shop", period="fortnight", limit_micros=1)


def standing(limit: float, spent: float, campaign: str | None = "bf", period: Period = "day") -> Standing:
    budget = Budget(app="shop", campaign=campaign, period=period, limit_micros=round(limit * MICROS))
    window = period_window(budget.period, budget.timezone, datetime.now(UTC))
    return Standing(budget, window, round(spent * MICROS))


def test_a_batch_spends_its_remainder_once_then_drops() -> None:
    batch = BatchBudgets([standing(limit=0.15, spent=0.0)], COSTS)
    actions = [batch.verdict("shop", "bf", SMS, None).action for _ in range(5)]
    assert actions == ["send", "send", "send", "drop", "drop"]
    drop = batch.verdict("shop", "bf", SMS, None)
    key = period_window("day", SHANGHAI, datetime.now(UTC)).key
    spent = f"budget shop/bf/day: spent 0.15 + 0.05 of 0.15 CNY ({key})"
    assert drop.reason == f"{spent} would pass its limit; dropped"


def test_free_sends_and_other_campaigns_are_not_held_back() -> None:
    batch = BatchBudgets([standing(limit=0.1, spent=0.5)], COSTS)
    assert batch.verdict("shop", "bf", (EMAIL,), None).action == "send"
    assert batch.verdict("shop", "spring", SMS, None).action == "send"
    assert batch.verdict("other", "bf", SMS, None).action == "send"


def test_near_the_limit_cheaper_picks_the_cheapest_reachable_channel() -> None:
    policy = BudgetPolicy(near="cheaper")
    batch = BatchBudgets([standing(limit=1.0, spent=0.8)], COSTS)
    verdict = batch.verdict("shop", "bf", SMS, policy, reachable=(SMS[0], EMAIL))
    assert verdict.action == "cheaper" and verdict.channels == (EMAIL,)
    assert "is near its limit: cheaper channel email (0) instead of sms" in verdict.reason
    # Without a cheaper reachable channel a near budget still sends.
    assert batch.verdict("shop", "bf", SMS, policy, reachable=SMS).action == "send"
    # Below the warning share nothing changes.
    calm = BatchBudgets([standing(1.0, 0.5)], COSTS)
    assert calm.verdict("shop", "bf", SMS, policy, (SMS[0], EMAIL)).action == "send"


def test_the_rules_own_costs_override_the_providers() -> None:
    policy = BudgetPolicy(over="cheaper", costs=(("email", 0.2),))
    batch = BatchBudgets([standing(limit=0.1, spent=0.1)], COSTS)
    # Email costs 0.2 by the rule: not cheaper than SMS, so over budget drops.
    assert batch.verdict("shop", "bf", SMS, policy, reachable=(SMS[0], EMAIL)).action == "drop"


def test_hold_waits_for_the_next_period_and_a_total_budget_cannot_hold() -> None:
    policy = BudgetPolicy(over="hold")
    day = standing(limit=0.05, spent=0.05)
    held = BatchBudgets([day], COSTS).verdict("shop", "bf", SMS, policy)
    assert held.action == "hold" and held.until == day.window.end
    total = BatchBudgets([standing(0.05, 0.05, period="total")], COSTS).verdict("shop", "bf", SMS, policy)
    assert total.action == "drop" and "a total budget has no next period" in total.reason


def test_an_app_budget_and_a_campaign_budget_both_apply() -> None:
    batch = BatchBudgets([standing(limit=10, spent=0), standing(limit=0.05, spent=0, campaign=None)], COSTS)
    assert batch.verdict("shop", "bf", SMS, None).action == "send"
    second = batch.verdict("shop", "spring", SMS, None)  # the app-wide budget is spent by the first
    assert second.action == "drop" and "budget shop/-/day" in second.reason


RULES = """\
ruleset: t
rules:
  - id: promo
    when: {category: [marketing]}
    then:
      first_of: [sms, email]
      budget: {over: hold, near: cheaper, costs: {sms: 0.06}}
"""


def test_a_rules_budget_lands_in_the_plan_with_the_reachable_channels(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    engine = RuleEngine(load_ruleset(path))
    user = User(user_id="u1", bindings={"sms": "+8613800000000", "email": "u1@uni.example"})
    event = EventCore(event_id="e1", app="shop", type="promo", template="promo", category="marketing")
    every = frozenset({"sms", "email"})
    (decision,) = engine.decide([DecisionRequest(event, user, every, every)])
    assert decision.plan.budget == BudgetPolicy(over="hold", near="cheaper", costs=(("sms", 0.06),))
    assert decision.channels == (("sms", "+8613800000000"),)
    assert decision.reachable == (("sms", "+8613800000000"), ("email", "u1@uni.example"))


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ("{ovr: drop}", "7:16: unknown field 'ovr' (did you mean 'over'?)"),
        ("{over: dorp}", "7:22: unknown over-budget action 'dorp' (did you mean 'drop'?)"),
        ("{near: hold}", "7:22: unknown near-budget action 'hold' (expected one of: send, cheaper)"),
        ("{costs: {sms: -1}}", "7:29: 'sms' must be at least 0, got -1"),
        ("{costs: {fax: 1.0}}", "7:24: unknown channel 'fax'"),
    ],
)
def test_rules_check_points_at_a_budget_typo(tmp_path: Path, budget: str, expected: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("{over: hold, near: cheaper, costs: {sms: 0.06}}", budget))
    errors = [str(error) for error in check([path])]
    assert len(errors) == 1 and expected in errors[0], errors


def test_cheaper_with_one_channel_is_a_mistake_at_its_place(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("first_of: [sms, email]", "first_of: [sms]"))
    [error] = [str(error) for error in check([path])]
    assert error.endswith(
        "7:34: 'near: cheaper' picks the cheapest of the rule's channels, but it names only sms: "
        "name others, or use send, drop or hold"
    )
