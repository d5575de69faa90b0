"""Roles through the API: the permission catalog, the built-in roles (not editable) and custom ones.
A changed role changes what its holders may do at their next request; a role someone holds cannot be
removed (revoke it first). Every change is audited."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ApiDeps
from api.operator_service import OperatorDesk, Role
from api.problems import Problem
from settings.permissions import GLOBAL_PERMISSIONS, PERMISSIONS, Principal
from state.operators import OperatorStore

RoleName = Annotated[str, Path(pattern=r"^[a-z0-9_\-]{1,64}$", description="The role's name")]


class PermissionInfo(BaseModel):
    name: str
    description: str
    scope: str = Field(description="`app`: granted per app; `global`: only by a grant over every app")


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    permissions: list[str] = Field(min_length=1, max_length=len(PERMISSIONS))


def roles_router(deps: ApiDeps, operators: OperatorStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["operators"], responses={
        401: {"model": Problem, "description": "Missing or invalid credentials"},
        403: {"model": Problem, "description": "The permission (named) is not held"},
    })
    access, desk = deps.access, OperatorDesk(deps, operators)
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
        return await desk.roles()

    @router.put("/roles/{name}", response_model=Role, summary="Create or change a custom role")
    async def put_role(name: RoleName, body: RoleBody, request: Request, principal: Managers) -> Role:
        """Unknown permissions are refused (422, naming the first with the closest known one)."""
        return await desk.put_role(request, principal, name, body.permissions)

    @router.delete("/roles/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a custom role",
                   responses={409: {"model": Problem, "description": "Someone holds the role"}})
    async def remove_role(name: RoleName, request: Request, principal: Managers) -> None:
        await desk.remove_role(request, principal, name)

    return router
