"""The inbox's read and click marks against real Redis: atomic, first-only, and never resurrecting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from state.inbox import Inbox, InboxMessage

pytestmark = pytest.mark.redis_cluster_too  # state tests run on a Redis Cluster too


def message(message_id: str) -> InboxMessage:
    return InboxMessage(
        message_id=message_id, title="图书馆开放时间 Library hours", body="延长至24点", app="campus",
        event_id="e1", template="campus_notice", category="notice", created_at=datetime.now(UTC),
    )


async def test_concurrent_clicks_count_one_first_click_and_one_first_read(redis: Redis) -> None:
    inbox = Inbox(redis)
    await inbox.add("u1", message("m1"))
    clicks = await asyncio.gather(*(inbox.mark_clicked("u1", "m1") for _ in range(20)))
    assert sum(first for _, first in clicks) == 1
    stored = await inbox.get("u1", "m1")
    assert stored is not None and stored.read_at is not None and stored.clicked_at is not None
    assert stored.title == "图书馆开放时间 Library hours"  # the body survives Lua's JSON round trip
    assert await inbox.unread_count("u1") == 0
    _, first_read = await inbox.mark_read("u1", "m1")
    assert not first_read  # the click already read it


async def test_a_read_then_a_click_are_each_first_once(redis: Redis) -> None:
    inbox = Inbox(redis)
    await inbox.add("u2", message("m2"))
    assert [(await inbox.mark_read("u2", "m2"))[1] for _ in range(3)] == [True, False, False]
    assert [(await inbox.mark_clicked("u2", "m2"))[1] for _ in range(3)] == [True, False, False]


async def test_a_deleted_or_unknown_message_is_not_marked_or_brought_back(redis: Redis) -> None:
    inbox = Inbox(redis)
    await inbox.add("u3", message("m3"))
    assert await inbox.delete("u3", "m3")
    assert await inbox.mark_clicked("u3", "m3") == (None, False)
    assert await inbox.get("u3", "m3") is None and await inbox.total("u3") == 0
