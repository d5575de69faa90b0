"""FallbackDispatcher against a real Redis directory: which channel a fired step goes out on, and why not."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
from redis.asyncio import Redis

from processors.fallback import FallbackDispatcher
from records.plan import Bypass, DeliveryPlan, FallbackStep, QuietHours
from records.topics import ChannelName, Dispatch, EventCore
from state.apps import AppRegistry
from state.fallback import FiredStep
from state.users import User, UserDirectory
from tests.integration.moments import next_local

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

EVENT = EventCore(event_id="e1", app="bursar", type="fee.due", template="fee_due", category="transactional")
NOW = next_local(12, 0)  # noon in Shanghai, the next one to come


def fired(
    user_id: str,
    channels: tuple[ChannelName, ...],
    addresses: dict[str, str] | None = None,
    template: str | None = None,
) -> FiredStep:
    step = FallbackStep(
        step=1, after=timedelta(minutes=5), condition="not_read", channels=channels, template=template
    )
    first = Dispatch(
        message_id=f"m-{user_id}",
        user_id=user_id,
        channel="inbox",
        address=user_id,
        event=EVENT,
        rule_id="fees",
        rule_version="v7",
        plan=DeliveryPlan(fallback=(step,), variant="B"),
    )
    return FiredStep(first.message_id, step, first, addresses, NOW)


@pytest.fixture
async def dispatcher(redis: Redis) -> FallbackDispatcher:
    await UserDirectory(redis).upsert(
        [
            User(user_id="mail", bindings={"inbox": "mail", "email": "mail@uni.example"}),
            User(user_id="phone", bindings={"inbox": "phone", "sms": "+8613800000000"}),
            User(user_id="both", bindings={"sms": "+8613800000001", "email": "both@uni.example"}),
        ]
    )
    await AppRegistry(redis).register("bursar", {"inbox", "email", "sms", "webhook"})
    return FallbackDispatcher(UserDirectory(redis), AppRegistry(redis), frozenset({"inbox", "email", "sms"}))


# (user, step channels, raw addresses, expected (channel, address) or None, reason fragment)
CASES: list[tuple[str, tuple[ChannelName, ...], dict[str, str] | None, tuple[str, str] | None, str]] = [
    ("mail", ("email",), None, ("email", "mail@uni.example"), ""),
    ("mail", ("sms", "email"), None, ("email", "mail@uni.example"), ""),
    ("both", ("sms", "email"), None, ("sms", "+8613800000001"), ""),
    ("phone", ("email",), None, None, "email: user has no address"),
    (
        "phone",
        ("wechat_oa", "email"),
        None,
        None,
        "wechat_oa: user has no address; email: user has no address",
    ),
    ("mail", ("push",), None, None, "push: user has no address"),
    ("gone", ("email",), None, None, "email: user has no address"),  # deleted since the first send
    ("addr:1", ("email",), {"email": "x@ext.example"}, ("email", "x@ext.example"), ""),
    ("addr:2", ("webhook",), {"webhook": "http://127.0.0.1/h"}, None, "webhook: no provider configured"),
]


@pytest.mark.parametrize(("user", "channels", "addresses", "expected", "why"), CASES)
async def test_a_fired_step_goes_out_on_the_first_usable_channel(
    dispatcher: FallbackDispatcher,
    user: str,
    channels: tuple[ChannelName, ...],
    addresses: dict[str, str] | None,
    expected: tuple[str, str] | None,
    why: str,
) -> None:
    item = fired(user, channels, addresses)
    result = await dispatcher.resolve([item])
    [receipt] = result.receipts
    assert (receipt.step, receipt.variant, receipt.rule_version) == (1, "B", "v7")
    if expected is None:
        assert result.dispatches == []
        assert receipt.status == "suppressed" and why in receipt.reason
        assert receipt.reason.startswith("fallback step 1: not_read after 5m; no usable channel")
        return
    [dispatch] = result.dispatches
    assert (dispatch.channel, dispatch.address, dispatch.step) == (*expected, 1)
    assert (
        dispatch.message_id == item.message_id
        and dispatch.event == EVENT
        and dispatch.plan == item.first.plan
    )
    assert (receipt.status, receipt.channel) == ("decided", expected[0])


async def test_an_app_not_allowed_a_channel_does_not_get_it(
    redis: Redis, dispatcher: FallbackDispatcher
) -> None:
    await AppRegistry(redis).register("lms", {"inbox"})
    lms = fired("mail", ("email",))
    first = lms.first.model_copy(update={"event": EVENT.model_copy(update={"app": "lms"})})
    result = await dispatcher.resolve([FiredStep(lms.message_id, lms.step, first, None, NOW)])
    assert result.dispatches == []
    assert "email: app lms is not allowed to use it" in result.receipts[0].reason


async def test_a_step_template_replaces_the_first_one(dispatcher: FallbackDispatcher) -> None:
    result = await dispatcher.resolve([fired("mail", ("email",), template="fee_due_short")])
    assert result.dispatches[0].template == "fee_due_short"
    assert result.receipts[0].template == "fee_due_short"
    plain = await dispatcher.resolve([fired("mail", ("email",))])
    assert plain.dispatches[0].template is None and plain.receipts[0].template == "fee_due"


NIGHT = QuietHours(start=time(22, 0), end=time(7, 0), action="defer")
# 23:30 in Shanghai (inside the window, which ends at 07:00 there) is 15:30 or 16:30 in London.
LATE = next_local(23, 30)
END = LATE + timedelta(hours=7, minutes=30)
NOON = LATE - timedelta(hours=11, minutes=30)


@pytest.mark.parametrize(
    ("user", "quiet", "bypass", "now", "outcome"),
    [
        ("mail", NIGHT, frozenset(), LATE, ("deferred", END)),
        ("mail", NIGHT.model_copy(update={"action": "drop"}), frozenset(), LATE, ("suppressed", None)),
        ("mail", NIGHT, frozenset({"quiet_hours"}), LATE, ("decided", None)),
        ("mail", NIGHT, frozenset(), NOON, ("decided", None)),
        ("london", NIGHT, frozenset(), LATE, ("decided", None)),  # the recipient's own clock
        ("addr:3", NIGHT, frozenset(), LATE, ("deferred", END)),
    ],
)
async def test_a_step_due_in_quiet_hours_waits_for_their_end_or_is_dropped(
    redis: Redis,
    dispatcher: FallbackDispatcher,
    user: str,
    quiet: QuietHours,
    bypass: frozenset[Bypass],
    now: datetime,
    outcome: tuple[str, datetime | None],
) -> None:
    await UserDirectory(redis).upsert(
        [User(user_id="london", timezone="Europe/London", bindings={"email": "l@uni.example"})]
    )
    item = fired(user, ("email",), {"email": "x@ext.example"} if user.startswith("addr:") else None)
    plan = item.first.plan.model_copy(update={"quiet_hours": quiet, "bypass": bypass})
    item = FiredStep(
        item.message_id, item.step, item.first.model_copy(update={"plan": plan}), item.addresses, NOW
    )
    result = await dispatcher.resolve([item], now=now)
    status, until = outcome
    assert [r.status for r in result.receipts] == [status]
    assert len(result.dispatches) == (status == "decided")
    assert [due for _, due in result.parked] == ([until] if until else [])
    if status == "suppressed":
        assert f"dropped: quiet hours until {END.isoformat()}" in result.receipts[0].reason
