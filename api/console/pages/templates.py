"""The Templates page: stored templates and template files, a template's versions, the editor, the
preview of each channel from samples, the diff of two versions, publishing.

Reading takes `templates:read`, saving `templates:edit`, publishing `templates:publish`, each on the
template's owner app, checked here and again inside `api.template_actions` (the `/v1/templates`
router's own path, with its audit records)."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import functools
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import RedirectResponse, Response

from api import template_actions as actions
from api import template_service as service
from api.console.context import ConsolePage
from api.console.pages.template_form import (
    GENERAL,
    PART_CHANNELS,
    VARIABLE_TYPES,
    EditorForm,
    draft_of,
    form_of_post,
    form_of_version,
    place_refusal,
)
from api.console.pages.unserved import unserved_router
from api.console.render import render
from api.console.session import authorize, console_principal
from api.deps import ApiDeps
from api.template_service import TemplateRefused
from settings.permissions import Principal

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
Name = Annotated[str, Path(pattern=_NAME)]
Number = Annotated[int, Path(ge=1, le=1_000_000)]
Reader = Annotated[Principal, Depends(console_principal("templates:read"))]
Editor = Annotated[Principal, Depends(console_principal("templates:edit"))]
Publisher = Annotated[Principal, Depends(console_principal("templates:publish"))]


def templates_router(deps: ApiDeps) -> APIRouter:
    if deps.template_versions is None:
        return unserved_router("/templates", "templates:read", "stored templates")
    router = APIRouter(prefix="/templates", include_in_schema=False)
    templates = deps.template_versions

    async def readable(
        request: Request, principal: Principal, name: str, permission: str = "templates:read"
    ) -> str:
        found = await service.template_of(templates, name)
        authorize(request, principal, permission, found.app)
        return found.app

    @router.get("")
    async def listing(request: Request, principal: Reader) -> Response:
        stored, files = await service.listing(templates, principal)
        return render(request, "templates/list.html", principal, stored=stored, files=files,
                      may_edit=bool(principal.apps_for("templates:edit")))

    @router.get("/new")
    async def new_template(request: Request, principal: Editor) -> Response:
        return _editor(request, principal, None, form_of_version(None, blank_rows=3))

    @router.post("/new")
    async def create_template(request: Request, principal: Editor) -> Response:
        posted = await request.form()
        name = str(posted.get("name", "")).strip()
        form = _posted_form(posted)
        if not _valid_name(name):
            form.errors["name"] = (
                f"name {name!r}: a lower-case letter, then letters, digits or _ (64 at most)"
            )
            return _editor(request, principal, None, form, name=name)
        return await _save(request, principal, name, form, new=True)

    @router.get("/{name}")
    @answering
    async def show(request: Request, principal: Reader, name: Name,
                   notice: Annotated[str, Query(max_length=40)] = "") -> Response:
        await readable(request, principal, name)
        summary = await service.summary(templates, await service.template_of(templates, name))
        app = summary["app"]
        return render(request, "templates/show.html", principal, stored=summary, notice=notice,
                      may_edit=principal.allows("templates:edit", app),
                      may_publish=principal.allows("templates:publish", app))

    @router.get("/{name}/edit")
    @answering
    async def edit(request: Request, principal: Editor, name: Name) -> Response:
        await readable(request, principal, name, "templates:edit")
        latest = (await templates.store.versions(name))[-1:]
        return _editor(request, principal, name, form_of_version(latest[0] if latest else None))

    @router.post("/{name}/versions")
    @answering
    async def save(request: Request, principal: Editor, name: Name) -> Response:
        await readable(request, principal, name, "templates:edit")
        return await _save(request, principal, name, _posted_form(await request.form()), new=False)

    @router.get("/{name}/versions/{number}")
    @answering
    async def version(request: Request, principal: Reader, name: Name, number: Number,
                      data: Annotated[str, Query(max_length=20_000)] = "") -> Response:
        await readable(request, principal, name)
        shown = await service.version_of(templates, name, number)
        values, data_error = _data_of(data)
        preview: dict[str, Any] = {}
        if data_error is None:
            try:
                preview = await service.render_preview(templates, name, number, values)
            except TemplateRefused as refused:
                data_error = refused.detail
        app = (await service.template_of(templates, name)).app
        return render(request, "templates/version.html", principal, name=name, version=shown,
                      parts_yaml={c: yaml.safe_dump(p, allow_unicode=True, sort_keys=False)
                                  for c, p in shown.parts.items()},
                      live=await templates.store.live_number(name) == number,
                      publication=await templates.store.publication(name, number),
                      preview=preview, data=data, data_error=data_error,
                      may_publish=principal.allows("templates:publish", app))

    @router.get("/{name}/diff")
    @answering
    async def diff(request: Request, principal: Reader, name: Name,
                   old: Annotated[int, Query(alias="from", ge=1)],
                   new: Annotated[int, Query(alias="to", ge=1)]) -> Response:
        await readable(request, principal, name)
        sections = await service.version_diff(templates, name, old, new)
        return render(request, "templates/diff.html", principal, name=name, old=old, new=new,
                      sections={k: v.splitlines() for k, v in sections.items()})

    @router.post("/{name}/versions/{number}/publish")
    @answering
    async def publish(request: Request, principal: Publisher, name: Name, number: Number) -> Response:
        await readable(request, principal, name, "templates:publish")
        publication = await actions.publish_version(
            deps.access, deps.publisher, templates, request, principal, name, number
        )
        notice = "held" if publication.state == "pending_approval" else "live"
        return RedirectResponse(f"/console/templates/{name}?notice={notice}", status.HTTP_303_SEE_OTHER)

    async def _save(
        request: Request, principal: Principal, name: str, form: EditorForm, *, new: bool
    ) -> Response:
        draft = draft_of(form, new)
        if draft is None:
            return _editor(request, principal, None if new else name, form, name=name)
        try:
            app = await service.owner_app(templates, name, draft)
            authorize(request, principal, "templates:edit", app)
            saved = await actions.save_version(deps.access, deps.publisher, templates, request, principal,
                                               name, draft)
        except TemplateRefused as refused:
            place_refusal(form, refused.detail)
            return _editor(request, principal, None if new else name, form, name=name)
        return RedirectResponse(f"/console/templates/{name}/versions/{saved.version.number}",
                                status.HTTP_303_SEE_OTHER)

    return router


def _editor(request: Request, principal: Principal, existing: str | None, form: EditorForm,
            name: str = "") -> Response:
    """The editor: for a new template (`existing` None) with name, app and description too."""
    refused = bool(form.errors)
    return render(request, "templates/edit.html", principal, existing=existing, name=existing or name,
                  form=form, channels=PART_CHANNELS, types=VARIABLE_TYPES, general=GENERAL,
                  apps=sorted(principal.apps_for("templates:edit")),
                  status_code=422 if refused else 200)


def _posted_form(posted: Any) -> EditorForm:
    single = {key: str(value) for key, value in posted.items() if isinstance(value, str)}
    rows = {key: [str(v) for v in posted.getlist(key)] for key in
            ("var_name", "var_type", "var_required", "var_sample", "var_description")}
    return form_of_post(single, rows)


def _valid_name(name: str) -> bool:
    return re.fullmatch(_NAME, name) is not None


def _data_of(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Preview data typed as YAML/JSON (empty: the samples), or the error saying why not."""
    if not text.strip():
        return None, None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return None, f"data: not valid YAML or JSON: {exc}"
    if not isinstance(data, dict):
        return None, "data: a mapping of variable to value (course: Linear Algebra)"
    return data, None


def answering(route: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """The service's refusal (an unknown template or version: 404) as a page saying so, in the API's
    words; FastAPI reads the route's own signature through `functools.wraps`."""

    @functools.wraps(route)
    async def answered(**kwargs: Any) -> Response:
        try:
            return await route(**kwargs)
        except TemplateRefused as refused:
            return render(kwargs["request"], "templates/refused.html", kwargs["principal"],
                          detail=refused.detail, status_code=refused.status)

    return answered


PAGE = ConsolePage("templates", "/console/templates", "templates:read", templates_router)
