"""Sizing produced records, telling infrastructure from poison, isolating a failing record, and
dead letters that fit in a record themselves."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from aiokafka import errors as kafka
from clickhouse_connect.driver import exceptions as clickhouse
from redis import exceptions as redis

from processors.dead_letters import PAYLOAD_KEPT, dead_letter, dead_letter_receipt
from processors.failures import is_infrastructure, isolate
from processors.outbox import pack, record_size


def test_items_are_packed_into_arrays_within_the_budget_in_order() -> None:
    items = [b"x" * 40] * 10
    groups, oversized = pack(items, budget=100)
    assert oversized == []
    assert [i for group in groups for i in group] == list(range(10))
    for group in groups:
        assert len(b"[" + b",".join(items[i] for i in group) + b"]") <= 100
    assert [len(g) for g in groups] == [2] * 5  # 2 + 40 + 1 + 40 = 83; a third would make 124


def test_an_item_that_fits_no_array_is_set_aside_and_the_rest_still_packed() -> None:
    groups, oversized = pack([b"a" * 10, b"b" * 200, b"c" * 10], budget=100)
    assert oversized == [1]
    assert groups == [[0, 2]]


def test_arrays_hold_at_most_per_record_items() -> None:
    groups, _ = pack([b"1"] * 7, budget=10_000, per_record=3)
    assert [len(g) for g in groups] == [3, 3, 1]


def test_record_size_is_what_the_producer_checks() -> None:
    assert record_size(b"k", b"v" * 1000) > 1001
    assert record_size(b"k", b"v" * 1000) < 1100


@pytest.mark.parametrize(
    "exc",
    [
        redis.ConnectionError("refused"),
        redis.BusyLoadingError("loading"),
        redis.TimeoutError(),
        redis.ReadOnlyError("replica"),
        ConnectionRefusedError(),
        TimeoutError(),
        kafka.KafkaConnectionError(),
        kafka.KafkaTimeoutError(),
        kafka.NodeNotReadyError(),
        clickhouse.OperationalError("unreachable"),
        MemoryError(),
    ],
)
def test_infrastructure_errors_stop_the_stage(exc: BaseException) -> None:
    assert is_infrastructure(exc)


@pytest.mark.parametrize(
    "exc",
    [
        kafka.MessageSizeTooLargeError(),
        ValueError("bad value"),
        KeyError("missing"),
        redis.ResponseError("WRONGTYPE"),
        clickhouse.DataError("bad row"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
    ],
)
def test_a_records_own_errors_are_poison(exc: BaseException) -> None:
    assert not is_infrastructure(exc)


async def test_isolate_handles_a_good_batch_once() -> None:
    calls: list[Sequence[int]] = []

    async def handle(items: Sequence[int]) -> int:
        calls.append(items)
        return sum(items)

    assert await isolate([1, 2, 3], handle, "test") == ([6], [])
    assert calls == [[1, 2, 3]]


async def test_isolate_finds_the_failing_record_and_keeps_the_others() -> None:
    async def handle(items: Sequence[int]) -> list[int]:
        if 13 in items:
            raise ValueError("thirteen")
        return list(items)

    results, poisoned = await isolate([1, 13, 2], handle, "test")
    assert results == [[1], [2]]
    assert [(item, str(exc)) for item, exc in poisoned] == [(13, "thirteen")]


async def test_isolate_lets_infrastructure_errors_through() -> None:
    async def handle(items: Sequence[int]) -> int:
        raise redis.ConnectionError("Redis is down")

    with pytest.raises(redis.ConnectionError):
        await isolate([1, 2], handle, "test")


def test_a_small_payload_is_kept_byte_for_byte() -> None:
    raw = json.dumps({"app": "lms", "note": "课程提醒"}).encode()
    letter = dead_letter(raw, "events:0:7", "bad", app="lms", event_id="e1")
    assert letter.payload.encode() == raw and letter.payload_encoding == "utf-8"
    assert not letter.payload_truncated and letter.payload_bytes == len(raw)


def test_a_huge_payload_keeps_its_head_so_the_letter_fits_in_a_record() -> None:
    raw = ("提" * 1_000_000).encode()  # 3 MB of three-byte characters, cut inside one of them
    letter = dead_letter(raw, "events:0:8", "event is too large")
    assert letter.payload_truncated and letter.payload_bytes == len(raw)
    assert letter.payload_encoding == "utf-8" and raw.startswith(letter.payload.encode())
    assert PAYLOAD_KEPT - 3 <= len(letter.payload.encode()) <= PAYLOAD_KEPT
    assert len(letter.model_dump_json()) < 100_000


def test_a_binary_payload_is_kept_as_base64() -> None:
    letter = dead_letter(b"\xff\xfe\x00", "events:0:9", "invalid JSON")
    assert letter.payload_encoding == "base64" and letter.payload == "//4A"


def test_the_dead_lettered_row_names_the_message_when_known_and_says_why() -> None:
    letter = dead_letter(b"{}", "dispatch:1:2", "send failed: ValueError: x", app="lms", event_id="e1")
    row = dead_letter_receipt(letter, message_id="m1", user_id="u1")
    assert (row.status, row.message_id, row.user_id, row.app) == ("dead_lettered", "m1", "u1", "lms")
    assert row.reason == "send failed: ValueError: x"
    same = dead_letter_receipt(dead_letter(b"{}", "dispatch:1:2", "again"))
    assert same.message_id == dead_letter_receipt(letter).message_id  # replays collapse into one row
