"""What ClickHouse knows about a message's life: the accepted event from `event_log`, then every
transition in `message_events` (decided with rule and reason, suppressed / capped / deferred with
theirs, each dispatch and provider attempt, receipts, fallback steps, the conversion), in order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from clickhouse_connect.driver.client import Client

MAX_MESSAGES: Final = 50
"""A `why` for a person without a message or event shows their latest messages, at most this many."""

_TRANSITIONS = """
SELECT event_time, message_id, event_id, app, user_id, channel, provider, status, reason, rule_id,
       rule_version, template, campaign, attempt, step, variant, cost
FROM message_events
WHERE message_id IN {ids:Array(String)} AND ({app:String} = '' OR app = {app:String})
ORDER BY event_time, step, attempt, status
LIMIT 1 BY message_id, channel, status, attempt, step
"""
_MESSAGES_OF_USER = """
SELECT message_id FROM message_events
WHERE user_id = {user:String} AND ({app:String} = '' OR app = {app:String})
  AND ({event:String} = '' OR event_id = {event:String})
GROUP BY message_id ORDER BY min(event_time) DESC LIMIT {limit:UInt32}
"""
_EVENTS = """
SELECT event_time, app, event_id, payload, audience FROM event_log
WHERE (app, event_id) IN {keys:Array(Tuple(String, String))}
ORDER BY event_time LIMIT 1 BY app, event_id
"""


@dataclass(frozen=True)
class Transition:
    """One row of `message_events`: a step in a message's life, with its reason where it has one."""

    at: datetime
    message_id: str
    event_id: str
    app: str
    user_id: str
    channel: str
    provider: str
    status: str
    reason: str
    rule_id: str
    rule_version: str
    template: str
    campaign: str
    attempt: int
    step: int
    variant: str
    cost: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat(), "cost": str(self.cost)}


@dataclass(frozen=True)
class AcceptedEvent:
    """The event as ingest accepted it (`event_log`), the first link of every message it became."""

    at: datetime
    app: str
    event_id: str
    event: dict[str, Any]
    audience: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


def message_ids_of_user(
    client: Client,
    user_id: str,
    *,
    event_id: str | None = None,
    app: str | None = None,
    limit: int = MAX_MESSAGES,
) -> list[str]:
    """The person's messages, newest first (those of one event when `event_id` is given)."""
    parameters = {"user": user_id, "event": event_id or "", "app": app or "", "limit": limit}
    return [str(row[0]) for row in client.query(_MESSAGES_OF_USER, parameters=parameters).result_rows]


def transitions(client: Client, message_ids: list[str], app: str | None = None) -> list[Transition]:
    """Every transition of these messages in time order, each stored duplicate once; only `app`'s if given."""
    if not message_ids:
        return []
    result = client.query(_TRANSITIONS, parameters={"ids": message_ids, "app": app or ""})
    return [
        Transition(
            at=_utc(row[0]),
            message_id=row[1],
            event_id=row[2],
            app=row[3],
            user_id=row[4],
            channel=row[5],
            provider=row[6],
            status=row[7],
            reason=row[8],
            rule_id=row[9],
            rule_version=row[10],
            template=row[11],
            campaign=row[12],
            attempt=int(row[13]),
            step=int(row[14]),
            variant=row[15],
            cost=Decimal(str(row[16])).normalize() if row[16] else Decimal(0),
        )
        for row in result.result_rows
    ]


def accepted_events(client: Client, keys: set[tuple[str, str]]) -> list[AcceptedEvent]:
    """The logged events for these (app, event_id) pairs, oldest first; an unreadable payload kept raw."""
    if not keys:
        return []
    result = client.query(_EVENTS, parameters={"keys": sorted(keys)})
    return [
        AcceptedEvent(at=_utc(at), app=app, event_id=event_id, event=_json(payload), audience=_json(audience))
        for at, app, event_id, payload, audience in result.result_rows
    ]


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}
    return value if isinstance(value, dict) else {"value": value}


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
