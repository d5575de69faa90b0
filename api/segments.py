"""Segments for operators: define, list, show, remove, and preview (an exact count and a sample) a named
segment, or preview a definition not yet saved (what the composer shows). Reading takes
`segments:read`, changing `segments:manage`, both on the segment's app (a shared segment, app `*`, is
readable by anyone who may read segments and changed only with `segments:manage` on every app); every
change is an audit record (`segment.put`, `segment.remove`)."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from api.access import audit_record
from api.deps import ApiDeps
from api.problems import Problem
from settings.permissions import ALL_APPS, Principal
from state.segment_definitions import Definition, DefinitionError, parse_definition
from state.segments import Preview, SegmentAudience, SegmentStore, StoredSegment

_NAME = r"^[A-Za-z0-9_.:\-]{1,128}$"
_APP = r"^(\*|[A-Za-z0-9_.:\-]{1,128})$"
MAX_SAMPLE = 100


class SegmentRequest(BaseModel):
    """A segment to create or replace under the name in the path."""

    model_config = ConfigDict(extra="forbid")

    app: str = Field(pattern=_APP, description="The owner app, or `*` for a segment every app may use")
    description: str = Field("", max_length=2000)
    definition: dict[str, Any] = Field(description="The root condition (docs/operators/segments.md)")


class DraftPreviewRequest(BaseModel):
    """An unsaved definition to count and sample, as the app it is meant for would."""

    model_config = ConfigDict(extra="forbid")

    app: str = Field(pattern=_APP)
    definition: dict[str, Any]
    sample: int = Field(10, ge=0, le=MAX_SAMPLE)


class SegmentOut(BaseModel):
    """A stored segment."""

    name: str
    app: str
    description: str
    definition: dict[str, Any]
    created_by: str
    created_at: str
    updated_by: str
    updated_at: str


class Member(BaseModel):
    user_id: str
    name: str


class PreviewOut(BaseModel):
    """The exact count of a full evaluation, a sample of members, how many people the walk read (the
    narrowest index: a required tag's, else everyone) and how long it took."""

    count: int
    sample: list[Member]
    scanned: int
    index: list[str]
    seconds: float


def segments_router(deps: ApiDeps, segments: SegmentStore) -> APIRouter:
    router = APIRouter(
        prefix="/v1/segments",
        tags=["segments"],
        responses={
            401: {"model": Problem, "description": "Missing or invalid credentials"},
            403: {"model": Problem, "description": "Lacks the permission on the segment's app"},
        },
    )
    Reader = Annotated[Principal, Depends(deps.access.requires("segments:read"))]
    Manager = Annotated[Principal, Depends(deps.access.requires("segments:manage"))]
    SegmentName = Annotated[str, Path(pattern=_NAME)]
    missing: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such segment"}}

    async def found(principal: Principal, name: str) -> StoredSegment:
        segment = await segments.get(name)
        if segment is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no segment {name!r}")
        if not readable(principal, segment):
            deps.access.authorize(principal, "segments:read", segment.app)
        return segment

    @router.get("", response_model=list[SegmentOut], summary="Segments the caller may read")
    async def list_segments(
        principal: Reader, app: Annotated[str | None, Query(pattern=_APP)] = None
    ) -> list[dict[str, Any]]:
        return [
            _out(s) for s in await segments.all()
            if readable(principal, s) and (app is None or s.app == app)
        ]

    @router.get("/{name}", response_model=SegmentOut, summary="One segment", responses=missing)
    async def show_segment(principal: Reader, name: SegmentName) -> dict[str, Any]:
        return _out(await found(principal, name))

    @router.put("/{name}", response_model=SegmentOut, summary="Create or replace a segment")
    async def put_segment(
        request: Request, principal: Manager, name: SegmentName, body: SegmentRequest
    ) -> dict[str, Any]:
        return _out(await save_segment(deps, segments, request, principal, name, body))

    @router.delete(
        "/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a segment", responses=missing
    )
    async def remove_segment(request: Request, principal: Manager, name: SegmentName) -> None:
        segment = await segments.get(name)
        if segment is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no segment {name!r}")
        deps.access.authorize(principal, "segments:manage", segment.app)
        await segments.remove(name)
        await _audit(deps, request, principal, "segment.remove", segment, segment, None)

    @router.get(
        "/{name}/preview", response_model=PreviewOut, responses=missing,
        summary="Count a segment exactly (a full evaluation) and sample its members",
    )
    async def preview_segment(
        principal: Reader, name: SegmentName, sample: Annotated[int, Query(ge=0, le=MAX_SAMPLE)] = 10
    ) -> dict[str, Any]:
        return await segment_preview(segments, await found(principal, name), sample)

    @router.post("/preview", response_model=PreviewOut, summary="Count and sample an unsaved definition")
    async def preview_draft(principal: Reader, body: DraftPreviewRequest) -> dict[str, Any]:
        deps.access.authorize(principal, "segments:read", body.app)
        condition = _definition(body.definition).root
        audience = SegmentAudience("draft", await segments.evaluator.narrowest(condition), condition)
        return _preview(audience, await segments.evaluator.preview(audience, body.sample))

    return router


def readable(principal: Principal, segment: StoredSegment) -> bool:
    """Whether `principal` may read `segment` (a shared one, app `*`: anyone who reads segments)."""
    apps = principal.apps_for("segments:read")
    return segment.app == ALL_APPS or ALL_APPS in apps or segment.app in apps


async def save_segment(deps: ApiDeps, segments: SegmentStore, request: Request, principal: Principal,
                       name: str, body: SegmentRequest) -> StoredSegment:
    """Create or replace the segment `name` (checked, audited); the console's editor calls it too."""
    deps.access.authorize(principal, "segments:manage", body.app)
    current = await segments.get(name)
    if current is not None and current.app != body.app:
        # Moving a segment between apps takes the right to change it where it was too.
        deps.access.authorize(principal, "segments:manage", current.app)
    definition = _definition(body.definition)
    before, after = await segments.put(name, body.app, body.description, definition, principal.name)
    await _audit(deps, request, principal, "segment.put", after, before, after)
    return after


async def segment_preview(segments: SegmentStore, segment: StoredSegment, sample: int) -> dict[str, Any]:
    """The exact count of a full evaluation of `segment` and a sample of its members."""
    condition = segment.condition
    audience = SegmentAudience(segment.name, await segments.evaluator.narrowest(condition), condition)
    return _preview(audience, await segments.evaluator.preview(audience, sample))


def _definition(raw: dict[str, Any]) -> Definition:
    try:
        return parse_definition(raw)
    except DefinitionError as exc:
        # One 422 entry per bad condition, its path in the definition (`all[1].engaged.within`) named.
        raise RequestValidationError([
            {"loc": ("body", "definition", *([path] if path else [])), "msg": message, "type": "value_error"}
            for path, message in exc.problems
        ]) from None


def _out(segment: StoredSegment) -> dict[str, Any]:
    return segment.model_dump(mode="json")


def _preview(audience: SegmentAudience, preview: Preview) -> dict[str, Any]:
    return {
        "count": preview.count,
        "sample": [{"user_id": u, "name": n} for u, n in preview.sample],
        "scanned": preview.scanned,
        "index": list(audience.index.sets),
        "seconds": round(preview.seconds, 6),
    }


async def _audit(
    deps: ApiDeps,
    request: Request,
    principal: Principal,
    action: str,
    segment: StoredSegment,
    before: StoredSegment | None,
    after: StoredSegment | None,
) -> None:
    await deps.publisher.publish_audit(
        audit_record(
            request, principal, action, target_kind="segment", target=segment.name, app=segment.app,
            before=before.model_dump(mode="json") if before is not None else None,
            after=after.model_dump(mode="json") if after is not None else None,
        )
    )
