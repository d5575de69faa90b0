"""`switchboard people add|show|update|remove|addresses|list`: the people API's operations from a shell
on the server (beside `people export|erase|pseudonym`, the data-rights commands in app.py). Each change
is an audit record on topic `audit` as done by the shell's user from `cli`; the broker is checked before
anything changes (api/access_cli.py `audited_shell`)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from settings import Settings, SwitchboardError

if TYPE_CHECKING:
    from api.access_cli import Shell
    from state.users import User, UserDirectory

T = TypeVar("T")
_UserId = Annotated[str, typer.Argument(help="the person's user id")]
_Addresses = Annotated[
    list[str] | None,
    typer.Option("--address", help="CHANNEL=ADDRESS[,label=L][,primary][,active=ISO time]; repeatable"),
]
_Choices = Annotated[
    list[str] | None, typer.Option("--choice", help="CHANNEL=latest|primary|all: which addresses are used")
]
_Attributes = Annotated[
    list[str] | None, typer.Option("--attr", help="NAME=VALUE (numbers and true/false typed)")
]


def add_people_commands(people: typer.Typer) -> None:
    """Put the directory commands into the `people` group."""
    people.command("add")(people_add)
    people.command("show")(people_show)
    people.command("update")(people_update)
    people.command("remove")(people_remove)
    people.command("addresses")(people_addresses)
    people.command("list")(people_list)


def people_add(
    user_id: _UserId,
    name: Annotated[str, typer.Option(help="the name shown to operators and in templates")] = "",
    timezone: Annotated[str, typer.Option(help="IANA name")] = "Asia/Shanghai",
    locale: Annotated[str, typer.Option()] = "zh-CN",
    tags: Annotated[str, typer.Option(help="comma-separated")] = "",
    pref: Annotated[str | None, typer.Option(help="the channel the person prefers")] = None,
    address: _Addresses = None,
    choice: _Choices = None,
    attr: _Attributes = None,
) -> None:
    """Create a person with their addresses (cleaned as at send); audited."""
    from api.people import PersonIn, new_person

    body = _model(PersonIn, {
        "user_id": user_id, "name": name, "timezone": timezone, "locale": locale, "tags": _list(tags),
        "channel_pref": pref, "addresses": _addresses(address or []),
        "address_choice": _pairs(choice, "--choice"), "attributes": _attributes(attr or []),
    })
    user = new_person(body, datetime.now(UTC))

    async def action(people: UserDirectory, shell: Shell) -> None:
        if await people.get(user_id) is not None:
            raise SwitchboardError(f"person {user_id} exists; change them with `switchboard people update`")
        await _audit(shell, "person.create", user_id, None, user)
        await people.upsert([user])

    _changing(action)
    typer.echo(f"person {user_id} added: {_summary(user)}")


def people_show(user_id: _UserId) -> None:
    """One person as JSON: profile, addresses, and who each channel's message reaches."""
    from api.people import described

    user = _with_people(lambda people: _found(people, user_id))
    typer.echo(json.dumps(described(user), ensure_ascii=False, indent=2))


def people_update(
    user_id: _UserId,
    name: Annotated[str | None, typer.Option()] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA name")] = None,
    locale: Annotated[str | None, typer.Option()] = None,
    tags: Annotated[str | None, typer.Option(help="comma-separated; replaces the tags ('' for none)")] = None,
    pref: Annotated[str | None, typer.Option(help="the channel the person prefers")] = None,
    address: _Addresses = None,
    drop_channel: Annotated[
        list[str] | None, typer.Option("--drop-channel", help="remove a channel's addresses")
    ] = None,
    choice: _Choices = None,
    attr: Annotated[list[str] | None, typer.Option("--attr", help="NAME=VALUE; NAME= removes it")] = None,
) -> None:
    """Change some fields; --address replaces the addresses of the channels it names; audited."""
    from api.people import PersonPatch, changed_person

    fields: dict[str, Any] = {"name": name, "timezone": timezone, "locale": locale, "channel_pref": pref}
    patch_fields = {k: v for k, v in fields.items() if v is not None}
    if tags is not None:
        patch_fields["tags"] = _list(tags)
    if address or drop_channel:
        patch_fields["addresses"] = {**_addresses(address or []), **{c: [] for c in drop_channel or []}}
    if choice:
        patch_fields["address_choice"] = _pairs(choice, "--choice")
    if attr:
        patch_fields["attributes"] = _attributes(attr, removable=True)
    if not patch_fields:
        raise SwitchboardError("nothing to change: give at least one option (see --help)")
    patch = _model(PersonPatch, patch_fields)

    async def action(people: UserDirectory, shell: Shell) -> User:
        before = await _found(people, user_id)
        after = changed_person(before, patch, datetime.now(UTC))
        await _audit(shell, "person.update", user_id, before, after)
        await people.upsert([after])
        return after

    typer.echo(f"person {user_id} changed: {_summary(_changing(action))}")


def people_remove(
    user_id: _UserId, yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False
) -> None:
    """Remove a person from the directory (not an erasure: `people erase` also clears their consent,
    inbox and history, and anonymises ClickHouse); audited."""
    if not yes and not typer.confirm(f"remove {user_id} from the directory?", default=False):
        raise SwitchboardError("not removed: not confirmed (pass --yes to skip the question)")

    async def action(people: UserDirectory, shell: Shell) -> None:
        before = await _found(people, user_id)
        await _audit(shell, "person.remove", user_id, before, None)
        await people.remove(user_id)

    _changing(action)
    typer.echo(f"person {user_id} removed from the directory")


def people_addresses(user_id: _UserId) -> None:
    """A person's addresses: channel, index, address, label, primary, last active, and which are used."""
    from api.people import address_rows

    rows = address_rows(_with_people(lambda people: _found(people, user_id)))
    if not rows:
        typer.echo(f"{user_id} has no addresses")
    for row in rows:
        flags = ",".join(f for f, on in (("primary", row["primary"]), ("used", row["used"])) if on) or "-"
        typer.echo(f"{row['channel']:<10} {row['index']:>2} {row['address']:<40} {row['label'] or '-':<12} "
                   f"{row['choice']:<8} {flags:<14} {row['last_active'] or '-'}")


def people_list(
    tag: Annotated[str | None, typer.Option(help="only people with this tag")] = None,
    prefix: Annotated[str, typer.Option(help="only ids starting so")] = "",
    after: Annotated[str, typer.Option(help="start after this id (the cursor printed last)")] = "",
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """People in id order: id, name, tags, channels; the next page's cursor last."""

    async def page(people: UserDirectory) -> tuple[list[User], bool]:
        ids = await people.listing(after=after, limit=limit + 1, tag=tag, prefix=prefix)
        found = await people.get_many(ids[:limit])
        return [found[i] for i in ids[:limit] if i in found], len(ids) > limit

    users, more = _with_people(page)
    for user in users:
        typer.echo(f"{user.user_id:<24} {user.name or '-':<20} {','.join(user.tags) or '-':<24} "
                   f"{','.join(sorted(user.addresses)) or '-'}")
    if more:
        typer.echo(f"more: --after {users[-1].user_id}")


def _summary(user: User) -> str:
    counts = ", ".join(f"{len(items)} {channel}" for channel, items in sorted(user.addresses.items()))
    return f"{counts or 'no addresses'}; tags {','.join(user.tags) or '-'}"


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _pairs(given: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in given or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SwitchboardError(f"{option} {item!r}: expected NAME=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


def _addresses(given: list[str]) -> dict[str, list[dict[str, Any]]]:
    """`--address` values grouped by channel, in the order given."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in given:
        channel, sep, rest = item.partition("=")
        if not sep or not rest.strip():
            raise SwitchboardError(f"--address {item!r}: expected CHANNEL=ADDRESS[,label=L][,primary]")
        value, *options = rest.split(",")
        entry: dict[str, Any] = {"address": value.strip()}
        for option in options:
            key, _, text = option.partition("=")
            key = key.strip()
            if key == "primary":
                entry["primary"] = True
            elif key in ("label", "active"):
                entry["label" if key == "label" else "last_active"] = text.strip()
            else:
                known = "label=, primary, active="
                raise SwitchboardError(f"--address {item!r}: unknown option {key!r} ({known})")
        grouped.setdefault(channel.strip(), []).append(entry)
    return grouped


def _attributes(given: list[str], removable: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, text in _pairs(given, "--attr").items():
        if text == "" and removable:
            values[name] = None
            continue
        values[name] = _typed(text)
    return values


def _typed(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _model(model: Any, fields: dict[str, Any]) -> Any:
    """The request model, or one line naming the option that is wrong."""
    from pydantic import ValidationError

    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"] if part != "[key]") or "person"
        raise SwitchboardError(f"{where}: {str(error['msg']).removeprefix('Value error, ')}") from None


async def _found(people: UserDirectory, user_id: str) -> User:
    user = await people.get(user_id)
    if user is None:
        raise SwitchboardError(f"no person {user_id}; `switchboard people list` shows them")
    return user


async def _audit(shell: Shell, action: str, user_id: str, before: User | None, after: User | None) -> None:
    from api.people import audited_view

    await shell.audit(action, "person", user_id, before=audited_view(before), after=audited_view(after))


def _changing(action: Callable[[UserDirectory, Shell], Awaitable[T]]) -> T:
    """Run a change with Redis and the audit topic open; a broker that is down changes nothing."""
    from api.access_cli import audited_shell
    from state.connection import open_redis
    from state.users import UserDirectory

    async def run() -> T:
        settings = Settings()
        async with audited_shell(settings) as shell:
            redis = open_redis(settings.redis)
            try:
                return await action(UserDirectory(redis), shell)
            finally:
                await redis.aclose()

    return asyncio.run(run())


def _with_people(action: Callable[[UserDirectory], Awaitable[T]]) -> T:
    from state.connection import open_redis
    from state.users import UserDirectory

    async def run() -> T:
        redis = open_redis(Settings().redis)
        try:
            return await action(UserDirectory(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())


@contextmanager
def import_progress(path: Path) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over the file's bytes on stderr when it is a terminal; otherwise nothing (the
    command prints one summary line at the end)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("import", total=path.stat().st_size)
        yield lambda offset: bar.update(task, completed=offset)
