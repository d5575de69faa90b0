"""A rule's control share: written strictly, decided as held out, tested, explained, simulated."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from analytics.event_log import LoggedEvent
from records.topics import EventCore, message_id_for
from rules.apply import pick_variant
from rules.cases import Expect, compare
from rules.engine import DecisionRequest, RuleEngine
from rules.explain import explain, render
from rules.loader import check, load_ruleset
from rules.simulate import Actual, History, replay
from state.users import User

HEAD = "ruleset: u\nrules:\n  - id: promo\n    then:\n      variants:\n"
RULES = HEAD + (
    "        - {name: inbox, weight: 45, channels: [inbox]}\n"
    "        - {name: email, weight: 45, channels: [email]}\n"
    "        - {name: holdout, weight: 10, control: true}\n"
    "      fallback:\n"
    "        - {after: 1h, if_not: read, first_of: [email]}\n"
    "      keep_offline: 1d\n"
)
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EVENT = EventCore(event_id="e1", app="shop", type="promo", template="promo", category="marketing")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        ("        - {name: a, weight: 1, channels: [inbox]}\n"
         "        - {name: c, weight: 1, control: true, channels: [email]}\n",
         "7:47: control variant 'c' receives nothing, so it takes no channels"),
        ("        - {name: a, weight: 1, channels: [inbox]}\n"
         "        - {name: c, weight: 1, control: true, template: t, first_of: [sms]}\n",
         "7:60: control variant 'c' receives nothing, so it takes no first_of, template"),
        ("        - {name: a, weight: 1, channels: [inbox]}\n"
         "        - {name: c, weight: 1, control: true}\n        - {name: d, weight: 1, control: true}\n",
         "8:32: 'variants' may have one control share (control: true); got 2: c, d"),
        ("        - {name: a, weight: 1, channels: [inbox]}\n"
         "        - {name: c, weight: 1, control: maybe}\n",
         "7:41: 'control' must be true or false, got maybe"),
        ("        - {name: c, weight: 1, control: true}\n",
         "6:9: 'variants' needs at least 2 entries"),
        ("        - {name: a, weight: 1}\n        - {name: c, weight: 1, control: true}\n",
         "5:7: 'then' needs exactly one of channels, first_of, suppress; got none "
         "(or give every variant but the control its own channels or first_of)"),
    ],
)
def test_control_shares_are_checked_at_their_place(tmp_path: Path, variants: str, expected: str) -> None:
    path = write(tmp_path, HEAD + variants)
    assert [str(e) for e in check([path])] == [f"{path}:{expected}"]


def test_a_control_share_without_channels_is_valid_beside_variants_that_have_them(tmp_path: Path) -> None:
    ruleset = load_ruleset(write(tmp_path, RULES))
    variants = ruleset.rules[0].then.variants or ()
    assert [(v.name, v.control) for v in variants] == [("inbox", False), ("email", False), ("holdout", True)]
    # The split is the same hash as before: adding `control` did not move anyone between variants.
    assert check([write(tmp_path, RULES)]) == []


def people(held: bool, ruleset_path: Path) -> User:
    variants = load_ruleset(ruleset_path).rules[0].then.variants or ()
    user_id = next(f"p{n}" for n in range(500) if pick_variant("promo", f"p{n}", variants).control is held)
    return User(user_id=user_id, bindings={"inbox": user_id, "email": f"{user_id}@x.cn"})


def request(user: User) -> DecisionRequest:
    every = frozenset({"inbox", "email"})
    return DecisionRequest(EVENT, user, every, every, now=NOW)


def test_a_held_out_decision_sends_nothing_and_plans_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, RULES)
    engine = RuleEngine(load_ruleset(path))
    held, treated = people(True, path), people(False, path)
    decision, other = engine.decide([request(held), request(treated)])
    assert (decision.held_out, decision.suppressed, decision.channels) == (True, True, ())
    assert decision.plan.variant == "holdout"
    assert (decision.plan.fallback, decision.plan.keep_offline, decision.plan.caps) == ((), None, ())
    assert decision.reasons[-1] == "held out: control share holdout of rule promo"
    assert not other.held_out and other.channels and other.plan.keep_offline

    assert compare(Expect(held_out=True, variant="holdout", channels=[]), decision) == []
    assert compare(Expect(held_out=True), other) == ["held_out: expected True, got False"]

    text = render(explain(engine, request(held)))
    assert "send on  nothing (held out: control share holdout, recorded held_out)" in text
    assert "variant      holdout" in text and "fallback     none" in text


def test_simulate_counts_held_out_recipients_on_both_sides(tmp_path: Path) -> None:
    path = write(tmp_path, RULES)
    held, treated = people(True, path), people(False, path)
    outcomes = {
        message_id_for("shop", "e1", held.user_id): Actual(held.user_id, frozenset(), False, False, True),
        message_id_for("shop", "e1", treated.user_id): Actual(treated.user_id, frozenset(), True, False),
    }
    history = History(
        [LoggedEvent(NOW, EVENT, '{"user_ids": []}')], outcomes, {},
        {("shop", "e1"): [held.user_id, treated.user_id]},
    )
    every = frozenset({"inbox", "email"})
    users = {u.user_id: u for u in (held, treated)}
    report = replay(history, load_ruleset(path), users, {"shop": every}, {}, every)
    result = report.as_dict()
    assert (result["actual"]["held_out"], result["candidate"]["held_out"]) == (1, 1)
    assert (result["actual"]["suppressed"], result["candidate"]["suppressed"]) == (1, 0)
    assert result["recipients_affected"] == 1  # the treated one, now sent; the held-out one unchanged
    assert "held out" in report.render()
