"""Fallback chains in a real worker: a step fires once when its condition holds, a read cancels it.

The first test arms chains the way decide does, so it holds whatever rules are loaded; the second
runs a chain from a rule file through decide, send and track into ClickHouse.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from analytics.connection import open_reader
from api.inbox import receipt_for
from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from records.plan import DeliveryPlan, FallbackStep
from records.topics import Dispatch, EventCore, message_id_for
from settings import Settings
from state.apps import AppRegistry
from state.engagement import EngagementHistory
from state.fallback import FallbackSchedule, chain_shard
from state.flow_counters import FlowCounters, caught_up, in_clickhouse
from state.inbox import Inbox
from state.users import User, UserDirectory
from tests.integration.signing import signatures

DEADLINE = 120.0
NOTICE = EventCore(
    event_id="library-hours",
    app="campus",
    type="campus.notice",
    template="campus_notice",
    category="notice",
    data={"headline": "Library hours", "body": "Open until midnight."},
)
INBOX_ONLY = """
ruleset: fallback-once
rules:
  - id: campus-notices
    when: {type: [campus.notice]}
    then: {channels: [inbox]}
"""
USERS = [
    User(user_id=name, bindings={"inbox": name, "email": f"{name}@uni.example"})
    for name in ("ignorer", "reader", "warm")
]


def notice(event_id: str, user_ids: list[str]) -> bytes:
    body = NOTICE.model_dump(mode="json") | {"event_id": event_id, "audience": {"user_ids": user_ids}}
    return json.dumps(body).encode()


def chain(user_id: str, after: timedelta) -> Dispatch:
    """The first dispatch of the notice, as decide emits it, with one step: not read → email."""
    step = FallbackStep(step=1, after=after, condition="not_read", channels=("email",))
    return Dispatch(
        message_id=message_id_for(NOTICE.app, NOTICE.event_id, user_id),
        user_id=user_id,
        channel="inbox",
        address=user_id,
        event=NOTICE,
        rule_id="campus-notices",
        rule_version="test",
        plan=DeliveryPlan(fallback=(step,)),
    )


async def produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    signed = await signatures(settings, values) if topic.startswith("events") else [None] * len(values)
    try:
        for value, headers in zip(values, signed, strict=True):
            await producer.send_and_wait(settings.topic(topic), value, key=b"test", headers=headers)
    finally:
        await producer.stop()


async def until(what: str, check: Callable[[], Awaitable[bool]], worker: SwitchboardProcess) -> None:
    """Poll the async predicate `check` until true; fail naming `what` with the worker's log."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert worker.running, f"worker exited while waiting for {what}:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"no {what} in {DEADLINE}s:\n{worker.log_tail()}"
        await asyncio.sleep(0.1)


async def warm_up(settings: Settings, redis: Redis, worker: SwitchboardProcess, emitted: int) -> None:
    """One event through the whole flow, so the worker has joined and the timers run."""
    await produce(settings, "events", [notice(f"warm-{emitted}", ["warm"])])
    counters = FlowCounters(redis)

    async def done() -> bool:
        return caught_up(await counters.read(), emitted, analytics=False)

    await until("warm-up", done, worker)


@pytest.mark.redis_cluster_too  # fallback chains sharded over a Redis Cluster too
async def test_an_unread_inbox_message_falls_back_to_email_once_and_a_read_one_does_not(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    # Rules of its own: the default ones hold notices for quiet hours, which would make this test pass
    # or fail by the time of day (it arms its chains itself; the rule only puts the notice in the inbox).
    rules = tmp_path / "rules.yaml"
    rules.write_text(INBOX_ONLY)
    flow = settings.model_copy(
        update={"clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "rules": rules}
    )
    await UserDirectory(redis).upsert(USERS)
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    schedule = FallbackSchedule(redis)
    inbox = Inbox(redis)
    with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
        await warm_up(flow, redis, worker, 1)
        now = datetime.now(UTC)
        ignorer, reader = chain("ignorer", timedelta(seconds=2)), chain("reader", timedelta(seconds=60))
        assert await schedule.arm(ignorer, None, now)
        assert await schedule.arm(reader, None, now)
        await produce(flow, "events", [notice(NOTICE.event_id, ["ignorer", "reader"])])

        async def inbox_delivered() -> bool:
            return await inbox.total("reader") == 1 and await inbox.total("ignorer") == 1

        await until("inbox delivery", inbox_delivered, worker)
        message, first = await inbox.mark_read("reader", reader.message_id)
        assert message is not None and first
        # What the API publishes when the portal marks a message read.
        await produce(flow, "receipts", [receipt_for(message, "reader", "read").model_dump_json().encode()])

        async def reader_chain_ended() -> bool:
            return await redis.zscore(chain_shard(reader.message_id).due, reader.message_id) is None

        async def ignorer_emailed() -> bool:
            return smtp.count >= 1

        await until("cancelled chain for the reader", reader_chain_ended, worker)
        await until("fallback email to the ignorer", ignorer_emailed, worker)
        # Anything fired twice, or the reader's step, would arrive within a couple of timer rounds.
        await asyncio.sleep(3)
        assert worker.stop() == 0, worker.log_tail()

    assert [r for mail in smtp.messages for r in mail.rcpt_tos] == ["ignorer@uni.example"]
    assert list(await EngagementHistory(redis).last_active(["reader", "ignorer"])) == [
        "reader"
    ]  # track saw the read
    assert await redis.hget(chain_shard(reader.message_id).message(reader.message_id), "next") == b"0"
    assert await redis.hget(chain_shard(ignorer.message_id).message(ignorer.message_id), "f:1") is not None
    assert await schedule.pending() == 0


RULES = """
ruleset: fallback-test
rules:
  - id: patient-notices
    description: Notices to patient readers; an email follows only after a minute unread.
    when:
      type: [campus.notice]
      tags_any: [patient]
    then:
      channels: [inbox]
      fallback:
        - {after: 1m, if_not: read, first_of: [email]}
  - id: notices
    description: Notices go to the inbox; unread after 2 seconds, by SMS or else email.
    when:
      type: [campus.notice]
    then:
      channels: [inbox]
      fallback:
        - {after: 2s, if_not: read, first_of: [sms, email]}
"""


def message_events(settings: Settings) -> list[tuple[str, str, str, int]]:
    """(user, channel, status, step) rows, read through the analytics service's HTTP interface."""
    client = open_reader(settings)
    try:
        rows = client.query(
            "SELECT user_id, channel, status, step FROM message_events FINAL "
            "ORDER BY user_id, step, channel, status"
        ).result_rows
    finally:
        client.close()
    return [(str(u), str(c), str(s), int(n)) for u, c, s, n in rows]


async def test_a_rule_s_fallback_chain_runs_in_the_worker(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    flow = settings.model_copy(
        update={"clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "rules": rules}
    )
    await UserDirectory(redis).upsert(
        [
            User(user_id="ignorer", bindings={"inbox": "ignorer", "email": "ignorer@uni.example"}),
            User(
                user_id="reader",
                tags=("patient",),
                bindings={"inbox": "reader", "email": "reader@uni.example"},
            ),
            User(user_id="warm", bindings={"inbox": "warm"}),
        ]
    )
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    inbox = Inbox(redis)
    reader_message = message_id_for(NOTICE.app, NOTICE.event_id, "reader")
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
    ):
        await warm_up(flow, redis, worker, 1)
        await produce(flow, "events", [notice(NOTICE.event_id, ["ignorer", "reader"])])

        async def reader_delivered() -> bool:
            return await inbox.total("reader") == 1

        await until("inbox delivery", reader_delivered, worker)
        message, _ = await inbox.mark_read("reader", reader_message)
        assert message is not None
        await produce(flow, "receipts", [receipt_for(message, "reader", "read").model_dump_json().encode()])

        async def reader_chain_ended() -> bool:
            return await redis.hget(chain_shard(reader_message).message(reader_message), "next") == b"0"

        async def ignorer_emailed() -> bool:
            return smtp.count >= 1

        await until("cancelled chain for the reader", reader_chain_ended, worker)
        await until("fallback email to the ignorer", ignorer_emailed, worker)
        await asyncio.sleep(3)
        assert worker.stop() == 0, worker.log_tail()
        counters = FlowCounters(redis)

        async def all_rows_written() -> bool:
            return in_clickhouse(await counters.read())

        await until("every row in ClickHouse", all_rows_written, service)
        rows = message_events(flow)

    assert [r for mail in smtp.messages for r in mail.rcpt_tos] == ["ignorer@uni.example"]
    ignorer = [row[1:] for row in rows if row[0] == "ignorer"]
    assert ignorer == [
        ("inbox", "decided", 0),
        ("inbox", "delivered", 0),
        ("inbox", "sent", 0),
        ("email", "decided", 1),
        ("email", "sent", 1),
    ]
    assert [row[1:] for row in rows if row[0] == "reader"] == [
        ("inbox", "decided", 0),
        ("inbox", "delivered", 0),
        ("inbox", "read", 0),
        ("inbox", "sent", 0),
    ]
