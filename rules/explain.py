"""Explain one decision: which rules matched, which won and why, and the full decision and plan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from records.plan import DeliveryPlan
from rules.budgets import BatchBudgets, BudgetVerdict
from rules.engine import Decision, DecisionRequest, RuleEngine
from rules.facts import Facts, facts_of, why_not
from rules.schema import NamedStrategy, duration_text


@dataclass(frozen=True)
class RuleVerdict:
    """How one rule fared for the delivery: matched or not (and the first condition that failed)."""

    rule_id: str
    origin: str
    matched: bool
    why_not: str | None


@dataclass(frozen=True)
class Explanation:
    request: DecisionRequest
    facts: Facts
    verdicts: tuple[RuleVerdict, ...]
    decision: Decision
    budget: BudgetVerdict | None = None
    """What the app's or campaign's budgets say of the decision (None: their standing was not read)."""
    strategies: tuple[NamedStrategy, ...] = ()
    """The ruleset's named strategies, to say where the one used is defined."""

    @property
    def matched(self) -> tuple[str, ...]:
        return tuple(v.rule_id for v in self.verdicts if v.matched)


def explain(engine: RuleEngine, request: DecisionRequest, budgets: BatchBudgets | None = None) -> Explanation:
    """Decide `request` with the engine, and test every rule in Python to show the whole picture; with
    `budgets` (the standings of the event's budgets), the budget verdict too."""
    (decision,) = engine.decide([request])
    facts = facts_of(
        request.event, request.user, request.now, request.last_active_at, whitelisted=request.whitelisted
    )
    ruleset = engine.ruleset
    verdicts = []
    for rule in ruleset.rules:
        failed = why_not(rule.when, facts)
        verdicts.append(RuleVerdict(rule.id, ruleset.origins.get(rule.id, ""), failed is None, failed))
    budget = None
    if budgets is not None and decision.channels and "budget" not in decision.plan.bypass:
        event = request.event
        budget = budgets.verdict(event.app, event.campaign, decision.channels, decision.plan.budget,
                                 decision.reachable)
    return Explanation(request, facts, tuple(verdicts), decision, budget, ruleset.strategies)


def render(explanation: Explanation) -> str:
    """The explanation as text for a terminal."""
    request, facts, decision = explanation.request, explanation.facts, explanation.decision
    event, user = request.event, request.user
    idle = "never active" if facts.idle is None else f"last active {duration_text(facts.idle)} ago"
    lines = [
        f"event    {event.app}/{event.type}  category {event.category}, priority {event.priority}, "
        f"template {event.template}" + (f", campaign {event.campaign}" if event.campaign else ""),
        f"user     {user.user_id}  tags [{', '.join(user.tags)}], "
        f"addresses on [{', '.join(user.bindings)}], "
        f"prefers {user.channel_pref or '-'}, {idle}",
        f"allowed  app may use [{', '.join(sorted(request.allowed_channels))}]; "
        f"providers for [{', '.join(sorted(request.available_channels))}]",
        f"ruleset  version {decision.rule_version}",
        "",
        "rules, in the order they are tried:",
    ]
    won = False
    for verdict in explanation.verdicts:
        if verdict.rule_id == decision.rule_id:
            mark, note, won = "=>", "matches: WINS (first match)", True
        elif verdict.matched:
            mark, note = "  ", "matches too, but an earlier rule won" if won else "matches"
        else:
            mark, note = "  ", f"no: {verdict.why_not}"
        lines.append(f"  {mark} {verdict.rule_id:<28} {note}   [{verdict.origin}]")
    if not decision.rule_id:
        lines.append("  no rule matched: nothing is sent")
    lines += ["", "decision:"]
    if decision.channels:
        lines.append("  send on  " + ", ".join(f"{c} ({a})" for c, a in decision.channels))
    elif decision.held_out:
        share = decision.plan.variant
        lines.append(f"  send on  nothing (held out: control share {share}, recorded held_out)")
    else:
        lines.append("  send on  nothing (suppressed)")
    if decision.template:
        lines.append(f"  template {decision.template}")
    if decision.strategy:
        named_by = "the event" if event.strategy == decision.strategy else "the rule"
        origin = next((s.origin for s in explanation.strategies if s.name == decision.strategy), "")
        lines.append(f"  strategy {decision.strategy} (named by {named_by}) [{origin}]")
    lines += [f"  because  {reason}" for reason in decision.reasons]
    lines += _budget_lines(explanation.budget)
    lines += ["", "plan:", *(f"  {line}" for line in plan_lines(decision.plan))]
    return "\n".join(lines)


def _budget_lines(verdict: BudgetVerdict | None) -> list[str]:
    if verdict is None:
        return []
    if verdict.action == "send":
        return ["  budget   within every budget that applies (or none applies): sent as decided"]
    if verdict.action == "cheaper":
        return [f"  budget   sent on {', '.join(c for c, _ in verdict.channels)} instead: {verdict.reason}"]
    outcome = "deferred" if verdict.action == "hold" else "over_budget"
    return [f"  budget   {verdict.action}, recorded {outcome}: {verdict.reason}"]


def plan_lines(plan: DeliveryPlan) -> list[str]:
    """Every part of a delivery plan in words; defaults are said too, so nothing is left implicit."""
    lines = []
    if plan.variant:
        lines.append(f"variant      {plan.variant}")
    if plan.bypass:
        lines.append(f"bypasses     {', '.join(sorted(plan.bypass))}")
    quiet = plan.quiet_hours
    lines.append(
        f"quiet hours  {quiet.start:%H:%M}-{quiet.end:%H:%M} in the user's timezone, then {quiet.action}"
        if quiet
        else "quiet hours  none"
    )
    best = plan.best_time
    lines.append("best time    " + (f"the user's best hour within {_d(best.within)}" if best else "now"))
    pacing = plan.pacing
    lines.append("pacing       " + (f"at most {pacing.per_second:g}/s for {pacing.key}" if pacing else "-"))
    if plan.caps:
        for cap in plan.caps:
            limits = ", ".join(f"{limit.count}/{_d(limit.window)}" for limit in cap.limits)
            scope = ", ".join(cap.scope) or "everyone together"
            lines.append(f"cap          {cap.id}: {limits} per {scope}; over it: {cap.on_exceed}")
    else:
        lines.append("caps         none apply")
    for step in plan.fallback:
        template = f" with template {step.template}" if step.template else ""
        lines.append(
            f"fallback {step.step}   after {_d(step.after)} if {step.condition.replace('_', ' ')}: "
            f"first of {', '.join(step.channels)}{template}"
        )
    if not plan.fallback:
        lines.append("fallback     none")
    lines.append(
        f"offline keep {_d(plan.keep_offline)} if no channel reaches the user now"
        if plan.keep_offline
        else "offline keep none"
    )
    budget = plan.budget
    costs = ", ".join(f"{channel} {cost:g}" for channel, cost in budget.costs) if budget else ""
    lines.append(
        f"budget       over it: {budget.over}; near it: {budget.near}" + (f"; costs {costs}" if costs else "")
        if budget
        else "budget       over it: drop (the default); near it: send"
    )
    return lines


def _d(duration: timedelta) -> str:
    return duration_text(duration)
