"""What an operator does with a campaign, for the campaigns API and the console alike: find it (authorised
on its app first), create a draft, submit, cancel and recall it (each audited as `campaign.<action>`),
and show it with its recipients, state, progress and estimate. Refusals are HTTP exceptions (404, 409,
422 naming the field), which the API answers as they are and the console shows next to the form."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import HTTPException, Request, status

from analytics.campaign_report import campaign_progress
from api.access import audit_record
from api.analytics_reader import AnalyticsUnavailable
from api.campaign_service import (
    CampaignDesk,
    CampaignStateError,
    Recall,
    estimate,
    mark_cancelled,
    recall,
    submitted,
)
from api.deps import ApiDeps
from api.events import _authorise, _checked, _key, _signed, _signing_key
from api.problems import invalid
from records.topics import lane_of
from settings.permissions import ALL_APPS, Principal
from state.audience_count import recipient_count
from state.campaigns import Campaign, CampaignState, Composition, app_of, new_campaign_id

_T = TypeVar("_T")


def who(principal: Principal) -> str:
    return f"{principal.kind}:{principal.name}"


async def found(deps: ApiDeps, desk: CampaignDesk, principal: Principal, permission: str, campaign_id: str
                ) -> Campaign:
    """The campaign, once the principal holds `permission` on the app its id names (403 before 404)."""
    app = app_of(campaign_id)
    if app is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{campaign_id!r} is not a campaign id")
    deps.access.authorize(principal, permission, app)
    campaign = await desk.store.get(campaign_id)
    if campaign is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no campaign {campaign_id!r}")
    return campaign


async def app_channels(deps: ApiDeps, app: str) -> frozenset[str]:
    known = await deps.apps.get(app)
    return known.channels if known is not None else frozenset()


async def audited(
    deps: ApiDeps,
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


async def create(
    deps: ApiDeps, desk: CampaignDesk, request: Request, principal: Principal, composition: Composition
) -> Campaign:
    """A draft of `composition`, once it passes what submitting it would check (422 naming the field)."""
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
        created_by=who(principal),
        created_at=datetime.now(UTC),
    )
    await desk.store.create(campaign)
    await audited(deps, request, principal, "campaign.create", None, campaign)
    return campaign


async def submit(
    deps: ApiDeps, desk: CampaignDesk, request: Request, principal: Principal, before: Campaign
) -> Campaign:
    """Publish the draft's event (approval policies hold it as any other); 409 unless it is a draft."""
    if before.state != "draft":
        detail = f"campaign {before.id!r} is {before.state}, not a draft"
        raise HTTPException(status.HTTP_409_CONFLICT, detail)
    event = before.event(who(principal))
    app = await _authorise(deps, event, principal, ("body",))
    signing_key = await _signing_key(deps, app)
    [record] = await _checked(deps, [event], ("body",))
    signed = _signed(record, signing_key)

    async def publish() -> None:
        await deps.publisher.publish_event(_key(event), record, lane_of(event), signed)

    after = await conflicts(submitted(desk.store, before, who(principal), publish))
    await audited(deps, request, principal, "campaign.submit", before, after)
    return after


async def cancel(
    deps: ApiDeps, desk: CampaignDesk, request: Request, principal: Principal, before: Campaign
) -> Campaign:
    after = await conflicts(mark_cancelled(desk.store, before, who(principal)))
    reason = after.cancelled.reason if after.cancelled else ""
    await audited(deps, request, principal, "campaign.cancel", before, after, reason)
    return after


async def recalled(
    deps: ApiDeps, desk: CampaignDesk, request: Request, principal: Principal, before: Campaign
) -> Recall:
    """Its inbox messages taken back (a campaign still sending is cancelled first, audited as such)."""
    done = await conflicts(recall(desk, before, who(principal), deps.publisher.publish_receipt))
    if done.cancelled is not None:  # it was still sending: the recall stopped it first
        await audited(deps, request, principal, "campaign.cancel", before, done.cancelled,
                      "cancelled by its recall")
    current = done.cancelled or before
    reason = f"{done.count} inbox messages recalled"
    await audited(deps, request, principal, "campaign.recall", current, done.campaign, reason)
    return done


async def listing(
    deps: ApiDeps,
    desk: CampaignDesk,
    principal: Principal,
    app: str | None,
    state: CampaignState | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The campaigns the principal may read (of `app`, in `state`), newest first, with progress."""
    if app is not None:
        deps.access.authorize(principal, "campaigns:read", app)
    readable = principal.apps_for("campaigns:read")
    apps = {app} if app is not None else None if ALL_APPS in readable else set(readable)
    campaigns = await desk.store.listing(apps, limit=limit if state is None else 10_000)
    progress = await read_progress(deps, campaigns)
    views = [await view(deps, desk, c, progress=progress) for c in campaigns]
    return [v for v in views if state is None or v["state"] == state][:limit]


async def read_progress(deps: ApiDeps, campaigns: list[Campaign]) -> dict[str, dict[str, int]] | None:
    """Progress of the submitted ones; None when the analytics cannot be read (the list still answers)."""
    sent = [c for c in campaigns if c.submitted_at is not None]
    if deps.analytics is None:
        return None
    if not sent:
        return {}
    since = min(c.created_at for c in sent)
    pairs = [(c.app, c.id) for c in sent]
    reader = deps.analytics.reader
    try:
        return await asyncio.to_thread(reader.run, lambda client: campaign_progress(client, pairs, since))
    except AnalyticsUnavailable:
        return None


async def view(
    deps: ApiDeps,
    desk: CampaignDesk,
    campaign: Campaign,
    progress: dict[str, dict[str, int]] | None = None,
    with_estimate: bool = False,
) -> dict[str, Any]:
    """The campaign as shown: its recipients now, its derived state, its progress and estimate."""
    shown = campaign.model_dump() | {"event_id": campaign.event_id}
    counted = await recipient_count(desk.redis, campaign.composition.audience)
    shown["recipients"] = counted.count
    if progress is not None and campaign.submitted_at is not None:
        shown["progress"] = progress.get(campaign.id, {})
    shown["state"] = derived_state(campaign, counted.count, shown.get("progress"))
    if shown["state"] == "done" and campaign.state != "done":
        # Remembered, so cancel and recall (which read no analytics) know it too; lost to a
        # concurrent change, it is derived again next time.
        await desk.store.replace(campaign, campaign.model_copy(update={"state": "done"}))
    if with_estimate:
        composed = campaign.composition
        channels = await app_channels(deps, composed.app)
        shown["estimate"] = (await estimate(desk, composed, channels)).as_dict()
    return shown


def derived_state(
    campaign: Campaign, recipients: int | None, progress: dict[str, int] | None
) -> CampaignState:
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
