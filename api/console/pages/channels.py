"""Channel accounts (下游通道) and the authorisation matrix apps × accounts.

The list shows each account's settings in the clear and its secrets only as `******` and whether set;
a secret is typed into a password field, posted once, sealed by the store and never rendered, logged or
quoted in an error. Every action runs `api.channel_account_service`, as `/v1/channel-accounts` does:
the same checks (`channels:manage` over every app, or on the app for a tick of the matrix), the same
audit records with secrets masked.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import json
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from api.channel_account_service import (
    AccountShown,
    authorise_app,
    create_account,
    readable_accounts,
    set_account_secret,
    switch_account,
)
from api.channel_accounts import NewAccount, SecretValue
from api.console.context import ConsolePage
from api.console.pages.refusals import refusal, status_of
from api.console.render import render
from api.console.session import authorize, console_principal
from api.deps import ApiDeps
from channels.accounts import secret_fields
from channels.kinds import KINDS, KindUnavailable, adapter_for
from settings.permissions import ALL_APPS, Principal
from state.apps import AppRegistry
from state.channel_accounts import ACCOUNT_TYPES, ChannelAccounts

PATH = "/console/channels"
Reader = Annotated[Principal, Depends(console_principal("channels:read"))]
Manager = Annotated[Principal, Depends(console_principal("channels:manage"))]
_REFUSED = (HTTPException, RequestValidationError, ValidationError)
_CREATE_FIELDS = ("code", "name", "type", "platform", "settings")


def channels_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/channels")

    def accounts() -> ChannelAccounts:
        if deps.channel_accounts is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "channel accounts are not kept in this deployment")
        return deps.channel_accounts

    async def page(request: Request, principal: Principal, *, status_code: int = 200,
                   refused: Exception | None = None, failed: str = "",
                   form: Mapping[str, object] | None = None) -> Response:
        """The accounts and the matrix; `failed` names the account (or `new`) whose form was `refused`."""
        shown = readable_accounts(await accounts().list(), principal)
        scope = principal.apps_for("channels:read")
        apps = [app.name for app in await _apps(deps)]
        rows = [app for app in apps if ALL_APPS in scope or app in scope]
        return render(
            request, "channels/page.html", principal,
            status_code=status_of(refused) if refused else status_code,
            errors=refusal(refused) if refused else {}, failed=failed, form=form or {},
            accounts=shown, matrix_apps=rows,
            may_tick={app for app in rows if principal.allows("channels:manage", app)},
            may_manage=principal.allows("channels:manage", ALL_APPS), secret_names=_secret_names(shown),
            types=ACCOUNT_TYPES, platforms=sorted(KINDS),
        )

    @router.get("")
    async def listing(request: Request, principal: Reader) -> Response:
        return await page(request, principal)

    @router.post("")
    async def create(request: Request, principal: Manager) -> Response:
        authorize(request, principal, "channels:manage", ALL_APPS)
        form = await request.form()
        given = {key: str(form.get(key, "")).strip() for key in _CREATE_FIELDS}
        try:
            body = NewAccount.model_validate({**_account_fields(given), "secrets": {}})
            fields = body.model_dump(exclude={"secrets"})
            await create_account(deps, accounts(), request, principal, fields, {})
        except _REFUSED as exc:
            return await page(request, principal, refused=exc, failed="new", form=given)
        return RedirectResponse(PATH, status.HTTP_303_SEE_OTHER)

    @router.post("/{code}/enable")
    async def enable(request: Request, code: str, principal: Manager) -> Response:
        return await _switch(request, principal, code, True)

    @router.post("/{code}/disable")
    async def disable(request: Request, code: str, principal: Manager) -> Response:
        return await _switch(request, principal, code, False)

    async def _switch(request: Request, principal: Principal, code: str, enabled: bool) -> Response:
        authorize(request, principal, "channels:manage", ALL_APPS)
        try:
            await switch_account(deps, accounts(), request, principal, code, enabled)
        except _REFUSED as exc:
            return await page(request, principal, refused=exc, failed=code)
        return RedirectResponse(PATH, status.HTTP_303_SEE_OTHER)

    @router.post("/{code}/secrets")
    async def set_secret(request: Request, code: str, principal: Manager) -> Response:
        authorize(request, principal, "channels:manage", ALL_APPS)
        form = await request.form()
        name = str(form.get("name", ""))
        try:
            value = SecretValue.model_validate({"value": str(form.get("value", ""))})
            await set_account_secret(deps, accounts(), request, principal, code, name,
                                     value.value.get_secret_value())
        except _REFUSED as exc:
            # The value is not sent back: the field comes back empty, the message names what is wrong.
            return await page(request, principal, refused=exc, failed=code)
        return RedirectResponse(PATH, status.HTTP_303_SEE_OTHER)

    @router.post("/{code}/apps/{app}")
    async def tick(request: Request, code: str, app: str, principal: Manager) -> Response:
        authorize(request, principal, "channels:manage", app)
        allowed = (await request.form()).get("allowed") == "yes"
        try:
            await authorise_app(deps, accounts(), request, principal, code, app, allowed)
        except _REFUSED as exc:
            return await page(request, principal, refused=exc, failed=code)
        return RedirectResponse(f"{PATH}#matrix", status.HTTP_303_SEE_OTHER)

    return router


def _account_fields(given: dict[str, str]) -> dict[str, Any]:
    """The create form as a NewAccount's fields; `settings` is a JSON object (empty: none)."""
    fields: dict[str, Any] = {key: given[key] for key in ("code", "name", "type", "platform")}
    text = given.get("settings", "")
    try:
        settings = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{"loc": ("body", "settings"), "msg": f"not JSON: {exc.msg} at line "
                                       f"{exc.lineno} column {exc.colno}", "type": "json_invalid"}]) from None
    fields["settings"] = settings
    return fields


def _secret_names(shown: list[AccountShown]) -> dict[str, list[str]]:
    """Per account, the secrets its platform takes (set or not), for the secret form's choice."""
    names: dict[str, list[str]] = {}
    for account in shown:
        try:
            names[account.code] = sorted(secret_fields(adapter_for(account.platform)))
        except KindUnavailable:
            names[account.code] = sorted(account.secrets)
    return names


async def _apps(deps: ApiDeps) -> list[Any]:
    return await deps.apps.list() if isinstance(deps.apps, AppRegistry) else []


PAGE = ConsolePage("channels", PATH, "channels:read", channels_router)
