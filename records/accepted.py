"""Topic `events.accepted`: every event ingest accepted (neither refused nor a duplicate), one record
each, keyed by app; the analytics service writes them to ClickHouse `event_log` for rule simulation."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict

from records.topics import Audience, EventCore


class AcceptedEvent(BaseModel):
    """When ingest accepted an event, the event without its audience, and the audience."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accepted_at: AwareDatetime
    event: EventCore
    audience: Audience

    @property
    def logged(self) -> tuple[datetime, EventCore, str]:
        """The event log's row: accepted at, the event, the audience as JSON."""
        return self.accepted_at, self.event, self.audience.model_dump_json()
