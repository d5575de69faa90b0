"""Bench: what a named strategy costs a decision. The same two-step chain (push else inbox; unread after
5m WeChat, after 15m SMS) written inline in the rule, used by the rule by name, and named by the event,
decided for N users in batches of 500 as decide posts them; prints CPU time per decision, the best of
seven interleaved runs each (wall time swings with other load on the machine).

Run: .venv/bin/python bench/strategies.py [--users 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from records.topics import CHANNELS, EventCore
from rules.engine import DecisionRequest, RuleEngine
from rules.loader import load_ruleset
from state.users import User

STEPS = "[{after: 5m, if_not: read, first_of: [wechat_oa]}, {after: 15m, if_not: read, first_of: [sms]}]"
CHAIN = f"{{first_of: [push, inbox], fallback: {STEPS}}}"
NAMED = f"ruleset: b\nstrategies:\n  s: {CHAIN}\nrules:\n  - id: r\n"
RULE_FILES = {
    "inline fallback": f"ruleset: b\nrules:\n  - id: r\n    then: {CHAIN}\n",
    "rule's strategy": NAMED + "    then: {strategy: s}\n",
    "event's strategy": NAMED + "    then: {first_of: [email]}\n",
}
BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    users = [
        User(user_id=f"s{n}", bindings={"push": f"t{n}", "inbox": f"s{n}", "sms": f"+86138{n:08d}",
                                        "wechat_oa": f"o{n}"})
        for n in range(parser.parse_args().users)
    ]
    every = frozenset(CHANNELS)
    now = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp())
    runs: dict[str, tuple[RuleEngine, list[DecisionRequest]]] = {}
    for number, (label, text) in enumerate(RULE_FILES.items()):
        path = folder / f"rules-{number}.yaml"
        path.write_text(text)
        engine = RuleEngine(load_ruleset(path))
        event = EventCore.model_validate({
            "event_id": "e", "app": "bench", "type": "t", "template": "t", "category": "notice",
            "strategy": "s" if label == "event's strategy" else None,
        })
        requests = [DecisionRequest(event, user, every, every, now=now) for user in users]
        (probe,) = engine.decide(requests[:1])
        if [s.channels for s in probe.plan.fallback] != [("wechat_oa",), ("sms",)]:
            raise SystemExit(f"{label}: not the two steps: {probe}")
        runs[label] = engine, requests
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(7):  # interleaved, so warm-up and other load fall on every variant alike
        for label, (engine, requests) in runs.items():
            started = time.process_time()
            for offset in range(0, len(requests), BATCH):
                engine.decide(requests[offset : offset + BATCH])
            best[label] = min(best[label], time.process_time() - started)
    for label, seconds in best.items():
        count = len(runs[label][1])
        each = seconds * 1e6 / count
        print(f"{label:<18} {count / seconds:>9,.0f} decisions/s of CPU  ({each:.1f} µs each, best of 7)")


if __name__ == "__main__":
    main()
