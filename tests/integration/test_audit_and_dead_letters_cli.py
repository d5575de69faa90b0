"""Audit and dead letters from the command line, against a worker and the analytics service as processes:
administrative commands are audited into ClickHouse with their secrets masked (a malformed audit record
does not stop the service); a malformed event is dead-lettered, listed, shown, corrected and replayed,
delivered to the local SMTP peer once, and a second replay is a duplicate that is not delivered again."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from redis.asyncio import Redis
from typer.testing import CliRunner

from analytics.connection import open_reader
from api.audit_cli import cli_actor
from app import cli
from localparts import LocalSmtpServer, free_port
from localparts.switchboard_process import SwitchboardProcess
from settings import Settings
from state.apps import AppRegistry
from state.flow_counters import FlowCounters
from state.users import User, UserDirectory
from tests.integration.test_analytics_service import produce_to
from tests.integration.test_flow import FLOW_TIMEOUT, notice, notices_rule, produce, wait_caught_up


async def run(settings: Settings, args: list[str], status: int = 0) -> list[str]:
    """The command in a thread: it runs event loops of its own."""
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=settings.to_env())
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == status, result.output
    return result.output.strip().splitlines()


async def audited(settings: Settings, service: SwitchboardProcess, args: list[str], count: int) -> list[Any]:
    """`switchboard audit ... --json`, once the service has written at least `count` such entries."""
    deadline = time.monotonic() + FLOW_TIMEOUT
    while True:
        page = json.loads((await run(settings, ["audit", *args, "--json"]))[0])
        if len(page["entries"]) >= count:
            return list(page["entries"])
        assert service.running, service.log_tail()
        assert time.monotonic() < deadline, f"{args}: {page}\n{service.log_tail()}"
        await asyncio.sleep(0.3)


async def test_commands_are_audited_and_a_dead_letter_is_corrected_replayed_and_deduplicated(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(notices_rule("email"))
    flow = settings.model_copy(update={"rules": rules, "clickhouse": f"chdb://{tmp_path / 'service-ch'}"})
    await UserDirectory(redis).upsert([User(user_id="xi", bindings={"email": "xi@uni.example"})])
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
    ):
        # Garbage on the audit topic first: kept as an entry with its reason, the service goes on.
        await produce_to(flow, "audit", [b"{not an audit record", b'{"actor": "x", "password": "hunter2"}'])
        added = await run(flow, ["apps", "add", "campus", "--channels", "email"])
        key = added[0].split("(shown once): ")[1].split(";")[0]
        signing_key = added[0].split("events signing key: ")[1]
        rotated = await run(flow, ["apps", "rotate", "campus"])
        new_key = rotated[0].split("(shown once): ")[1].split(";")[0]

        malformed = json.loads(notice("n1", "xi"))
        malformed["category"] = "newsletter"
        await produce(flow, [json.dumps(malformed).encode()])
        await wait_caught_up(redis, 1, worker, service)

        [line] = await run(flow, ["dead-letters", "list", "--app", "campus", "--json"])
        letter = json.loads(line)
        assert letter["stage"] == "ingest" and letter["event_id"] == "n1"
        assert "category" in letter["reason"] and letter["replayable"]
        assert await run(flow, ["dead-letters", "list", "--app", "bursar"]) == ["no dead letters match"]
        shown = json.loads("\n".join(await run(flow, ["dead-letters", "show", letter["id"]])))
        assert shown["payload"]["category"] == "newsletter" and shown["payload_kind"] == "json"

        as_it_was = await run(flow, ["dead-letters", "replay", letter["id"]], status=1)
        assert "invalid" in as_it_was[0] and "category" in as_it_was[0]
        fixed = tmp_path / "fixed.json"
        fixed.write_text(json.dumps({**malformed, "category": "notice"}))
        [replayed] = await run(flow, ["dead-letters", "replay", letter["id"], "--event", str(fixed)])
        assert "published" in replayed and "ingest takes it" in replayed
        await wait_caught_up(redis, 2, worker, service)
        deadline = time.monotonic() + FLOW_TIMEOUT
        while not smtp.messages:
            assert time.monotonic() < deadline, worker.log_tail()
            await asyncio.sleep(0.2)

        [again] = await run(flow, ["dead-letters", "replay", letter["id"], "--event", str(fixed)])
        assert "published" in again and "ingest drops it" in again
        await wait_caught_up(redis, 3, worker, service)
        assert (await FlowCounters(redis).read()).get("duplicates") == 1

        replays = await audited(flow, service, ["--action", "dead_letter.replay"], 3)
        apps = await audited(flow, service, ["--action", "app."], 2)
        unreadable = await audited(flow, service, ["--action", "audit.unreadable"], 2)
        [read] = await audited(flow, service, ["--action", "dead_letter.read"], 1)
        table = await run(flow, ["audit", "--action", "app.", "--since", "1h"])
        # Nobody but the service changes the log: the reader every other process uses is read-only.
        reader = open_reader(flow)
        try:
            for statement in ("ALTER TABLE audit_log DELETE WHERE 1", "TRUNCATE TABLE audit_log"):
                with pytest.raises(DatabaseError, match="Code: 164"):
                    reader.command(statement)
            kept = reader.command("SELECT count() FROM audit_log")
        finally:
            reader.close()
        assert worker.stop() == 0, worker.log_tail()
        assert service.stop() == 0, service.log_tail()

    assert [list(m.rcpt_tos) for m in smtp.messages] == [["xi@uni.example"]]  # once, not twice
    assert [(e["outcome"], e["after"]["outcome"], e["after"]["duplicate"]) for e in replays] == [
        ("ok", "published", True),
        ("ok", "published", False),
        ("failed", "invalid", False),
    ]
    assert {e["target"] for e in replays} == {letter["id"]} and replays[0]["app"] == "campus"
    assert [e["action"] for e in apps] == ["app.rotate_key", "app.register"]
    assert apps[1]["after"]["channels"] == ["email"] and apps[0]["source"] == "cli"
    dumped = json.dumps([replays, apps, unreadable, table])
    assert (
        key not in dumped and new_key not in dumped and signing_key not in dumped and "hunter2" not in dumped
    )
    assert all(e["outcome"] == "failed" and e["target"].startswith(flow.topic("audit")) for e in unreadable)
    assert any("app.rotate_key" in line and "campus" in line for line in table)
    assert kept >= len(replays) + len(apps) + len(unreadable)
    assert (read["target"], read["actor"], read["after"]) == (letter["id"], cli_actor(), {"app": "campus"})


async def test_an_administrative_command_is_refused_when_it_cannot_be_audited(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    down = settings.model_copy(update={"kafka": f"kafka://127.0.0.1:{free_port()}"})
    people = tmp_path / "people.csv"
    people.write_text("user_id,name\ns1,Li Wei\n")
    [line] = await run(down, ["users", "import", str(people)], status=1)
    assert line.startswith("error: cannot audit this action: the Kafka broker")
    assert "nothing was changed" in line
    assert await UserDirectory(redis).get_many(["s1"]) == {}
    [added] = await run(down, ["apps", "add", "campus", "--channels", "email"], status=1)
    assert "nothing was changed" in added
    assert await AppRegistry(redis).get("campus") is None
    [listed] = await run(down, ["dead-letters", "list"], status=1)
    assert listed.startswith("error: cannot reach the Kafka broker") and "parts up" in listed
