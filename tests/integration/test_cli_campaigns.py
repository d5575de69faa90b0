"""`switchboard campaigns` against the real local parts: create from a file, list, show, submit (one
event on the broker), cancel, recall, report from ClickHouse; every change an audit record, every
mistake one line."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from clickhouse_connect.driver.client import Client
from redis.asyncio import Redis
from typer.testing import CliRunner

from analytics.sink import ReceiptSink
from app import cli
from localparts import LocalParts
from records.topics import Receipt
from state.apps import AppRegistry
from state.inbox import Inbox, InboxMessage
from state.users import User, UserDirectory
from tests.integration.test_cli_budgets import audits

COMPOSITION = """\
app: lms
name: Week 1 reminder
audience: {tags: [year-2020]}
channels: [inbox]
category: notice
type: course.reminder
template: course_reminder
data: {course: Linear Algebra, starts_at: "10:00", room: B201}
"""


@pytest.fixture
def env(local_parts: LocalParts, redis_url: str, clickhouse_dsn: str, tmp_path: Path) -> dict[str, str]:
    return {
        "SWITCHBOARD_REDIS": redis_url,
        "SWITCHBOARD_KAFKA": local_parts.kafka_url,
        "SWITCHBOARD_CLICKHOUSE": clickhouse_dsn,
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}-",
        "SWITCHBOARD_PROVIDERS": str(tmp_path / "no-providers.yaml"),
    }


def run_sync(args: list[str], env: dict[str, str], status: int = 0) -> list[str]:
    result = CliRunner().invoke(cli, ["campaigns", *args], env=env)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    return result.output.strip().splitlines()


async def run(args: list[str], env: dict[str, str], status: int = 0) -> list[str]:
    return await asyncio.to_thread(run_sync, args, env, status)


async def events(env: dict[str, str]) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(
        env["SWITCHBOARD_TOPIC_PREFIX"] + "events", auto_offset_reset="earliest", group_id=None,
        bootstrap_servers=env["SWITCHBOARD_KAFKA"].removeprefix("kafka://"),
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
    finally:
        await consumer.stop()
    return [json.loads(r.value) for records in batches.values() for r in records]


async def test_campaigns_from_the_command_line(
    env: dict[str, str], redis: Redis, clickhouse: Client, tmp_path: Path
) -> None:
    await AppRegistry(redis).register("lms", {"inbox"})
    await UserDirectory(redis).upsert(
        [User(user_id=f"s{n}", tags=("year-2020",), bindings={"inbox": f"s{n}"}) for n in range(3)]
    )
    file = tmp_path / "week1.yaml"
    file.write_text(COMPOSITION)

    [created] = await run(["create", str(file)], env)
    campaign_id = created.split()[0]
    assert created == f"{campaign_id} draft: 3 recipients, estimated cost 0"
    [listed] = await run(["list"], env)
    assert listed.split()[:2] == [campaign_id, "draft"]
    shown = json.loads("\n".join(await run(["show", campaign_id], env)))
    assert (shown["state"], shown["estimate"]["recipients"], shown["progress"]) == ("draft", 3, {})

    [submitted] = await run(["submit", campaign_id], env)
    assert submitted == f"{campaign_id} running: event campaign-{campaign_id} published"
    [event] = await events(env)
    assert (event["campaign"], event["event_id"]) == (campaign_id, f"campaign-{campaign_id}")
    assert str(event["submitted_by"]).startswith("cli:")
    assert await run(["submit", campaign_id], env, status=1) == [
        f"error: campaign '{campaign_id}' is running, not a draft"
    ]

    await Inbox(redis).add("s1", InboxMessage(
        message_id="m1", title="Linear Algebra", body="B201", app="lms", event_id=f"campaign-{campaign_id}",
        template="course_reminder", category="notice", campaign=campaign_id, created_at=datetime.now(UTC),
    ))
    [recalled] = await run(["recall", campaign_id], env)
    assert recalled == f"{campaign_id}: 1 inbox messages recalled (it was still sending: cancelled first)"
    assert await Inbox(redis).total("s1") == 0
    [refused] = await run(["cancel", campaign_id], env, status=1)
    assert refused.startswith(f"error: campaign '{campaign_id}' is cancelled")
    actions = [a["action"] for a in await audits(env, 4)]
    assert actions == ["campaign.create", "campaign.submit", "campaign.cancel", "campaign.recall"]

    ReceiptSink(clickhouse).write([
        Receipt(message_id=f"{campaign_id}-{n}", app="lms", user_id=f"s{n}", channel="inbox", status=status,
                campaign=campaign_id)
        for n in range(3) for status in ("sent", "delivered")
    ])
    report = await run(["report", campaign_id], env)
    assert report[0].startswith(f"{campaign_id} Week 1 reminder: reach 3")
    assert report[1].split() == ["inbox", "delivered", "3,", "sent", "3"]


def test_mistakes_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(COMPOSITION.replace("category: notice", "category: gossip"))
    [line] = run_sync(["create", str(bad)], env, status=1)
    assert line.startswith(f"error: {bad}: category: Input should be")
    assert run_sync(["create", str(tmp_path / "missing.yaml")], env, status=1)[0].startswith(
        f"error: {tmp_path / 'missing.yaml'}: cannot read it"
    )
    assert run_sync(["show", "lms.c000000000000"], env, status=1) == [
        "error: no campaign 'lms.c000000000000'; `switchboard campaigns list` shows them"
    ]
