"""One record can never stop the flow: records that cannot be carried sit among good events on one
partition; each good event is processed exactly once, with and without a worker restart between, and
a stage paused mid-batch by Redis stalling and dying processes that whole batch once Redis is back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from localparts import free_port
from localparts.redis_server import LocalRedis
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.flow_counters import FlowCounters, caught_up
from state.inbox import Inbox
from state.users import User, UserDirectory
from tests.integration.signing import Headers, signatures

GOOD = 40
DEADLINE = 150.0
KEY = b"one-partition"  # every record on one partition: a stuck record would hold all behind it
MAX_EVENT_BYTES = 1_500_000  # over the 1 MB record limit, so a delivery can be too large to carry


def fee_due(i: int, padding: int = 0) -> bytes:
    return json.dumps(
        {
            "event_id": f"fee-{i}",
            "app": "bursar",
            "type": "fee.statement",  # rule fees-and-payments: the inbox for inbox-only people
            "template": "fee_due",
            "category": "transactional",
            "audience": {"user_ids": [f"p{i}"]},
            "data": {"amount": "¥10", "due_date": "2026-12-01", "term": "Autumn", "note": "x" * padding},
        }
    ).encode()


# The valid 2 MB event of the held-out run (over max_event_bytes), a 1.2 MB one under it whose
# delivery cannot fit in a record, and one that is not JSON.
POISON = {
    "over max_event_bytes": fee_due(1000, padding=2_000_000),
    "delivery too large": fee_due(1001, padding=1_200_000),
    "invalid JSON": b'{"event_id": "broken"',
}


async def produce(settings: Settings, values: list[bytes], signed: list[Headers] | None = None) -> None:
    """Produce signed records; `signed`: their headers worked out beforehand (while Redis answers)."""
    signed = signed if signed is not None else await signatures(settings, values)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all", max_request_size=4_000_000
    )
    await producer.start()
    try:
        for value, headers in zip(values, signed, strict=True):
            await producer.send_and_wait(settings.topic("events"), value, key=KEY, headers=headers)
    finally:
        await producer.stop()


async def dead_letters(settings: Settings, expected: int) -> dict[str, dict[str, Any]]:
    """The letters on the dead-letter topic, by the source record they name."""
    consumer = AIOKafkaConsumer(
        settings.topic("events.deadletter"),
        bootstrap_servers=settings.kafka.removeprefix("kafka://"),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 20
        while len(found) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    letter = json.loads(record.value)
                    found[letter["source"]] = letter
    finally:
        await consumer.stop()
    return found


async def people(redis: Redis, count: int) -> None:
    """p0… for the good events, p1000 and p1001 for the large ones (known, so they would be sent)."""
    await UserDirectory(redis).upsert(
        [User(user_id=f"p{i}", bindings={"inbox": f"p{i}"}) for i in [*range(count), 1000, 1001]]
    )
    await AppRegistry(redis).register("bursar", {"inbox"})


async def wait_processed(
    redis: Redis, worker: SwitchboardProcess, good: range, events: int, deadline: float
) -> list[int]:
    """Wait until every good event reached its inbox and the flow caught up; the inbox totals."""
    inbox, counters = Inbox(redis), FlowCounters(redis)
    while True:
        totals = [await inbox.total(f"p{i}") for i in good]
        if all(totals) and caught_up(await counters.read(), events, analytics=False):
            return totals
        assert worker.running, worker.log_tail()
        assert time.monotonic() < deadline, (
            f"{sum(map(bool, totals))} of {len(good)} good events processed, "
            f"{await counters.read()}\n{worker.log_tail()}"
        )
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("restart", [False, True], ids=["one-worker", "restart-between"])
async def test_records_that_cannot_be_carried_are_dead_lettered_and_every_good_event_goes_through(
    settings: Settings, redis: Redis, tmp_path: Path, restart: bool
) -> None:
    flow = settings.model_copy(
        update={
            "clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}",
            "partitions": 1,
            "max_event_bytes": MAX_EVENT_BYTES,
        }
    )
    await people(redis, GOOD)
    poison = list(POISON.values())
    # Poison in the middle of each half, so it shares a batch with good events before and after it.
    first = [fee_due(i) for i in range(10)] + poison + [fee_due(i) for i in range(10, 20)]
    second = (
        [fee_due(i) for i in range(20, 30)]
        + [POISON["over max_event_bytes"]]
        + [fee_due(i) for i in range(30, GOOD)]
    )
    deadline = time.monotonic() + DEADLINE
    worker = SwitchboardProcess("worker", flow, tmp_path / "worker-1.log")
    worker.start()
    try:
        await produce(flow, first)
        await wait_processed(redis, worker, range(20), len(first), deadline)
        if restart:
            assert worker.stop() == 0, worker.log_tail()
            worker = SwitchboardProcess("worker", flow, tmp_path / "worker-2.log")
            worker.start()
        await produce(flow, second)
        totals = await wait_processed(redis, worker, range(GOOD), len(first) + len(second), deadline)
        await asyncio.sleep(2)  # anything redelivered late would show up now
        totals = [await Inbox(redis).total(f"p{i}") for i in range(GOOD)]
    finally:
        worker.stop()

    assert totals == [1] * GOOD  # every good event processed, each once
    counts = await FlowCounters(redis).read()
    assert counts["events"] == len(first) + len(second)
    assert counts["dead_lettered"] == len(POISON) + 1
    letters = await dead_letters(flow, len(POISON) + 1)
    reasons = sorted(letter["reason"] for letter in letters.values())
    assert len(reasons) == len(POISON) + 1, reasons
    assert sum(f"over the limit of {MAX_EVENT_BYTES}" in r for r in reasons) == 2, reasons
    assert sum("over the producer's record limit of 1000000" in r for r in reasons) == 1, reasons
    assert sum("invalid JSON" in r for r in reasons) == 1, reasons
    big = next(v for v in letters.values() if v["event_id"] == "fee-1000")
    assert big["payload_truncated"] and big["payload_bytes"] == len(POISON["over max_event_bytes"])
    assert big["app"] == "bursar"
    assert [await Inbox(redis).total(f"p{i}") for i in (1000, 1001)] == [0, 0]


async def test_a_stage_paused_by_redis_mid_batch_processes_the_whole_batch_when_it_is_back(
    settings: Settings, tmp_path: Path
) -> None:
    # The worker's own Redis, which the test stalls and kills under it (its AOF keeps the people and
    # the app).
    state = LocalRedis(port=free_port(), log_path=tmp_path / "redis.log", data_dir=tmp_path / "redis")
    state.start()
    flow = settings.model_copy(
        update={"clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "redis": state.url, "partitions": 1}
    )
    redis = Redis.from_url(state.url)
    try:
        await people(redis, GOOD + 1)
        deadline = time.monotonic() + DEADLINE
        with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
            await produce(flow, [fee_due(GOOD)])  # shows when the worker is up and consuming
            batch = [fee_due(i) for i in range(GOOD)]
            signed = await signatures(flow, batch)
            await wait_processed(redis, worker, range(GOOD, GOOD + 1), 1, deadline)
            await redis.aclose()
            await asyncio.sleep(1.5)  # the AOF is synced every second
            # Redis stalls: the worker takes the batch and waits inside it, on Redis...
            os.kill(state.pid or 0, signal.SIGSTOP)
            await produce(flow, batch, signed)
            await asyncio.sleep(3)
            # ...then dies: the stage waits mid-batch, the worker stays up.
            os.kill(state.pid or 0, signal.SIGKILL)
            await asyncio.sleep(3)
            assert worker.running, worker.log_tail()
            state.stop()
            state.start()
            redis = Redis.from_url(state.url)
            totals = await wait_processed(redis, worker, range(GOOD), GOOD + 1, deadline)
            await asyncio.sleep(2)
            totals = [await Inbox(redis).total(f"p{i}") for i in range(GOOD)]
            assert "unreachable" in worker.log_tail(400), worker.log_tail()
        assert totals == [1] * GOOD  # every event of the paused batch processed, each once
        assert (await FlowCounters(redis).read())["events"] >= GOOD + 1
    finally:
        await redis.aclose()
        state.stop()
