"""Approvals end to end, in real processes: the API on the broker, workers, the analytics service and
ClickHouse. A held marketing message survives a worker restart, reaches each person once after two
distinct approvers, a rejected one never does, an undecided one expires; every outcome is a row."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from analytics.connection import open_reader, service_listening
from api import create_api
from api.server import build_deps
from localparts.switchboard_process import SwitchboardProcess
from records.signing import signed_headers
from records.topics import message_id_for
from settings import Settings
from state.approval_policies import ApprovalPolicy
from state.approvals import ApprovalStore
from state.apps import AppRegistry
from state.inbox import Inbox
from tests.integration.approvals_support import CUSTOMERS, TWO_LEVELS, bearer, promotion, seed

DEADLINE = 120.0
# Every message to the inbox, at once: the default rules' quiet hours and best times would make the
# outcome depend on the hour the test runs.
RULES = """
ruleset: approvals-flow
rules:
  - id: inbox-now
    description: Everything to the inbox at once.
    then: {channels: [inbox]}
"""


async def eventually(what: str, check: Callable[[], Awaitable[bool]], worker: SwitchboardProcess) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert worker.running, f"worker exited:\n{worker.log_tail()}"
        assert time.monotonic() < deadline, f"{what} did not happen in {DEADLINE}s\n{worker.log_tail()}"
        await asyncio.sleep(0.3)


def rows(settings: Settings, app: str, event_id: str) -> dict[str, str]:
    """Status → reason of the message-level rows of one event, as analysts see them (through the
    analytics service: opened here, the engine's folder would be this process's)."""
    if not service_listening(settings.analytics_host, settings.analytics_port, 0.5):
        return {}
    client = open_reader(settings)
    try:
        found = client.query(
            "SELECT status, reason FROM message_events FINAL WHERE message_id = {m:String}",
            parameters={"m": message_id_for(app, event_id, "")},
        ).result_rows
    finally:
        client.close()
    return {status: reason for status, reason in found}


async def produce(settings: Settings, redis: Redis, event: dict[str, object]) -> None:
    """As a business system produces: signed with its app's events signing key."""
    key = await AppRegistry(redis).signing_key(str(event["app"]))
    assert key is not None
    value = json.dumps(event).encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.removeprefix("kafka://"), acks="all")
    await producer.start()
    try:
        headers = signed_headers(value, key)
        await producer.send_and_wait(settings.topic("events"), value, key=b"test", headers=headers)
    finally:
        await producer.stop()


async def test_held_messages_survive_a_restart_and_flow_once_when_approved(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    flow = settings.model_copy(update={"clickhouse": f"chdb://{tmp_path / 'clickhouse'}", "rules": rules})
    quick = ApprovalPolicy(name="surveys", apps=["survey"], levels=["approver"], expires_after="3s")
    tokens = await seed(redis, [TWO_LEVELS, quick])
    inbox, store = Inbox(redis), ApprovalStore(redis)
    api = create_api(build_deps(flow, redis))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test") as client,
    ):

        async def send(event_id: str) -> None:
            answer = await client.post("/v1/events", json=promotion(event_id), headers=bearer(tokens["sam"]))
            assert answer.status_code == 202, answer.text

        async def decide(
            event_id: str, who: str, verdict: str = "approve", comment: str = ""
        ) -> httpx.Response:
            items = await store.listing(None)
            approval = next(i.approval_id for i in items if i.subject == f"shop:{event_id}")
            return await client.post(f"/v1/approvals/{approval}/{verdict}", json={"comment": comment},
                                     headers=bearer(tokens[who]))

        with SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service:
            first = SwitchboardProcess("worker", flow, tmp_path / "worker-1.log")
            first.start()
            await send("sale-1")
            await send("sale-2")
            await produce(flow, redis, promotion("poll-1", app="survey", category="notice", campaign=""))

            async def all_held() -> bool:
                return all("pending_approval" in rows(flow, app, e)
                           for app, e in (("shop", "sale-1"), ("shop", "sale-2"), ("survey", "poll-1")))

            await eventually("three pending_approval rows", all_held, first)

            async def ann_told() -> bool:
                return await inbox.total("op-ann") == 3

            await eventually("ann told of each (through her inbox)", ann_told, first)
            assert first.stop() == 0, first.log_tail()
            assert [await inbox.total(c) for c in CUSTOMERS] == [0, 0, 0]

            # A new worker finds the held messages where the first left them.
            with SwitchboardProcess("worker", flow, tmp_path / "worker-2.log") as second:
                assert len(await store.listing("pending")) >= 2
                assert (await decide("sale-1", "ann")).status_code == 200
                twice = await decide("sale-1", "ann")
                assert twice.status_code == 409 and "different approver" in twice.json()["detail"]

                async def bo_told() -> bool:  # level 2's approver hears of it once level 1 approved
                    return await inbox.total("op-bo") == 1

                await eventually("bo told of level 2", bo_told, second)
                assert (await decide("sale-1", "bo")).json()["state"] == "approved"
                assert (await decide("sale-2", "ann", "reject", "wrong week")).status_code == 200

                async def everyone_has_it() -> bool:
                    return [await inbox.total(c) for c in CUSTOMERS] == [1, 1, 1]

                await eventually("the approved message in every inbox", everyone_has_it, second)

                async def outcomes_recorded() -> bool:
                    return (
                        "approved" in rows(flow, "shop", "sale-1")
                        and "rejected" in rows(flow, "shop", "sale-2")
                        and "expired" in rows(flow, "survey", "poll-1")
                    )

                await eventually("approved, rejected and expired rows", outcomes_recorded, second)
                sale_1, sale_2, poll_1 = (rows(flow, "shop", "sale-1"), rows(flow, "shop", "sale-2"),
                                          rows(flow, "survey", "poll-1"))
                await send("sale-1")  # the app resends: a duplicate, not a second message
                await asyncio.sleep(3)
                assert second.stop() == 0, second.log_tail()
            assert service.stop() == 0, service.log_tail()

    assert [[m.template for m in await inbox.list(c)] for c in CUSTOMERS] == [["campus_notice"]] * 3
    assert "by ann (approver), bo (administrator)" in sale_1["approved"]
    assert "'marketing-review'" in sale_1["pending_approval"]
    assert sale_2["rejected"] == "rejected by ann at level 1 (approver): wrong week"
    assert "not approved within 3s under policy 'surveys'" in poll_1["expired"]
    # Approvers heard through Switchboard's own inbox: ann for level 1 of both, bo for level 2 of sale-1.
    assert {m.template for m in await inbox.list("op-ann")} == {"approval_request"}
    assert await inbox.total("op-ann") == 3  # sale-1, sale-2 and poll-1 (ann approves surveys too)
    assert await inbox.total("op-bo") == 1
    assert await inbox.total("op-sam") == 0  # he sent them
