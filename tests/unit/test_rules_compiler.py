"""The durable-rules JSON generated from typed rules."""

from __future__ import annotations

from pathlib import Path

from records.topics import EventCore
from rules.compiler import NO_MATCH_RULE, build_fact, compile_ruleset
from rules.facts import facts_of
from rules.loader import load_ruleset
from rules.schema import Ruleset
from state.users import User

RULES = """\
ruleset: test
rules:
  - id: alerts
    when:
      category: [alert]
    then:
      channels: [inbox, email]
  - id: staff-urgent
    when:
      priority: [urgent, high]
      bound: [email, sms]
      tags_any: [staff, "ops.team"]
    then:
      first_of: [preferred, email]
  - id: everything-else
    then:
      suppress: nothing matched above
"""


def ruleset(tmp_path: Path) -> Ruleset:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return load_ruleset(path)


def test_rules_compile_to_prioritised_conditions(tmp_path: Path) -> None:
    loaded = ruleset(tmp_path)
    compiled = compile_ruleset(loaded)
    assert compiled.name == f"sb_{loaded.version}"
    assert compiled.definition == {
        "alerts": {"pri": 1, "all": [{"m": {"category": "alert"}}]},
        "staff-urgent": {
            "pri": 2,
            "all": [
                {
                    "m": {
                        "$and": [
                            {"any__priority__0": True},
                            {"bound__email": True},
                            {"bound__sms": True},
                            {"any__tags__1": True},
                        ]
                    }
                }
            ],
        },
        "everything-else": {"pri": 3, "all": [{"m": {"$ex": {"rid": 1}}}]},
        NO_MATCH_RULE: {"pri": 4, "all": [{"m": {"$ex": {"rid": 1}}}]},
    }
    # A list of several values is one boolean the fact carries: durable-rules expands `$or` inside
    # `$and` into every combination, and fails on a few dozen such rules.
    assert "$or" not in str(compiled.definition)
    assert compiled.any_of_fields == {
        "any__priority__0": ("priority", frozenset({"urgent", "high"})),
        "any__tags__1": ("tags", frozenset({"staff", "ops.team"})),
    }


def test_no_condition_is_ever_on_sid(tmp_path: Path) -> None:
    assert '"sid"' not in str(compile_ruleset(ruleset(tmp_path)).definition).replace("'", '"')


def test_fact_is_flat_and_pre_enriched(tmp_path: Path) -> None:
    compiled = compile_ruleset(ruleset(tmp_path))
    event = EventCore(
        event_id="e", app="hr", type="pay.slip", template="t", category="notice", priority="high"
    )
    user = User(user_id="u", tags=("ops.team",), bindings={"email": "u@x", "inbox": "u"})
    fact = build_fact(compiled, facts_of(event, user, None, None), 7)
    assert fact["rid"] == 7
    assert fact["category"] == "notice"
    assert fact["bound__email"] is True and fact["bound__sms"] is False
    # Only what some rule tests is posted: less JSON through durable-rules per decision.
    assert set(fact) == {"rid", "category", "any__priority__0", "bound__email", "bound__sms", "any__tags__1"}
    assert fact["any__priority__0"] is True and fact["any__tags__1"] is True
    assert all(not isinstance(value, dict | list) for value in fact.values())
