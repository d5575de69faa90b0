"""Overview (`statistics:read`): today's and this week's reach, delivery, opens and reads, clicks,
conversions and failures by channel, as charts; the alerts firing now; each stage's lag.

The numbers are the funnel report's (`api.reports.funnel_for`, the query `GET /v1/reports/funnel`
runs), for the app the operator may read (`api.reports.report_app`, the same check).
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from analytics.funnel import FunnelQuery, FunnelReport
from api.analytics_reader import AnalyticsUnavailable
from api.console.charts import grouped_bar_chart
from api.console.context import ConsolePage
from api.console.i18n import translator
from api.console.render import render
from api.console.session import ConsoleForbidden, console_principal
from api.deps import ApiDeps
from api.reports import funnel_for, report_app
from settings.permissions import ALL_APPS, Principal

PERMISSION = "statistics:read"
STAGES = ("sent", "delivered", "opened", "clicked", "converted", "failed")


@dataclass(frozen=True)
class Period:
    """One period of the overview: its name, its totals per stage, a chart by channel."""

    name: str
    since: datetime
    totals: dict[str, int]
    chart: Markup
    channels: list[dict[str, object]]


def periods(now: datetime) -> dict[str, datetime]:
    """Today and this week (from Monday), in UTC, as the funnel's stored times are."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"today": today, "week": today - timedelta(days=today.weekday())}


def period_of(name: str, report: FunnelReport, words: dict[str, str]) -> Period:
    records = report.as_records()
    totals = {stage: sum(int(record[stage]) for record in records) for stage in STAGES}
    groups = [(str(record["channel"]) or "–", [float(record[stage]) for stage in STAGES])
              for record in records]
    chart = grouped_bar_chart(groups, [words[stage] for stage in STAGES], title=words[name])
    return Period(name, report.query.since, totals, chart, records)


def overview_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter()
    Readers = Annotated[Principal, Depends(console_principal(PERMISSION))]

    @router.get("/overview", response_class=HTMLResponse, include_in_schema=False)
    async def overview(request: Request, principal: Readers,
                       app: Annotated[str | None, Query(max_length=128)] = None) -> HTMLResponse:
        scope = principal.apps_for(PERMISSION)
        choices = [] if ALL_APPS in scope else sorted(scope)
        asked = app or (choices[0] if choices else None)
        try:
            chosen = report_app(deps, principal, asked)
        except HTTPException:
            raise ConsoleForbidden(principal, PERMISSION, asked) from None
        locale = request.state.operator.locale
        t = translator("overview", locale)
        words = {key: t(key) for key in (*STAGES, "today", "week")}
        shown: list[Period] = []
        unavailable = deps.analytics is None
        if deps.analytics is not None:
            try:
                for name, since in periods(datetime.now(UTC)).items():
                    query = FunnelQuery(since=since, until=datetime.now(UTC), by=("channel",), app=chosen)
                    shown.append(period_of(name, await funnel_for(deps.analytics, query), words))
            except AnalyticsUnavailable:
                unavailable, shown = True, []
        firing = await deps.watch.incidents.firing() if deps.watch is not None else {}
        alerts = sorted((*key.split("|", 1), number) for key, number in firing.items())
        lag = await deps.watch.lag.by_stage() if deps.watch is not None else {}
        return render(
            request, "overview/page.html", principal, periods=shown, stages=STAGES, app=chosen,
            apps=choices, unavailable=unavailable,
            alerts=alerts,
            lag=sorted(lag.items()),
        )

    return router


PAGE = ConsolePage("overview", "/console/overview", PERMISSION, overview_router)
