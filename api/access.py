"""Who is calling, and may they: the one FastAPI dependency factory every endpoint declares.

Credentials, from `Authorization: Bearer ...` (or `X-Api-Key`):
- `sbo_...` an operator's personal API token, `sbs_...` an operator's console session: the operator's
  grants, each role's permissions as they are now;
- `sbk_...` an app key: app powers only (`settings.permissions.APP_POWERS`), on its own app;
- `sbu_...` an end-user token minted by an app's backend: that user's own inbox and consent.
A request without credentials is 401; one whose credentials are not valid is 401 and counts as a failure
of its source address, which after too many is refused (429, `Retry-After`) whatever it presents.
A valid principal without the permission is 403, naming the permission (and app) it lacks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, Protocol

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from records.audit import AuditRecord, mask_secrets
from settings.permissions import ALL_APPS, GLOBAL_PERMISSIONS, PERMISSIONS, Grant, Principal, app_principal
from state.apps import App
from state.auth_failures import AuthFailures
from state.operators import OperatorStore

_bearer = HTTPBearer(
    auto_error=False,
    description="An operator's token (`sbo_...`) or session (`sbs_...`), an app key (`sbk_...`) or an "
    "end-user token (`sbu_...`): `Authorization: Bearer <token>`",
)
_header = APIKeyHeader(name="X-Api-Key", auto_error=False, description="An app key, alternatively")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
USER_POWERS: frozenset[str] = frozenset({"inbox:own", "consent:own"})
"""What an end-user token holds, on its own user only (not in the catalog: no role can grant them)."""
APP_ONLY_POWERS: frozenset[str] = frozenset({"user_tokens:issue"})
"""What only an app key holds, on its own app: minting its users' tokens (an operator never acts as
a user)."""
_OUTSIDE_CATALOG = USER_POWERS | APP_ONLY_POWERS


class AppKeys(Protocol):
    """Authenticates an API key and finds apps by name (`state.apps.AppRegistry`)."""

    async def authenticate(self, key: str) -> App | None: ...

    async def get(self, name: str) -> App | None: ...

    async def signing_key(self, name: str) -> str | None:
        """The app's events signing key (`records.signing`), None for none."""


class UserTokens(Protocol):
    """Mints and verifies end-user tokens (`state.user_tokens.UserTokenSigner`)."""

    def mint(self, app: str, user_id: str, ttl_seconds: int) -> tuple[str, int]: ...

    def verify(self, token: str) -> tuple[str, str] | None:
        """(app, user_id) of a valid, unexpired token, else None."""


def app_caller(app: str) -> Principal:
    """An upstream app's key: app powers and the app-only ones, on its own app."""
    base = app_principal(app)
    only = Grant("app", APP_ONLY_POWERS, frozenset({app}))
    return Principal(kind="app", name=app, grants=(*base.grants, only))


def user_principal(app: str, user_id: str) -> Principal:
    """An end user, through a token their app minted: their own inbox and consent, nothing else."""
    return Principal(kind="user", name=f"{app}/{user_id}", user_id=user_id,
                     grants=(Grant("user", USER_POWERS, frozenset({app})),))


def client_address(request: Request) -> str:
    """The caller's address as the server saw it (behind a proxy: run uvicorn with --proxy-headers)."""
    return request.client.host if request.client is not None else "unknown"


class Access:
    """Authenticates requests and answers whether their principal holds a permission."""

    def __init__(
        self,
        apps: AppKeys,
        operators: OperatorStore | None = None,
        user_tokens: UserTokens | None = None,
        failures: AuthFailures | None = None,
    ) -> None:
        self.apps = apps
        self.operators = operators
        self.user_tokens = user_tokens
        self.failures = failures

    def requires(self, permission: str, *alternatives: str) -> Callable[..., Awaitable[Principal]]:
        """A dependency: 401 without valid credentials; 403 unless the principal holds `permission` (or
        one of `alternatives`) on at least one app (global permissions: over `*`). Returns the Principal."""
        wanted = (permission, *alternatives)
        for name in wanted:
            if name not in PERMISSIONS and name not in _OUTSIDE_CATALOG:
                raise KeyError(f"unknown permission {name!r}")

        async def principal_with_permission(
            request: Request,
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
            header: Annotated[str | None, Security(_header)],
        ) -> Principal:
            principal = await self.authenticate(request, bearer, header)
            if not any(holds(principal, name) for name in wanted):
                raise HTTPException(status.HTTP_403_FORBIDDEN, _lacks(principal, " or ".join(wanted), None))
            return principal

        return principal_with_permission

    def authenticated(self) -> Callable[..., Awaitable[Principal]]:
        """A dependency: any valid principal (401 otherwise), e.g. for `GET /v1/me`."""

        async def any_principal(
            request: Request,
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
            header: Annotated[str | None, Security(_header)],
        ) -> Principal:
            return await self.authenticate(request, bearer, header)

        return any_principal

    def authorize(self, principal: Principal, permission: str, app: str | None) -> None:
        """403 naming the permission and the app unless `principal` holds `permission` for `app`."""
        if not _allows(principal, permission, app):
            raise HTTPException(status.HTTP_403_FORBIDDEN, _lacks(principal, permission, app))

    def authorize_user(self, principal: Principal, user_id: str, permission: str) -> None:
        """For what concerns one person: an end user only themselves (403 otherwise); anyone else needs
        `permission` over every app, since a person is not one app's."""
        if principal.kind == "user":
            if principal.user_id != user_id:
                raise HTTPException(status.HTTP_403_FORBIDDEN, "an end-user token reaches its own user only")
            return
        self.authorize(principal, permission, ALL_APPS)

    async def authenticate(
        self,
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = None,
        header: str | None = None,
    ) -> Principal:
        """The principal of the request's credentials; 401 without valid ones, 429 for a source that
        failed too often."""
        # No session cookie yet: the console that sets one brings its CSRF defence with it.
        token = bearer.credentials if bearer is not None else header
        if not token:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing credentials: send `Authorization: Bearer <API key or token>`",
                headers=_CHALLENGE,
            )
        source = client_address(request)
        if self.failures is not None:
            wait = await self.failures.source_wait(source)
            if wait:
                raise too_many_failures(wait)
        principal = await self._principal(token)
        if principal is None:
            if self.failures is not None:
                wait = await self.failures.source_failed(source)
                if wait:
                    raise too_many_failures(wait)
            # The token is never echoed: a near miss is still a secret.
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, f"invalid or expired {_kind_of(token)}", headers=_CHALLENGE
            )
        request.state.principal = principal
        return principal

    async def _principal(self, token: str) -> Principal | None:
        if token.startswith("sbk_"):
            app = await self.apps.authenticate(token)
            return app_caller(app.name) if app is not None else None
        if token.startswith(("sbo_", "sbs_")) and self.operators is not None:
            operator = await self.operators.authenticate_token(token)
            return await self.operators.principal(operator) if operator is not None else None
        if token.startswith("sbu_") and self.user_tokens is not None:
            claims = self.user_tokens.verify(token)
            if claims is None:
                return None
            # A token outlives nothing of its app: disabled or removed, its users' tokens stop too.
            app = await self.apps.get(claims[0])
            return user_principal(*claims) if app is not None and app.enabled else None
        return None


def holds(principal: Principal, permission: str) -> bool:
    """Whether the principal holds `permission` on at least one app (a global one: over `*`)."""
    if permission in _OUTSIDE_CATALOG:
        return any(permission in grant.permissions for grant in principal.grants)
    return bool(principal.apps_for(permission)) and (
        permission not in GLOBAL_PERMISSIONS or principal.allows(permission, ALL_APPS)
    )


def _allows(principal: Principal, permission: str, app: str | None) -> bool:
    if permission in _OUTSIDE_CATALOG:
        return any(g.allows(permission, app) for g in principal.grants)
    return principal.allows(permission, app)


def _lacks(principal: Principal, permission: str, app: str | None) -> str:
    who = {"operator": "operator", "app": "app", "user": "end-user token for"}[principal.kind]
    where = " on every app" if app == ALL_APPS else f" on app {app!r}" if app else ""
    return f"{who} {principal.name!r} lacks permission {permission}{where}"


def _kind_of(token: str) -> str:
    return {
        "sbk_": "API key", "sbo_": "operator token", "sbs_": "session", "sbu_": "end-user token"
    }.get(token[:4], "API key or token")


def too_many_failures(wait: int) -> HTTPException:
    """429 with `Retry-After`: this address failed to authenticate too often."""
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"too many failed authentications from this address; retry in {wait} s",
        headers={"Retry-After": str(wait)},
    )



def audit_record(
    request: Request,
    actor: Principal | str,
    action: str,
    *,
    target_kind: str = "",
    target: str = "",
    app: str = "",
    outcome: Literal["ok", "denied", "failed"] = "ok",
    reason: str = "",
    before: object = None,
    after: object = None,
) -> AuditRecord:
    """The audit record of an action taken through the API, from the caller's address, secrets masked.
    `actor` is the principal, or the operator's name when nobody is authenticated yet (a login)."""
    name, kind = (actor, "operator") if isinstance(actor, str) else (actor.name, actor.kind)
    return AuditRecord(
        actor=name, actor_kind=kind, source=client_address(request), action=action,
        target_kind=target_kind, target=target, app=app, outcome=outcome, reason=reason,
        before=mask_secrets(before), after=mask_secrets(after),
    )
