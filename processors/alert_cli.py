"""The `switchboard alerts` commands, for app.py to mount with `cli.add_typer(alerts_cli, ...)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from processors.alert_rules import check_alerts, load_alerts

alerts_cli = typer.Typer(no_args_is_help=True, help="Check the alert rules Switchboard evaluates itself.")


@alerts_cli.command("check")
def check_command(
    path: Annotated[Path | None, typer.Argument(help="alert file (default: SWITCHBOARD_ALERTS)")] = None,
) -> None:
    """Check the alert file (`path:line:col: message`); exit 1 on any error."""
    if path is None:
        from settings import Settings  # late: reading settings is for the command, not the import

        path = Settings().alerts
    errors = check_alerts(path)
    for error in errors:
        typer.echo(str(error), err=True)
    if errors:
        raise typer.Exit(1)
    alerts = load_alerts(path)
    channels = ", ".join(alerts.notify.channels or ["as the rules decide"])
    typer.echo(f"{path}: {len(alerts.rules)} alert rule(s) ok, every {alerts.every:g}s, "
               f"sent as app {alerts.notify.app} ({channels})")
