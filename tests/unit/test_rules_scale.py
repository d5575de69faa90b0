"""Rule sets the size of a real organisation decide as the rules read, through durable-rules."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rules.engine import DecisionRequest, RuleEngine
from rules.facts import facts_of, holds
from rules.loader import load_ruleset
from rules.schema import Rule, Ruleset
from rules.semantics import covers
from rules.shards import plan_shards
from tests.rule_sets import department_rules, listing_rules, sample_events, sample_users, write

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CHANNELS = frozenset({"email", "inbox", "sms", "push"})


def requests(departments: int, count: int) -> list[DecisionRequest]:
    rng = random.Random(5)
    idle = [None, timedelta(hours=2), timedelta(days=30)]
    asked = []
    for event, user in zip(sample_events(departments, count), sample_users(departments, count), strict=True):
        since = rng.choice(idle)
        seen = None if since is None else NOW - since
        asked.append(DecisionRequest(event, user, CHANNELS, CHANNELS, NOW, seen))
    return asked


def first_match(rules: tuple[Rule, ...], request: DecisionRequest) -> str:
    """The plain reading of the rules: the first whose `when` holds."""
    facts = facts_of(request.event, request.user, request.now, request.last_active_at)
    return next((rule.id for rule in rules if holds(rule.when, facts)), "")


@pytest.mark.parametrize(
    ("kind", "size"),
    [("departments", 200), ("departments", 300), ("departments", 2000), ("listing", 100), ("listing", 2000)],
)
def test_large_rulesets_pick_the_first_matching_rule(tmp_path: Path, kind: str, size: int) -> None:
    text = department_rules(size) if kind == "departments" else listing_rules(size)
    ruleset = load_ruleset(write(tmp_path, kind, text))
    engine = RuleEngine(ruleset)
    asked = requests(size, 600)
    decided = [decision.rule_id for decision in engine.decide(asked)]
    expected = [first_match(ruleset.rules, request) for request in asked]
    assert decided == expected
    # The sample reaches department and product-line rules, not only the general ones.
    assert len(set(decided)) > 20
    assert engine.shards > 1


@pytest.mark.parametrize("limit", [3, 5, 64])
def test_routing_and_chains_keep_the_winner(tmp_path: Path, limit: int) -> None:
    """Tiny shards force deep routing and chains of shards; the winner must not change."""
    ruleset: Ruleset = load_ruleset(write(tmp_path, "listing", listing_rules(40)))
    plan = plan_shards(ruleset.rules, limit)
    assert all(len(shard) <= limit for shard in plan.shards)
    for request in requests(40, 400):
        facts = facts_of(request.event, request.user, request.now, request.last_active_at)
        routed = ""
        for number in plan.route(facts):
            shard = plan.shards[number]
            routed = next((ruleset.rules[p].id for p in shard if holds(ruleset.rules[p].when, facts)), "")
            if routed:
                break
        assert routed == first_match(ruleset.rules, request)


def test_unreachable_check_finds_the_same_shadow_as_comparing_every_pair(tmp_path: Path) -> None:
    from rules.semantics import _ShadowIndex

    ruleset = load_ruleset(write(tmp_path, "departments", department_rules(60)))
    rng = random.Random(3)
    whens = [rule.when for rule in ruleset.rules]
    # Narrowed copies of earlier rules are covered by them; the index must find the first one.
    whens += [w.model_copy(update={"bound": ["email"]}) for w in rng.sample(whens, 20)]
    index = _ShadowIndex()
    for position, when in enumerate(whens):
        naive = next((i for i, earlier in enumerate(whens[:position]) if covers(earlier, when)), None)
        assert index.first_covering(when) == naive
        index.add(position, when)


def test_an_engine_limit_is_a_located_error_at_check_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the shards too large for durable-rules, `rules check` says so where the shard starts."""
    import rules.engine
    from rules.loader import check

    monkeypatch.setattr(rules.engine, "plan_shards", lambda rules: plan_shards(rules, 5000))
    path = write(tmp_path, "departments", department_rules(300))
    errors = check([path])
    assert errors and (errors[0].file, errors[0].line) == (str(path), 3)
    assert all("the rule engine cannot decide with this rule and" in e.message for e in errors)
    assert all("others in its shard: Could not assert event, error code: 30" in e.message for e in errors)


@pytest.mark.parametrize("kind", ["departments", "listing"])
def test_the_posted_fact_is_the_full_fact_without_its_false_booleans(tmp_path: Path, kind: str) -> None:
    """The engine posts `sparse_fact`; leaving out what is false must leave every field that is not."""
    from rules.compiler import build_fact, compile_ruleset, sparse_fact

    text = department_rules(2000) if kind == "departments" else listing_rules(2000)
    ruleset = load_ruleset(write(tmp_path, kind, text))
    plan = plan_shards(ruleset.rules)
    asked = requests(2000, 300)
    dropped = 0
    for number, positions in enumerate(plan.shards):
        compiled = compile_ruleset(ruleset, positions, f"_s{number}")
        for index, request in enumerate(asked):
            facts = facts_of(request.event, request.user, request.now, request.last_active_at)
            full = build_fact(compiled, facts, index)
            posted = sparse_fact(compiled, facts, index)
            assert posted == {key: value for key, value in full.items() if value is not False}
            dropped += len(full) - len(posted)
    assert dropped > 0  # the shards do test booleans these deliveries fail


def test_one_batch_per_shard_into_one_session(tmp_path: Path) -> None:
    """Facts are consumed as they are decided: splitting a batch by user would only add engine calls."""
    from rules.engine import SESSION

    ruleset = load_ruleset(write(tmp_path, "departments", department_rules(2000)))
    engine = RuleEngine(ruleset)
    posted: list[tuple[str, list[dict[str, object]]]] = []
    post_batch = engine._host.post_batch

    def recording(name: str, batch: list[dict[str, object]]) -> object:
        posted.append((name, batch))
        return post_batch(name, batch)

    engine._host.post_batch = recording
    asked = requests(2000, 500)
    decided = [decision.rule_id for decision in engine.decide(asked)]
    assert decided == [first_match(ruleset.rules, request) for request in asked]
    names = [name for name, _ in posted]
    assert len(names) == len(set(names)) <= engine.shards  # every route here is a single shard
    assert sum(len(batch) for _, batch in posted) == len(asked)
    assert {fact["sid"] for _, batch in posted for fact in batch} == {SESSION}
    # Nothing stays in the session between batches: the next one decides the same.
    assert [decision.rule_id for decision in engine.decide(asked)] == decided
    for name in set(names):
        assert engine._host.get_pending_events(name, SESSION) == []
        assert engine._host.get_facts(name, SESSION) == []
