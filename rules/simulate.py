"""Replay a period of past events through candidate rules and compare with what actually happened.

History comes from ClickHouse: the events from `event_log`, their recipients (every message of the
event at step 0 with a user: the duplicate-event row has none), what actually went out to each
(`sent` / `delivered` rows at step 0) or why nothing did (`suppressed` / `capped` / `held_out` rows), and the
average cost of a send per channel in the period. The channels available to the candidate are the
configured ones (built-in channels and the providers file), as the worker's are, unless given.
Users, apps and last activity come from Redis as they are now. Caps are replayed in memory in event
order; quiet hours that drop are applied at each event's time.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from analytics.event_log import EventLog, LoggedEvent
from records.plan import DeliveryPlan, QuietHours
from records.topics import CHANNELS, address_user_id, message_id_for
from rules.engine import Decision, DecisionRequest, RuleEngine
from rules.schema import Ruleset
from state.users import User

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from settings import Settings

BATCH = 500


@dataclass(frozen=True)
class Actual:
    """What happened to one message: the channels it went out on at step 0, or why it went nowhere."""

    user_id: str
    channels: frozenset[str]
    suppressed: bool
    capped: bool
    held_out: bool = False
    """In a rule's control share: nothing sent, on purpose."""


@dataclass
class History:
    events: list[LoggedEvent]
    outcomes: dict[str, Actual]
    """By message id."""
    cost_per_channel: dict[str, float]
    recipients: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """(app, event_id) -> the user ids its messages went to."""


@dataclass
class Side:
    """Totals for one side of the comparison."""

    volume: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    capped: int = 0
    held_out: int = 0
    cost: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "volume": dict(sorted(self.volume.items())),
            "suppressed": self.suppressed,
            "capped": self.capped,
            "held_out": self.held_out,
            "estimated_cost": round(self.cost, 4),
        }


@dataclass
class SimulationReport:
    events: int = 0
    messages: int = 0
    actual: Side = field(default_factory=Side)
    candidate: Side = field(default_factory=Side)
    affected: set[str] = field(default_factory=set)
    """Recipients whose outcome differs."""
    examples: list[str] = field(default_factory=list)
    strategies: Counter[str] = field(default_factory=Counter)
    """Messages the candidate decided with each named strategy (the event's or the rule's)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "messages": self.messages,
            "actual": self.actual.as_dict(),
            "candidate": self.candidate.as_dict(),
            "candidate_strategies": dict(sorted(self.strategies.items())),
            "recipients_affected": len(self.affected),
            "examples": self.examples,
        }

    def render(self) -> str:
        channels = sorted(set(self.actual.volume) | set(self.candidate.volume))
        lines = [
            f"{self.events} events, {self.messages} messages replayed",
            "",
            f"{'':<22}{'actual':>10}{'candidate':>11}{'change':>9}",
        ]
        rows = [(f"sent on {c}", self.actual.volume[c], self.candidate.volume[c]) for c in channels]
        rows += [
            ("suppressed", self.actual.suppressed, self.candidate.suppressed),
            ("capped", self.actual.capped, self.candidate.capped),
            ("held out", self.actual.held_out, self.candidate.held_out),
        ]
        lines += [f"{name:<22}{a:>10}{b:>11}{b - a:>+9}" for name, a, b in rows]
        a_cost, b_cost = self.actual.cost, self.candidate.cost
        lines.append(f"{'estimated cost':<22}{a_cost:>10.2f}{b_cost:>11.2f}{b_cost - a_cost:>+9.2f}")
        if self.strategies:
            used = ", ".join(f"{name} {count}" for name, count in sorted(self.strategies.items()))
            lines += ["", f"candidate strategies: {used} (messages)"]
        lines += ["", f"recipients affected: {len(self.affected)}"]
        lines += [f"  {example}" for example in self.examples]
        return "\n".join(lines)


def load_history(client: Client, since: datetime, until: datetime) -> History:
    """The events accepted in [since, until) and what happened to each of their messages."""
    events = EventLog(client).read(since, until)
    period = {"since": since, "until": until}
    # Step 0 only: the candidate decides the decision's own sends, not the fallback steps after them.
    rows = client.query(
        "SELECT message_id, any(app), any(event_id), any(user_id), "
        "groupUniqArrayIf(channel, status IN ('sent', 'delivered') AND channel != ''), "
        "countIf(status = 'suppressed') > 0, countIf(status = 'capped') > 0, "
        "countIf(status = 'held_out') > 0 "
        "FROM message_events WHERE (app, event_id) IN (SELECT app, event_id FROM event_log "
        "WHERE event_time >= {since:DateTime64(3)} AND event_time < {until:DateTime64(3)}) AND step = 0 "
        "AND user_id != '' GROUP BY message_id",
        parameters=period,
    ).result_rows
    outcomes: dict[str, Actual] = {}
    by_event: dict[tuple[str, str], list[str]] = defaultdict(list)
    for mid, app, event_id, user, channels, suppressed, capped, held in rows:
        sent = frozenset(channels)
        # A send that a cap delayed and then let out was sent: capped only when nothing went out.
        outcomes[str(mid)] = Actual(
            str(user), sent, bool(suppressed) and not sent, bool(capped) and not sent, bool(held) and not sent
        )
        by_event[(str(app), str(event_id))].append(str(user))
    costs = client.query(
        "SELECT channel, avg(toFloat64(cost)) FROM message_events WHERE status = 'sent' AND channel != '' "
        "AND event_time >= {since:DateTime64(3)} AND event_time < {until:DateTime64(3)} GROUP BY channel",
        parameters=period,
    ).result_rows
    cost_per_channel = {str(channel): float(cost) for channel, cost in costs}
    return History(events, outcomes, cost_per_channel, dict(by_event))


def recipients(logged: LoggedEvent, history: History) -> list[tuple[str, User | None]]:
    """The event's recipients: raw addresses from its audience, or the users its messages went to."""
    audience = json.loads(logged.audience or "{}")
    raw = audience.get("addresses") if isinstance(audience, dict) else None
    if raw:
        found: list[tuple[str, User | None]] = []
        for item in raw:
            user_id = address_user_id(item["channel"], item["address"])
            found.append((user_id, User(user_id=user_id, bindings={item["channel"]: item["address"]})))
        return found
    event = logged.event
    return [(user_id, None) for user_id in history.recipients.get((event.app, event.event_id), ())]


def replay(
    history: History,
    ruleset: Ruleset,
    users: Mapping[str, User],
    app_channels: Mapping[str, frozenset[str]],
    last_active: Mapping[str, datetime],
    available: frozenset[str] = frozenset(CHANNELS),
) -> SimulationReport:
    """Decide every past message again with `ruleset`, with `available` channels, and total both sides."""
    report = SimulationReport(events=len(history.events))
    pending: list[tuple[LoggedEvent, str, DecisionRequest | None]] = []
    for logged in history.events:
        for user_id, raw_user in recipients(logged, history):
            user = raw_user or users.get(user_id)
            request = None
            if user is not None:
                request = DecisionRequest(
                    logged.event, user, app_channels.get(logged.event.app, frozenset()), available,
                    now=logged.event_time, last_active_at=last_active.get(user_id),
                )
            pending.append((logged, user_id, request))
    engine = RuleEngine(ruleset)
    caps = _CapCounter()
    for offset in range(0, len(pending), BATCH):
        chunk = pending[offset : offset + BATCH]
        asked = [request for _, _, request in chunk if request is not None]
        answers = iter(engine.decide(asked))
        for logged, user_id, request in chunk:
            decision = next(answers) if request is not None else None
            _tally(report, history, logged, user_id, request, decision, caps)
    return report


def _tally(
    report: SimulationReport,
    history: History,
    logged: LoggedEvent,
    user_id: str,
    request: DecisionRequest | None,
    decision: Decision | None,
    caps: _CapCounter,
) -> None:
    event = logged.event
    mid = message_id_for(event.app, event.event_id, user_id)
    report.messages += 1
    actual = history.outcomes.get(mid)
    if actual is not None:
        _add(report.actual, history, actual.channels, actual.suppressed, actual.capped, actual.held_out)
    held = decision is not None and decision.held_out
    if decision is None or request is None:
        channels: frozenset[str] = frozenset()
        suppressed, capped, why = True, False, "unknown user"
    else:
        channels = frozenset(c for c, _ in decision.channels)
        if decision.strategy:
            report.strategies[decision.strategy] += 1
        suppressed, capped, why = decision.suppressed and not held, False, "; ".join(decision.reasons[-1:])
        if channels and _quiet_drop(decision.plan.quiet_hours, request.user, logged.event_time):
            channels, suppressed, why = frozenset(), True, "quiet hours: dropped"
        if channels and not caps.admit(decision.plan, request, channels, logged.event_time):
            channels, capped, why = frozenset(), True, "capped"
    _add(report.candidate, history, channels, suppressed, capped, held)
    before = (
        (actual.channels, actual.suppressed, actual.capped, actual.held_out)
        if actual
        else (frozenset(), False, False, False)
    )
    if before != (channels, suppressed, capped, held):
        report.affected.add(user_id)
        if len(report.examples) < 10:
            report.examples.append(
                f"{event.app}/{event.event_id} {user_id}: {_outcome(*before)} -> "
                f"{_outcome(channels, suppressed, capped, held)} ({why})"
            )


def _add(
    side: Side, history: History, channels: frozenset[str], suppressed: bool, capped: bool, held_out: bool
) -> None:
    side.volume.update(channels)
    side.cost += sum(history.cost_per_channel.get(c, 0.0) for c in channels)
    side.suppressed += suppressed and not channels
    side.capped += capped
    side.held_out += held_out


def _outcome(channels: frozenset[str], suppressed: bool, capped: bool, held_out: bool = False) -> str:
    if channels:
        return "+".join(sorted(channels))
    return "capped" if capped else "suppressed" if suppressed else "held out" if held_out else "nothing"


def _quiet_drop(quiet: QuietHours | None, user: User, at: datetime) -> bool:
    if quiet is None or quiet.action != "drop":
        return False
    local = at.astimezone(ZoneInfo(user.timezone)).time()
    return in_window(local, quiet.start, quiet.end)


def in_window(moment: time, start: time, end: time) -> bool:
    """Whether a clock time falls in [start, end), a window that may span midnight."""
    return start <= moment < end if start < end else moment >= start or moment < end


class _CapCounter:
    """Sliding-window counts per cap, limit and scope key, replayed in event order."""

    def __init__(self) -> None:
        self._sent: dict[tuple[str, int, tuple[str, ...]], deque[datetime]] = defaultdict(deque)

    def admit(
        self, plan: DeliveryPlan, request: DecisionRequest, channels: frozenset[str], at: datetime
    ) -> bool:
        """Count the delivery if every cap has room for it; refuse it (counting nothing) otherwise."""
        keys = []
        for cap in plan.caps:
            for channel in sorted(channels) if "channel" in cap.scope else [""]:
                key = tuple(self._scope_value(s, request, channel) for s in cap.scope)
                for index, limit in enumerate(cap.limits):
                    window = self._sent[(cap.id, index, key)]
                    while window and at - window[0] >= limit.window:
                        window.popleft()
                    if len(window) >= limit.count:
                        return False
                    keys.append((window, at))
        for window, moment in keys:
            window.append(moment)
        return True

    @staticmethod
    def _scope_value(scope: str, request: DecisionRequest, channel: str) -> str:
        event = request.event
        values = {"user": request.user.user_id, "channel": channel, "category": event.category,
                  "app": event.app, "campaign": event.campaign}
        return values[scope]


async def run_simulation(
    settings: Settings,
    ruleset: Ruleset,
    since: datetime,
    until: datetime,
    available: frozenset[str] | None = None,
) -> SimulationReport:
    """The simulation against the configured ClickHouse and Redis; `available` defaults to the
    configured channels (`channels.registry.configured_channels`)."""
    from analytics.connection import open_reader
    from channels.registry import configured_channels
    from state.connection import open_redis

    # Through the analytics service while it runs (it holds the embedded engine), else directly.
    client = open_reader(settings)
    try:
        history = await asyncio.to_thread(load_history, client, since, until)
    finally:
        client.close()
    redis = open_redis(settings.redis)
    try:
        channels = available if available is not None else configured_channels(settings)
        return await simulate(history, redis, ruleset, channels)
    finally:
        await redis.aclose()


async def simulate(
    history: History, redis: Redis, ruleset: Ruleset, available: frozenset[str]
) -> SimulationReport:
    """Replay `history` through `ruleset` with the users, apps and last activity Redis holds now (the
    command line and the console both come here)."""
    from state.apps import AppRegistry
    from state.engagement import EngagementHistory
    from state.users import UserDirectory

    user_ids = sorted({a.user_id for a in history.outcomes.values() if not a.user_id.startswith("addr:")})
    users = await UserDirectory(redis).get_many(user_ids)
    registry = AppRegistry(redis)
    apps: dict[str, frozenset[str]] = {}
    for name in {e.event.app for e in history.events}:
        app = await registry.get(name)
        apps[name] = frozenset(app.channels) if app is not None else frozenset()
    active = await EngagementHistory(redis).last_active(user_ids)
    return await asyncio.to_thread(replay, history, ruleset, users, apps, active, available)
