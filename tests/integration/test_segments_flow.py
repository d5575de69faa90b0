"""Segments through the whole flow in real processes: broker → worker → analytics service → ClickHouse.

An event to a defined segment reaches exactly its members (someone who read a message yesterday is
left out) and ClickHouse holds a row for each of them only; a large segment goes out as a broadcast
job, page by page, filtered by its definition.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from analytics.connection import open_reader
from localparts.switchboard_process import SwitchboardProcess
from settings import ROOT, Settings
from state.apps import AppRegistry
from state.broadcasts import BroadcastJobs
from state.engagement import EngagementHistory
from state.flow_counters import FlowCounters, caught_up
from state.inbox import Inbox
from state.segment_definitions import parse_definition
from state.segments import SegmentStore
from state.users import User, UserDirectory
from tests.integration.test_broadcast import produce

RULES = ROOT / "bench" / "rules_broadcast.yaml"  # notices to the inbox at once, at any hour
DEADLINE = 150.0
DORMANT_2020 = {
    "all": [
        {"tags": {"all": ["undergraduate", "class-2020"]}},
        {"not": {"engaged": {"status": "read", "within": "30 days"}}},
    ]
}


def cohort(prefix: str, n: int, tags: tuple[str, ...], locale: str = "zh-CN") -> list[User]:
    return [
        User(user_id=f"{prefix}{i:04d}", tags=tags, locale=locale, bindings={"inbox": f"{prefix}{i:04d}"})
        for i in range(n)
    ]


def notice(event_id: str, segment: str) -> bytes:
    return json.dumps({
        "event_id": event_id, "app": "campus", "type": "campus.notice", "template": "campus_notice",
        "category": "notice", "audience": {"segment": segment},
        "data": {"headline": "Reunion", "body": "Come back to campus."},
    }).encode()


def flow_settings(settings: Settings, tmp_path: Path, **update: Any) -> Settings:
    return settings.model_copy(
        update={"clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}", "rules": RULES, **update}
    )


async def wait_flowed(redis: Redis, events: int, *processes: SwitchboardProcess) -> dict[str, int]:
    counters = FlowCounters(redis)
    deadline = time.monotonic() + DEADLINE
    while not caught_up(counts := await counters.read(), events):
        for process in processes:
            assert process.running, process.log_tail()
        assert time.monotonic() < deadline, f"not caught up: {counts}\n{processes[-1].log_tail()}"
        await asyncio.sleep(0.2)
    return counts


async def inboxes(redis: Redis, users: list[User]) -> list[int]:
    inbox = Inbox(redis)
    return [await inbox.total(u.user_id) for u in users]


async def test_an_event_to_a_segment_reaches_exactly_its_members_and_clickhouse_says_so(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    dormant = cohort("d", 9, ("undergraduate", "class-2020"))
    readers = cohort("r", 4, ("undergraduate", "class-2020"))
    younger = cohort("y", 6, ("undergraduate", "class-2021"))
    await UserDirectory(redis).upsert(dormant + readers + younger)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await EngagementHistory(redis).record_many([(u.user_id, "read", yesterday) for u in readers])
    await SegmentStore(redis).put("dormant-2020", "campus", "", parse_definition(DORMANT_2020), "wang")
    await AppRegistry(redis).register("campus", {"inbox"})
    flow = flow_settings(settings, tmp_path)
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
    ):
        await produce(flow, "events", [notice("reunion", "dormant-2020"), notice("lost", "no-such-segment")])
        counts = await wait_flowed(redis, 2, service, worker)
        client = open_reader(flow)
        try:
            rows = client.query(
                "SELECT user_id, status FROM message_events FINAL WHERE event_id = 'reunion' "
                "AND status IN ('decided', 'delivered') ORDER BY user_id, status"
            ).result_rows
            lost = client.query(
                "SELECT status, reason FROM message_events FINAL WHERE event_id = 'lost'"
            ).result_rows
        finally:
            client.close()
    assert await inboxes(redis, dormant) == [1] * len(dormant)
    assert await inboxes(redis, readers + younger) == [0] * len(readers + younger)
    assert counts["deliveries"] == len(dormant)
    assert rows == [(u.user_id, status) for u in dormant for status in ("decided", "delivered")]
    assert [(status, "unknown segment 'no-such-segment'" in reason) for status, reason in lost] == [
        ("dead_lettered", True)
    ]


async def test_a_large_segment_goes_out_as_a_broadcast_job_page_by_page(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    chinese = cohort("c", 260, ("student",))
    english = cohort("e", 140, ("student",), locale="en-GB")
    await UserDirectory(redis).upsert(chinese + english)
    speakers = {"all": [{"tags": {"all": ["student"]}}, {"attribute": "locale", "equals": "en-GB"}]}
    await SegmentStore(redis).put("english-speakers", "*", "", parse_definition(speakers), "wang")
    await AppRegistry(redis).register("campus", {"inbox"})
    flow = flow_settings(settings, tmp_path, broadcast_page=25)
    jobs = BroadcastJobs(redis)
    with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
        await produce(flow, "events", [notice("welcome", "english-speakers")])
        deadline = time.monotonic() + DEADLINE
        while (
            (job := await jobs.get("campus/welcome")) is None
            or not job.done
            or min(await inboxes(redis, english)) == 0
        ):
            assert worker.running, worker.log_tail()
            counts = await FlowCounters(redis).read()
            assert time.monotonic() < deadline, f"{job}, {counts}\n{worker.log_tail()}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # a repeat would land within a few timer rounds
        assert await inboxes(redis, english) == [1] * len(english)
    assert await inboxes(redis, chinese) == [0] * len(chinese)
    # The walk read the whole tag (400 ids, 16 pages of 25) and produced only the segment's members.
    assert (job.total, job.expanded, job.cursor) == (400, len(english), english[-1].user_id)
    assert json.loads(job.segment)["name"] == "english-speakers"
    assert (await FlowCounters(redis).read())["deliveries"] == len(english)
