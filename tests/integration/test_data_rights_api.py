"""The data-rights endpoints' answers on real Redis and the real broker, without the analytics service:
an export is refused whole (503) while ClickHouse cannot be read, an erasure still goes through (its
ClickHouse part waits on topic `erasures`, keyed by the pseudonym), bad requests are 4xx naming what
is wrong."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from api.app import create_api
from api.server import build_deps
from records.erasure import ErasureRequest
from settings import Settings
from state.operators import OperatorStore
from state.users import User, UserDirectory

ALICE = User(user_id="alice", name="Alice Li", bindings={"email": "alice@uni.example", "inbox": "alice"})


@pytest.fixture
async def client(settings: Settings, redis: Redis, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # A ClickHouse folder nobody created and no analytics service: history cannot be read.
    own = settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'no-analytics'}"})
    app = create_api(build_deps(own, redis))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://switchboard.test") as http,
    ):
        yield http


async def admin(redis: Redis) -> dict[str, str]:
    operators = OperatorStore(redis)
    await operators.create("dpo", "correct horse battery staple", grants=["administrator"])
    return {"Authorization": f"Bearer {await operators.issue_token('dpo')}"}


async def erasure_requests(settings: Settings) -> list[tuple[bytes, dict[str, Any]]]:
    consumer = AIOKafkaConsumer(
        settings.topic("erasures"),
        bootstrap_servers=settings.kafka.removeprefix("kafka://"),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[tuple[bytes, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + 20
        while not found and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            found += [(r.key or b"", json.loads(r.value)) for records in batches.values() for r in records]
    finally:
        await consumer.stop()
    return found


async def test_without_clickhouse_an_export_is_refused_whole_and_an_erasure_waits_on_its_topic(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    await UserDirectory(redis).upsert([ALICE])
    headers = await admin(redis)
    exported = await client.get("/v1/people/alice/export", headers=headers)
    assert exported.status_code == 503 and exported.headers["Retry-After"] == "5"
    assert "an export is whole or none" in exported.json()["detail"]

    erased = await client.post("/v1/people/alice/erase", json={"reason": "ticket 9"}, headers=headers)
    assert erased.status_code == 200, erased.text
    assert erased.json()["removed"]["keys"] == 1  # her profile
    assert await UserDirectory(redis).get_many(["alice"]) == {}
    [(key, record)] = await erasure_requests(settings)
    request = ErasureRequest.model_validate(record)
    assert key.decode() == request.pseudonym == erased.json()["pseudonym"]  # never the person's id
    assert request.identifiers()[:2] == ["alice", "alice@uni.example"] and request.mode == "anonymise"


async def test_bad_requests_are_refused_naming_what_is_wrong(client: httpx.AsyncClient, redis: Redis) -> None:
    headers = await admin(redis)
    assert (await client.post("/v1/people/alice/erase", json={"reason": "ticket 9"})).status_code == 401
    extra = await client.post(
        "/v1/people/alice/erase", json={"reason": "ticket 9", "also": "x"}, headers=headers
    )
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "also"]
    odd = await client.get("/v1/people/al%20ice/export", headers=headers)
    assert odd.status_code == 422 and odd.json()["detail"][0]["loc"] == ["path", "user_id"]
    big = await client.get("/v1/people/alice/export?history_limit=1000000", headers=headers)
    assert big.status_code == 422 and big.json()["detail"][0]["loc"] == ["query", "history_limit"]
