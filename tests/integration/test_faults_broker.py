"""The broker restarted under a running worker and API. Tansu's memory storage loses every topic, every
record in them and every committed offset; what is in Redis survives. What can be promised, and is
tested here: the worker and the API neither die nor hang; while the broker is down the API answers
503 instead of accepting into the void; once it is back the worker resumes as the topics come into
being again, and every event accepted after the restart reaches its people exactly once, urgent ones
too (the urgent lane runs on consumers of its own, started again after the broker comes back)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from api.publisher import REQUEST_TIMEOUT_MS
from localparts import LocalBroker, LocalSmtpServer, free_port
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from tests.integration.faults import seed_people, statements, tally, wait_for

pytestmark = pytest.mark.faults

BEFORE = 200  # people reached before the restart
AFTER = 200  # people reached by events accepted after it
URGENT = 100  # then people reached by urgent events (the urgent lane, on consumers of its own)
TIMEOUT = 120.0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test alone, so the test may restart it."""
    broker = LocalBroker(port=free_port(), log_path=tmp_path / "broker.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def post_events(
    api: httpx.AsyncClient, records: list[tuple[bytes, bytes]], priority: str = "normal"
) -> list[int]:
    """Post each event; `high` priority sends them in the urgent lane."""
    return [
        (await api.post("/v1/events", json={**json.loads(value), "priority": priority})).status_code
        for _, value in records
    ]


async def test_worker_and_api_survive_a_broker_restart_and_lose_nothing_accepted_after_it(
    settings: Settings, own_broker: LocalBroker, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    flow = settings.model_copy(
        update={
            "kafka": own_broker.url,
            "clickhouse": f"chdb://{tmp_path / 'worker-clickhouse'}",
            "api_port": free_port(),
        }
    )
    people = BEFORE + AFTER + URGENT
    key = await seed_people(redis, people)
    base = f"http://{flow.api_host}:{flow.api_port}"
    with (
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
        SwitchboardProcess("api", flow, tmp_path / "api.log") as api_process,
    ):
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as api:

            async def api_up() -> bool:
                try:
                    return (await api.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(api_up, "the API", TIMEOUT, api_process)
            assert set(await post_events(api, statements(0, BEFORE, run="before"))) == {202}

            async def reached_before() -> bool:
                return (await tally(smtp, redis, BEFORE)).complete(BEFORE)

            await wait_for(reached_before, "the people of the events before the restart", TIMEOUT, worker)
            await asyncio.to_thread(own_broker.stop)
            # Down: refused with 503 (retry later), never accepted into the void.
            assert (await api.get("/healthz")).status_code == 503
            started = time.monotonic()
            refused = await api.post("/v1/events", json=json.loads(statements(0, 1, run="void")[0][1]))
            refused_after = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert refused_after < REQUEST_TIMEOUT_MS / 1000 + 5
            await asyncio.to_thread(own_broker.start)
            assert worker.running, f"the worker died with the broker:\n{worker.log_tail()}"
            assert api_process.running, f"the API died with the broker:\n{api_process.log_tail()}"

            # Accepted after the restart (202): every one must reach its people.
            await wait_for(api_up, "the API seeing the broker again", TIMEOUT, api_process)
            assert set(await post_events(api, statements(BEFORE, AFTER, run="after"))) == {202}

            async def reached_after() -> bool:
                return (await tally(smtp, redis, BEFORE + AFTER)).complete(BEFORE + AFTER)

            await wait_for(reached_after, "the people of the events after the restart", TIMEOUT, worker)
            # The urgent lane's consumers are not Faust's: they must have been started again too.
            urgent = statements(BEFORE + AFTER, URGENT, run="urgent")
            assert set(await post_events(api, urgent, priority="high")) == {202}

            async def reached_all() -> bool:
                return (await tally(smtp, redis, people)).complete(people)

            await wait_for(reached_all, "the people of the urgent events after the restart", TIMEOUT, worker)
            await asyncio.sleep(3)  # a repeat would show up now
            held = await tally(smtp, redis, people)
        assert worker.running, worker.log_tail()
    assert held.missing_emails(people) == []
    assert held.repeated_emails() == 0, held.emails.most_common(5)
    assert held.inbox == [1] * people
    print(f"\nPOST /v1/events with the broker down: 503 after {refused_after:.1f}s")  # the figure, with -s
