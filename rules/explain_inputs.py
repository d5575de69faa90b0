"""What an explanation is asked about, built the same way for `switchboard rules explain` and the
console's Rules page: the event as given, the person as Redis holds them (with their app's channels and
last activity), and the standing of the budgets over the event's app and campaign."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from records.topics import CHANNELS, EventCore
from rules.budgets import BatchBudgets
from rules.engine import DecisionRequest
from state.users import User


class ExplainInputError(ValueError):
    """An event, person or channel list that cannot be explained; the message names what is wrong."""


@dataclass(frozen=True)
class Person:
    """The person a decision is explained for: their profile, their app's channels (None: the app is not
    registered, or the person came from a file) and when they were last active."""

    user: User
    app_channels: frozenset[str] | None = None
    last_active: datetime | None = None


def event_of(data: Any) -> EventCore:
    """The event core of a JSON/YAML object; an audience is dropped (the person is given instead)."""
    if not isinstance(data, dict):
        raise ExplainInputError("must be a JSON object")
    fields = {"event_id": "explain", **{k: v for k, v in data.items() if k != "audience"}}
    try:
        return EventCore.model_validate(fields)
    except ValidationError as exc:
        raise ExplainInputError(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None


def channels_of(text: str) -> frozenset[str]:
    """Channel names from `email, sms`; an unknown one is refused, naming the known ones."""
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - set(CHANNELS))
    if unknown:
        raise ExplainInputError(f"unknown channel(s) {', '.join(unknown)} (known: {', '.join(CHANNELS)})")
    return names


async def person_in_redis(redis: Redis, user_id: str, app: str) -> Person | None:
    """The person as Redis holds them now, with the app's channels and their last activity; None for
    nobody by that id."""
    from state.apps import AppRegistry
    from state.engagement import EngagementHistory
    from state.users import UserDirectory

    found = (await UserDirectory(redis).get_many([user_id])).get(user_id)
    if found is None:
        return None
    registered = await AppRegistry(redis).get(app)
    seen = (await EngagementHistory(redis).last_active([user_id])).get(user_id)
    return Person(found, frozenset(registered.channels) if registered else None, seen)


async def budget_standing(redis: Redis, event: EventCore, costs: Mapping[str, float]) -> BatchBudgets:
    """The standings of the budgets over the event's app and campaign, priced with `costs` (a channel's
    first provider's price per message, `channels.costs`)."""
    from state.budgets import BudgetStore

    store = BudgetStore(redis)
    under = (await store.applying([(event.app, event.campaign)])).get((event.app, event.campaign), [])
    return BatchBudgets(await store.standings(under), costs)


def decision_request(
    event: EventCore,
    person: Person,
    now: datetime,
    *,
    last_active: datetime | None = None,
    allowed: frozenset[str] | None = None,
    available: frozenset[str] | None = None,
) -> DecisionRequest:
    """The request the engine decides: the app's channels unless `allowed` is given, every channel
    available unless `available` is, the person's own last activity unless `last_active` is."""
    return DecisionRequest(
        event=event,
        user=person.user,
        allowed_channels=allowed or person.app_channels or frozenset(CHANNELS),
        available_channels=available or frozenset(CHANNELS),
        now=now,
        last_active_at=last_active or person.last_active,
    )
