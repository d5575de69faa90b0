"""Upstream apps through the API: list and read (`apps:read`), register, disable, enable, rotate the key,
change the authorised channels and remove (`apps:manage`), each on the app named. A key (and its events
signing key) is shown once, at register and rotate, and never again; no audit record holds either."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field

from api.access import audit_record
from api.deps import ApiDeps
from api.problems import Problem, invalid
from records.signing import events_signing_key
from records.topics import ChannelName
from settings.permissions import ALL_APPS, Principal
from state.apps import App, AppExistsError, AppRegistry, AppSpecError, UnknownAppError

T = TypeVar("T")
_NAME = r"^[A-Za-z0-9_.:\-]{1,128}$"
AppName = Annotated[str, Path(pattern=_NAME, description="The app's name")]


class NewApp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    channels: list[ChannelName] = Field(min_length=1)
    description: str = Field("", max_length=500)


class Channels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[ChannelName] = Field(min_length=1)


class AppKey(BaseModel):
    """Shown this once: Switchboard keeps only the key's hash (and the signing key, to check records)."""

    app: App
    key: str = Field(description="`Authorization: Bearer <key>` on the API")
    signing_key: str = Field(
        description="HMAC key for the `switchboard-signature` header of records produced to the `events` "
        "topic directly (the SHA-256 of `switchboard-events:` + key, hex)"
    )


def apps_router(deps: ApiDeps, registry: AppRegistry) -> APIRouter:
    router = APIRouter(prefix="/v1/apps", tags=["apps"], responses={
        401: {"model": Problem, "description": "Missing or invalid credentials"},
        403: {"model": Problem, "description": "The permission (named) is not held on this app"},
        404: {"model": Problem, "description": "No such app"},
    })
    access = deps.access
    Readers = Annotated[Principal, Depends(access.requires("apps:read"))]
    Managers = Annotated[Principal, Depends(access.requires("apps:manage"))]

    async def audited(request: Request, principal: Principal, action: str, app: str, **kw: Any) -> None:
        await deps.publisher.publish_audit(
            audit_record(request, principal, action, target_kind="app", target=app, app=app, **kw)
        )

    @router.get("", response_model=list[App], summary="The apps you may read")
    async def list_apps(principal: Readers) -> list[App]:
        scope = principal.apps_for("apps:read")
        return [app for app in await registry.list() if ALL_APPS in scope or app.name in scope]

    @router.get("/{name}", response_model=App, summary="One app")
    async def get_app(name: AppName, principal: Readers) -> App:
        access.authorize(principal, "apps:read", name)
        app = await registry.get(name)
        if app is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no app named {name!r} is registered")
        return app

    @router.post("", status_code=status.HTTP_201_CREATED, response_model=AppKey,
                 summary="Register an app (its key shown once)",
                 responses={409: {"model": Problem, "description": "The name is taken"}})
    async def register(body: NewApp, request: Request, principal: Managers) -> AppKey:
        access.authorize(principal, "apps:manage", body.name)
        try:
            key = await registry.register(body.name, body.channels, body.description)
        except AppExistsError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        except AppSpecError as exc:
            raise invalid(("body",), str(exc)) from None
        app = await _required(registry, body.name)
        await audited(request, principal, "app.register", app.name, after=app.model_dump(mode="json"))
        return AppKey(app=app, key=key, signing_key=events_signing_key(key))

    @router.post("/{name}/key", response_model=AppKey, summary="Rotate the app's key (the old one stops now)")
    async def rotate(name: AppName, request: Request, principal: Managers) -> AppKey:
        access.authorize(principal, "apps:manage", name)
        key = await _known(registry.rotate_key(name))
        app = await _required(registry, name)
        await audited(request, principal, "app.rotate_key", name)
        return AppKey(app=app, key=key, signing_key=events_signing_key(key))

    @router.post("/{name}/disable", response_model=App, summary="Disable the app (key and events refused)")
    async def disable(name: AppName, request: Request, principal: Managers) -> App:
        return await _switch(name, False, request, principal)

    @router.post("/{name}/enable", response_model=App, summary="Enable the app again")
    async def enable(name: AppName, request: Request, principal: Managers) -> App:
        return await _switch(name, True, request, principal)

    async def _switch(name: str, enabled: bool, request: Request, principal: Principal) -> App:
        access.authorize(principal, "apps:manage", name)
        before = await _required(registry, name)
        after = await _known(registry.set_enabled(name, enabled))
        await audited(request, principal, "app.enable" if enabled else "app.disable", name,
                      before={"enabled": before.enabled}, after={"enabled": after.enabled})
        return after

    @router.put("/{name}/channels", response_model=App, summary="Change the channels the app may use")
    async def set_channels(name: AppName, body: Channels, request: Request, principal: Managers) -> App:
        access.authorize(principal, "apps:manage", name)
        try:
            before, after = await registry.set_channels(name, body.channels)
        except UnknownAppError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except AppSpecError as exc:
            raise invalid(("body", "channels"), str(exc)) from None
        await audited(request, principal, "app.channels", name, before=sorted(before.channels),
                      after=sorted(after.channels))
        return after

    @router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove the app and its key")
    async def remove(name: AppName, request: Request, principal: Managers) -> None:
        access.authorize(principal, "apps:manage", name)
        before = await _required(registry, name)
        await _known(registry.remove(name))
        await audited(request, principal, "app.remove", name, before=before.model_dump(mode="json"))

    return router


async def _required(registry: AppRegistry, name: str) -> App:
    app = await registry.get(name)
    if app is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no app named {name!r} is registered")
    return app


async def _known(work: Awaitable[T]) -> T:
    try:
        return await work
    except UnknownAppError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
