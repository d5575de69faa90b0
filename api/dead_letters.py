"""Dead letters for operators: list (`dead_letters:read`), inspect one, replay one (optionally corrected)
or a selection (`dead_letters:replay`). Letters are read from topic `events.deadletter`, which keeps the
payload; an operator sees only the letters of the apps they hold the permission on (a letter no app
could be read from, only with the permission over every app). Every replay is audited."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from analytics.funnel import FunnelError, parse_moment
from api.dead_letter_replay import AcceptedEvents, Actor, Signing, inspected, read_record, replay, summary
from api.deps import ApiDeps
from api.problems import Problem, invalid
from processors.dead_letter_shelf import (
    REPLAYABLE_STAGE,
    STAGES,
    DeadLetterShelf,
    LetterFilter,
    ShelfUnavailable,
    ShelvedLetter,
    parse_letter_id,
)
from settings.permissions import ALL_APPS, Principal

T = TypeVar("T")
MAX_LIST = 1000
MAX_REPLAY = 500
Stage = Literal["ingest", "decide", "send", "track", "other"]
_LETTER_ID = Path(description="The letter's id, `PARTITION-OFFSET`", pattern=r"^\d+-\d+$", max_length=40)


class LetterSummary(BaseModel):
    """A letter without its payload."""

    id: str
    received_at: str
    stage: str = Field(description="The stage that refused the record: ingest, decide, send, track")
    reason: str
    app: str
    event_id: str
    source: str = Field(description="Where the refused record was: topic:partition:offset")
    payload_bytes: int
    payload_truncated: bool
    replayable: bool = Field(description="An event refused by ingest, kept whole: replayable as it is")


class LetterList(BaseModel):
    letters: list[LetterSummary]
    matched: int = Field(description="Letters that match, before offset and limit")
    offset: int
    limit: int


class Letter(LetterSummary):
    payload_kind: str = Field(description="`json` (secret-named fields masked), `text` or `base64`")
    payload: JsonValue


class ReplayOne(BaseModel):
    """Replay as it is, or give the corrected event (validated as an event; same app as the letter)."""

    model_config = ConfigDict(extra="forbid")

    event: dict[str, Any] | None = Field(default=None, description="The corrected event, if any")


class ReplaySelection(BaseModel):
    """Replay every letter refused by ingest that matches (at most `limit`, newest first)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500, description="Reason text, any case")
    app: str | None = Field(default=None, max_length=128)
    since: str | None = Field(default=None, max_length=40, description="`1d`, a date or an ISO time")
    limit: int = Field(default=100, ge=1, le=MAX_REPLAY)


class ReplayResult(BaseModel):
    letter_id: str
    outcome: Literal["published", "not_replayable", "invalid", "forbidden"]
    detail: str
    app: str
    event_id: str
    duplicate: bool = Field(description="Accepted before: ingest drops this replay as a duplicate")


class ReplayResults(BaseModel):
    results: list[ReplayResult]


_REFUSED = {"forbidden": status.HTTP_403_FORBIDDEN, "not_replayable": status.HTTP_409_CONFLICT}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid credentials"},
    403: {"model": Problem, "description": "Without the permission (on the app asked for)"},
    503: {"model": Problem, "description": "The broker could not be read or did not acknowledge; retry"},
}


def dead_letters_router(
    deps: ApiDeps, shelf: DeadLetterShelf, accepted: AcceptedEvents | None = None
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["dead letters"])
    reading = Depends(deps.access.requires("dead_letters:read"))
    replaying = Depends(deps.access.requires("dead_letters:replay"))
    # Replays are signed as the API signs the events it accepts: with their app's signing key.
    signing = Signing(deps.apps, deps.events_signatures_required)

    @router.get(
        "/dead-letters",
        summary="Dead letters of your apps, newest first",
        operation_id="dead_letters",
        response_model=LetterList,
        responses=_UNAVAILABLE,
    )
    async def list_letters(
        principal: Annotated[Principal, reading],
        reason: Annotated[str | None, Query(description="Reason contains (any case)", max_length=500)] = None,
        app: Annotated[str | None, Query(description="One app's letters", max_length=128)] = None,
        stage: Annotated[Stage | None, Query(description="The stage that refused")] = None,
        since: Annotated[str | None, Query(description="`1d`, a date or an ISO time", max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        if app is not None:
            deps.access.authorize(principal, "dead_letters:read", app)
        wanted = letter_filter(principal, "dead_letters:read", reason, app, stage, since)
        letters = await shelved_or_503(shelf.letters(wanted))
        return {
            "letters": [summary(s) for s in letters[offset : offset + limit]],
            "matched": len(letters),
            "offset": offset,
            "limit": limit,
        }

    @router.get(
        "/dead-letters/{letter_id}",
        summary="One dead letter with its payload (secret-named fields masked)",
        operation_id="dead_letter",
        response_model=Letter,
        responses={**_UNAVAILABLE, 404: {"model": Problem, "description": "No such letter of your apps"}},
    )
    async def show_letter(
        request: Request, principal: Annotated[Principal, reading], letter_id: Annotated[str, _LETTER_ID]
    ) -> dict[str, Any]:
        shelved = await find_letter(shelf, principal, "dead_letters:read", letter_id)
        # A payload is a person's data: who read which letter is audited before it is shown.
        await deps.publisher.publish_audit(read_record(shelved, actor_of(principal, request)))
        return inspected(shelved)

    @router.post(
        "/dead-letters/{letter_id}/replay",
        summary="Replay one dead-lettered event, as it is or corrected",
        operation_id="replay_dead_letter",
        response_model=ReplayResult,
        responses={
            **_UNAVAILABLE,
            403: {"model": Problem, "description": "No permission, or the event moved to another app"},
            404: {"model": Problem, "description": "No such letter of your apps"},
            409: {"model": Problem, "description": "Not an event refused by ingest, or kept only in part"},
            422: {"description": "The event (as kept, or as corrected) is still not valid: what is wrong"},
        },
    )
    async def replay_letter(
        request: Request,
        principal: Annotated[Principal, replaying],
        letter_id: Annotated[str, _LETTER_ID],
        body: ReplayOne | None = None,
    ) -> dict[str, Any]:
        edited = body.event if body is not None else None
        return await replay_one(deps, shelf, accepted, request, principal, letter_id, edited)

    @router.post(
        "/dead-letters:replay",
        summary="Replay the dead-lettered events that match, as they are",
        operation_id="replay_dead_letters",
        response_model=ReplayResults,
        responses=_UNAVAILABLE,
    )
    async def replay_selection(
        request: Request, principal: Annotated[Principal, replaying], selection: ReplaySelection
    ) -> dict[str, Any]:
        if selection.app is not None:
            deps.access.authorize(principal, "dead_letters:replay", selection.app)
        wanted = letter_filter(
            principal,
            "dead_letters:replay",
            selection.reason,
            selection.app,
            REPLAYABLE_STAGE,
            selection.since,
            where="body",
        )
        letters = (await shelved_or_503(shelf.letters(wanted)))[: selection.limit]
        actor = actor_of(principal, request)
        results = [
            await replay(
                shelved,
                publisher=deps.publisher,
                accepted=accepted,
                actor=actor,
                may_replay=lambda app: may_act(principal, "dead_letters:replay", app),
                signing=signing,
            )
            for shelved in letters
        ]
        return {"results": [r.as_dict() for r in results]}

    return router


async def replay_one(
    deps: ApiDeps,
    shelf: DeadLetterShelf,
    accepted: AcceptedEvents | None,
    request: Request,
    principal: Principal,
    letter_id: str,
    edited: dict[str, Any] | None,
) -> dict[str, Any]:
    """Replay one letter as kept, or `edited` (the corrected event), audited; `POST
    /v1/dead-letters/{id}/replay` and the console's Dead letters page. Its refusals are the API's
    answers (each audited already): 404 not among the caller's letters, 403, 409 not replayable, 422
    the event still invalid (naming `event`)."""
    shelved = await find_letter(shelf, principal, "dead_letters:replay", letter_id)
    result = await replay(
        shelved,
        publisher=deps.publisher,
        accepted=accepted,
        actor=actor_of(principal, request),
        may_replay=lambda app: may_act(principal, "dead_letters:replay", app),
        # Replays are signed as the API signs the events it accepts: with their app's signing key.
        signing=Signing(deps.apps, deps.events_signatures_required),
        edited=edited,
    )
    # Refusals of this one letter are HTTP errors (each audited already); a selection reports them.
    if result.outcome == "invalid":
        raise invalid(("body", "event"), result.detail)
    if result.outcome in _REFUSED:
        raise HTTPException(_REFUSED[result.outcome], result.detail)
    return result.as_dict()


def letter_filter(
    principal: Principal,
    permission: str,
    reason: str | None,
    app: str | None,
    stage: str | None,
    since: str | None,
    where: str = "query",
) -> LetterFilter:
    try:
        start = parse_moment(since, datetime.now(UTC)) if since else None
    except FunnelError as exc:
        raise invalid((where, "since"), str(exc)) from None
    if stage is not None and stage not in {*STAGES.values(), "other"}:
        raise invalid((where, "stage"), f"unknown stage {stage!r}")
    apps = principal.apps_for(permission)
    return LetterFilter(
        reason=reason or None,
        app=app or None,
        stage=stage,
        since=start,
        apps=None if ALL_APPS in apps else frozenset(apps),
    )


def may_act(principal: Principal, permission: str, app: str) -> bool:
    # A letter no app could be read from belongs to no app: only a grant over every app reaches it.
    return principal.allows(permission, app or None) if app else ALL_APPS in principal.apps_for(permission)


async def find_letter(
    shelf: DeadLetterShelf, principal: Principal, permission: str, letter_id: str
) -> ShelvedLetter:
    parse_letter_id(letter_id)  # the path pattern has checked the form already
    shelved = await shelved_or_503(shelf.get(letter_id))
    if shelved is None or not may_act(principal, permission, shelved.letter.app):
        # The same answer whether the letter is another app's or nobody's.
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dead letter {letter_id} among your apps' letters")
    return shelved


async def shelved_or_503(reading: Awaitable[T]) -> T:
    try:
        return await reading
    except ShelfUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), {"Retry-After": "5"}) from None


def actor_of(principal: Principal, request: Request) -> Actor:
    return Actor(principal.name, principal.kind, request.client.host if request.client else "")
