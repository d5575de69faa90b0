"""Reports for an app: its funnel (`GET /v1/reports/funnel`) and the trace of one of its messages
(`GET /v1/messages/{id}/trace`). An app key reads its own app's (the default `app`); an operator reads
the apps it holds `statistics:read` on, naming one with `app` (or every app, with a grant over `*`)."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from analytics.funnel import DIMENSIONS, FunnelError, FunnelQuery, FunnelReport, funnel_query, funnel_report
from api.analytics_reader import AnalyticsUnavailable
from api.deps import Analytics, ApiDeps
from api.problems import Problem, invalid
from settings.permissions import ALL_APPS, Principal

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "ClickHouse is unreachable; retry later"}
}
_REFUSED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid credentials"},
    403: {"model": Problem, "description": "No statistics:read on the app (an app key: another app's)"},
}
_MOMENT = "`7d`, `12h`, `30m`, `2w` before now, a date (`2026-11-01`, midnight UTC) or an ISO time"


class FunnelLine(BaseModel):
    """One group (and interval): distinct messages per stage and outcome, and the sends' cost."""

    model_config = {"extra": "allow"}  # one key per grouped dimension, as asked for in `by`

    bucket: str | None = Field(default=None, description="Start of the interval (UTC), with `interval`")
    decided: int
    sent: int
    delivered: int
    opened: int = Field(description="Opened (email) or read (inbox, WeChat)")
    clicked: int
    converted: int
    failed: int
    suppressed: int
    capped: int
    cost: str = Field(description="Decimal, in the providers' cost unit")


class Funnel(BaseModel):
    """The funnel of the calling app over [since, until)."""

    since: str
    until: str
    by: list[str]
    app: str | None
    interval: str | None
    source: str = Field(description="`raw` or `rollup`")
    stages: list[str]
    rows: list[FunnelLine]


def reports_router(deps: ApiDeps, analytics: Analytics) -> APIRouter:
    router = APIRouter(tags=["reports"])
    caller = Depends(deps.access.requires("statistics:read"))
    tracer = analytics.tracer

    @router.get(
        "/v1/reports/funnel",
        summary="Reach and conversion funnel of the calling app",
        operation_id="funnel_report",
        response_model=Funnel,
        responses={**_UNAVAILABLE, **_REFUSED},
    )
    async def funnel(
        principal: Annotated[Principal, caller],
        by: Annotated[
            str | None,
            Query(description=f"Comma-separated dimensions: {', '.join(DIMENSIONS)}", max_length=200),
        ] = None,
        since: Annotated[
            str | None, Query(description=f"Start ({_MOMENT}); default 7d", max_length=40)
        ] = None,
        until: Annotated[
            str | None, Query(description=f"End ({_MOMENT}); default now", max_length=40)
        ] = None,
        report_app_name: Annotated[
            str | None,
            Query(alias="app", description="The app: an app key's own (the default); an operator's must hold "
                  "statistics:read on it (default: every app, for a grant over every app)", max_length=128),
        ] = None,
        interval: Annotated[str | None, Query(description="`day` or `hour`", max_length=10)] = None,
        source: Annotated[
            str | None,
            Query(
                description="`raw` (exact, 13 months) or `rollup` (daily, 5 years, within about 1 %); "
                "default: rollup only for a period starting before the raw rows are kept",
                max_length=10,
            ),
        ] = None,
    ) -> dict[str, Any]:
        app = report_app(deps, principal, report_app_name)
        try:
            query = funnel_query(
                since=since, until=until, by=by, app=app, interval=interval, source=source
            )
        except FunnelError as exc:
            raise invalid(("query", exc.parameter), str(exc)) from None
        try:
            report = await funnel_for(analytics, query)
        except AnalyticsUnavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), {"Retry-After": "5"}) from None
        return report.as_dict()

    @router.get(
        "/v1/messages/{message_id}/trace",
        summary="Everything that happened to one of the calling app's messages, and what is pending",
        operation_id="message_trace",
        responses={
            **_UNAVAILABLE, **_REFUSED, 404: {"model": Problem, "description": "No such message of this app"}
        },
    )
    async def trace(
        principal: Annotated[Principal, caller],
        message_id: Annotated[str, Path(min_length=1, max_length=256)],
        report_app_name: Annotated[
            str | None,
            Query(alias="app", description="The message's app, as for the funnel", max_length=128),
        ] = None,
    ) -> dict[str, Any]:
        app = report_app(deps, principal, report_app_name)
        try:
            found = await tracer.trace([message_id], app=app)
        except AnalyticsUnavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), {"Retry-After": "5"}) from None
        if not found:
            # The same answer whether the message is another app's or nobody's.
            of = f"app {app!r}" if app else "any app"
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id!r} of {of}")
        return found[0].as_dict()

    return router


async def funnel_for(analytics: Analytics, query: FunnelQuery) -> FunnelReport:
    """The funnel of `query`, off the event loop (the API's report and the console's pages);
    AnalyticsUnavailable when ClickHouse cannot answer."""
    return await asyncio.to_thread(analytics.reader.run, lambda client: funnel_report(client, query))


def report_app(deps: ApiDeps, principal: Principal, asked: str | None) -> str | None:
    """The app a report is about (None: every app); 403 unless the caller holds statistics:read on it."""
    if principal.kind == "app":
        if asked and asked != principal.name:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"app {principal.name!r} may not read app {asked!r}"
            )
        return principal.name
    if asked is None:
        scope = principal.apps_for("statistics:read")
        if ALL_APPS in scope:
            return None
        if len(scope) == 1:
            return next(iter(scope))
        raise invalid(("query", "app"), f"name the app: you read {', '.join(sorted(scope))}")
    deps.access.authorize(principal, "statistics:read", asked)
    return asked
