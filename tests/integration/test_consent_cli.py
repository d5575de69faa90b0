"""`switchboard whitelist | test-mode | consent` against the real broker and Redis: each change is
audited on topic `audit`, and every user mistake is one line."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer

from localparts import LocalParts
from tests.integration.test_cli import run


@pytest.fixture
def env(local_parts: LocalParts, tmp_path: Path) -> dict[str, str]:
    url = local_parts.redis_url.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(url).flushdb()
    return {
        "SWITCHBOARD_REDIS": url,
        "SWITCHBOARD_KAFKA": local_parts.kafka_url,
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}-",
    }


async def audits(env: dict[str, str], expected: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        f"{env['SWITCHBOARD_TOPIC_PREFIX']}audit",
        bootstrap_servers=env["SWITCHBOARD_KAFKA"].removeprefix("kafka://"),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        for _ in range(40):
            if len(found) >= expected:
                break
            batches = await consumer.getmany(timeout_ms=500)
            found += [json.loads(r.value) for records in batches.values() for r in records]
    finally:
        await consumer.stop()
    return sorted(found, key=lambda record: record["at"])


def test_the_whitelist_test_mode_and_opt_ins_from_the_command_line(env: dict[str, str]) -> None:
    assert run(["whitelist", "add", "QA@Example.ORG", "--channel", "email", "--reason", "QA"], env) == [
        "whitelisted QA@example.org"
    ]
    [listed] = run(["whitelist", "list"], env)
    assert listed.startswith("QA@example.org") and listed.endswith("QA")
    assert run(["test-mode", "on", "lms"], env) == [
        "app lms in test mode: only whitelisted people receive its messages"
    ]
    [status] = run(["test-mode", "status"], env)
    assert status.startswith("lms ")
    run(["consent", "opt-in", "s1", "--category", "marketing", "--source", "paper form", "--evidence", "#12"],
        env)
    shown = json.loads("\n".join(run(["consent", "show", "s1"], env)))
    assert [(o["source"], o["evidence"]) for o in shown["opt_ins"]] == [("paper form", "#12")]
    assert run(["consent", "withdraw", "s1", "--category", "marketing"], env) == [
        "withdrew 1 opt-in(s) of s1 to marketing"
    ]
    run(["test-mode", "off", "lms"], env)
    run(["whitelist", "remove", "QA@example.org", "--channel", "email"], env)
    records = asyncio.run(audits(env, 6))
    assert [(r["action"], r["target"], r["source"]) for r in records] == [
        ("whitelist.add", "QA@example.org", "cli"),
        ("test_mode.set", "lms", "cli"),
        ("consent.opt_in", "s1", "cli"),
        ("consent.withdraw", "s1", "cli"),
        ("test_mode.set", "lms", "cli"),
        ("whitelist.remove", "QA@example.org", "cli"),
    ]
    assert records[3]["before"]["opt_ins"][0]["source"] == "paper form"
    assert records[3]["after"]["opt_ins"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["whitelist", "add", "12", "--channel", "sms", "--reason", "x"], "is not a sms address"),
        (["whitelist", "add", "s1", "--reason", " "], "reason must not be empty"),
        (["whitelist", "remove", "nobody"], "'nobody' is not whitelisted"),
        (["whitelist", "add", "a b@c", "--reason", "x"], "is not a user id; give --channel"),
        (["consent", "opt-in", "s1", "--category", "marketting", "--source", "x"],
         "unknown category 'marketting'"),
    ],
)
def test_mistakes_are_one_line(env: dict[str, str], args: list[str], message: str) -> None:
    [line] = run(args, env, status=1)
    assert line.startswith("error: ") and message in line, line
