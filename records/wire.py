"""The internal topics' encoding: deliveries, dispatches and receipts as batch records, via msgspec.

A batch record is a JSON array of items (a single JSON object is read as a batch of one), each item
the same JSON that `Delivery`, `Dispatch` or `Receipt` would dump, so the wire stays readable and the
pydantic models can still read any item. Items are decoded with msgspec, which checks every field's
type; the event and the plan a whole broadcast shares are validated with pydantic once per distinct
value (its Python validators are most of the cost) and then shared, as they are frozen. Receipts are
left as msgspec structs: track reads a few fields of each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import msgspec
from pydantic import ValidationError

from records.plan import DeliveryPlan
from records.topics import Delivery, Dispatch, EventCore
from records.vocabulary import ChannelName, Status

_Item = TypeVar("_Item")
_Shared = TypeVar("_Shared", EventCore, DeliveryPlan)
SHARED_CACHE = 256  # distinct events (and plans) remembered per decoder: a batch holds a few at most


class DeliveryItem(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    message_id: str
    user_id: str
    event: msgspec.Raw
    addresses: dict[ChannelName, str] | None = None


class DispatchItem(msgspec.Struct, forbid_unknown_fields=True):
    message_id: str
    user_id: str
    channel: ChannelName
    address: str
    event: msgspec.Raw
    rule_id: str
    rule_version: str
    step: int = 0
    plan: msgspec.Raw = msgspec.Raw(b"")  # msgspec.Raw cannot be optional; empty means "absent"
    template: str | None = None
    every_address: bool = False


class ReceiptItem(msgspec.Struct, forbid_unknown_fields=True):
    message_id: str
    status: Status
    event_time: datetime | None = None
    event_id: str = ""
    app: str = ""
    user_id: str = ""
    channel: str = ""
    provider: str = ""
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


@dataclass(frozen=True)
class Unreadable:
    """An item of a batch record that could not be read: its bytes and why, for its dead letter."""

    raw: bytes
    reason: str


class _SharedValues(Generic[_Shared]):
    """Pydantic-validated values by their JSON bytes: a broadcast's 100k deliveries share one event."""

    def __init__(self, parse: Callable[[bytes], _Shared]) -> None:
        self._parse: Callable[[bytes], _Shared] = parse
        self._known: dict[bytes, _Shared] = {}

    def get(self, raw: bytes) -> _Shared:
        value = self._known.get(raw)
        if value is None:
            value = self._parse(raw)
            if len(self._known) >= SHARED_CACHE:
                self._known.clear()  # cheap and rare; a stream's events come and go in runs
            self._known[raw] = value
        return value


class WireDecoder:
    """Reads batch records of the internal topics; one per stage, so shared values are reused."""

    def __init__(self) -> None:
        self._items = msgspec.json.Decoder(list[msgspec.Raw])
        self._delivery = msgspec.json.Decoder(DeliveryItem)
        self._dispatch = msgspec.json.Decoder(DispatchItem)
        self._receipt = msgspec.json.Decoder(ReceiptItem)
        self._events = _SharedValues(EventCore.model_validate_json)
        self._plans = _SharedValues(DeliveryPlan.model_validate_json)

    def items(self, record: bytes) -> list[bytes] | Unreadable:
        """The items of a batch record (an object is a batch of one), or why it is unreadable."""
        if record.lstrip()[:1] == b"{":
            return [record]
        try:
            return [bytes(raw) for raw in self._items.decode(record)]
        except msgspec.DecodeError as exc:
            return Unreadable(record, f"not a JSON array of items: {exc}")

    def delivery(self, raw: bytes) -> Delivery | Unreadable:
        return self._read(raw, "Delivery", self._delivery_of)

    def dispatch(self, raw: bytes) -> Dispatch | Unreadable:
        return self._read(raw, "Dispatch", self._dispatch_of)

    def receipts(
        self, record: bytes, statuses: frozenset[str] | None = None
    ) -> tuple[list[ReceiptItem | Unreadable], int]:
        """A receipts record: one receipt (the API's) or an array of them (the stages'), as msgspec
        structs (building pydantic receipts costs more than reading them); with `statuses`, only the
        receipts of those statuses (the others are still checked). Also returns how many items the
        record held."""
        items = self.items(record)
        if isinstance(items, Unreadable):
            return [Unreadable(items.raw, f"unreadable receipts record: {items.reason}")], 1
        read = [self._read(raw, "Receipt", self._receipt.decode) for raw in items]
        kept = [
            item
            for item in read
            if isinstance(item, Unreadable) or statuses is None or item.status in statuses
        ]
        return kept, len(read)

    def _read(self, raw: bytes, kind: str, build: Callable[[bytes], _Item]) -> _Item | Unreadable:
        try:
            return build(raw)
        except msgspec.DecodeError as exc:
            return Unreadable(raw, f"unreadable {kind}: {exc}")
        except ValidationError as exc:
            return Unreadable(raw, f"unreadable {kind}: {_first(exc)}")

    def _delivery_of(self, raw: bytes) -> Delivery:
        item = self._delivery.decode(raw)
        # model_validate of a dict holding the shared (frozen, validated) event takes it as it is,
        # and is faster than model_construct.
        return Delivery.model_validate(
            {
                "message_id": item.message_id,
                "user_id": item.user_id,
                "event": self._events.get(bytes(item.event)),
                "addresses": item.addresses,
            }
        )

    def _dispatch_of(self, raw: bytes) -> Dispatch:
        item = self._dispatch.decode(raw)
        return Dispatch.model_validate(
            {
                "message_id": item.message_id,
                "user_id": item.user_id,
                "channel": item.channel,
                "address": item.address,
                "event": self._events.get(bytes(item.event)),
                "rule_id": item.rule_id,
                "rule_version": item.rule_version,
                "step": item.step,
                "plan": self._plans.get(bytes(item.plan)) if len(item.plan) else _DEFAULT_PLAN,
                "template": item.template,
                "every_address": item.every_address,
            }
        )


_DEFAULT_PLAN = DeliveryPlan()


class WireEncoder:
    """Writes deliveries and dispatches item by item (the outbox packs them into batch records); the
    JSON of an event or plan shared by many items is made once."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._shared: dict[int, tuple[object, msgspec.Raw]] = {}

    def encode(self, items: Sequence[Delivery | Dispatch]) -> list[bytes]:
        try:
            return [self._one(item) for item in items]
        finally:
            self._shared.clear()  # keyed by id(): never keep them past the objects' lifetime here

    def _raw(self, value: EventCore | DeliveryPlan) -> msgspec.Raw:
        known = self._shared.get(id(value))
        if known is None or known[0] is not value:
            known = (value, msgspec.Raw(value.model_dump_json().encode()))
            self._shared[id(value)] = known
        return known[1]

    def _one(self, item: Delivery | Dispatch) -> bytes:
        if isinstance(item, Delivery):
            return self._encoder.encode(
                DeliveryItem(item.message_id, item.user_id, self._raw(item.event), item.addresses)
            )
        return self._encoder.encode(
            DispatchItem(
                item.message_id,
                item.user_id,
                item.channel,
                item.address,
                self._raw(item.event),
                item.rule_id,
                item.rule_version,
                item.step,
                self._raw(item.plan),
                item.template,
                item.every_address,
            )
        )


def _first(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
