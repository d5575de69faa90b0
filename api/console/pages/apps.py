"""Apps (上游应用): the apps an operator may read; register one, disable, enable, rotate its key, change
its channels. Every action runs `api.app_service`, as `/v1/apps` does: the same checks, the same audit
records. A new or rotated key and its signing key appear once, in the answer to that POST (no redirect,
so never in an address or the history), and never again.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from api.app_service import (
    AppKey,
    readable_apps,
    register_app,
    rotate_app_key,
    set_app_channels,
    switch_app,
)
from api.apps import Channels, NewApp
from api.console.context import ConsolePage
from api.console.pages.refusals import refusal, status_of
from api.console.render import render
from api.console.session import authorize, console_principal
from api.deps import ApiDeps
from records.vocabulary import CHANNELS
from settings.permissions import Principal
from state.apps import AppRegistry

PATH = "/console/apps"
Reader = Annotated[Principal, Depends(console_principal("apps:read"))]
Manager = Annotated[Principal, Depends(console_principal("apps:manage"))]
_REFUSED = (HTTPException, RequestValidationError, ValidationError)


def apps_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/apps")

    def registry() -> AppRegistry:
        if not isinstance(deps.apps, AppRegistry):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "apps are not kept in this deployment")
        return deps.apps

    async def page(request: Request, principal: Principal, *, status_code: int = 200,
                   refused: Exception | None = None, failed: str = "", key: AppKey | None = None,
                   form: Mapping[str, object] | None = None) -> Response:
        """The list; `failed` names the app (or `new`) whose form was `refused`, shown by field."""
        apps = await readable_apps(registry(), principal)
        manageable = {app.name for app in apps if principal.allows("apps:manage", app.name)}
        return render(
            request, "apps/page.html", principal,
            status_code=status_of(refused) if refused else status_code,
            errors=refusal(refused) if refused else {}, failed=failed, form=form or {},
            apps=apps, manageable=manageable, may_register=bool(principal.apps_for("apps:manage")),
            channels=CHANNELS, key=key,
        )

    @router.get("")
    async def listing(request: Request, principal: Reader) -> Response:
        return await page(request, principal)

    @router.post("")
    async def register(request: Request, principal: Manager) -> Response:
        form = await request.form()
        given: dict[str, object] = {"name": str(form.get("name", "")).strip(),
                                    "channels": [str(c) for c in form.getlist("channels")],
                 "description": str(form.get("description", ""))}
        try:
            body = NewApp.model_validate(given)
            authorize(request, principal, "apps:manage", body.name)
            key = await register_app(deps, registry(), request, principal, body.name, list(body.channels),
                                     body.description)
        except _REFUSED as exc:
            return await page(request, principal, refused=exc, failed="new", form=given)
        return await page(request, principal, status_code=status.HTTP_201_CREATED, key=key)

    @router.post("/{name}/key")
    async def rotate(request: Request, name: str, principal: Manager) -> Response:
        authorize(request, principal, "apps:manage", name)
        try:
            key = await rotate_app_key(deps, registry(), request, principal, name)
        except _REFUSED as exc:
            return await page(request, principal, refused=exc, failed=name)
        return await page(request, principal, key=key)

    @router.post("/{name}/enable")
    async def enable(request: Request, name: str, principal: Manager) -> Response:
        return await _switch(request, principal, name, True)

    @router.post("/{name}/disable")
    async def disable(request: Request, name: str, principal: Manager) -> Response:
        return await _switch(request, principal, name, False)

    async def _switch(request: Request, principal: Principal, name: str, enabled: bool) -> Response:
        authorize(request, principal, "apps:manage", name)
        try:
            await switch_app(deps, registry(), request, principal, name, enabled)
        except _REFUSED as exc:
            return await page(request, principal, refused=exc, failed=name)
        return RedirectResponse(PATH, status.HTTP_303_SEE_OTHER)

    @router.post("/{name}/channels")
    async def channels(request: Request, name: str, principal: Manager) -> Response:
        authorize(request, principal, "apps:manage", name)
        form = await request.form()
        try:
            body = Channels.model_validate({"channels": form.getlist("channels")})
            await set_app_channels(deps, registry(), request, principal, name, list(body.channels))
        except _REFUSED as exc:
            return await page(request, principal, refused=exc, failed=name)
        return RedirectResponse(PATH, status.HTTP_303_SEE_OTHER)

    return router


PAGE = ConsolePage("apps", PATH, "apps:read", apps_router)
