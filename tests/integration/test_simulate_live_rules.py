"""The live rules simulated against the period a real worker ran them in show no difference."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from localparts import LocalSmtpServer
from localparts.switchboard_process import SwitchboardProcess
from settings import ROOT, Settings
from state.apps import AppRegistry
from state.users import User, UserDirectory
from tests.integration.test_flow import produce, wait_caught_up

# Email first, one notice a day per person (dropped beyond it, counted at send): the second notice
# is decided on a channel and then capped, which must not count as sent.
LIVE_RULES = """
ruleset: live
caps:
  - {id: one-a-day, match: {category: [notice]}, limits: [1/1d], on_exceed: drop}
rules:
  - id: notices
    description: Notices by email where there is one, else the inbox.
    when: {category: [notice]}
    then: {first_of: [email, inbox]}
"""


def notice(event_id: str, audience: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "app": "campus",
            "type": "campus.notice",
            "template": "campus_notice",
            "category": "notice",
            "audience": audience,
            "data": {"headline": "Library hours", "body": "Open until midnight."},
        }
    ).encode()


def simulate(settings: Settings, since: datetime, until: datetime, *extra: str) -> dict[str, Any]:
    """`switchboard rules simulate --json` in a child, reading through the analytics service when it runs."""
    command = [
        sys.executable, "-m", "app", "rules", "simulate", "--since", since.isoformat(),
        "--until", until.isoformat(), "--rules", str(settings.rules), "--json", *extra,
    ]
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        command, cwd=ROOT, env=settings.to_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_live_rules_against_their_own_period_show_no_difference(
    settings: Settings, redis: Redis, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(LIVE_RULES)
    flow = settings.model_copy(update={"rules": rules, "clickhouse": f"chdb://{tmp_path / 'worker-ch'}"})
    await UserDirectory(redis).upsert(
        [
            User(user_id="ana", bindings={"email": "ana@uni.example", "inbox": "ana"}),
            User(user_id="ben", bindings={"inbox": "ben"}),
        ]
    )
    await AppRegistry(redis).register("campus", {"email", "inbox"})
    people = {"user_ids": ["ana", "ben"]}
    guest = {"addresses": [{"channel": "email", "address": "guest@partner.example"}]}
    since = datetime.now(UTC) - timedelta(minutes=1)
    with (
        SwitchboardProcess("analytics", flow, tmp_path / "analytics.log") as service,
        SwitchboardProcess("worker", flow, tmp_path / "worker.log") as worker,
    ):
        # n1 again is a duplicate: its row names no recipient. n2 is over the cap for ana and ben.
        await produce(flow, [notice("n1", people), notice("n1", people), notice("g1", guest)])
        await wait_caught_up(redis, 3, worker, service)
        await produce(flow, [notice("n2", people)])
        await wait_caught_up(redis, 4, worker, service)
        assert worker.stop() == 0, worker.log_tail()
        until = datetime.now(UTC) + timedelta(minutes=1)
        # Through the running service's HTTP interface: it holds the embedded engine.
        result = simulate(flow, since, until)
    mailed = sorted(r for m in smtp.messages for r in m.rcpt_tos)
    assert mailed == ["ana@uni.example", "guest@partner.example"]

    assert (result["events"], result["messages"]) == (3, 5)
    assert result["actual"] == {"volume": {"email": 2, "inbox": 1}, "suppressed": 0, "capped": 2,
                                "held_out": 0, "estimated_cost": 0.0}
    assert result["candidate"] == result["actual"]
    assert (result["recipients_affected"], result["examples"]) == (0, [])

    # Without email (no relay, say), ana's and the guest's notices change: the inbox, and nothing.
    without_email = simulate(flow, since, until, "--available", "inbox")
    assert without_email["candidate"]["volume"] == {"inbox": 2}
    assert without_email["recipients_affected"] == 2
