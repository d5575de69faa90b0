"""ConsentStore and ProviderMessages against real Redis."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from records.plan import DeliveryPlan
from records.topics import Dispatch, EventCore
from state.consent import ConsentQuery, ConsentStore
from state.provider_messages import ProviderMessages
from tests.integration.moments import now

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

NOW = now()
VIA = f"(one-click link, {NOW.date().isoformat()})"


@pytest.fixture
def consent(redis: Redis) -> ConsentStore:
    # Unsubscriptions and the blacklist alone: no category needs an opt-in here (test_consent_opt_in.py).
    return ConsentStore(redis, clock=lambda: NOW, opt_in=())


@pytest.mark.parametrize(
    ("category", "channel", "query", "refused"),
    [
        ("marketing", "email", ("email", "marketing"), "unsubscribed from marketing on email " + VIA),
        ("marketing", "email", ("sms", "marketing"), None),
        ("marketing", "email", ("email", "notice"), None),
        ("marketing", None, ("sms", "marketing"), "unsubscribed from marketing on every channel " + VIA),
        (None, "sms", ("sms", "alert"), "unsubscribed from every category on sms " + VIA),
        (None, "sms", ("email", "alert"), None),
        (None, None, ("push", "notice"), "unsubscribed from every category on every channel " + VIA),
    ],
)
async def test_an_unsubscription_refuses_exactly_its_scope(
    consent: ConsentStore,
    category: str | None,
    channel: str | None,
    query: tuple[str, str],
    refused: str | None,
) -> None:
    await consent.unsubscribe("u1", category=category, channel=channel, source="one-click link")
    answers = await consent.refusals([ConsentQuery("u1", query[0], query[1]), ConsentQuery("u2", *query)])
    assert answers == [refused, None]


async def test_the_blacklist_refuses_users_and_addresses_and_comes_first(consent: ConsentStore) -> None:
    await consent.unsubscribe("u1", source="operator")
    await consent.blacklist("u1", "abuse report #12")
    await consent.blacklist("+8613800138000", "number recycled")
    answers = await consent.refusals(
        [
            ConsentQuery("u1", "email", "notice", "a@example.org"),
            ConsentQuery("u3", "sms", "notice", "+8613800138000"),
            ConsentQuery("u3", "email", "notice", "b@example.org"),
        ]
    )
    assert answers == ["blacklisted: abuse report #12", "blacklisted: number recycled", None]
    assert await consent.unblacklist("+8613800138000") is True
    assert await consent.unblacklist("+8613800138000") is False
    assert (await consent.refusals([ConsentQuery("u3", "sms", "notice", "+8613800138000")])) == [None]


async def test_resubscribing_drops_the_scope_and_narrower_ones_but_not_broader(consent: ConsentStore) -> None:
    await consent.unsubscribe("u1", category="marketing", channel="email", source="link")
    await consent.unsubscribe("u1", category="marketing", channel="sms", source="link")
    await consent.unsubscribe("u1", category="notice", source="operator")
    assert await consent.resubscribe("u1", category="marketing") == 2
    state = await consent.consent("u1")
    assert [(u.category, u.channel) for u in state.unsubscriptions] == [("notice", None)]
    assert await consent.resubscribe("u1", category="notice", channel="email") == 0
    assert (await consent.refusals([ConsentQuery("u1", "email", "notice")]))[0] is not None
    assert await consent.resubscribe("u1") == 1
    assert (await consent.consent("u1")).unsubscriptions == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"category": "marketting"}, "unknown category 'marketting'"),
        ({"channel": "fax"}, "unknown channel 'fax'"),
        ({"source": " "}, "source must not be empty"),
    ],
)
async def test_a_bad_scope_is_refused_with_its_name(
    consent: ConsentStore, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await consent.unsubscribe("u1", **{"source": "op", **kwargs})


async def test_an_empty_batch_costs_nothing(consent: ConsentStore) -> None:
    assert await consent.refusals([]) == []


def _dispatch(message_id: str) -> Dispatch:
    event = EventCore(event_id="e1", app="bursar", type="fee.due", template="fee_due", category="notice")
    return Dispatch(
        message_id=message_id, user_id="u1", channel="sms", address="+8613800138000", event=event,
        rule_id="fees", rule_version="v3", step=1, plan=DeliveryPlan(variant="B"), template="fee_due_short",
    )


async def test_provider_messages_turn_a_provider_id_back_into_a_receipt(redis: Redis) -> None:
    store = ProviderMessages(redis, ttl_seconds=60)
    await store.remember("aliyun", "biz-1", _dispatch("m1"))
    await store.remember_many([("aliyun", "biz-2", _dispatch("m2")), ("aliyun", "", _dispatch("m3"))])
    found = await store.lookup("aliyun", ["biz-1", "biz-2", "biz-9", "biz-1"])
    assert set(found) == {"biz-1", "biz-2"}
    assert await store.lookup("tencent", ["biz-1"]) == {}
    receipt = found["biz-1"].receipt("delivered", reason="DELIVRD")
    assert (receipt.message_id, receipt.status, receipt.provider, receipt.variant, receipt.step) == (
        "m1", "delivered", "aliyun", "B", 1,
    )
    assert (receipt.template, receipt.rule_id, receipt.rule_version, receipt.event_id, receipt.app) == (
        "fee_due_short", "fees", "v3", "e1", "bursar",
    )
    assert 0 < await redis.ttl("sb:pmsg:aliyun:biz-1") <= 60
