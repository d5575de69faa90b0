"""Two workers on one topic, one of them killed: the other takes its partitions over, nobody misses a
message, and a repeat is possible only for the killed worker's sends in flight."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
from redis.asyncio import Redis

from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from processors.send import Send
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

PEOPLE = 3000
SEND_CONCURRENCY: int = inspect.signature(Send).parameters["concurrency"].default
CLAIM_SECONDS = 8  # the killed worker's claims lapse this soon (production: 10 minutes)
TIMEOUT = 180.0
EXPECTED = (("email", "sent"), ("inbox", "sent"), ("inbox", "delivered"))


async def test_two_workers_one_killed_lose_nothing_and_double_nothing(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    flow = settings.model_copy(
        update={"clickhouse": f"chdb://{tmp_path / 'clickhouse'}", "send_claim_seconds": CLAIM_SECONDS}
    )
    await seed_people(redis, PEOPLE)
    doomed = SwitchboardProcess("worker", flow, tmp_path / "doomed.log")
    survivor = SwitchboardProcess("worker", flow, tmp_path / "survivor.log")
    with SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service:
        try:
            # The first worker holds every partition and is sending when the second joins the group;
            # the group rebalances, and the first is killed while both send.
            doomed.start()
            await produce(flow, statements(0, PEOPLE))
            await wait_for(lambda: _emails(smtp, PEOPLE // 10), "the first emails", TIMEOUT, doomed, service)
            survivor.start()
            await wait_for(lambda: _emails(smtp, PEOPLE // 2), "half the emails", TIMEOUT, doomed, survivor)
            doomed.kill()

            async def settled() -> bool:
                if not (await tally(smtp, redis, PEOPLE)).complete(PEOPLE):
                    return False
                rows = await asyncio.to_thread(clickhouse_messages, flow, ["sent", "delivered"])
                return all(len(rows.get(key, ())) >= PEOPLE for key in EXPECTED)

            await wait_for(
                settled,
                "every message delivered and in ClickHouse",
                TIMEOUT,
                survivor,
                service,
                detail=lambda: progress(redis),
            )
            await asyncio.sleep(CLAIM_SECONDS + 2)  # a lapsing claim would resend now
            held = await tally(smtp, redis, PEOPLE)
            rows = await asyncio.to_thread(clickhouse_messages, flow, ["sent", "delivered", "failed"])
        finally:
            doomed.kill()
            survivor.stop()
    ids = set(message_ids(range(PEOPLE)))
    assert held.missing_emails(PEOPLE) == []
    assert held.inbox == [1] * PEOPLE
    assert held.repeated_emails() <= SEND_CONCURRENCY, held.emails.most_common(5)
    assert rows[("email", "sent")] == ids
    assert rows[("inbox", "sent")] == rows[("inbox", "delivered")] == ids
    assert ("email", "failed") not in rows and ("inbox", "failed") not in rows
    # The survivor did take work over: it ran through the rebalance and the kill without exiting.
    assert "Traceback" not in (tmp_path / "survivor.log").read_text()


async def _emails(smtp: LocalSmtpServer, count: int) -> bool:
    return smtp.count >= count
