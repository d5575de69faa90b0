"""`switchboard channels ...`: channel accounts from the server's shell, audited like the API's changes.

Secrets are read from standard input (one line each, e.g. piped from a secret store) or from a hidden
prompt, never from the arguments, which any user of the machine sees in `ps`. The broker must be up:
a change is made only once its audit record can be published (actor `cli:<login>`, source `cli`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from api.audit_cli import cli_actor
from api.channel_accounts import account_shown, audit_view
from api.publisher import KafkaPublisher, PublishError
from channels.accounts import check_account
from records.audit import AuditRecord
from settings import Settings, SwitchboardError
from state.channel_accounts import ACCOUNT_TYPES, ChannelAccount, ChannelAccounts, Resealed

T = TypeVar("T")
channels_cli = typer.Typer(no_args_is_help=True, help="Manage channel accounts (write-only secrets).")
_Code = Annotated[str, typer.Argument(help="the account's code (通道编码)")]


class _Session:
    """Redis, the accounts and a started publisher for one command."""

    def __init__(self, settings: Settings) -> None:
        from state.connection import open_redis

        self.settings = settings
        self.redis = open_redis(settings.redis)
        self.accounts = ChannelAccounts(self.redis, settings.secret_box(), settings.channel_account_quota)
        self.publisher = KafkaPublisher(settings.kafka, settings.topic("events"), settings.topic("receipts"),
                                        audit_topic=settings.topic("audit"))
        self.actor = cli_actor()

    async def audit(self, action: str, code: str, before: ChannelAccount | None,
                    after: ChannelAccount | None, app: str = "") -> None:
        await self.publisher.publish_audit(AuditRecord(
            actor=self.actor, actor_kind="system", source="cli", action=action, target_kind="channel_account",
            target=code, app=app, before=audit_view(before), after=audit_view(after),
        ))


def _run(action: Callable[[_Session], Awaitable[T]], *, audited: bool = True) -> T:
    async def run() -> T:
        session = _Session(Settings())
        try:
            if audited:
                await session.publisher.start()  # no change without its audit record
            return await action(session)
        except PublishError as exc:
            raise SwitchboardError(f"{exc}; channel accounts change only with an audit record") from None
        finally:
            await session.publisher.stop()
            await session.redis.aclose()

    return asyncio.run(run())


def read_secret(name: str) -> str:
    """One secret: a line of standard input when it is piped, else a hidden prompt."""
    if not sys.stdin.isatty():
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = typer.prompt(f"{name} (not shown)", hide_input=True, confirmation_prompt=True)
    if not value:
        raise SwitchboardError(f"no value for secret {name!r} on standard input")
    return value


def _settings_of(pairs: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SwitchboardError(f"--setting {pair.split('=')[0]!r}: write it as key=value")
        # JSON where it parses (numbers, true/false), text otherwise.
        try:
            found[key] = json.loads(value)
        except ValueError:
            found[key] = value
    return found


def _line(account: ChannelAccount) -> str:
    state = "on" if account.enabled else "off"
    secrets = ",".join(f"{name}=******" for name in sorted(account.secrets)) or "no secrets"
    apps = ",".join(sorted(account.apps)) or "no app"
    return f"{account.code:<20} {account.type:<10} {account.platform:<10} {state:<4} {apps:<30} {secrets}"


@channels_cli.command("list")
def list_command(
    type_: Annotated[str | None, typer.Option("--type", help=f"one of {', '.join(ACCOUNT_TYPES)}")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List the accounts: type, platform, on/off, authorised apps; secrets only as ******."""
    if type_ is not None and type_ not in ACCOUNT_TYPES:
        raise SwitchboardError(f"--type {type_!r}: expected one of {', '.join(ACCOUNT_TYPES)}")
    found = _run(lambda s: s.accounts.list(type_), audited=False)
    if not found and not as_json:
        typer.echo("no channel accounts; add one with `switchboard channels add`")
    for account in found:
        typer.echo(account_shown(account).model_dump_json() if as_json else _line(account))


@channels_cli.command("add")
def add_command(
    code: _Code,
    name: Annotated[str, typer.Option(help="通道名称")],
    type_: Annotated[str, typer.Option("--type", help=f"one of {', '.join(ACCOUNT_TYPES)}")],
    platform: Annotated[str, typer.Option(help="the adapter kind: aliyun, tencent, wechat-oa, jpush...")],
    setting: Annotated[list[str] | None, typer.Option(help="key=value, repeated (non-secret)")] = None,
    secret: Annotated[list[str] | None, typer.Option(help="a secret's name, repeated; from stdin")] = None,
    app: Annotated[list[str] | None, typer.Option(help="an app authorised for it, repeated")] = None,
    enable: Annotated[bool, typer.Option("--enable/--disabled", help="switched on at once")] = False,
) -> None:
    """Create an account; each --secret NAME reads its value from standard input or a hidden prompt."""
    if type_ not in ACCOUNT_TYPES:
        raise SwitchboardError(f"--type {type_!r}: expected one of {', '.join(ACCOUNT_TYPES)}")
    settings = _settings_of(setting or [])
    problems = check_account(type_, platform, settings, secret or [])
    if problems:
        raise SwitchboardError("; ".join(problems))
    now = datetime.now(UTC)
    account = ChannelAccount.model_validate({
        "code": code, "name": name, "type": type_, "platform": platform, "settings": settings,
        "enabled": enable, "created_at": now, "created_by": "", "updated_at": now, "updated_by": "",
    })
    secrets = {secret_name: read_secret(secret_name) for secret_name in secret or []}

    async def create(session: _Session) -> ChannelAccount:
        created = await session.accounts.create(account, secrets, session.actor)
        await session.audit("channel.create", code, None, created)
        for app_name in app or []:
            before, created = await session.accounts.authorise(code, app_name, session.actor)
            await session.audit("channel.authorise", code, before, created, app_name)
        return created

    typer.echo(_line(_run(create)))


@channels_cli.command("set-secret")
def set_secret_command(code: _Code, name: Annotated[str, typer.Argument(help="e.g. secret")]) -> None:
    """Set or replace one secret, read from standard input or a hidden prompt; it is never shown again."""
    async def fetch(session: _Session) -> ChannelAccount:
        return await session.accounts.get(code)

    current = _run(fetch, audited=False)  # a wrong code or name is said before asking for the value
    problems = check_account(current.type, current.platform, {}, [name])
    if problems:
        raise SwitchboardError("; ".join(problems))
    value = read_secret(name)

    async def change(session: _Session) -> ChannelAccount:
        before, after = await session.accounts.set_secret(code, name, value, session.actor)
        action = "channel.secret_rotate" if name in before.secrets else "channel.secret_set"
        await session.audit(action, code, before, after)
        return after

    after = _run(change)
    at = after.secrets[name].updated_at
    typer.echo(f"{code}: secret {name} set at {at:%Y-%m-%d %H:%M:%S} UTC (not shown)")


def _switch(code: str, enabled: bool) -> None:
    async def change(session: _Session) -> ChannelAccount:
        before, after = await session.accounts.update(code, session.actor, enabled=enabled)
        await session.audit("channel.enable" if enabled else "channel.disable", code, before, after)
        return after

    typer.echo(_line(_run(change)))


@channels_cli.command("enable")
def enable_command(code: _Code) -> None:
    """Switch the account on: workers send through it within seconds."""
    _switch(code, True)


@channels_cli.command("disable")
def disable_command(code: _Code) -> None:
    """Switch the account off: workers stop sending through it within seconds."""
    _switch(code, False)


@channels_cli.command("authorise")
def authorise_command(code: _Code, app: Annotated[str, typer.Argument(help="a registered app")]) -> None:
    """Let an upstream app send through the account (下发通道)."""
    async def change(session: _Session) -> ChannelAccount:
        before, after = await session.accounts.authorise(code, app, session.actor)
        await session.audit("channel.authorise", code, before, after, app)
        return after

    typer.echo(_line(_run(change)))


@channels_cli.command("unauthorise")
def unauthorise_command(code: _Code, app: Annotated[str, typer.Argument(help="an app")]) -> None:
    """Stop an upstream app from sending through the account."""
    async def change(session: _Session) -> ChannelAccount:
        before, after = await session.accounts.unauthorise(code, app, session.actor)
        await session.audit("channel.unauthorise", code, before, after, app)
        return after

    typer.echo(_line(_run(change)))


@channels_cli.command("remove")
def remove_command(code: _Code) -> None:
    """Delete the account and its secrets."""
    async def remove(session: _Session) -> None:
        removed = await session.accounts.delete(code)
        await session.audit("channel.delete", code, removed, None)

    _run(remove)
    typer.echo(f"channel account {code} removed")


@channels_cli.command("rotate-secrets")
def rotate_command() -> None:
    """Seal every stored secret again under the newest master key (the first of SWITCHBOARD_MASTER_KEYS),
    after which the older keys can be removed from the setting."""
    async def rotate(session: _Session) -> Resealed:
        done = await session.accounts.rotate_secrets(session.actor)
        for code in done.codes:
            await session.audit("channel.secrets_reseal", code, None, None)
        return done

    done = _run(rotate)
    typer.echo(f"resealed the secrets of {len(done.codes)} account(s) under the newest master key"
               + (f": {', '.join(done.codes)}" if done.codes else ""))
    for reason in done.unopened.values():
        typer.echo(f"error: {reason}", err=True)
    if done.unopened:
        raise typer.Exit(1)
