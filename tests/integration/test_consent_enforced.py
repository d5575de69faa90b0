"""Send enforces consent and frequency caps against real Redis, and names variant, step and template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from channels.base import Channel, PermanentSendError, RetryPolicy, SendResult
from channels.inbox import InboxChannel
from channels.templates import RenderedMessage, TemplateCatalog
from processors.send import Send
from records.plan import CapLimit, DeliveryPlan, FrequencyCap
from records.topics import Dispatch, EventCore
from state.caps import FrequencyCaps
from state.consent import ConsentStore
from state.idempotency import SendLedger
from state.inbox import Inbox
from state.users import User, UserDirectory

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too

PROMO = EventCore(
    event_id="p1", app="shop", type="promo", template="promo_long", category="marketing", data={"item": "tea"}
)
HOURLY = FrequencyCap(id="hourly", limits=(CapLimit(count=1, window=timedelta(hours=1)),), on_exceed="delay")
DAILY_DROP = FrequencyCap(id="daily", limits=(CapLimit(count=1, window=timedelta(days=1)),))
T0 = datetime.now(UTC).replace(microsecond=0)


class RefusingSms(Channel):
    """An SMS provider that refuses every number, and counts how often it was asked."""

    channel = "sms"
    provider = "refusing"

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        self.calls += 1
        raise PermanentSendError(f"number {address} does not exist")


@pytest.fixture
def templates(tmp_path: Path) -> TemplateCatalog:
    for name, words in (("promo_long", "A long promotion for {{ item }}"), ("promo_short", "{{ item }}!")):
        (tmp_path / f"{name}.yaml").write_text(
            f'description: promo\nvariables: [item]\ninbox:\n  title: "{words}"\n  body: "{words}"\n'
            f'sms:\n  text: "{words}"\n',
            encoding="utf-8",
        )
    return TemplateCatalog(tmp_path)


@pytest.fixture
def sms() -> RefusingSms:
    return RefusingSms()


@pytest.fixture
async def send(redis: Redis, templates: TemplateCatalog, sms: RefusingSms) -> Send:
    await UserDirectory(redis).upsert([User(user_id="s1", bindings={"inbox": "s1", "sms": "+8613800000001"})])
    return Send(
        {"inbox": InboxChannel(Inbox(redis)), "sms": sms},
        templates,
        UserDirectory(redis),
        SendLedger(redis, ttl_seconds=3600, claim_ttl_seconds=60),
        RetryPolicy(max_attempts=1),
        consent=ConsentStore(redis, opt_in=()),
        caps=FrequencyCaps(redis),
    )


def dispatch(message_id: str, channel: str = "inbox", step: int = 0, **plan: object) -> Dispatch:
    return Dispatch.model_validate(
        {
            "message_id": message_id,
            "user_id": "s1",
            "channel": channel,
            "address": "s1" if channel == "inbox" else "+8613800000001",
            "event": PROMO,
            "rule_id": "promo",
            "rule_version": "v3",
            "step": step,
            "plan": DeliveryPlan.model_validate({"variant": "B", **plan}),
        }
    )


@pytest.mark.parametrize(
    ("refusal", "reason"),
    [
        ({"category": "marketing", "channel": "inbox"}, "consent: unsubscribed from marketing on inbox"),
        ({"category": None, "channel": None}, "consent: unsubscribed from every category on every channel"),
        ("blacklist", "consent: blacklisted: spam complaint"),
    ],
)
async def test_a_refused_recipient_is_never_sent_to(
    send: Send, redis: Redis, refusal: dict[str, str | None] | str, reason: str
) -> None:
    consent = ConsentStore(redis, opt_in=())
    if refusal == "blacklist":
        await consent.blacklist("s1", reason="spam complaint")
    else:
        assert isinstance(refusal, dict)
        await consent.unsubscribe("s1", **refusal, source="preference centre")
    # A fallback step, long after decide: consent is checked again here.
    result = await send.handle([dispatch("m1", step=1)], now=T0)
    [receipt] = result.receipts
    assert (receipt.status, receipt.step, receipt.variant) == ("suppressed", 1, "B")
    assert receipt.reason.startswith(reason)
    assert await Inbox(redis).total("s1") == 0 and result.suppressed == 1


async def test_an_unsubscription_on_another_channel_does_not_block(send: Send, redis: Redis) -> None:
    await ConsentStore(redis).unsubscribe("s1", category="marketing", channel="sms", source="reply TD")
    result = await send.handle([dispatch("m1")], now=T0)
    assert [r.status for r in result.receipts] == ["sent", "delivered"]


async def test_delay_parks_the_dispatch_until_the_cap_allows_it(send: Send, redis: Redis) -> None:
    first = await send.handle([dispatch("m1", caps=[HOURLY])], now=T0)
    assert [r.status for r in first.receipts] == ["sent", "delivered"]
    later = T0 + timedelta(minutes=20)
    second = await send.handle([dispatch("m2", caps=[HOURLY])], now=later)
    [capped] = second.receipts
    assert (capped.status, capped.provider, second.capped) == ("capped", "switchboard-inbox", 1)
    until = T0 + timedelta(hours=1)
    assert capped.reason == f"cap hourly: 1 per 1h reached; delayed until {until.isoformat()}"
    assert [(d.message_id, due) for d, due in second.parked] == [("m2", until)]
    assert await Inbox(redis).total("s1") == 1
    # Re-emitted when due, it passes.
    third = await send.handle([second.parked[0][0]], now=until)
    assert [r.status for r in third.receipts] == ["sent", "delivered"]


async def test_drop_is_final_even_for_a_redelivery_after_the_window(send: Send, redis: Redis) -> None:
    await send.handle([dispatch("m1", caps=[DAILY_DROP])], now=T0)
    dropped = await send.handle([dispatch("m2", caps=[DAILY_DROP])], now=T0 + timedelta(minutes=1))
    assert [(r.status, r.reason) for r in dropped.receipts] == [
        ("capped", "cap daily: 1 per 1d reached; dropped")
    ]
    assert dropped.parked == []
    redelivered = await send.handle([dispatch("m2", caps=[DAILY_DROP])], now=T0 + timedelta(days=2))
    assert redelivered.receipts == [] and redelivered.already_sent == 1
    assert await Inbox(redis).total("s1") == 1


async def test_a_redelivered_dispatch_is_not_capped_by_its_own_count(send: Send) -> None:
    first = await send.handle([dispatch("m1", caps=[DAILY_DROP])], now=T0)
    again = await send.handle([dispatch("m1", caps=[DAILY_DROP])], now=T0 + timedelta(minutes=1))
    # Not capped and not sent again: the send's own rows are re-emitted (ClickHouse keeps one each).
    assert again.receipts == first.receipts and again.already_sent == 1 and again.capped == 0


async def test_bypass_skips_caps(send: Send) -> None:
    await send.handle([dispatch("m1", caps=[DAILY_DROP])], now=T0)
    urgent = await send.handle([dispatch("m2", caps=[DAILY_DROP], bypass=["caps"])], now=T0)
    assert [r.status for r in urgent.receipts] == ["sent", "delivered"]


async def test_a_failed_send_does_not_use_up_the_cap(send: Send, sms: RefusingSms) -> None:
    failed = await send.handle([dispatch("m1", channel="sms", caps=[DAILY_DROP])], now=T0)
    assert [(r.status, r.provider) for r in failed.receipts] == [("failed", "refusing")]
    assert sms.calls == 1
    after = await send.handle([dispatch("m2", caps=[DAILY_DROP])], now=T0 + timedelta(minutes=1))
    assert [r.status for r in after.receipts] == ["sent", "delivered"]


async def test_the_dispatch_template_is_rendered_and_named_on_receipts(send: Send, redis: Redis) -> None:
    short = dispatch("m1").model_copy(update={"template": "promo_short"})
    result = await send.handle([short, dispatch("m2")], now=T0)
    assert {(r.message_id, r.template, r.variant) for r in result.receipts} == {
        ("m1", "promo_short", "B"),
        ("m2", "promo_long", "B"),
    }
    titles = {m.message_id: m.title for m in await Inbox(redis).list("s1")}
    assert titles == {"m1": "tea!", "m2": "A long promotion for tea"}
