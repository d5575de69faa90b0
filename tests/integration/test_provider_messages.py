"""Provider reports that arrive before their send is recorded: kept, then published exactly once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from records.topics import Dispatch, EventCore
from state.provider_messages import EarlyReport, ProviderMessages

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too


def dispatch(message_id: str) -> Dispatch:
    event = EventCore(event_id="e1", app="bursar", type="fee.reminder", template="fee_due", category="notice")
    return Dispatch(
        message_id=message_id, user_id="u1", channel="wechat_oa", address="oAbc123456", event=event,
        rule_id="fees", rule_version="v3",
    )


async def test_a_report_before_the_send_is_recorded_becomes_a_receipt_when_it_is(redis: Redis) -> None:
    store = ProviderMessages(redis, ttl_seconds=60)
    early = [EarlyReport(provider_message_id="msg-1", status="delivered")]
    assert await store.park_early("wechat-oa", early) == []  # nothing to attach it to yet
    receipts = await store.remember("wechat-oa", "msg-1", dispatch("m1"))
    assert [(r.message_id, r.status, r.provider, r.channel) for r in receipts] == [
        ("m1", "delivered", "wechat-oa", "wechat_oa")
    ]
    assert await store.remember("wechat-oa", "msg-1", dispatch("m1")) == []  # taken once only


async def test_a_report_parked_just_after_the_send_was_recorded_is_taken_by_the_parker(redis: Redis) -> None:
    store = ProviderMessages(redis, ttl_seconds=60)
    assert await store.remember("wechat-oa", "msg-2", dispatch("m2")) == []
    receipts = await store.park_early("wechat-oa", [EarlyReport(provider_message_id="msg-2", status="failed",
                                                                reason="failed:user block")])
    assert [(r.message_id, r.status, r.reason) for r in receipts] == [("m2", "failed", "failed:user block")]


async def test_racing_sender_and_callback_publish_each_report_once(redis: Redis) -> None:
    store = ProviderMessages(redis, ttl_seconds=60)
    for _ in range(30):
        pid = uuid.uuid4().hex
        report = EarlyReport(provider_message_id=pid, status="delivered")

        async def callback(pid: str = pid, report: EarlyReport = report) -> int:
            # What the API does: look up, and park what it did not find.
            known = await store.lookup("wechat-oa", [pid])
            return 1 if known else len(await store.park_early("wechat-oa", [report]))

        async def sender(pid: str = pid) -> int:
            return len(await store.remember("wechat-oa", pid, dispatch(f"m-{pid}")))

        published = await asyncio.gather(callback(), sender())
        assert sum(published) == 1, published
