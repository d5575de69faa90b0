"""What an operator may do to upstream apps, once: the `/v1/apps` routes and the console's Apps page both
call these, so the checks, the store calls and the audit records are the same whichever is used.

Each function authorises the principal on the app, changes the registry and publishes the audit record;
refusals are HTTPExceptions (403, 404, 409, 422) with the message the API answers.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import HTTPException, Request, status
from pydantic import BaseModel, Field

from api.access import audit_record
from api.deps import ApiDeps
from api.problems import invalid
from records.signing import events_signing_key
from settings.permissions import ALL_APPS, Principal
from state.apps import App, AppExistsError, AppRegistry, AppSpecError, UnknownAppError

T = TypeVar("T")


class AppKey(BaseModel):
    """Shown this once: Switchboard keeps only the key's hash (and the signing key, to check records)."""

    app: App
    key: str = Field(description="`Authorization: Bearer <key>` on the API")
    signing_key: str = Field(
        description="HMAC key for the `switchboard-signature` header of records produced to the `events` "
        "topic directly (the SHA-256 of `switchboard-events:` + key, hex)"
    )


async def readable_apps(registry: AppRegistry, principal: Principal) -> list[App]:
    """The apps `principal` may read (`apps:read` on them)."""
    scope = principal.apps_for("apps:read")
    return [app for app in await registry.list() if ALL_APPS in scope or app.name in scope]


async def register_app(deps: ApiDeps, registry: AppRegistry, request: Request, principal: Principal,
                       name: str, channels: list[str], description: str) -> AppKey:
    deps.access.authorize(principal, "apps:manage", name)
    try:
        key = await registry.register(name, channels, description)
    except AppExistsError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except AppSpecError as exc:
        raise invalid(("body",), str(exc)) from None
    app = await required_app(registry, name)
    await _audited(deps, request, principal, "app.register", app.name, after=app.model_dump(mode="json"))
    return AppKey(app=app, key=key, signing_key=events_signing_key(key))


async def rotate_app_key(deps: ApiDeps, registry: AppRegistry, request: Request, principal: Principal,
                         name: str) -> AppKey:
    deps.access.authorize(principal, "apps:manage", name)
    key = await _known(registry.rotate_key(name))
    app = await required_app(registry, name)
    await _audited(deps, request, principal, "app.rotate_key", name)
    return AppKey(app=app, key=key, signing_key=events_signing_key(key))


async def switch_app(deps: ApiDeps, registry: AppRegistry, request: Request, principal: Principal,
                     name: str, enabled: bool) -> App:
    deps.access.authorize(principal, "apps:manage", name)
    before = await required_app(registry, name)
    after = await _known(registry.set_enabled(name, enabled))
    await _audited(deps, request, principal, "app.enable" if enabled else "app.disable", name,
                   before={"enabled": before.enabled}, after={"enabled": after.enabled})
    return after


async def set_app_channels(deps: ApiDeps, registry: AppRegistry, request: Request, principal: Principal,
                           name: str, channels: list[str]) -> App:
    deps.access.authorize(principal, "apps:manage", name)
    try:
        before, after = await registry.set_channels(name, channels)
    except UnknownAppError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except AppSpecError as exc:
        raise invalid(("body", "channels"), str(exc)) from None
    await _audited(deps, request, principal, "app.channels", name, before=sorted(before.channels),
                   after=sorted(after.channels))
    return after


async def remove_app(deps: ApiDeps, registry: AppRegistry, request: Request, principal: Principal,
                     name: str) -> None:
    deps.access.authorize(principal, "apps:manage", name)
    before = await required_app(registry, name)
    await _known(registry.remove(name))
    await _audited(deps, request, principal, "app.remove", name, before=before.model_dump(mode="json"))


async def required_app(registry: AppRegistry, name: str) -> App:
    app = await registry.get(name)
    if app is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no app named {name!r} is registered")
    return app


async def _audited(deps: ApiDeps, request: Request, principal: Principal, action: str, app: str,
                   **kw: Any) -> None:
    await deps.publisher.publish_audit(
        audit_record(request, principal, action, target_kind="app", target=app, app=app, **kw)
    )


async def _known(work: Awaitable[T]) -> T:
    try:
        return await work
    except UnknownAppError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
