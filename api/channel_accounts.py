"""Downstream channel accounts (通道管理) for operators: create, list, change settings, set secrets
(write-only: "为保障信息安全, 系统不再明文显示秘钥"), switch on and off, authorise upstream apps, delete.

Reading needs `channels:read` (an operator scoped to some apps sees the accounts that serve them);
authorising or unauthorising an app needs `channels:manage` on that app; everything else changes the
account for every app, so it needs `channels:manage` over every app. Each change is one audit record
with the account before and after, its secrets masked. A refused body is answered without the values
it held (a secret sent in the wrong place is not echoed back).
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from api.access import audit_record
from api.channel_account_service import (
    AccountShown,
    SecretShown,
    account_shown,
    audit_view,
    authorise_app,
    change_account,
    create_account,
    found_account,
    readable_accounts,
    set_account_secret,
    switch_account,
)
from api.deps import ApiDeps
from api.problems import Problem, invalid
from channels.accounts import check_account
from records.vocabulary import Name
from settings.permissions import ALL_APPS, Principal
from state.channel_accounts import (
    AccountCode,
    AccountRate,
    AccountType,
    ChannelAccount,
    ChannelAccountError,
    ChannelAccounts,
    SettingValue,
    UnknownAccountError,
)

__all__ = ["AccountShown", "SecretShown", "account_shown", "audit_view", "channel_accounts_router"]

Code = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$", description="通道编码")]
AppName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$", description="An upstream app")]
SecretName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="e.g. secret")]


class _ScrubbedRoute(APIRoute):
    """Answers a refused body without the values it held: only where and what is wrong."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def scrubbed(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                kept = [{key: err[key] for key in ("loc", "msg", "type") if key in err}
                        for err in exc.errors()]
                raise RequestValidationError(kept) from None

        return scrubbed


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewAccount(_Body):
    """A channel account; `secrets` are sealed at once and never shown again."""

    code: AccountCode
    name: str = Field(min_length=1, max_length=128, description="通道名称")
    type: AccountType
    platform: str = Field(min_length=1, max_length=32, description="the adapter kind: aliyun, wechat-oa...")
    settings: dict[str, SettingValue] = Field(default_factory=dict, max_length=64)
    secrets: dict[str, SecretStr] = Field(default_factory=dict, max_length=16)
    enabled: bool = False
    apps: list[Name] = Field(default_factory=list, max_length=1000)
    priority: int = Field(0, ge=0, le=1000)
    cost_per_message: float | None = Field(None, ge=0)
    rate: AccountRate | None = None


class AccountChange(_Body):
    """Fields to change; `settings` keys given `null` are removed, others set."""

    name: str | None = Field(None, min_length=1, max_length=128)
    settings: dict[str, SettingValue] | None = Field(None, max_length=64)
    priority: int | None = Field(None, ge=0, le=1000)
    cost_per_message: float | None = Field(None, ge=0)
    rate: AccountRate | None = None


class SecretValue(_Body):
    value: SecretStr = Field(min_length=1, max_length=8192)


class Rotated(BaseModel):
    resealed: list[str]
    """The codes of the accounts whose secrets were sealed again under the newest master key."""
    unopened: dict[str, str] = {}
    """Accounts none of the master keys opens, with why: left as they are (set their secrets again)."""


def channel_accounts_router(deps: ApiDeps, accounts: ChannelAccounts) -> APIRouter:
    router = APIRouter(
        prefix="/v1/channel-accounts",
        tags=["channel accounts"],
        route_class=_ScrubbedRoute,
        responses={401: {"model": Problem, "description": "No valid credentials"},
                   403: {"model": Problem, "description": "The permission is missing (named)"}},
    )
    access = deps.access
    Reader = Annotated[Principal, Depends(access.requires("channels:read"))]
    Manager = Annotated[Principal, Depends(access.requires("channels:manage"))]

    async def audit(request: Request, who: Principal, action: str, code: str, before: ChannelAccount | None,
                    after: ChannelAccount | None, app: str = "") -> None:
        await deps.publisher.publish_audit(audit_record(
            request, who, action, target_kind="channel_account", target=code, app=app,
            before=audit_view(before), after=audit_view(after),
        ))

    async def found(code: str) -> ChannelAccount:
        return await found_account(accounts, code)

    @router.post("", status_code=status.HTTP_201_CREATED, response_model=AccountShown,
                 responses={409: {"model": Problem, "description": "Code taken, or quota full"}})
    async def create(body: NewAccount, request: Request, who: Manager) -> AccountShown:
        secrets = {name: value.get_secret_value() for name, value in body.secrets.items()}
        fields = body.model_dump(exclude={"secrets"})
        return await create_account(deps, accounts, request, who, fields, secrets)

    @router.get("", response_model=list[AccountShown])
    async def listing(who: Reader, type: Annotated[AccountType | None, Query()] = None) -> list[AccountShown]:
        return readable_accounts(await accounts.list(type), who)

    @router.get("/{code}", response_model=AccountShown, responses={404: {"model": Problem}})
    async def get(code: Code, who: Reader) -> AccountShown:
        account = await found(code)
        scope = who.apps_for("channels:read")
        if ALL_APPS not in scope and not account.apps & scope:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no channel account with code {code!r}")
        return account_shown(account, scope)

    @router.patch("/{code}", response_model=AccountShown, responses={404: {"model": Problem}})
    async def update(code: Code, body: AccountChange, request: Request, who: Manager) -> AccountShown:
        access.authorize(who, "channels:manage", None)
        current = await found(code)
        fields = body.model_dump(exclude_unset=True)
        if "settings" in fields:
            merged = {**current.settings, **(body.settings or {})}
            fields["settings"] = {k: v for k, v in merged.items() if v is not None}
            problems = check_account(current.type, current.platform, fields["settings"], [])
            if problems:
                raise invalid(["body", "settings"], "; ".join(problems))
        return await change_account(deps, accounts, request, who, code, "channel.update", **fields)

    @router.put("/{code}/secrets/{name}", response_model=SecretShown, responses={404: {"model": Problem}})
    async def set_secret(code: Code, name: SecretName, body: SecretValue, request: Request,
                         who: Manager) -> SecretShown:
        value = body.value.get_secret_value()
        return await set_account_secret(deps, accounts, request, who, code, name, value)

    @router.delete("/{code}/secrets/{name}", status_code=status.HTTP_204_NO_CONTENT,
                   responses={404: {"model": Problem}})
    async def clear_secret(code: Code, name: SecretName, request: Request, who: Manager) -> None:
        access.authorize(who, "channels:manage", None)
        await found(code)
        try:
            before, after = await accounts.clear_secret(code, name, who.name)
        except ChannelAccountError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        await audit(request, who, "channel.secret_clear", code, before, after)

    @router.post("/{code}/enable", response_model=AccountShown, responses={404: {"model": Problem}})
    async def enable(code: Code, request: Request, who: Manager) -> AccountShown:
        return await switch_account(deps, accounts, request, who, code, True)

    @router.post("/{code}/disable", response_model=AccountShown, responses={404: {"model": Problem}})
    async def disable(code: Code, request: Request, who: Manager) -> AccountShown:
        return await switch_account(deps, accounts, request, who, code, False)

    @router.put("/{code}/apps/{app}", response_model=AccountShown, responses={404: {"model": Problem}})
    async def authorise(code: Code, app: AppName, request: Request, who: Manager) -> AccountShown:
        return await authorise_app(deps, accounts, request, who, code, app, True)

    @router.delete("/{code}/apps/{app}", response_model=AccountShown, responses={404: {"model": Problem}})
    async def unauthorise(code: Code, app: AppName, request: Request, who: Manager) -> AccountShown:
        return await authorise_app(deps, accounts, request, who, code, app, False)

    @router.delete("/{code}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": Problem}})
    async def delete(code: Code, request: Request, who: Manager) -> None:
        access.authorize(who, "channels:manage", None)
        try:
            removed = await accounts.delete(code)
        except UnknownAccountError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        await audit(request, who, "channel.delete", code, removed, None)

    @router.post("/rotate-secrets", response_model=Rotated)
    async def rotate(request: Request, who: Manager) -> Rotated:
        """Seal every stored secret again under the newest master key, so older keys can be removed."""
        access.authorize(who, "channels:manage", None)
        done = await accounts.rotate_secrets(who.name)
        for code in done.codes:
            await audit(request, who, "channel.secrets_reseal", code, None, None)
        return Rotated(resealed=done.codes, unopened=done.unopened)

    return router

