"""Decisions per second and CPU per decision with 20, 200 and 2,000 rules; `rules check` and explain times.

20 rules: bench/rules_20.yaml and its requests (bench/rule_engine.py). 200 and 2,000: a rule per
department (`type: [deptN.notice, deptN.update]`, tests/rule_sets.py) between general rules, with
events of those departments' types and others. Decisions in batches of 500, best of `--rounds`.

Run: .venv/bin/python bench/rules_scale.py [--requests 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/rule_sets.py generates the large rule files

from rule_engine import synthetic_requests  # noqa: E402

from rules.engine import DecisionRequest, RuleEngine  # noqa: E402
from rules.explain import explain  # noqa: E402
from rules.loader import check, load_ruleset  # noqa: E402
from tests.rule_sets import department_rules, sample_events, sample_users, write  # noqa: E402

CHANNELS = frozenset({"email", "inbox", "sms", "push"})


def department_requests(departments: int, count: int) -> list[DecisionRequest]:
    now = datetime.now(UTC)
    pairs = zip(sample_events(departments, count), sample_users(departments, count), strict=True)
    return [DecisionRequest(event, user, CHANNELS, CHANNELS, now, None) for event, user in pairs]


def measure(engine: RuleEngine, requests: list[DecisionRequest], rounds: int) -> tuple[float, float]:
    """Best decisions per second, and CPU microseconds per decision in that round."""
    best = (0.0, 0.0)
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for offset in range(0, len(requests), 500):
            engine.decide(requests[offset : offset + 500])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if len(requests) / wall > best[0]:
            best = (len(requests) / wall, cpu / len(requests) * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rules-scale-"))
    cases = [("20 rules (bench/rules_20.yaml)", HERE / "rules_20.yaml", synthetic_requests(args.requests))]
    for size in (200, 2000):
        path = write(folder, f"departments-{size}", department_rules(size))
        cases.append((f"{size} department rules", path, department_requests(size, args.requests)))
    for label, path, requests in cases:
        start = time.perf_counter()
        errors = check([path])
        checked = time.perf_counter() - start
        if errors:
            raise SystemExit(f"{path}: {errors[0]}")
        ruleset = load_ruleset(path)
        start = time.perf_counter()
        engine = RuleEngine(ruleset)
        built = time.perf_counter() - start
        per_second, cpu = measure(engine, requests, args.rounds)
        start = time.perf_counter()
        explain(engine, requests[0])
        explained = time.perf_counter() - start
        print(
            f"{label:<32} {len(ruleset.rules):>5} rules, {engine.shards:>3} shards: "
            f"{per_second:>8,.0f} decisions/s, {cpu:>6.1f} µs CPU/decision; "
            f"rules check {checked:.2f} s, engine built in {built:.2f} s, explain {explained * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
