"""Members & roles: operators (add, lock, unlock, grant and revoke a role over apps, reset a password)
and roles (custom ones: add, remove). Reading needs `operators:read`; changing operators
`operators:manage`, roles `roles:manage`. Every action is `api.operator_service.OperatorDesk`'s, the
same checks, store calls and audit records as `/v1/operators` and `/v1/roles`.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.access import holds
from api.console.context import ConsolePage
from api.console.forms import FormError, refusal
from api.console.render import render
from api.console.session import console_principal
from api.deps import ApiDeps
from api.operator_service import OperatorDesk, OperatorProfile
from settings.permissions import ALL_APPS, GLOBAL_PERMISSIONS, PERMISSIONS, Principal
from state.operators import OperatorGrant

PATH = "/console/members"
DONE = frozenset({"created", "locked", "unlocked", "password_reset", "granted", "revoked", "role_saved",
                  "role_removed"})
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")]
Text = Annotated[str, Form(max_length=1024)]


def apps_of(text: str) -> frozenset[str]:
    """`campus, bursar` → those apps; empty → every app (`*`), as the API's default."""
    apps = frozenset(part.strip() for part in text.replace("，", ",").split(",") if part.strip())
    return apps or frozenset({ALL_APPS})


def members_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter()
    operators = deps.access.operators
    if operators is None:
        raise ValueError("Members & roles needs operators (deps.access.operators)")
    desk = OperatorDesk(deps, operators)
    Readers = Annotated[Principal, Depends(console_principal("operators:read"))]
    Managers = Annotated[Principal, Depends(console_principal("operators:manage"))]
    RoleManagers = Annotated[Principal, Depends(console_principal("roles:manage"))]

    async def page(request: Request, principal: Principal, *, form: str = "",
                   error: FormError | None = None, values: dict[str, str] | None = None) -> HTMLResponse:
        return render(
            request, "members/page.html", principal,
            operators=await operators.list(), roles=await desk.roles(), permissions=PERMISSIONS,
            global_permissions=GLOBAL_PERMISSIONS,
            may_manage=holds(principal, "operators:manage"),
            may_manage_roles=holds(principal, "roles:manage"),
            done=done if (done := request.query_params.get("done", "")) in DONE else "",
            form=form, error=error, values=values or {},
            status_code=error.status_code if error else status.HTTP_200_OK,
        )

    async def acted(request: Request, principal: Principal, form: str,
                    action: Callable[[], Awaitable[object]], done: str,
                    values: dict[str, str] | None = None) -> Response:
        """Do it; back to the page with a notice (303), or the page again with the API's refusal."""
        try:
            await action()
        except (HTTPException, RequestValidationError) as exc:
            return await page(request, principal, form=form, error=refusal(exc), values=values)
        return RedirectResponse(f"{PATH}?done={done}", status.HTTP_303_SEE_OTHER)

    @router.get("/members", response_class=HTMLResponse, include_in_schema=False)
    async def members(request: Request, principal: Readers) -> HTMLResponse:
        return await page(request, principal)

    @router.post("/members/operators", include_in_schema=False)
    async def create(request: Request, principal: Managers, name: Text = "", password: Text = "",
                     display_name: Text = "", email: Text = "", locale: Text = "zh", role: Text = "",
                     apps: Text = "") -> Response:
        grants = [OperatorGrant(role=role.strip(), apps=apps_of(apps))] if role.strip() else []
        profile = OperatorProfile(display_name=display_name, email=email,
                                  locale="en" if locale == "en" else "zh")
        values = {"name": name, "display_name": display_name, "email": email, "role": role, "apps": apps}
        if not name.strip():
            error = FormError("name: required", "name")
            return await page(request, principal, form="create", error=error, values=values)
        return await acted(request, principal, "create",
                           lambda: desk.create(request, principal, name.strip(), password, grants, profile),
                           "created", values)

    @router.post("/members/operators/{name}/lock", include_in_schema=False)
    async def lock(request: Request, principal: Managers, name: Name) -> Response:
        return await acted(request, principal, f"state:{name}", lambda: desk.lock(request, principal, name),
                           "locked")

    @router.post("/members/operators/{name}/unlock", include_in_schema=False)
    async def unlock(request: Request, principal: Managers, name: Name) -> Response:
        return await acted(request, principal, f"state:{name}", lambda: desk.unlock(request, principal, name),
                           "unlocked")

    @router.post("/members/operators/{name}/password", include_in_schema=False)
    async def reset_password(request: Request, principal: Managers, name: Name,
                             password: Text = "") -> Response:
        return await acted(request, principal, f"password:{name}",
                           lambda: desk.reset_password(request, principal, name, password), "password_reset")

    @router.post("/members/operators/{name}/grants", include_in_schema=False)
    async def grant(request: Request, principal: Managers, name: Name, role: Text = "",
                    apps: Text = "") -> Response:
        values = {"role": role, "apps": apps}
        if not role.strip():
            error = FormError("role: choose a role", "role")
            return await page(request, principal, form=f"grant:{name}", error=error, values=values)
        wanted = OperatorGrant(role=role.strip(), apps=apps_of(apps))
        return await acted(request, principal, f"grant:{name}",
                           lambda: desk.grant(request, principal, name, wanted), "granted", values)

    @router.post("/members/operators/{name}/revoke", include_in_schema=False)
    async def revoke(request: Request, principal: Managers, name: Name, role: Text = "",
                     apps: Text = "") -> Response:
        scope = sorted(apps_of(apps)) if apps.strip() else None
        return await acted(request, principal, f"grant:{name}",
                           lambda: desk.revoke(request, principal, name, role, scope), "revoked")

    @router.post("/members/roles", include_in_schema=False)
    async def put_role(request: Request, principal: RoleManagers, name: Text = "") -> Response:
        chosen = [str(value) for value in (await request.form()).getlist("permissions")]
        values = {"role_name": name, "chosen": ",".join(chosen)}
        if not chosen:
            error = FormError("permissions: choose at least one", "permissions")
            return await page(request, principal, form="role", error=error, values=values)
        return await acted(request, principal, "role",
                           lambda: desk.put_role(request, principal, name.strip(), chosen), "role_saved",
                           values)

    @router.post("/members/roles/{role}/remove", include_in_schema=False)
    async def remove_role(request: Request, principal: RoleManagers,
                          role: Annotated[str, Path(max_length=64)]) -> Response:
        return await acted(request, principal, f"role:{role}",
                           lambda: desk.remove_role(request, principal, role), "role_removed")

    return router


PAGE = ConsolePage("members", PATH, "operators:read", members_router)
