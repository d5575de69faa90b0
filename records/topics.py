"""The records that travel on the flow's topics, validated with pydantic at every edge.

`events` carries `Event`; `deliveries` carries `Delivery` (one per recipient, keyed by user id);
`dispatch` carries `Dispatch` (one per channel the decision chose); `receipts` carries `Receipt`
(one per state transition, the row shape of ClickHouse `message_events`).

Priority lanes: `events`, `deliveries` and `dispatch` each have an urgent twin (`events.urgent`,
`deliveries.urgent`, `dispatch.urgent`) consumed by agents of their own, so verification codes,
alerts and urgent or high priority messages never queue behind a campaign (`lane_of`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    StringConstraints,
    field_validator,
    model_validator,
)

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
    "MAX_DATA_DEPTH",
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
    "Lane",
    "Name",
    "Priority",
    "RawAddress",
    "Receipt",
    "Status",
    "lane_of",
    "lane_topic",
    "message_id_for",
]

Lane = Literal["bulk", "urgent"]
LANES: tuple[Lane, ...] = ("bulk", "urgent")
URGENT_CATEGORIES = frozenset({"verification", "alert"})
URGENT_PRIORITIES = frozenset({"urgent", "high"})
URGENT_SUFFIX = ".urgent"
LANED_TOPICS = ("events", "deliveries", "dispatch")
"""The topics that have an urgent twin named `<topic>.urgent`."""

MAX_DATA_DEPTH = 16
"""How deeply `data` may nest objects and arrays. The API and ingest both validate through `Event`, so
they refuse the same events; it also stays far below the JSON parsers' own recursion limits (pydantic's
is 200), which would otherwise refuse an event in the worker that the API had accepted."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RawAddress(_Strict):
    """A recipient known only by an address (no user profile), e.g. an external email."""

    channel: ChannelName
    address: Annotated[str, StringConstraints(min_length=1, max_length=512)]


# "Exactly one selector" in the JSON schema's words, so clients (and schemathesis) see the rule the
# validator below enforces: an empty list, null or `all: false` selects nobody.
_ONE_SELECTOR: list[JsonValue] = [
    {"required": ["user_ids"], "properties": {"user_ids": {"type": "array", "minItems": 1}}},
    {"required": ["tags"], "properties": {"tags": {"type": "array", "minItems": 1}}},
    {"required": ["segment"], "properties": {"segment": {"type": "string"}}},
    {"required": ["all"], "properties": {"all": {"const": True}}},
    {"required": ["addresses"], "properties": {"addresses": {"type": "array", "minItems": 1}}},
    {"required": ["upload"], "properties": {"upload": {"type": "string"}}},
]


class Audience(_Strict):
    """Who an event is for: exactly one of the selectors."""

    model_config = ConfigDict(json_schema_extra={"oneOf": _ONE_SELECTOR})

    user_ids: list[Name] | None = None
    tags: list[Name] | None = None
    segment: Name | None = None
    # Strict: `1` or `"yes"` is not a yes for "send to everyone".
    all: Annotated[bool, Strict()] = False
    addresses: list[RawAddress] | None = None
    upload: Name | None = Field(
        default=None,
        description="The id of an uploaded recipient list (`POST /v1/uploads`), held for a set time.",
    )

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
                ("upload", self.upload),
            )
            if value
        ]
        if len(chosen) != 1:
            raise ValueError(
                "audience needs exactly one non-empty selector of user_ids, tags, segment, all, "
                f"addresses, upload; got {chosen or 'none'}"
            )
        return self


class EventCore(_Strict):
    """What every delivery of an event carries: the event without its audience."""

    event_id: Name
    app: Name
    type: Name
    template: Name
    data: dict[str, Any] = Field(
        default_factory=dict,
        description=f"The template's variables; objects and arrays nest at most {MAX_DATA_DEPTH} deep.",
    )
    category: Category
    priority: Priority = "normal"
    send_at: datetime | None = None
    campaign: Annotated[str, StringConstraints(max_length=128)] = ""
    channels: list[ChannelName] | None = None
    strategy: Name | None = Field(
        default=None,
        description="A named fallback strategy (补发策略) of the rule files: its channels and steps are used "
        "instead of the matching rule's; an unknown name is refused (POST /v1/events answers 422, the worker "
        "records a suppressed row naming it).",
    )
    pace_per_second: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        default=None,
        description="Send the messages at a steady rate (定速), at most N per second across workers.",
    )

    @field_validator("send_at", mode="before")
    @classmethod
    def _send_at_text(cls, value: object) -> object:
        # pydantic would read a number as seconds since 1970; the contract is an ISO time with offset.
        if value is None or isinstance(value, str | datetime):
            return value
        raise ValueError("send_at must be an ISO time with offset, e.g. 2026-11-23T08:00:00+08:00")

    @field_validator("data")
    @classmethod
    def _shallow_data(cls, data: dict[str, Any]) -> dict[str, Any]:
        depth = data_depth(data)
        if depth > MAX_DATA_DEPTH:
            raise ValueError(f"nests {depth} levels deep; at most {MAX_DATA_DEPTH} are allowed")
        return data

    @model_validator(mode="after")
    def _aware_send_at(self) -> EventCore:
        if self.send_at is not None and self.send_at.tzinfo is None:
            raise ValueError("send_at must carry a timezone offset, e.g. 2026-11-23T08:00:00+08:00")
        return self


class Event(EventCore):
    """The contract of topic `events` and of `POST /v1/events`."""

    audience: Audience
    submitted_by: Annotated[str, StringConstraints(max_length=160)] = Field(
        default="",
        description="Who submitted the event (`operator:NAME` or `app:NAME`). Set by the API from the "
        "caller's credentials, whatever the body says; approvers must be someone else.",
        json_schema_extra={"readOnly": True},
    )
    approval: Annotated[str, StringConstraints(max_length=64)] = Field(
        default="",
        description="Set only by Switchboard when it releases an approved event; ingest checks it "
        "against the approval record in Redis. The API refuses it.",
        json_schema_extra={"readOnly": True},
    )

    def core(self) -> EventCore:
        return EventCore.model_validate(self.model_dump(exclude={"audience", *_ENVELOPE}))


_ENVELOPE = frozenset({"submitted_by", "approval"})
"""Fields of an event that are about its submission, not its message: deliveries do not carry them."""


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
    every_address: bool = False
    """One of several dispatches of one channel to a person whose choice there is `all` (every device):
    its send is claimed per address (processors/send.py `send_key`), so each address gets it once."""


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
    template_version: int = 0
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
                "message_id": fields.get("message_id") or message_id_for(event.app, event.event_id, user_id),
                "event_id": event.event_id,
                "app": event.app,
                "user_id": user_id,
                "status": status,
                "template": event.template,
                "campaign": event.campaign,
                **fields,
            }
        )


def lane_of(event: EventCore) -> Lane:
    """Codes, alerts and urgent or high priority messages take the urgent lane; the rest, bulk."""
    if event.category in URGENT_CATEGORIES or event.priority in URGENT_PRIORITIES:
        return "urgent"
    return "bulk"


def lane_topic(topic: str, lane: Lane) -> str:
    """The lane's topic of a laned topic: `events` stays `events` in bulk, `events.urgent` urgent."""
    return f"{topic}{URGENT_SUFFIX}" if lane == "urgent" else topic


def data_depth(value: object) -> int:
    """How many levels of objects and arrays `value` nests (a scalar is 0); iterative, so no input
    can exhaust the stack."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        children: Iterable[object]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def message_id_for(app: str, event_id: str, user_id: str) -> str:
    """Deterministic, so a replayed event yields the same ids and idempotent sends hold."""
    digest = hashlib.blake2b(f"{app}\x1f{event_id}\x1f{user_id}".encode(), digest_size=12)
    return digest.hexdigest()


def address_user_id(channel: ChannelName, address: str) -> str:
    """The stable pseudo user id of a raw address that belongs to no known person."""
    digest = hashlib.blake2b(f"{channel}:{address.strip().lower()}".encode(), digest_size=8).hexdigest()
    return f"addr:{digest}"
