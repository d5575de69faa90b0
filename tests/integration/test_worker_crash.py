"""A worker killed mid-flow and restarted: every person still gets exactly one email and one inbox
message (at-least-once through Kafka, effectively-once towards people through the send ledger);
a fallback step claimed by a worker that died goes out once after a restart."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from records.plan import DeliveryPlan, FallbackStep
from records.topics import Dispatch, EventCore, message_id_for
from settings import Settings
from state.apps import AppRegistry
from state.fallback import SHARDS, FallbackSchedule
from state.flow_counters import FlowCounters, caught_up
from state.inbox import Inbox
from state.users import User, UserDirectory
from tests.integration.signing import signatures

PEOPLE = 200
DEADLINE = 150.0


def fee_due(i: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"fee-{i}",
            "app": "bursar",
            "type": "fee.statement",  # rule fees-and-payments: email and inbox
            "template": "fee_due",
            "category": "transactional",
            "audience": {"user_ids": [f"p{i}"]},
            "data": {"amount": "¥10", "due_date": "2026-12-01", "term": "Autumn"},
        }
    ).encode()


async def produce_events(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    signed = await signatures(settings, values)
    try:
        for value, headers in zip(values, signed, strict=True):
            await producer.send_and_wait(settings.topic("events"), value, key=b"test", headers=headers)
    finally:
        await producer.stop()


async def test_a_killed_worker_loses_nothing_and_sends_nothing_twice(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    # Short claims, so a send the killed worker held is retried within the test's time.
    flow = settings.model_copy(
        update={"clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "send_claim_seconds": 5}
    )
    await UserDirectory(redis).upsert(
        [
            User(user_id=f"p{i}", bindings={"email": f"p{i}@uni.example", "inbox": f"p{i}"})
            for i in range(PEOPLE)
        ]
    )
    await AppRegistry(redis).register("bursar", {"email", "inbox"})
    counters = FlowCounters(redis)
    first = SwitchboardProcess("worker", flow, tmp_path / "worker-1.log")
    first.start()
    producer = AIOKafkaProducer(bootstrap_servers=flow.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    values = [fee_due(i) for i in range(PEOPLE)]
    try:
        for i, (value, headers) in enumerate(zip(values, await signatures(flow, values), strict=True)):
            await producer.send_and_wait(flow.topic("events"), value, key=f"p{i}".encode(), headers=headers)
    finally:
        await producer.stop()

    # Kill it while sends are under way.
    deadline = time.monotonic() + DEADLINE
    while (await counters.read()).get("sent_done", 0) < PEOPLE // 2:
        assert first.running, first.log_tail()
        assert time.monotonic() < deadline, f"no progress: {await counters.read()}\n{first.log_tail()}"
        await asyncio.sleep(0.05)
    first.kill()

    inbox = Inbox(redis)
    with SwitchboardProcess("worker", flow, tmp_path / "worker-2.log") as second:
        while True:
            totals = [await inbox.total(f"p{i}") for i in range(PEOPLE)]
            if smtp.count >= PEOPLE and all(totals):
                break
            assert second.running, second.log_tail()
            assert time.monotonic() < deadline, (
                f"after restart: {smtp.count} emails, {sum(map(bool, totals))} inboxes, "
                f"{await counters.read()}\n{second.log_tail()}"
            )
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # anything redelivered late would show up now

    recipients = [r for mail in smtp.messages for r in mail.rcpt_tos]
    assert sorted(recipients) == sorted(f"p{i}@uni.example" for i in range(PEOPLE))  # each exactly once
    assert [await inbox.total(f"p{i}") for i in range(PEOPLE)] == [1] * PEOPLE


async def test_a_fallback_step_claimed_by_a_dead_worker_fires_once_after_restart(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    flow = settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}"})
    await UserDirectory(redis).upsert(
        [User(user_id="p0", bindings={"email": "p0@uni.example", "inbox": "p0"})]
    )
    await AppRegistry(redis).register("bursar", {"email", "inbox"})
    step = FallbackStep(step=1, after=timedelta(seconds=1), condition="not_read", channels=("email",))
    event = EventCore.model_validate({k: v for k, v in json.loads(fee_due(0)).items() if k != "audience"})
    first = Dispatch(
        message_id=message_id_for(event.app, event.event_id, "p0"),
        user_id="p0",
        channel="inbox",
        address="p0",
        event=event,
        rule_id="fees",
        rule_version="test",
        plan=DeliveryPlan(fallback=(step,)),
    )
    # A worker armed the chain, claimed its step when due, and died before emitting it.
    schedule = FallbackSchedule(redis)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    await schedule.arm(first, None, long_ago)
    assert len(await schedule.fire_due(long_ago + timedelta(seconds=1))) == 1

    deadline = time.monotonic() + DEADLINE
    counters = FlowCounters(redis)
    for attempt in (1, 2):
        with SwitchboardProcess("worker", flow, tmp_path / f"worker-{attempt}.log") as worker:
            # An event for an inbox-only user shows when this worker is up and consuming.
            await produce_events(flow, [fee_due(attempt)])
            while smtp.count < 1 or not caught_up(await counters.read(), attempt, analytics=False):
                assert worker.running, worker.log_tail()
                assert time.monotonic() < deadline, f"no fallback email\n{worker.log_tail()}"
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)  # a second emission would come within a few timer rounds
            assert worker.stop() == 0, worker.log_tail()
    assert [r for mail in smtp.messages for r in mail.rcpt_tos] == ["p0@uni.example"]
    assert sum([await redis.zcard(shard.inflight) for shard in SHARDS]) == 0
