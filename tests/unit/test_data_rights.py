"""Data rights without services: pseudonyms, the identifiers an erasure looks for, whole-word matching
and scrubbing, the SQL literals, and the analytics service handing `erasures` records to its writer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from pydantic import ValidationError

from analytics import erasure
from analytics.service import AnalyticsService
from analytics.sink import ReceiptsRecord
from api.person_rights import _notes, pseudonym_key
from records.erasure import ErasedAddress, ErasureRequest, pseudonym
from records.topics import address_user_id
from state.person_sweep import quotes, scrub

KEY = pseudonym_key("a-long-enough-link-secret-for-tests")


def request(**more: Any) -> ErasureRequest:
    email = "li.wei@uni.example"
    return ErasureRequest(
        user_id="s2024001",
        pseudonym=pseudonym(KEY, "s2024001"),
        addresses=(
            ErasedAddress(channel="email", address=email, address_id=address_user_id("email", email)),
        ),
        **more,
    )


def test_a_pseudonym_is_stable_keyed_and_tells_nothing() -> None:
    assert pseudonym(KEY, "s2024001") == pseudonym(KEY, "s2024001")
    assert pseudonym(KEY, "s2024001") != pseudonym(KEY, "s2024002")
    assert pseudonym(pseudonym_key("another-secret-of-enough-length"), "s2024001") != pseudonym(
        KEY, "s2024001"
    )
    assert pseudonym(KEY, "s2024001").startswith("erased:") and "s2024001" not in pseudonym(KEY, "s2024001")


def test_an_erasure_looks_for_the_id_the_addresses_and_their_ids() -> None:
    asked = request()
    email_id = address_user_id("email", "li.wei@uni.example")
    assert asked.identifiers() == ["s2024001", "li.wei@uni.example", email_id]
    assert asked.row_ids() == ["s2024001", email_id]
    with pytest.raises(ValidationError, match="pseudonym"):
        ErasureRequest(user_id="s2024001", pseudonym="s2024001")
    with pytest.raises(ValidationError, match="mode"):
        request(mode="shred")


def test_a_needle_is_found_and_scrubbed_only_as_a_whole_word() -> None:
    assert quotes("blacklisted (the address belongs to s2024001)", ["s2024001"])
    assert not quotes("s20240010 and xs2024001", ["s2024001"])
    assert quotes("550 <li.wei@uni.example> unknown", ["li.wei@uni.example"])
    assert not quotes("li.wei@uni.example.cn", ["li.wei@uni.example"])
    assert scrub("to li.wei@uni.example and s2024001, not s20240011", ["li.wei@uni.example", "s2024001"]) == (
        "to [erased] and [erased], not s20240011"
    )


def test_sql_literals_escape_quotes_and_backslashes() -> None:
    assert erasure._literal("o'brien\\x") == "'o\\'brien\\\\x'"
    condition = erasure._mentions("reason", ["a'b"])
    assert condition.startswith("(match(reason, '") and "a\\\\'b" not in condition and "a\\'b" in condition


def test_an_export_that_holds_more_says_how_to_ask_for_the_rest() -> None:
    assert len(_notes([], 100, 0)) == 1
    assert "history_offset=300" in _notes(["message_events"], 100, 200)[1]


@dataclass
class Writers:
    erased: list[ReceiptsRecord] = field(default_factory=list)

    def receipts(self, records: Sequence[ReceiptsRecord]) -> int:
        return 0

    def accepted(self, records: Sequence[ReceiptsRecord]) -> tuple[int, int]:
        return 0, 0

    def conversions(self, records: Sequence[ReceiptsRecord]) -> tuple[int, int]:
        return 0, 0

    def erasures(self, records: Sequence[ReceiptsRecord]) -> int:
        self.erased.extend(records)
        return len(records)


@dataclass
class Message:
    offset: int
    value: bytes


class Consumer:
    def __init__(self, batches: list[dict[TopicPartition, list[Message]]]) -> None:
        self.batches = batches
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, timeout_ms: int = 0, max_records: int = 0) -> dict[TopicPartition, list[Message]]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


async def test_the_analytics_service_hands_erasure_requests_to_its_writer_then_commits() -> None:
    topic = TopicPartition("erasures", 0)
    consumer = Consumer([{topic: [Message(4, request().model_dump_json().encode())]}])
    writers = Writers()

    async def progress(counts: Mapping[str, int]) -> None:
        return None

    consumer_any: Any = consumer
    service = AnalyticsService(consumer_any, {"erasures": "erasures"}, writers, progress, batch_wait=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    for _ in range(200):
        if consumer.commits:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert [source for source, _ in writers.erased] == ["erasures:0:4"]
    assert consumer.commits == [{topic: 5}]
