"""ClickHouse `event_log`: every accepted event, kept so rule simulation can replay a period of them.

Synchronous like the receipts sink: call it on a thread from an asyncio worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from records.topics import EventCore

COLUMNS = ("event_time", "app", "event_id", "payload", "audience")


class EventLogError(RuntimeError):
    """A batch could not be written, or a stored row no longer reads as an event."""


@dataclass(frozen=True)
class LoggedEvent:
    """One event as it was accepted: when, the event without its audience, and the audience JSON."""

    event_time: datetime
    event: EventCore
    audience: str


class EventLog:
    """Writes accepted events in batches and reads a period of them back; the client is passed in."""

    def __init__(self, client: Client, table: str = "event_log") -> None:
        self._client = client
        self._table = table

    def write(self, events: Sequence[tuple[datetime, EventCore, str]]) -> int:
        """Insert (accepted at, event, audience JSON) triples; the number of rows written."""
        if not events:
            return 0
        rows: list[list[Any]] = []
        for at, event, audience in events:
            if at.tzinfo is None:
                raise EventLogError(f"event {event.app}/{event.event_id}: accepted-at time needs a timezone")
            rows.append([at.astimezone(UTC), event.app, event.event_id, event.model_dump_json(), audience])
        try:
            self._client.insert(self._table, rows, column_names=list(COLUMNS))
        except Exception as exc:
            raise EventLogError(f"inserting {len(rows)} events into {self._table} failed: {exc}") from exc
        return len(rows)

    def read(self, since: datetime, until: datetime, app: str | None = None) -> list[LoggedEvent]:
        """Events accepted in [since, until), oldest first, each (app, event_id) once."""
        return list(self.iter(since, until, app))

    def iter(self, since: datetime, until: datetime, app: str | None = None) -> Iterator[LoggedEvent]:
        where = "event_time >= {since:DateTime64(3)} AND event_time < {until:DateTime64(3)}"
        parameters: dict[str, Any] = {"since": since.astimezone(UTC), "until": until.astimezone(UTC)}
        if app is not None:
            where += " AND app = {app:String}"
            parameters["app"] = app
        # LIMIT 1 BY: one row per event even before ReplacingMergeTree has merged duplicates.
        result = self._client.query(
            f"SELECT event_time, app, event_id, payload, audience FROM {self._table} "  # noqa: S608 - table name is ours
            f"WHERE {where} ORDER BY event_time, app, event_id LIMIT 1 BY app, event_id",
            parameters=parameters,
        )
        for event_time, app_name, event_id, payload, audience in result.result_rows:
            try:
                event = EventCore.model_validate(json.loads(payload))
            except (ValueError, ValidationError) as exc:
                raise EventLogError(f"event_log row {app_name}/{event_id} is not an event: {exc}") from exc
            at = event_time if event_time.tzinfo else event_time.replace(tzinfo=UTC)
            yield LoggedEvent(at, event, audience)
