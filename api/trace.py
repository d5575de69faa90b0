"""Why a person got (or did not get) a message: ClickHouse's record of what happened, joined with what
Redis still holds pending for it (a scheduled delivery, parked dispatches, an armed fallback chain).

Above both analytics/ and state/, so `switchboard why` and `GET /v1/messages/{id}/trace` share it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from redis.asyncio import Redis

from analytics.trace import (
    AcceptedEvent,
    Transition,
    accepted_events,
    message_ids_of_user,
    transitions,
)
from api.analytics_reader import LazyReader
from records.topics import Delivery, Dispatch
from state.fallback import ArmedChain, FallbackSchedule
from state.schedule import DeliverySchedule, Held, ParkedDispatches


@dataclass(frozen=True)
class Pending:
    """What Redis still holds for one message: each is empty when nothing waits."""

    scheduled: list[Held[Delivery]] = field(default_factory=list)
    parked: list[Held[Dispatch]] = field(default_factory=list)
    fallback: ArmedChain | None = None

    def __bool__(self) -> bool:
        return bool(self.scheduled or self.parked or (self.fallback and self.fallback.next_step))

    def as_dict(self) -> dict[str, Any]:
        chain = self.fallback
        return {
            "scheduled": [{"due": _iso(h.due), "claimed": h.due is None} for h in self.scheduled],
            "parked": [
                {"channel": h.item.channel, "step": h.item.step, "due": _iso(h.due), "claimed": h.due is None}
                for h in self.parked
            ],
            "fallback": None
            if chain is None
            else {
                "next_step": chain.next_step or None,
                "next_due": _iso(chain.next_due),
                "reached": chain.reached,
                "in_flight": chain.in_flight,
                "steps": [
                    {
                        "step": s.index,
                        "condition": s.condition,
                        "due": _iso(s.due),
                        "state": step_state(chain, s.index),
                    }
                    for s in chain.steps
                ],
            },
        }


def step_state(chain: ArmedChain, index: int) -> str:
    """`resolved` (its time came: fired or skipped), `pending`, `waiting` (after the pending one) or
    `cancelled` (a receipt made its condition impossible before it was due)."""
    step = chain.steps[index - 1]
    if step.resolved:
        return "resolved"
    if index == chain.next_step:
        return "pending"
    if chain.next_step and index > chain.next_step:
        return "waiting"
    return "cancelled"


@dataclass(frozen=True)
class MessageTrace:
    """One message's chain in order: the accepted event, every transition, then what is still pending."""

    message_id: str
    event: AcceptedEvent | None
    transitions: list[Transition]
    pending: Pending

    @property
    def app(self) -> str:
        return next((t.app for t in self.transitions if t.app), "")

    @property
    def user_id(self) -> str:
        return next((t.user_id for t in self.transitions if t.user_id), "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "app": self.app,
            "user_id": self.user_id,
            "event": self.event.as_dict() if self.event else None,
            "transitions": [t.as_dict() for t in self.transitions],
            "pending": self.pending.as_dict(),
        }


class Tracer:
    """Builds traces from the ClickHouse reader and Redis, both passed in."""

    def __init__(self, reader: LazyReader, redis: Redis) -> None:
        self._reader = reader
        self._schedule = DeliverySchedule(redis)
        self._parked = ParkedDispatches(redis)
        self._fallback = FallbackSchedule(redis)

    async def messages_of(
        self, user_id: str, *, event_id: str | None = None, app: str | None = None
    ) -> list[str]:
        return await asyncio.to_thread(
            self._reader.run, lambda c: message_ids_of_user(c, user_id, event_id=event_id, app=app)
        )

    async def trace(self, message_ids: list[str], app: str | None = None) -> list[MessageTrace]:
        """The traces of these messages (only `app`'s rows and pending items when given), in the given order;
        a message neither ClickHouse nor Redis knows is left out."""

        def read(client: Client) -> tuple[list[Transition], list[AcceptedEvent]]:
            found = transitions(client, message_ids, app=app)
            return found, accepted_events(client, {(t.app, t.event_id) for t in found if t.event_id})

        found, events = await asyncio.to_thread(self._reader.run, read)
        by_event = {(e.app, e.event_id): e for e in events}
        traces: list[MessageTrace] = []
        for message_id in message_ids:
            mine = [t for t in found if t.message_id == message_id]
            pending = await self.pending(message_id, app, owned=bool(mine))
            if not mine and not pending:
                continue
            first = next((t for t in mine if t.event_id), None)
            event = by_event.get((first.app, first.event_id)) if first else None
            traces.append(MessageTrace(message_id, event, mine, pending))
        return traces

    async def pending(self, message_id: str, app: str | None = None, owned: bool = False) -> Pending:
        """What Redis holds for the message; with `app`, only that app's items, and its fallback chain
        only if the message is known to be the app's (`owned`: ClickHouse says so) or the chain says so."""
        scheduled = await self._schedule.held([message_id])
        parked = await self._parked.held_for(message_id)
        chain = await self._fallback.armed(message_id)
        if app is not None:  # an app sees its own messages only, in Redis as in ClickHouse
            scheduled = [h for h in scheduled if h.item.event.app == app]
            parked = [h for h in parked if h.item.event.app == app]
            if chain is not None and not (owned or scheduled or parked or chain.app == app):
                chain = None
        return Pending(scheduled, parked, chain)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def describe(trace: MessageTrace) -> list[str]:
    """The trace as lines for a terminal: the event, one line per transition, then what is pending."""
    lines = [f"message {trace.message_id}  app {trace.app or '?'}  user {trace.user_id or '?'}"]
    if trace.event is not None:
        event = trace.event.event
        lines.append(
            f"  {trace.event.at:%Y-%m-%d %H:%M:%S}  accepted event {trace.event.event_id} "
            f"({event.get('type', '?')}, {event.get('category', '?')}, template {event.get('template', '?')})"
        )
    for t in trace.transitions:
        where = "/".join(part for part in (t.channel, t.provider) if part) or "-"
        detail = []
        if t.rule_id:
            detail.append(f"rule {t.rule_id}@{t.rule_version}" if t.rule_version else f"rule {t.rule_id}")
        if t.step:
            detail.append(f"fallback step {t.step}")
        if t.attempt:
            detail.append(f"attempt {t.attempt}")
        if t.variant:
            detail.append(f"variant {t.variant}")
        if t.cost:
            detail.append(f"cost {t.cost}")
        if t.reason:
            detail.append(f"because {t.reason}")
        line = f"  {t.at:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f"  {t.status:<13} {where:<20} {'; '.join(detail)}"
        lines.append(line.rstrip())
    pending = trace.pending
    for held in pending.scheduled:
        lines.append(f"  pending: scheduled delivery due {_when(held.due)}")
    for parked in pending.parked:
        lines.append(
            f"  pending: dispatch parked on {parked.item.channel} (step {parked.item.step}) "
            f"due {_when(parked.due)}"
        )
    if pending.fallback is not None:
        chain = pending.fallback
        for step in chain.steps:
            lines.append(
                f"  fallback step {step.index} ({step.condition}) due {step.due:%Y-%m-%d %H:%M:%S}: "
                f"{step_state(chain, step.index)} (message reached: {chain.reached})"
            )
    if not pending:
        lines.append("  nothing pending in Redis")
    return lines


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "now (claimed by a worker)"
