"""state/bulk.py on a real Redis (and Redis Cluster): replies in order, an error reply raised only once
every reply is read, and the connection still good for the next caller."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from state.bulk import run_all, write_all

pytestmark = pytest.mark.redis_cluster_too


async def test_replies_come_back_in_order_and_an_error_reply_is_raised_after_all(redis: Redis) -> None:
    await write_all(redis, [("SET", "sb:test:a", "1"), ("ZADD", "sb:test:z", 0, "x", 0, "y")])
    assert await run_all(redis, [("GET", "sb:test:a"), ("ZCARD", "sb:test:z"), ("GET", "sb:test:none")]) == [
        b"1", 2, None
    ]
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await run_all(redis, [("SADD", "sb:test:a", "m"), ("SET", "sb:test:b", "2")])
    # The command after the error ran, and the connection answers the next caller correctly.
    assert await redis.get("sb:test:b") == b"2"
    assert await run_all(redis, [("GET", "sb:test:b")]) == [b"2"]
