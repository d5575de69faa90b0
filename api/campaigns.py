"""Campaigns for operators: compose a message as on the send screen (targets, channels, time, steady
rate, strategy, priority, template), see its recipients and estimated cost, submit it as one event,
cancel it while scheduled or running, recall its inbox messages, read its reach and conversion.

`campaigns:read` lists and reads, `campaigns:manage` composes, submits, cancels and recalls, both on
the campaign's app (its id starts with it, so a request is authorised before anything is looked up);
submitting sends, so it also takes `events:send` on the app, and approval policies apply to the event
exactly as to any other. Every change is an audit record (`campaign.create`, `.submit`, `.cancel`,
`.recall`).
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field

from analytics.campaign_report import campaign_report
from api import campaign_flow as flow
from api.analytics_reader import AnalyticsUnavailable
from api.campaign_service import CampaignDesk, estimate
from api.deps import ApiDeps
from api.problems import Problem
from settings.permissions import Principal
from state.campaigns import CAMPAIGN_STATES, CampaignState, Cancellation, Composition

_ID = r"^[A-Za-z0-9_.:\-]{1,160}$"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid credentials"},
    403: {"model": Problem, "description": "Lacks the permission on the campaign's app"},
}
_ONE: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": Problem, "description": "No such campaign"},
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    **_ONE,
    409: {"model": Problem, "description": "Not possible in the campaign's state (named)"},
}


class EstimateView(BaseModel):
    """Recipients and estimated cost of a composition."""

    recipients: int | None = Field(description="None: an unknown segment, an expired or unknown upload")
    exact: bool = Field(description="False: an upper bound (several tags)")
    counted: str
    channels: list[str] | None
    per_message: dict[str, float] = Field(description="Cost of one message per channel (SMS: its segments)")
    sms_segments: int | None
    cost: float | None = Field(description="recipients x the chosen channels' per-message cost")
    note: str


class CampaignView(BaseModel):
    """A campaign, its state, and its progress from the analytics (None when they cannot be read)."""

    id: str
    app: str
    name: str
    state: CampaignState
    composition: Composition
    created_by: str
    created_at: datetime
    submitted_by: str | None
    submitted_at: datetime | None
    cancelled: Cancellation | None
    recalled_by: str | None
    recalled_at: datetime | None
    recalled: int
    event_id: str
    recipients: int | None = None
    progress: dict[str, int] | None = Field(
        None, description="Distinct messages sent, delivered, read, failed, cancelled, and settled"
    )
    estimate: EstimateView | None = None


class Recalled(BaseModel):
    """How many inbox messages were taken back."""

    campaign: str
    recalled: int
    cancelled: bool = Field(description="Whether the recall also cancelled the campaign (it was running)")


def campaigns_router(deps: ApiDeps, desk: CampaignDesk) -> APIRouter:
    router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=_ERRORS)
    Reader = Annotated[Principal, Depends(deps.access.requires("campaigns:read"))]
    Manager = Annotated[Principal, Depends(deps.access.requires("campaigns:manage"))]
    CampaignId = Annotated[str, Path(pattern=_ID, description="`<app>.c<hex>`")]

    @router.post(
        "/estimate", response_model=EstimateView, summary="Recipients and cost of an unsaved composition"
    )
    async def estimate_composition(composition: Composition, principal: Manager) -> dict[str, Any]:
        deps.access.authorize(principal, "campaigns:manage", composition.app)
        channels = await flow.app_channels(deps, composition.app)
        return (await estimate(desk, composition, channels)).as_dict()

    @router.post(
        "", status_code=status.HTTP_201_CREATED, response_model=CampaignView, summary="Compose a draft"
    )
    async def create_campaign(
        request: Request, composition: Composition, principal: Manager
    ) -> dict[str, Any]:
        campaign = await flow.create(deps, desk, request, principal, composition)
        return await flow.view(deps, desk, campaign, with_estimate=True)

    @router.get("", response_model=list[CampaignView], summary="Campaigns the caller may read, with progress")
    async def list_campaigns(
        principal: Reader,
        app: Annotated[str | None, Query(pattern=_ID)] = None,
        state: Annotated[CampaignState | None, Query(description=", ".join(CAMPAIGN_STATES))] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        return await flow.listing(deps, desk, principal, app, state, limit)

    @router.get(
        "/{campaign_id}",
        response_model=CampaignView,
        summary="One campaign: recipients, cost, progress",
        responses=_ONE,
    )
    async def show_campaign(principal: Reader, campaign_id: CampaignId) -> dict[str, Any]:
        campaign = await flow.found(deps, desk, principal, "campaigns:read", campaign_id)
        progress = await flow.read_progress(deps, [campaign])
        return await flow.view(deps, desk, campaign, progress=progress, with_estimate=True)

    @router.post(
        "/{campaign_id}/submit",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=CampaignView,
        summary="Send it: publish the campaign's event",
        responses=_CONFLICT,
    )
    async def submit_campaign(
        request: Request, principal: Manager, campaign_id: CampaignId
    ) -> dict[str, Any]:
        before = await flow.found(deps, desk, principal, "campaigns:manage", campaign_id)
        after = await flow.submit(deps, desk, request, principal, before)
        return await flow.view(deps, desk, after)

    @router.post(
        "/{campaign_id}/cancel",
        response_model=CampaignView,
        summary="Stop what is not sent yet",
        responses=_CONFLICT,
    )
    async def cancel_campaign(
        request: Request, principal: Manager, campaign_id: CampaignId
    ) -> dict[str, Any]:
        before = await flow.found(deps, desk, principal, "campaigns:manage", campaign_id)
        after = await flow.cancel(deps, desk, request, principal, before)
        return await flow.view(deps, desk, after)

    @router.post(
        "/{campaign_id}/recall",
        response_model=Recalled,
        summary="Take its inbox messages back (撤回)",
        responses=_CONFLICT,
    )
    async def recall_campaign(
        request: Request, principal: Manager, campaign_id: CampaignId
    ) -> dict[str, Any]:
        before = await flow.found(deps, desk, principal, "campaigns:manage", campaign_id)
        done = await flow.recalled(deps, desk, request, principal, before)
        return {"campaign": done.campaign.id, "recalled": done.count, "cancelled": done.cancelled is not None}

    @router.get(
        "/{campaign_id}/report",
        summary="Reach and conversion per channel, from the analytics",
        responses={**_ONE, 503: {"model": Problem, "description": "ClickHouse is unreachable; retry"}},
    )
    async def report_campaign(principal: Reader, campaign_id: CampaignId) -> dict[str, Any]:
        campaign = await flow.found(deps, desk, principal, "campaigns:read", campaign_id)
        if deps.analytics is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no analytics configured")
        reader = deps.analytics.reader
        try:
            report = await asyncio.to_thread(
                reader.run,
                lambda client: campaign_report(client, campaign.app, campaign.id, campaign.created_at),
            )
        except AnalyticsUnavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), {"Retry-After": "5"}) from None
        return {"campaign": campaign.id, "app": campaign.app, "name": campaign.name, **report.as_dict()}

    return router
