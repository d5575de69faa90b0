"""`POST /v1/events`: business systems hand Switchboard an event; 202 once the broker has it."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, status
from pydantic import BaseModel

from api.auth import authenticated_app
from api.deps import ApiDeps
from records.topics import Event
from state.apps import App

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
    caller = Depends(authenticated_app(deps.apps))

    @router.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=EventAccepted,
        summary="Submit one event",
        responses=_ERRORS,
    )
    async def submit_event(event: Event, app: Annotated[App, caller]) -> EventAccepted:
        """Validate and authorise the event, then publish it keyed by `app:event_id`.

        Answers only after the broker acknowledged; resubmitting the same `event_id` is safe.
        """
        _authorise(event, app)
        await deps.publisher.publish_event(_key(event), event.model_dump_json().encode())
        return EventAccepted(event_id=event.event_id, app=event.app)

    @router.post(
        "/events:batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=BatchAccepted,
        summary=f"Submit up to {MAX_BATCH} events",
        responses=_ERRORS,
    )
    async def submit_events(
        events: Annotated[list[Event], Body(min_length=1, max_length=MAX_BATCH)],
        app: Annotated[App, caller],
    ) -> BatchAccepted:
        """All or nothing as far as the answer goes: on any failure resubmit the whole batch (ingest
        deduplicates on `app` and `event_id`)."""
        for index, event in enumerate(events):
            _authorise(event, app, where=f"events[{index}]: ")
        await asyncio.gather(
            *(deps.publisher.publish_event(_key(e), e.model_dump_json().encode()) for e in events)
        )
        return BatchAccepted(app=app.name, count=len(events), event_ids=[e.event_id for e in events])

    return router


def _authorise(event: Event, app: App, where: str = "") -> None:
    if event.app != app.name:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{where}the key belongs to app {app.name!r}, the event names app {event.app!r}",
        )
    refused = sorted(set(event.channels or ()) - app.channels)
    if refused:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{where}app {app.name!r} is not authorised for channel(s) {', '.join(refused)}; "
            f"it may use {', '.join(sorted(app.channels)) or 'none'}",
        )


def _key(event: Event) -> str:
    return f"{event.app}:{event.event_id}"


_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The event names another app or a channel the app may not use"},
    503: {"description": "The broker did not acknowledge; nothing was accepted, retry"},
}
