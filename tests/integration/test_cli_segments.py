"""`switchboard segments` against the real local parts: add from a YAML or JSON file, list, show, preview
(saved or unsaved), remove; every change an audit record on the broker, every mistake one line."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from app import cli
from localparts import LocalParts
from state.engagement import EngagementHistory
from state.segments import SegmentStore
from state.users import User, UserDirectory
from tests.integration.test_cli_budgets import audits

DORMANT_YAML = """\
# Undergraduates of 2020 who have not read a message in 30 days.
all:
  - tags: {all: [undergraduate, class-2020]}
  - not: {engaged: {status: read, within: 30 days}}
"""


@pytest.fixture
def env(local_parts: LocalParts, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "SWITCHBOARD_REDIS": redis_url,
        "SWITCHBOARD_KAFKA": local_parts.kafka_url,
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}-",
    }


def run(args: list[str], env: dict[str, str], status: int = 0) -> list[str]:
    result = CliRunner().invoke(cli, ["segments", *args], env=env)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    return result.output.strip().splitlines()


async def test_segments_from_the_command_line(env: dict[str, str], redis: Redis, tmp_path: Path) -> None:
    alumni = ("undergraduate", "class-2020")
    people = [User(user_id=f"u{i}", name=f"Student {i}", tags=alumni) for i in range(5)]
    await UserDirectory(redis).upsert(people)
    await EngagementHistory(redis).record_many([("u2", "read", datetime.now(UTC) - timedelta(days=1))])
    definition = tmp_path / "dormant.yaml"
    definition.write_text(DORMANT_YAML, encoding="utf-8")

    [added] = await asyncio.to_thread(
        run, ["add", "dormant-2020", str(definition), "--app", "lms", "--description", "reunion"], env
    )
    assert added == "segment dormant-2020 created (app lms)"
    stored = await SegmentStore(redis).get("dormant-2020")
    assert stored is not None and stored.created_by.startswith("cli:")

    [listed] = await asyncio.to_thread(run, ["list"], env)
    assert listed.split() == ["dormant-2020", "lms", "reunion"]
    shown = json.loads("\n".join(await asyncio.to_thread(run, ["show", "dormant-2020"], env)))
    assert shown["definition"]["all"][1] == {"not": {"engaged": {"status": "read", "within": "30 days"}}}

    head, *sample = await asyncio.to_thread(run, ["preview", "dormant-2020", "--sample", "2"], env)
    assert head.startswith("4 people (read 5 from sb:tag:")
    assert [line.split(maxsplit=1) for line in sample] == [["u0", "Student 0"], ["u1", "Student 1"]]

    draft = tmp_path / "draft.json"
    draft.write_text(json.dumps({"tags": {"all": ["class-2020"]}}), encoding="utf-8")
    [head] = await asyncio.to_thread(run, ["preview", "--file", str(draft), "--sample", "0"], env)
    assert head.startswith("5 people")

    [removed] = await asyncio.to_thread(run, ["remove", "dormant-2020"], env)
    assert removed == "segment dormant-2020 removed"
    records = await audits(env, 2)
    assert [(r["action"], r["target"], r["app"], r["source"]) for r in records] == [
        ("segment.put", "dormant-2020", "lms", "cli"), ("segment.remove", "dormant-2020", "lms", "cli")
    ]


async def test_mistakes_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("all:\n  - engaged: {status: red, within: 30 days}\n", encoding="utf-8")
    [line] = await asyncio.to_thread(run, ["add", "x", str(bad), "--app", "lms"], env, 1)
    assert "all[0].engaged.status" in line and str(bad) in line
    broken = tmp_path / "broken.yaml"
    broken.write_text("all: [\n", encoding="utf-8")
    [line] = await asyncio.to_thread(run, ["add", "x", str(broken), "--app", "lms"], env, 1)
    assert "not valid YAML" in line
    [line] = await asyncio.to_thread(run, ["show", "nobody"], env, 1)
    assert "no segment 'nobody'" in line
    [line] = await asyncio.to_thread(run, ["preview"], env, 1)
    assert "give a segment name or --file" in line
