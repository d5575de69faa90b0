"""Compile a validated `Ruleset` into a durable-rules JSON ruleset definition.

Facts posted to the engine are flat and pre-enriched (see `build_fact`): one boolean per channel the
user is bound to, per tag the rules name and per activity window the rules name, because
durable-rules has no set membership and no date arithmetic. Every value is a string or a boolean, so
its loose typing (`'1' == 1`) never comes into play. Rule i (file order) gets `pri` i+1 (lowest wins,
0 is ignored), so the first matching rule wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from records.topics import CHANNELS
from rules.facts import Facts, active_within, inactive_for
from rules.schema import Rule, Ruleset

REQUEST_FIELD = "rid"
"""The fact field carrying the request number; the matched rule is recorded against it."""
NO_MATCH_RULE = "__no_match__"
"""An internal last rule that catches every fact, so no post raises `MessageNotHandledException`."""

_EVENT_FIELDS: tuple[str, ...] = (
    "category", "priority", "type", "app", "template", "campaign", "channel_pref",
)
Activity = Literal["active", "inactive"]


@dataclass(frozen=True)
class CompiledRuleset:
    """A durable-rules definition (plain JSON, no actions) and how to build facts for it."""

    name: str
    definition: dict[str, dict[str, Any]]
    """Rule name -> {"pri": n, "all": [{"m": condition}]}; the engine adds the actions."""
    tag_fields: dict[str, str]
    """Tag -> fact field holding whether the user has it."""
    activity_fields: dict[str, tuple[Activity, timedelta]]
    """Fact field -> the activity test it holds (active within / inactive for a duration)."""
    event_fields: tuple[str, ...] = _EVENT_FIELDS
    """The event and user fields some rule tests: facts carry only these (less JSON per fact)."""
    bound_channels: tuple[str, ...] = CHANNELS
    """The channels some rule's `bound` names."""


def compile_ruleset(ruleset: Ruleset) -> CompiledRuleset:
    """Translate `ruleset` (already validated by the loader) into a durable-rules definition."""
    tag_fields = _tag_fields(ruleset.tags())
    definition = {
        rule.id: {"pri": index + 1, "all": [{"m": _condition(rule, tag_fields)}]}
        for index, rule in enumerate(ruleset.rules)
    }
    definition[NO_MATCH_RULE] = {
        "pri": len(ruleset.rules) + 1,
        "all": [{"m": {"$ex": {REQUEST_FIELD: 1}}}],
    }
    activity: dict[str, tuple[Activity, timedelta]] = {}
    for rule in ruleset.rules:
        tests: tuple[tuple[Activity, timedelta | None], ...] = (
            ("active", rule.when.active_within),
            ("inactive", rule.when.inactive_for),
        )
        for kind, window in tests:
            if window is not None:
                activity[activity_field(kind, window)] = (kind, window)
    conditions = [rule.when for rule in ruleset.rules]
    return CompiledRuleset(
        name=f"sb_{ruleset.version}",
        definition=definition,
        tag_fields=tag_fields,
        activity_fields=activity,
        event_fields=tuple(key for key in _EVENT_FIELDS if any(getattr(w, key) for w in conditions)),
        bound_channels=tuple(c for c in CHANNELS if any(c in (w.bound or ()) for w in conditions)),
    )


def build_fact(compiled: CompiledRuleset, facts: Facts, request: int) -> dict[str, Any]:
    """The flat fact the compiled conditions test, for one delivery; the engine adds `sid` and `id`."""
    fact: dict[str, Any] = {REQUEST_FIELD: request}
    for key in compiled.event_fields:
        fact[key] = getattr(facts, key)
    for channel in compiled.bound_channels:
        fact[bound_field(channel)] = channel in facts.bound
    for tag, field in compiled.tag_fields.items():
        fact[field] = tag in facts.tags
    for field, (kind, window) in compiled.activity_fields.items():
        fact[field] = active_within(facts, window) if kind == "active" else inactive_for(facts, window)
    return fact


def bound_field(channel: str) -> str:
    return f"bound__{channel}"


def activity_field(kind: Activity, window: timedelta) -> str:
    return f"{kind}__{int(window.total_seconds())}s"


def _condition(rule: Rule, tag_fields: dict[str, str]) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = []
    when = rule.when
    for key in _EVENT_FIELDS:
        values = getattr(when, key)
        if values is not None:
            clauses.append(_any_of([{key: value} for value in values]))
    for channel in when.bound or ():
        clauses.append({bound_field(channel): True})
    if when.tags_any is not None:
        clauses.append(_any_of([{tag_fields[tag]: True} for tag in when.tags_any]))
    if when.active_within is not None:
        clauses.append({activity_field("active", when.active_within): True})
    if when.inactive_for is not None:
        clauses.append({activity_field("inactive", when.inactive_for): True})
    if not clauses:
        # An empty `when` matches every delivery; every fact carries the request field.
        return {"$ex": {REQUEST_FIELD: 1}}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _any_of(equalities: list[dict[str, Any]]) -> dict[str, Any]:
    return equalities[0] if len(equalities) == 1 else {"$or": equalities}


def _tag_fields(tags: tuple[str, ...]) -> dict[str, str]:
    """Field names safe for durable-rules: a '.' in a field name would be read as a nested path."""
    fields: dict[str, str] = {}
    used: set[str] = set()
    for tag in tags:
        field = "tag__" + re.sub(r"[^A-Za-z0-9_]", "_", tag)
        if field in used:
            field = f"{field}__{len(used)}"
        used.add(field)
        fields[tag] = field
    return fields
