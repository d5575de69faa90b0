"""`GET /v1/audit`: the audit log for auditors (`audit:read`), newest first, filtered and paged, read from
ClickHouse `audit_log` through the analytics reader as the reports are."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field, JsonValue

from analytics import audit_log
from analytics.audit_log import (
    MAX_LIMIT,
    AuditLogMissing,
    AuditQuery,
    AuditQueryError,
    audit_query,
    read_audit,
)
from api.analytics_reader import AnalyticsUnavailable
from api.deps import Analytics, ApiDeps
from api.problems import Problem, invalid
from settings.permissions import Principal

_MOMENT = "`7d`, `12h`, `30m`, `2w` before now, a date (`2026-11-01`, midnight UTC) or an ISO time"


class AuditEntry(BaseModel):
    """One action: who, when, from where, what, to what, the outcome, and the state before and after
    (secrets masked)."""

    audit_id: str
    at: str = Field(description="ISO time, UTC")
    actor: str
    actor_kind: str
    source: str = Field(description="The client address of an API call, `cli` for the command line")
    action: str = Field(description="`module.verb`, e.g. `app.rotate_key`, `dead_letter.replay`")
    target_kind: str
    target: str
    app: str
    outcome: str = Field(description="`ok`, `denied` or `failed`")
    reason: str
    before: JsonValue
    after: JsonValue


class AuditPage(BaseModel):
    """A page of the log, newest first; pass `next_cursor` as `cursor` for the next (None: last page)."""

    entries: list[AuditEntry]
    next_cursor: str | None


def audit_router(deps: ApiDeps, analytics: Analytics) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["audit"])

    @router.get(
        "/audit",
        summary="The audit log, newest first",
        operation_id="audit_log",
        response_model=AuditPage,
        responses={
            401: {"model": Problem, "description": "Missing or invalid credentials"},
            403: {"model": Problem, "description": "Without `audit:read` over every app"},
            503: {"model": Problem, "description": "ClickHouse is unreachable or has no audit log yet"},
        },
    )
    async def audit_log(
        _: Annotated[Principal, Depends(deps.access.requires("audit:read"))],
        actor: Annotated[str | None, Query(description="Who acted", max_length=256)] = None,
        action: Annotated[
            str | None, Query(description="An action or its prefix (`app.`)", max_length=128)
        ] = None,
        target: Annotated[str | None, Query(description="What was acted on", max_length=512)] = None,
        app: Annotated[str | None, Query(description="One app's entries", max_length=128)] = None,
        outcome: Annotated[str | None, Query(description="`ok`, `denied` or `failed`", max_length=10)] = None,
        since: Annotated[str | None, Query(description=f"Start ({_MOMENT})", max_length=40)] = None,
        until: Annotated[
            str | None, Query(description=f"End ({_MOMENT}); default now", max_length=40)
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Entries per page")] = 100,
        cursor: Annotated[
            str | None, Query(description="`next_cursor` of the previous page", max_length=400)
        ] = None,
    ) -> dict[str, Any]:
        try:
            query = audit_query(
                actor=actor,
                action=action,
                target=target,
                app=app,
                outcome=outcome,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        except AuditQueryError as exc:
            raise invalid(("query", exc.parameter), str(exc)) from None
        try:
            page = await audit_page(analytics, query)
        except (AnalyticsUnavailable, AuditLogMissing) as exc:
            detail = str(exc) if isinstance(exc, AuditLogMissing) else "analytics unavailable, retry later"
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, {"Retry-After": "5"}) from None
        return {"entries": page.entries, "next_cursor": page.next_cursor}

    return router


async def audit_page(analytics: Analytics, query: AuditQuery) -> audit_log.AuditPage:
    """A page of the log (`GET /v1/audit` and the console's Audit log), off the event loop;
    AnalyticsUnavailable or AuditLogMissing when ClickHouse cannot answer it."""
    return await asyncio.to_thread(analytics.reader.run, lambda client: read_audit(client, query))
