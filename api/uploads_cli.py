"""`switchboard uploads add|list|show|errors|remove`: uploaded recipient lists from a shell on the server,
each change an audit record on topic `audit` as done by the shell's user from `cli` (the broker is
checked before anything changes: api/access_cli.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from settings import Settings, SwitchboardError

if TYPE_CHECKING:
    from api.access_cli import Shell
    from state.uploads import Upload, UploadStore

T = TypeVar("T")
uploads_cli = typer.Typer(
    no_args_is_help=True, help="Uploaded recipient lists (CSV or XLSX) that an event names as its audience."
)
_Id = Annotated[str, typer.Argument(help="the upload's id (up-...)")]


@uploads_cli.command("add")
def uploads_add(
    file: Annotated[Path, typer.Argument(help="a CSV (UTF-8 or GBK) or XLSX file, one recipient a row")],
    app: Annotated[str, typer.Option(help="the app that may send to it")],
    kind: Annotated[str | None, typer.Option(help="phone, email or user_id (default: by header)")] = None,
    ttl_hours: Annotated[int, typer.Option(help="hours it is kept, 1 to 720")] = 72,
) -> None:
    """Clean, deduplicate and store the file's recipients; prints its id and counts, and the first errors."""
    from api.upload_reader import import_file, parse_kind
    from state.uploads import MAX_TTL_HOURS

    settings = Settings()
    if not file.is_file():
        raise SwitchboardError(f"{file}: no such file")
    size = file.stat().st_size
    if size > settings.upload_max_bytes:
        raise SwitchboardError(
            f"{file}: {size} bytes, over the limit of {settings.upload_max_bytes} "
            "(SWITCHBOARD_UPLOAD_MAX_BYTES)"
        )
    if not 1 <= ttl_hours <= MAX_TTL_HOURS:
        raise SwitchboardError(f"--ttl-hours: from 1 to {MAX_TTL_HOURS} (30 days), got {ttl_hours}")
    parsed_kind = parse_kind(kind)

    async def action(store: UploadStore, shell: Shell) -> tuple[Upload, list[str]]:
        from api.audit_cli import cli_actor

        upload = await import_file(
            store, file, app=app, kind=parsed_kind, ttl_hours=ttl_hours, filename=file.name,
            created_by=cli_actor(), max_errors_kept=settings.upload_errors_kept,
        )
        await shell.audit("upload.add", "upload", upload.upload_id, app=app, after=upload.as_dict())
        shown = await store.errors(upload.upload_id, 0, settings.upload_errors_shown)
        return upload, [f"  row {e.row} {e.column}: {e.value} {e.reason}" for e in shown]

    upload, errors = _changing(action)
    _show(upload)
    if errors:
        typer.echo(f"first errors (all: switchboard uploads errors {upload.upload_id}):")
        typer.echo("\n".join(errors))


@uploads_cli.command("list")
def uploads_list(app: Annotated[str | None, typer.Option(help="only this app's")] = None) -> None:
    """The live uploads: id, app, recipients, expiry."""

    async def action(store: UploadStore) -> list[Upload]:
        return await store.live([app] if app else await store.apps())

    uploads = _with_store(action)
    if not uploads:
        typer.echo("no uploads; add one with `switchboard uploads add FILE --app APP`")
    for u in uploads:
        typer.echo(f"{u.upload_id:<20} {u.app:<16} {u.kind:<8} {u.recipients:>9} recipients  "
                   f"expires {u.as_dict()['expires_at']}  {u.filename}")


@uploads_cli.command("show")
def uploads_show(upload_id: _Id) -> None:
    """One upload: its counts and expiry."""
    _show(_with_store(lambda store: _found(store, upload_id)))


@uploads_cli.command("errors")
def uploads_errors(
    upload_id: _Id,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000)] = 1000,
) -> None:
    """The rows the upload refused: row, column, value (masked) and reason."""

    async def action(store: UploadStore) -> list[str]:
        await _found(store, upload_id)
        errors = await store.errors(upload_id, offset, limit)
        return [f"row {e.row}\t{e.column}\t{e.value}\t{e.reason}" for e in errors]

    for line in _with_store(action):
        typer.echo(line)


@uploads_cli.command("remove")
def uploads_remove(upload_id: _Id) -> None:
    """Remove an upload now: events naming it are dead-lettered from then on."""

    async def action(store: UploadStore, shell: Shell) -> Upload:
        from api.audit_cli import cli_actor

        upload = await _found(store, upload_id)
        await store.remove(upload_id, cli_actor())
        await shell.audit("upload.remove", "upload", upload_id, app=upload.app, before=upload.as_dict())
        return upload

    upload = _changing(action)
    typer.echo(f"upload {upload.upload_id} of app {upload.app} removed ({upload.recipients} recipients)")


def _show(upload: Upload) -> None:
    for key, value in upload.as_dict().items():
        typer.echo(f"{key:<14} {value}")


async def _found(store: UploadStore, upload_id: str) -> Upload:
    upload = await store.get(upload_id)
    if upload is None or upload.removed_at is not None:
        state = "was removed" if upload is not None else "expired or unknown"
        raise SwitchboardError(f"upload {upload_id} {state}; `switchboard uploads list` shows the live ones")
    return upload


def _changing(action: Callable[[UploadStore, Shell], Awaitable[T]]) -> T:
    """Run a change with Redis and the audit topic open; a broker that is down changes nothing."""
    from api.access_cli import audited_shell
    from state.connection import open_redis
    from state.uploads import UploadStore

    async def run() -> T:
        settings = Settings()
        async with audited_shell(settings) as shell:
            redis = open_redis(settings.redis)
            try:
                return await action(UploadStore(redis), shell)
            finally:
                await redis.aclose()

    return asyncio.run(run())


def _with_store(action: Callable[[UploadStore], Awaitable[T]]) -> T:
    from state.connection import open_redis
    from state.uploads import UploadStore

    async def run() -> T:
        redis = open_redis(Settings().redis)
        try:
            return await action(UploadStore(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())
