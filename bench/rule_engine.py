"""Decisions per second: a realistic 20-rule set through `RuleEngine.decide` vs the same in plain Python.

The engine as deployed: durable-rules picks the winning rule for batches of 500 pre-enriched facts,
then Python applies it (channels, caps, quiet hours, fallback...). The baseline picks the winner with
a hand-written if/elif chain and applies it with the same code, so the ratio measures rule matching.

Run: .venv/bin/python bench/rule_engine.py [--users 10000] [--batch 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from records.topics import ChannelName, EventCore
from rules.apply import Policies, apply_rule
from rules.engine import Decision, DecisionRequest, RuleEngine
from rules.facts import Facts, facts_of
from rules.loader import load_ruleset
from rules.schema import Ruleset
from state.users import User

HERE = Path(__file__).resolve().parent
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
PROVIDERS = frozenset({"email", "inbox", "webhook", "sms", "push"})
APPS: dict[str, frozenset[str]] = {
    "lms": frozenset({"email", "inbox", "sms", "push"}),
    "bursar": frozenset({"email", "inbox", "sms"}),
    "campus": frozenset({"email", "inbox", "webhook", "push"}),
    "security": frozenset({"email", "inbox", "sms", "push", "robot"}),
    "portal": frozenset({"email", "sms"}),
    "library": frozenset({"email", "inbox"}),
    "dorms": frozenset({"inbox", "wechat_oa"}),
    "alumni": frozenset({"email", "inbox"}),
}


def _event(n: int, app: str, type_: str, category: str, **extra: str) -> EventCore:
    return EventCore.model_validate(
        {"event_id": f"b{n}", "app": app, "type": type_, "template": "t", "category": category, **extra}
    )


EVENTS = [
    _event(1, "lms", "course.reminder", "notice"),
    _event(2, "bursar", "fee.due", "transactional", priority="high"),
    _event(3, "bursar", "payment.received", "transactional"),
    _event(4, "campus", "campus.notice", "notice"),
    _event(5, "security", "security.incident", "alert", priority="urgent"),
    _event(6, "security", "it.incident", "alert", priority="urgent"),
    _event(7, "campus", "bookshop.sale", "marketing"),
    _event(8, "campus", "library.week", "marketing", campaign="library-week"),
    _event(9, "campus", "canteen.special", "marketing"),
    _event(10, "portal", "login.code", "verification"),
    _event(11, "lms", "grade.published", "notice"),
    _event(12, "library", "book.due", "notice"),
    _event(13, "dorms", "maintenance", "notice"),
    _event(14, "alumni", "reunion", "marketing"),
    _event(15, "lms", "assignment.due", "notice"),
]


def synthetic_requests(count: int, seed: int = 7) -> list[DecisionRequest]:
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        reachable: tuple[ChannelName, ...] = ("email", "inbox", "sms", "push", "wechat_oa", "robot")
        channels = [c for c in reachable if rng.random() < 0.6]
        user = User(
            user_id=f"user{i}",
            channel_pref=rng.choice([None, "email", "sms", "inbox", "push"]),
            tags=tuple(
                t for t in ("student", "staff", "no-marketing", "alumni", "on-call") if rng.random() < 0.2
            ),
            bindings={c: f"{c}-address-{i}" for c in channels},
        )
        idle = rng.choice(
            [None, timedelta(hours=3), timedelta(days=5), timedelta(days=20), timedelta(days=60)]
        )
        event = rng.choice(EVENTS)
        requests.append(
            DecisionRequest(
                event, user, APPS[event.app], PROVIDERS, NOW, None if idle is None else NOW - idle
            )
        )
    return requests


def winner(f: Facts) -> str:
    """bench/rules_20.yaml's conditions, hand-written: the first rule that matches."""
    idle = f.idle
    if f.type == "it.incident" and "on-call" in f.tags:
        return "on-call-incidents"
    if f.category == "alert":
        return "security-alerts"
    if f.category == "verification":
        return "verification-codes"
    if f.type == "fee.due":
        return "fee-notices"
    if f.type == "payment.received":
        return "payment-received"
    if f.category == "transactional":
        return "fees-and-payments"
    if f.app == "lms" and f.type == "course.reminder":
        active = idle is not None and idle <= timedelta(days=7)
        return "course-reminders-active" if active else "course-reminders"
    if f.app == "lms" and f.type == "grade.published":
        return "grades-published"
    if f.app == "lms" and "staff" in f.tags:
        return "lms-staff"
    if f.app == "library" and f.type == "book.due":
        return "library-due"
    if f.app == "dorms" and "wechat_oa" in f.bound:
        return "dorms-wechat"
    if f.type == "campus.notice":
        return "campus-notices"
    if f.category == "marketing":
        if "no-marketing" in f.tags:
            return "marketing-opt-out"
        if f.campaign == "library-week":
            return "library-week"
    if f.type == "canteen.special":
        return "canteen-specials"
    if f.category == "marketing":
        return "alumni-marketing" if "alumni" in f.tags else "marketing"
    if f.category == "notice" and (idle is None or idle > timedelta(days=30)):
        return "dormant-notices"
    return "catch-all"


def plain_decider(ruleset: Ruleset) -> Callable[[Sequence[DecisionRequest]], list[Decision]]:
    rules = {rule.id: rule for rule in ruleset.rules}
    policies = Policies(ruleset)

    def decide(batch: Sequence[DecisionRequest]) -> list[Decision]:
        decisions = []
        for request in batch:
            facts = facts_of(request.event, request.user, request.now, request.last_active_at)
            rule = rules[winner(facts)]
            out = apply_rule(policies, rule, request, facts)
            decisions.append(
                Decision(
                    out.channels,
                    rule.id,
                    ruleset.version,
                    out.suppressed,
                    out.reasons,
                    out.plan,
                    out.template,
                )
            )
        return decisions

    return decide


def rate(
    decide: Callable[[Sequence[DecisionRequest]], list[Decision]],
    requests: list[DecisionRequest],
    batch: int,
    rounds: int,
) -> float:
    """Best decisions per second over `rounds` passes through all requests."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for offset in range(0, len(requests), batch):
            decide(requests[offset : offset + batch])
        best = max(best, len(requests) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=Path, default=HERE / "rules_20.yaml")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    ruleset = load_ruleset(args.rules)
    engine = RuleEngine(ruleset)
    plain = plain_decider(ruleset)
    requests = synthetic_requests(args.users)

    # Same answers first: a fast wrong baseline would measure nothing.
    engine_decisions, plain_decisions = engine.decide(requests), plain(requests)
    if engine_decisions != plain_decisions:
        wrong = sum(a != b for a, b in zip(engine_decisions, plain_decisions, strict=True))
        raise SystemExit(f"engine and plain Python disagree on {wrong} decisions")
    used = len({d.rule_id for d in engine_decisions})
    engine_rate = rate(engine.decide, requests, args.batch, args.rounds)
    plain_rate = rate(plain, requests, args.batch, args.rounds)
    print(f"{len(ruleset.rules)} rules ({used} of them winning), {args.users} users, batches of {args.batch}")
    print(f"durable-rules engine: {engine_rate:>10,.0f} decisions/s")
    print(f"plain Python:         {plain_rate:>10,.0f} decisions/s")
    print(f"plain / engine:       {plain_rate / engine_rate:>10.1f}x")


if __name__ == "__main__":
    main()
