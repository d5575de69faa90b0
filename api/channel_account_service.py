"""What an operator may do to channel accounts, once: the `/v1/channel-accounts` routes and the console's
Channels page both call these, so the checks, the store calls and the audit records (secrets masked) are
the same whichever is used. Refusals are HTTPExceptions with the message the API answers; a secret's
value is passed straight to the store and never into a message, a record or a log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import HTTPException, Request, status
from pydantic import BaseModel

from api.access import audit_record
from api.deps import ApiDeps
from api.problems import invalid
from channels.accounts import check_account
from records.audit import mask_secrets
from settings.permissions import ALL_APPS, Principal
from state.apps import UnknownAppError
from state.channel_accounts import (
    AccountExistsError,
    AccountRate,
    ChannelAccount,
    ChannelAccountError,
    ChannelAccounts,
    QuotaFullError,
    SettingValue,
    UnknownAccountError,
)


class SecretShown(BaseModel):
    """A secret as every response shows it."""

    value: Literal["******"] = "******"  # records.audit.MASK: never the value
    set: bool
    updated_at: datetime | None = None
    updated_by: str | None = None


class AccountShown(BaseModel):
    """A channel account as operators see it: settings in the clear, secrets masked."""

    code: str
    name: str
    type: str
    platform: str
    settings: dict[str, SettingValue]
    secrets: dict[str, SecretShown]
    enabled: bool
    apps: list[str]
    priority: int
    cost_per_message: float | None
    rate: AccountRate | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


def account_shown(account: ChannelAccount, scope: frozenset[str] = frozenset({ALL_APPS})) -> AccountShown:
    apps = sorted(account.apps if ALL_APPS in scope else account.apps & scope)
    secrets = {name: SecretShown(set=True, updated_at=state.updated_at, updated_by=state.updated_by)
               for name, state in account.secrets.items()}
    plain = account.model_dump(exclude={"apps", "secrets", "revision"})
    return AccountShown(**plain, apps=apps, secrets=secrets)


def audit_view(account: ChannelAccount | None) -> Any:
    return None if account is None else mask_secrets(account_shown(account).model_dump(mode="json"))


def readable_accounts(accounts_: list[ChannelAccount], principal: Principal) -> list[AccountShown]:
    """The accounts `principal` may read (`channels:read` on an app they serve), with those apps only."""
    scope = principal.apps_for("channels:read")
    return [account_shown(account, scope) for account in accounts_
            if ALL_APPS in scope or account.apps & scope]


async def found_account(accounts: ChannelAccounts, code: str) -> ChannelAccount:
    try:
        return await accounts.get(code)
    except UnknownAccountError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


async def _audit(deps: ApiDeps, request: Request, who: Principal, action: str, code: str,
                 before: ChannelAccount | None, after: ChannelAccount | None, app: str = "") -> None:
    await deps.publisher.publish_audit(audit_record(
        request, who, action, target_kind="channel_account", target=code, app=app,
        before=audit_view(before), after=audit_view(after),
    ))


async def create_account(deps: ApiDeps, accounts: ChannelAccounts, request: Request, who: Principal,
                         fields: dict[str, Any], secrets: dict[str, str]) -> AccountShown:
    """`fields` are a NewAccount's without its secrets; `secrets` the values to seal."""
    deps.access.authorize(who, "channels:manage", None)
    problems = check_account(fields["type"], fields["platform"], fields.get("settings", {}), list(secrets))
    if problems:
        raise invalid(["body"], "; ".join(problems))
    account = ChannelAccount.model_validate({
        **fields, "created_at": datetime.now(UTC), "created_by": who.name,
        "updated_at": datetime.now(UTC), "updated_by": who.name,
    })
    try:
        created = await accounts.create(account, secrets, who.name)
    except (AccountExistsError, QuotaFullError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    await _audit(deps, request, who, "channel.create", created.code, None, created)
    return account_shown(created)


async def change_account(deps: ApiDeps, accounts: ChannelAccounts, request: Request, who: Principal,
                         code: str, action: str, app: str = "", **fields: Any) -> AccountShown:
    await found_account(accounts, code)
    try:
        before, after = await accounts.update(code, who.name, **fields)
    except UnknownAccountError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except ChannelAccountError as exc:
        raise invalid(["body"], str(exc)) from None
    await _audit(deps, request, who, action, code, before, after, app)
    return account_shown(after)


async def switch_account(deps: ApiDeps, accounts: ChannelAccounts, request: Request, who: Principal,
                         code: str, enabled: bool) -> AccountShown:
    deps.access.authorize(who, "channels:manage", None)
    action = "channel.enable" if enabled else "channel.disable"
    return await change_account(deps, accounts, request, who, code, action, enabled=enabled)


async def set_account_secret(deps: ApiDeps, accounts: ChannelAccounts, request: Request, who: Principal,
                             code: str, name: str, value: str) -> SecretShown:
    deps.access.authorize(who, "channels:manage", None)
    current = await found_account(accounts, code)
    problems = check_account(current.type, current.platform, {}, [name])
    if problems:
        raise invalid(["path", "name"], "; ".join(problems))
    try:
        before, after = await accounts.set_secret(code, name, value, who.name)
    except UnknownAccountError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except ChannelAccountError as exc:
        raise invalid(["body", "value"], str(exc)) from None
    action = "channel.secret_rotate" if name in before.secrets else "channel.secret_set"
    await _audit(deps, request, who, action, code, before, after)
    state = after.secrets[name]
    return SecretShown(set=True, updated_at=state.updated_at, updated_by=state.updated_by)


async def authorise_app(deps: ApiDeps, accounts: ChannelAccounts, request: Request, who: Principal,
                        code: str, app: str, allowed: bool) -> AccountShown:
    """Authorise (`allowed`) or unauthorise `app` on the account: `channels:manage` on that app."""
    deps.access.authorize(who, "channels:manage", app)
    try:
        if allowed:
            before, after = await accounts.authorise(code, app, who.name)
        else:
            before, after = await accounts.unauthorise(code, app, who.name)
    except (UnknownAccountError, UnknownAppError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    action = "channel.authorise" if allowed else "channel.unauthorise"
    await _audit(deps, request, who, action, code, before, after, app)
    return _scoped(account_shown(after), who)


def _scoped(shown: AccountShown, who: Principal) -> AccountShown:
    scope = who.apps_for("channels:manage")
    if ALL_APPS in scope:
        return shown
    return shown.model_copy(update={"apps": [app for app in shown.apps if app in scope]})
