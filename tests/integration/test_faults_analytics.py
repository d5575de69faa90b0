"""The analytics service killed mid-run and started again: it commits its offsets only after the
insert, so it reads again what it had not written, and ClickHouse ends with every receipt."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from tests.integration.faults import (
    clickhouse_messages,
    message_ids,
    produce,
    progress,
    seed_people,
    statements,
    tally,
    wait_for,
)

pytestmark = pytest.mark.faults

PEOPLE = 2000
TIMEOUT = 150.0
EXPECTED = (("email", "sent"), ("inbox", "sent"), ("inbox", "delivered"))


async def test_a_killed_analytics_service_loses_no_receipt(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    flow = settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'clickhouse'}"})
    await seed_people(redis, PEOPLE)
    first = SwitchboardProcess("analytics", flow, tmp_path / "analytics-1.log")
    with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
        first.start()
        try:

            async def some_rows() -> bool:
                return (await progress_rows(redis)) > 0

            await produce(flow, statements(0, PEOPLE))
            await wait_for(some_rows, "the first rows in ClickHouse", TIMEOUT, worker, first)
            first.kill()
            await wait_for(lambda: _emails(smtp, PEOPLE), "every email", TIMEOUT, worker)
        finally:
            first.kill()
        with SwitchboardProcess("analytics", flow, tmp_path / "analytics-2.log") as second:

            async def settled() -> bool:
                if not (await tally(smtp, redis, PEOPLE)).complete(PEOPLE):
                    return False
                rows = await asyncio.to_thread(clickhouse_messages, flow, ["sent", "delivered"])
                return all(len(rows.get(key, ())) >= PEOPLE for key in EXPECTED)

            await wait_for(
                settled, "every row in ClickHouse", TIMEOUT, worker, second, detail=lambda: progress(redis)
            )
            rows = await asyncio.to_thread(clickhouse_messages, flow, ["sent", "delivered"])
    ids = set(message_ids(range(PEOPLE)))
    assert rows[("email", "sent")] == ids
    assert rows[("inbox", "sent")] == rows[("inbox", "delivered")] == ids


async def progress_rows(redis: Redis) -> int:
    raw = await redis.hget("sb:flow", "rows")
    return int(raw or 0)


async def _emails(smtp: LocalSmtpServer, count: int) -> bool:
    return smtp.count >= count
