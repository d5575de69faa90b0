"""Batch records on the internal topics: msgspec encoding and decoding, one bad item read alone, and
batches grouped by the partition of their users."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
from aiokafka.partitioner import murmur2

from processors.outbox import Outbox
from records.plan import DeliveryPlan, Pacing
from records.topics import Delivery, Dispatch, EventCore, Receipt
from records.wire import Unreadable, WireDecoder, WireEncoder

EVENT = EventCore(
    event_id="e1",
    app="campus",
    type="campus.notice",
    template="campus_notice",
    category="notice",
    data={"headline": "Library hours", "nested": [1, {"deep": True}]},
)


def delivery(user: str) -> Delivery:
    return Delivery(message_id=f"m-{user}", user_id=user, event=EVENT)


def dispatch(user: str) -> Dispatch:
    plan = DeliveryPlan(pacing=Pacing(per_second=500, key="type"), variant="a")
    return Dispatch(
        message_id=f"m-{user}",
        user_id=user,
        channel="inbox",
        address=user,
        event=EVENT,
        rule_id="campus-notices",
        rule_version="v1",
        plan=plan,
        template="other",
    )


def test_items_read_back_equal_to_what_pydantic_would_read() -> None:
    items = [delivery("u1"), dispatch("u2")]
    encoded = WireEncoder().encode(items)
    wire = WireDecoder()
    assert wire.delivery(encoded[0]) == items[0] == Delivery.model_validate_json(encoded[0])
    assert wire.dispatch(encoded[1]) == items[1] == Dispatch.model_validate_json(encoded[1])
    assert json.loads(encoded[0])["event"]["data"]["headline"] == "Library hours"  # readable JSON


def test_a_dispatch_to_one_of_every_address_keeps_saying_so() -> None:
    one_of_all = dispatch("u3").model_copy(update={"every_address": True})
    [encoded] = WireEncoder().encode([one_of_all])
    # Its send is claimed per address: losing the flag on the wire would send one device only.
    assert WireDecoder().dispatch(encoded) == one_of_all == Dispatch.model_validate_json(encoded)


def test_a_broadcasts_deliveries_share_one_validated_event() -> None:
    record = b"[" + b",".join(WireEncoder().encode([delivery(f"u{i}") for i in range(3)])) + b"]"
    wire = WireDecoder()
    items = wire.items(record)
    assert isinstance(items, list) and len(items) == 3
    read = [wire.delivery(raw) for raw in items]
    assert all(isinstance(d, Delivery) for d in read)
    assert len({id(d.event) for d in read if isinstance(d, Delivery)}) == 1


def test_a_malformed_item_is_unreadable_alone_with_the_field_named() -> None:
    good = WireEncoder().encode([delivery("u1")])[0]
    bad = json.dumps({**json.loads(good), "user_id": 7}).encode()
    bad_event = json.dumps({**json.loads(good), "event": {**json.loads(good)["event"], "category": "x"}})
    wire = WireDecoder()
    items = wire.items(b"[" + b",".join([good, bad, bad_event.encode()]) + b"]")
    assert isinstance(items, list)
    first, second, third = (wire.delivery(raw) for raw in items)
    assert isinstance(first, Delivery)
    assert isinstance(second, Unreadable) and "$.user_id" in second.reason and "str" in second.reason
    assert isinstance(third, Unreadable) and "category" in third.reason


def test_a_record_that_is_no_array_is_unreadable_and_an_object_is_a_batch_of_one() -> None:
    wire = WireDecoder()
    assert isinstance(wire.items(b"[1, 2"), Unreadable)
    single = delivery("u1").model_dump_json().encode()
    assert wire.items(single) == [single]


def test_receipts_keep_their_json_shape_and_bad_ones_are_named() -> None:
    receipt = Receipt(message_id="m1", status="delivered", channel="inbox", attempt=1)
    record = b"[" + receipt.model_dump_json().encode() + b',{"message_id":"m2","status":"lost"}]'
    (first, second), count = WireDecoder().receipts(record)
    assert count == 2
    assert Receipt.model_validate(msgspec.structs.asdict(first)) == receipt
    assert isinstance(second, Unreadable) and "$.status" in second.reason


class _Topic:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.sent: list[tuple[bytes, bytes]] = []

    def get_topic_name(self) -> str:
        return "deliveries"

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Counters:
    async def add(self, counts: Any) -> None:
        return None


async def test_batches_hold_only_users_of_the_partition_their_key_goes_to() -> None:
    topic, dead = _Topic(4), _Topic(1)
    outbox = Outbox(dead, dead, _Counters(), record_limit=1_000_000)  # type: ignore[arg-type]
    items = [(delivery(f"user-{i}"), "test") for i in range(200)]
    assert await outbox.batches(topic, items) == 200  # type: ignore[arg-type]
    assert 1 < len(topic.sent) <= 4
    seen = []
    for key, value in topic.sent:
        partition = (murmur2(key) & 0x7FFFFFFF) % 4
        users = [item["user_id"] for item in json.loads(value)]
        assert {(murmur2(u.encode()) & 0x7FFFFFFF) % 4 for u in users} == {partition}
        seen += users
    assert sorted(seen) == sorted(d.user_id for d, _ in items)


async def test_an_item_too_large_for_any_record_is_dead_lettered_alone() -> None:
    topic, dead = _Topic(1), _Topic(1)
    outbox = Outbox(dead, dead, _Counters(), record_limit=4000)  # type: ignore[arg-type]
    huge = Delivery(
        message_id="m-huge", user_id="huge", event=EVENT.model_copy(update={"data": {"x": "y" * 5000}})
    )
    produced = await outbox.batches(topic, [(delivery("u1"), "s1"), (huge, "s2")])  # type: ignore[arg-type]
    assert produced == 1
    assert [json.loads(v)[0]["user_id"] for _, v in topic.sent] == ["u1"]
    letters = [json.loads(v) for _, v in dead.sent if b'"reason"' in v and b"source" in v]
    assert any(
        letter["source"] == "s2" and "over the producer's limit" in letter["reason"] for letter in letters
    )
