"""Split a large ruleset into shards durable-rules can hold, and route each delivery to one of them.

durable-rules builds one network per ruleset and fails on a few hundred rules (error 107, or minutes
of building). Most rules of a large set name the event's `type`, `app` or `category`, and a delivery
has one value of each: a rule listing other values cannot match it. So rules are routed by those
values, like a decision tree: a node asks one event field, each child holds the rules listing the
values it answers for plus the rules not asking that field; a leaf is a shard of at most
`MAX_SHARD_RULES` rules. Every rule keeps its `pri` from its place in the whole ruleset, so the winner
in the shard is the winner the whole ruleset would pick. A leaf that no field splits further becomes a
chain of shards in rule order, tried one after the other until one matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rules.facts import Facts
from rules.schema import Rule

MAX_SHARD_RULES = 64
"""Rules per durable-rules ruleset. Measured with conjunction-only conditions (rules/compiler.py)."""
MAX_FACT_FIELDS = 200
"""Fields of a fact posted to one shard: durable-rules refuses an event of more (error 302, 255 here)."""
ROUTE_FIELDS = ("type", "app", "category", "template", "campaign", "priority", "channel_pref")
"""Event fields a delivery has exactly one value of, in the order they are tried for splitting."""


@dataclass(frozen=True)
class RouteNode:
    """A node of the routing tree: an event field to ask, or (`asks` None) a leaf's chain of shards."""

    asks: str | None
    children: dict[str, RouteNode] = field(default_factory=dict)
    other: RouteNode | None = None
    """Where values no rule lists go."""
    chain: tuple[int, ...] = ()
    """Leaf: the shards (by number) tried in order."""


@dataclass(frozen=True)
class ShardPlan:
    """The shards (each a list of rule positions, ascending) and the tree that routes a delivery."""

    shards: tuple[tuple[int, ...], ...]
    root: RouteNode

    def route(self, facts: Facts) -> tuple[int, ...]:
        """The shards to try for this delivery, in order; the first match among them wins."""
        node = self.root
        while node.asks is not None:
            value = getattr(facts, node.asks)
            child = node.children.get(value)
            node = child if child is not None else node.other  # type: ignore[assignment]
        return node.chain


def plan_shards(rules: Sequence[Rule], limit: int = MAX_SHARD_RULES) -> ShardPlan:
    """Split `rules` (in the order they are tried) into shards of at most `limit` rules."""
    builder = _Builder(rules, limit)
    root = builder.node(tuple(range(len(rules))), ROUTE_FIELDS)
    return ShardPlan(tuple(builder.shards), root)


class _Builder:
    def __init__(self, rules: Sequence[Rule], limit: int) -> None:
        self.rules = rules
        self.limit = limit
        self.shards: list[tuple[int, ...]] = []
        self._numbers: dict[tuple[int, ...], int] = {}

    def node(self, positions: tuple[int, ...], fields: tuple[str, ...]) -> RouteNode:
        if self._fits(positions):
            return RouteNode(None, chain=(self._shard(positions),))
        split = self._best_split(positions, fields)
        if split is None:
            chunks: list[tuple[int, ...]] = []
            for position in positions:
                if chunks and self._fits((*chunks[-1], position)):
                    chunks[-1] = (*chunks[-1], position)
                else:
                    chunks.append((position,))
            return RouteNode(None, chain=tuple(self._shard(chunk) for chunk in chunks))
        key, general, by_value = split
        rest = tuple(f for f in fields if f != key)
        children: dict[str, RouteNode] = {}
        # Values are packed together while their rules fit one shard beside the general rules.
        room = max(self.limit - len(general), self.limit // 4)
        bin_values: list[str] = []
        bin_rules: set[int] = set()
        for value, listed in by_value.items():
            if bin_values and len(bin_rules | set(listed)) > room:
                self._close(bin_values, bin_rules, general, rest, children)
                bin_values, bin_rules = [], set()
            bin_values.append(value)
            bin_rules.update(listed)
        if bin_values:
            self._close(bin_values, bin_rules, general, rest, children)
        return RouteNode(key, children=children, other=self.node(general, rest))

    def _fits(self, positions: tuple[int, ...]) -> bool:
        """Few enough rules, and few enough fields on the fact they test (an upper bound)."""
        if len(positions) > self.limit:
            return False
        tests: set[tuple[object, ...]] = set()
        for position in positions:
            when = self.rules[position].when
            for key in (*ROUTE_FIELDS, "tags_any"):
                values = getattr(when, key)
                if values is not None:
                    tests.add((key, values[0]) if len(set(values)) == 1 else (key, frozenset(values)))
            tests.update(("bound", channel) for channel in when.bound or ())
            tests.add(("active", when.active_within))
            tests.add(("inactive", when.inactive_for))
        return len(tests) + 3 <= MAX_FACT_FIELDS  # and the request number, session and id

    def _close(
        self,
        values: list[str],
        listed: set[int],
        general: tuple[int, ...],
        rest: tuple[str, ...],
        children: dict[str, RouteNode],
    ) -> None:
        child = self.node(tuple(sorted(listed.union(general))), rest)
        for value in values:
            children[value] = child

    def _best_split(
        self, positions: tuple[int, ...], fields: tuple[str, ...]
    ) -> tuple[str, tuple[int, ...], dict[str, list[int]]] | None:
        """The field whose largest child is smallest, if asking it leaves any child smaller."""
        best: tuple[int, str, tuple[int, ...], dict[str, list[int]]] | None = None
        for key in fields:
            general: list[int] = []
            by_value: dict[str, list[int]] = {}
            for position in positions:
                values = getattr(self.rules[position].when, key)
                if values is None:
                    general.append(position)
                for value in dict.fromkeys(values or ()):
                    by_value.setdefault(value, []).append(position)
            if not by_value:
                continue
            largest = len(general) + max(len(listed) for listed in by_value.values())
            if largest < len(positions) and (best is None or largest < best[0]):
                best = (largest, key, tuple(general), by_value)
        return None if best is None else best[1:]

    def _shard(self, positions: tuple[int, ...]) -> int:
        number = self._numbers.get(positions)
        if number is None:
            number = self._numbers[positions] = len(self.shards)
            self.shards.append(positions)
        return number
