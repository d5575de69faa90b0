"""The Analytics page: the funnel reports by channel, app, template, rule, campaign and variant (the
same query and app scoping as `GET /v1/reports/funnel`), with a chart, the A/B results of a rule's
variants (`switchboard report variants`), and each as CSV exactly as shown.

`statistics:read` on the app reported (an operator over every app may report all apps together); the
variant report reads every app's messages decided by the rule, so it needs `statistics:read` on every
app."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from analytics.funnel import DIMENSIONS, STAGES, FunnelError, FunnelReport, funnel_query
from analytics.funnel_output import as_csv as funnel_csv
from analytics.funnel_output import group_label
from analytics.variants import VariantReport, parse_since, variant_report
from analytics.variants import as_csv as variants_csv
from api.analytics_reader import AnalyticsUnavailable
from api.console.context import ConsolePage
from api.console.pages.analytics_charts import FunnelBars, VariantRate, funnel_chart, variant_chart
from api.console.pages.unserved import unserved_router
from api.console.render import render
from api.console.session import authorize, console_principal
from api.deps import ApiDeps
from api.reports import funnel_for, report_app
from settings.permissions import ALL_APPS, Principal

Reader = Annotated[Principal, Depends(console_principal("statistics:read"))]
Text = Annotated[str, Query(max_length=40)]
Rule = Annotated[str, Query(max_length=128)]


def analytics_router(deps: ApiDeps) -> APIRouter:
    if deps.analytics is None:
        return unserved_router("/analytics", "statistics:read", "reports")
    router = APIRouter(prefix="/analytics", include_in_schema=False)
    analytics = deps.analytics

    async def funnel(request: Request, principal: Principal, by: str, since: str, until: str, app: str,
                     interval: str) -> tuple[FunnelReport | None, str]:
        """The report, or None and the error to show beside the form (the API's own messages). An
        operator of several apps (not every app) who names none sees the first, as the form shows it."""
        scoped = sorted(principal.apps_for("statistics:read") - {ALL_APPS})
        if not app and scoped and not principal.allows("statistics:read", ALL_APPS):
            app = scoped[0]
        try:
            scope = report_app(deps, principal, app or None)
        except HTTPException as exc:
            if exc.status_code == 403:
                authorize(request, principal, "statistics:read", app)  # the 403 page, naming the app
            return None, str(exc.detail)
        try:
            query = funnel_query(since=since or None, until=until or None, by=by, app=scope,
                                 interval=interval or None)
        except FunnelError as exc:
            return None, str(exc)
        try:
            return await funnel_for(analytics, query), ""
        except AnalyticsUnavailable as exc:
            return None, str(exc)

    @router.get("")
    async def page(request: Request, principal: Reader, by: Text = "channel", since: Text = "7d",
                   until: Text = "", app: Text = "", interval: Text = "") -> Response:
        report, error = await funnel(request, principal, by, since, until, app, interval)
        chart = funnel_chart(_bars(report), STAGES, f"funnel by {by}") if report is not None else None
        return render(request, "analytics/page.html", principal, report=report, error=error, chart=chart,
                      rows=report.as_records() if report is not None else [], dimensions=DIMENSIONS,
                      stages=STAGES, outcomes=("failed", "suppressed", "capped"),
                      query={"by": by, "since": since, "until": until, "app": app, "interval": interval},
                      apps=sorted(principal.apps_for("statistics:read") - {ALL_APPS}),
                      every_app=principal.allows("statistics:read", ALL_APPS),
                      status_code=422 if error else 200)

    @router.get("/funnel.csv")
    async def funnel_export(request: Request, principal: Reader, by: Text = "channel", since: Text = "7d",
                            until: Text = "", app: Text = "", interval: Text = "") -> Response:
        report, error = await funnel(request, principal, by, since, until, app, interval)
        if report is None:
            return Response(error + "\n", status_code=422, media_type="text/plain; charset=utf-8")
        return _csv(funnel_csv(report), f"funnel-{by.replace(',', '-') or 'all'}.csv")

    async def variants(request: Request, principal: Principal, rule: str,
                       since: str) -> tuple[VariantReport | None, str]:
        authorize(request, principal, "statistics:read", ALL_APPS)
        if not rule:
            return None, ""
        try:
            start = parse_since(since or "30d", datetime.now(UTC))
        except ValueError as exc:
            return None, f"since: {exc}"
        try:
            return await asyncio.to_thread(analytics.reader.run, lambda c: variant_report(c, rule, start)), ""
        except AnalyticsUnavailable as exc:
            return None, str(exc)

    @router.get("/variants")
    async def variants_page(request: Request, principal: Reader, rule: Rule = "",
                            since: Text = "30d") -> Response:
        report, error = await variants(request, principal, rule, since)
        chart = None
        if report is not None:
            chart = variant_chart([VariantRate(line.variant, line.rate, line.rate_low, line.rate_high,
                                               line.variant == report.baseline) for line in report.lines],
                                  f"conversion of rule {rule}")
        return render(request, "analytics/variants.html", principal, report=report, error=error, chart=chart,
                      rule=rule, since=since, status_code=422 if error else 200)

    @router.get("/variants.csv")
    async def variants_export(request: Request, principal: Reader,
                              rule: Rule = "", since: Text = "30d") -> Response:
        report, error = await variants(request, principal, rule, since)
        if report is None:
            return Response((error or "rule: name the rule") + "\n", status_code=422,
                            media_type="text/plain; charset=utf-8")
        return _csv(variants_csv(report), f"variants-{rule}.csv")

    return router


def _bars(report: FunnelReport) -> list[FunnelBars]:
    """The chart's groups: one per group of the report, intervals summed."""
    totals: dict[str, list[int]] = {}
    for row in report.rows:
        counts = totals.setdefault(group_label(report, row), [0] * len(STAGES))
        for i, stage in enumerate(STAGES):
            counts[i] += int(getattr(row, stage))
    return [FunnelBars(label, counts) for label, counts in totals.items()]


def _csv(text: str, filename: str) -> Response:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{safe}"',
                             "Cache-Control": "no-store"})


PAGE = ConsolePage("analytics", "/console/analytics", "statistics:read", analytics_router)
