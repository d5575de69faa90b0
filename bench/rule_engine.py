"""Decisions per second: `rules/default.yaml` through `RuleEngine.decide` vs the same rules in plain Python.

Run: .venv/bin/python bench/rule_engine.py [--users 10000] [--batch 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from processors.records import ChannelName, EventCore
from rules.engine import Decision, DecisionRequest, RuleEngine
from rules.loader import load_ruleset
from state.users import User

ROOT = Path(__file__).resolve().parents[1]
PROVIDERS = frozenset({"email", "inbox", "webhook"})
APPS: dict[str, frozenset[str]] = {
    "lms": frozenset({"email", "inbox", "sms", "push"}),
    "bursar": frozenset({"email", "inbox", "sms"}),
    "campus": frozenset({"email", "inbox", "webhook"}),
    "security": frozenset({"email", "inbox", "sms", "push"}),
    "portal": frozenset({"email", "sms"}),
}
EVENTS = [
    EventCore(event_id="b1", app="lms", type="course.reminder", template="t", category="notice"),
    EventCore(event_id="b2", app="bursar", type="fee.due", template="t", category="transactional"),
    EventCore(event_id="b3", app="campus", type="campus.notice", template="t", category="notice"),
    EventCore(
        event_id="b4", app="security", type="incident", template="t", category="alert", priority="urgent"
    ),
    EventCore(event_id="b5", app="campus", type="bookshop.sale", template="t", category="marketing"),
    EventCore(event_id="b6", app="portal", type="login.code", template="t", category="verification"),
    EventCore(event_id="b7", app="campus", type="library.due", template="t", category="notice"),
]


def synthetic_requests(count: int, seed: int = 7) -> list[DecisionRequest]:
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        reachable: tuple[ChannelName, ...] = ("email", "inbox", "sms", "push")
        channels = [c for c in reachable if rng.random() < 0.7]
        user = User(
            user_id=f"user{i}",
            channel_pref=rng.choice([None, "email", "sms", "inbox"]),
            tags=tuple(t for t in ("student", "staff", "no-marketing") if rng.random() < 0.3),
            bindings={c: f"{c}-address-{i}" for c in channels},
        )
        event = rng.choice(EVENTS)
        requests.append(DecisionRequest(event, user, APPS[event.app], PROVIDERS))
    return requests


def plain_decide(request: DecisionRequest, version: str) -> Decision:
    """`rules/default.yaml`, hand-written: the baseline the engine is measured against."""
    event, user = request.event, request.user
    if event.category == "alert":
        rule, channels, first = "security-alerts", ["inbox", "email"], False
    elif event.category == "verification":
        rule, channels, first = "verification-codes", ["sms", "email"], True
    elif event.category == "transactional":
        rule, channels, first = "fees-and-payments", ["email", "inbox"], False
    elif event.app == "lms" and event.type == "course.reminder":
        rule, channels, first = "course-reminders", [user.channel_pref or "", "inbox", "email"], True
    elif event.type == "campus.notice":
        rule, channels, first = "campus-notices", ["inbox"], False
    elif event.category == "marketing" and "no-marketing" in user.tags:
        why = ("rule marketing-opt-out matched", "suppressed: user opted out of marketing")
        return Decision((), "marketing-opt-out", version, True, why)
    elif event.category == "marketing":
        rule, channels, first = "marketing", ["inbox"], False
    else:
        rule, channels, first = "catch-all", [user.channel_pref or "", "inbox", "email"], True
    reasons = [f"rule {rule} matched"]
    chosen: list[tuple[str, str]] = []
    for channel in dict.fromkeys(c for c in channels if c):
        address = user.bindings.get(channel)  # type: ignore[call-overload]
        if address is None:
            reasons.append(f"{channel}: user has no address")
        elif channel not in request.allowed_channels:
            reasons.append(f"{channel}: app {event.app} is not allowed to use it")
        elif channel not in request.available_channels:
            reasons.append(f"{channel}: no provider configured")
        else:
            chosen.append((channel, address))
            if first:
                break
    if not chosen:
        reasons.append("no channel left to send on")
    return Decision(tuple(chosen), rule, version, not chosen, tuple(reasons))


def rate(decide: Callable[[Sequence[DecisionRequest]], list[Decision]], requests: list[DecisionRequest],
         batch: int, rounds: int) -> float:
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
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    ruleset = load_ruleset(ROOT / "rules" / "default.yaml")
    engine = RuleEngine(ruleset)
    requests = synthetic_requests(args.users)

    def plain(batch: Sequence[DecisionRequest]) -> list[Decision]:
        return [plain_decide(r, ruleset.version) for r in batch]

    # Same answers first: a fast wrong baseline would measure nothing.
    if engine.decide(requests) != plain(requests):
        raise SystemExit("engine and plain Python disagree on some decisions")
    engine_rate = rate(engine.decide, requests, args.batch, args.rounds)
    plain_rate = rate(plain, requests, args.batch, args.rounds)
    print(f"{len(ruleset.rules)} rules, {args.users} users, batches of {args.batch}")
    print(f"durable-rules engine: {engine_rate:>10,.0f} decisions/s")
    print(f"plain Python:         {plain_rate:>10,.0f} decisions/s")
    print(f"plain / engine:       {plain_rate / engine_rate:>10.1f}x")


if __name__ == "__main__":
    main()
