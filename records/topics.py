"""The records that travel on the flow's topics, validated with pydantic at every edge.

`events` carries `Event`; `deliveries` carries `Delivery` (one per recipient, keyed by user id);
`dispatch` carries `Dispatch` (one per channel the decision chose); `receipts` carries `Receipt`
(one per state transition, the row shape of ClickHouse `message_events`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from records.plan import DeliveryPlan
from records.vocabulary import (
    CATEGORIES,
    CHANNELS,
    PRIORITIES,
    STATUSES,
    Category,
    ChannelName,
    Name,
    Priority,
    Status,
)

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "PRIORITIES",
    "STATUSES",
    "Audience",
    "Category",
    "ChannelName",
    "Delivery",
    "DeliveryPlan",
    "Dispatch",
    "Event",
    "EventCore",
    "Name",
    "Priority",
    "RawAddress",
    "Receipt",
    "Status",
    "message_id_for",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RawAddress(_Strict):
    """A recipient known only by an address (no user profile), e.g. an external email."""

    channel: ChannelName
    address: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class Audience(_Strict):
    """Who an event is for: exactly one of the selectors."""

    user_ids: list[Name] | None = None
    tags: list[Name] | None = None
    segment: Name | None = None
    all: bool = False
    addresses: list[RawAddress] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Audience:
        chosen = [
            name
            for name, value in (
                ("user_ids", self.user_ids),
                ("tags", self.tags),
                ("segment", self.segment),
                ("all", self.all or None),
                ("addresses", self.addresses),
            )
            if value
        ]
        if len(chosen) != 1:
            raise ValueError(
                "audience needs exactly one non-empty selector of user_ids, tags, segment, all, "
                f"addresses; got {chosen or 'none'}"
            )
        return self


class EventCore(_Strict):
    """What every delivery of an event carries: the event without its audience."""

    event_id: Name
    app: Name
    type: Name
    template: Name
    data: dict[str, Any] = Field(default_factory=dict)
    category: Category
    priority: Priority = "normal"
    send_at: datetime | None = None
    campaign: Annotated[str, StringConstraints(max_length=128)] = ""
    channels: list[ChannelName] | None = None

    @model_validator(mode="after")
    def _aware_send_at(self) -> EventCore:
        if self.send_at is not None and self.send_at.tzinfo is None:
            raise ValueError("send_at must carry a timezone offset, e.g. 2026-11-23T08:00:00+08:00")
        return self


class Event(EventCore):
    """The contract of topic `events` and of `POST /v1/events`."""

    audience: Audience

    def core(self) -> EventCore:
        return EventCore.model_validate(self.model_dump(exclude={"audience"}))


class Delivery(_Strict):
    """One event for one recipient. `addresses` is set only for raw-address recipients."""

    message_id: str
    user_id: str
    event: EventCore
    addresses: dict[ChannelName, str] | None = None


class Dispatch(_Strict):
    """One message to send on one channel to one address."""

    message_id: str
    user_id: str
    channel: ChannelName
    address: str
    event: EventCore
    rule_id: str
    rule_version: str
    step: int = 0
    """0 for the decision's own send; n for the n-th fallback step of `plan`."""
    plan: DeliveryPlan = Field(default_factory=DeliveryPlan)
    template: str | None = None
    """A template other than the event's (a variant's or a fallback step's)."""


class Receipt(_Strict):
    """One state transition of one message: a row of ClickHouse `message_events`."""

    event_time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    message_id: str
    event_id: str = ""
    app: str = ""
    user_id: str = ""
    channel: str = ""
    provider: str = ""
    status: Status
    reason: str = ""
    rule_id: str = ""
    rule_version: str = ""
    template: str = ""
    campaign: str = ""
    attempt: int = 0
    cost: float = 0.0
    variant: str = ""
    step: int = 0

    @classmethod
    def of(cls, event: EventCore, user_id: str, status: Status, **fields: Any) -> Receipt:
        """A transition of the message `event` makes for `user_id`, named as every stage names it."""
        return cls.model_validate(
            {
                "message_id": message_id_for(event.app, event.event_id, user_id),
                "event_id": event.event_id,
                "app": event.app,
                "user_id": user_id,
                "status": status,
                "template": event.template,
                "campaign": event.campaign,
                **fields,
            }
        )


def message_id_for(app: str, event_id: str, user_id: str) -> str:
    """Deterministic, so a replayed event yields the same ids and idempotent sends hold."""
    digest = hashlib.blake2b(f"{app}\x1f{event_id}\x1f{user_id}".encode(), digest_size=12)
    return digest.hexdigest()


def address_user_id(channel: ChannelName, address: str) -> str:
    """The stable pseudo user id of a raw address that belongs to no known person."""
    digest = hashlib.blake2b(f"{channel}:{address.strip().lower()}".encode(), digest_size=8).hexdigest()
    return f"addr:{digest}"
