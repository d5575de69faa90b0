"""Apply the winning rule to one delivery: its channels, template, variant and delivery plan.

Plain Python after durable-rules has picked the rule: reachability, caps and quiet hours windows
need set and time arithmetic the engine does not have.

A named strategy (the event's `strategy`, else the rule's) gives the first send's channels and the
fallback steps; everything else stays the rule's: suppress, control share, template, quiet hours,
best time, pace, caps, offline keep, bypass and budget. The event's own `channels` still replace the
first send's channels, and a variant's channels replace the rule's strategy's (not the event's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from records.plan import (
    BestTime,
    BudgetPolicy,
    Bypass,
    DeliveryPlan,
    FallbackStep,
    FrequencyCap,
    Pacing,
    QuietHours,
)
from records.topics import EventCore
from rules.facts import Facts, exempt, holds
from rules.schema import QUIET_OFF, NamedStrategy, Pace, Rule, Ruleset, Then, Variant
from state.users import User


class Reach(Protocol):
    """What one delivery may use: the recipient and the channels the app and providers permit."""

    @property
    def event(self) -> EventCore: ...
    @property
    def user(self) -> User: ...
    @property
    def allowed_channels(self) -> frozenset[str]: ...
    @property
    def available_channels(self) -> frozenset[str]: ...


_PLAN_MEMO = 10_000
"""Distinct plans kept per ruleset; pace keys per campaign make the set open-ended, so it is bounded."""


class Policies:
    """A ruleset's caps and quiet hours windows as plan objects, built once per ruleset, not per decision."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.caps = [
            (
                cap,
                FrequencyCap(
                    id=cap.id, scope=tuple(cap.scope), limits=tuple(cap.limits), on_exceed=cap.on_exceed
                ),
            )
            for cap in ruleset.caps
        ]
        self.windows = {
            w.id: QuietHours(start=w.start, end=w.end, action=w.action) for w in ruleset.quiet_hours
        }
        self.plans: dict[tuple[object, ...], DeliveryPlan] = {}
        self.steps: dict[tuple[str, str, int, tuple[str, ...]], FallbackStep] = {}
        self.strategies = {strategy.name: strategy for strategy in ruleset.strategies}
        self.matched_windows = [
            (w.match, self.windows[w.id]) for w in ruleset.quiet_hours if w.match is not None
        ]


@dataclass(frozen=True)
class Outcome:
    """The applied rule: the channels chosen, the template if not the event's, and the plan."""

    channels: tuple[tuple[str, str], ...]
    suppressed: bool
    reasons: tuple[str, ...]
    plan: DeliveryPlan
    template: str | None
    held_out: bool = False
    """The recipient fell into the rule's control share: nothing is sent, on purpose."""
    reachable: tuple[tuple[str, str], ...] = ()
    """Every channel of the rule the recipient can be reached on, when its budget may pick a cheaper one."""
    strategy: str = ""
    """The named strategy that gave the channels and fallback steps ("" for none)."""


def unknown_strategy_reason(name: str, known: Sequence[str]) -> str:
    """Why a message naming a strategy the loaded rules do not define is refused."""
    from rules.semantics import unknown_strategy

    return f"refused: {unknown_strategy(name, known)} in the loaded rules"


def apply_rule(policies: Policies, rule: Rule, reach: Reach, facts: Facts) -> Outcome:
    """Carry out `rule` (the winner) for one delivery."""
    reasons = [f"rule {rule.id} matched"]
    then = rule.then
    asked = reach.event.strategy
    if asked is not None and asked not in policies.strategies:
        reasons.append(unknown_strategy_reason(asked, sorted(policies.strategies)))
        return Outcome((), True, tuple(reasons), DeliveryPlan(), None)
    if then.suppress is not None:
        reasons.append(f"suppressed: {then.suppress}")
        return Outcome((), True, tuple(reasons), DeliveryPlan(), None)

    variant = pick_variant(rule.id, reach.user.user_id, then.variants) if then.variants else None
    if variant is not None:
        total = sum(v.weight for v in then.variants or ())
        reasons.append(f"variant {variant.name} ({variant.weight} of {total})")
        if variant.control:
            # Nothing else of the rule applies: no channel, fallback, cap, quiet hours or offline keep.
            reasons.append(f"held out: control share {variant.name} of rule {rule.id}")
            return Outcome((), True, tuple(reasons), _held_out_plan(policies, variant), None, held_out=True)
    template = (variant.template if variant is not None else None) or then.template

    event, user = reach.event, reach.user
    strategy = _strategy(policies, rule, event, reasons)
    chosen: list[str]
    if event.channels is not None:
        reasons.append(f"event overrides channels: {', '.join(event.channels)}")
        chosen = _each_reachable(list(event.channels), reach, reasons)
    else:
        channels, first_of = _choice(then, variant, strategy, event)
        if channels is not None:
            chosen = _each_reachable(channels, reach, reasons)
        else:
            chosen = _first_reachable(_resolve(first_of or [], user), reach, reasons)
    plan = _plan(policies, rule, reach, facts, variant, frozenset(chosen), reasons, strategy)
    named_strategy = strategy.name if strategy is not None else ""
    if not chosen:
        reasons.append("no channel left to send on")
        return Outcome((), True, tuple(reasons), plan, template, strategy=named_strategy)
    addresses: dict[str, str] = {str(channel): address for channel, address in user.bindings.items()}
    pairs = tuple((channel, addresses[channel]) for channel in chosen)
    reachable: tuple[tuple[str, str], ...] = ()
    if then.budget is not None and then.budget.picks_cheaper:
        named = (
            list(event.channels)
            if event.channels is not None
            else _resolve(_named(then, variant, strategy, event), user)
        )
        reachable = tuple((c, addresses[c]) for c in dict.fromkeys(named) if _unusable(c, reach) is None)
    return Outcome(pairs, False, tuple(reasons), plan, template, reachable=reachable, strategy=named_strategy)


def _strategy(policies: Policies, rule: Rule, event: EventCore, reasons: list[str]) -> NamedStrategy | None:
    """The event's named strategy, else the rule's (both known: the loader and `apply_rule` made sure)."""
    if event.strategy is not None:
        reasons.append(f"strategy {event.strategy} (named by the event)")
        return policies.strategies[event.strategy]
    if rule.then.strategy is not None:
        reasons.append(f"strategy {rule.then.strategy} (named by the rule)")
        return policies.strategies[rule.then.strategy]
    return None


def _named(
    then: Then, variant: Variant | None, strategy: NamedStrategy | None, event: EventCore
) -> list[str]:
    channels, first_of = _choice(then, variant, strategy, event)
    return channels if channels is not None else list(first_of or [])


def pick_variant(rule_id: str, user_id: str, variants: Sequence[Variant]) -> Variant:
    """The same variant for the same rule and user, on every worker and every run; split by weight."""
    digest = hashlib.blake2b(f"{rule_id}\x1f{user_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") % sum(v.weight for v in variants)
    for variant in variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    raise AssertionError("unreachable: point is below the total weight")


def _held_out_plan(policies: Policies, variant: Variant) -> DeliveryPlan:
    """A plan of defaults naming the control variant: built once per variant, like the other plans."""
    key = ("held_out", variant.name)
    plan = policies.plans.get(key)
    if plan is None:
        plan = policies.plans[key] = DeliveryPlan(variant=variant.name)
    return plan


def pace_key(pace: Pace, rule_id: str, event: EventCore) -> str:
    """The pacing bucket: sends sharing it go out at most `per_second` per second together."""
    if pace.key == "campaign":
        return f"campaign:{event.campaign}" if event.campaign else f"type:{event.app}:{event.type}"
    if pace.key == "app":
        return f"app:{event.app}"
    if pace.key == "type":
        return f"type:{event.app}:{event.type}"
    return f"rule:{rule_id}"


def _plan(
    policies: Policies,
    rule: Rule,
    reach: Reach,
    facts: Facts,
    variant: Variant | None,
    used: frozenset[str],
    reasons: list[str],
    strategy: NamedStrategy | None = None,
) -> DeliveryPlan:
    then = rule.then
    bypass: set[Bypass] = set(then.bypass or ())
    if reach.event.priority == "urgent" and policies.ruleset.urgent_bypass:
        bypass |= policies.ruleset.urgent_bypass
    if bypass:
        reasons.append("bypasses " + ", ".join(sorted(bypass)))
    steps = _fallback(policies, rule, reach, used, reasons, strategy)
    quiet = None if "quiet_hours" in bypass else _quiet_hours(policies, then, facts)
    caps = () if "caps" in bypass else _caps(policies, facts)
    pace = None if then.pace is None or "pacing" in bypass else pace_key(then.pace, rule.id, reach.event)
    # Most deliveries of a rule share one plan: build each distinct plan once (they are immutable).
    key = (
        rule.id,
        strategy.name if strategy is not None else "",  # two strategies' steps may differ only in `after`
        tuple(s.step for s in steps),
        tuple(s.channels for s in steps),
        id(quiet),
        tuple(c.id for c in caps),
        pace,
        variant.name if variant else "",
        frozenset(bypass),
    )
    plan = policies.plans.get(key)
    if plan is None:
        if len(policies.plans) >= _PLAN_MEMO:
            policies.plans.clear()
        plan = policies.plans[key] = DeliveryPlan(
            fallback=steps,
            quiet_hours=quiet,
            best_time=None
            if then.best_time is None or "best_time" in bypass
            else BestTime(within=then.best_time.within),
            pacing=None
            if then.pace is None or pace is None
            else Pacing(per_second=then.pace.per_second, key=pace),
            caps=caps,
            keep_offline=then.keep_offline,
            variant=variant.name if variant is not None else "",
            bypass=frozenset(bypass),
            budget=None
            if then.budget is None
            else BudgetPolicy(
                over=then.budget.over,
                near=then.budget.near,
                costs=tuple(sorted((then.budget.costs or {}).items())),
            ),
        )
    return plan


def _quiet_hours(policies: Policies, then: Then, facts: Facts) -> QuietHours | None:
    if then.quiet_hours == QUIET_OFF:
        return None
    if then.quiet_hours is not None:
        return policies.windows.get(then.quiet_hours)
    return next((window for match, window in policies.matched_windows if holds(match, facts)), None)


def _caps(policies: Policies, facts: Facts) -> tuple[FrequencyCap, ...]:
    return tuple(
        frequency_cap
        for cap, frequency_cap in policies.caps
        if holds(cap.match, facts) and exempt(cap.exempt, facts) is None
    )


def _fallback(
    policies: Policies,
    rule: Rule,
    reach: Reach,
    used: frozenset[str],
    reasons: list[str],
    strategy: NamedStrategy | None = None,
) -> tuple[FallbackStep, ...]:
    """Steps with the channels that can carry them; a channel the first send used is not used again."""
    steps: list[FallbackStep] = []
    specs = strategy.spec.fallback if strategy is not None else rule.then.fallback or ()
    # Steps are built once per source (a rule's inline steps, or a strategy's, shared by every rule).
    source = ("strategy", strategy.name) if strategy is not None else ("rule", rule.id)
    for number, spec in enumerate(specs, start=1):
        named = list(dict.fromkeys(_resolve(spec.first_of, reach.user)))
        usable = tuple(c for c in named if c not in used and _unusable(c, reach) is None)
        if not usable:
            why = [f"{c}: already sent on" if c in used else _unusable(c, reach) or c for c in named]
            reasons.append(f"fallback step {number} dropped: " + "; ".join(why or ["no channel"]))
            continue
        key = (*source, number, usable)
        step = policies.steps.get(key)
        if step is None:
            step = policies.steps[key] = FallbackStep(
                step=number,
                after=spec.after,
                condition=spec.condition,
                channels=usable,
                template=spec.template,
            )
        steps.append(step)
    return tuple(steps)


def _choice(
    then: Then, variant: Variant | None, strategy: NamedStrategy | None = None, event: EventCore | None = None
) -> tuple[list[str] | None, list[str] | None]:
    """The first send's (channels, first_of): the event's strategy, a variant's, the rule's strategy or
    the rule's own, in that order of precedence."""
    if strategy is not None and event is not None and event.strategy == strategy.name:
        return _spec_choice(strategy)
    if variant is not None and (variant.channels or variant.first_of):
        return (list(variant.channels) if variant.channels else None), (
            list(variant.first_of) if variant.first_of else None
        )
    if strategy is not None:
        return _spec_choice(strategy)
    return (list(then.channels) if then.channels else None), (list(then.first_of) if then.first_of else None)


def _spec_choice(strategy: NamedStrategy) -> tuple[list[str] | None, list[str] | None]:
    spec = strategy.spec
    return (list(spec.channels) if spec.channels else None), (list(spec.first_of) if spec.first_of else None)


def _resolve(choices: Sequence[str], user: User) -> list[str]:
    """`preferred` becomes the user's own preferred channel (dropped if they have none)."""
    resolved = [user.channel_pref if c == "preferred" else c for c in choices]
    return [c for c in resolved if c is not None]


def _unusable(channel: str, reach: Reach) -> str | None:
    """Why `channel` cannot carry this delivery, or None if it can."""
    if channel not in reach.user.bindings:
        return f"{channel}: user has no address"
    if channel not in reach.allowed_channels:
        return f"{channel}: app {reach.event.app} is not allowed to use it"
    if channel not in reach.available_channels:
        return f"{channel}: no provider configured"
    return None


def _each_reachable(channels: list[str], reach: Reach, reasons: list[str]) -> list[str]:
    chosen: list[str] = []
    for channel in dict.fromkeys(channels):
        why = _unusable(channel, reach)
        if why is None:
            chosen.append(channel)
        else:
            reasons.append(why)
    return chosen


def _first_reachable(channels: list[str], reach: Reach, reasons: list[str]) -> list[str]:
    """The first usable channel; skipped ones are explained, so a fallback to them is visible."""
    for channel in dict.fromkeys(channels):
        why = _unusable(channel, reach)
        if why is None:
            return [channel]
        reasons.append(why)
    return []
