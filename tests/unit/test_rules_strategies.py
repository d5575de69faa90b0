"""Named strategies (补发策略): defined once in the rule files, used by name from a rule or an event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from analytics.event_log import LoggedEvent
from records.topics import EventCore
from rules.cli import rules_cli
from rules.engine import DecisionRequest, RuleEngine
from rules.explain import explain, render
from rules.loader import check, load_ruleset
from rules.simulate import History, replay
from state.users import User

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EVERY = frozenset({"push", "sms", "email", "inbox", "wechat_oa"})
STUDENT = User(
    user_id="s1", bindings={"push": "tok-1", "sms": "+8613800000001", "inbox": "s1", "email": "s1@u.edu"}
)

STRATEGIES = """\
ruleset: u
strategies:
  push_then_sms:
    description: A push; unread after 5 minutes, WeChat, then SMS.
    first_of: [push, inbox]
    fallback:
      - {after: 5m, if_not: read, first_of: [wechat_oa]}
      - {after: 10m, if_not: read, first_of: [sms]}
  everywhere:
    channels: [inbox, email]
rules:
  - id: fees
    when: {type: [fee.due]}
    then: {strategy: push_then_sms, quiet_hours: false}
  - id: rest
    then:
      first_of: [email]
      fallback: [{after: 1d, if_not: read, first_of: [sms]}]
"""


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def messages(*paths: Path) -> list[str]:
    return [str(error) for error in check(paths)]


def event(type_: str = "fee.due", **extra: Any) -> EventCore:
    return EventCore.model_validate(
        {"event_id": "e1", "app": "bursar", "type": type_, "template": "t", "category": "notice", **extra}
    )


def decide(tmp_path: Path, ev: EventCore, user: User = STUDENT) -> Any:
    engine = RuleEngine(load_ruleset(write(tmp_path, STRATEGIES)))
    (decision,) = engine.decide([DecisionRequest(ev, user, EVERY, EVERY, now=NOW)])
    return decision


def test_strategies_load_with_their_place(tmp_path: Path) -> None:
    ruleset = load_ruleset(write(tmp_path, STRATEGIES))
    assert [s.name for s in ruleset.strategies] == ["push_then_sms", "everywhere"]
    push = ruleset.strategy("push_then_sms")
    assert push is not None and push.origin.endswith("rules.yaml:3")
    assert push.spec.first == ["push", "inbox"]
    assert [step.after for step in push.spec.fallback] == [timedelta(minutes=5), timedelta(minutes=10)]
    assert ruleset.strategy("nothing") is None


def test_a_rule_uses_its_strategy_channels_and_steps(tmp_path: Path) -> None:
    decision = decide(tmp_path, event())
    assert decision.rule_id == "fees"
    assert decision.strategy == "push_then_sms"
    assert [c for c, _ in decision.channels] == ["push"]
    steps = [(s.after, s.condition, s.channels) for s in decision.plan.fallback]
    # wechat_oa: the student has no address on it, so step 1 is dropped with the reason.
    assert steps == [(timedelta(minutes=10), "not_read", ("sms",))]
    assert "strategy push_then_sms (named by the rule)" in decision.reasons
    assert "fallback step 1 dropped: wechat_oa: user has no address" in decision.reasons


def test_the_events_strategy_replaces_the_rules_channels_and_steps(tmp_path: Path) -> None:
    decision = decide(tmp_path, event("exam.notice", strategy="push_then_sms"))
    assert decision.rule_id == "rest"
    assert decision.strategy == "push_then_sms"
    assert [c for c, _ in decision.channels] == ["push"]
    assert [s.channels for s in decision.plan.fallback] == [("sms",)]
    assert "strategy push_then_sms (named by the event)" in decision.reasons


def test_the_same_rule_plans_each_strategy_apart(tmp_path: Path) -> None:
    """Plans are memoised per rule: two strategies through one rule must not share one."""
    engine = RuleEngine(load_ruleset(write(tmp_path, STRATEGIES)))
    asks = [event("exam.notice", strategy=name) for name in ("push_then_sms", "everywhere", None)]
    decisions = engine.decide([DecisionRequest(ev, STUDENT, EVERY, EVERY, now=NOW) for ev in asks])
    assert [[c for c, _ in d.channels] for d in decisions] == [["push"], ["inbox", "email"], ["email"]]
    assert [len(d.plan.fallback) for d in decisions] == [1, 0, 1]
    assert decisions[2].plan.fallback[0].after == timedelta(days=1)
    assert decisions[2].strategy == ""


def test_the_events_channels_still_override_the_first_send(tmp_path: Path) -> None:
    decision = decide(tmp_path, event(strategy="push_then_sms", channels=["email"]))
    assert [c for c, _ in decision.channels] == ["email"]
    assert [s.channels for s in decision.plan.fallback] == [("sms",)]


def test_a_suppress_rule_still_wins_over_the_events_strategy(tmp_path: Path) -> None:
    quiet = "  - id: quiet\n    when: {type: [x]}\n    then: {suppress: 'not now'}\n"
    text = STRATEGIES.replace("  - id: rest\n", quiet + "  - id: rest\n")
    engine = RuleEngine(load_ruleset(write(tmp_path, text)))
    ask = DecisionRequest(event("x", strategy="push_then_sms"), STUDENT, EVERY, EVERY)
    (decision,) = engine.decide([ask])
    assert decision.suppressed and decision.channels == ()
    assert decision.reasons[-1] == "suppressed: not now"


def test_an_unknown_strategy_on_an_event_is_refused_with_the_reason(tmp_path: Path) -> None:
    decision = decide(tmp_path, event(strategy="push_than_sms"))
    assert decision.suppressed and decision.channels == ()
    assert decision.reasons[-1] == (
        "refused: unknown strategy 'push_than_sms' (did you mean 'push_then_sms'?) in the loaded rules"
    )


def test_consent_and_reach_still_apply_to_a_strategys_channels(tmp_path: Path) -> None:
    no_push = User(user_id="s2", bindings={"inbox": "s2", "sms": "+8613800000002"})
    decision = decide(tmp_path, event(), no_push)
    assert [c for c, _ in decision.channels] == ["inbox"]
    assert "push: user has no address" in decision.reasons


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # a rule naming a strategy nobody defined, with the closest name
            STRATEGIES.replace("{strategy: push_then_sms,", "{strategy: push_then_smss,"),
            "rules.yaml:14:22: unknown strategy 'push_then_smss' (did you mean 'push_then_sms'?)",
        ),
        (  # no strategies at all
            "ruleset: u\nrules:\n  - id: a\n    then: {strategy: fast}\n",
            "rules.yaml:4:22: unknown strategy 'fast': no rule file defines any (add it under 'strategies:')",
        ),
        (  # inline fallback and a named strategy
            "ruleset: u\nstrategies:\n  s: {first_of: [sms]}\nrules:\n  - id: a\n    then:\n"
            "      strategy: s\n      fallback: [{after: 1h, if_not: read, first_of: [email]}]\n",
            "rules.yaml:8:7: 'then' takes its channels and fallback steps from strategy 's', so it "
            "cannot also set fallback: keep the inline fallback or the named strategy",
        ),
        (  # the rule's own channels and a strategy
            "ruleset: u\nstrategies:\n  s: {first_of: [sms]}\nrules:\n  - id: a\n    then:\n"
            "      strategy: s\n      first_of: [email]\n",
            "rules.yaml:8:7: 'then' takes its channels and fallback steps from strategy 's', so it "
            "cannot also set first_of: keep the inline first_of or the named strategy",
        ),
        (  # a strategy without its first channels
            "ruleset: u\nstrategies:\n  s:\n    fallback: [{after: 1h, if_not: read, first_of: [email]}]\n"
            "rules:\n  - id: a\n    then: {strategy: s}\n",
            "rules.yaml:4:5: a strategy needs its first channels: channels: [...] or first_of: [...]",
        ),
        (  # steps out of order inside a strategy
            "ruleset: u\nstrategies:\n  s:\n    first_of: [push]\n    fallback:\n"
            "      - {after: 1h, if_not: read, first_of: [email]}\n"
            "      - {after: 5m, if_not: read, first_of: [sms]}\n"
            "rules:\n  - id: a\n    then: {strategy: s}\n",
            "rules.yaml:7:10: 'fallback' steps run in order of 'after': "
            "step 2 (5m) must come later than step 1 (1h)",
        ),
        (  # a misspelt key inside a strategy
            "ruleset: u\nstrategies:\n  s: {firts_of: [sms]}\nrules:\n  - id: a\n    then: {strategy: s}\n",
            "rules.yaml:3:7: unknown field 'firts_of' (did you mean 'first_of'?)",
        ),
        (  # the same name twice in one file
            "ruleset: u\nstrategies:\n  s: {first_of: [sms]}\n  s: {first_of: [email]}\n"
            "rules:\n  - id: a\n    then: {strategy: s}\n",
            "rules.yaml:4:3: duplicate key 's' (first at line 3): keep one",
        ),
    ],
)
def test_check_reports_strategy_mistakes_at_their_place(tmp_path: Path, text: str, expected: str) -> None:
    found = messages(write(tmp_path, text))
    assert any(message.endswith(expected) for message in found), found


def test_a_strategy_name_defined_in_two_files_is_reported_at_the_second(tmp_path: Path) -> None:
    write(tmp_path, "ruleset: a\norder: 1\nstrategies:\n  s: {first_of: [sms]}\n"
          "rules:\n  - id: a\n    when: {type: [a]}\n    then: {strategy: s}\n", "a.yaml")
    write(tmp_path, "ruleset: b\norder: 2\nstrategies:\n  t: {first_of: [inbox]}\n  s: {first_of: [email]}\n"
          "rules:\n  - id: b\n    then: {first_of: [email]}\n", "b.yaml")
    found = messages(tmp_path)
    first = f"{tmp_path}/a.yaml:4"
    assert found == [f"{tmp_path}/b.yaml:5:3: duplicate strategy 's' (first defined at {first}): keep one"]


def test_a_strategy_steps_template_is_checked_where_the_strategy_is(tmp_path: Path) -> None:
    path = write(tmp_path, "ruleset: u\nstrategies:\n  s:\n    first_of: [inbox]\n    fallback:\n"
                 "      - {after: 1h, if_not: read, first_of: [sms], template: fee_duee}\n"
                 "rules:\n  - id: a\n    then: {strategy: s}\n")
    found = [str(e) for e in check([path], {"fee_due": frozenset({"sms"}), "t": frozenset({"inbox"})})]
    assert found == [f"{path}:6:62: unknown template 'fee_duee' (did you mean 'fee_due'?)"]


def test_a_rule_using_a_strategy_needs_its_template_to_have_the_strategys_channels(tmp_path: Path) -> None:
    named = STRATEGIES.replace("{strategy: push_then_sms,", "{strategy: push_then_sms, template: fee,")
    path = write(tmp_path, named)
    parts = {"fee": frozenset({"push", "inbox"}), "t": frozenset()}
    found = [str(e) for e in check([path], parts)]
    assert any("template 'fee' has no wechat_oa, sms part" in message for message in found), found


runner = CliRunner()


def test_rules_strategies_lists_them_in_words_and_as_json(tmp_path: Path) -> None:
    path = write(tmp_path, STRATEGIES)
    words = runner.invoke(rules_cli, ["strategies", str(path)])
    assert words.exit_code == 0, words.output
    assert f"push_then_sms  send on first of push, inbox  [{path}:3]" in words.output
    assert "  step 2  after 10m if not read: first of sms" in words.output
    assert "everywhere  send on each of inbox, email" in words.output
    assert "  no fallback steps" in words.output
    as_json = runner.invoke(rules_cli, ["strategies", str(path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.output)
    assert [s["name"] for s in listed] == ["push_then_sms", "everywhere"]
    assert listed[0]["steps"][0] == {
        "step": 1, "after": "5m", "condition": "not_read", "first_of": ["wechat_oa"], "template": None
    }


def test_rules_strategies_on_broken_rules_prints_the_errors_not_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, STRATEGIES.replace("{strategy: push_then_sms,", "{strategy: push_then_smss,"))
    result = runner.invoke(rules_cli, ["strategies", str(path)])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"{path}:14:22: unknown strategy 'push_then_smss' (did you mean 'push_then_sms'?)"
    )


def test_explain_says_which_strategy_and_where_it_is_defined(tmp_path: Path) -> None:
    engine = RuleEngine(load_ruleset(write(tmp_path, STRATEGIES)))
    ask = DecisionRequest(event("exam", strategy="push_then_sms"), STUDENT, EVERY, EVERY, now=NOW)
    text = render(explain(engine, ask))
    assert f"  strategy push_then_sms (named by the event) [{tmp_path}/rules.yaml:3]" in text
    assert "fallback 2   after 10m if not read: first of sms" in text


def test_simulate_counts_the_candidates_messages_per_strategy(tmp_path: Path) -> None:
    ruleset = load_ruleset(write(tmp_path, STRATEGIES))
    logged = [
        LoggedEvent(NOW, event("fee.due").model_copy(update={"event_id": "fee"}), "{}"),
        LoggedEvent(NOW, event("exam", strategy="everywhere").model_copy(update={"event_id": "exam"}), "{}"),
        LoggedEvent(NOW, event("exam").model_copy(update={"event_id": "plain"}), "{}"),
    ]
    history = History(logged, {}, {}, {("bursar", e.event.event_id): ["s1"] for e in logged})
    report = replay(history, ruleset, {"s1": STUDENT}, {"bursar": EVERY}, {}, EVERY)
    assert report.strategies == {"push_then_sms": 1, "everywhere": 1}
    assert report.as_dict()["candidate_strategies"] == {"everywhere": 1, "push_then_sms": 1}
    assert "candidate strategies: everywhere 1, push_then_sms 1 (messages)" in report.render()
