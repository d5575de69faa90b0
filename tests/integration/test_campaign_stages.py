"""Decide on real Redis with a campaign's steady rate and its cancellation: the event's
`pace_per_second` paces under the campaign's key (the slower of it and the rule's), and a cancelled
campaign's deliveries (due now or scheduled) get a `cancelled` row and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from records.plan import DeliveryPlan, Pacing
from records.topics import Delivery
from state.campaigns import Campaign, CampaignStore, Cancellation, CancelledCampaigns, Composition
from state.users import UserDirectory
from tests.integration.test_decide import NOW, PROMO, PlanEngine, people, planned, promo

__all__ = ["people"]  # the fixture, shared with test_decide.py

CAMPAIGN = "shop.c0123456789ab"
PACED = PROMO.model_copy(update={"campaign": CAMPAIGN, "pace_per_second": 2})


def paced(n: int) -> list[Delivery]:
    return [promo("sh", PACED.model_copy(update={"event_id": f"p{i}"})) for i in range(n)]


async def test_the_events_rate_paces_under_its_campaigns_key(redis: Redis, people: UserDirectory) -> None:
    decide = planned(redis, PlanEngine(DeliveryPlan()))
    result = await decide.handle(paced(3), now=NOW)
    assert len(result.dispatches) == 1
    assert [slot for _, slot in result.paced] == [NOW + timedelta(milliseconds=500 * i) for i in (1, 2)]
    [first, _] = [r.reason for r in result.receipts if r.status == "deferred"]
    assert first.startswith(f"pacing campaign:shop/{CAMPAIGN} at 2/s: deferred until ")


async def test_with_a_rule_pace_too_the_slower_rate_applies(redis: Redis, people: UserDirectory) -> None:
    rule = DeliveryPlan(pacing=Pacing(per_second=1, key="rule:promo"))
    decide = planned(redis, PlanEngine(rule))
    result = await decide.handle(paced(3), now=NOW)
    assert [slot for _, slot in result.paced] == [NOW + timedelta(seconds=i) for i in (1, 2)]


async def test_a_cancelled_campaigns_deliveries_are_cancelled_rows_due_or_scheduled(
    redis: Redis, people: UserDirectory
) -> None:
    store = CampaignStore(redis)
    composition = Composition.model_validate(
        {"app": "shop", "name": "bf", "audience": {"all": True}, "category": "marketing", "template": "promo"}
    )
    running = Campaign(
        id=CAMPAIGN, app="shop", name="bf", composition=composition, created_by="operator:li",
        created_at=datetime.now(UTC), state="running",
    )
    await store.create(running)
    stopped = Cancellation(by="operator:li", at=datetime.now(UTC))
    cancelled_campaign = running.model_copy(update={"state": "cancelled", "cancelled": stopped})
    assert await store.replace(running, cancelled_campaign)
    decide = planned(redis, PlanEngine(DeliveryPlan()), cancelled=CancelledCampaigns(redis))
    scheduled = PACED.model_copy(update={"event_id": "later", "send_at": NOW + timedelta(hours=1)})
    other = PROMO.model_copy(update={"event_id": "other"})
    result = await decide.handle(
        [promo("sh", PACED), promo("ny", scheduled), promo("sh", other)], now=NOW
    )
    assert [(d.user_id, d.event.event_id) for d in result.dispatches] == [("sh", "other")]
    assert result.scheduled == 0 and result.paced == []
    cancelled = [(r.user_id, r.event_id, r.reason) for r in result.receipts if r.status == "cancelled"]
    assert cancelled == [("sh", "p1", stopped.reason), ("ny", "later", stopped.reason)]
    assert stopped.reason.startswith("campaign cancelled by operator:li at ")
