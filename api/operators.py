"""Operators through the API: who am I (`/v1/me`), my password and personal tokens; and, for those with
`operators:read` / `operators:manage`, every operator: create, change, lock, unlock, reset a password,
grant and revoke roles, list and revoke tokens, remove. Every change is audited. The actions on other
operators are `api.operator_service.OperatorDesk`'s, which the console calls too.

Nobody grants more than they hold: a role is granted over apps only by an operator who holds each of
its permissions over those apps, so `operators:manage` alone does not make an administrator.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.access import audit_record
from api.deps import ApiDeps
from api.operator_service import OperatorDesk, OperatorProfile, stored
from api.problems import Problem, invalid
from settings.permissions import ALL_APPS, Principal
from state.operators import (
    Locale,
    Operator,
    OperatorGrant,
    OperatorStore,
    TokenInfo,
)

T = TypeVar("T")
_NAME = r"^[A-Za-z0-9_.:\-]{1,128}$"
OperatorName = Annotated[str, Path(pattern=_NAME, description="The operator's name")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GrantBody(_Body):
    role: str = Field(min_length=1, max_length=64)
    apps: list[str] = Field(default_factory=lambda: [ALL_APPS], min_length=1, max_length=200,
                            description="`*` for every app, present and future")


class NewOperator(_Body):
    name: str = Field(pattern=_NAME)
    password: str = Field(min_length=1, max_length=1024)
    display_name: str = Field("", max_length=200)
    email: str = Field("", max_length=320)
    user_id: str | None = Field(None, pattern=_NAME)
    locale: Locale = "zh"
    grants: list[GrantBody] = Field(default_factory=list, max_length=50)


class OperatorChange(_Body):
    display_name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=320)
    user_id: str | None = Field(None, pattern=_NAME)
    locale: Locale | None = None


class NewPassword(_Body):
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(_Body):
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class NewToken(_Body):
    label: str = Field("", max_length=100)


class IssuedToken(BaseModel):
    """The token, shown this once: only its hash is kept."""

    token: str
    token_id: str
    label: str


class Me(BaseModel):
    """Who is calling, and what they may do per app (`*`: every app)."""

    kind: str
    name: str
    operator: Operator | None = None
    user_id: str | None = None
    roles: list[str]
    permissions: dict[str, list[str]]


def operators_router(deps: ApiDeps, operators: OperatorStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["operators"], responses=_ERRORS)
    access = deps.access
    Anyone = Annotated[Principal, Depends(access.authenticated())]
    Readers = Annotated[Principal, Depends(access.requires("operators:read"))]
    Managers = Annotated[Principal, Depends(access.requires("operators:manage"))]
    desk = OperatorDesk(deps, operators)

    async def audited(request: Request, principal: Principal, action: str, target: str, **kw: Any) -> None:
        await deps.publisher.publish_audit(
            audit_record(request, principal, action, target_kind="operator", target=target, **kw)
        )

    @router.get("/me", response_model=Me, summary="Who am I, and what may I do per app")
    async def me(principal: Anyone) -> Me:
        operator = await operators.find(principal.name) if principal.kind == "operator" else None
        return Me(kind=principal.kind, name=principal.name, operator=operator, user_id=principal.user_id,
                  roles=list(principal.roles), permissions=permissions_per_app(principal))

    @router.put("/me/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change my password")
    async def change_password(body: PasswordChange, request: Request, principal: Anyone) -> None:
        """With the old password; ends every session (log in again)."""
        name = _operator_only(principal)
        if await operators.verify_password(name, body.old_password) is None:
            if access.failures is not None:  # a stolen session must not become a password oracle
                await access.failures.operator_failed(name)
            await audited(request, principal, "operator.password_change", name, outcome="denied",
                          reason="old password wrong")
            raise invalid(("body", "old_password"), "is not your current password", "wrong_password")
        await stored(operators.set_password(name, body.new_password), ("body", "new_password"))
        await audited(request, principal, "operator.password_change", name)

    @router.get("/me/tokens", response_model=list[TokenInfo], summary="My personal API tokens")
    async def my_tokens(principal: Anyone) -> list[TokenInfo]:
        return await operators.tokens(_operator_only(principal))

    @router.post("/me/tokens", status_code=status.HTTP_201_CREATED, response_model=IssuedToken,
                 summary="Issue a personal API token (shown once)")
    async def issue_token(body: NewToken, request: Request, principal: Anyone) -> IssuedToken:
        name = _operator_only(principal)
        token, token_id = await operators.issue_token_with_id(name, body.label)
        await audited(request, principal, "operator.token_issue", name,
                      after={"token_id": token_id, "label": body.label})
        return IssuedToken(token=token, token_id=token_id, label=body.label)

    @router.delete("/me/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT,
                   summary="Revoke one of my tokens")
    async def revoke_my_token(token_id: Annotated[str, Path(max_length=64)], request: Request,
                              principal: Anyone) -> None:
        name = _operator_only(principal)
        await stored(operators.revoke_token(name, token_id), ("path", "token_id"))
        await audited(request, principal, "operator.token_revoke", name, before={"token_id": token_id})

    @router.get("/operators", response_model=list[Operator], summary="Every operator")
    async def list_operators(principal: Readers) -> list[Operator]:
        return await operators.list()

    @router.post("/operators", status_code=status.HTTP_201_CREATED, response_model=Operator,
                 summary="Create an operator")
    async def create_operator(body: NewOperator, request: Request, principal: Managers) -> Operator:
        grants = [OperatorGrant(role=g.role, apps=frozenset(g.apps)) for g in body.grants]
        profile = OperatorProfile(display_name=body.display_name, email=body.email, user_id=body.user_id,
                                  locale=body.locale)
        return await desk.create(request, principal, body.name, body.password, grants, profile)

    @router.get("/operators/{name}", response_model=Operator, summary="One operator")
    async def get_operator(name: OperatorName, principal: Readers) -> Operator:
        return await stored(operators.get(name), ("path", "name"))

    @router.patch("/operators/{name}", response_model=Operator, summary="Change an operator's profile")
    async def change_operator(name: OperatorName, body: OperatorChange, request: Request,
                              principal: Managers) -> Operator:
        return await desk.update(request, principal, name, body.model_dump(exclude_unset=True))

    @router.delete("/operators/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an operator")
    async def remove_operator(name: OperatorName, request: Request, principal: Managers) -> None:
        await desk.remove(request, principal, name)

    @router.post("/operators/{name}/lock", response_model=Operator, summary="Lock an operator out")
    async def lock(name: OperatorName, request: Request, principal: Managers) -> Operator:
        """Until unlocked: no login, no token, no session works."""
        return await desk.lock(request, principal, name)

    @router.post("/operators/{name}/unlock", response_model=Operator, summary="Unlock an operator")
    async def unlock(name: OperatorName, request: Request, principal: Managers) -> Operator:
        """Also ends a lockout after failed logins."""
        return await desk.unlock(request, principal, name)

    @router.put("/operators/{name}/password", status_code=status.HTTP_204_NO_CONTENT,
                summary="Reset an operator's password")
    async def reset_password(name: OperatorName, body: NewPassword, request: Request,
                             principal: Managers) -> None:
        """Ends the operator's sessions; their tokens stay (revoke them apart). Your own password you
        change with the old one (`PUT /v1/me/password`): a stolen session must not take the account."""
        await desk.reset_password(request, principal, name, body.password)

    @router.post("/operators/{name}/grants", response_model=Operator, summary="Grant a role over apps")
    async def grant(name: OperatorName, body: GrantBody, request: Request, principal: Managers) -> Operator:
        wanted = OperatorGrant(role=body.role, apps=frozenset(body.apps))
        return await desk.grant(request, principal, name, wanted)

    @router.delete("/operators/{name}/grants/{role}", response_model=Operator,
                   summary="Revoke a role (over some apps, or entirely)")
    async def revoke(
        name: OperatorName, role: Annotated[str, Path(max_length=64)], request: Request, principal: Managers,
        apps: Annotated[str | None, Query(description="comma-separated; default: every app", max_length=2000)]
        = None,
    ) -> Operator:
        scope = [a.strip() for a in apps.split(",") if a.strip()] if apps else None
        return await desk.revoke(request, principal, name, role, scope)

    @router.get("/operators/{name}/tokens", response_model=list[TokenInfo], summary="An operator's tokens")
    async def tokens_of(name: OperatorName, principal: Readers) -> list[TokenInfo]:
        return await stored(operators.tokens(name), ("path", "name"))

    @router.delete("/operators/{name}/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT,
                   summary="Revoke an operator's token")
    async def revoke_token(name: OperatorName, token_id: Annotated[str, Path(max_length=64)],
                           request: Request, principal: Managers) -> Response:
        await desk.revoke_token(request, principal, name, token_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router


def permissions_per_app(principal: Principal) -> dict[str, list[str]]:
    """Each app (`*` for every app) with the permissions the principal holds there."""
    per_app: dict[str, set[str]] = {}
    for grant in principal.grants:
        for app in grant.apps:
            per_app.setdefault(app, set()).update(grant.permissions)
    return {app: sorted(perms) for app, perms in sorted(per_app.items())}


def _operator_only(principal: Principal) -> str:
    if principal.kind != "operator":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only an operator has a password and personal tokens")
    return principal.name


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid credentials"},
    403: {"model": Problem, "description": "The permission (named) is not held"},
    404: {"model": Problem, "description": "No such operator or token"},
}
