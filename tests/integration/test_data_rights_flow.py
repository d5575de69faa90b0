"""Data rights end to end: events through the API, the worker and the analytics service, a person's
export and erasure through `/v1/people/...`, then every Redis key and every ClickHouse row looked at.

The worker and the analytics service run as child processes; the analytics service owns the ClickHouse
folder and applies the erasure it reads on topic `erasures`; the test reads ClickHouse through the
service's HTTP interface, as the API does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from clickhouse_connect.driver.client import Client
from redis.asyncio import Redis

from api.app import create_api
from api.inbox import receipt_for
from api.server import build_deps
from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from records.erasure import PSEUDONYM_PREFIX
from records.topics import message_id_for
from settings import Settings
from state.apps import AppRegistry
from state.consent import ConsentQuery, ConsentStore
from state.flow_counters import FlowCounters, caught_up
from state.inbox import Inbox
from state.operators import OperatorStore
from state.users import User, UserDirectory
from tests.integration.rights_support import clickhouse_mentions, redis_mentions

TIMEOUT = 120.0
ALICE = User(
    user_id="alice",
    name="Alice Li",
    tags=("undergraduate",),
    bindings={"email": "alice@uni.example", "inbox": "alice"},
)
BO = User(
    user_id="bo", name="Bo Wang", tags=("undergraduate",), bindings={"email": "bo@uni.example", "inbox": "bo"}
)
NEEDLES = ["alice", "alice@uni.example", "Alice Li"]
PASSWORD = "correct horse battery staple"


def fee(event_id: str, audience: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "app": "bursar",
        "type": "fee.statement",
        "template": "fee_due",
        "category": "transactional",
        "priority": "high",
        "audience": audience,
        "data": {"amount": "¥5,000", "due_date": "2026-12-01", "term": "Autumn 2026"},
        **more,
    }


@pytest.fixture
def flow_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'analytics-clickhouse'}"})


@pytest.fixture
async def api(flow_settings: Settings, redis: Redis) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    deps = build_deps(flow_settings, redis)
    app = create_api(deps)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 5000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://switchboard.test") as client,
    ):
        yield client, deps


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_for(what: str, check: Any, *processes: SwitchboardProcess) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        answer = await check()
        if answer:
            return answer
        for process in processes:
            assert process.running, process.log_tail()
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not within {TIMEOUT}s")


async def audit_records(settings: Settings, expected: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        settings.topic("audit"),
        bootstrap_servers=settings.kafka.removeprefix("kafka://"),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            found += [json.loads(r.value) for records in batches.values() for r in records]
    finally:
        await consumer.stop()
    return found


def aggregates(client: Client) -> dict[tuple[str, str], int]:
    rows = client.query(
        "SELECT channel, status, uniqExact(message_id) FROM message_events WHERE status != 'erased' "
        "GROUP BY channel, status"
    ).result_rows
    return {(str(c), str(s)): int(n) for c, s, n in rows}


def without_moment(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "exported_at"}


async def test_a_person_is_exported_and_erased_from_every_store(
    flow_settings: Settings,
    redis: Redis,
    smtp: LocalSmtpServer,
    api: tuple[httpx.AsyncClient, Any],
    tmp_path: Path,
) -> None:
    client, deps = api
    await UserDirectory(redis).upsert([ALICE, BO])
    key = await AppRegistry(redis).register("bursar", {"email", "inbox"})
    operators = OperatorStore(redis)
    await operators.create("dpo", PASSWORD, grants=["administrator"])
    await operators.create("ana", PASSWORD, grants=["analyst"])
    dpo, analyst = await operators.issue_token("dpo"), await operators.issue_token("ana")
    await ConsentStore(redis).unsubscribe("alice", category="marketing", source="preference centre")
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    events = [
        fee("fee-1", {"tags": ["undergraduate"]}),  # both: email and inbox
        fee("fee-2", {"user_ids": ["alice"]}),  # names her in the event log's audience
        fee("fee-3", {"user_ids": ["alice"]}, send_at=later),  # waits in the schedule
    ]
    conversion = {
        "conversion_id": "pay-1",
        "app": "bursar",
        "user_id": "alice",
        "type": "payment",
        "value": "5000",
        "currency": "CNY",
        "message_id": message_id_for("bursar", "fee-1", "alice"),
    }
    with (
        SwitchboardProcess("analytics", flow_settings, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow_settings, tmp_path / "worker.log") as worker,
    ):
        for event in events:
            assert (await client.post("/v1/events", json=event, headers=bearer(key))).status_code == 202
        counters = FlowCounters(redis)

        async def flowed() -> bool:
            counts = await counters.read()
            return caught_up(counts, len(events)) and counts.get("scheduled", 0) >= 1

        await wait_for("the events through the flow", flowed, worker, service)
        # She reads her fee notice in the inbox (as the inbox API does), and pays.
        inbox = Inbox(redis)
        [message] = [m for m in await inbox.list("alice") if m.event_id == "fee-1"]
        await inbox.mark_read("alice", message.message_id)
        await deps.publisher.publish_receipt(receipt_for(message, "alice", "read"))
        paid = {**conversion, "occurred_at": datetime.now(UTC).isoformat()}  # after what it is credited to
        assert (await client.post("/v1/conversions", json=paid, headers=bearer(key))).status_code == 202
        reader = deps.analytics.reader

        async def recorded() -> bool:
            counts = await counters.read()
            converted = await asyncio.to_thread(
                reader.run, lambda c: c.query("SELECT count() FROM conversions").result_rows[0][0]
            )
            return caught_up(counts, len(events)) and converted == 1

        await wait_for("the read and the conversion in ClickHouse", recorded, worker, service)

        # Only a holder of data_rights:export may export.
        refused = await client.get("/v1/people/alice/export", headers=bearer(analyst))
        assert refused.status_code == 403 and "data_rights:export" in refused.json()["detail"]
        answer = await client.get("/v1/people/alice/export", headers=bearer(dpo))
        assert answer.status_code == 200, answer.text
        exported = answer.json()
        assert exported["format"] == "switchboard.person/1" and exported["profile"]["name"] == "Alice Li"
        assert exported["bindings"] == [{"channel": "email", "address": "alice@uni.example"}]
        assert exported["consent"]["own"]["unsubscriptions"][0]["category"] == "marketing"
        assert {m["event_id"] for m in exported["inbox"]["messages"]} == {"fee-1", "fee-2"}
        assert [e["status"] for e in exported["engagement"]["history"]] == ["read"]
        assert [h["item"]["event"]["event_id"] for h in exported["scheduled"]] == ["fee-3"]
        history = exported["history"]
        assert {(r["event_id"], r["channel"], r["status"]) for r in history["message_events"]} >= {
            ("fee-1", "email", "sent"),
            ("fee-1", "inbox", "delivered"),
            ("fee-1", "inbox", "read"),
            ("fee-2", "email", "sent"),
        }
        assert [r["event_id"] for r in history["message_events"] if r["status"] == "converted"] == ["fee-1"]
        assert [c["conversion_id"] for c in history["conversions"]] == ["pay-1"]
        assert {e["event_id"] for e in history["event_log"]} == {"fee-2", "fee-3"}
        assert history["more"] == []
        bo_before = without_moment((await client.get("/v1/people/bo/export", headers=bearer(dpo))).json())
        counts_before = await asyncio.to_thread(reader.run, aggregates)

        refused = await client.post(
            "/v1/people/alice/erase", json={"reason": "asked"}, headers=bearer(analyst)
        )
        assert refused.status_code == 403
        bad = await client.post(
            "/v1/people/alice/erase", json={"reason": "x", "mode": "shred"}, headers=bearer(dpo)
        )
        assert bad.status_code == 422 and {"reason", "mode"} <= {e["loc"][-1] for e in bad.json()["detail"]}
        erased = await client.post(
            "/v1/people/alice/erase",
            json={"reason": "PIPL request from alice, ticket 118"},
            headers=bearer(dpo),
        )
        assert erased.status_code == 200, erased.text
        done = erased.json()
        assert done["pseudonym"].startswith(PSEUDONYM_PREFIX) and done["pseudonym"] == exported["pseudonym"]
        assert done["removed"]["scheduled"] == 1 and done["kept_refusals"] == 1 and done["unknown_keys"] == []

        async def anonymised() -> bool:
            return not await asyncio.to_thread(reader.run, lambda c: clickhouse_mentions(c, NEEDLES))

        await wait_for("no ClickHouse row naming her", anonymised, worker, service)
        assert await redis_mentions(redis, NEEDLES) == {}
        # Every count by channel and status is what it was; one `erased` row says it happened.
        assert await asyncio.to_thread(reader.run, aggregates) == counts_before
        pseudonymous = await asyncio.to_thread(
            reader.run,
            lambda c: (
                c.query(
                    "SELECT status, count() FROM message_events WHERE user_id = {p:String} GROUP BY status",
                    parameters={"p": done["pseudonym"]},
                ).result_rows
            ),
        )
        assert dict(pseudonymous)["erased"] == 1 and dict(pseudonymous)["sent"] >= 2
        # Bo is as he was, in Redis and in ClickHouse.
        bo_after = without_moment((await client.get("/v1/people/bo/export", headers=bearer(dpo))).json())
        assert bo_after == bo_before
        # Her address stays refused for marketing, whoever it is sent for next.
        [refusal] = await ConsentStore(redis).refusals(
            [ConsentQuery("x", "email", "marketing", "alice@uni.example")]
        )
        assert refusal is not None and "unsubscribed from marketing" in refusal
        # Asked again: done, nothing was left.
        again = await client.post("/v1/people/alice/erase", json={"reason": "repeat"}, headers=bearer(dpo))
        assert again.status_code == 200 and again.json()["removed"] == {}
        assert worker.stop() == 0, worker.log_tail()
        assert service.stop() == 0, service.log_tail()

    # Every export and erasure is audited, under the pseudonym only (the reason's id blanked).
    records = [r for r in await audit_records(flow_settings, 6) if r["action"].startswith("data_rights.")]
    actions = sorted((r["action"], r["actor"]) for r in records)
    assert actions == [("data_rights.erase", "dpo")] * 2 + [("data_rights.export", "dpo")] * 3
    assert all(r["target"].startswith(PSEUDONYM_PREFIX) and r["source"] == "192.0.2.10" for r in records)
    assert not [r for r in records if any(n in json.dumps(r) for n in NEEDLES)]
