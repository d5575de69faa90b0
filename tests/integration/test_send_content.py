"""Send's content checks against real Redis: address cleaning, sensitive words, tracked links and
remembering provider message ids so delivery callbacks find their message."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from channels.base import Channel, RetryPolicy, SendResult, ThrottledError
from channels.inbox import InboxChannel
from channels.links import LinkSigner
from channels.sensitive import SensitiveWords
from channels.templates import RenderedMessage, TemplateCatalog
from processors.content import ContentGuard
from processors.send import Send
from records.topics import Dispatch, EventCore
from records.vocabulary import ChannelName
from settings import ROOT
from state.idempotency import SendLedger
from state.inbox import Inbox
from state.provider_messages import ProviderMessages
from state.users import User, UserDirectory

FEE = EventCore(
    event_id="f1", app="bursar", type="fee.due", template="fee_due", category="transactional",
    data={"amount": "¥5,000", "due_date": "2026-12-01", "term": "2026 秋季"},
)


class RecordingSms(Channel):
    """An SMS provider that accepts everything and remembers what it was handed (Send's wiring only)."""

    channel: ClassVar[ChannelName] = "sms"
    provider: ClassVar[str] = "recording-sms"

    def __init__(self) -> None:
        self.sent: list[tuple[str, RenderedMessage]] = []

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        self.sent.append((address, message))
        return SendResult(status="sent", provider_message_id=f"biz-{len(self.sent)}", cost=0.045)


def dispatch(message_id: str, channel: str, address: str, event: EventCore = FEE) -> Dispatch:
    return Dispatch.model_validate(
        {"message_id": message_id, "user_id": "s1", "channel": channel, "address": address,
         "event": event, "rule_id": "r", "rule_version": "v1"}
    )


@pytest.fixture
async def sms(redis: Redis) -> RecordingSms:
    await UserDirectory(redis).upsert([User(user_id="s1", name="苏", bindings={"inbox": "s1"})])
    return RecordingSms()


def make_send(redis: Redis, sms: RecordingSms, words: list[tuple[str, str]]) -> Send:
    guard = ContentGuard(
        SensitiveWords(words),  # type: ignore[arg-type]
        LinkSigner(SecretStr("a-test-link-secret-of-some-length"), "https://sb.example.edu"),
    )
    return Send(
        {"sms": sms, "inbox": InboxChannel(Inbox(redis))},
        TemplateCatalog(ROOT / "templates"),
        UserDirectory(redis),
        SendLedger(redis, ttl_seconds=3600),
        RetryPolicy(max_attempts=1),
        content=guard,
        sent=ProviderMessages(redis),
    )


async def test_a_phone_number_is_sent_in_e164_and_a_bad_one_is_suppressed(
    redis: Redis, sms: RecordingSms
) -> None:
    send = make_send(redis, sms, [])
    result = await send.handle([dispatch("m1", "sms", "138 0013 8000"), dispatch("m2", "sms", "12345")])
    assert [address for address, _ in sms.sent] == ["+8613800138000"]
    by_message = {r.message_id: (r.status, r.reason) for r in result.receipts}
    assert by_message["m1"] == ("sent", "")
    assert by_message["m2"][0] == "suppressed" and by_message["m2"][1].startswith("address:")


async def test_a_blocked_word_stops_the_message_and_a_masked_one_is_starred(
    redis: Redis, sms: RecordingSms
) -> None:
    blocked = make_send(redis, sms, [("缴费", "block")])
    result = await blocked.handle([dispatch("m3", "sms", "+8613800138000")])
    assert sms.sent == []
    assert [(r.status, r.reason.startswith("content:")) for r in result.receipts] == [("suppressed", True)]

    masked = make_send(redis, sms, [("学生门户", "mask")])
    await masked.handle([dispatch("m4", "sms", "+8613800138000")])
    (_, message), = sms.sent
    assert "学生门户" not in message.text and "****" in message.text


async def test_links_are_tracked_and_provider_ids_remembered_for_callbacks(
    redis: Redis, sms: RecordingSms
) -> None:
    send = make_send(redis, sms, [])
    fee_in_inbox = dispatch("m5", "inbox", "s1", event=FEE.model_copy(update={"event_id": "f5"}))
    await send.handle([dispatch("m6", "sms", "+8613800138000"), fee_in_inbox])
    known = await ProviderMessages(redis).lookup("recording-sms", ["biz-1", "biz-unknown"])
    assert list(known) == ["biz-1"]
    assert known["biz-1"].receipt("delivered").message_id == "m6"
    stored = await Inbox(redis).list("s1")
    (link,) = [m.link for m in stored if m.message_id == "m5"]
    assert link.startswith("https://sb.example.edu/t/c/")  # the template's /portal/finance, tracked


class ThrottledSms(RecordingSms):
    """Throttled for the first `busy` calls, then accepting."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    async def send(self, message: RenderedMessage, address: str, dispatch: Dispatch) -> SendResult:
        if self.busy > 0:
            self.busy -= 1
            raise ThrottledError("over its rate limit")
        return await super().send(message, address, dispatch)


async def test_a_send_throttled_everywhere_waits_for_a_later_round_then_fails_for_good(redis: Redis) -> None:
    sms = ThrottledSms(busy=2)
    send = Send(
        {"sms": sms}, TemplateCatalog(ROOT / "templates"), UserDirectory(redis),
        SendLedger(redis, ttl_seconds=3600), RetryPolicy(max_attempts=1), requeue_delays=(5.0,),
    )
    first = await send.handle([dispatch("t1", "sms", "+8613800138000")])
    assert [(r.status, "trying again in 5s" in r.reason) for r in first.receipts] == [("deferred", True)]
    assert [d.message_id for d, _ in first.parked] == ["t1"]
    # The parked dispatch comes back; the provider is still throttled and the rounds are used up.
    second = await send.handle([dispatch("t1", "sms", "+8613800138000")])
    assert [(r.status, "gave up for good" in r.reason) for r in second.receipts] == [("failed", True)]
    assert second.parked == []

    recovered = ThrottledSms(busy=1)
    send = Send(
        {"sms": recovered}, TemplateCatalog(ROOT / "templates"), UserDirectory(redis),
        SendLedger(redis, ttl_seconds=3600), RetryPolicy(max_attempts=1), requeue_delays=(5.0,),
    )
    assert [r.status for r in (await send.handle([dispatch("t2", "sms", "+8613800138000")])).receipts] == [
        "deferred"
    ]
    assert [r.status for r in (await send.handle([dispatch("t2", "sms", "+8613800138000")])).receipts] == [
        "sent"
    ]
    assert [address for address, _ in recovered.sent] == ["+8613800138000"]
