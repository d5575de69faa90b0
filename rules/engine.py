"""Decide the channels of each delivery: durable-rules picks the winning rule, Python applies it.

durable-rules is not thread-safe, so a `RuleEngine` is used from one thread only. A large ruleset is
held as several durable-rules rulesets (`rules/shards.py`); each delivery is posted to the one its
event routes it to, in one batch per ruleset.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from durable.engine import Host

from records.plan import DeliveryPlan
from records.topics import EventCore
from rules.apply import Policies, apply_rule, unknown_strategy_reason
from rules.compiler import NO_MATCH_RULE, REQUEST_FIELD, CompiledRuleset, compile_ruleset, sparse_fact
from rules.facts import Facts, facts_of
from rules.schema import Rule, Ruleset
from rules.shards import ShardPlan, plan_shards
from state.users import User

SESSION = "0"
"""The one session of each durable-rules ruleset.

A fact is a pre-enriched event that one single-pattern rule consumes at once (the catch-all rule
takes any other), so a session keeps nothing from one decision to the next: more sessions would only
split a batch into more engine calls (each ~20 µs) and cost ~85 KB each.
"""


@dataclass(frozen=True)
class DecisionRequest:
    """One delivery to decide: the event, its recipient and what the app and providers permit."""

    event: EventCore
    user: User
    allowed_channels: frozenset[str]
    """Channels the app is authorised to use."""
    available_channels: frozenset[str]
    """Channels with a configured provider."""
    now: datetime | None = None
    """When the decision is made (defaults to the clock); rules on time and activity use it."""
    last_active_at: datetime | None = None
    """When the user was last seen active (read, clicked, opened, app activity), if ever."""
    whitelisted: bool = False
    """The recipient (or an address they are reached at) is on the whitelist (白名单)."""


@dataclass(frozen=True)
class Decision:
    """Where to send one delivery, which rule said so, and why anything was dropped."""

    channels: tuple[tuple[str, str], ...]
    """(channel, address) pairs, in the order the rule named them."""
    rule_id: str
    rule_version: str
    suppressed: bool
    reasons: tuple[str, ...]
    plan: DeliveryPlan = field(default_factory=DeliveryPlan)
    """Timing, caps, fallback steps, offline keep and variant; executed by decide, send and track."""
    template: str | None = None
    """A template other than the event's, from the rule or its variant; None: the event's own."""
    held_out: bool = False
    """The recipient is in the rule's control share: suppressed on purpose, recorded `held_out`."""
    reachable: tuple[tuple[str, str], ...] = ()
    """The rule's channels the recipient can be reached on, when its budget may pick a cheaper one."""
    strategy: str = ""
    """The named strategy that gave the channels and fallback steps ("" for none)."""


class _QuietHost(Host):  # type: ignore[misc]
    """A Host without its dispatch threads: they would run actions off our thread, racing `decide`."""

    def _run(self) -> None:
        pass


class RuleEngine:
    """Synchronous rule engine owning a durable-rules Host; call it from one thread only."""

    _ruleset: Ruleset
    _plan: ShardPlan
    _compiled: list[CompiledRuleset]
    _rules: dict[str, Rule]
    _policies: Policies

    def __init__(self, ruleset: Ruleset) -> None:
        self._host = _QuietHost()
        self._registered: set[str] = set()
        self._matched: dict[int, str] = {}
        self._fact_ids = itertools.count()
        self._used_sessions: set[str] = set()
        """The rulesets posted to, whose session is freed on reload."""
        self._install(ruleset)

    @property
    def ruleset(self) -> Ruleset:
        return self._ruleset

    @property
    def shards(self) -> int:
        """How many durable-rules rulesets hold the rules."""
        return len(self._compiled)

    def reload(self, ruleset: Ruleset) -> None:
        """Switch to `ruleset` (already validated by the loader); the old sessions are freed."""
        if ruleset.version == self._ruleset.version:
            self._ruleset = ruleset
            self._policies = Policies(ruleset)
            return
        self._install(ruleset)
        for name in self._used_sessions:
            self._host.delete_state(name, SESSION)
        self._used_sessions.clear()

    def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        """One decision per request, in order."""
        facts = [
            facts_of(r.event, r.user, r.now, r.last_active_at, whitelisted=r.whitelisted) for r in requests
        ]
        winners = self._match(requests, facts)
        return [self._apply(*triple) for triple in zip(requests, facts, winners, strict=True)]

    def _install(self, ruleset: Ruleset) -> None:
        plan = plan_shards(ruleset.rules)
        single = len(plan.shards) == 1
        compiled = [
            compile_ruleset(ruleset, None if single else positions, "" if single else f"_s{number}")
            for number, positions in enumerate(plan.shards)
        ]
        for shard in compiled:
            # durable-rules cannot register a name twice: a version seen before is still registered.
            if shard.name not in self._registered:
                definition: dict[str, Any] = {
                    name: {**body, "run": self._recorder(name)} for name, body in shard.definition.items()
                }
                self._host.set_rulesets({shard.name: definition})
                self._registered.add(shard.name)
        self._ruleset = ruleset
        self._plan = plan
        self._compiled = compiled
        self._rules = {rule.id: rule for rule in ruleset.rules}
        self._policies = Policies(ruleset)

    def _recorder(self, rule_name: str) -> Callable[[Any], None]:
        matched = self._matched
        winner = "" if rule_name == NO_MATCH_RULE else rule_name

        # durable-rules swallows exceptions raised here, so this only records.
        def record(closure: Any) -> None:
            matched[closure.m[REQUEST_FIELD]] = winner

        return record

    def _match(self, requests: Sequence[DecisionRequest], facts: Sequence[Facts]) -> list[Rule | None]:
        """The winning rule of each request (None: no rule matched), posting one batch per shard.

        A request whose shard chain has several links goes on to the next shard while none matched.
        """
        chains = [self._plan.route(known) for known in facts]
        winners: dict[int, str] = {}
        pending = [(index, 0) for index in range(len(requests))]
        while pending:
            by_shard: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for index, link in pending:
                shard = chains[index][link]
                fact = sparse_fact(self._compiled[shard], facts[index], index)
                # A unique id per fact: durable-rules refuses a second fact with the same id as "observed".
                fact["sid"], fact["id"] = SESSION, f"f{next(self._fact_ids)}"
                by_shard[shard].append(fact)
            self._matched.clear()
            for shard, batch in by_shard.items():
                name = self._compiled[shard].name
                self._used_sessions.add(name)
                self._host.post_batch(name, batch)
            missing = [index for index, _ in pending if index not in self._matched]
            if missing:
                raise RuntimeError(
                    f"rule engine returned no decision for {len(missing)} of {len(requests)} requests"
                )
            winners.update(self._matched)
            pending = [
                (index, link + 1)
                for index, link in pending
                if not self._matched[index] and link + 1 < len(chains[index])
            ]
        return [self._rules.get(winners[index]) for index in range(len(requests))]

    def _apply(self, request: DecisionRequest, facts: Facts, rule: Rule | None) -> Decision:
        version = self._ruleset.version
        if rule is None:
            asked = request.event.strategy
            if asked is not None and asked not in self._policies.strategies:
                reason = unknown_strategy_reason(asked, sorted(self._policies.strategies))
                return Decision((), "", version, True, ("no rule matched", reason))
            return Decision((), "", version, True, ("no rule matched",))
        outcome = apply_rule(self._policies, rule, request, facts)
        return Decision(
            outcome.channels, rule.id, version, outcome.suppressed, outcome.reasons,
            plan=outcome.plan, template=outcome.template, held_out=outcome.held_out,
            reachable=outcome.reachable, strategy=outcome.strategy,
        )


class AsyncRuleEngine:
    """A `RuleEngine` kept on one dedicated thread, for asyncio workers."""

    def __init__(self, ruleset: Ruleset) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rule-engine")
        # Built on the engine thread too: every durable-rules call stays on that one thread.
        self._engine = self._executor.submit(RuleEngine, ruleset).result()

    @property
    def ruleset(self) -> Ruleset:
        return self._engine.ruleset

    async def decide(self, requests: Sequence[DecisionRequest]) -> list[Decision]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._engine.decide, list(requests))

    async def reload(self, ruleset: Ruleset) -> None:
        """Swap to `ruleset` between two batches; a broken file is refused by the loader before this."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._engine.reload, ruleset)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def engine_problems(ruleset: Ruleset) -> list[tuple[str, str]]:
    """What durable-rules refuses of `ruleset` as deployed, as (the first rule of the shard, why).

    Every shard is built, and sent one event that meets every condition it tests, so an engine limit
    is found by `rules check` rather than on a live event.
    """
    try:
        engine = RuleEngine(ruleset)
    except Exception as exc:  # durable-rules raises bare Exceptions with its error code
        first = ruleset.rules[0].id if ruleset.rules else ""
        return [(first, f"the rule engine refuses this ruleset: {exc}")]
    problems: list[tuple[str, str]] = []
    for number, compiled in enumerate(engine._compiled):
        probe: dict[str, Any] = {"sid": "probe", "id": "probe", REQUEST_FIELD: -1}
        for body in compiled.definition.values():
            condition = body["all"][0]["m"]
            for clause in condition.get("$and", [condition]):
                probe.update({k: v for k, v in clause.items() if not k.startswith("$")})
        try:
            engine._host.post(compiled.name, probe)
        except Exception as exc:
            first = ruleset.rules[engine._plan.shards[number][0]].id
            if any(first == rule_id for rule_id, _ in problems):
                continue  # the general rules head several shards: one error each is enough
            others = len(compiled.definition) - 2
            message = f"the rule engine cannot decide with this rule and {others} others in its shard: {exc}"
            problems.append((first, message))
    return problems
