"""Roles through the API: the permission catalog, the built-in roles (not editable) and custom ones.
A changed role changes what its holders may do at their next request; a role someone holds cannot be
removed (revoke it first). Every change is audited."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field

from api.access import audit_record
from api.deps import ApiDeps
from api.problems import Problem, invalid
from settings.permissions import BUILT_IN_ROLES, GLOBAL_PERMISSIONS, PERMISSIONS, Principal
from state.operators import OperatorStore
from state.roles import RoleError, UnknownRoleError

RoleName = Annotated[str, Path(pattern=r"^[a-z0-9_\-]{1,64}$", description="The role's name")]


class PermissionInfo(BaseModel):
    name: str
    description: str
    scope: str = Field(description="`app`: granted per app; `global`: only by a grant over every app")


class Role(BaseModel):
    name: str
    built_in: bool
    permissions: list[str]
    holders: list[str]


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    permissions: list[str] = Field(min_length=1, max_length=len(PERMISSIONS))


def roles_router(deps: ApiDeps, operators: OperatorStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["operators"], responses={
        401: {"model": Problem, "description": "Missing or invalid credentials"},
        403: {"model": Problem, "description": "The permission (named) is not held"},
    })
    access, roles = deps.access, operators.roles
    Anyone = Annotated[Principal, Depends(access.authenticated())]
    Readers = Annotated[Principal, Depends(access.requires("operators:read"))]
    Managers = Annotated[Principal, Depends(access.requires("roles:manage"))]

    @router.get("/permissions", response_model=list[PermissionInfo], summary="The permission catalog")
    async def permissions(_: Anyone) -> list[PermissionInfo]:
        return [
            PermissionInfo(name=name, description=text,
                           scope="global" if name in GLOBAL_PERMISSIONS else "app")
            for name, text in PERMISSIONS.items()
        ]

    @router.get("/roles", response_model=list[Role], summary="Every role (built-in, custom) and its holders")
    async def list_roles(_: Readers) -> list[Role]:
        everyone = await operators.list()
        return [
            Role(name=name, built_in=name in BUILT_IN_ROLES, permissions=sorted(perms),
                 holders=[op.name for op in everyone if any(g.role == name for g in op.grants)])
            for name, perms in (await roles.all()).items()
        ]

    @router.put("/roles/{name}", response_model=Role, summary="Create or change a custom role")
    async def put_role(name: RoleName, body: RoleBody, request: Request, principal: Managers) -> Role:
        """Unknown permissions are refused (422, naming the first with the closest known one)."""
        if name in BUILT_IN_ROLES:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"{name!r} is a built-in role and cannot be changed"
            )
        try:
            before, after = await roles.put(name, body.permissions)
        except RoleError as exc:
            raise invalid(("body", "permissions"), str(exc), "unknown_permission") from None
        await deps.publisher.publish_audit(audit_record(
            request, principal, "role.create" if before is None else "role.change", target_kind="role",
            target=name, before=sorted(before) if before is not None else None, after=sorted(after),
        ))
        holders = await operators.holders(name)
        return Role(name=name, built_in=False, permissions=sorted(after), holders=holders)

    @router.delete("/roles/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a custom role",
                   responses={409: {"model": Problem, "description": "Someone holds the role"}})
    async def remove_role(name: RoleName, request: Request, principal: Managers) -> None:
        holders = await operators.holders(name)
        if holders:
            raise HTTPException(status.HTTP_409_CONFLICT,
                                f"role {name!r} is held by {', '.join(holders)}; revoke it from them first")
        try:
            before = await roles.remove(name)
        except UnknownRoleError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except RoleError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        await deps.publisher.publish_audit(audit_record(
            request, principal, "role.remove", target_kind="role", target=name, before=sorted(before)
        ))

    return router
