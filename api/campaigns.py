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
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field

from analytics.campaign_report import campaign_progress, campaign_report
from api.access import audit_record
from api.analytics_reader import AnalyticsUnavailable
from api.campaign_service import (
    CampaignDesk,
    CampaignStateError,
    estimate,
    mark_cancelled,
    recall,
    submitted,
)
from api.deps import ApiDeps
from api.events import _authorise, _checked, _key, _signed, _signing_key
from api.problems import Problem, invalid
from records.topics import lane_of
from settings.permissions import ALL_APPS, Principal
from state.audience_count import recipient_count
from state.campaigns import (
    CAMPAIGN_STATES,
    Campaign,
    CampaignState,
    Cancellation,
    Composition,
    app_of,
    new_campaign_id,
)

_T = TypeVar("_T")
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
    store = desk.store

    async def found(principal: Principal, permission: str, campaign_id: str) -> Campaign:
        app = app_of(campaign_id)
        if app is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{campaign_id!r} is not a campaign id")
        deps.access.authorize(principal, permission, app)
        campaign = await store.get(campaign_id)
        if campaign is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no campaign {campaign_id!r}")
        return campaign

    async def app_channels(app: str) -> frozenset[str]:
        known = await deps.apps.get(app)
        return known.channels if known is not None else frozenset()

    async def audit(
        request: Request,
        principal: Principal,
        action: str,
        before: Campaign | None,
        after: Campaign,
        reason: str = "",
    ) -> None:
        await deps.publisher.publish_audit(
            audit_record(
                request,
                principal,
                action,
                target_kind="campaign",
                target=after.id,
                app=after.app,
                reason=reason,
                before=before.model_dump(mode="json") if before is not None else None,
                after=after.model_dump(mode="json"),
            )
        )

    def who(principal: Principal) -> str:
        return f"{principal.kind}:{principal.name}"

    @router.post(
        "/estimate", response_model=EstimateView, summary="Recipients and cost of an unsaved composition"
    )
    async def estimate_composition(composition: Composition, principal: Manager) -> dict[str, Any]:
        deps.access.authorize(principal, "campaigns:manage", composition.app)
        return (await estimate(desk, composition, await app_channels(composition.app))).as_dict()

    @router.post(
        "", status_code=status.HTTP_201_CREATED, response_model=CampaignView, summary="Compose a draft"
    )
    async def create_campaign(
        request: Request, composition: Composition, principal: Manager
    ) -> dict[str, Any]:
        deps.access.authorize(principal, "campaigns:manage", composition.app)
        if await deps.apps.get(composition.app) is None:
            raise invalid(("body", "app"), f"no app named {composition.app!r} is registered", "unknown_app")
        campaign_id = new_campaign_id(composition.app)
        # The checks submit makes, now: an unknown template or segment, a missing variable (422).
        await _checked(deps, [composition.event(campaign_id, "")], ("body",))
        campaign = Campaign(
            id=campaign_id,
            app=composition.app,
            name=composition.name,
            composition=composition,
            created_by=f"{principal.kind}:{principal.name}",
            created_at=datetime.now(UTC),
        )
        await store.create(campaign)
        await audit(request, principal, "campaign.create", None, campaign)
        return await view(campaign, with_estimate=True)

    @router.get("", response_model=list[CampaignView], summary="Campaigns the caller may read, with progress")
    async def list_campaigns(
        principal: Reader,
        app: Annotated[str | None, Query(pattern=_ID)] = None,
        state: Annotated[CampaignState | None, Query(description=", ".join(CAMPAIGN_STATES))] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        if app is not None:
            deps.access.authorize(principal, "campaigns:read", app)
        readable = principal.apps_for("campaigns:read")
        apps = {app} if app is not None else None if ALL_APPS in readable else set(readable)
        campaigns = await store.listing(apps, limit=limit if state is None else 10_000)
        progress = await read_progress(campaigns)
        views = [await view(c, progress=progress) for c in campaigns]
        return [v for v in views if state is None or v["state"] == state][:limit]

    @router.get(
        "/{campaign_id}",
        response_model=CampaignView,
        summary="One campaign: recipients, cost, progress",
        responses=_ONE,
    )
    async def show_campaign(principal: Reader, campaign_id: CampaignId) -> dict[str, Any]:
        campaign = await found(principal, "campaigns:read", campaign_id)
        return await view(campaign, progress=await read_progress([campaign]), with_estimate=True)

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
        before = await found(principal, "campaigns:manage", campaign_id)
        if before.state != "draft":
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"campaign {campaign_id!r} is {before.state}, not a draft"
            )
        event = before.event(who(principal))
        app = await _authorise(deps, event, principal, ("body",))
        signing_key = await _signing_key(deps, app)
        [record] = await _checked(deps, [event], ("body",))
        signed = _signed(record, signing_key)

        async def publish() -> None:
            await deps.publisher.publish_event(_key(event), record, lane_of(event), signed)

        after = await conflicts(submitted(store, before, who(principal), publish))
        await audit(request, principal, "campaign.submit", before, after)
        return await view(after)

    @router.post(
        "/{campaign_id}/cancel",
        response_model=CampaignView,
        summary="Stop what is not sent yet",
        responses=_CONFLICT,
    )
    async def cancel_campaign(
        request: Request, principal: Manager, campaign_id: CampaignId
    ) -> dict[str, Any]:
        before = await found(principal, "campaigns:manage", campaign_id)
        after = await conflicts(mark_cancelled(store, before, who(principal)))
        reason = after.cancelled.reason if after.cancelled else ""
        await audit(request, principal, "campaign.cancel", before, after, reason)
        return await view(after)

    @router.post(
        "/{campaign_id}/recall",
        response_model=Recalled,
        summary="Take its inbox messages back (撤回)",
        responses=_CONFLICT,
    )
    async def recall_campaign(
        request: Request, principal: Manager, campaign_id: CampaignId
    ) -> dict[str, Any]:
        before = await found(principal, "campaigns:manage", campaign_id)
        done = await conflicts(recall(desk, before, who(principal), deps.publisher.publish_receipt))
        if done.cancelled is not None:  # it was still sending: the recall stopped it first
            why = "cancelled by its recall"
            await audit(request, principal, "campaign.cancel", before, done.cancelled, why)
        current = done.cancelled or before
        reason = f"{done.count} inbox messages recalled"
        await audit(request, principal, "campaign.recall", current, done.campaign, reason)
        return {"campaign": done.campaign.id, "recalled": done.count, "cancelled": done.cancelled is not None}

    @router.get(
        "/{campaign_id}/report",
        summary="Reach and conversion per channel, from the analytics",
        responses={**_ONE, 503: {"model": Problem, "description": "ClickHouse is unreachable; retry"}},
    )
    async def report_campaign(principal: Reader, campaign_id: CampaignId) -> dict[str, Any]:
        campaign = await found(principal, "campaigns:read", campaign_id)
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

    async def read_progress(campaigns: list[Campaign]) -> dict[str, dict[str, int]] | None:
        """Progress of the submitted ones; None when the analytics cannot be read (the list still answers)."""
        submitted = [c for c in campaigns if c.submitted_at is not None]
        if deps.analytics is None:
            return None
        if not submitted:
            return {}
        since = min(c.created_at for c in submitted)
        pairs = [(c.app, c.id) for c in submitted]
        try:
            return await asyncio.to_thread(
                deps.analytics.reader.run, lambda client: campaign_progress(client, pairs, since)
            )
        except AnalyticsUnavailable:
            return None

    async def view(
        campaign: Campaign, progress: dict[str, dict[str, int]] | None = None, with_estimate: bool = False
    ) -> dict[str, Any]:
        shown = campaign.model_dump() | {"event_id": campaign.event_id}
        counted = await recipient_count(desk.redis, campaign.composition.audience)
        shown["recipients"] = counted.count
        if progress is not None and campaign.submitted_at is not None:
            shown["progress"] = progress.get(campaign.id, {})
        shown["state"] = _state(campaign, counted.count, shown.get("progress"))
        if shown["state"] == "done" and campaign.state != "done":
            # Remembered, so cancel and recall (which read no analytics) know it too; lost to a
            # concurrent change, it is derived again next time.
            await store.replace(campaign, campaign.model_copy(update={"state": "done"}))
        if with_estimate:
            composed = campaign.composition
            shown["estimate"] = (await estimate(desk, composed, await app_channels(composed.app))).as_dict()
        return shown

    return router


def _state(campaign: Campaign, recipients: int | None, progress: dict[str, int] | None) -> CampaignState:
    """Scheduled until its send_at, running until every recipient's message is settled, then done."""
    if campaign.state not in ("scheduled", "running"):
        return campaign.state
    send_at = campaign.composition.send_at
    if send_at is not None and send_at > datetime.now(UTC):
        return "scheduled"
    if recipients and progress and progress.get("settled", 0) >= recipients:
        return "done"
    return "running"


async def conflicts(change: Awaitable[_T]) -> _T:
    """The change, or 409 naming why the campaign's state does not allow it."""
    try:
        return await change
    except CampaignStateError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
