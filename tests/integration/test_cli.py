"""The command line against the real local parts: the app registry's life cycle, the parts themselves,
and the report while a worker holds the ClickHouse folder; every user mistake is one line, no traceback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis
from typer.testing import CliRunner

from api.app import create_api
from api.deps import ApiDeps
from api.publisher import KafkaPublisher
from app import cli
from channels.templates import TemplateCatalog
from localparts import LocalParts, free_port
from processors.ingest import Ingest
from settings import ROOT
from state.apps import AppRegistry
from state.dedup import EventDedup
from state.inbox import Inbox
from state.users import UserDirectory

SWITCHBOARD = [sys.executable, "-m", "app"]
EVENT = {
    "event_id": "e1", "app": "lms", "type": "course.reminder", "template": "campus_notice",
    "category": "notice", "audience": {"user_ids": ["s1"]}, "data": {"headline": "h", "body": "b"},
}


@pytest.fixture
def env(local_parts: LocalParts, tmp_path: Path) -> dict[str, str]:
    """The CLI on the test parts, on a Redis database of its own, emptied first."""
    url = local_parts.redis_url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    return {
        "SWITCHBOARD_REDIS": url,
        "SWITCHBOARD_KAFKA": local_parts.kafka_url,
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_ENV": "test",
    }


def run(args: list[str], env: dict[str, str], status: int = 0) -> list[str]:
    result = CliRunner().invoke(cli, args, env=env)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    return result.output.strip().splitlines()


def key_of(lines: list[str]) -> str:
    return lines[0].split("(shown once): ")[1].split(";")[0]


async def answers(redis_url: str, kafka_url: str, key: str) -> tuple[int, str]:
    """What the real API answers to one event sent with `key`."""
    client = Redis.from_url(redis_url)
    publisher = KafkaPublisher(kafka_url, events_topic="cli-events", receipts_topic="cli-receipts")
    deps = ApiDeps(
        apps=AppRegistry(client), inbox=Inbox(client), publisher=publisher, redis=client,
        templates=TemplateCatalog(ROOT / "templates"), segments=UserDirectory(client),
    )
    api = create_api(deps)
    try:
        async with api.router.lifespan_context(api), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api), base_url="http://switchboard.test"
        ) as http:
            response = await http.post("/v1/events", json=EVENT, headers={"Authorization": f"Bearer {key}"})
            return response.status_code, response.text
    finally:
        await client.aclose()


async def ingest_reason(redis_url: str) -> str | None:
    client = Redis.from_url(redis_url)
    try:
        templates = TemplateCatalog(ROOT / "templates")
        ingest = Ingest(UserDirectory(client), AppRegistry(client), templates, EventDedup(client, 60))
        raw = json.dumps({**EVENT, "event_id": str(time.time())}).encode()
        result = await ingest.handle(raw, "events:0:1")
        return result.dead_letter.reason if result.dead_letter else None
    finally:
        await client.aclose()


def test_an_app_is_added_listed_rotated_disabled_enabled_and_removed(env: dict[str, str]) -> None:
    url, kafka = env["SWITCHBOARD_REDIS"], env["SWITCHBOARD_KAFKA"]
    assert run(["apps", "list"], env) == [
        "no apps registered; add one with `switchboard apps add NAME --channels inbox,email`"
    ]
    first = key_of(run(["apps", "add", "lms", "--channels", "inbox,email", "--description", "Courses"], env))
    again = run(["apps", "add", "lms", "--channels", "inbox"], env, status=1)
    assert again == [
        "error: app 'lms' is already registered; to issue a new key run `switchboard apps rotate lms`"
    ]
    assert run(["apps", "list"], env) == [f"{'lms':<20} {'enabled':<8} {'email,inbox':<30} Courses"]

    second = key_of(run(["apps", "rotate", "lms"], env))
    assert second != first
    assert asyncio.run(answers(url, kafka, first))[0] == 401
    assert asyncio.run(answers(url, kafka, second))[0] == 202

    run(["apps", "disable", "lms"], env)
    assert "disabled" in run(["apps", "list"], env)[0]
    assert asyncio.run(answers(url, kafka, second))[0] == 401
    assert asyncio.run(ingest_reason(url)) == "app 'lms' is disabled"
    run(["apps", "enable", "lms"], env)
    assert asyncio.run(answers(url, kafka, second))[0] == 202  # the same key works again

    assert run(["apps", "remove", "lms"], env) == ["app lms removed; its key no longer works"]
    assert asyncio.run(answers(url, kafka, second))[0] == 401
    assert asyncio.run(ingest_reason(url)) == "unknown app 'lms'"
    assert run(["apps", "rotate", "lsm"], env, status=1) == ["error: no app named 'lsm' is registered"]
    assert key_of(run(["apps", "add", "lms", "--channels", "inbox"], env)).startswith("sbk_")


def test_apps_commands_name_an_unknown_app_with_a_suggestion(env: dict[str, str]) -> None:
    run(["apps", "add", "bursar", "--channels", "email"], env)
    for command in ("rotate", "disable", "enable", "remove"):
        assert run(["apps", command, "bursr"], env, status=1) == [
            "error: no app named 'bursr' is registered (did you mean 'bursar'?)"
        ]


def test_parts_up_with_a_port_taken_and_parts_down_saying_what_it_stopped(tmp_path: Path) -> None:
    kafka_port, redis_port = free_port(), free_port()
    env = {
        "SWITCHBOARD_VAR_DIR": str(tmp_path / "var"),
        "SWITCHBOARD_KAFKA": f"kafka://127.0.0.1:{kafka_port}",
        "SWITCHBOARD_REDIS": f"redis://127.0.0.1:{redis_port}/0",
    }
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", redis_port))
        squatter.listen()
        taken = run(["parts", "up"], env, status=1)
    assert taken == [
        f"error: cannot start redis: port 127.0.0.1:{redis_port} is already taken by another program; "
        "stop that program, or give the redis another port with SWITCHBOARD_REDIS"
    ]
    assert [line.split()[1] for line in run(["parts", "status"], env)] == ["down", "down"]  # rolled back

    up = run(["parts", "up"], env)
    pids = [int(line.split("pid ")[1].split(";")[0]) for line in up]
    stopped = run(["parts", "down"], env)
    assert stopped == [f"stopped redis (pid {pids[1]})", f"stopped broker (pid {pids[0]})"]
    assert run(["parts", "down"], env)[0].startswith("nothing to stop")


def test_report_while_another_process_holds_the_clickhouse_folder_and_serves_nothing(tmp_path: Path) -> None:
    """Subprocesses: chdb allows one folder per process, and this test process may hold another one."""
    env = {**os.environ, "SWITCHBOARD_VAR_DIR": str(tmp_path / "var")}
    folder = tmp_path / "var" / "clickhouse"
    holder = subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", f"""
from analytics.connection import open_clickhouse
from analytics.migrate import apply_migrations
import time
client = open_clickhouse("chdb://{folder}")  # held open, as a running worker holds it
apply_migrations(client)
print("holding", flush=True)
time.sleep(60)
"""],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        held = subprocess.run(  # noqa: S603
            [*SWITCHBOARD, "report"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        holder.kill()
        holder.wait()
    assert held.returncode == 1 and "Traceback" not in held.stderr
    assert held.stderr.count("\n") == 1, held.stderr
    assert f"pid {holder.pid} holds the analytics data" in held.stderr
    assert "switchboard analytics" in held.stderr

    free = subprocess.run(  # noqa: S603
        [*SWITCHBOARD, "report", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert free.returncode == 0 and '"rows": []' in free.stdout
