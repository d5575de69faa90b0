"""Budget verdicts: what a delivery does when its sends would take a budget near or over its limit.

Decide asks before it dispatches (with standings read once per batch and cached briefly), send asks
again just before the provider is called (with standings read fresh for the batch). Within a batch
each verdict takes its cost from the standing, so a batch cannot spend the same remainder twice; two
workers' batches can, which overshoots by at most the sends in flight (see docs/operators/budgets.md).
A free send (estimated cost 0) is never held back: a budget caps spending, not messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from records.plan import BudgetPolicy
from state.budgets import Standing, to_micros

DEFAULT_POLICY = BudgetPolicy()
"""Without a rule's `budget:`: over budget drops (an `over_budget` row), near budget sends."""

Action = Literal["send", "cheaper", "drop", "hold"]


@dataclass(frozen=True)
class BudgetVerdict:
    """`send` (on `channels`), `cheaper` (on `channels`, the cheapest reachable one), `drop` (an
    `over_budget` row) or `hold` (deferred `until` the over budget's next period)."""

    action: Action
    channels: tuple[tuple[str, str], ...] = ()
    reason: str = ""
    until: datetime | None = None


def channel_costs(provider_costs: Mapping[str, float], policy: BudgetPolicy | None) -> Callable[[str], int]:
    """A channel's estimated cost in micro-units: the rule's estimate, else the providers'."""
    own = dict(policy.costs) if policy is not None else {}

    def cost(channel: str) -> int:
        return to_micros(own.get(channel, provider_costs.get(channel, 0.0)))  # type: ignore[call-overload]

    return cost


class BatchBudgets:
    """The standings of one batch's budgets, taking each verdict's cost as the batch goes."""

    def __init__(self, standings: Sequence[Standing], provider_costs: Mapping[str, float]) -> None:
        self._standings = list(standings)
        self._taken: dict[str, int] = {}
        self._costs = provider_costs
        self._cost_of: dict[BudgetPolicy, Callable[[str], int]] = {}

    def __bool__(self) -> bool:
        return bool(self._standings)

    def verdict(
        self,
        app: str,
        campaign: str,
        channels: Sequence[tuple[str, str]],
        policy: BudgetPolicy | None,
        reachable: Sequence[tuple[str, str]] = (),
    ) -> BudgetVerdict:
        """The verdict for sending on `channels`; `reachable` are the rule's channels to pick a cheaper
        one from."""
        under = [s for s in self._standings if s.budget.applies_to(app, campaign)]
        if not under or not channels:
            return BudgetVerdict("send", tuple(channels))
        policy = policy or DEFAULT_POLICY
        cost_of = self._cost_of.get(policy)
        if cost_of is None:
            cost_of = self._cost_of[policy] = channel_costs(self._costs, policy)
        cost = sum(cost_of(channel) for channel, _ in channels)
        state, worst = self._state(under, cost)
        if state == "ok" or (state == "near" and policy.near == "send"):
            self._take(under, cost)
            return BudgetVerdict("send", tuple(channels))
        if (policy.near if state == "near" else policy.over) == "cheaper":
            cheaper = _cheapest(reachable or channels, cost_of)
            cheaper_cost = cost_of(cheaper[0])
            if cheaper_cost < cost and self._state(under, cheaper_cost)[0] != "over":
                self._take(under, cheaper_cost)
                why = (
                    f"{worst.describe(cost)} is {state} its limit: cheaper channel {cheaper[0]} "
                    f"({cheaper_cost / 1e6:g}) instead of {', '.join(c for c, _ in channels)}"
                )
                return BudgetVerdict("cheaper", (cheaper,), why)
            if state == "near":
                self._take(under, cost)
                return BudgetVerdict("send", tuple(channels))
        if policy.over == "hold":
            ends = [s.window.end for s in under if s.state(self._taken.get(s.budget.id, 0) + cost) == "over"]
            if ends and all(end is not None for end in ends):
                until = max(end for end in ends if end is not None)
                why = f"{worst.describe(cost)} would pass its limit: held until {until.isoformat()}"
                return BudgetVerdict("hold", reason=why, until=until)
            why = f"{worst.describe(cost)} would pass its limit; a total budget has no next period"
            return BudgetVerdict("drop", reason=why)
        return BudgetVerdict("drop", reason=f"{worst.describe(cost)} would pass its limit; dropped")

    def _state(self, under: Sequence[Standing], cost: int) -> tuple[Literal["ok", "near", "over"], Standing]:
        """The worst state among the budgets, and the budget in it (the first, in order)."""
        if cost <= 0:
            return "ok", under[0]
        rank = {"ok": 0, "near": 1, "over": 2}
        worst, standing = "ok", under[0]
        for candidate in under:
            state = self._taken_standing(candidate).state(cost)
            if rank[state] > rank[worst]:
                worst, standing = state, self._taken_standing(candidate)
        return worst, standing  # type: ignore[return-value]

    def _taken_standing(self, standing: Standing) -> Standing:
        taken = self._taken.get(standing.budget.id, 0)
        if not taken:
            return standing
        return Standing(standing.budget, standing.window, standing.spent_micros + taken)

    def _take(self, under: Sequence[Standing], cost: int) -> None:
        for standing in under:
            self._taken[standing.budget.id] = self._taken.get(standing.budget.id, 0) + cost


def _cheapest(channels: Sequence[tuple[str, str]], cost_of: Callable[[str], int]) -> tuple[str, str]:
    """The cheapest channel; among equals the first the rule names."""
    return min(channels, key=lambda pair: cost_of(pair[0]))
