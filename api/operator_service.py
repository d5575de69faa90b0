"""Operators and roles as the API and the console change them: each action checks what the API checks
(nobody grants more than they hold, nobody locks or resets themselves, built-in roles stay), calls the
store and audits, in one place. `api/operators.py`, `api/roles.py` and the console's Members & roles
page call these; errors are the API's answers (HTTPException, or a 422 naming the field).

Nobody grants more than they hold: a role is granted over apps only by an operator who holds each of
its permissions over those apps, so `operators:manage` alone does not make an administrator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import HTTPException, Request, status
from pydantic import BaseModel, Field

from api.access import Access, audit_record
from api.deps import ApiDeps
from api.problems import invalid
from settings.permissions import ALL_APPS, BUILT_IN_ROLES, Principal
from state.operators import (
    LastAdministratorError,
    Locale,
    Operator,
    OperatorError,
    OperatorExistsError,
    OperatorGrant,
    OperatorStore,
    PasswordPolicyError,
    UnknownOperatorError,
)
from state.roles import RoleError, UnknownRoleError

T = TypeVar("T")
Loc = tuple[str | int, ...]


class Role(BaseModel):
    name: str
    built_in: bool
    permissions: list[str]
    holders: list[str]


class OperatorProfile(BaseModel):
    """What is set when an operator is created, beside the name, password and grants."""

    display_name: str = Field("", max_length=200)
    email: str = Field("", max_length=320)
    user_id: str | None = None
    locale: Locale = "zh"


@dataclass(frozen=True)
class OperatorDesk:
    """Operators and roles, checked and audited as every caller must."""

    deps: ApiDeps
    operators: OperatorStore

    @property
    def access(self) -> Access:
        return self.deps.access

    async def _audited(self, request: Request, principal: Principal, action: str, target: str,
                       target_kind: str = "operator", **kw: Any) -> None:
        await self.deps.publisher.publish_audit(
            audit_record(request, principal, action, target_kind=target_kind, target=target, **kw)
        )

    # -- operators -------------------------------------------------------------------------------

    async def create(self, request: Request, principal: Principal, name: str, password: str,
                     grants: Iterable[OperatorGrant], profile: OperatorProfile,
                     loc: Loc = ("body",)) -> Operator:
        wanted = list(grants)
        for index, grant in enumerate(wanted):
            await self.may_grant(principal, grant, (*loc, "grants", index))
        operator = await stored(
            self.operators.create(name, password, wanted, display_name=profile.display_name,
                                  email=profile.email, user_id=profile.user_id, locale=profile.locale),
            loc,
        )
        await self._audited(request, principal, "operator.create", operator.name,
                            after=operator.model_dump(mode="json"))
        return operator

    async def update(self, request: Request, principal: Principal, name: str,
                     changes: dict[str, object]) -> Operator:
        before, after = await stored(self.operators.update(name, **changes), ("body",))
        await self._audited(request, principal, "operator.update", name,
                            before=before.model_dump(mode="json"), after=after.model_dump(mode="json"))
        return after

    async def remove(self, request: Request, principal: Principal, name: str) -> None:
        not_self(principal, name, "remove")
        removed = await stored(self.operators.remove(name), ("path", "name"))
        await self._audited(request, principal, "operator.remove", name,
                            before=removed.model_dump(mode="json"))

    async def lock(self, request: Request, principal: Principal, name: str) -> Operator:
        """Until unlocked: no login, no token, no session works."""
        not_self(principal, name, "lock")
        before, after = await stored(self.operators.set_state(name, "locked"), ("path", "name"))
        await self._audited(request, principal, "operator.lock", name, before={"state": before.state},
                            after={"state": after.state})
        return after

    async def unlock(self, request: Request, principal: Principal, name: str) -> Operator:
        """Also ends a lockout after failed logins."""
        before, after = await stored(self.operators.set_state(name, "active"), ("path", "name"))
        if self.access.failures is not None:
            await self.access.failures.unlock(name)
        await self._audited(request, principal, "operator.unlock", name, before={"state": before.state},
                            after={"state": after.state})
        return after

    async def reset_password(self, request: Request, principal: Principal, name: str, password: str,
                             loc: Loc = ("body", "password")) -> None:
        """Ends the operator's sessions; their tokens stay. One's own password is changed with the old
        one (`PUT /v1/me/password`): a stolen session must not take the account."""
        not_self(principal, name, "reset the password of")
        await stored(self.operators.set_password(name, password), loc)
        await self._audited(request, principal, "operator.password_reset", name)

    async def grant(self, request: Request, principal: Principal, name: str, grant: OperatorGrant,
                    loc: Loc = ("body",)) -> Operator:
        await self.may_grant(principal, grant, loc)
        before, after = await stored(self.operators.grant(name, grant), loc)
        await self._audited(request, principal, "role.grant", name, before=grants_of(before),
                            after=grants_of(after))
        return after

    async def revoke(self, request: Request, principal: Principal, name: str, role: str,
                     apps: list[str] | None) -> Operator:
        """The role over `apps`, or entirely (None)."""
        before, after = await stored(self.operators.revoke(name, role, apps), ("path", "role"))
        await self._audited(request, principal, "role.revoke", name, before=grants_of(before),
                            after=grants_of(after))
        return after

    async def revoke_token(self, request: Request, principal: Principal, name: str, token_id: str) -> None:
        await stored(self.operators.revoke_token(name, token_id), ("path", "token_id"))
        await self._audited(request, principal, "operator.token_revoke", name, before={"token_id": token_id})

    async def may_grant(self, principal: Principal, grant: OperatorGrant, loc: Loc) -> None:
        """403 unless the granter holds each of the role's permissions over each app of the grant."""
        try:
            permissions = await self.operators.roles.get(grant.role)
        except UnknownRoleError as exc:
            raise invalid((*loc, "role"), str(exc), "unknown_role") from None
        for permission in sorted(permissions):
            for app in sorted(grant.apps):
                if not principal.allows(permission, app):
                    where = "every app" if app == ALL_APPS else f"app {app!r}"
                    raise HTTPException(
                        status.HTTP_403_FORBIDDEN,
                        f"granting {grant.role!r} over {where} needs {permission} there, "
                        "which you do not hold",
                    )

    # -- roles -----------------------------------------------------------------------------------

    async def roles(self) -> list[Role]:
        """Every role (built-in first as stored, then custom) with its holders."""
        everyone = await self.operators.list()
        return [
            Role(name=name, built_in=name in BUILT_IN_ROLES, permissions=sorted(perms),
                 holders=[op.name for op in everyone if any(g.role == name for g in op.grants)])
            for name, perms in (await self.operators.roles.all()).items()
        ]

    async def put_role(self, request: Request, principal: Principal, name: str,
                       permissions: list[str]) -> Role:
        """Create or change a custom role; unknown permissions are refused (422, naming the first with
        the closest known one), built-in roles cannot change (409)."""
        if name in BUILT_IN_ROLES:
            raise HTTPException(status.HTTP_409_CONFLICT,
                                f"{name!r} is a built-in role and cannot be changed")
        try:
            before, after = await self.operators.roles.put(name, permissions)
        except RoleError as exc:
            raise invalid(("body", "permissions"), str(exc), "unknown_permission") from None
        await self._audited(
            request, principal, "role.create" if before is None else "role.change", name, target_kind="role",
            before=sorted(before) if before is not None else None, after=sorted(after),
        )
        holders = await self.operators.holders(name)
        return Role(name=name, built_in=False, permissions=sorted(after), holders=holders)

    async def remove_role(self, request: Request, principal: Principal, name: str) -> None:
        """A role someone holds cannot be removed (409: revoke it first)."""
        holders = await self.operators.holders(name)
        if holders:
            raise HTTPException(status.HTTP_409_CONFLICT,
                                f"role {name!r} is held by {', '.join(holders)}; revoke it from them first")
        try:
            before = await self.operators.roles.remove(name)
        except UnknownRoleError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except RoleError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        await self._audited(request, principal, "role.remove", name, target_kind="role",
                            before=sorted(before))


def not_self(principal: Principal, name: str, what: str) -> None:
    if principal.name == name and principal.kind == "operator":
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"you cannot {what} yourself; ask another administrator"
        )


def grants_of(operator: Operator) -> list[str]:
    return [str(g) for g in operator.grants]


async def stored(work: Awaitable[T], loc: Loc) -> T:
    """Await a store call, its errors as the API says them: 404 unknown, 409 taken, 422 invalid."""
    try:
        result = await work
    except UnknownOperatorError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except (OperatorExistsError, LastAdministratorError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except PasswordPolicyError as exc:
        field = loc if str(loc[-1]).endswith("password") else (*loc, "password")
        raise invalid(field, str(exc), "password_policy") from None
    except UnknownRoleError as exc:
        raise invalid((*loc, "role"), str(exc), "unknown_role") from None
    except (OperatorError, RoleError) as exc:
        raise invalid(loc, str(exc)) from None
    return result
