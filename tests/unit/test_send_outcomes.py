"""An outcome that Redis could not take is written again until it can: never turned into a resend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from redis import exceptions as redis

from processors.send import _durably, _receipts_again, _record
from records.topics import Dispatch
from state.idempotency import SendRecord


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


def test_rows_made_again_from_a_record_name_the_template_version() -> None:
    event = {"event_id": "e1", "app": "shop", "type": "t", "template": "fee_notice", "category": "notice"}
    dispatch = Dispatch.model_validate({
        "message_id": "m1", "user_id": "u1", "channel": "sms", "address": "+8613800000000",
        "event": event, "rule_id": "r", "rule_version": "v1",
    })
    sent = _record("delivered", "aliyun", datetime.now(UTC), cost=0.05, version=4)
    record = SendRecord.decode(sent.encode())
    rows = _receipts_again(dispatch, record)
    assert [(r.status, r.template, r.template_version) for r in rows] == [
        ("sent", "fee_notice", 4), ("delivered", "fee_notice", 4)
    ]
    older = SendRecord.decode(b'{"outcome":"failed","provider":"aliyun","at":"2026-01-01T00:00:00+00:00"}')
    assert [r.template_version for r in _receipts_again(dispatch, older)] == [0]  # recorded before versions
