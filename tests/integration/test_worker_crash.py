"""A worker killed mid-flow and restarted: every person still gets exactly one email and one inbox
message (at-least-once through Kafka, effectively-once towards people through the send ledger)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from app import Settings
from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from state.apps import AppRegistry
from state.flow_counters import FlowCounters
from state.inbox import Inbox
from state.users import User, UserDirectory

PEOPLE = 200
DEADLINE = 150.0


def fee_due(i: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"fee-{i}",
            "app": "bursar",
            "type": "fee.due",
            "template": "fee_due",
            "category": "transactional",
            "audience": {"user_ids": [f"p{i}"]},
            "data": {"amount": "¥10", "due_date": "2026-12-01", "term": "Autumn"},
        }
    ).encode()


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
    try:
        for i in range(PEOPLE):
            await producer.send_and_wait(flow.topic("events"), fee_due(i), key=f"p{i}".encode())
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
