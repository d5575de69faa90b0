"""Stored templates for operators: list, show, versions, save a new version, preview, diff, publish.
Reading takes `templates:read`, saving `templates:edit`, publishing `templates:publish`, each on the
template's owner app; every save and publish is an audit record (`template.save`, `template.publish`)."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api import template_actions as actions
from api import template_service as service
from api.deps import ApiDeps
from api.problems import Problem, invalid
from api.template_service import TemplateRefused, Templates, VersionDraft
from settings.permissions import Principal

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
T = TypeVar("T")


class PreviewRequest(BaseModel):
    """Data to render with instead of the declared samples (omit: the samples)."""

    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] | None = Field(None, description="Variable → value; omit to use the samples")


def templates_router(deps: ApiDeps, templates: Templates) -> APIRouter:
    router = APIRouter(
        prefix="/v1/templates",
        tags=["templates"],
        responses={
            401: {"model": Problem, "description": "Missing or invalid credentials"},
            403: {"model": Problem, "description": "Lacks the permission on the template's app"},
            404: {"model": Problem, "description": "No such template or version"},
        },
    )
    Reader = Annotated[Principal, Depends(deps.access.requires("templates:read"))]
    Editor = Annotated[Principal, Depends(deps.access.requires("templates:edit"))]
    Publisher = Annotated[Principal, Depends(deps.access.requires("templates:publish"))]
    Name = Annotated[str, Path(pattern=_NAME)]
    Number = Annotated[int, Path(ge=1, le=1_000_000)]

    async def readable(principal: Principal, name: str, permission: str = "templates:read") -> str:
        found = await _refusing(actions.readable(deps.access, templates, principal, name, permission))
        return found.app

    @router.get("", summary="Stored templates the caller may read, with their live versions; file names")
    async def list_templates(principal: Reader) -> dict[str, Any]:
        stored, files = await service.listing(templates, principal)
        return {"templates": stored, "files": files}

    @router.get("/{name}", summary="A stored template: owner, live and latest version, publications")
    async def show_template(principal: Reader, name: Name) -> dict[str, Any]:
        await readable(principal, name)
        return await service.summary(templates, await _refusing(service.template_of(templates, name)))

    @router.get("/{name}/versions", summary="Every version of a stored template, oldest first")
    async def list_versions(principal: Reader, name: Name) -> list[dict[str, Any]]:
        await readable(principal, name)
        return [v.model_dump(mode="json") for v in await templates.store.versions(name)]

    @router.get("/{name}/versions/{number}", summary="One version: parts, variables, author, publication")
    async def show_version(principal: Reader, name: Name, number: Number) -> dict[str, Any]:
        await readable(principal, name)
        version = await _refusing(service.version_of(templates, name, number))
        publication = await templates.store.publication(name, number)
        return {**version.model_dump(mode="json"), "live": await templates.store.live_number(name) == number,
                "publication": publication.model_dump(mode="json") if publication else None}

    @router.post(
        "/{name}/versions", status_code=status.HTTP_201_CREATED,
        summary="Save a new version (the first one creates the template, naming its app)",
        responses={409: {"model": Problem, "description": "A file has the name, or another app owns it"}},
    )
    async def save_version(
        request: Request, principal: Editor, name: Name, body: VersionDraft
    ) -> dict[str, Any]:
        saved = await _refusing(
            actions.save_version(deps.access, deps.publisher, templates, request, principal, name, body)
        )
        return {"template": saved.template.model_dump(mode="json"),
                "version": saved.version.model_dump(mode="json")}

    @router.post("/{name}/versions/{number}/preview",
                 summary="Each channel rendered from samples or data: fields, SMS segments, cost, problems")
    async def preview_version(principal: Reader, name: Name, number: Number,
                              body: PreviewRequest | None = None) -> dict[str, Any]:
        await readable(principal, name)
        data = body.data if body is not None else None
        return {"template": name, "version": number,
                "channels": await _refusing(service.render_preview(templates, name, number, data))}

    @router.get("/{name}/diff", summary="Unified diff of two versions, per channel part and of the variables")
    async def diff_versions(
        principal: Reader, name: Name,
        old: Annotated[int, Query(alias="from", ge=1, description="the older version")],
        new: Annotated[int, Query(alias="to", ge=1, description="the newer version")],
    ) -> dict[str, Any]:
        await readable(principal, name)
        return {"template": name, "from": old, "to": new,
                "diff": await _refusing(service.version_diff(templates, name, old, new))}

    @router.post(
        "/{name}/versions/{number}/publish",
        summary="Make a version live (rollback: publish an older one); 202 when an approval policy holds it",
        responses={202: {"description": "Held for approval: live once its levels approve"}},
    )
    async def publish_version(
        request: Request, response: Response, principal: Publisher, name: Name, number: Number
    ) -> dict[str, Any]:
        publication = await _refusing(
            actions.publish_version(deps.access, deps.publisher, templates, request, principal, name, number)
        )
        held = publication.state == "pending_approval"
        if held:
            response.status_code = status.HTTP_202_ACCEPTED
        return {"template": name, "version": number, "live": not held, **publication.model_dump(mode="json")}

    return router


async def _refusing(work: Awaitable[T]) -> T:
    """Await the service call, answering its refusal as the API does (422 in the documented list form)."""
    try:
        return await work
    except TemplateRefused as refused:
        if refused.status == 422:
            raise invalid(("body",), refused.detail) from None
        raise HTTPException(refused.status, refused.detail) from None
