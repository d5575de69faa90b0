"""Audit log (`audit:read`, over every app as the API asks): filters by actor, action (or its prefix),
target, app, outcome and period; newest first, a page at a time. The same query and reader as
`GET /v1/audit` (`api.audit.audit_page`)."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse

from analytics.audit_log import OUTCOMES, AuditLogMissing, AuditQueryError, audit_query
from api.analytics_reader import AnalyticsUnavailable
from api.audit import audit_page
from api.console.context import ConsolePage
from api.console.render import render
from api.console.session import console_principal
from api.deps import ApiDeps
from settings.permissions import Principal

PERMISSION = "audit:read"
PAGE_SIZE = 50
FILTERS = ("actor", "action", "target", "app", "outcome", "since", "until")
Filter = Annotated[str, Query(max_length=512)]


def shown(value: object) -> str:
    """A before/after value as compact JSON (secrets were masked when the record was written)."""
    return "" if value in (None, "", {}, []) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def audit_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter()
    Auditors = Annotated[Principal, Depends(console_principal(PERMISSION))]

    @router.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    async def audit(request: Request, principal: Auditors, actor: Filter = "", action: Filter = "",
                    target: Filter = "", app: Filter = "", outcome: Filter = "", since: Filter = "",
                    until: Filter = "", cursor: Annotated[str, Query(max_length=400)] = "") -> HTMLResponse:
        filters = {"actor": actor, "action": action, "target": target, "app": app, "outcome": outcome,
                   "since": since, "until": until}
        kept = {k: v for k, v in filters.items() if v}
        entries: list[dict[str, object]] = []
        next_link, error, problem = "", "", ""
        try:
            query = audit_query(actor=actor, action=action, target=target, app=app, outcome=outcome,
                                since=since or None, until=until or None, limit=PAGE_SIZE,
                                cursor=cursor or None)
        except AuditQueryError as exc:
            error, query = f"{exc.parameter}: {exc}", None
        if query is not None and deps.analytics is not None:
            try:
                page = await audit_page(deps.analytics, query)
            except AuditLogMissing as exc:
                problem = str(exc)
            except AnalyticsUnavailable:
                problem = "unavailable"
            else:
                entries = page.entries
                if page.next_cursor:
                    next_link = "/console/audit?" + urlencode({**kept, "cursor": page.next_cursor})
        elif deps.analytics is None:
            problem = "unavailable"
        return render(
            request, "audit/page.html", principal, entries=entries, filters=filters, outcomes=OUTCOMES,
            error=error, problem=problem, next_link=next_link, shown=shown,
            first_link="/console/audit?" + urlencode(kept) if cursor else "",
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT if error else status.HTTP_200_OK,
        )

    return router


PAGE = ConsolePage("audit", "/console/audit", PERMISSION, audit_router)
