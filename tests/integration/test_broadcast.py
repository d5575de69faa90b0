"""Broadcasts streamed page by page, and the urgent lane, against the real broker and Redis.

The audience indexes are walked in pages without repeats; a broadcast over several pages reaches
everyone exactly once; a worker killed mid-expansion is replaced and nobody is missed or doubled; a
login code emitted behind a campaign's backlog is sent before that backlog drains.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis
from typer.testing import CliRunner

from api.publisher import KafkaPublisher
from app import cli
from localparts import LocalParts, LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from records.topics import EventCore
from settings import ROOT, Settings
from state.apps import AppRegistry
from state.broadcasts import BroadcastJobs
from state.flow_counters import FlowCounters
from state.inbox import Inbox
from state.users import ALL_USERS, AudienceIndex, AudienceWalk, User, UserDirectory
from tests.integration.signing import signatures

RULES = ROOT / "bench" / "rules_broadcast.yaml"
DEADLINE = 150.0


def people(n: int, prefix: str = "p", tags: tuple[str, ...] = ()) -> list[User]:
    return [
        User(
            user_id=f"{prefix}{i:05d}",
            tags=tags,
            bindings={"inbox": f"{prefix}{i:05d}", "email": f"{prefix}{i}@uni.example"},
        )
        for i in range(n)
    ]


def notice(event_id: str, audience: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "app": "campus",
            "type": "campus.notice",
            "template": "campus_notice",
            "category": "notice",
            "audience": audience,
            "data": {"headline": "Library hours", "body": "Open until midnight."},
        }
    ).encode()


def login_code(event_id: str, user_id: str) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "app": "campus",
            "type": "login.code",
            "template": "verification_code",
            "category": "verification",
            "audience": {"user_ids": [user_id]},
            "data": {"code": "424242", "minutes": 5},
        }
    ).encode()


async def produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    signed = await signatures(settings, values) if topic.startswith("events") else [None] * len(values)
    try:
        for value, headers in zip(values, signed, strict=True):
            await producer.send_and_wait(settings.topic(topic), value, key=b"campus", headers=headers)
    finally:
        await producer.stop()


def flow_settings(settings: Settings, tmp_path: Path, **update: Any) -> Settings:
    return settings.model_copy(
        update={"clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "rules": RULES, **update}
    )


async def inbox_totals(redis: Redis, users: list[User]) -> list[int]:
    inbox = Inbox(redis)
    return [await inbox.total(u.user_id) for u in users]


async def test_pages_walk_a_union_of_tags_once_each_in_id_order(redis: Redis) -> None:
    directory = UserDirectory(redis)
    await directory.upsert(
        people(30, "a", ("chem",)) + people(20, "b", ("chem", "bio")) + people(10, "c", ("bio",))
    )
    walk, audience = AudienceWalk(redis), AudienceIndex.of_tags(["chem", "bio"])
    assert await walk.prepare(audience) == 80  # the estimate: the sum of the tags' sizes

    seen: list[str] = []
    while page := await walk.page(audience, seen[-1] if seen else "", 7):
        assert len(page) <= 7
        seen.extend(page)
        if len(seen) == 14:  # joined during the walk: one ahead of the cursor, one behind it
            await directory.upsert(
                [User(user_id="z-late", tags=("bio",)), User(user_id="a-late", tags=("bio",))]
            )
    expected = sorted([u.user_id for u in people(30, "a") + people(20, "b") + people(10, "c")] + ["z-late"])
    assert seen == expected


async def test_an_index_lagging_its_set_is_rebuilt_before_the_walk(redis: Redis) -> None:
    # Users written before the indexes existed: only the set holds them.
    await redis.sadd(ALL_USERS, *(f"old{i}" for i in range(2500)))
    walk = AudienceWalk(redis)
    assert await walk.prepare(AudienceIndex.everyone(), chunk=300) == 2500
    seen: list[str] = []
    while page := await walk.page(AudienceIndex.everyone(), seen[-1] if seen else "", 1000):
        seen.extend(page)
    assert seen == sorted(f"old{i}" for i in range(2500))


async def test_a_broadcast_over_many_pages_reaches_everyone_exactly_once(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    crowd = people(230)
    await UserDirectory(redis).upsert(crowd)
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    flow = flow_settings(settings, tmp_path, broadcast_page=20)
    counters, jobs = FlowCounters(redis), BroadcastJobs(redis)
    with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
        await produce(flow, "events", [notice("everyone", {"all": True})])
        deadline = time.monotonic() + DEADLINE
        while (
            (job := await jobs.get("campus/everyone")) is None
            or not job.done
            or min(await inbox_totals(redis, crowd)) == 0
        ):
            assert worker.running, worker.log_tail()
            assert time.monotonic() < deadline, f"{job}, {await counters.read()}\n{worker.log_tail()}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # a repeat would land within a few timer rounds
        assert await inbox_totals(redis, crowd) == [1] * len(crowd)
    assert (job.expanded, job.total, job.cursor) == (230, 230, crowd[-1].user_id)
    counts = await counters.read()
    assert (counts["broadcasts"], counts["broadcasts_done"], counts["deliveries"]) == (1, 1, 230)
    assert await jobs.active() == []


async def test_a_worker_killed_mid_expansion_is_replaced_and_nobody_is_missed_or_doubled(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    crowd = people(600)
    await UserDirectory(redis).upsert(crowd)
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    # Small pages and a small backlog keep the expansion going long enough to be cut; a short lease
    # lets the second worker take the job soon after the first died holding it.
    flow = flow_settings(
        settings, tmp_path, broadcast_page=20, broadcast_backlog=40, broadcast_lease_seconds=2.0
    )
    jobs = BroadcastJobs(redis)
    first = SwitchboardProcess("worker", flow, tmp_path / "worker-1.log")
    first.start()
    try:
        await produce(flow, "events", [notice("everyone", {"all": True})])
        deadline = time.monotonic() + DEADLINE
        while (job := await jobs.get("campus/everyone")) is None or job.expanded < 100:
            assert first.running, first.log_tail()
            assert time.monotonic() < deadline, f"no progress: {job}\n{first.log_tail()}"
            await asyncio.sleep(0.02)
    finally:
        first.kill()
    cut = await jobs.get("campus/everyone")
    assert cut is not None and not cut.done, "the expansion finished before the kill; nothing was tested"

    with SwitchboardProcess("worker", flow, tmp_path / "worker-2.log") as second:
        while (
            (job := await jobs.get("campus/everyone")) is None
            or not job.done
            or min(await inbox_totals(redis, crowd)) == 0
        ):
            assert second.running, second.log_tail()
            assert time.monotonic() < deadline, f"after restart: {job}\n{second.log_tail()}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)
        assert await inbox_totals(redis, crowd) == [1] * len(crowd)
    assert job.expanded == len(crowd)  # each page counted once, at its checkpoint


async def test_a_login_code_behind_a_campaign_backlog_is_sent_before_the_backlog_drains(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    crowd = people(4000)
    await UserDirectory(redis).upsert(crowd)
    await AppRegistry(redis).register("campus", {"inbox", "email"})
    # The whole campaign is produced at once: a backlog of 4,000 deliveries ahead of the code.
    flow = flow_settings(settings, tmp_path, broadcast_page=1000, broadcast_backlog=100_000)
    counters = FlowCounters(redis)
    with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
        # A first code shows that the urgent lane's consumers have joined.
        await produce(flow, "events.urgent", [login_code("warm-up", crowd[0].user_id)])
        await asyncio.to_thread(smtp.wait_for, 1, 60.0)
        smtp.clear()
        deadline = time.monotonic() + DEADLINE
        await produce(flow, "events", [notice("campaign", {"all": True})])
        while (await counters.read()).get("deliveries", 0) < 1 + len(crowd):  # the campaign's backlog
            assert worker.running and time.monotonic() < deadline, worker.log_tail()
            await asyncio.sleep(0.02)
        # Where the API puts a code: the urgent events topic, read by a consumer of its own.
        await produce(flow, "events.urgent", [login_code("code-1", crowd[-1].user_id)])
        await asyncio.to_thread(smtp.wait_for, 1, 60.0)
        at_code = await counters.read()
        inboxes_at_code = sum(map(bool, await inbox_totals(redis, crowd)))
    assert [r for mail in smtp.messages for r in mail.rcpt_tos] == [f"p{len(crowd) - 1}@uni.example"]
    # The code got through while the campaign's sends were still waiting.
    assert at_code["sent_done"] < 1 + len(crowd), at_code
    assert inboxes_at_code < len(crowd), inboxes_at_code


async def test_the_publisher_puts_an_urgent_event_on_the_urgent_events_topic(settings: Settings) -> None:
    publisher = KafkaPublisher(settings.kafka, events_topic=settings.topic("events"), receipts_topic="unused")
    await publisher.start()
    try:
        await publisher.publish_event("campus:code-1", login_code("code-1", "u1"), "urgent")
        await publisher.publish_event("campus:n-1", notice("n-1", {"all": True}), "bulk")
    finally:
        await publisher.stop()
    consumer = AIOKafkaConsumer(
        settings.topic("events.urgent"),
        bootstrap_servers=settings.kafka.removeprefix("kafka://"),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    keys = [record.key for records in batches.values() for record in records]
    assert keys == [b"campus:code-1"]


def test_switchboard_broadcasts_lists_each_job_with_its_progress(
    local_parts: LocalParts, tmp_path: Path
) -> None:
    url = (
        local_parts.redis_url.rsplit("/", 1)[0] + "/8"
    )  # a database of its own: the CLI opens its own client
    env = {"SWITCHBOARD_REDIS": url, "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"), "SWITCHBOARD_ENV": "test"}

    async def record() -> None:
        redis = Redis.from_url(url)
        await redis.flushdb()
        jobs = BroadcastJobs(redis)
        event = EventCore(event_id="n1", app="campus", type="t", template="campus_notice", category="notice")
        await jobs.create(event, AudienceIndex.everyone(), "bulk", "events:0:7", 4000)
        await jobs.checkpoint("campus/n1", "p01000", 1000)
        await redis.aclose()

    asyncio.run(record())
    empty = CliRunner().invoke(cli, ["broadcasts", "--limit", "0"], env=env)
    assert empty.exit_code == 2 and "Traceback" not in empty.output  # a bad option is a usage error
    result = CliRunner().invoke(cli, ["broadcasts"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["campus/n1", "bulk", "running", "1,000", "/", "~4,000", "25.0%"]
    as_json = CliRunner().invoke(cli, ["broadcasts", "--json"], env=env)
    assert json.loads(as_json.output)["expanded"] == 1000
