"""Redis restarted under a running worker: the worker pauses, retries and resumes, nobody misses a
message and nobody gets one twice; SIGTERM still stops a worker waiting for Redis within seconds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from localparts import LocalRedis, LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.flow_counters import FlowCounters
from tests.integration.faults import (
    own_redis,  # noqa: F401 - a fixture
    own_redis_client,  # noqa: F401 - a fixture
    produce,
    progress,
    seed_people,
    statements,
    tally,
    wait_for,
)

pytestmark = pytest.mark.faults

PEOPLE = 1000
DOWN_SECONDS = 4.0
TIMEOUT = 100.0
STOP_WITHIN = 10.0


def flow_on(settings: Settings, redis: LocalRedis, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={"redis": redis.url, "clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}"}
    )


async def sent(client: Redis) -> int:
    return (await FlowCounters(client).read()).get("sent_done", 0)


async def test_redis_restarted_mid_run_loses_nothing_and_sends_nothing_twice(
    settings: Settings,
    own_redis: LocalRedis,  # noqa: F811
    own_redis_client: Redis,  # noqa: F811
    smtp: LocalSmtpServer,
    tmp_path: Path,
) -> None:
    flow = flow_on(settings, own_redis, tmp_path)
    await seed_people(own_redis_client, PEOPLE)
    with SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker:
        await produce(flow, statements(0, PEOPLE))
        # Restart Redis while sends are under way (AOF on: what was written survives).
        await wait_for(lambda: _at_least(smtp, PEOPLE // 4), "a quarter of the emails", TIMEOUT, worker)
        await own_redis_client.aclose()
        await asyncio.to_thread(own_redis.stop)
        emails_when_stopped = smtp.count
        await asyncio.sleep(DOWN_SECONDS)
        assert worker.running, f"the worker died while Redis was down:\n{worker.log_tail()}"
        await asyncio.to_thread(own_redis.start)

        client = Redis.from_url(own_redis.url)
        try:

            async def delivered() -> bool:
                return (await tally(smtp, client, PEOPLE)).complete(PEOPLE)

            await wait_for(
                delivered, "every email and inbox message", TIMEOUT, worker, detail=lambda: progress(client)
            )
            await asyncio.sleep(3)  # a send repeated late would show up now
            outcome = await tally(smtp, client, PEOPLE)
        finally:
            await client.aclose()
        assert worker.running, worker.log_tail()
        log = (tmp_path / "worker.log").read_text()

    assert emails_when_stopped < PEOPLE, "Redis went down only after every email: restart it earlier"
    assert outcome.missing_emails(PEOPLE) == []
    assert outcome.repeated_emails() == 0, outcome.emails.most_common(5)
    assert outcome.inbox == [1] * PEOPLE
    # One line when Redis went away and one when it came back, not one per waiting command.
    assert log.count("unreachable") == 1, log[-3000:]
    assert log.count("is back after") == 1, log[-3000:]


async def test_sigterm_stops_a_worker_waiting_for_redis_within_seconds(
    settings: Settings,
    own_redis: LocalRedis,  # noqa: F811
    own_redis_client: Redis,  # noqa: F811
    smtp: LocalSmtpServer,
    tmp_path: Path,
) -> None:
    flow = flow_on(settings, own_redis, tmp_path)
    await seed_people(own_redis_client, 200)
    worker = SwitchboardProcess("worker", flow, tmp_path / "worker.log")
    worker.start()
    try:
        await produce(flow, statements(0, 200))
        await wait_for(lambda: _at_least(smtp, 1), "a first email", TIMEOUT, worker)
        await own_redis_client.aclose()
        await asyncio.to_thread(own_redis.stop)

        async def waiting() -> bool:
            return "unreachable" in worker.log_tail(50)

        await wait_for(waiting, "the worker noticing Redis is gone", 30.0, worker)
        started = time.monotonic()
        code = await asyncio.to_thread(worker.stop, STOP_WITHIN + 20)
        took = time.monotonic() - started
    finally:
        worker.kill()
    assert took < STOP_WITHIN, f"SIGTERM took {took:.1f}s with Redis down:\n{worker.log_tail()}"
    assert code is not None and code != -9, worker.log_tail()


async def _at_least(smtp: LocalSmtpServer, count: int) -> bool:
    return smtp.count >= count
