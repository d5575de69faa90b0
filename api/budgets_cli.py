"""`switchboard budgets set|list|show|remove`: the budgets API's operations from a shell on the server,
each change an audit record on topic `audit` as done by the shell's user from `cli` (the broker is
checked before anything changes, as for `switchboard operators`: api/access_cli.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from settings import Settings, SwitchboardError

if TYPE_CHECKING:
    from api.access_cli import Shell
    from state.budgets import Budget, BudgetStore, Standing

T = TypeVar("T")
budgets_cli = typer.Typer(
    no_args_is_help=True, help="Budgets per app or campaign and period, and their spending."
)

_App = Annotated[str, typer.Argument(help="the upstream app")]
_Period = Annotated[str, typer.Argument(help="day, week, month or total")]
_Campaign = Annotated[str | None, typer.Option(help="one campaign of the app (default: all it sends)")]


@budgets_cli.command("set")
def budgets_set(
    app: _App,
    period: _Period,
    limit: Annotated[float, typer.Argument(help="the limit, in the providers' cost unit")],
    campaign: _Campaign = None,
    currency: Annotated[str, typer.Option(help="the cost unit's name")] = "CNY",
    warn_at: Annotated[float, typer.Option(help="share of the limit from which it is near")] = 0.8,
    timezone: Annotated[str, typer.Option(help="the periods' calendar (IANA name)")] = "Asia/Shanghai",
) -> None:
    """Create or replace a budget; spending already counted in the current period stays."""
    from state.budgets import MICROS

    if not limit * MICROS >= 1:  # NaN too
        raise SwitchboardError(f"limit: must be at least 0.000001 (a micro-unit), got {limit:g}")
    budget = _budget(app=app, campaign=campaign, period=period, limit_micros=round(limit * MICROS),
                     currency=currency.upper(), warn_at=warn_at, timezone=timezone)

    async def action(budgets: BudgetStore, shell: Shell) -> Standing:
        before = await budgets.set(budget)
        (standing,) = await budgets.standings([budget])
        await _audit(shell, "budget.set", budget, before, budget)
        return standing

    typer.echo(_line(_changing(action)))


@budgets_cli.command("list")
def budgets_list(app: Annotated[str | None, typer.Option(help="only this app's")] = None) -> None:
    """Every budget with its current period: spent / limit, remaining, state (ok, near, over)."""

    async def action(budgets: BudgetStore) -> list[Standing]:
        return await budgets.standings([b for b in await budgets.all() if app is None or b.app == app])

    standings = _with_budgets(action)
    if not standings:
        typer.echo("no budgets; set one with `switchboard budgets set APP month 1000 [--campaign NAME]`")
    for standing in standings:
        typer.echo(_line(standing))


@budgets_cli.command("show")
def budgets_show(app: _App, period: _Period, campaign: _Campaign = None) -> None:
    """One budget: its period, spending and settings."""
    standing = _with_budgets(lambda budgets: _standing(budgets, app, campaign, period))
    for key, value in standing.as_dict().items():
        typer.echo(f"{key:<13} {'' if value is None else value}")


@budgets_cli.command("remove")
def budgets_remove(app: _App, period: _Period, campaign: _Campaign = None) -> None:
    """Remove a budget: its sends are no longer held back or counted."""

    async def action(budgets: BudgetStore, shell: Shell) -> Standing:
        standing = await _standing(budgets, app, campaign, period)
        await budgets.remove(app, campaign, period)
        await _audit(shell, "budget.remove", standing.budget, standing.budget, None)
        return standing

    standing = _changing(action)
    typer.echo(f"budget {standing.budget.id} removed (its {standing.window.key} period had spent "
               f"{standing.spent_micros / 1e6:g} {standing.budget.currency})")


def _budget(**fields: Any) -> Budget:
    """The budget, or one line naming the field that is wrong."""
    from pydantic import ValidationError

    from state.budgets import Budget

    try:
        return Budget(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]).replace("limit_micros", "limit") if error["loc"] else "budget"
        raise SwitchboardError(f"{field}: {str(error['msg']).removeprefix('Value error, ')}") from None


async def _standing(budgets: BudgetStore, app: str, campaign: str | None, period: str) -> Standing:
    budget = await budgets.get(app, campaign, period)
    if budget is None:
        scope = f"app {app}" + (f" campaign {campaign}" if campaign else "")
        raise SwitchboardError(f"no {period} budget for {scope}; `switchboard budgets list` shows them")
    (standing,) = await budgets.standings([budget])
    return standing


def _line(standing: Standing) -> str:
    budget = standing.budget
    spent = f"{standing.spent_micros / 1e6:g}/{budget.limit:g} {budget.currency}"
    remaining = f"remaining {standing.remaining_micros / 1e6:g}"
    return f"{budget.id:<32} {standing.window.key:<10} {spent:<22} {remaining:<18} {standing.state()}"


async def _audit(
    shell: Shell, action: str, budget: Budget, before: Budget | None, after: Budget | None
) -> None:
    await shell.audit(
        action, "budget", budget.id, app=budget.app,
        before=before.model_dump(mode="json") if before else None,
        after=after.model_dump(mode="json") if after else None,
    )


def _changing(action: Callable[[BudgetStore, Shell], Awaitable[T]]) -> T:
    """Run a change with Redis and the audit topic open; a broker that is down changes nothing."""
    from api.access_cli import audited_shell
    from state.budgets import BudgetStore
    from state.connection import open_redis

    async def run() -> T:
        settings = Settings()
        async with audited_shell(settings) as shell:
            redis = open_redis(settings.redis)
            try:
                return await action(BudgetStore(redis), shell)
            finally:
                await redis.aclose()

    return asyncio.run(run())


def _with_budgets(action: Callable[[BudgetStore], Awaitable[T]]) -> T:
    from state.budgets import BudgetStore
    from state.connection import open_redis

    async def run() -> T:
        redis = open_redis(Settings().redis)
        try:
            return await action(BudgetStore(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())

