"""Send against real Redis: idempotent claims, parking behind an unfinished claim, clear failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from channels.base import RetryPolicy
from channels.inbox import InboxChannel
from channels.templates import TemplateCatalog
from processors.send import Send
from records.topics import Dispatch, EventCore
from settings import ROOT
from state.idempotency import SendLedger
from state.inbox import Inbox
from state.users import User, UserDirectory

NOTICE = EventCore(
    event_id="n1",
    app="campus",
    type="campus.notice",
    template="campus_notice",
    category="notice",
    data={"headline": "Snow day", "body": "Classes are cancelled."},
)


def dispatch(message_id: str, channel: str = "inbox", event: EventCore = NOTICE) -> Dispatch:
    return Dispatch.model_validate(
        {
            "message_id": message_id,
            "user_id": "s1",
            "channel": channel,
            "address": "s1",
            "event": event,
            "rule_id": "campus-notices",
            "rule_version": "v1",
        }
    )


@pytest.fixture
async def send(redis: Redis) -> Send:
    await UserDirectory(redis).upsert([User(user_id="s1", name="Su", bindings={"inbox": "s1"})])
    return Send(
        {"inbox": InboxChannel(Inbox(redis))},
        TemplateCatalog(ROOT / "templates"),
        UserDirectory(redis),
        SendLedger(redis, ttl_seconds=3600, claim_ttl_seconds=2),
        RetryPolicy(max_attempts=1),
    )


async def test_a_message_is_delivered_once_however_often_it_is_dispatched(send: Send, redis: Redis) -> None:
    first = await send.handle([dispatch("m1")])
    assert [(r.status, r.rule_id) for r in first.receipts] == [
        ("sent", "campus-notices"),
        ("delivered", "campus-notices"),
    ]
    again = await send.handle([dispatch("m1"), dispatch("m1")])
    # Nothing sent again; the receipts again, the same rows (same key and time), since the worker that
    # sent may have died before producing them.
    assert again.already_sent == 2
    assert again.receipts == first.receipts * 2
    assert await Inbox(redis).total("s1") == 1


async def test_a_dispatch_behind_an_unfinished_claim_is_parked_until_it_lapses(
    send: Send, redis: Redis
) -> None:
    ledger = SendLedger(redis, ttl_seconds=3600, claim_ttl_seconds=2)
    assert await ledger.claim("m2", "inbox", 0)  # a worker that then died mid-send
    parked = await send.handle([dispatch("m2")])
    assert parked.receipts == [] and parked.already_sent == 0
    [(held, due)] = parked.parked
    assert held.message_id == "m2"
    assert datetime.now(UTC) + timedelta(seconds=1) < due <= datetime.now(UTC) + timedelta(seconds=3.5)
    assert await Inbox(redis).total("s1") == 0
    await asyncio.sleep(2.1)  # the dead worker's claim lapses
    retried = await send.handle([held])
    assert [r.status for r in retried.receipts] == ["sent", "delivered"]
    assert await Inbox(redis).total("s1") == 1


async def test_failures_name_their_reason(send: Send) -> None:
    no_provider = await send.handle([dispatch("m3", channel="sms")])
    assert [(r.status, r.reason) for r in no_provider.receipts] == [
        ("failed", "no provider configured for sms")
    ]
    bad_data = NOTICE.model_copy(update={"data": {"headline": "only"}})
    broken = await send.handle([dispatch("m4", event=bad_data)])
    assert broken.receipts[0].status == "failed"
    assert "body" in broken.receipts[0].reason and broken.receipts[0].reason.startswith("template:")
