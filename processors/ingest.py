"""Ingest: check the record's signature, validate the event, authorise its app, drop duplicates, expand
the audience.

Pure flow logic over injected state; the Faust agent in `processors/topology.py` feeds it raw bytes
and produces what it returns. Nothing here raises for bad input: a bad event becomes a dead letter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError

from processors.dead_letters import DeadLetter, dead_letter, dead_letter_receipt
from records.signing import SIGNATURE_HEADER, signature_valid
from records.topics import (
    Audience,
    Delivery,
    Event,
    EventCore,
    Receipt,
    address_user_id,
    lane_of,
    message_id_for,
)
from settings import DEFAULT_MAX_EVENT_BYTES
from state.broadcasts import BroadcastJobs
from state.dedup import EventDedup
from state.segments import SegmentAudience, SegmentStore, segment_snapshot
from state.uploads import UploadStore, recipient_of, upload_index
from state.users import AudienceIndex, UserDirectory

__all__ = ["DeadLetter", "Ingest", "IngestResult", "dead_letter_receipt", "refuse"]


class RegisteredApp(Protocol):
    @property
    def channels(self) -> frozenset[str]: ...
    @property
    def enabled(self) -> bool: ...


class AppLookup(Protocol):
    """What the flow needs of the app registry."""

    async def get(self, name: str) -> RegisteredApp | None: ...

    async def signing_key(self, name: str) -> str | None: ...


class TemplateCheck(Protocol):
    """What ingest needs of the template catalog."""

    def check_data(self, template: str, data: dict[str, object]) -> list[str]: ...


class Approvals(Protocol):
    """What ingest needs of approvals (`processors.approvals.ApprovalGate`)."""

    async def hold(self, event: Event) -> Receipt | None:
        """The `pending_approval` row when a policy holds the event (it is stored), else None."""

    async def check_release(self, event: Event) -> str:
        """'' when the event's approval stamp matches an approved item; else what is wrong."""


@dataclass
class IngestResult:
    deliveries: list[Delivery] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    duplicate: bool = False
    broadcast: bool = False
    """A broadcast job was recorded: its deliveries come page by page (`processors/broadcast.py`)."""
    held: bool = False
    """An approval policy holds the event: nothing is expanded until it is approved."""


class Ingest:
    """Turns one raw event into one delivery per recipient."""

    def __init__(
        self,
        directory: UserDirectory,
        apps: AppLookup,
        templates: TemplateCheck,
        dedup: EventDedup,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        jobs: BroadcastJobs | None = None,
        page: int = 1000,
        approvals: Approvals | None = None,
        signatures: bool = False,
        segments: SegmentStore | None = None,
        uploads: UploadStore | None = None,
    ) -> None:
        """`signatures`: refuse a record not signed by its app's events signing key (the worker passes
        SWITCHBOARD_EVENTS_SIGNATURES=required, the default; tools and unit tests hand events in directly)."""
        self._directory = directory
        # Without jobs (unit tests, tools), every audience is paged through here at once.
        self._jobs = jobs
        self._page = page
        self._max_event_bytes = max_event_bytes
        self._apps = apps
        self._templates = templates
        self._dedup = dedup
        self._approvals = approvals
        self._signatures = signatures
        # Segment definitions, evaluated page by page; without them (unit tests) saved sets only.
        self._segments = segments
        self._uploads = uploads

    async def handle(self, raw: bytes, source: str, signature: str | None = None) -> IngestResult:
        """`source` names the record (topic:partition:offset); it makes redelivery recognisable.
        `signature` is the record's `switchboard-signature` header (`records.signing`), if any."""
        if len(raw) > self._max_event_bytes:
            # Every delivery and dispatch carries the event: one this large could not travel on.
            reason = (
                f"event is {len(raw)} bytes, over the limit of {self._max_event_bytes} "
                "(setting SWITCHBOARD_MAX_EVENT_BYTES)"
            )
            return _dead(raw, source, reason, _peek(raw))
        try:
            event = Event.model_validate_json(raw)
        except ValidationError as exc:
            return _dead(raw, source, _describe(exc), _peek(raw))
        if self._signatures:
            unsigned = await self._unsigned(event, raw, signature)
            if unsigned:
                return _dead(raw, source, unsigned, (event.app, event.event_id))
        problem = await self._refusal(event)
        if problem:
            return _dead(raw, source, problem, (event.app, event.event_id))
        if event.approval:
            return await self._released(event, raw, source)
        if not await self._dedup.first_seen(event.app, event.event_id, source):
            receipt = Receipt.of(event, "", "suppressed", reason="duplicate event_id for this app")
            return IngestResult(receipts=[receipt], duplicate=True)
        if self._approvals is not None and (pending := await self._approvals.hold(event)):
            # Its dedup key stays set: a resend by the app while it waits is a duplicate.
            return IngestResult(receipts=[pending], held=True)
        return await self._expand(event, raw, source)

    async def _released(self, event: Event, raw: bytes, source: str) -> IngestResult:
        """An approved event coming back: expanded once, however often it is released."""
        if self._approvals is None:
            problem = "the event carries an approval stamp, and this worker has no approvals"
        else:
            problem = await self._approvals.check_release(event)
        if problem:
            return _dead(raw, source, problem, (event.app, event.event_id))
        # The event's own dedup key was taken when it was held: a release has a key of its own.
        if not await self._dedup.first_seen(event.app, f"{event.event_id}@{event.approval}", source):
            receipt = Receipt.of(event, "", "suppressed", reason="approved event released again")
            return IngestResult(receipts=[receipt], duplicate=True)
        return await self._expand(event, raw, source)

    async def _unsigned(self, event: Event, raw: bytes, signature: str | None) -> str:
        """Why the record is not one its app signed ("" when it is)."""
        key = await self._apps.signing_key(event.app)
        if key is None:
            if await self._apps.get(event.app) is None:
                return f"unknown app {event.app!r}"
            return (f"app {event.app!r} has no events signing key (registered before events were signed): "
                    "rotate its key")
        if not signature:
            return f"unsigned: the record has no {SIGNATURE_HEADER} header (app {event.app!r})"
        if not signature_valid(raw, signature, key):
            return f"bad signature for app {event.app!r}"
        return ""

    async def _refusal(self, event: Event) -> str:
        app = await self._apps.get(event.app)
        if app is None:
            return f"unknown app {event.app!r}"
        if not app.enabled:
            return f"app {event.app!r} is disabled"
        if event.channels:
            refused = sorted(set(event.channels) - app.channels)
            if refused:
                return f"app {event.app!r} is not authorised for channels {', '.join(refused)}"
        problems = self._templates.check_data(event.template, event.data)
        return "; ".join(problems)

    async def _expand(self, event: Event, raw: bytes, source: str) -> IngestResult:
        core = event.core()
        audience = event.audience
        result = IngestResult()
        if audience.addresses:
            for raw_address in audience.addresses:
                user_id = address_user_id(raw_address.channel, raw_address.address)
                result.deliveries.append(
                    Delivery(
                        message_id=message_id_for(event.app, event.event_id, user_id),
                        user_id=user_id,
                        event=core,
                        addresses={raw_address.channel: raw_address.address},
                    )
                )
            return result
        if audience.upload:
            return await self._upload_audience(event, audience.upload, raw, source)
        if audience.user_ids:
            wanted = list(dict.fromkeys(audience.user_ids))
            known = await self._directory.get_many(wanted)
            user_ids = [u for u in wanted if u in known]
            for missing in (u for u in wanted if u not in known):
                result.receipts.append(Receipt.of(event, missing, "suppressed", reason="unknown user"))
        else:
            selected = await self._audience_index(audience)
            if selected is None:
                return _dead(
                    raw, source, f"unknown segment {audience.segment!r}", (event.app, event.event_id)
                )
            index, condition = selected
            total = await self._directory.walk.prepare(index)
            if self._jobs is not None and total > self._page:
                # Too many for one page: recorded as a job, expanded by a timer as the flow keeps up.
                result.broadcast = await self._jobs.create(
                    core, index, lane_of(core), source, total, segment=segment_snapshot(condition)
                )
                return result
            user_ids = await self._all_of(index, condition)
        result.deliveries.extend(deliveries_for(core, user_ids))
        return result


    async def _upload_audience(self, event: Event, upload_id: str, raw: bytes, source: str) -> IngestResult:
        """An uploaded list of the event's own app, expanded like a segment: a job past one page."""
        upload = await self._uploads.get(upload_id) if self._uploads is not None else None
        problem = ""
        if upload is None:
            problem = f"upload {upload_id} expired or unknown"
        elif upload.removed_at is not None:
            problem = f"upload {upload_id} was removed by {upload.removed_by or '?'}"
        elif upload.app != event.app:
            problem = f"upload {upload_id} belongs to app {upload.app!r}, not {event.app!r}"
        if upload is None or problem:
            return _dead(raw, source, problem, (event.app, event.event_id))
        core, index, result = event.core(), upload_index(upload_id), IngestResult()
        if self._jobs is not None and upload.recipients > self._page:
            result.broadcast = await self._jobs.create(core, index, lane_of(core), source, upload.recipients)
            return result
        result.deliveries.extend(deliveries_for(core, await self._all_of(index)))
        return result

    async def _audience_index(
        self, audience: Audience
    ) -> tuple[AudienceIndex, SegmentAudience | None] | None:
        """The sets `audience` selects from, and the segment definition filtering them (if any); None
        for a segment that exists neither as a definition nor as a saved set."""
        if audience.tags:
            return AudienceIndex.of_tags(audience.tags), None
        if audience.segment:
            if self._segments is not None:
                found = await self._segments.audience(audience.segment)
                if found is None:
                    return None
                return found.index, found if found.condition is not None else None
            if not await self._directory.has_segment(audience.segment):
                return None
            return AudienceIndex.of_segment(audience.segment), None
        return AudienceIndex.everyone(), None

    async def _all_of(self, index: AudienceIndex, segment: SegmentAudience | None = None) -> list[str]:
        ids: list[str] = []
        cursor = ""
        while page := await self._directory.walk.page(index, cursor, self._page):
            cursor = page[-1]
            if segment is not None and self._segments is not None:
                page = await self._segments.evaluator.members(segment.condition, page)
            ids.extend(page)
        return ids


def deliveries_for(event: EventCore, user_ids: list[str]) -> list[Delivery]:
    """One delivery per user of a page of an audience (an uploaded list's raw address carries it along:
    `state.uploads.recipient_of`)."""
    deliveries = []
    for member in user_ids:
        user_id, addresses = recipient_of(member)
        deliveries.append(Delivery(
            message_id=message_id_for(event.app, event.event_id, user_id), user_id=user_id, event=event,
            addresses=addresses,
        ))
    return deliveries


def refuse(raw: bytes, source: str, reason: str) -> IngestResult:
    """The event at `source` dead-lettered for `reason`, named by its app and id where readable."""
    return _dead(raw, source, reason, _peek(raw))


def _dead(raw: bytes, source: str, reason: str, ids: tuple[str, str]) -> IngestResult:
    letter = dead_letter(raw, source, reason, app=ids[0], event_id=ids[1])
    return IngestResult(receipts=[dead_letter_receipt(letter)], dead_letter=letter)


def _describe(exc: ValidationError) -> str:
    """One line per problem, naming the field path: `audience: ...; category: Input should be ...`."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "event"
        if error["type"] == "json_invalid":
            parts.append(f"invalid JSON: {error['msg']}")
        else:
            parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _peek(raw: bytes) -> tuple[str, str]:
    """Best-effort app and event id of an invalid event, so the dead letter can be traced."""
    try:
        value = json.loads(raw)
    except ValueError:
        return "", ""
    if not isinstance(value, dict):
        return "", ""
    return str(value.get("app", ""))[:128], str(value.get("event_id", ""))[:128]
