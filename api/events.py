"""`POST /v1/events`: business systems hand Switchboard an event; 202 once the broker has it.

An event is refused here (422 naming the field) for whatever ingest would dead-letter and the API can
see: the model's own limits, an unknown template, a template variable missing from `data`, an unknown
segment. Ingest still dead-letters what only it can find (a segment deleted in between, a catalog
changed since the API started).
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import asyncio
from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, status
from pydantic import BaseModel

from api.deps import ApiDeps
from api.problems import TOO_LARGE, Problem, TooLargeError, invalid
from records.signing import signature
from records.topics import Event, lane_of
from rules.semantics import unknown_strategy
from settings.permissions import Principal
from state.apps import App
from state.uploads import UploadStore

MAX_BATCH = 500


class EventAccepted(BaseModel):
    """The event is on the events topic; ingest takes it from there."""

    accepted: Literal[True] = True
    event_id: str
    app: str


class BatchAccepted(BaseModel):
    """Every event of the batch is on the events topic."""

    accepted: Literal[True] = True
    app: str
    count: int
    event_ids: list[str]


def events_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["events"])
    caller = Depends(deps.access.requires("events:send"))
    limit = deps.limits.event_bytes

    @router.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=EventAccepted,
        summary="Submit one event",
        description=f"The body is one event of at most {limit} bytes. {_INVALID}",
        responses=_ERRORS,
    )
    async def submit_event(event: Event, principal: Annotated[Principal, caller]) -> EventAccepted:
        """Validate and authorise the event, then publish it keyed by `app:event_id`.

        Answers only after the broker acknowledged; resubmitting the same `event_id` is safe.
        """
        app = await _authorise(deps, event, principal, ("body",))
        signing_key = await _signing_key(deps, app)
        [event] = _submitted([event], f"{principal.kind}:{principal.name}", ("body",))
        [record] = await _checked(deps, [event], ("body",))
        await deps.publisher.publish_event(_key(event), record, lane_of(event), _signed(record, signing_key))
        return EventAccepted(event_id=event.event_id, app=event.app)

    @router.post(
        "/events:batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=BatchAccepted,
        summary=f"Submit up to {MAX_BATCH} events",
        description=f"Each event is at most {limit} bytes, the whole body at most {deps.limits.body_bytes}. "
        + _INVALID,
        responses=_ERRORS,
    )
    async def submit_events(
        events: Annotated[list[Event], Body(min_length=1, max_length=MAX_BATCH)],
        principal: Annotated[Principal, caller],
    ) -> BatchAccepted:
        """All or nothing as far as the answer goes: on any failure resubmit the whole batch (ingest
        deduplicates on `app` and `event_id`)."""
        for index, event in enumerate(events):
            if event.app != events[0].app:
                first = events[0].app
                raise invalid(("body", index, "app"), f"one batch is for one app; events[0] is for {first!r}",
                              "mixed_apps")
            app = await _authorise(deps, event, principal, ("body", index), where=f"events[{index}]: ")
        signing_key = await _signing_key(deps, app)
        events = _submitted(events, f"{principal.kind}:{principal.name}", ("body",), indexed=True)
        records = await _checked(deps, events, ("body",), indexed=True)
        await asyncio.gather(
            *(
                deps.publisher.publish_event(_key(e), r, lane_of(e), _signed(r, signing_key))
                for e, r in zip(events, records, strict=True)
            )
        )
        return BatchAccepted(app=events[0].app, count=len(events), event_ids=[e.event_id for e in events])

    return router


def _submitted(
    events: Sequence[Event], submitter: str, body: tuple[str], indexed: bool = False
) -> list[Event]:
    """The events as submitted by `submitter` (`app:NAME`, `operator:NAME`), whatever their bodies
    said; an approval stamp is Switchboard's own to set (422)."""
    for index, event in enumerate(events):
        if event.approval:
            where = (*body, index, "approval") if indexed else (*body, "approval")
            raise invalid(where, "approval is set only by Switchboard when it releases an approved event")
    return [event.model_copy(update={"submitted_by": submitter}) for event in events]


async def _checked(
    deps: ApiDeps, events: Sequence[Event], body: tuple[str], indexed: bool = False
) -> list[bytes]:
    """The records to publish, once every event passes what ingest would check; else 413 or 422."""
    records = [event.model_dump_json().encode() for event in events]
    for index, record in enumerate(records):
        # The record, not the request body, is what the worker and the broker see.
        if len(record) > deps.limits.event_bytes:
            what = f"event events[{index}]" if indexed else "the event"
            raise TooLargeError(f"{what} is {len(record)} bytes as JSON, which", deps.limits.event_bytes)
    segments = {e.audience.segment for e in events if e.audience.segment}
    found = await asyncio.gather(*(deps.segments.has_segment(s) for s in segments))
    known = dict(zip(segments, found, strict=True))
    for index, event in enumerate(events):
        where = (*body, index) if indexed else body
        if event.template not in deps.templates:
            raise invalid((*where, "template"), f"unknown template {event.template!r}", "unknown_template")
        problems = deps.templates.check_data(event.template, event.data)
        if problems:
            raise invalid((*where, "data"), "; ".join(problems), "missing_variable")
        if event.audience.segment and not known[event.audience.segment]:
            segment = event.audience.segment
            raise invalid((*where, "audience", "segment"), f"unknown segment {segment!r}", "unknown_segment")
        _check_strategy(deps, event, where)
        if event.audience.upload and deps.uploads is not None:
            await _check_upload(deps.uploads.store, event, (*where, "audience", "upload"))
    return records


def _check_strategy(deps: ApiDeps, event: Event, where: tuple[str | int, ...]) -> None:
    """422 for a strategy the loaded rules do not define (the worker would refuse every message)."""
    ruleset = deps.rules.ruleset if deps.rules is not None else None
    if event.strategy is None or ruleset is None or ruleset.strategy(event.strategy) is not None:
        return
    known = [s.name for s in ruleset.strategies]
    raise invalid((*where, "strategy"), unknown_strategy(event.strategy, known), "unknown_strategy")


async def _check_upload(uploads: UploadStore, event: Event, where: tuple[str | int, ...]) -> None:
    """What ingest would dead-letter an uploaded list for, refused here already (422)."""
    upload_id = event.audience.upload or ""
    upload = await uploads.get(upload_id)
    if upload is None or upload.removed_at is not None:
        raise invalid(where, f"upload {upload_id} expired or unknown", "unknown_upload")
    if upload.app != event.app:
        problem = f"upload {upload_id} belongs to another app, not {event.app!r}"
        raise invalid(where, problem, "foreign_upload")


async def _authorise(
    deps: ApiDeps, event: Event, principal: Principal, loc: tuple[str | int, ...], where: str = ""
) -> App:
    """The event's app, once the caller may send for it (an app key: itself; an operator: `events:send`
    on it) and the app may use the channels the event names; else 403 (422 for an unknown app)."""
    if principal.kind == "app" and event.app != principal.name:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{where}the key belongs to app {principal.name!r}, the event names app {event.app!r}",
        )
    if not principal.allows("events:send", event.app):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{where}{principal.name!r} lacks permission events:send on app {event.app!r}",
        )
    app = await deps.apps.get(event.app)
    if app is None:
        raise invalid((*loc, "app"), f"no app named {event.app!r} is registered", "unknown_app")
    if not app.enabled:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{where}app {app.name!r} is disabled")
    refused = sorted(set(event.channels or ()) - app.channels)
    if refused and deps.channel_accounts is not None:  # a channel account may authorise the app too
        refused = sorted(set(refused) - await deps.channel_accounts.granted(app.name))
    if refused:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{where}app {app.name!r} is not authorised for channel(s) {', '.join(refused)}; "
            f"it may use {', '.join(sorted(app.channels)) or 'none'}",
        )
    return app


async def _signing_key(deps: ApiDeps, app: App) -> str:
    """The app's events signing key; 409 when it has none and ingest requires signed records."""
    key = await deps.apps.signing_key(app.name)
    if key is None and deps.events_signatures_required:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"app {app.name!r} has no events signing key (registered before events were signed): rotate its "
            f"key (`switchboard apps rotate {app.name}`) and use the new one",
        )
    return key or ""


def _signed(record: bytes, signing_key: str) -> str:
    return signature(record, signing_key) if signing_key else ""


def _key(event: Event) -> str:
    return f"{event.app}:{event.event_id}"


_INVALID = (
    "422 names the field (`loc`) of an invalid event: against the schema, an unknown template, "
    "segment or strategy (of the loaded rules), or a template variable missing from `data`."
)
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "Missing or invalid API key or token"},
    403: {
        "model": Problem,
        "description": "`app` is not the app the key belongs to (an operator: one they hold events:send on), "
        "the app is disabled, or `channels` names a channel the app may not use",
    },
    409: {"model": Problem, "description": "The app has no events signing key yet: rotate its key"},
    **TOO_LARGE,
    503: {"model": Problem, "description": "The broker did not acknowledge; nothing was accepted, retry"},
}
