"""Receipts into ClickHouse `message_events`: a batch buffer that says when to flush, and the sink itself."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from pydantic import TypeAdapter, ValidationError

from records.topics import Receipt

# The Receipt fields, in table order; inserted_at is left to its column default.
COLUMNS: tuple[str, ...] = (
    "event_time",
    "message_id",
    "event_id",
    "app",
    "user_id",
    "channel",
    "provider",
    "status",
    "reason",
    "rule_id",
    "rule_version",
    "template",
    "template_version",
    "campaign",
    "attempt",
    "cost",
    "variant",
    "step",
)


# How the engine reads receipts records as they are on the topic: strictly, like the Receipt model
# (unknown fields and nulls refused), with times in ISO form and a time without offset taken as UTC
# (the column's zone). Migration 008 gives a missing event_time its default of now.
JSON_INSERT_SETTINGS: dict[str, Any] = {
    "date_time_input_format": "best_effort",
    "input_format_skip_unknown_fields": 0,
    "input_format_null_as_default": 0,
    # Collapsing a batch's duplicate keys at insert costs about a fifth of the insert; the table's
    # ReplacingMergeTree collapses them at merge anyway, and readers count with FINAL or uniqExact.
    "optimize_on_insert": 0,
}
RECEIPT_LIST = TypeAdapter(list[Receipt])

ReceiptsRecord = tuple[str, bytes]
"""A record of the `receipts` topic: where it was (topic:partition:offset) and its value, one receipt
or a JSON array of them."""


class SinkError(RuntimeError):
    """A batch could not be written; retrying the whole batch is safe, duplicates collapse."""


class ReceiptSink:
    """Writes whole batches of receipts with one column-oriented insert. Synchronous: call it on a thread."""

    def __init__(self, client: Client, table: str = "message_events") -> None:
        self._client = client
        self._table = table

    def write(self, receipts: Sequence[Receipt]) -> int:
        """Insert the batch; the number of rows written."""
        if not receipts:
            return 0
        columns: list[list[Any]] = [[getattr(r, name) for r in receipts] for name in COLUMNS]
        columns[0] = [_utc(moment) for moment in columns[0]]
        try:
            self._client.insert(self._table, columns, column_names=list(COLUMNS), column_oriented=True)
        except Exception as exc:
            # The caller keeps the batch and retries; it needs to know what failed, not only why.
            raise SinkError(f"inserting {len(receipts)} receipts into {self._table} failed: {exc}") from exc
        return len(receipts)

    def write_records(self, records: Sequence[ReceiptsRecord]) -> int:
        """Insert receipts records as they are, parsed by the engine; the number of rows written.

        When the engine refuses the batch (a record that is not a receipt), each record is validated on
        its own instead: the good ones are written and each bad one becomes a `dead_lettered` row
        naming its source and what is wrong, so no record stops the batch."""
        body = b",\n".join(rows for _, value in records if (rows := _rows_of(value)))
        if not body:
            return 0
        try:
            summary = self._client.raw_insert(
                self._table,
                list(COLUMNS),
                insert_block=body,
                fmt="JSONEachRow",
                settings=JSON_INSERT_SETTINGS,
            )
        except OperationalError as exc:
            raise SinkError(f"inserting {len(records)} records into {self._table} failed: {exc}") from exc
        except DatabaseError:
            return self.write(validated(records))
        return int(summary.written_rows)


def validated(records: Sequence[ReceiptsRecord]) -> list[Receipt]:
    """The receipts of each record, or for a record that does not hold receipts its dead_lettered row."""
    receipts: list[Receipt] = []
    for source, value in records:
        try:
            if value.lstrip()[:1] == b"[":
                receipts.extend(RECEIPT_LIST.validate_json(value))
            else:
                receipts.append(Receipt.model_validate_json(value))
        except ValidationError as exc:
            receipts.append(unreadable(source, value, exc))
    return receipts


def unreadable(source: str, value: bytes, exc: ValidationError) -> Receipt:
    """The dead_lettered row of a record that is not what its topic carries; its id is stable, so a
    redelivered bad record is still one row."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    problem = f"{where}: {error['msg']}" if where else str(error["msg"])
    digest = hashlib.blake2b(source.encode() + b"\x1f" + value, digest_size=12).hexdigest()
    return Receipt(
        message_id=f"dl-{digest}", status="dead_lettered", reason=f"unreadable record at {source}: {problem}"
    )


def _rows_of(value: bytes) -> bytes:
    # An array record's objects, unwrapped: JSONEachRow takes objects separated by commas.
    value = value.strip()
    return value[1:-1].strip() if value[:1] == b"[" and value[-1:] == b"]" else value


def _utc(moment: datetime) -> datetime:
    # Receipt does not insist on an offset; a naive time is taken as UTC, never as the host's zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class ReceiptBuffer:
    """Accumulates receipts and tells when a flush is due: `max_rows` held, or the oldest is `max_age` old."""

    def __init__(self, max_rows: int, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_rows < 1:
            raise ValueError(f"ReceiptBuffer max_rows must be at least 1, got {max_rows}")
        if max_age <= 0:
            raise ValueError(f"ReceiptBuffer max_age must be positive seconds, got {max_age}")
        self.max_rows = max_rows
        self.max_age = max_age
        self._clock = clock
        self._receipts: list[Receipt] = []
        self._first_added_at: float | None = None

    def __len__(self) -> int:
        return len(self._receipts)

    def add(self, receipt: Receipt) -> bool:
        """Hold one receipt; whether a flush is now due."""
        return self.extend((receipt,))

    def extend(self, receipts: Iterable[Receipt]) -> bool:
        """Hold several receipts; whether a flush is now due."""
        before = len(self._receipts)
        self._receipts.extend(receipts)
        if before == 0 and self._receipts:
            self._first_added_at = self._clock()
        return self.due()

    def seconds_until_due(self) -> float | None:
        """How long until the age limit makes a flush due: 0 if due now, None while empty."""
        if not self._receipts or self._first_added_at is None:
            return None
        if len(self._receipts) >= self.max_rows:
            return 0.0
        return max(0.0, self._first_added_at + self.max_age - self._clock())

    def due(self) -> bool:
        """Whether the held receipts should be flushed now."""
        return self.seconds_until_due() == 0.0

    def drain(self) -> list[Receipt]:
        """Hand over every held receipt and start afresh."""
        receipts, self._receipts = self._receipts, []
        self._first_added_at = None
        return receipts
