"""What the campaigns API and CLI share: the campaign store and what an estimate needs (Redis for the
recipient count, the providers' per-message prices, the template catalog for SMS segments), the
estimate, and the changes of state (submit, cancel, recall) with the rules of when they are allowed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from channels.costs import costs_from_specs
from channels.providers import load_providers
from channels.sms_segments import count_segments
from channels.templates import TemplateCatalog, TemplateError
from records.topics import Receipt
from settings import Settings, SwitchboardError
from state.audience_count import recipient_count
from state.campaigns import Campaign, CampaignStore, Cancellation, Composition
from state.inbox import Inbox, InboxMessage


@dataclass(frozen=True)
class CampaignDesk:
    """The campaigns' collaborators: `costs` maps a channel to its estimated cost per message (its first
    provider's price, `channels/costs.py`); `templates` renders the SMS part to count its segments."""

    store: CampaignStore
    inbox: Inbox
    redis: Redis
    costs: Mapping[str, float] = field(default_factory=dict)
    templates: TemplateCatalog | None = None


def campaign_desk(settings: Settings, redis: Redis, templates: TemplateCatalog | None) -> CampaignDesk:
    """The production wiring: prices from the providers file (read without its secrets)."""
    specs = (
        load_providers(settings.providers, skip_unavailable=lambda _: None, require_env=False)
        if settings.providers.is_file()
        else []
    )
    return CampaignDesk(
        store=CampaignStore(redis, keep_cancelled=timedelta(days=settings.campaign_cancel_days)),
        inbox=Inbox(
            redis, max_per_user=settings.inbox_max_per_user, recall_seconds=settings.inbox_recall_seconds
        ),
        redis=redis,
        costs=costs_from_specs(specs),
        templates=templates,
    )


@dataclass(frozen=True)
class Estimate:
    """Recipients and cost of a composition, before it is sent."""

    recipients: int | None
    exact: bool
    counted: str
    channels: list[str] | None
    per_message: dict[str, float]
    sms_segments: int | None
    cost: float | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


async def estimate(desk: CampaignDesk, composition: Composition, app_channels: frozenset[str]) -> Estimate:
    """How many people it reaches and what it costs: recipients x the chosen channels' per-message cost
    (an SMS costs its segments, counted from the template rendered with the composition's data). With
    the channels left to the rules there is no one cost: `per_message` lists the app's channels'."""
    count = await recipient_count(desk.redis, composition.audience)
    chosen: list[str] | None = list(composition.channels) if composition.channels is not None else None
    segments = _sms_segments(desk, composition) if chosen is None or "sms" in chosen else None
    priced = sorted(set(chosen) if chosen is not None else app_channels)
    per_message = {c: desk.costs.get(c, 0.0) * ((segments or 1) if c == "sms" else 1) for c in priced}
    notes = []
    cost: float | None = None
    if chosen is None:
        notes.append("channels are left to the rules: no single cost; per_message lists the app's channels")
    elif count.count is None:
        notes.append(f"recipients {count.how}: cost known when sent")
    else:
        cost = round(count.count * sum(per_message.values()), 6)
        if not count.exact:
            notes.append("an upper bound, as the recipient count is")
    return Estimate(
        recipients=count.count,
        exact=count.exact,
        counted=count.how,
        channels=chosen,
        per_message=per_message,
        sms_segments=segments,
        cost=cost,
        note="; ".join(notes),
    )


def _sms_segments(desk: CampaignDesk, composition: Composition) -> int | None:
    """Segments of the SMS part rendered with the composition's data (None: no SMS part, or no catalog).
    A part using the recipient's profile is counted without one: an estimate."""
    if desk.templates is None or "sms" not in _channels_of(desk.templates, composition.template):
        return None
    try:
        message = desk.templates.render(composition.template, "sms", composition.data, None)
    except TemplateError:
        return None
    return count_segments(message.text).segments  # an SMS part renders `text` (`body` stays empty)


def _channels_of(templates: TemplateCatalog, template: str) -> frozenset[str]:
    return templates.channels_of(template) if template in templates else frozenset()


class CampaignStateError(SwitchboardError):
    """A change the campaign's state does not allow (the API answers 409), or one lost to another."""


async def changed(store: CampaignStore, before: Campaign, update: dict[str, Any]) -> Campaign:
    """`before` with `update`, stored if nobody changed it meanwhile."""
    after = before.model_copy(update=update)
    if not await store.replace(before, after):
        raise CampaignStateError(f"campaign {before.id!r} changed meanwhile; try again")
    return after


async def mark_submitted(store: CampaignStore, before: Campaign, submitter: str) -> Campaign:
    """A draft becomes scheduled (a future send_at) or running; stored before its event is published,
    so a second submit is refused rather than told it worked."""
    if before.state != "draft":
        raise CampaignStateError(f"campaign {before.id!r} is {before.state}, not a draft")
    now = datetime.now(UTC)
    send_at = before.composition.send_at
    state = "scheduled" if send_at is not None and send_at > now else "running"
    return await changed(store, before, {"state": state, "submitted_by": submitter, "submitted_at": now})


async def submitted(
    store: CampaignStore, before: Campaign, submitter: str, publish: Callable[[], Awaitable[None]]
) -> Campaign:
    """Mark the draft submitted, then `publish` its event; a publish that fails (the broker did not
    acknowledge) leaves it a draft again, to be submitted again, and raises."""
    after = await mark_submitted(store, before, submitter)
    try:
        await publish()
    except BaseException:
        await store.replace(after, before)
        raise
    return after


async def mark_cancelled(store: CampaignStore, before: Campaign, who: str) -> Campaign:
    """Scheduled or running becomes cancelled, and the stages learn it (state/campaigns.py). The stored
    state only: cancelling never waits on the analytics (the list stores a settled campaign as done)."""
    if before.state not in ("scheduled", "running"):
        raise CampaignStateError(
            f"campaign {before.id!r} is {before.state}: only a scheduled or running campaign can be cancelled"
        )
    cancellation = Cancellation(by=who, at=datetime.now(UTC))
    return await changed(store, before, {"state": "cancelled", "cancelled": cancellation})


@dataclass(frozen=True)
class Recall:
    """What a recall did: the campaign after it, how many inbox messages it took back, and the campaign
    as its cancellation left it when the recall had to stop it first (it was still sending)."""

    campaign: Campaign
    count: int
    cancelled: Campaign | None


async def recall(
    desk: CampaignDesk, before: Campaign, who: str, publish: Callable[[Receipt], Awaitable[None]]
) -> Recall:
    """Take the campaign's inbox messages back, each a `recalled` row (`publish`); a campaign still
    scheduled or running is cancelled first, so nothing more arrives after the recall."""
    if before.state == "draft":
        raise CampaignStateError(f"campaign {before.id!r} is a draft: nothing was sent")
    current = before
    cancelled = None
    if before.state in ("scheduled", "running"):
        current = cancelled = await mark_cancelled(desk.store, before, who)
    at = datetime.now(UTC)
    reason = f"recalled by {who} at {at.isoformat(timespec='seconds')}"
    count = 0
    async for batch in desk.inbox.recall(current.app, current.id):
        await asyncio.gather(*(publish(recalled_receipt(user, m, reason)) for user, m in batch))
        count += len(batch)
    update = {"recalled_by": who, "recalled_at": at, "recalled": current.recalled + count}
    return Recall(await changed(desk.store, current, update), count, cancelled)


def recalled_receipt(user_id: str, message: InboxMessage, reason: str) -> Receipt:
    return Receipt(
        message_id=message.message_id,
        event_id=message.event_id,
        app=message.app,
        user_id=user_id,
        channel="inbox",
        provider="switchboard-inbox",
        status="recalled",
        reason=reason,
        rule_id=message.rule_id,
        rule_version=message.rule_version,
        template=message.template,
        campaign=message.campaign,
    )
