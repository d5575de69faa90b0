"""Compile a validated `Ruleset` into a durable-rules JSON ruleset definition.

Facts posted to the engine are flat and pre-enriched (see `build_fact`): one boolean per channel the
user is bound to, per tag the rules name and per activity window the rules name, because
durable-rules has no set membership and no date arithmetic. Every value is a string or a boolean, so
its loose typing (`'1' == 1`) never comes into play. Rule i (file order) gets `pri` i+1 (lowest wins,
0 is ignored), so the first matching rule wins.

A list of several values becomes one boolean per distinct list ("is the type one of these"), computed
here, never an `$or`: durable-rules expands `$or` inside `$and` into every combination, and past a few
dozen such rules it refuses the ruleset (error 107), overflows its stack on an event (303) or takes
minutes to build it. Each compiled condition is a plain conjunction, one durable rule per rule.
A ruleset is compiled as shards (`rules/shards.py`): `rules` picks the rules of one shard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    any_of_fields: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    """Fact field -> (the event key, or `tags`; the values): whether the delivery's value is one of them."""
    true_by_value: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    """Event key -> its value -> the `any_of_fields` that value makes true (`any_of_fields` inverted)."""
    true_by_tag: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Tag -> the fact fields a user with it has true (its own field, and the lists naming it)."""


def compile_ruleset(ruleset: Ruleset, rules: Sequence[int] | None = None, name: str = "") -> CompiledRuleset:
    """Translate `ruleset` (already validated by the loader) into a durable-rules definition.

    `rules`: the positions (file order) of the rules to compile, default all; each keeps its `pri`
    from its position, so the winner among them is the one the whole ruleset would pick.
    """
    chosen = [(i, ruleset.rules[i]) for i in (range(len(ruleset.rules)) if rules is None else rules)]
    single_tags = (r.when.tags_any[0] for _, r in chosen if r.when.tags_any and _one_tag(r))
    tag_fields = _tag_fields(tuple(dict.fromkeys(single_tags)))
    any_of: dict[tuple[str, frozenset[str]], str] = {}
    definition = {
        rule.id: {"pri": index + 1, "all": [{"m": _condition(rule, tag_fields, any_of)}]}
        for index, rule in chosen
    }
    definition[NO_MATCH_RULE] = {
        "pri": len(ruleset.rules) + 1,
        "all": [{"m": {"$ex": {REQUEST_FIELD: 1}}}],
    }
    activity: dict[str, tuple[Activity, timedelta]] = {}
    for _, rule in chosen:
        tests: tuple[tuple[Activity, timedelta | None], ...] = (
            ("active", rule.when.active_within),
            ("inactive", rule.when.inactive_for),
        )
        for kind, window in tests:
            if window is not None:
                activity[activity_field(kind, window)] = (kind, window)
    single = [
        {key for key in _EVENT_FIELDS if len(getattr(r.when, key) or ()) == 1} for _, r in chosen
    ]
    conditions = [rule.when for _, rule in chosen]
    true_by_value: dict[str, dict[str, tuple[str, ...]]] = {}
    true_by_tag: dict[str, tuple[str, ...]] = {tag: (tag_field,) for tag, tag_field in tag_fields.items()}
    for (key, values), fact_field in any_of.items():
        table = true_by_tag if key == "tags" else true_by_value.setdefault(key, {})
        for value in values:
            table[value] = (*table.get(value, ()), fact_field)
    return CompiledRuleset(
        name=f"sb_{ruleset.version}{name}",
        definition=definition,
        tag_fields=tag_fields,
        activity_fields=activity,
        event_fields=tuple(key for key in _EVENT_FIELDS if any(key in keys for keys in single)),
        bound_channels=tuple(c for c in CHANNELS if any(c in (w.bound or ()) for w in conditions)),
        any_of_fields={fact_field: test for test, fact_field in any_of.items()},
        true_by_value=true_by_value,
        true_by_tag=true_by_tag,
    )


def build_fact(compiled: CompiledRuleset, facts: Facts, request: int) -> dict[str, Any]:
    """The flat fact the compiled conditions test, for one delivery; the engine adds `sid` and `id`."""
    fact: dict[str, Any] = {REQUEST_FIELD: request}
    for key in compiled.event_fields:
        fact[key] = getattr(facts, key)
    for fact_field, (key, values) in compiled.any_of_fields.items():
        has = not facts.tags.isdisjoint(values) if key == "tags" else getattr(facts, key) in values
        fact[fact_field] = has
    for channel in compiled.bound_channels:
        fact[bound_field(channel)] = channel in facts.bound
    for tag, tag_field in compiled.tag_fields.items():
        fact[tag_field] = tag in facts.tags
    for activity, (kind, window) in compiled.activity_fields.items():
        fact[activity] = active_within(facts, window) if kind == "active" else inactive_for(facts, window)
    return fact


def sparse_fact(compiled: CompiledRuleset, facts: Facts, request: int) -> dict[str, Any]:
    """`build_fact` without its false booleans: what the engine posts.

    Every boolean condition is `== True`, and durable-rules fails a condition on a field the fact
    lacks, so leaving a false field out decides the same. Most fields of a large shard are false
    (one per value list, tag and channel), and each costs JSON encoding and parsing per decision.
    Only the fields that are true are looked up, through the tables inverted at compile time.
    """
    fact: dict[str, Any] = {REQUEST_FIELD: request}
    for key in compiled.event_fields:
        fact[key] = getattr(facts, key)
    for key, table in compiled.true_by_value.items():
        for fact_field in table.get(getattr(facts, key), ()):
            fact[fact_field] = True
    by_tag = compiled.true_by_tag
    for tag in facts.tags:
        for fact_field in by_tag.get(tag, ()):
            fact[fact_field] = True
    for channel in compiled.bound_channels:
        if channel in facts.bound:
            fact[bound_field(channel)] = True
    for activity, (kind, window) in compiled.activity_fields.items():
        if active_within(facts, window) if kind == "active" else inactive_for(facts, window):
            fact[activity] = True
    return fact


def bound_field(channel: str) -> str:
    return f"bound__{channel}"


def activity_field(kind: Activity, window: timedelta) -> str:
    return f"{kind}__{int(window.total_seconds())}s"


def _condition(
    rule: Rule, tag_fields: dict[str, str], any_of: dict[tuple[str, frozenset[str]], str]
) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = []
    when = rule.when
    for key in _EVENT_FIELDS:
        values = getattr(when, key)
        if values is not None:
            clauses.append({key: values[0]} if len(set(values)) == 1 else _any_of(key, values, any_of))
    for channel in when.bound or ():
        clauses.append({bound_field(channel): True})
    if when.tags_any is not None:
        tags = when.tags_any
        clauses.append({tag_fields[tags[0]]: True} if _one_tag(rule) else _any_of("tags", tags, any_of))
    if when.active_within is not None:
        clauses.append({activity_field("active", when.active_within): True})
    if when.inactive_for is not None:
        clauses.append({activity_field("inactive", when.inactive_for): True})
    if not clauses:
        # An empty `when` matches every delivery; every fact carries the request field.
        return {"$ex": {REQUEST_FIELD: 1}}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _any_of(key: str, values: Sequence[str], fields: dict[tuple[str, frozenset[str]], str]) -> dict[str, Any]:
    """`key` is one of `values`, as a boolean the fact carries (the same list shares one field)."""
    test = (key, frozenset(values))
    name = fields.setdefault(test, f"any__{key}__{len(fields)}")
    return {name: True}


def _one_tag(rule: Rule) -> bool:
    return rule.when.tags_any is not None and len(set(rule.when.tags_any)) == 1


def _tag_fields(tags: tuple[str, ...]) -> dict[str, str]:
    """Field names safe for durable-rules: a '.' in a field name would be read as a nested path."""
    fields: dict[str, str] = {}
    used: set[str] = set()
    for tag in tags:
        name = "tag__" + re.sub(r"[^A-Za-z0-9_]", "_", tag)
        if name in used:
            name = f"{name}__{len(used)}"
        used.add(name)
        fields[tag] = name
    return fields
