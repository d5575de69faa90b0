"""Budgets for operators: set, list, show and remove an app's or a campaign's budget per period, each
with what its current period has spent. Reading takes `budgets:read`, changing `budgets:manage`, both on
the budget's app; every change is an audit record (`budget.set`, `budget.remove`)."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.access import audit_record
from api.deps import ApiDeps
from api.problems import Problem, invalid
from records.vocabulary import Name
from settings.permissions import ALL_APPS, Principal
from state.budgets import DEFAULT_TIMEZONE, MICROS, Budget, BudgetStore, Period, Standing

_NAME = r"^[A-Za-z0-9_.:\-]{1,128}$"


class BudgetRequest(BaseModel):
    """A budget to create or replace (one per app, campaign and period)."""

    model_config = ConfigDict(extra="forbid")

    app: Name
    campaign: Name | None = Field(None, description="Only this campaign of the app; omit for all it sends")
    period: Period = Field(description="day, week, month (calendar periods in `timezone`) or total")
    limit: float = Field(gt=0, le=1e12, description="In the providers' cost unit (cost_per_message)")
    currency: str = Field("CNY", min_length=1, max_length=16, pattern=r"^[A-Za-z]+$")
    warn_at: float = Field(0.8, gt=0, le=1, description="Share of the limit from which it is `near`")
    timezone: str = Field(DEFAULT_TIMEZONE, max_length=64, description="IANA name, e.g. Asia/Shanghai")


class BudgetStanding(BaseModel):
    """A budget and its current period: spent, remaining and state (ok, near, over)."""

    id: str
    app: str
    campaign: str | None
    period: Period
    limit: float
    limit_micros: int
    currency: str
    warn_at: float
    timezone: str
    period_key: str
    period_start: str | None
    period_end: str | None
    spent: float
    remaining: float
    state: str


def budgets_router(deps: ApiDeps, budgets: BudgetStore) -> APIRouter:
    router = APIRouter(
        prefix="/v1/budgets",
        tags=["budgets"],
        responses={
            401: {"model": Problem, "description": "Missing or invalid credentials"},
            403: {"model": Problem, "description": "Lacks the permission on the budget's app"},
        },
    )
    Reader = Annotated[Principal, Depends(deps.access.requires("budgets:read"))]
    Manager = Annotated[Principal, Depends(deps.access.requires("budgets:manage"))]
    App = Annotated[str, Path(pattern=_NAME)]
    Campaign = Annotated[str | None, Query(pattern=_NAME, description="The campaign; omit for the app's")]

    @router.get("", response_model=list[BudgetStanding], summary="Budgets the caller may read, with spending")
    async def list_budgets(
        principal: Reader,
        app: Annotated[str | None, Query(pattern=_NAME)] = None,
        campaign: Campaign = None,
    ) -> list[dict[str, Any]]:
        if app is not None:
            deps.access.authorize(principal, "budgets:read", app)
        readable = principal.apps_for("budgets:read")
        chosen = [
            b for b in await budgets.all()
            if (ALL_APPS in readable or b.app in readable)
            and (app is None or b.app == app)
            and (campaign is None or b.campaign == campaign)
        ]
        return [s.as_dict() for s in await budgets.standings(chosen)]

    @router.put("", response_model=BudgetStanding, summary="Create or replace a budget")
    async def set_budget(request: Request, body: BudgetRequest, principal: Manager) -> dict[str, Any]:
        deps.access.authorize(principal, "budgets:manage", body.app)
        try:
            budget = Budget(
                app=body.app, campaign=body.campaign, period=body.period,
                limit_micros=round(body.limit * MICROS), currency=body.currency.upper(),
                warn_at=body.warn_at, timezone=body.timezone,
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else "body"
            raise invalid(("body", field), str(error["msg"]).removeprefix("Value error, ")) from None
        before = await budgets.set(budget)
        (standing,) = await budgets.standings([budget])
        await _audit(deps, request, principal, "budget.set", budget, before, standing)
        return standing.as_dict()

    @router.get(
        "/{app}/{period}", response_model=BudgetStanding, summary="One budget and its current period",
        responses={404: {"model": Problem, "description": "No such budget"}},
    )
    async def show_budget(
        principal: Reader, app: App, period: Period, campaign: Campaign = None
    ) -> dict[str, Any]:
        deps.access.authorize(principal, "budgets:read", app)
        budget = await _found(budgets, app, campaign, period)
        (standing,) = await budgets.standings([budget])
        return standing.as_dict()

    @router.delete(
        "/{app}/{period}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a budget",
        responses={404: {"model": Problem, "description": "No such budget"}},
    )
    async def remove_budget(
        request: Request, principal: Manager, app: App, period: Period, campaign: Campaign = None
    ) -> None:
        deps.access.authorize(principal, "budgets:manage", app)
        budget = await _found(budgets, app, campaign, period)
        (standing,) = await budgets.standings([budget])
        await budgets.remove(app, campaign, period)
        await _audit(deps, request, principal, "budget.remove", budget, budget, None, standing)

    return router


async def _found(budgets: BudgetStore, app: str, campaign: str | None, period: str) -> Budget:
    budget = await budgets.get(app, campaign, period)
    if budget is None:
        scope = f"app {app!r}" + (f" campaign {campaign!r}" if campaign else "")
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {period} budget for {scope}")
    return budget


async def _audit(
    deps: ApiDeps,
    request: Request,
    principal: Principal,
    action: str,
    budget: Budget,
    before: Budget | None,
    after: Standing | None,
    spent: Standing | None = None,
) -> None:
    """One audit record; `spent` (on removal) says what the removed budget's period had spent."""
    reason = f"its {spent.window.key} period had spent {spent.spent_micros / MICROS:g}" if spent else ""
    await deps.publisher.publish_audit(
        audit_record(
            request, principal, action, target_kind="budget", target=budget.id, app=budget.app, reason=reason,
            before=before.model_dump(mode="json") if before is not None else None,
            after=after.budget.model_dump(mode="json") if after is not None else None,
        )
    )
