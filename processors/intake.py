"""What the stages read: batches acknowledged only once handled, records parsed, failed records turned
into dead letters.

Faust's `take()` acknowledges a batch in a `finally`, so a batch whose stage raised is committed and
skipped although the stage stopped to have it redelivered. `acked_batches` acknowledges a batch only
when the stage asks for the next one, that is after the batch's effects are durable.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import faust
from faust.types import EventT

from processors.dead_letters import DeadLetter, dead_letter, dead_letter_receipt
from processors.failures import describe, is_infrastructure
from processors.ingest import Ingest, IngestResult, refuse
from processors.outbox import Outbox
from records.accepted import AcceptedEvent
from records.signing import signature_header
from records.topics import Delivery, Dispatch, Event, Receipt
from records.wire import ReceiptItem, Unreadable, WireDecoder, WireEncoder

log = logging.getLogger("switchboard.flow")

_Record = TypeVar("_Record", Delivery, Dispatch)
Letter = tuple[DeadLetter, Receipt]


async def acked_batches(
    stream: faust.StreamT[bytes], max_: int, within: float
) -> AsyncIterator[list[EventT[bytes]]]:
    """Batches of up to `max_` events (or what came `within` seconds); a batch is acknowledged when
    the caller asks for the next one, never when its handling raised."""
    # noack_take buffers the events themselves and leaves every ack to us.
    async for batch in stream.noack_take(max_, within):  # type: ignore[attr-defined]
        events = cast(list[EventT[bytes]], list(batch))
        yield events
        for event in events:
            await stream.ack(event)


def source_of(event: EventT[bytes]) -> str:
    """The record's identity, which makes a redelivery of the same record recognisable."""
    message = event.message
    return f"{message.topic}:{message.partition}:{message.offset}"


def raw_of(event: EventT[bytes]) -> bytes:
    value = event.value
    return value if isinstance(value, bytes) else b""  # a tombstone (no value) is refused as empty


def signature_of(event: EventT[bytes]) -> str | None:
    """The record's `switchboard-signature` header (a Faust message's headers, or an urgent lane's)."""
    return signature_header(getattr(event.message, "headers", None))


async def ingest_one(ingest: Ingest, raw: bytes, source: str, signature: str | None = None) -> IngestResult:
    """One event through ingest; a failure of the event's own becomes its dead letter."""
    try:
        return await ingest.handle(raw, source, signature)
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        log.exception("ingest failed on %s", source)
        return refuse(raw, source, f"ingest failed: {describe(exc)}")


def carriable(result: IngestResult, raw: bytes, source: str, outbox: Outbox) -> IngestResult:
    """The result, or the event refused when one of its deliveries cannot fit in a record.

    An event's deliveries differ only in ids of one length and in the user id and raw addresses, so
    measuring the one with the longest of those measures them all (a broadcast is not encoded twice)."""
    if result.deliveries:
        delivery = max(result.deliveries, key=_varying_length)
        value = WireEncoder().encode([delivery])[0]
        if not outbox.fits(delivery.user_id, value):
            return refuse(
                raw,
                source,
                f"a delivery of this event is {len(value)} bytes, over the producer's record limit "
                f"of {outbox.record_limit}",
            )
    return result


def accepted(handled: Iterable[tuple[bytes, IngestResult, str]]) -> list[tuple[AcceptedEvent, str]]:
    """The events ingest took (neither dead-lettered nor duplicates), parsed again (they are valid),
    each with its source."""
    now = datetime.now(UTC)
    taken = [
        (Event.model_validate_json(raw), source)
        for raw, result, source in handled
        if result.dead_letter is None and not result.duplicate
    ]
    return [
        (AcceptedEvent(accepted_at=now, event=event.core(), audience=event.audience), source)
        for event, source in taken
    ]


def _varying_length(delivery: Delivery) -> int:
    return len(delivery.user_id) + sum(len(a) for a in (delivery.addresses or {}).values())


def parse(
    model: type[_Record], batch: Sequence[EventT[bytes]], decoder: WireDecoder | None = None
) -> tuple[list[tuple[str, _Record]], list[Letter]]:
    """The items of a batch of batch records, each with its source (`topic:partition:offset#index`).

    Internal topics are written by Switchboard itself; an unreadable record or item there is a bug:
    dead-lettered alone with its reason, and the rest go on."""
    wire = decoder or WireDecoder()
    read = wire.delivery if model is Delivery else wire.dispatch
    good: list[tuple[str, _Record]] = []
    bad: list[Letter] = []
    for event in batch:
        source = source_of(event)
        items = wire.items(raw_of(event))
        if isinstance(items, Unreadable):
            bad.append(
                _unreadable(
                    model.__name__,
                    source,
                    Unreadable(items.raw, f"unreadable {model.__name__} record: {items.reason}"),
                )
            )
            continue
        for index, raw in enumerate(items):
            item_source = source if len(items) == 1 else f"{source}#{index}"
            value = read(raw)
            if isinstance(value, Unreadable):
                bad.append(_unreadable(model.__name__, item_source, value))
            else:
                good.append((item_source, cast(_Record, value)))
    return good, bad


def _unreadable(kind: str, source: str, item: Unreadable) -> Letter:
    log.error("unreadable %s at %s: %s", kind, source, item.reason)
    letter = dead_letter(item.raw, source, item.reason)
    return letter, dead_letter_receipt(letter)


def parse_receipts(
    values: Iterable[bytes], decoder: WireDecoder | None = None, statuses: frozenset[str] | None = None
) -> tuple[list[ReceiptItem], int]:
    """A receipts record holds one receipt (the API's) or an array of them (the stages'); with
    `statuses`, only receipts of those statuses are returned (every one is still checked). Also
    returns how many receipts were read in all. An unreadable one is logged and skipped: the analytics
    service, which reads the same records, records it as a `dead_lettered` row."""
    wire = decoder or WireDecoder()
    receipts: list[ReceiptItem] = []
    seen = 0
    for value in values:
        items, count = wire.receipts(value, statuses)
        seen += count
        for item in items:
            if isinstance(item, Unreadable):
                log.error("unreadable receipts record: %s", item.reason)
            else:
                receipts.append(item)
    return receipts, seen


def failed(stage: str, poisoned: Iterable[tuple[tuple[str, Any], BaseException]]) -> list[Letter]:
    """Dead letters for records that failed on their own in `stage`: (source, record) and the error."""
    letters: list[Letter] = []
    for (source, record), exc in poisoned:
        log.error("%s failed on %s: %s", stage, source, describe(exc), exc_info=exc)
        reason = f"{stage} failed: {describe(exc)}"
        if isinstance(record, Delivery | Dispatch):
            raw = record.model_dump_json().encode()
            letter = dead_letter(raw, source, reason, app=record.event.app, event_id=record.event.event_id)
            receipt = dead_letter_receipt(letter, message_id=record.message_id, user_id=record.user_id)
        else:
            letter = dead_letter(
                record if isinstance(record, bytes) else str(record).encode(), source, reason
            )
            receipt = dead_letter_receipt(letter)
        letters.append((letter, receipt))
    return letters
