"""Switchboard's entry point: the `switchboard` command line over the Faust app and the API."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from channels.providers import providers_cli
from rules.cli import rules_cli
from settings import Settings

if TYPE_CHECKING:
    from localparts.supervisor import LocalParts

# The command line. Each command only parses arguments and hands over; imports are local so that
# `switchboard --help` and the light commands do not load Faust, chdb or the rule engine.

cli = typer.Typer(
    no_args_is_help=True, help="Switchboard: a unified message platform.", pretty_exceptions_show_locals=False
)
users_cli = typer.Typer(no_args_is_help=True, help="Manage the user directory.")
apps_cli = typer.Typer(no_args_is_help=True, help="Manage upstream apps and their API keys.")
parts_cli = typer.Typer(no_args_is_help=True, help="Start and stop the local parts (broker, Redis).")
cli.add_typer(users_cli, name="users")
cli.add_typer(apps_cli, name="apps")
cli.add_typer(parts_cli, name="parts")
cli.add_typer(rules_cli, name="rules")
cli.add_typer(providers_cli, name="providers")


def quiet_url_loggers() -> None:
    """httpx logs every request URL at INFO, and providers put tokens in URLs (WeChat access_token,
    DingTalk sign, WeCom key); hpack logs HTTP/2 headers, bearer tokens included, at DEBUG. Keep those
    loggers at WARNING so no secret reaches a log."""
    import logging

    for name in ("httpx", "httpcore", "hpack", "h2"):
        logging.getLogger(name).setLevel(logging.WARNING)


@cli.command()
def worker(loglevel: str = "info") -> None:
    """Run a stream worker: ingest, decide, send and track."""
    from processors.runtime import run_worker

    quiet_url_loggers()
    run_worker(Settings(), loglevel=loglevel)


@cli.command()
def api() -> None:
    """Run the HTTP API (events in, inbox, health)."""
    from api.server import serve

    quiet_url_loggers()
    serve(Settings())


@cli.command()
def demo(
    size: Annotated[int, typer.Option(help="people in the sample university")] = 5000,
    keep_running: Annotated[bool, typer.Option(help="leave the parts running afterwards")] = False,
) -> None:
    """Start everything locally, load a sample university, send a realistic mix, report reach."""
    from demo.run import run_demo

    raise typer.Exit(run_demo(Settings(), size=size, keep_running=keep_running))


@cli.command()
def report(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Print the reach report per channel from ClickHouse (the worker must not hold a chdb folder)."""
    from rich.console import Console

    from analytics.connection import open_clickhouse
    from analytics.report import as_dict, reach_report, render_table

    result = reach_report(open_clickhouse(Settings().clickhouse))
    if as_json:
        print(json.dumps(as_dict(result), default=str))
    else:
        Console().print(render_table(result))


@users_cli.command("import")
def users_import(
    path: Path,
    format: Annotated[
        Literal["csv", "jsonl"] | None, typer.Option(help="csv or jsonl (default: from the extension)")
    ] = None,
) -> None:
    """Import users from CSV or JSON Lines; bad rows are reported, good rows kept."""
    from state.connection import open_redis
    from state.users import UserDirectory
    from state.users_import import import_users

    async def run() -> int:
        redis = open_redis(Settings().redis)
        try:
            result = await import_users(path, UserDirectory(redis), format=format)
        finally:
            await redis.aclose()
        for error in result.errors[:50]:
            typer.echo(f"{path}:{error.line}: {error.field}: {error.message}", err=True)
        if len(result.errors) > 50:
            typer.echo(f"... and {len(result.errors) - 50} more errors", err=True)
        typer.echo(f"imported {result.imported}, rejected {result.rejected}")
        return 1 if result.rejected else 0

    raise typer.Exit(asyncio.run(run()))


@apps_cli.command("add")
def apps_add(
    name: str,
    channels: Annotated[str, typer.Option(help="comma-separated authorised channels")],
    description: str = "",
) -> None:
    """Register an upstream app; prints its API key once."""
    from state.apps import AppRegistry
    from state.connection import open_redis

    async def run() -> str:
        redis = open_redis(Settings().redis)
        try:
            wanted = {c.strip() for c in channels.split(",") if c.strip()}
            return await AppRegistry(redis).register(name, wanted, description)  # type: ignore[arg-type]
        finally:
            await redis.aclose()

    key = asyncio.run(run())
    typer.echo(f"app {name} registered; its API key (shown once): {key}")


@parts_cli.command("up")
def parts_up() -> None:
    """Start the broker and Redis on loopback (reusing ones already healthy)."""
    _parts().up()
    parts_status()


@parts_cli.command("down")
def parts_down() -> None:
    """Stop the local parts started by `parts up`."""
    _parts().down()


@parts_cli.command("status")
def parts_status() -> None:
    """Show whether each local part is running and healthy."""
    for status in _parts().status():
        typer.echo(str(status))


def _parts() -> LocalParts:
    from localparts.supervisor import LocalParts

    return LocalParts.from_settings(Settings())


def main() -> None:
    """The `switchboard` console command."""
    sys.exit(cli())


if __name__ == "__main__":
    main()
