"""Upstream apps through the API: list and read (`apps:read`), register, disable, enable, rotate the key,
change the authorised channels and remove (`apps:manage`), each on the app named. A key (and its events
signing key) is shown once, at register and rotate, and never again; no audit record holds either."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field

from api.app_service import (
    AppKey,
    readable_apps,
    register_app,
    remove_app,
    required_app,
    rotate_app_key,
    set_app_channels,
    switch_app,
)
from api.deps import ApiDeps
from api.problems import Problem
from records.topics import ChannelName
from settings.permissions import Principal
from state.apps import App, AppRegistry

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


def apps_router(deps: ApiDeps, registry: AppRegistry) -> APIRouter:
    router = APIRouter(prefix="/v1/apps", tags=["apps"], responses={
        401: {"model": Problem, "description": "Missing or invalid credentials"},
        403: {"model": Problem, "description": "The permission (named) is not held on this app"},
        404: {"model": Problem, "description": "No such app"},
    })
    access = deps.access
    Readers = Annotated[Principal, Depends(access.requires("apps:read"))]
    Managers = Annotated[Principal, Depends(access.requires("apps:manage"))]

    @router.get("", response_model=list[App], summary="The apps you may read")
    async def list_apps(principal: Readers) -> list[App]:
        return await readable_apps(registry, principal)

    @router.get("/{name}", response_model=App, summary="One app")
    async def get_app(name: AppName, principal: Readers) -> App:
        access.authorize(principal, "apps:read", name)
        return await required_app(registry, name)

    @router.post("", status_code=status.HTTP_201_CREATED, response_model=AppKey,
                 summary="Register an app (its key shown once)",
                 responses={409: {"model": Problem, "description": "The name is taken"}})
    async def register(body: NewApp, request: Request, principal: Managers) -> AppKey:
        return await register_app(deps, registry, request, principal, body.name, list(body.channels),
                                  body.description)

    @router.post("/{name}/key", response_model=AppKey, summary="Rotate the app's key (the old one stops now)")
    async def rotate(name: AppName, request: Request, principal: Managers) -> AppKey:
        return await rotate_app_key(deps, registry, request, principal, name)

    @router.post("/{name}/disable", response_model=App, summary="Disable the app (key and events refused)")
    async def disable(name: AppName, request: Request, principal: Managers) -> App:
        return await switch_app(deps, registry, request, principal, name, False)

    @router.post("/{name}/enable", response_model=App, summary="Enable the app again")
    async def enable(name: AppName, request: Request, principal: Managers) -> App:
        return await switch_app(deps, registry, request, principal, name, True)

    @router.put("/{name}/channels", response_model=App, summary="Change the channels the app may use")
    async def set_channels(name: AppName, body: Channels, request: Request, principal: Managers) -> App:
        return await set_app_channels(deps, registry, request, principal, name, list(body.channels))

    @router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove the app and its key")
    async def remove(name: AppName, request: Request, principal: Managers) -> None:
        await remove_app(deps, registry, request, principal, name)

    return router
