"""Reports for an app: its funnel (`GET /v1/reports/funnel`) and the trace of one of its messages
(`GET /v1/messages/{id}/trace`). There are no operator accounts yet, so both take an app key and show
that app's messages only."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from analytics.funnel import DIMENSIONS, FunnelError, FunnelReport, funnel_query, funnel_report
from api.analytics_reader import AnalyticsUnavailable
from api.auth import authenticated_app
from api.deps import Analytics, ApiDeps
from api.problems import Problem, invalid
from state.apps import App

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "ClickHouse is unreachable; retry later"}
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
    caller = Depends(authenticated_app(deps.apps))
    reader, tracer = analytics.reader, analytics.tracer

    @router.get(
        "/v1/reports/funnel",
        summary="Reach and conversion funnel of the calling app",
        operation_id="funnel_report",
        response_model=Funnel,
        responses={**_UNAVAILABLE, 403: {"model": Problem, "description": "Another app's report"}},
    )
    async def funnel(
        app: Annotated[App, caller],
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
        report_app: Annotated[
            str | None,
            Query(alias="app", description="Must be the calling app (the default)", max_length=128),
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
        if report_app and report_app != app.name:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"app {app.name!r} may not read app {report_app!r}"
            )
        try:
            query = funnel_query(
                since=since, until=until, by=by, app=app.name, interval=interval, source=source
            )
        except FunnelError as exc:
            raise invalid(("query", exc.parameter), str(exc)) from None
        report: FunnelReport = await _run(lambda: reader.run(lambda client: funnel_report(client, query)))
        return report.as_dict()

    @router.get(
        "/v1/messages/{message_id}/trace",
        summary="Everything that happened to one of the calling app's messages, and what is pending",
        operation_id="message_trace",
        responses={**_UNAVAILABLE, 404: {"model": Problem, "description": "No such message of this app"}},
    )
    async def trace(
        app: Annotated[App, caller], message_id: Annotated[str, Path(min_length=1, max_length=256)]
    ) -> dict[str, Any]:
        try:
            found = await tracer.trace([message_id], app=app.name)
        except AnalyticsUnavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), {"Retry-After": "5"}) from None
        if not found:
            # The same answer whether the message is another app's or nobody's.
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id!r} of app {app.name!r}")
        return found[0].as_dict()

    return router


async def _run(work: Any) -> Any:
    try:
        return await asyncio.to_thread(work)
    except AnalyticsUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), {"Retry-After": "5"}) from None
