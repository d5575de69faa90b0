"""An outcome that Redis could not take is written again until it can: never turned into a resend."""

from __future__ import annotations

import pytest
from redis import exceptions as redis

from processors.send import _durably


async def test_an_outcome_is_written_once_redis_is_back() -> None:
    attempts: list[int] = []

    async def write() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise redis.ConnectionError("Connection refused")  # Redis restarting
        return "recorded"

    assert await _durably(write, "a send's outcome") == "recorded"
    assert len(attempts) == 3


async def test_a_write_that_fails_on_its_own_is_not_retried() -> None:
    attempts: list[int] = []

    async def write() -> str:
        attempts.append(1)
        raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    with pytest.raises(redis.ResponseError):
        await _durably(write, "a send's outcome")
    assert len(attempts) == 1
